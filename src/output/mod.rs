//! Sinks: where records go. NDJSON to a file or standard output, one object per line,
//! flushed at the end; a write error (full disk, closed pipe) stops the run with a clear error.

pub mod record;
pub mod time;

use std::fs::File;
use std::io::{BufWriter, Write};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {source}{}", write_hint(.source))]
pub struct SinkError {
    pub path: String,
    pub source: std::io::Error,
}

/// What to do about a write failure, for the causes a user can fix.
fn write_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "; the directory does not exist",
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::IsADirectory => {
            "; choose a writable file path"
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "; free some space or write elsewhere (records up to the failure were written)"
        }
        ErrorKind::BrokenPipe => "; the reading end of the pipe closed",
        _ => "",
    }
}

/// Newline-delimited JSON to a path or `-` (standard output).
pub struct NdjsonSink {
    path: String,
    out: BufWriter<Box<dyn Write + Send>>,
    pub written: u64,
}

impl NdjsonSink {
    /// `-` is standard output, named so in errors.
    pub fn create(path: &str) -> Result<Self, SinkError> {
        let (name, out): (&str, Box<dyn Write + Send>) = if path == "-" {
            ("standard output", Box::new(std::io::stdout()))
        } else {
            let file = File::create(path).map_err(|source| SinkError {
                path: path.to_string(),
                source,
            })?;
            (path, Box::new(file))
        };
        Ok(NdjsonSink {
            path: name.to_string(),
            out: BufWriter::with_capacity(256 * 1024, out),
            written: 0,
        })
    }

    fn err(&self, source: std::io::Error) -> SinkError {
        SinkError {
            path: self.path.clone(),
            source,
        }
    }

    pub fn write<T: Serialize>(&mut self, value: &T) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| SinkError {
            path: self.path.clone(),
            source: e.into(),
        })?;
        self.out.write_all(b"\n").map_err(|e| self.err(e))?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))
    }
}
