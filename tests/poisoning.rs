//! Rule poisoning: clients that fake pinning failures to win a bypass rule for a name of their
//! choosing. The fakes are real traffic: the first connection of
//! `captures/mitm-explicit-pinning.pcap` (openssl behind mitmproxy rejecting the proxy's leaf
//! with a fatal unknown_ca, CONNECT included), re-addressed, re-timed, and renamed to a name the
//! capture never saw (`api.pinnedbank.test` -> `api.fresh-bank.test`, same length, so every
//! length field stays right). The real capture's own pinning failures ride along and must keep
//! their rules.

mod common;
mod hostile;

use common::{Packet, TcpFrame, parse_tcp, path_string, read_pcap, repo_file, temp_dir};
use hostile::pinwatch;
use serde_json::Value;

const REAL: &str = "captures/mitm-explicit-pinning.pcap";
/// The template: 10.77.1.11:37352 -> proxy 10.77.0.1:8080, TLS 1.2, client alert unknown_ca.
const TEMPLATE_PORT: u16 = 37352;
const FRESH: &str = "api.fresh-bank.test";
const MINUTE: i64 = 60 * 1_000_000_000;

fn real() -> Vec<Packet> {
    read_pcap(&repo_file(REAL))
}

/// The template connection's frames with their times relative to its first packet.
fn template() -> Vec<(i64, TcpFrame)> {
    let packets = real();
    let frames: Vec<(i64, TcpFrame)> = packets
        .iter()
        .filter_map(|p| {
            let t = parse_tcp(p)?;
            (t.src_port() == TEMPLATE_PORT || t.dst_port() == TEMPLATE_PORT).then_some((p.ts_ns, t))
        })
        .collect();
    let start = frames[0].0;
    frames.into_iter().map(|(ts, t)| (ts - start, t)).collect()
}

fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// One fake: the template from `client` starting at `start_ns`, for the fresh name.
fn fake(template: &[(i64, TcpFrame)], client: ([u8; 4], u16), start_ns: i64) -> Vec<Packet> {
    template
        .iter()
        .map(|(dt, t)| {
            let mut f = t.clone();
            if f.src_port() == TEMPLATE_PORT {
                f.ip[12..16].copy_from_slice(&client.0);
                f.tcp[0..2].copy_from_slice(&client.1.to_be_bytes());
            } else {
                f.ip[16..20].copy_from_slice(&client.0);
                f.tcp[2..4].copy_from_slice(&client.1.to_be_bytes());
            }
            replace_all(&mut f.payload, b"pinnedbank", b"fresh-bank");
            f.to_packet(start_ns + dt)
        })
        .collect()
}

/// The real capture moved in time (client ports shifted so that copies never share a tuple).
fn real_at(start_ns: i64, port_shift: u16) -> Vec<Packet> {
    let packets = real();
    let t0 = packets[0].ts_ns;
    common::map_frames(&packets, |mut t| {
        let shift = |p: u16| if p == 8080 { p } else { p + port_shift };
        let (s, d) = (shift(t.src_port()), shift(t.dst_port()));
        t.tcp[0..2].copy_from_slice(&s.to_be_bytes());
        t.tcp[2..4].copy_from_slice(&d.to_be_bytes());
        t
    })
    .into_iter()
    .map(|mut p| {
        p.ts_ns = start_ns + (p.ts_ns - t0);
        p
    })
    .collect()
}

struct Outcome {
    /// Rules at the default threshold.
    rules: Vec<Value>,
    /// Every candidate (`--min-confidence 0`).
    candidates: Vec<Value>,
    /// The closing table on standard error.
    table: String,
}

fn replay(tag: &str, mut packets: Vec<Packet>) -> Outcome {
    packets.sort_by_key(|p| p.ts_ns);
    let dir = temp_dir(tag);
    let pcap = common::write_pcap(&dir.join("poison.pcap"), &packets);
    let findings = path_string(&dir.join("findings.jsonl"));
    let run = |extra: &[&str]| {
        let mut args = vec!["replay", &pcap, "--findings", &findings];
        args.extend_from_slice(extra);
        let out = pinwatch(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let default = run(&[]);
    let all = run(&["--min-confidence", "0", "--quiet"]);
    // Candidates are not findings: the findings stream holds only learned CAs and clients
    // missing the proxy CA.
    let findings = std::fs::read_to_string(&findings).unwrap();
    assert!(!findings.contains(FRESH), "{findings}");
    Outcome {
        rules: hostile::ndjson(&default.stdout),
        candidates: hostile::ndjson(&all.stdout),
        table: String::from_utf8_lossy(&default.stderr).into_owned(),
    }
}

fn named<'a>(rules: &'a [Value], name: &str) -> Vec<&'a Value> {
    rules
        .iter()
        .filter(|r| r["match"]["host"] == name || r["match"]["suffix"] == name)
        .collect()
}

