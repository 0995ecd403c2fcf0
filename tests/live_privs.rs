//! Dropping privileges with a live capture open, in real child processes: credentials and
//! capabilities belong to the process (capabilities even to each thread), so each case runs
//! this same binary again as a single-threaded child (no test harness: `harness = false`).
//!
//! - started as root: the child opens `lo`, becomes `nobody` and still captures a TLS handshake;
//! - started as `nobody` from a copy of the binary given `setcap cap_net_raw,cap_net_admin=eip`
//!   (the README's way to run without root): the child can capture, then sheds the capabilities.
//!
//! The parent checks the child's uid, gid and capabilities in `/proc/<pid>/status`, the kernel's
//! word rather than the child's. Needs root (to open captures and to setcap), so like the other
//! tests that need root it runs only when asked with `--ignored` (`.ci/run` does), and then
//! fails without root.

mod common;
mod live_common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitCode, Stdio};

use pinwatch::capture::live::{LiveCapture, LiveError, LiveOptions};
use pinwatch::privs::{self, ProcStatus};

use live_common::*;

/// Set in the child: the port whose traffic to capture.
const CHILD_VAR: &str = "PINWATCH_LIVE_PRIVS_CHILD";
const NOBODY: u32 = 65534;
const CAP_NET_RAW: u64 = 1 << 13;

fn main() -> ExitCode {
    if let Ok(port) = std::env::var(CHILD_VAR) {
        child(port.parse().expect("port number"));
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!("live_privs: 0 passed, 0 failed, 2 ignored (needs root; run with --ignored)");
        return ExitCode::SUCCESS;
    }
    if !is_root() {
        println!("live_privs: needs root to open captures and to setcap a binary");
        return ExitCode::FAILURE;
    }
    let cases: [(&str, fn()); 2] = [
        ("root_drops_to_nobody_and_keeps_capturing", root_case),
        ("setcap_binary_as_nobody_sheds_capabilities", setcap_case),
    ];
    let mut failed = 0;
    for (name, case) in cases {
        let ok = std::panic::catch_unwind(case).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    println!(
        "live_privs: {} passed, {failed} failed",
        cases.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn root_case() {
    let me = std::env::current_exe().expect("test binary path");
    let opened = run_child(Command::new(me));
    assert!(opened.starts_with("CHILD-OPENED uid=0 "), "{opened}");
}

fn setcap_case() {
    // A copy, so that the capabilities stay off the binary cargo built; readable by nobody.
    let dir = common::temp_dir("live-setcap");
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.join("pinwatch-live-privs");
    std::fs::copy(std::env::current_exe().expect("test binary path"), &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let status = Command::new("setcap")
        .args(["cap_net_raw,cap_net_admin=eip"])
        .arg(&copy)
        .status()
        .expect("run setcap (Debian: apt-get install libcap2-bin)");
    assert!(status.success(), "setcap failed");

    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
        ])
        .arg("--clear-groups")
        .arg(&copy);
    let opened = run_child(as_nobody);
    // Unprivileged, yet able to capture thanks to the file capability.
    assert!(opened.starts_with("CHILD-OPENED uid=65534 "), "{opened}");
    let cap_eff = opened.rsplit("cap_eff=").next().unwrap_or_default();
    let cap_eff = u64::from_str_radix(cap_eff, 16).expect("cap_eff in hex");
    assert_ne!(cap_eff & CAP_NET_RAW, 0, "{opened}");
}

/// Runs a child, checks its credentials once it says it dropped them, gives it a TLS handshake
/// to capture and checks what it saw. Returns the child's line from before the drop.
fn run_child(mut command: Command) -> String {
    let dir = common::temp_dir("live-privs");
    let port = free_port();
    let mut child = ChildGuard(
        command
            .env(CHILD_VAR, port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child process"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let opened = wait_for(&mut lines, "CHILD-OPENED");
    let dropped = wait_for(&mut lines, "CHILD-DROPPED");
    assert!(
        dropped.is_some(),
        "child failed before dropping privileges (opened: {opened:?})"
    );

    let status = ProcStatus::of_pid(child.0.id()).expect("child /proc status");
    assert_eq!(status.uid, [NOBODY; 4], "{status:?}");
    assert_eq!(status.gid, [NOBODY; 4], "{status:?}");
    // No supplementary group but nobody's own (setpriv --clear-groups leaves none at all).
    assert!(status.groups.iter().all(|&g| g == NOBODY), "{status:?}");
    assert_eq!((status.cap_eff, status.cap_prm), (0, 0), "{status:?}");

    let server = TlsServer::start(&dir, port);
    tls_client(port);
    let result = wait_for(&mut lines, "CHILD-RESULT");
    drop(server);
    let exit = child.0.wait().expect("wait for the child");
    assert!(exit.success(), "child failed: {result:?}");
    assert_eq!(
        result.as_deref(),
        Some(format!("CHILD-RESULT sni={SNI} server_hello=true").as_str())
    );
    opened.expect("child reported its credentials")
}

/// Kills the child when a failed check unwinds, so it does not outlive the test.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The child: open the capture, drop to nobody, show that privileges are gone, then capture
/// the parent's handshake through the handle opened before the drop.
fn child(port: u16) {
    let mut cap = capture_loopback(port);
    println!(
        "CHILD-OPENED {}",
        ProcStatus::current().expect("own status").summary()
    );
    privs::drop_privileges("nobody").expect("drop privileges to nobody");

    // A new capture is refused now, with the advice on how to allow it.
    let err = LiveCapture::open(&LiveOptions::new("lo")).unwrap_err();
    assert!(matches!(err, LiveError::PermissionDenied { .. }), "{err}");
    assert!(err.to_string().contains("setcap cap_net_raw"), "{err}");

    println!("CHILD-DROPPED");
    let frames = collect(&mut cap, |f| {
        let seen = inspect(f, port);
        seen.client_hello_sni.is_some() && seen.server_hello
    });
    let seen = inspect(&frames, port);
    println!(
        "CHILD-RESULT sni={} server_hello={}",
        seen.client_hello_sni.unwrap_or_default(),
        seen.server_hello
    );
}
