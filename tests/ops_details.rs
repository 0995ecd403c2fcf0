//! The details a user hits in the first minutes (issue 24), through the release binary on real
//! captures: the candidate table says what it left out, empty and tiny inputs are exit 3, a
//! `.pcap.gz` is read as it is, `| head` ends quietly, `replay --bpf`, replaying twice leaves one
//! line per rule, counts in words, `--summary-json`, and export writing only its own file.

mod common;
mod hostile;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};

use common::{path_string, repo_file, temp_dir};
use hostile::{BIN, pinwatch as run};
use serde_json::Value;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Records without `file`, which names the input as given.
fn without_file(bytes: &[u8]) -> Vec<Value> {
    let mut records = lines(bytes);
    for r in &mut records {
        r.as_object_mut().unwrap().remove("file");
    }
    records
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    lines(&std::fs::read(path).unwrap())
}

#[test]
fn candidate_table_says_how_many_it_left_out() {
    let capture = repo_file("tests/data/many-candidates.pcap");
    let all = run(&["replay", &capture, "--min-confidence", "0", "-q"]);
    let with_failures = lines(&all.stdout)
        .iter()
        .filter(|r| r["evidence"]["failures"].as_u64() > Some(0))
        .count();
    assert!(
        with_failures > 30,
        "the capture should have more than 30: {with_failures}"
    );
    let out = run(&["replay", &capture, "--rules", "/dev/null"]);
    let text = stderr(&out);
    let rows = text
        .lines()
        .filter(|l| l.len() > 2 && l[2..].starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(rows, 30, "{text}");
    let note = format!("and {} more candidates not shown", with_failures - 30);
    assert!(text.contains(&note), "{note:?} missing from:\n{text}");
}

#[test]
fn empty_rules_are_an_empty_set_and_tiny_inputs_exit_3() {
    let dir = temp_dir("tiny");
    let empty = path_string(&dir.join("empty.jsonl"));
    std::fs::write(&empty, b"").unwrap();
    // What a replay that found nothing writes: an empty rule set, so the config bypasses nothing.
    let out = run(&["export", "--format", "squid", &empty]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bypasses nothing"),
        "{}",
        stderr(&out)
    );
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(!config.contains("ssl_bump splice"), "{config}");

    let garbage = path_string(&dir.join("ten.jsonl"));
    std::fs::write(&garbage, b"0123456789").unwrap();
    let out = run(&["export", "--format", "domains", &garbage]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no pinwatch.rule/3 rules"),
        "{}",
        stderr(&out)
    );

    // The first 10 bytes of a real capture: cut off inside the file header.
    let real = std::fs::read(repo_file("captures/mitm-explicit-pinning.pcap")).unwrap();
    for (name, bytes) in [("ten.pcap", &real[..10]), ("header-only.pcap", &real[..23])] {
        let path = path_string(&dir.join(name));
        std::fs::write(&path, bytes).unwrap();
        let out = run(&["replay", &path]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{name}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("too short to be a capture"), "{text}");
    }
}

#[test]
fn gzip_captures_are_read_as_they_are() {
    let dir = temp_dir("gzip");
    let plain = repo_file("captures/mitm-explicit-pinning.pcap");
    let gz = dir.join("day1.pcap.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let want = run(&["replay", &plain, "--connections", "-", "-q"]);
    assert!(!want.stdout.is_empty());
    for threads in ["1", "2"] {
        let got = run(&[
            "replay",
            &path_string(&gz),
            "--connections",
            "-",
            "-q",
            "--threads",
            threads,
        ]);
        assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
        assert_eq!(
            without_file(&got.stdout),
            without_file(&want.stdout),
            "threads {threads}"
        );
    }
    let mut child = Command::new(BIN)
        .args(["replay", "-", "--connections", "-", "-q"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert_eq!(child.status.code(), Some(0), "{}", stderr(&child));
    assert_eq!(
        without_file(&std::mem::take(&mut child.stdout)),
        without_file(&want.stdout)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_run_quietly() {
    let capture = repo_file("tests/data/many-candidates.pcap");
    let mut child = Command::new(BIN)
        .args(["replay", &capture, "--connections", "-", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // The reader is dropped here, as `head -1` exits.
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains("broken pipe") && !text.contains("went away"),
        "{text}"
    );
}

#[test]
fn replay_bpf_filters_or_says_how_to_get_it() {
    let capture = repo_file("captures/mitm-multihost.pcap");
    let all = lines(&run(&["replay", &capture, "--connections", "-", "-q"]).stdout);
    let client = all[0]["client_ip"].as_str().unwrap().to_string();
    let expr = format!("host {client}");
    let out = run(&[
        "replay",
        &capture,
        "--connections",
        "-",
        "-q",
        "--bpf",
        &expr,
    ]);
    if cfg!(feature = "live") {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got = lines(&out.stdout);
        let want: Vec<&Value> = all
            .iter()
            .filter(|r| r["client_ip"] == client.as_str())
            .collect();
        assert!(!want.is_empty() && want.len() < all.len());
        assert_eq!(got.iter().collect::<Vec<_>>(), want);
        let bad = run(&["replay", &capture, "--bpf", "tcp port nonsense"]);
        assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
        assert!(stderr(&bad).contains("pcap-filter"), "{}", stderr(&bad));
    } else {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--features live"), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn replaying_twice_leaves_one_line_per_rule() {
    let dir = temp_dir("rules-twice");
    let rules = dir.join("rules.jsonl");
    let r = path_string(&rules);
    let one = repo_file("captures/mitm-multihost.pcap");
    let other = repo_file("captures/mitm-explicit-pinning.pcap");
    assert_eq!(
        run(&["replay", &one, "--rules", &r, "-q"]).status.code(),
        Some(0)
    );
    let first = read_lines(&rules);
    assert!(!first.is_empty());
    assert_eq!(
        run(&["replay", &one, "--rules", &r, "-q"]).status.code(),
        Some(0)
    );
    assert_eq!(
        read_lines(&rules),
        first,
        "a second replay must not add lines"
    );
    // Rules of another capture are kept beside them.
    assert_eq!(
        run(&["replay", &other, "--rules", &r, "-q"]).status.code(),
        Some(0)
    );
    let merged = read_lines(&rules);
    let ids: std::collections::BTreeSet<&str> =
        merged.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), merged.len(), "one line per id: {merged:?}");
    assert!(
        first
            .iter()
            .all(|l| ids.contains(l["id"].as_str().unwrap()))
    );
    assert!(merged.len() > first.len());
    // --truncate: only what this replay found.
    assert_eq!(
        run(&["replay", &one, "--rules", &r, "-q", "--truncate"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(read_lines(&rules), first);
    // --truncate for an appended output too.
    let conns = path_string(&dir.join("conns.jsonl"));
    let into_conns = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            one.as_str(),
            "--connections",
            &conns,
            "--rules",
            "/dev/null",
            "-q",
        ];
        args.extend_from_slice(extra);
        run(&args);
    };
    into_conns(&[]);
    into_conns(&[]);
    let twice = read_lines(std::path::Path::new(&conns)).len();
    into_conns(&["--truncate"]);
    assert_eq!(read_lines(std::path::Path::new(&conns)).len() * 2, twice);
}

#[test]
fn counts_are_in_words() {
    let out = run(&[
        "replay",
        &repo_file("captures/mitm-transparent-other.pcap"),
        "--min-confidence",
        "0",
        "-q",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(1 connection)"), "{text}");
    assert!(text.contains("the 1 address that fails"), "{text}");
    assert!(!text.contains("1 connections"), "{text}");
    assert!(!text.contains("1 addresses"), "{text}");

    let dir = temp_dir("words");
    let rules = dir.join("rules.jsonl");
    let good = run(&["replay", &repo_file("captures/mitm-multihost.pcap"), "-q"]).stdout;
    let mut file = good.clone();
    file.extend_from_slice(b"{\"not\":\"a rule\"}\n");
    std::fs::write(&rules, file).unwrap();
    let out = run(&["export", "--format", "domains", &path_string(&rules)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(": 1 line skipped ("),
        "{}",
        stderr(&out)
    );
}

#[test]
fn summary_json_describes_the_run() {
    let dir = temp_dir("summary");
    let summary = dir.join("run.json");
    let capture = repo_file("captures/mitm-multihost.pcap");
    let out = Command::new(BIN)
        .args([
            "replay",
            &capture,
            "--connections",
            "-",
            "--summary-json",
            &path_string(&summary),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let records = lines(&out.stdout);
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["schema"], "pinwatch.summary/1");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["files"], 1);
    assert_eq!(s["connections"].as_u64(), Some(records.len() as u64));
    let alerts = records
        .iter()
        .filter(|r| r["outcome"] == "client_alert")
        .count() as u64;
    assert_eq!(s["outcomes"]["client_alert"].as_u64(), Some(alerts));
    assert!(stderr(&out).contains(&format!("{} TCP connections", records.len())));

    // A damaged input: the summary carries the exit code and the error line.
    let real = std::fs::read(&capture).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &real[..real.len() - 7]).unwrap();
    let out = run(&[
        "replay",
        &path_string(&cut),
        "-q",
        "--summary-json",
        &path_string(&summary),
    ]);
    assert_eq!(out.status.code(), Some(4));
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["exit_code"], 4);
    assert!(
        s["errors"][0].as_str().unwrap().contains("truncated"),
        "{s}"
    );
}

#[test]
fn export_writes_only_its_own_file() {
    let dir = temp_dir("export-own");
    let rules = dir.join("rules.jsonl");
    let r = path_string(&rules);
    run(&[
        "replay",
        &repo_file("captures/mitm-multihost.pcap"),
        "--rules",
        &r,
        "-q",
    ]);

    // The user's own mitmproxy config is never replaced.
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "mode:\n  - regular\nignore_hosts: ['^mine:443$']\n",
    )
    .unwrap();
    let out = run(&[
        "export",
        "--format",
        "mitmproxy",
        "-o",
        &path_string(&config),
        &r,
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("mitmproxy-addon"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "mode:\n  - regular\nignore_hosts: ['^mine:443$']\n"
    );

    // Its own file, behind a symlink, with the mode (and owner, as root) the admin gave it.
    let real = dir.join("pinwatch-bypass.conf");
    let link = dir.join("bypass-link.conf");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run(&["export", "--format", "squid", "-o", &path_string(&link), &r]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let as_root = nix_is_root();
    if as_root {
        std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
    }
    let out = run(&[
        "export",
        "--format",
        "squid",
        "--min-confidence",
        "0.9",
        "-o",
        &path_string(&link),
        &r,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let meta = std::fs::metadata(&real).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    if as_root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("acl pinwatch_bypass")
    );
    let leftovers: Vec<_> = std::fs::read_dir(&*dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The addon in a real mitmdump: the user's own ignore_hosts stays and the exported pattern is
/// added to it.
#[test]
#[ignore = "needs mitmdump (pip install mitmproxy); .ci/run runs it"]
fn mitmproxy_addon_adds_to_the_users_ignore_hosts() {
    let dir = temp_dir("addon");
    let rules = path_string(&dir.join("rules.jsonl"));
    run(&[
        "replay",
        &repo_file("captures/mitm-multihost.pcap"),
        "--rules",
        &rules,
        "-q",
    ]);
    let addon = dir.join("pinwatch_bypass.py");
    let out = run(&[
        "export",
        "--format",
        "mitmproxy-addon",
        "-o",
        &path_string(&addon),
        &rules,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let probe = dir.join("probe.py");
    std::fs::write(
        &probe,
        "import asyncio\nfrom mitmproxy import ctx\n\nclass Probe:\n    def running(self):\n        \
         async def later():\n            await asyncio.sleep(0.5)\n            \
         print('IGNORE_HOSTS=' + '|'.join(ctx.options.ignore_hosts), flush=True)\n            \
         ctx.master.shutdown()\n        asyncio.get_event_loop().create_task(later())\n\naddons = [Probe()]\n",
    )
    .unwrap();
    let out = Command::new("mitmdump")
        .args(["--set", "listen_host=127.0.0.1", "--set", "listen_port=0"])
        .args(["--set", "ignore_hosts=^mine\\.example:443$"])
        .arg("-s")
        .arg(&addon)
        .arg("-s")
        .arg(&probe)
        .output()
        .expect("mitmdump must be installed for this test (pip install mitmproxy)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split("IGNORE_HOSTS=").nth(1))
        .unwrap_or_else(|| panic!("no probe line: {text}{}", stderr(&out)));
    let hosts: Vec<&str> = line.split('|').collect();
    assert_eq!(hosts[0], "^mine\\.example:443$", "{line}");
    assert!(hosts.contains(&"^(.+\\.)?pinnedbank\\.test:"), "{line}");
}
