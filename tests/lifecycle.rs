//! The rule lifecycle (`status`, `seq`, withdrawals) and `--state`, end to end through the
//! binary on real captures (mitmproxy intercepting real clients, captures/README.md).

mod common;

use std::process::{Command, Output};

use common::{TempDir, path_string, repo_file, temp_dir};
use serde_json::Value;

const CAPTURE: &str = "captures/mitm-multihost.pcap";

fn pinwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(args)
        .output()
        .expect("run pinwatch")
}

fn lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// `replay CAPTURE --state DIR --rules OUT --truncate EXTRA...`; the rule lines written.
fn replay_with_state(dir: &TempDir, out: &str, extra: &[&str]) -> Vec<Value> {
    let rules = path_string(&dir.join(out));
    let state = path_string(&dir.join("state"));
    let capture = repo_file(CAPTURE);
    let mut args = vec![
        "replay",
        "-q",
        &capture,
        "--rules",
        &rules,
        "--truncate",
        "--state",
        &state,
    ];
    args.extend_from_slice(extra);
    let run = pinwatch(&args);
    assert!(
        run.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    lines(&rules)
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

#[test]
fn replay_lines_carry_status_and_increasing_seq() {
    let dir = temp_dir("lc-seq");
    let rules = replay_with_state(&dir, "r.jsonl", &[]);
    assert!(!rules.is_empty(), "the capture yields a rule");
    for (i, r) in rules.iter().enumerate() {
        assert_eq!(field(r, "schema"), "pinwatch.rule/3");
        assert_eq!(field(r, "status"), "new");
        assert_eq!(r["seq"].as_u64(), Some(i as u64), "seq counts the lines");
    }
}

#[test]
fn restart_with_state_announces_nothing_unchanged_and_continues_seq() {
    let dir = temp_dir("lc-restart");
    let first = replay_with_state(&dir, "r1.jsonl", &[]);
    assert!(!first.is_empty());
    let second = replay_with_state(&dir, "r2.jsonl", &[]);
    assert!(
        second.is_empty(),
        "the same evidence again re-announces nothing: {second:?}"
    );
    // A lower threshold brings in more rules: numbered after everything sent before.
    let third = replay_with_state(&dir, "r3.jsonl", &["--min-confidence", "0.05"]);
    let last_seq = first
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap();
    for r in &third {
        assert!(r["seq"].as_u64().unwrap() > last_seq, "seq continues: {r}");
        assert_eq!(field(r, "status"), "new");
    }
}

#[test]
fn below_threshold_withdraws_and_export_of_rotated_files_gives_the_rules_in_force() {
    let dir = temp_dir("lc-withdraw");
    let first = replay_with_state(&dir, "rules.jsonl.1", &[]);
    let ids: Vec<&str> = first.iter().map(|r| field(r, "id")).collect();
    assert!(!ids.is_empty());
    // The same traffic judged against a stricter threshold: the rules fall below it.
    let second = replay_with_state(&dir, "rules.jsonl", &["--min-confidence", "0.99"]);
    let withdrawn: Vec<&str> = second
        .iter()
        .filter(|r| field(r, "status") == "withdrawn")
        .map(|r| field(r, "id"))
        .collect();
    for id in &ids {
        assert!(withdrawn.contains(id), "{id} withdrawn: {second:?}");
    }
    for r in &second {
        assert_eq!(field(r, "withdrawn_reason"), "below_threshold");
    }
    let current = path_string(&dir.join("rules.jsonl"));
    let rotated = path_string(&dir.join("rules.jsonl.1"));
    // Given in either order, the withdrawn rules are not exported.
    for files in [[&current, &rotated], [&rotated, &current]] {
        let out = pinwatch(&["export", "--format", "json", files[0], files[1]]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "nothing in force after the withdrawal"
        );
    }
    // The rotated file alone still holds them, once each, also given twice.
    let out = pinwatch(&["export", "--format", "domains", &rotated, &rotated]);
    let names = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(names.lines().count(), ids.len(), "{names}");
}

#[test]
fn corrupt_or_newer_state_exits_non_zero_with_one_line() {
    let dir = temp_dir("lc-bad-state");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let capture = repo_file(CAPTURE);
    let rules = path_string(&dir.join("r.jsonl"));
    for (content, says) in [
        (
            r#"{"format":"pinwatch.state","version":99,"lifecycle":{}}"#,
            "newer pinwatch",
        ),
        ("{\"format\":\"pinwatch.st", "not a pinwatch state"),
        (
            r#"{"format":"pinwatch.state","version":1,"lifecycle":{"next_seq":"x"}}"#,
            "damaged",
        ),
    ] {
        std::fs::write(state.join("state.json"), content).unwrap();
        let out = pinwatch(&[
            "replay",
            "-q",
            &capture,
            "--rules",
            &rules,
            "--state",
            &path_string(&state),
        ]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
        // The state is left as it was, for the user to look at.
        assert_eq!(
            std::fs::read_to_string(state.join("state.json")).unwrap(),
            content
        );
    }
}
