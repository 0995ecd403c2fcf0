//! Bad files, bad flags, unwritable and full outputs, run through the release binary as a user
//! would. Every failure must be exactly one line on standard error that names the problem and
//! says what to do, with the exit code of its class (README, "Exit codes": 2 command line,
//! 3 input unusable, 4 input damaged part-way, 5 output not writable), and nothing that was
//! processed may be lost.

mod common;
mod hostile;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{path_string, repo_file, temp_dir};
use hostile::{BIN, ndjson, pinwatch};
use serde_json::Value;

/// Exit code and the single stderr line, asserting there is exactly one.
fn one_line(label: &str, out: &Output) -> (Option<i32>, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{label}: expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("pinwatch: "), "{label}: {stderr}");
    (out.status.code(), lines[0].to_string())
}

fn assert_error(label: &str, out: &Output, code: i32, must_contain: &[&str]) {
    let (got, line) = one_line(label, out);
    assert_eq!(got, Some(code), "{label}: {line}");
    for part in must_contain {
        assert!(
            line.contains(part),
            "{label}: {part:?} missing from: {line}"
        );
    }
}

fn replay(files: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["replay"];
    args.extend_from_slice(files);
    args.extend_from_slice(extra);
    pinwatch(&args)
}

/// Records the library gives for the packets of these files, as the binary prints them.
fn library_records(paths: &[String]) -> Vec<Value> {
    common::run(paths)
}

// Inputs -----------------------------------------------------------------------------------

