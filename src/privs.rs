//! Giving up root after the capture handle is open (Linux). A sensor parses hostile bytes all
//! day; once the packet socket exists it needs no privilege at all, so it should not keep any.
//!
//! Call [`drop_privileges`] (or [`drop_capabilities`] when not started as root) before
//! spawning threads: user and group changes go through glibc, which applies them to every
//! thread, but capabilities are per thread and only the caller's are cleared explicitly.

use std::path::Path;

use nix::errno::Errno;
use nix::libc;
use nix::unistd::{self, Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("no user `{0}` to run as; pass an existing unprivileged account (e.g. --user nobody)")]
    UnknownUser(String),
    #[error("cannot look up user `{user}`: {source}")]
    Lookup { user: String, source: Errno },
    #[error("refusing to run as `{0}`: it is root; pass an unprivileged account (e.g. nobody)")]
    TargetIsRoot(String),
    #[error(
        "cannot switch to user `{user}`: pinwatch runs as uid {uid}, not root; start it as root, \
         or leave out --user (a setcap'd binary already runs unprivileged)"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("cannot drop privileges: {call} failed: {source}")]
    Call { call: String, source: Errno },
    #[error("privilege drop did not stick: {0}; refusing to continue")]
    NotDropped(String),
    #[error(
        "cannot drop capabilities in a process that already runs {0} threads: they are per \
         thread; drop them before starting threads"
    )]
    Threads(u32),
    #[error("cannot read {path}: {source}")]
    Status {
        path: String,
        source: std::io::Error,
    },
}

/// Credentials of a process or thread as the kernel reports them in `/proc/.../status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem user ids.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem group ids.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capability set (bit mask).
    pub cap_eff: u64,
    /// Permitted capability set: what could be made effective again.
    pub cap_prm: u64,
    /// Threads in the process.
    pub threads: u32,
}

impl ProcStatus {
    /// The calling thread's credentials (capabilities are per thread).
    pub fn current() -> Result<Self, PrivError> {
        Self::read("/proc/thread-self/status")
    }

    /// Another process's credentials, e.g. a child that dropped privileges.
    pub fn of_pid(pid: u32) -> Result<Self, PrivError> {
        Self::read(format!("/proc/{pid}/status"))
    }

    pub fn read(path: impl AsRef<Path>) -> Result<Self, PrivError> {
        let path = path.as_ref();
        let status_error = |source| PrivError::Status {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(status_error)?;
        Self::parse(&text).ok_or_else(|| {
            status_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "missing Uid, Gid, Groups, CapEff, CapPrm or Threads line",
            ))
        })
    }

    /// Parses the text of a status file; `None` when a needed line is missing or garbled.
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            v.try_into().ok()
        };
        let caps = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(ProcStatus {
            uid: ids("Uid")?,
            gid: ids("Gid")?,
            groups: field("Groups")?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
            cap_eff: caps("CapEff")?,
            cap_prm: caps("CapPrm")?,
            threads: field("Threads")?.parse().ok()?,
        })
    }

    /// One line for startup logs: `uid=0 gid=0 cap_eff=000001ffffffffff`.
    pub fn summary(&self) -> String {
        format!(
            "uid={} gid={} cap_eff={:016x}",
            self.uid[1], self.gid[1], self.cap_eff
        )
    }
}

/// Becomes `user` for good: supplementary groups, group and user ids all switch, then checks
/// that root cannot be regained and no capability is left. Started as that same user (a
/// setcap'd binary), it only clears the capabilities.
pub fn drop_privileges(user: &str) -> Result<(), PrivError> {
    let account = match User::from_name(user) {
        Ok(Some(account)) => account,
        Ok(None) => return Err(PrivError::UnknownUser(user.to_string())),
        Err(source) => {
            return Err(PrivError::Lookup {
                user: user.to_string(),
                source,
            });
        }
    };
    if account.uid.is_root() {
        return Err(PrivError::TargetIsRoot(user.to_string()));
    }
    let (uid, gid) = (account.uid, account.gid);
    if !unistd::geteuid().is_root() {
        if unistd::getuid() == uid && unistd::geteuid() == uid {
            return drop_capabilities();
        }
        return Err(PrivError::NotRoot {
            user: user.to_string(),
            uid: unistd::geteuid().as_raw(),
        });
    }
    // Groups first: once the user id changes, the right to change groups is gone.
    call(format!("setgroups([{gid}])"), unistd::setgroups(&[gid]))?;
    call(format!("setgid({gid})"), unistd::setgid(gid))?;
    call(format!("setuid({uid})"), unistd::setuid(uid))?;
    // Leaving root clears the capabilities unless SECBIT_KEEP_CAPS was set; clear them anyway.
    clear_capabilities()?;
    verify(uid, gid)
}

