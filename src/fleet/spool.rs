//! The disk side of a sensor's spool (`--publish-spool-dir`): observations the memory spool
//! had no room for, and those still unacknowledged when the sensor stopped, wait on disk for
//! the publishing thread to send them, now or after a restart.
//!
//! Contract: each line of `spool-<sensor>.jsonl` is one observation's wire JSON (its `id` is the
//! message id). Observations are only appended to that file. The publisher renames it to
//! `spool-<sensor>.sending` before reading it, and deletes that file once every line in it is
//! acknowledged; a `.sending` file found at start (the sensor was killed) is sent first. A line
//! sent twice this way is stored once: JetStream's duplicate window and the aggregator's set of
//! ids drop the second. Both files together stay under the configured size; past it an
//! observation is dropped and counted, as without a disk spool.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::FleetError;

pub struct DiskSpool {
    append: PathBuf,
    sending: PathBuf,
    max_bytes: u64,
    /// The append file while open, and its length.
    file: Mutex<Option<(File, u64)>>,
}

/// The lines of a `.sending` file, read as they are sent.
pub type Lines = std::io::Split<BufReader<File>>;

impl DiskSpool {
    /// The spool of `sensor` in `dir` (made if missing), at most `max_bytes` on disk.
    pub fn open(dir: &Path, sensor: &str, max_bytes: u64) -> Result<DiskSpool, FleetError> {
        let usage = |e: std::io::Error| {
            FleetError::Usage(format!(
                "--publish-spool-dir {}: {e}; give a directory this user can write",
                dir.display()
            ))
        };
        fs::create_dir_all(dir).map_err(usage)?;
        let token = super::subject_for(sensor);
        let token = token.rsplit('.').next().unwrap_or("sensor");
        let spool = DiskSpool {
            append: dir.join(format!("spool-{token}.jsonl")),
            sending: dir.join(format!("spool-{token}.sending")),
            max_bytes,
            file: Mutex::new(None),
        };
        // Checked now, not at the first outage: a spool that cannot be written is a setup error.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spool.append)
            .map_err(usage)?;
        Ok(spool)
    }

    /// Appends one observation; false when the spool is full or the write failed.
    pub fn push(&self, payload: &[u8]) -> bool {
        self.append(payload, true)
    }

    /// Keeps what the sensor held unacknowledged when it stopped: already counted against the
    /// memory spool, so not refused for the disk's size.
    pub fn keep(&self, payload: &[u8]) -> bool {
        self.append(payload, false)
    }

    fn append(&self, payload: &[u8], capped: bool) -> bool {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            let Ok(f) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.append)
            else {
                return false;
            };
            let len = f.metadata().map_or(0, |m| m.len());
            *file = Some((f, len));
        }
        let Some((f, len)) = file.as_mut() else {
            return false;
        };
        let sending = fs::metadata(&self.sending).map_or(0, |m| m.len());
        let line = payload.len() as u64 + 1;
        if capped && *len + sending + line > self.max_bytes {
            return false;
        }
        let mut bytes = Vec::with_capacity(payload.len() + 1);
        bytes.extend_from_slice(payload);
        bytes.push(b'\n');
        if f.write_all(&bytes).is_err() {
            return false;
        }
        *len += line;
        true
    }

    /// The lines to send next: a `.sending` file a killed run left, else the appended file,
    /// renamed to `.sending` first. `None` when there is nothing.
    pub fn take(&self) -> Option<Lines> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if !self.sending.exists() {
            let appended = fs::metadata(&self.append).map_or(0, |m| m.len());
            if appended == 0 {
                return None;
            }
            *file = None;
            fs::rename(&self.append, &self.sending).ok()?;
        }
        let f = File::open(&self.sending).ok()?;
        Some(BufReader::new(f).split(b'\n'))
    }

    /// Nothing waits on disk.
    pub fn is_empty(&self) -> bool {
        let _guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        !self.sending.exists() && fs::metadata(&self.append).map_or(0, |m| m.len()) == 0
    }

    /// Every line of the `.sending` file is acknowledged.
    pub fn sent(&self) {
        let _ = fs::remove_file(&self.sending);
    }

    /// Observations waiting on disk.
    pub fn waiting(&self) -> u64 {
        let _guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        [&self.sending, &self.append]
            .iter()
            .filter_map(|p| File::open(p).ok())
            .map(|f| {
                BufReader::new(f)
                    .split(b'\n')
                    .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
                    .count() as u64
            })
            .sum()
    }

    /// Puts the rest of the `.sending` file back at the end of the appended one (the sensor
    /// stops before it was all acknowledged).
    pub fn put_back(&self, rest: Lines) {
        for line in rest.map_while(Result::ok).filter(|l| !l.is_empty()) {
            self.keep(&line);
        }
        self.sent();
    }
}