#[test]
fn unusable_inputs_say_what_to_do() {
    // The class (exit 3, one line, the name) is checked in edge_cases; here, the remedy.
    let dir = temp_dir("remedy");
    let missing = path_string(&dir.join("no-such.pcap"));
    let directory = path_string(&dir);
    let empty = path_string(&dir.join("empty.pcap"));
    std::fs::write(&empty, b"").unwrap();
    let text = path_string(&dir.join("notes.txt"));
    std::fs::write(&text, "these are notes, not packets\n".repeat(10)).unwrap();
    for (file, remedy) in [
        (&missing, "check the path"),
        (&directory, "name the capture files in it"),
        (&empty, "nothing to replay"),
        (&text, "convert it with `tshark"),
    ] {
        let out = replay(&[file], &["--connections", "-", "--quiet"]);
        assert_error(file, &out, 3, &[file, remedy]);
    }
    // Standard input is named as such.
    let mut child = Command::new(BIN)
        .args(["replay", "-", "--connections", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_error("stdin", &out, 3, &["standard input: not a pcap"]);
}

/// Runs the binary as the unprivileged user `nobody` (with setpriv, from util-linux, when this
/// test runs as root; as this user otherwise, whose permissions apply already).
fn as_nobody(args: &[&str]) -> Output {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if root.ok() != Some(0) {
        return pinwatch(args);
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux) to drop root: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.starts_with("setpriv:"), "setpriv failed: {stderr}");
    out
}

#[test]
fn unreadable_input_is_exit_3_and_the_readable_one_is_still_reported() {
    let dir = temp_dir("unreadable");
    let secret = dir.join("secret.pcap");
    std::fs::copy(repo_file("captures/non-tls.pcap"), &secret).unwrap();
    let good = dir.join("good.pcap");
    std::fs::copy(repo_file("captures/mitm-explicit-idle.pcap"), &good).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (secret, good) = (path_string(&secret), path_string(&good));
    let out = as_nobody(&["replay", &secret, &good, "--connections", "-", "--quiet"]);
    assert_error(
        "unreadable",
        &out,
        3,
        &[&secret, "Permission denied", "read access"],
    );
    let origin = |records: Vec<Value>| -> Vec<Value> {
        records
            .iter()
            .map(|r| common::without(r, common::RUN_ORIGIN))
            .collect()
    };
    assert_eq!(
        origin(ndjson(&out.stdout)),
        origin(library_records(&[good]))
    );
}

/// A copy of `src` cut in the middle of the record 2/3 of the way in; returns the path, the
/// offset of the damaged record and a clean file of the packets before it.
fn truncated_copy(dir: &Path, src: &str, name: &str) -> (String, usize, String) {
    let packets = common::read_pcap(src);
    let bytes = common::pcap_bytes(common::LINKTYPE_ETHERNET, false, &packets);
    let offsets = common::pcap_record_offsets(&packets);
    let k = packets.len() * 2 / 3;
    let cut = dir.join(name);
    std::fs::write(&cut, &bytes[..offsets[k] + 20]).unwrap();
    let clean = common::write_pcap(&dir.join(format!("clean-{name}")), &packets[..k]);
    (path_string(&cut), offsets[k], clean)
}

#[test]
fn a_damaged_file_among_good_ones_loses_nothing_that_was_read() {
    let dir = temp_dir("twofiles");
    let good = repo_file("captures/mitm-explicit-success.pcap");
    let (cut, offset, clean) = truncated_copy(
        &dir,
        &repo_file("captures/mitm-explicit-pinning.pcap"),
        "cut.pcap",
    );
    // Damaged second, then damaged first: both files are replayed up to the damage, every
    // record of the readable parts is written, and the exit code says "damaged" (4).
    for (label, files) in [
        ("damaged second", [good.clone(), cut.clone()]),
        ("damaged first", [cut.clone(), good.clone()]),
    ] {
        let out = replay(&[&files[0], &files[1]], &["--connections", "-", "--quiet"]);
        assert_error(
            label,
            &out,
            4,
            &[
                &cut,
                &format!("offset {offset}"),
                "packets before it were replayed",
            ],
        );
        let expected_files: Vec<String> = files
            .iter()
            .map(|f| if *f == cut { clean.clone() } else { f.clone() })
            .collect();
        let expected = library_records(&expected_files);
        let printed = ndjson(&out.stdout);
        assert!(printed.len() > 10, "{label}: {}", printed.len());
        common::assert_same(label, &expected, &printed, |r| {
            common::without(r, common::RUN_ORIGIN)
        });
    }
    // Several bad inputs: one line each, and the first one's class decides the exit code.
    let missing = path_string(&dir.join("missing.pcap"));
    for (files, code) in [([&missing, &cut], 3), ([&cut, &missing], 4)] {
        let out = replay(&[files[0], files[1]], &["--connections", "-", "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 2, "{stderr}");
        assert_eq!(out.status.code(), Some(code), "{stderr}");
    }
}

// Outputs ----------------------------------------------------------------------------------

#[test]
fn unwritable_outputs_are_exit_5_with_the_path_and_the_remedy() {
    let dir = temp_dir("unwritable");
    let input = repo_file("captures/mitm-explicit-pinning.pcap");
    let nowhere = "/nonexistent/dir/x.jsonl";
    let directory = path_string(&dir);
    for flag in ["--connections", "--rules", "--findings"] {
        let out = replay(&[&input], &[flag, nowhere, "--quiet"]);
        assert_error(flag, &out, 5, &[nowhere, "the directory does not exist"]);
        let out = replay(&[&input], &[flag, &directory, "--quiet"]);
        assert_error(flag, &out, 5, &[&directory, "choose a writable file path"]);
    }
}

#[test]
fn full_disk_is_exit_5_and_never_silent() {
    let input = repo_file("captures/mitm-explicit-pinning.pcap");
    let all = common::tls_captures();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    // Small outputs fail when flushed at the end; the records of every capture together
    // (over the 256 KiB write buffer) fail in the middle of the replay.
    for (label, files, flag) in [
        ("rules", vec![input.as_str()], "--rules"),
        ("findings", vec![input.as_str()], "--findings"),
        ("connections", vec![input.as_str()], "--connections"),
        ("connections, large", all.clone(), "--connections"),
    ] {
        let mut args = files.clone();
        args.extend([flag, "/dev/full", "--quiet"]);
        let out = replay(&[], &args);
        assert_error(
            label,
            &out,
            5,
            &["/dev/full", "No space left on device", "free some space"],
        );
    }
    // Standard output on a full disk (the default place of rules).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .args(["replay", &input, "--quiet"])
        .stdout(full)
        .output()
        .unwrap();
    assert_error(
        "stdout",
        &out,
        5,
        &["standard output", "No space left on device"],
    );
}

#[test]
#[ignore = "needs root and a private mount namespace (unshare -m); .ci/run runs it"]
fn full_tmpfs_keeps_what_fit_and_says_so() {
    // A 64 KiB tmpfs in a private mount namespace (needs root): the records that fit are on
    // disk, the error is one line, exit 5.
    let dir = temp_dir("tmpfs");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let size_file = dir.join("size");
    let conns = mnt.join("conns.jsonl");
    let all = common::tls_captures();
    let script = format!(
        "mount -t tmpfs -o size=64k pinwatch-test {mnt} || exit 99; \
         \"$@\"; code=$?; stat -c %s {conns} > {size}; exit $code",
        mnt = mnt.display(),
        conns = conns.display(),
        size = size_file.display()
    );
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
            BIN,
            "replay",
        ])
        .args(&all)
        .args(["--connections", &path_string(&conns), "--quiet"])
        .stdin(Stdio::null())
        .output();
    let out = out.unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
    assert!(
        out.status.code() != Some(99) && !out.stderr.starts_with(b"unshare:"),
        "no private tmpfs here: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_error(
        "tmpfs",
        &out,
        5,
        &[&path_string(&conns), "No space left on device"],
    );
    let size: u64 = std::fs::read_to_string(&size_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        size,
        64 * 1024,
        "the file system was filled to the last byte"
    );
}

// Flags ------------------------------------------------------------------------------------

#[test]
fn command_line_mistakes_are_one_line_and_exit_2() {
    let dir = temp_dir("flags");
    // A copy: one case names the input as an output, which must not empty it.
    let input = path_string(&dir.join("input.pcap"));
    std::fs::copy(repo_file("captures/non-tls.pcap"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let out_path = path_string(&dir.join("out.jsonl"));
    for (args, must) in [
        (
            vec!["replay", &input, "--bogus"],
            vec!["'--bogus'", "pinwatch replay --help"],
        ),
        (
            vec!["replay", &input, "--quet"],
            vec!["a similar argument exists: '--quiet'"],
        ),
        (
            vec!["replay", &input, "--max-flows", "zero"],
            vec!["invalid value 'zero' for '--max-flows <N>'"],
        ),
        (
            vec!["replay", &input, "--max-flows", "0"],
            vec!["'--max-flows <N>'"],
        ),
        (
            vec!["replay", &input, "--handshake-cap", "5"],
            vec!["5 is not in 1024..=16777216"],
        ),
        (
            vec!["replay", &input, "--min-confidence", "2"],
            vec!["--min-confidence must be between 0 and 1"],
        ),
        (
            vec!["replay", &input, "--proxy-addr", "1.2.3"],
            vec!["'--proxy-addr <IP>'", "invalid IP address"],
        ),
        (vec!["replay"], vec!["<FILE>", "pinwatch replay --help"]),
        (vec!["frobnicate"], vec!["'frobnicate'", "pinwatch --help"]),
        (
            vec!["replay", &input, "--connections", &input],
            vec!["is one of the input files"],
        ),
        (
            vec![
                "replay",
                &input,
                "--connections",
                &out_path,
                "--rules",
                &out_path,
            ],
            vec!["both name", "give each output its own path"],
        ),
    ] {
        let out = pinwatch(&args);
        assert_error(&args.join(" "), &out, 2, &must);
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "the input was touched"
    );
    // Help and version are not errors.
    for args in [["replay", "--help"], ["--version", ""]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = pinwatch(&args);
        assert_eq!(out.status.code(), Some(0));
        assert!(!out.stdout.is_empty());
    }
}