fn capped_by(rule: &Value) -> Vec<&str> {
    rule["capped_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

/// The real capture's pinned app keeps its rule at the default threshold.
fn assert_real_rules_kept(o: &Outcome) {
    let api = named(&o.rules, "api.pinnedbank.test");
    assert!(!api.is_empty(), "{}", o.table);
    assert!(api.iter().all(|r| r["confidence"].as_f64().unwrap() >= 0.9));
}

/// `hosts` fake `per_host` connections each, spread evenly over `span_ns` from `start_ns`.
fn fakes(hosts: &[[u8; 4]], per_host: usize, start_ns: i64, span_ns: i64) -> Vec<Packet> {
    let template = template();
    let total = (hosts.len() * per_host) as i64;
    let mut out = Vec::new();
    for n in 0..total {
        let host = hosts[n as usize % hosts.len()];
        let port = 30_000 + n as u16;
        out.extend(fake(
            &template,
            (host, port),
            start_ns + n * span_ns / total,
        ));
    }
    out
}

#[test]
fn one_host_faking_hundreds_of_aborts_gets_no_rule_and_the_candidate_says_why() {
    // 300 fake unknown_ca aborts in one minute from one host, a minute after the real traffic.
    let t0 = real()[0].ts_ns;
    let mut packets = real();
    packets.extend(fakes(&[[10, 66, 6, 6]], 300, t0 + MINUTE, MINUTE));
    let o = replay("onehost", packets);

    assert!(named(&o.rules, FRESH).is_empty(), "{:#?}", o.rules);
    assert_real_rules_kept(&o);
    let fresh = named(&o.candidates, FRESH);
    assert_eq!(fresh.len(), 1, "{:#?}", o.candidates);
    let c = fresh[0];
    assert_eq!(c["evidence"]["failures"], 300);
    assert_eq!(c["evidence"]["alerts"]["unknown_ca"], 300);
    assert_eq!(c["evidence"]["client_hosts"], 1);
    assert_eq!(c["confidence"], 0.5);
    assert_eq!(capped_by(c), ["single_client_host"]);
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .ends_with("capped at 0.5: evidence from one client host only")
    );
    // The closing table lists it, marked as not emitted.
    assert!(
        o.table
            .lines()
            .any(|l| l.starts_with("- 0.50  api.fresh-bank.test") && l.contains("300/0")),
        "{}",
        o.table
    );
}

/// 20 hosts of 10.66.6.0/24.
fn subnet_hosts() -> Vec<[u8; 4]> {
    (1..=20).map(|i| [10, 66, 6, i]).collect()
}

/// The real traffic at t0 and again 25 minutes later (the observation window), with `extra`.
fn with_history(extra: Vec<Packet>) -> Vec<Packet> {
    let t0 = real()[0].ts_ns;
    let mut packets = real();
    packets.extend(real_at(t0 + 25 * MINUTE, 1000));
    packets.extend(extra);
    packets
}

#[test]
fn a_subnet_burst_for_a_new_name_is_capped() {
    // 20 hosts of one /24 fake 5 aborts each, all within 3 seconds, 12 minutes into a capture
    // that saw real pinning failures before and after.
    let t0 = real()[0].ts_ns;
    let burst = fakes(&subnet_hosts(), 5, t0 + 12 * MINUTE, 3_000_000_000);
    let o = replay("burst", with_history(burst));

    assert!(named(&o.rules, FRESH).is_empty(), "{:#?}", o.rules);
    // The real app failed from one /24 too, but over 25 minutes: it keeps its rules.
    assert_real_rules_kept(&o);
    let fresh = named(&o.candidates, FRESH);
    assert_eq!(fresh.len(), 1, "{:#?}", o.candidates);
    let c = fresh[0];
    assert_eq!(c["evidence"]["failures"], 100);
    assert_eq!(c["evidence"]["client_hosts"], 20);
    assert_eq!(c["confidence"], 0.5);
    assert_eq!(capped_by(c), ["subnet_burst"]);
    assert!(
        c["reason"].as_str().unwrap().ends_with(
            "capped at 0.5: a new name, failing only from 10.66.6.0/24 and all within 10 minutes"
        ),
        "{c:#}"
    );
}

#[test]
fn what_lifts_the_subnet_burst_cap() {
    let t0 = real()[0].ts_ns;
    let start = t0 + 12 * MINUTE;
    // The same burst from two /24s, or the same /24 failing again 11 minutes later, is what a
    // real pinned app looks like: the rule is made.
    let two_subnets: Vec<[u8; 4]> = (1..=20).map(|i| [10, 66, 6 + i % 2, i]).collect();
    let again = {
        let mut p = fakes(&subnet_hosts(), 5, start, 3_000_000_000);
        let later: Vec<Packet> = fakes(&subnet_hosts()[..3], 1, start + 11 * MINUTE, 1_000_000)
            .into_iter()
            .map(|p| {
                // Other client ports than the first burst's.
                let mut t = parse_tcp(&p).unwrap();
                let shift = |port: u16| if port == 8080 { port } else { port + 5000 };
                let (s, d) = (shift(t.src_port()), shift(t.dst_port()));
                t.tcp[0..2].copy_from_slice(&s.to_be_bytes());
                t.tcp[2..4].copy_from_slice(&d.to_be_bytes());
                t.to_packet(p.ts_ns)
            })
            .collect();
        p.extend(later);
        p
    };
    for (label, extra) in [
        ("two subnets", fakes(&two_subnets, 5, start, 3_000_000_000)),
        ("failing again later", again),
    ] {
        let o = replay("lift", with_history(extra));
        let fresh = named(&o.rules, FRESH);
        assert_eq!(fresh.len(), 1, "{label}: {}", o.table);
        assert!(capped_by(fresh[0]).is_empty(), "{label}: {:#}", fresh[0]);
        assert!(fresh[0]["confidence"].as_f64().unwrap() >= 0.9);
    }
}
