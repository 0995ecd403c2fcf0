//! `pinwatch live` mistakes through the binary: each is one line on standard error with its
//! documented exit code.
#![cfg(feature = "live")]

use std::process::Command;

fn live(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .arg("live")
        .args(args)
        .output()
        .expect("run pinwatch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn require_root() {
    assert!(is_root(), "opening a live capture needs root: run as root");
}

#[test]
fn unknown_interface_is_exit_3_and_lists_the_real_ones() {
    let (code, err) = live(&["-i", "pw-no-such-if0", "--rules", "/dev/null"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pw-no-such-if0"), "{err}");
    if is_root() {
        assert_eq!(code, Some(3), "{err}");
        assert!(
            err.contains("lo"),
            "the available interfaces are listed: {err}"
        );
    } else {
        // Unprivileged, libpcap may refuse before it looks the name up: still an input error.
        assert_eq!(code, Some(3), "{err}");
    }
}

#[test]
#[ignore = "needs root to open lo; .ci/run runs it"]
fn bad_bpf_filter_is_exit_2_with_libpcaps_reason() {
    require_root();
    let (code, err) = live(&[
        "-i",
        "lo",
        "--bpf",
        "tcp port banana",
        "--rules",
        "/dev/null",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("banana") || err.contains("syntax"), "{err}");
}

#[test]
#[ignore = "needs root to open lo; .ci/run runs it"]
fn unknown_user_is_exit_6() {
    require_root();
    let (code, err) = live(&[
        "-i",
        "lo",
        "--user",
        "pw-no-such-user",
        "--rules",
        "/dev/null",
    ]);
    assert_eq!(code, Some(6), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pw-no-such-user"), "{err}");
}

#[test]
#[ignore = "needs root to open lo; .ci/run runs it"]
fn unwritable_webhook_url_is_exit_2() {
    require_root();
    let (code, err) = live(&[
        "-i",
        "lo",
        "--webhook",
        "ftp://x/rules",
        "--rules",
        "/dev/null",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