/// Clears every capability (effective, permitted, inheritable; ambient follows permitted), for
/// a process started unprivileged with file capabilities. Capabilities belong to each thread,
/// so this refuses once other threads exist: they would keep theirs.
pub fn drop_capabilities() -> Result<(), PrivError> {
    let threads = ProcStatus::read("/proc/self/status")?.threads;
    if threads > 1 {
        return Err(PrivError::Threads(threads));
    }
    clear_capabilities()
}

/// Clears the calling thread's capabilities and checks that the kernel agrees.
fn clear_capabilities() -> Result<(), PrivError> {
    capset_empty().map_err(|source| PrivError::Call {
        call: "capset(empty)".into(),
        source,
    })?;
    let now = ProcStatus::current()?;
    if now.cap_eff != 0 || now.cap_prm != 0 {
        return Err(PrivError::NotDropped(format!(
            "capabilities remain (CapEff={:016x}, CapPrm={:016x})",
            now.cap_eff, now.cap_prm
        )));
    }
    Ok(())
}

fn call(what: String, result: nix::Result<()>) -> Result<(), PrivError> {
    result.map_err(|source| PrivError::Call { call: what, source })
}

/// The kernel's view after the switch, not our intent: every id changed, no way back to root.
fn verify(uid: Uid, gid: Gid) -> Result<(), PrivError> {
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::NotDropped("setuid(0) succeeded".into()));
    }
    let now = ProcStatus::current()?;
    let (u, g) = (uid.as_raw(), gid.as_raw());
    if now.uid != [u; 4] || now.gid != [g; 4] || now.groups != [g] {
        return Err(PrivError::NotDropped(format!(
            "kernel reports uid {:?}, gid {:?}, groups {:?}",
            now.uid, now.gid, now.groups
        )));
    }
    if now.cap_eff != 0 || now.cap_prm != 0 {
        return Err(PrivError::NotDropped(format!(
            "capabilities remain (CapEff={:016x})",
            now.cap_eff
        )));
    }
    Ok(())
}

/// capset(2) with empty sets. Neither libc nor nix wraps it; the layout is the kernel's
/// version-3 header and two 32-bit data words.
fn capset_empty() -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: both pointers are valid for the duration of the call and laid out as the kernel
    // expects for version 3; pid 0 means the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Name:\tpinwatch\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\n\
        Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
        FDSize:\t64\nGroups:\t65534 \nThreads:\t3\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn parses_ids_groups_threads_and_capabilities() {
        let s = ProcStatus::parse(SAMPLE).unwrap();
        assert_eq!(s.uid, [65534; 4]);
        assert_eq!(s.gid, [65534; 4]);
        assert_eq!(s.groups, vec![65534]);
        assert_eq!(s.threads, 3);
        assert_eq!((s.cap_eff, s.cap_prm), (0, 0));
        assert_eq!(s.summary(), "uid=65534 gid=65534 cap_eff=0000000000000000");
    }

    #[test]
    fn root_capabilities_and_empty_groups() {
        let text = SAMPLE
            .replace("65534", "0")
            .replace("Groups:\t0 ", "Groups:\t")
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff");
        let s = ProcStatus::parse(&text).unwrap();
        assert_eq!(s.uid, [0; 4]);
        assert!(s.groups.is_empty());
        assert_eq!(s.cap_eff, 0x1ff_ffff_ffff);
    }

    #[test]
    fn garbled_or_missing_lines_are_none() {
        assert!(ProcStatus::parse("").is_none());
        assert!(ProcStatus::parse(&SAMPLE.replace("Uid:\t65534\t", "Uid:\t")).is_none());
        assert!(ProcStatus::parse(&SAMPLE.replace("CapEff:\t0", "CapEff:\tz")).is_none());
    }

    #[test]
    fn capabilities_are_not_dropped_behind_other_threads_backs() {
        // The test harness already runs threads; one more makes sure of it.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let err = drop_capabilities().unwrap_err();
        assert!(matches!(err, PrivError::Threads(n) if n > 1), "{err}");
        drop(tx);
        let _ = other.join();
    }

    #[test]
    fn own_status_is_readable() {
        let s = ProcStatus::current().unwrap();
        assert_eq!(s.uid[1], unistd::geteuid().as_raw());
        assert!(s.threads >= 1);
    }
}
