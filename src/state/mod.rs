//! `--state DIR`: what a sensor must not forget across a restart, saved atomically.
//!
//! Contract: `DIR/state.json` holds one JSON object, `{"format": "pinwatch.state", "version":
//! 1, "lifecycle": ...}`, where `lifecycle` is the rule stage's [`InForce`] (the rules and
//! findings in force as last sent, and the next `seq`). It is written whole (temporary file,
//! fsync, rename: a reader sees the old state or the new one) on a schedule and at exit, and
//! read at start. A missing file is a first run. A file that cannot be read, is not a state,
//! or has a newer version is an error the caller reports and exits on: silently starting
//! afresh would re-announce every rule and forget withdrawals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::correlate::stream::InForce;

/// The `format` field of a state file.
pub const FORMAT: &str = "pinwatch.state";
/// The version written; older ones are read, newer ones refused.
pub const VERSION: u32 = 1;
/// Largest state file read back: the rules and findings in force of one sensor are far smaller.
pub const MAX_STATE_BYTES: u64 = 256 << 20;
/// The file inside the state directory.
pub const FILE_NAME: &str = "state.json";

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    lifecycle: InForce,
}

/// Where the state of `dir` lives.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The saved state of `dir`, `None` when there is none yet (first run). `Err` is one line
/// saying what is wrong and what to do.
pub fn load(dir: &Path) -> Result<Option<InForce>, String> {
    use std::io::Read as _;
    let file = path(dir);
    let shown = file.display();
    let f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("--state {shown}: cannot read: {e}")),
    };
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("--state {shown}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(format!(
            "--state {shown}: larger than {} MiB, not a pinwatch state; move it away to start afresh",
            MAX_STATE_BYTES >> 20
        ));
    }
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let afresh = "move it away to start afresh (every rule is then announced as new)";
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|e| format!("--state {shown}: not a pinwatch state ({e}); {afresh}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "--state {shown}: not a pinwatch state (format {:?}); {afresh}",
            header.format
        ));
    }
    if header.version > VERSION {
        return Err(format!(
            "--state {shown}: written by a newer pinwatch (state version {}, this one reads up \
             to {VERSION}); upgrade pinwatch, or {afresh}",
            header.version
        ));
    }
    let state: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("--state {shown}: damaged ({e}); {afresh}"))?;
    Ok(Some(state.lifecycle))
}

/// Writes the state of `dir` atomically, creating the directory if needed.
pub fn save(dir: &Path, lifecycle: &InForce) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let doc = serde_json::json!({
        "format": FORMAT,
        "version": VERSION,
        "lifecycle": lifecycle,
    });
    let mut bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::sinks::replace::replace_file(&path(dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_reads_back_and_newer_or_damaged_is_refused() {
        let dir = std::env::temp_dir().join(format!("pinwatch-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let mut s = InForce {
            next_seq: 7,
            ..InForce::default()
        };
        s.findings
            .insert("ca:x".into(), serde_json::json!({"kind": "proxy_ca"}));
        save(&dir, &s).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(s));
        std::fs::write(
            path(&dir),
            r#"{"format":"pinwatch.state","version":2,"lifecycle":{}}"#,
        )
        .unwrap();
        assert!(load(&dir).unwrap_err().contains("newer pinwatch"));
        std::fs::write(path(&dir), "{\"format\":\"pinwatch.state\",\"vers").unwrap();
        assert!(load(&dir).unwrap_err().contains("not a pinwatch state"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
