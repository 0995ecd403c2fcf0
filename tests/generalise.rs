//! The rules on the generalisation corpus (`captures/gen-*`, made by
//! `scripts/captures/generalise.py` with real clients through mitmproxy and Squid): traffic
//! unlike the first captures, labelled per (name, client software) in each `.truth.json`.
//! What a user feels is checked for every capture at the default threshold:
//! - every pinned (name, software) the truth expects a rule for is covered, on every host and
//!   fingerprint it failed from (a pinned app with no rule is a help-desk ticket);
//! - no rule covers a connection of software that works through the proxy (that would turn
//!   inspection off for a working client: a security defect);
//! - every rule covers at least one real pinning failure.
//!
//! `scripts/evaluate` prints the same figures for humans; the cases each capture stands for
//! are in its truth file and `captures/README.md`.

use std::collections::BTreeSet;
use std::process::Command;

mod common;

use serde_json::Value;

fn capture_dir() -> String {
    format!("{}/captures", env!("CARGO_MANIFEST_DIR"))
}

fn gen_captures() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(capture_dir())
        .expect("captures/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-") && n.ends_with(".pcap"))
        .collect();
    v.sort();
    v
}

/// Rules (stdout) and the summary table (stderr) of a default replay.
fn replay(pcap: &str) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["replay", &format!("{}/{pcap}", capture_dir())])
        .output()
        .expect("run pinwatch");
    assert!(
        out.status.success(),
        "{pcap}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a rule per line"))
        .collect();
    (rules, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn truth(pcap: &str) -> Value {
    let path = format!("{}/{}", capture_dir(), pcap.replace(".pcap", ".truth.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("truth file")).expect("JSON")
}

/// Whether `rule` applies to a connection of `name` by `ja4` from `client`.
fn covers(rule: &Value, name: &str, ja4: &str, client: &str) -> bool {
    let m = &rule["match"];
    let name_ok = match (m["host"].as_str(), m["suffix"].as_str()) {
        (Some(h), _) => h == name,
        (None, Some(s)) => name == s || name.ends_with(&format!(".{s}")),
        _ => false,
    };
    let ja4_ok = m["client_ja4"].as_str().is_none_or(|j| j == ja4);
    let ip_ok = match m["client_ips"].as_array() {
        None => true,
        Some(ips) => {
            let ips: Vec<String> = ips
                .iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect();
            pinwatch::export::address_in(&ips, client.parse().expect("truth address"))
        }
    };
    name_ok && ja4_ok && ip_ok
}

#[test]
fn the_corpus_is_here() {
    // Eleven causes of the detection issue plus remote clients; a missing file must not make
    // the test below pass vacuously.
    assert!(gen_captures().len() >= 12, "{:?}", gen_captures());
}

#[test]
fn every_pinned_app_has_a_rule_and_no_rule_bypasses_working_software() {
    let mut problems = Vec::new();
    for pcap in gen_captures() {
        let (rules, _) = replay(&pcap);
        let t = truth(&pcap);
        let conns = t["connections"].as_array().expect("connections");
        for pair in t["pairs"].as_array().expect("pairs") {
            let (name, software) = (pair["name"].as_str().unwrap(), &pair["software"]);
            let mine = conns
                .iter()
                .filter(|c| c["sni"] == pair["name"] && &c["software"] == software);
            if pair["expect_rule"] == true {
                for c in mine.filter(|c| c["pinning"] == true) {
                    let (ja4, ip) = (c["ja4"].as_str().unwrap(), c["client_ip"].as_str().unwrap());
                    if !rules.iter().any(|r| covers(r, name, ja4, ip)) {
                        problems.push(format!("{pcap}: no rule for {name} / {software} from {ip}"));
                    }
                }
            } else if pair["pins"] == false && pair["works_through_proxy"].as_u64() > Some(0) {
                for c in mine
                    .filter(|c| c["expect_outcome"] == "established" && c["through_proxy"] == true)
                {
                    let (ja4, ip) = (c["ja4"].as_str().unwrap(), c["client_ip"].as_str().unwrap());
                    for r in rules.iter().filter(|r| covers(r, name, ja4, ip)) {
                        problems.push(format!(
                            "{pcap}: rule {} bypasses working {software} on {name} from {ip}",
                            r["id"]
                        ));
                    }
                }
            }
        }
        for r in &rules {
            let real = conns.iter().any(|c| {
                c["pinning"] == true
                    && c["fake"] != true
                    && covers(
                        r,
                        c["sni"].as_str().unwrap_or_default(),
                        c["ja4"].as_str().unwrap_or_default(),
                        c["client_ip"].as_str().unwrap_or_default(),
                    )
            });
            if !real {
                problems.push(format!("{pcap}: rule {r} covers no pinning failure"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_fingerprint_shared_with_working_software_is_narrowed_to_the_failing_hosts() {
    let (rules, _) = replay("gen-shared-ja4.pcap");
    let api: Vec<&Value> = rules
        .iter()
        .filter(|r| r["match"]["host"] == "api.pyshared.test")
        .collect();
    assert_eq!(api.len(), 1, "{rules:#?}");
    assert_eq!(
        api[0]["match"]["client_ips"],
        serde_json::json!(["10.78.1.11", "10.78.1.12"])
    );
    assert!(api[0]["match"]["client_ja4"].is_string());
    assert_eq!(api[0]["evidence"]["successes_outside_scope"], 3);
    assert!(
        api[0]["reason"]
            .as_str()
            .unwrap()
            .contains("narrowed to the 2 addresses that fail"),
        "{}",
        api[0]["reason"]
    );
}

#[test]
fn one_app_with_a_fingerprint_per_host_takes_the_names_confidence() {
    let (rules, _) = replay("gen-multi-ja4.pcap");
    let api: Vec<&Value> = rules
        .iter()
        .filter(|r| r["match"]["host"] == "api.fleetapp.test")
        .collect();
    assert_eq!(api.len(), 5, "one rule per failing fingerprint: {rules:#?}");
    for r in api {
        assert_eq!(r["evidence"]["client_hosts"], 1, "{r}");
        assert_eq!(r["evidence"]["name"]["client_hosts"], 5, "{r}");
        assert_eq!(r["capped_by"], serde_json::json!([]), "{r}");
    }
}

#[test]
fn siblings_where_a_browser_works_are_not_rolled_up_into_a_suffix() {
    let (rules, _) = replay("gen-siblings.pcap");
    assert!(
        rules.iter().all(|r| r["match"]["suffix"].is_null()),
        "{rules:#?}"
    );
    for name in ["api.sibling.test", "login.sibling.test", "pay.sibling.test"] {
        assert!(
            rules.iter().any(|r| r["match"]["host"] == name),
            "{name}: {rules:#?}"
        );
    }
}

#[test]
fn a_transparent_proxys_upstream_legs_are_not_clients() {
    let (rules, table) = replay("gen-span-wan.pcap");
    assert!(
        table.contains("proxy upstream connections recognised"),
        "{table}"
    );
    // mitmproxy's own ClientHello (its upstream legs, which close when the client aborted).
    assert!(
        rules.iter().all(|r| !r["match"]["client_ja4"]
            .as_str()
            .unwrap_or("")
            .starts_with("t13d2812")),
        "{rules:#?}"
    );
}

#[test]
fn a_host_faking_aborts_for_a_popular_name_is_held_and_the_real_app_is_not() {
    let (rules, _) = replay("gen-faker.pcap");
    assert!(
        rules
            .iter()
            .all(|r| r["match"]["host"] != "www.popular.test"),
        "{rules:#?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["match"]["host"] == "api.popular.test"
                && r["confidence"].as_f64().unwrap() >= 0.9),
        "{rules:#?}"
    );
}

/// `captures/NAME` without its TLS 1.2 client connections (found from pinwatch's own
/// records), written to `dir`: the same traffic as if every client spoke TLS 1.3, so that no
/// certificate is in sight.
fn without_tls12(dir: &std::path::Path, name: &str) -> String {
    let path = format!("{}/{name}", capture_dir());
    let records = common::run(std::slice::from_ref(&path));
    let tls12: BTreeSet<u16> = records
        .iter()
        .filter(|r| r["tls_version"] == "TLS 1.2")
        .map(|r| r["client_port"].as_u64().unwrap() as u16)
        .collect();
    assert!(!tls12.is_empty(), "{name} has TLS 1.2 clients");
    let kept: Vec<common::Packet> = common::read_pcap(&path)
        .into_iter()
        .filter(|p| {
            common::parse_tcp(p).is_some_and(|t| {
                let port = |at: usize| u16::from_be_bytes([t.tcp[at], t.tcp[at + 1]]);
                !tls12.contains(&port(0)) && !tls12.contains(&port(2))
            })
        })
        .collect();
    let file = dir.join(name);
    common::write_pcap(&file, &kept);
    common::path_string(&file)
}

fn default_rules(pcap: &str) -> Vec<Value> {
    common::pinwatch_lines(&["replay", pcap])
}

/// Every TLS 1.3 pinning failure of `truth` covered, no working TLS 1.3 connection covered.
fn tls13_problems(truth: &Value, rules: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for c in truth["connections"].as_array().unwrap() {
        if c["tls"] != "1.3" || c["leg"] == "upstream" {
            continue;
        }
        let (name, ja4, ip) = (
            c["sni"].as_str().or(c["connect_target"].as_str()).unwrap(),
            c["ja4"].as_str().unwrap(),
            c["client_ip"].as_str().unwrap(),
        );
        let covered = rules.iter().any(|r| covers(r, name, ja4, ip));
        if c["pinning"] == true && c["fake"] != true && !covered {
            problems.push(format!("no rule for the pinned {name} from {ip}"));
        }
        if c["expect_outcome"] == "established" && covered {
            problems.push(format!("a rule bypasses working {name} from {ip}"));
        }
    }
    problems
}

/// A span point at a transparent proxy that sees both legs, every client on TLS 1.3: no
/// certificate is in sight, so no CA is learned and no address history tells; the proxy's own
/// connection for the same name moments after each client's is what attributes the path.
/// `gen-span-wan` with its TLS 1.2 clients cut out (before this, such traffic gave no rule).
#[test]
fn tls13_behind_a_transparent_proxy_is_attributed_by_its_upstream_legs() {
    let dir = common::temp_dir("tls13-legs");
    let rules = default_rules(&without_tls12(&dir, "gen-span-wan.pcap"));
    let problems = tls13_problems(&truth("gen-span-wan.pcap"), &rules);
    assert!(problems.is_empty(), "{problems:#?}\n{rules:#?}");
    assert!(!rules.is_empty());
}

/// Through an explicit proxy, every client on TLS 1.3: the CONNECT says where the tunnel
/// goes, no certificate shows whether the proxy intercepts. The pinned apps of the
/// multi-fingerprint and two-apps captures still get their rules, scoped as before, and the
/// browsers none (before, no certificate meant no rule).
#[test]
fn tls13_through_an_explicit_proxy_gets_its_rules() {
    let dir = common::temp_dir("tls13-explicit");
    for name in ["gen-multi-ja4.pcap", "gen-two-apps.pcap"] {
        let rules = default_rules(&without_tls12(&dir, name));
        let problems = tls13_problems(&truth(name), &rules);
        assert!(problems.is_empty(), "{name}: {problems:#?}\n{rules:#?}");
        assert!(!rules.is_empty(), "{name}");
    }
}

/// gen-far-clients: hosts 700 ms from the sensor run a pinned app that takes half a second to
/// reject the proxy's certificate, so its aborts reach the sensor 1.2 s after the server's
/// flight, past the 1 s line between aborts and idle closes. Judged net of each client's round
/// trip (measured at the sensor from the TCP handshake) they are half-second aborts and get
/// their rule; the far host's 1 s idle preconnect stays an idle close, as the near host's does.
#[test]
fn a_far_client_is_judged_by_its_own_time_not_by_its_distance() {
    let dir = common::temp_dir("far-clients");
    let conns = dir.join("c.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["replay", &format!("{}/gen-far-clients.pcap", capture_dir())])
        .arg("--connections")
        .arg(&conns)
        .output()
        .expect("run pinwatch");
    assert!(out.status.success());
    let records: Vec<Value> = std::fs::read_to_string(&conns)
        .expect("records")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for r in &records {
        let rtt = r["client_rtt_ms"]
            .as_f64()
            .expect("every connection's handshake was seen");
        let far =
            ["10.78.3.31", "10.78.3.32", "10.78.3.33"].contains(&r["client_ip"].as_str().unwrap());
        assert!(
            if far {
                (690.0..720.0).contains(&rtt)
            } else {
                rtt < 5.0
            },
            "{r}"
        );
    }
    let aborts: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "client_alert")
        .collect();
    assert_eq!(aborts.len(), 3);
    assert!(
        aborts
            .iter()
            .all(|r| r["abort_delay_ms"].as_f64().unwrap() > 1000.0),
        "the aborts arrive late"
    );

    let rules: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("rule"))
        .collect();
    let api: Vec<&Value> = rules
        .iter()
        .filter(|r| r["match"]["host"] == "api.far.test")
        .collect();
    assert_eq!(api.len(), 1, "{rules:?}");
    assert_eq!(api[0]["evidence"]["failures"], 3);
    assert!(
        rules.iter().all(|r| r["match"]["host"] != "www.far.test"),
        "idle preconnects are not pinning: {rules:?}"
    );
}

/// Each record says which path its connection took, and why. Behind a transparent proxy that
/// intercepts one client network only (gen-inline-partial: one origin address for both), a
/// TLS 1.2 record says so by its own certificate, and a TLS 1.3 one, whose certificate is
/// hidden, takes the path its own network's certificates showed for the same name: through the
/// proxy from the intercepted network, to the origin from the other.
#[test]
fn records_say_which_path_each_connection_took() {
    let pcap = "gen-inline-partial.pcap";
    let truth = truth(pcap);
    let mut through = std::collections::BTreeMap::new();
    for c in truth["connections"].as_array().expect("connections") {
        let key = (
            c["client_ip"].as_str().unwrap_or_default().to_string(),
            c["sni"].as_str().unwrap_or_default().to_string(),
            format!("TLS {}", c["tls"].as_str().unwrap_or_default()),
        );
        through.insert(key, c["through_proxy"].as_bool().expect("through_proxy"));
    }
    let records = common::run(&[format!("{}/{pcap}", capture_dir())]);
    let mut inferred = BTreeSet::new();
    let mut checked = 0;
    for r in &records {
        let key = (
            r["client_ip"].as_str().unwrap_or_default().to_string(),
            r["sni"].as_str().unwrap_or_default().to_string(),
            r["tls_version"].as_str().unwrap_or_default().to_string(),
        );
        let Some(&proxy) = through.get(&key) else {
            continue;
        };
        let expected = if proxy { "proxy" } else { "origin" };
        let (path, signal) = (r["path"].as_str(), r["path_signal"].as_str());
        if key.2 == "TLS 1.2" {
            assert_eq!(
                (path, signal),
                (Some(expected), Some("certificate")),
                "{r:#}"
            );
            checked += 1;
        }
        if signal == Some("network_and_name") {
            assert_eq!(path, Some(expected), "{r:#}");
            inferred.insert(expected);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} records checked");
    assert_eq!(
        inferred,
        BTreeSet::from(["origin", "proxy"]),
        "TLS 1.3 inferred both ways"
    );
}

/// The rule's name: its `match.host`, else its `match.suffix`.
fn rule_name(rule: &Value) -> String {
    let m = &rule["match"];
    m["host"]
        .as_str()
        .or_else(|| m["suffix"].as_str())
        .expect("a host or suffix")
        .to_string()
}

/// A rule's `evidence.proxy_issuers` are the interception CAs its name's clients were shown,
/// not every CA the run learned. Two captures behind two different proxies, replayed
/// together: each rule keeps exactly the issuers it has when its capture is replayed alone,
/// while the run as a whole learned both CAs.
#[test]
fn proxy_issuers_are_the_cas_the_names_clients_were_shown() {
    let files = ["gen-neutral-ca.pcap", "gen-stacks.pcap"];
    let issuers = |rules: &[Value]| -> std::collections::BTreeMap<String, Vec<String>> {
        rules
            .iter()
            .map(|r| {
                let shown = r["evidence"]["proxy_issuers"]
                    .as_array()
                    .expect("proxy_issuers")
                    .iter()
                    .map(|i| i.as_str().expect("an issuer").to_string())
                    .collect();
                (rule_name(r), shown)
            })
            .collect()
    };
    let mut alone = std::collections::BTreeMap::new();
    for f in files {
        alone.extend(issuers(&replay(f).0));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .arg("replay")
        .args(files.map(|f| format!("{}/{f}", capture_dir())))
        .output()
        .expect("run pinwatch");
    assert!(out.status.success());
    let together: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a rule per line"))
        .collect();
    let learned: BTreeSet<&String> = alone.values().flatten().collect();
    assert_eq!(learned.len(), 2, "two proxies' CAs: {learned:?}");
    assert_eq!(issuers(&together), alone);
}
