//! NDJSON line sink for live mode: one JSON object per line to standard output or a file,
//! reopened on request so `logrotate` (rename, then SIGHUP) works.
//!
//! Flushing. By default ([`Flush::EveryLine`]) each line is handed to the kernel as soon as it
//! is written, so `tail -f` shows every record at once; a live sensor writes one record per
//! connection, not per packet, so one `write(2)` per line is cheap. A writer that handles
//! bursts can choose [`Flush::Manual`] and call [`LineSink::flush`] whenever its input queue
//! runs empty, which batches under load and is just as prompt when idle.
//!
//! Rotation. [`LineSink::reopen_handle`] gives a cloneable [`ReopenHandle`]; a SIGHUP handler
//! (or anything else) calls `request()`, which only stores an atomic flag and so is safe in
//! a signal handler. Before its next write the sink flushes the old file and opens the path
//! again in append mode (creating it). A line is never split across the two files.
//!
//! ```no_run
//! use pinwatch::sinks::file::{Flush, LineSink, Target};
//! let mut sink = LineSink::open(Target::parse("/var/log/pinwatch.ndjson"), Flush::EveryLine)?;
//! let rotate = sink.reopen_handle(); // give to the SIGHUP handler
//! sink.write(&serde_json::json!({"outcome": "client_alert"}))?;
//! rotate.request();
//! sink.write(&serde_json::json!({"outcome": "established"}))?; // lands in the new file
//! # Ok::<(), pinwatch::sinks::file::FileSinkError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `-` means standard output, anything else a file path.
    pub fn parse(arg: &str) -> Target {
        if arg == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(arg))
        }
    }

    fn name(&self) -> String {
        match self {
            Target::Stdout => "standard output".to_string(),
            Target::File(p) => p.display().to_string(),
        }
    }
}

/// When buffered lines are handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flush {
    /// After every line: a reader tailing the file sees each record immediately.
    #[default]
    EveryLine,
    /// Only on [`LineSink::flush`] (or when the 64 KiB buffer fills, on reopen and on drop).
    Manual,
}

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// ENOSPC. Lines not yet written stay buffered and go out on a later flush if space frees.
    #[error(
        "{target}: disk full, cannot write (No space left on device); free some space or write \
         elsewhere (records up to the failure were written)"
    )]
    DiskFull { target: String },
    /// EPIPE: the reader of standard output (or a FIFO) went away.
    #[error("{target}: the reader went away (broken pipe)")]
    Closed { target: String },
    #[error("{target}: cannot write: {source}{}", remedy(.source))]
    Write { target: String, source: io::Error },
    #[error("{target}: cannot open: {source}{}", remedy(.source))]
    Open { target: String, source: io::Error },
    /// Not fatal: the sink keeps writing to the file it had, and the line that triggered the
    /// reopen was not written. Request another reopen to try again.
    #[error("{target}: cannot reopen after rotation, still writing to the previous file: {source}")]
    Reopen { target: String, source: io::Error },
    #[error("cannot serialise record: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// What to do about an open or write failure, for the causes a user can fix.
fn remedy(e: &io::Error) -> &'static str {
    use io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "; the directory does not exist",
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::IsADirectory => {
            "; choose a writable file path"
        }
        ErrorKind::QuotaExceeded | ErrorKind::StorageFull => "; free some space or write elsewhere",
        _ => "",
    }
}

impl FileSinkError {
    /// The reader of standard output or a FIFO went away (`| head`): the run ends quietly.
    pub fn is_reader_gone(&self) -> bool {
        matches!(self, FileSinkError::Closed { .. })
    }

    /// Whether the sink can no longer do its job (as opposed to one record or one rotation
    /// having failed).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            FileSinkError::Reopen { .. } | FileSinkError::Serialize(_)
        )
    }

    fn from_io(target: &Target, source: io::Error) -> FileSinkError {
        let target = target.name();
        match source.kind() {
            io::ErrorKind::StorageFull => FileSinkError::DiskFull { target },
            io::ErrorKind::BrokenPipe => FileSinkError::Closed { target },
            _ => FileSinkError::Write { target, source },
        }
    }
}

