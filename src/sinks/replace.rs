//! Replacing a whole file that another program reads (a proxy's include file, a rules file).
//!
//! Contract: the new content is written to a temporary file in the same directory, synced, given
//! the old file's mode and owner, and renamed over it, so a reader sees the old file or the new
//! one, never half of one. A symlink is followed: its target is replaced and the link stays.
//! A new file gets the mode the umask gives. When the owner cannot be kept (not root, file of
//! another user) the replacement is refused rather than silently taking the file over.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest existing rules file [`merge_by_id`] reads back; a file beyond it is not one pinwatch
/// wrote for one capture set, and is refused rather than loaded whole.
pub const MAX_MERGED_BYTES: u64 = 64 << 20;

/// Where a replacement lands: the path itself, or what its symlink (chain) points at.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => Ok(target),
            // A dangling link: create what it names.
            Err(_) => {
                let target = std::fs::read_link(path)?;
                Ok(path.parent().unwrap_or(Path::new(".")).join(target))
            }
        },
        _ => Ok(path.to_path_buf()),
    }
}

/// Writes `bytes` as the new content of `path` (see the module comment).
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = resolve(path)?;
    let old = std::fs::metadata(&target).ok();
    // A device or a pipe (`/dev/stdout`, `/dev/full`, a FIFO a rule engine reads) is written
    // to, never replaced by a file of the same name.
    if old.as_ref().is_some_and(|m| !m.is_file()) {
        let mut f = OpenOptions::new().write(true).open(&target)?;
        return f.write_all(bytes).and_then(|()| f.flush());
    }
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::other("not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".pinwatch-{}.tmp", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)?;
        if let Some(old) = &old {
            if old.uid() != nix::unistd::geteuid().as_raw()
                || old.gid() != nix::unistd::getegid().as_raw()
            {
                std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot keep the file's owner ({e}); run as its owner or root"),
                    )
                })?;
            }
            f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The `id` of an NDJSON line, when it is a JSON object with a string `id`.
fn line_id(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(line).ok().map(|r| r.id)
}

/// Replaces the rules file at `path` with its lines whose `id` is not among `new`, followed by
/// `new` (serialised lines, each with its `id`). Replaying the same capture twice so leaves one
/// line per rule, and rules from other captures stay. Returns how many old lines were replaced.
pub fn merge_by_id(path: &Path, new: &[(String, Vec<u8>)]) -> io::Result<usize> {
    let mut old = Vec::new();
    match File::open(resolve(path)?) {
        // Only a regular file holds earlier rules; a device or a pipe is written to as it is.
        Ok(f) if f.metadata().is_ok_and(|m| !m.is_file()) => {}
        Ok(f) => {
            f.take(MAX_MERGED_BYTES + 1).read_to_end(&mut old)?;
            if old.len() as u64 > MAX_MERGED_BYTES {
                return Err(io::Error::other(format!(
                    "holds more than {} MiB, too much for a rules file to merge into; \
                     write the rules elsewhere or use --truncate",
                    MAX_MERGED_BYTES >> 20
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let ids: HashSet<&str> = new.iter().map(|(id, _)| id.as_str()).collect();
    let mut out =
        Vec::with_capacity(old.len() + new.iter().map(|(_, l)| l.len() + 1).sum::<usize>());
    let mut replaced = 0;
    for line in old.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if line_id(line).is_some_and(|id| ids.contains(id.as_str())) {
            replaced += 1;
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    for (_, line) in new {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    replace_file(path, &out)?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pinwatch-replace-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn merging_replaces_by_id_and_keeps_other_lines() {
        let dir = temp("merge");
        let path = dir.join("rules.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"v\":1}\n{\"id\":\"b\",\"v\":1}\nnot json\n",
        )
        .unwrap();
        let new = vec![("a".to_string(), b"{\"id\":\"a\",\"v\":2}".to_vec())];
        assert_eq!(merge_by_id(&path, &new).unwrap(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"id\":\"b\",\"v\":1}\nnot json\n{\"id\":\"a\",\"v\":2}\n"
        );
        assert_eq!(merge_by_id(&path, &new).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mode_is_kept_and_symlinks_followed() {
        let dir = temp("mode");
        let real = dir.join("real.conf");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("link.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace_file(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o7777, 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
