//! Detection behaviours the issue asks for, each checked on real captures (mitmproxy and Squid
//! with real clients, `captures/`) or public corpus traces, through the binary as a user runs it.

use std::process::Command;

use serde_json::Value;

fn cap(name: &str) -> String {
    format!("{}/captures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    rules: Vec<Value>,
    findings: Vec<Value>,
    table: String,
}

fn run(files: &[String], extra: &[&str]) -> Run {
    // One directory per call: tests run in parallel and must not share a findings file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pinwatch-detect-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let findings = dir.join("findings.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .arg("replay")
        .args(files)
        .args(["--findings", findings.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parse = |text: &str| {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<Value>>()
    };
    let findings = parse(&std::fs::read_to_string(findings).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        rules: parse(&String::from_utf8_lossy(&out.stdout)),
        findings,
        table: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn host(rule: &Value) -> &str {
    rule["match"]["host"]
        .as_str()
        .or(rule["match"]["suffix"].as_str())
        .unwrap_or("")
}

#[test]
fn repeated_fast_unknown_ca_from_several_hosts_is_high_confidence_and_scoped_to_the_app() {
    let r = run(&[cap("mitm-explicit-pinning.pcap")], &[]);
    let api: Vec<&Value> = r
        .rules
        .iter()
        .filter(|x| host(x) == "api.pinnedbank.test")
        .collect();
    assert!(!api.is_empty(), "{}", r.table);
    for rule in &api {
        assert!(rule["confidence"].as_f64().unwrap() >= 0.9, "{rule}");
        // Evidence about the name comes from every failing fingerprint: software seen on one
        // host only still takes the confidence of the name's three failing hosts.
        assert!(rule["evidence"]["name"]["client_hosts"].as_u64().unwrap() >= 3);
        assert!(rule["evidence"]["client_hosts"].as_u64().unwrap() >= 1);
        assert_eq!(rule["evidence"]["successes_same_fingerprint"], 0);
        // curl with the proxy CA (browser-like) succeeds on the same name: the rule is for the app's JA4 only.
        assert!(rule["match"]["client_ja4"].is_string(), "{rule}");
        assert!(
            rule["evidence"]["successes_other_fingerprints"]
                .as_u64()
                .unwrap()
                >= 1
        );
        assert_eq!(rule["action"], "bypass_inspection");
        assert!(rule["id"].as_str().unwrap().starts_with("pw-"));
    }
    // The same evidence gives the same ids on another run.
    let again = run(&[cap("mitm-explicit-pinning.pcap")], &[]);
    assert_eq!(
        r.rules.iter().map(|x| x["id"].clone()).collect::<Vec<_>>(),
        again
            .rules
            .iter()
            .map(|x| x["id"].clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn single_client_host_is_capped_below_the_threshold_and_says_why() {
    let r = run(
        &[cap("mitm-explicit-pinning.pcap")],
        &["--min-confidence", "0"],
    );
    let pay: Vec<&Value> = r
        .rules
        .iter()
        .filter(|x| host(x) == "pay.pinnedbank.test")
        .collect();
    assert!(!pay.is_empty());
    for rule in pay {
        assert!(rule["confidence"].as_f64().unwrap() < 0.6);
        assert!(
            rule["capped_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "single_client_host"),
            "{rule}"
        );
        assert!(rule["reason"].as_str().unwrap().contains("one client host"));
    }
    let default = run(&[cap("mitm-explicit-pinning.pcap")], &[]);
    assert!(
        default
            .rules
            .iter()
            .all(|x| host(x) != "pay.pinnedbank.test")
    );
}

#[test]
fn idle_closes_are_not_pinning() {
    let r = run(
        &[cap("mitm-explicit-idle.pcap")],
        &["--min-confidence", "0"],
    );
    assert!(
        r.rules.iter().all(|x| x["evidence"]["failures"] == 0),
        "{:?}",
        r.rules
    );
    assert!(r.table.contains("no pinning candidates"), "{}", r.table);
}

#[test]
fn proxy_side_failures_are_not_pinning() {
    let r = run(
        &[cap("mitm-explicit-proxyfail.pcap")],
        &["--min-confidence", "0"],
    );
    assert!(r.rules.is_empty(), "{:?}", r.rules);
}

#[test]
fn failure_behind_a_non_proxy_certificate_is_an_ordinary_certificate_error() {
    let curveball = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/public/ja4/pcap/badcurveball.pcap"
    );
    let r = run(&[curveball.to_string()], &["--min-confidence", "0"]);
    assert!(r.rules.is_empty(), "{:?}", r.rules);
    assert!(
        r.table
            .contains("ordinary certificate errors, not pinning): 1"),
        "{}",
        r.table
    );
}

#[test]
fn client_without_the_proxy_ca_is_a_finding_not_a_pile_of_rules() {
    let r = run(&[cap("missing-ca.pcap")], &["--min-confidence", "0"]);
    let missing: Vec<&Value> = r
        .findings
        .iter()
        .filter(|f| f["kind"] == "missing_proxy_ca")
        .collect();
    assert_eq!(missing.len(), 1, "{:?}", r.findings);
    assert_eq!(missing[0]["client"]["client_ip"], "10.77.1.18");
    assert!(
        missing[0]["client"]["registrable_domains"]
            .as_array()
            .unwrap()
            .len()
            >= 4
    );
    assert!(
        r.rules.iter().all(|x| x["evidence"]["failures"] == 0),
        "{:?}",
        r.rules
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f["kind"] == "proxy_ca" && f["ca"]["issuer"] == "CN=mitmproxy, O=mitmproxy")
    );
}

#[test]
fn proxy_upstream_legs_are_not_clients() {
    let r = run(&[cap("both-legs.pcap")], &["--min-confidence", "0"]);
    assert!(
        r.table
            .contains("proxy upstream connections recognised: 2 from 10.77.2.1"),
        "{}",
        r.table
    );
    for rule in &r.rules {
        assert_eq!(
            rule["evidence"]["client_hosts"], 1,
            "only 10.77.1.11 is a client: {rule}"
        );
    }
    // Told the proxy's address, the same conclusion.
    let told = run(
        &[cap("both-legs.pcap")],
        &["--min-confidence", "0", "--proxy-addr", "10.77.2.1"],
    );
    assert!(told.table.contains("from 10.77.2.1"));
}

#[test]
fn success_outside_the_proxy_strengthens_and_configured_ca_is_used() {
    let pinned = cap("mitm-explicit-pinning.pcap");
    let without = run(std::slice::from_ref(&pinned), &["--min-confidence", "0"]);
    let with = run(
        &[pinned, cap("direct-bypass.pcap")],
        &[
            "--min-confidence",
            "0",
            "--proxy-ca",
            &cap("certs/mitmproxy-ca.pem"),
        ],
    );
    let conf = |r: &Run, h: &str| {
        r.rules
            .iter()
            .filter(|x| host(x) == h)
            .map(|x| x["confidence"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    let login_with = with
        .rules
        .iter()
        .find(|x| host(x) == "login.pinnedbank.test")
        .expect("login rule");
    assert!(
        login_with["evidence"]["successes_outside_proxy"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(
        login_with["reason"]
            .as_str()
            .unwrap()
            .contains("succeeds without the proxy")
    );
    assert!(conf(&with, "api.pinnedbank.test") >= conf(&without, "api.pinnedbank.test"));
    assert!(
        with.table.contains("configured with --proxy-ca"),
        "{}",
        with.table
    );
}

#[test]
fn weaker_failure_kinds_score_lower() {
    // OpenSSL's readable unknown_ca aborts outrank curl's close after a completed handshake.
    let r = run(
        &[
            cap("mitm-explicit-pinning.pcap"),
            cap("mitm-transparent-pinning.pcap"),
        ],
        &["--min-confidence", "0"],
    );
    let best = |h: &str| {
        r.rules
            .iter()
            .filter(|x| host(x) == h)
            .map(|x| x["confidence"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    assert!(
        best("api.pinnedbank.test") > best("login.pinnedbank.test"),
        "{}",
        r.table
    );
}

#[test]
fn software_that_mostly_succeeds_through_the_proxy_is_not_pinning() {
    // Same curl fingerprint from 3 hosts: 8 successes, one unknown_ca (wrong CA file once) and
    // one attempt killed before the ServerHello.
    let r = run(&[cap("mitm-flaky.pcap")], &["--min-confidence", "0"]);
    for rule in r.rules.iter().filter(|x| host(x) == "api.weather.test") {
        assert!(rule["confidence"].as_f64().unwrap() < 0.1, "{rule}");
        assert!(
            rule["reason"]
                .as_str()
                .unwrap()
                .contains("also succeeded through the proxy 8 times"),
            "{rule}"
        );
    }
    let default = run(&[cap("mitm-flaky.pcap")], &[]);
    assert!(default.rules.is_empty(), "{:?}", default.rules);
}

#[test]
fn certificate_errors_behind_the_origins_own_certificate_are_not_pinning() {
    let r = run(&[cap("origin-cert-error.pcap")], &["--min-confidence", "0"]);
    assert!(r.rules.is_empty(), "{:?}", r.rules);
    assert!(
        r.table
            .contains("ordinary certificate errors, not pinning): 6"),
        "{}",
        r.table
    );
}

#[test]
fn several_failing_hosts_of_one_domain_become_one_suffix_rule() {
    let r = run(&[cap("mitm-multihost.pcap")], &[]);
    assert_eq!(r.rules.len(), 1, "{:?}", r.rules);
    let rule = &r.rules[0];
    assert_eq!(rule["match"]["suffix"], "pinnedbank.test", "{rule}");
    assert!(rule["match"].get("host").is_none());
    assert!(rule["confidence"].as_f64().unwrap() >= 0.9);
    assert!(rule["evidence"]["client_hosts"].as_u64().unwrap() >= 3);
    // www.shop.test (browser-like curl, succeeding) is not part of it.
    assert!(!rule["reason"].as_str().unwrap().contains("shop.test"));
}

/// Every bundled capture in one run: 1, 2 and 3 worker threads give the same records, the
/// same rules and the same findings, byte for byte.
#[test]
fn worker_threads_do_not_change_records_rules_or_findings() {
    let mut files: Vec<String> =
        std::fs::read_dir(format!("{}/captures", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().to_string_lossy().into_owned())
            .filter(|p| p.ends_with(".pcap") || p.ends_with(".pcapng"))
            .collect();
    files.sort();
    assert!(files.len() >= 10, "captures missing: {files:?}");
    let dir = std::env::temp_dir().join(format!("pinwatch-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let outputs: Vec<(String, String, String, String)> = ["1", "2", "3"]
        .iter()
        .map(|threads| {
            let conns = dir.join(format!("conns-{threads}.jsonl"));
            let findings = dir.join(format!("findings-{threads}.jsonl"));
            let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
                .arg("replay")
                .args(&files)
                .args(["--threads", threads, "--min-confidence", "0"])
                .args(["--connections", conns.to_str().unwrap()])
                .args(["--findings", findings.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let workers = if *threads == "1" {
                "1 worker thread ".to_string()
            } else {
                format!("{threads} worker threads ")
            };
            assert!(stderr.contains(&format!("with {workers}")), "{stderr}");
            // The table after the first summary line is the same whatever the thread count.
            let table = stderr.lines().skip(1).collect::<Vec<_>>().join("\n");
            (
                std::fs::read_to_string(&conns).unwrap(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                std::fs::read_to_string(&findings).unwrap(),
                table,
            )
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let (records, rules, _, _) = &outputs[0];
    assert!(
        records.lines().count() > 100,
        "too few records to mean anything"
    );
    assert!(
        rules.lines().count() >= 5,
        "too few candidate rules: {rules}"
    );
    for (i, other) in outputs.iter().enumerate().skip(1) {
        assert!(
            other.0 == outputs[0].0,
            "records differ with {} threads",
            i + 1
        );
        assert!(
            other.1 == outputs[0].1,
            "rules differ with {} threads",
            i + 1
        );
        assert!(
            other.2 == outputs[0].2,
            "findings differ with {} threads",
            i + 1
        );
        assert_eq!(
            other.3,
            outputs[0].3,
            "summary table differs with {} threads",
            i + 1
        );
    }
}

#[test]
fn a_rules_first_and_last_seen_are_its_connections_first_and_last_start() {
    let dir = std::env::temp_dir().join(format!("pinwatch-seen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let records = dir.join("connections.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["replay", &cap("mitm-explicit-pinning.pcap")])
        .args(["--connections", records.to_str().unwrap(), "-q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rules: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<Value> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rule = rules
        .iter()
        .filter(|x| host(x) == "api.pinnedbank.test" && x["match"]["client_ja4"].is_string())
        .max_by_key(|x| x["evidence"]["connections"].as_u64())
        .expect("a rule for the pinning app");
    let mut starts: Vec<&str> = records
        .iter()
        .filter(|r| r["sni"] == "api.pinnedbank.test" && r["ja4"] == rule["match"]["client_ja4"])
        .map(|r| r["ts_start"].as_str().unwrap())
        .collect();
    starts.sort_unstable();
    assert!(starts.len() >= 2, "{starts:?}");
    assert_eq!(rule["evidence"]["connections"], starts.len());
    assert_eq!(rule["evidence"]["first_seen"], starts[0], "{rule}");
    assert_eq!(
        rule["evidence"]["last_seen"],
        starts[starts.len() - 1],
        "{rule}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
