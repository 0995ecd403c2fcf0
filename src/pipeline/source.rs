//! Where packets come from: capture files one after another, or a live interface.

use std::io::IsTerminal;

use crate::capture::{CaptureError, CaptureReader, Frame};

/// What a source has next.
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// Nothing arrived for a while (live capture): a chance to hand over partial batches.
    Idle,
    /// No more packets.
    End,
}

/// A packet source for [`super::run`].
pub trait Source {
    fn next(&mut self) -> Next<'_>;
    /// Inputs opened so far (files), for the summary.
    fn files_opened(&self) -> usize {
        0
    }
    /// Inputs that could not be read, or not to the end.
    fn take_errors(&mut self) -> Vec<CaptureError> {
        Vec::new()
    }
}

/// Capture files read in order as one stream. A file that cannot be opened or breaks part-way
/// is recorded and skipped; what came before the damage has been delivered.
pub struct FileSource {
    paths: Vec<String>,
    next_path: usize,
    current: Option<CaptureReader>,
    opened: usize,
    errors: Vec<CaptureError>,
    bar: Option<indicatif::ProgressBar>,
    /// Bytes of the files already finished, for the progress bar.
    bar_base: u64,
    frames: u64,
}

impl FileSource {
    /// `progress`: draw a byte-based progress bar on standard error when it is a terminal and
    /// the input is large enough for the wait to be noticed.
    pub fn new(paths: &[String], progress: bool) -> Self {
        FileSource {
            paths: paths.to_vec(),
            next_path: 0,
            current: None,
            opened: 0,
            errors: Vec::new(),
            bar: progress_bar(paths, progress),
            bar_base: 0,
            frames: 0,
        }
    }

    /// Opens the next readable file; false when none is left.
    fn open_next(&mut self) -> bool {
        while let Some(path) = self.paths.get(self.next_path) {
            self.next_path += 1;
            match CaptureReader::open(path) {
                Ok(r) => {
                    self.opened += 1;
                    self.current = Some(r);
                    return true;
                }
                Err(e) => self.errors.push(e),
            }
        }
        false
    }

    fn close_current(&mut self) {
        if let Some(r) = self.current.take() {
            self.bar_base += r.bytes_read();
            if let Some(b) = &self.bar {
                b.set_position(self.bar_base);
            }
        }
    }
}

impl Source for FileSource {
    fn next(&mut self) -> Next<'_> {
        loop {
            let Some(reader) = self.current.as_mut() else {
                if !self.open_next() {
                    if let Some(b) = self.bar.take() {
                        b.finish_and_clear();
                    }
                    return Next::End;
                }
                continue;
            };
            match reader.advance() {
                Ok(true) => break,
                Ok(false) => self.close_current(),
                Err(e) => {
                    self.errors.push(e);
                    self.close_current();
                }
            }
        }
        self.frames += 1;
        let reader = self.current.as_ref().expect("advanced");
        if self.frames.is_multiple_of(8192)
            && let Some(b) = &self.bar
        {
            b.set_position(self.bar_base + reader.bytes_read());
        }
        match reader.frame() {
            Some(f) => Next::Frame(f),
            None => Next::End,
        }
    }

    fn files_opened(&self) -> usize {
        self.opened
    }

    fn take_errors(&mut self) -> Vec<CaptureError> {
        std::mem::take(&mut self.errors)
    }
}

fn progress_bar(paths: &[String], wanted: bool) -> Option<indicatif::ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = paths
        .iter()
        .filter(|p| p.as_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if total < 16 << 20 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replay [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}