/// Cloneable, signal-safe request to reopen the file before the next write.
#[derive(Debug, Clone, Default)]
pub struct ReopenHandle(Arc<AtomicBool>);

impl ReopenHandle {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }

    fn restore(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The NDJSON writer. Not shared between threads: give it to one output thread.
pub struct LineSink {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
    flush: Flush,
    reopen: ReopenHandle,
    line: Vec<u8>,
    written: u64,
}

const BUFFER: usize = 64 * 1024;

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LineSink {
    /// Opens the target. A file is opened in append mode (created if missing), so restarting
    /// the sensor never truncates earlier records.
    pub fn open(target: Target, flush: Flush) -> Result<Self, FileSinkError> {
        Self::open_with(target, flush, false)
    }

    /// As [`LineSink::open`]; with `truncate` a file is emptied first (the user's choice of a
    /// fresh file). Reopening after rotation always appends: the new file is someone else's.
    pub fn open_with(target: Target, flush: Flush, truncate: bool) -> Result<Self, FileSinkError> {
        let out: Box<dyn Write + Send> = match &target {
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => {
                let opened = if truncate {
                    File::create(path)
                } else {
                    open_append(path)
                };
                Box::new(opened.map_err(|source| FileSinkError::Open {
                    target: target.name(),
                    source,
                })?)
            }
        };
        Ok(LineSink {
            target,
            out: BufWriter::with_capacity(BUFFER, out),
            flush,
            reopen: ReopenHandle::default(),
            line: Vec::with_capacity(1024),
            written: 0,
        })
    }

    pub fn reopen_handle(&self) -> ReopenHandle {
        self.reopen.clone()
    }

    /// Lines written since the sink was opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Serialises `value` as one line.
    pub fn write<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FileSinkError> {
        // Serialise aside first so a serialisation error never leaves half a line behind.
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let result = serde_json::to_writer(&mut line, value)
            .map_err(FileSinkError::from)
            .and_then(|()| self.write_line(&line));
        self.line = line;
        result
    }

    /// Writes one pre-serialised JSON object; the newline is added here. `json` must not
    /// contain a newline (serde_json's compact output never does).
    pub fn write_line(&mut self, json: &[u8]) -> Result<(), FileSinkError> {
        self.reopen_if_requested()?;
        self.out
            .write_all(json)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| FileSinkError::from_io(&self.target, e))?;
        self.written += 1;
        if self.flush == Flush::EveryLine {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands buffered lines to the kernel.
    pub fn flush(&mut self) -> Result<(), FileSinkError> {
        self.out
            .flush()
            .map_err(|e| FileSinkError::from_io(&self.target, e))
    }

    fn reopen_if_requested(&mut self) -> Result<(), FileSinkError> {
        let Target::File(path) = &self.target else {
            self.reopen.take(); // standard output cannot be rotated
            return Ok(());
        };
        if !self.reopen.take() {
            return Ok(());
        }
        // Lines written before the rotation belong in the old file.
        if let Err(e) = self.out.flush() {
            self.reopen.restore();
            return Err(FileSinkError::from_io(&self.target, e));
        }
        match open_append(path) {
            Ok(file) => {
                self.out = BufWriter::with_capacity(BUFFER, Box::new(file));
                Ok(())
            }
            Err(source) => Err(FileSinkError::Reopen {
                target: self.target.name(),
                source,
            }),
        }
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        // Best effort: a caller who cares about the last lines' errors calls flush() first.
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdout() {
        assert_eq!(Target::parse("-"), Target::Stdout);
        assert_eq!(Target::parse("x.ndjson"), Target::File("x.ndjson".into()));
    }

    #[test]
    fn classification_of_io_errors() {
        let t = Target::Stdout;
        let full = io::Error::from_raw_os_error(28); // ENOSPC
        assert!(matches!(
            FileSinkError::from_io(&t, full),
            FileSinkError::DiskFull { .. }
        ));
        let pipe = io::Error::from_raw_os_error(32); // EPIPE
        assert!(matches!(
            FileSinkError::from_io(&t, pipe),
            FileSinkError::Closed { .. }
        ));
        let e = FileSinkError::Reopen {
            target: "x".into(),
            source: io::Error::other("nope"),
        };
        assert!(!e.is_fatal());
    }
}
