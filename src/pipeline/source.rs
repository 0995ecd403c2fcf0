//! Where packets come from: capture files one after another, or a live interface.

use std::io::IsTerminal;
use std::sync::Arc;

use crate::capture::bpf::Filter;
use crate::capture::{CaptureError, FileReader, Frame, MapShare};
use crate::decode;
use crate::output::record::Origin;

/// What a source has next.
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// Nothing arrived for a while (live capture): a chance to hand over partial batches and,
    /// with the wall-clock time given, to let idle flows time out.
    Idle(Option<i64>),
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
    /// Where the records come from (sensor, interface, files), for the workers to stamp.
    fn origin(&self) -> Option<Arc<Origin>> {
        None
    }
    /// Inputs that could not be read, or not to the end.
    fn take_errors(&mut self) -> Vec<CaptureError> {
        Vec::new()
    }
    /// `n` more sources that will yield exactly the same frames as this one, when that is
    /// cheap (files read in place, through one mapping and, for classic pcap files, one shared
    /// index of their frames). Each worker then goes through the whole input itself and keeps
    /// its own share of the flows, and no thread has to hand frames over. Copies are quiet: no
    /// progress bar. Called before the first `next`.
    fn copies(&mut self, n: usize) -> Option<Vec<Self>>
    where
        Self: Sized,
    {
        let _ = n;
        None
    }
}

/// Capture files read in order as one stream. A file that cannot be opened or breaks part-way
/// is recorded and skipped; what came before the damage has been delivered.
pub struct FileSource {
    paths: Vec<String>,
    next_path: usize,
    current: Option<FileReader>,
    opened: usize,
    errors: Vec<CaptureError>,
    bar: Option<indicatif::ProgressBar>,
    /// Bytes of the files already finished, for the progress bar.
    bar_base: u64,
    frames: u64,
    /// With copies: each file's mapping, shared by this source and its copies, and which
    /// reader of it this source is.
    share: Option<(Arc<[MapShare]>, usize)>,
    /// `replay --bpf`: frames it rejects are passed over here, before any stage sees them.
    filter: Option<Filter>,
    origin: Option<Arc<Origin>>,
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
            share: None,
            filter: None,
            origin: None,
        }
    }

    /// Records are stamped with this origin; the source tells it where each file starts.
    pub fn with_origin(mut self, origin: Arc<Origin>) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Only frames `filter` passes are delivered.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.filter = filter;
        self
    }

    /// Opens the next readable file; false when none is left.
    fn open_next(&mut self) -> bool {
        while let Some(path) = self.paths.get(self.next_path) {
            self.next_path += 1;
            let share = self
                .share
                .as_ref()
                .and_then(|(maps, reader)| Some((maps.get(self.next_path - 1)?, *reader)));
            let opened = match share {
                Some((share, reader)) => {
                    FileReader::open_shared(path, share, reader, decode::quick_flow_hash)
                }
                None => FileReader::open(path),
            };
            match opened {
                Ok(r) => {
                    if let Some(origin) = &self.origin {
                        origin.file_started(self.next_path - 1, self.frames + 1);
                    }
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
                Ok(true) => {
                    let passes = match (&mut self.filter, reader.frame()) {
                        (Some(f), Some(frame)) => f.matches(frame.linktype, frame.data),
                        _ => true,
                    };
                    if passes {
                        break;
                    }
                }
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

    fn origin(&self) -> Option<Arc<Origin>> {
        self.origin.clone()
    }

    fn take_errors(&mut self) -> Vec<CaptureError> {
        std::mem::take(&mut self.errors)
    }

    /// Only regular files: standard input or a pipe can be read once. Every copy reads each
    /// file through the same mapping. Call before the first `next`.
    fn copies(&mut self, n: usize) -> Option<Vec<Self>> {
        let all_files = self.paths.iter().all(|p| {
            p != "-"
                    && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0)
                    // A compressed file is one stream: copies would each decompress all of it.
                    && !crate::capture::is_gzip(p)
        });
        if !all_files || self.current.is_some() || self.next_path > 0 {
            return None;
        }
        let maps: Arc<[MapShare]> = self.paths.iter().map(|_| MapShare::new(n + 1)).collect();
        self.share = Some((Arc::clone(&maps), 0));
        let copies = (1..=n)
            .map(|reader| FileSource {
                share: Some((Arc::clone(&maps), reader)),
                filter: self.filter.clone(),
                origin: self.origin.clone(),
                ..FileSource::new(&self.paths, false)
            })
            .collect();
        Some(copies)
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

/// A live interface through libpcap.
#[cfg(feature = "live")]
pub struct LiveSource {
    capture: crate::capture::live::LiveCapture,
    stats: std::sync::Arc<crate::stats::Stats>,
    last_poll: std::time::Instant,
    /// Why reading stopped, if it did.
    pub error: Option<crate::capture::live::LiveError>,
    pub origin: Option<Arc<Origin>>,
}

#[cfg(feature = "live")]
impl LiveSource {
    pub fn new(
        capture: crate::capture::live::LiveCapture,
        stats: std::sync::Arc<crate::stats::Stats>,
    ) -> Self {
        LiveSource {
            capture,
            stats,
            last_poll: std::time::Instant::now(),
            error: None,
            origin: None,
        }
    }

    /// Reads libpcap's drop counters into the shared stats, about once a second.
    fn poll_drops(&mut self) {
        if self.last_poll.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.last_poll = std::time::Instant::now();
        if let Ok(s) = self.capture.stats() {
            self.stats
                .set_capture_drops(s.dropped_kernel, s.dropped_iface);
        }
    }

    /// Final counters, read once more at the end.
    pub fn capture_stats(&mut self) -> Option<crate::capture::live::LiveStats> {
        self.capture.stats().ok()
    }
}

#[cfg(feature = "live")]
impl Source for LiveSource {
    fn origin(&self) -> Option<Arc<Origin>> {
        self.origin.clone()
    }

    fn next(&mut self) -> Next<'_> {
        self.poll_drops();
        if self.error.is_some() {
            return Next::End;
        }
        match self.capture.next_frame() {
            Ok(Some(f)) => Next::Frame(f),
            Ok(None) => Next::Idle(Some(wall_clock_ns())),
            Err(e) => {
                self.error = Some(e);
                Next::End
            }
        }
    }
}

#[cfg(feature = "live")]
fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
