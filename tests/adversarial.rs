//! Hostile captures: each test writes a capture an attacker (or a broken network) could produce,
//! runs the release binary on it and asserts a bound a user would notice: peak memory of the
//! process (measured with `wait4`), the counters of the summary and of the records, and the
//! outcome of the connection that carried the attack. Timings are printed (run with
//! `--nocapture`), never asserted.

mod common;
mod hostile;

use std::collections::BTreeMap;

use common::{Packet, path_string, temp_dir};
use hostile::*;
use serde_json::Value;

/// Peak RSS of a replay of a tiny capture: the fixed cost (binary, read buffer, allocator).
fn baseline_rss_kib() -> u64 {
    let m = run_measured(
        &[
            "replay",
            &common::repo_file("captures/non-tls.pcap"),
            "--connections",
            "-",
            "--quiet",
        ],
        |_| {},
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    m.max_rss_kib
}

fn anomalies(r: &Value) -> Vec<String> {
    common::anomalies(r)
}

// 1. SYN flood ---------------------------------------------------------------------------------

const FLOOD: u32 = 1_000_000;
const FLOOD_MAX_FLOWS: u32 = 10_000;
/// Peak memory allowed for the flood with `--max-flows 10000`. The table holds 10,000 SYN-only
/// connections (about 2 KB each: 20 MiB) and the 4 MiB read buffer. A table that grew with
/// the flood would need about 2 GiB, and one that kept its connections inline in the hash table
/// (spare buckets included) or copied them all at the end, over 40 MiB.
const FLOOD_RSS_LIMIT_MIB: f64 = 48.0;

/// A string field of an NDJSON record, found without parsing the whole line (a million
/// records are read here).
fn field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":\"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    let len = line[start..].find('"').unwrap();
    line[start..start + len].to_string()
}

#[test]
fn syn_flood_of_a_million_connections_stays_within_max_flows() {
    let dir = temp_dir("synflood");
    let pcap = dir.join("flood.pcap");
    let mut w = PcapWriter::create(&pcap);
    // Distinct source addresses and ports, 10 us apart: 10 s of capture, under the idle
    // timeout, so only --max-flows can finish connections early.
    for i in 0..FLOOD {
        let src = (0x0a00_0000u32 + i).to_be_bytes();
        let sport = 1024 + (i % 60_000) as u16;
        let ts = 1_700_000_000_000_000_000 + i as i64 * 10_000;
        w.packet(ts, &frame(src, sport, [192, 0, 2, 1], 443, i, 0, SYN, &[]));
    }
    w.finish();

    let mut ended_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let max_flows = FLOOD_MAX_FLOWS.to_string();
    let m = run_measured(
        &[
            "replay",
            &path_string(&pcap),
            "--max-flows",
            &max_flows,
            "--connections",
            "-",
        ],
        |line| {
            *ended_by.entry(field(line, "ended_by")).or_default() += 1;
            *outcomes.entry(field(line, "outcome")).or_default() += 1;
        },
    );
    println!(
        "SYN flood: {FLOOD} SYNs, --max-flows {FLOOD_MAX_FLOWS}: exit {:?}, peak RSS {:.1} MiB, \
         user {:.2} s, wall {:.2} s",
        m.code,
        m.max_rss_mib(),
        m.user_s,
        m.wall_s
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let evicted = u64::from(FLOOD - FLOOD_MAX_FLOWS);
    assert_eq!(ended_by.get("evicted"), Some(&evicted), "{ended_by:?}");
    assert_eq!(
        ended_by.get("end_of_capture"),
        Some(&u64::from(FLOOD_MAX_FLOWS)),
        "{ended_by:?}"
    );
    assert_eq!(outcomes.values().sum::<u64>(), u64::from(FLOOD));
    assert!(
        m.stderr.contains(&format!(
            "connections finished early by --max-flows: {evicted}"
        )),
        "{}",
        m.stderr
    );
    assert!(
        m.stderr.contains(&format!("{FLOOD} TCP connections")),
        "{}",
        m.stderr
    );
    assert!(
        m.max_rss_mib() < FLOOD_RSS_LIMIT_MIB,
        "peak RSS {:.1} MiB",
        m.max_rss_mib()
    );
}

#[test]
fn max_flows_finishes_the_least_recently_active_connection_first() {
    // 1500 connections against --max-flows 64, with packets on random live connections in
    // between: the records of evicted connections must come out in least-recently-active order,
    // as a plain LRU list computes it (batching the table scans must not change the choice).
    const MAX: usize = 64;
    let mut rng: u64 = 0x5eed;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let mut packets = Vec::new();
    let mut lru: Vec<u16> = Vec::new(); // client ports, least recent first
    let mut expected_evictions = Vec::new();
    let mut ts = 1_700_000_000_000_000_000i64;
    let mut opened = 0u16;
    while opened < 1500 {
        ts += 1_000_000;
        let port = if next() % 3 == 0 && !lru.is_empty() {
            // A packet on a live connection makes it the most recent.
            let port = lru.remove(next() % lru.len());
            let data = frame([10, 0, 0, 1], port, [192, 0, 2, 1], 443, 2, 0, ACK, &[]);
            packets.push(Packet::new(ts, common::LINKTYPE_ETHERNET, data));
            port
        } else {
            opened += 1;
            let port = 20_000 + opened;
            if lru.len() == MAX {
                expected_evictions.push(lru.remove(0));
            }
            let data = frame([10, 0, 0, 1], port, [192, 0, 2, 1], 443, 1, 0, SYN, &[]);
            packets.push(Packet::new(ts, common::LINKTYPE_ETHERNET, data));
            port
        };
        lru.push(port);
    }
    let dir = temp_dir("lru");
    let pcap = common::write_pcap(&dir.join("lru.pcap"), &packets);
    let (m, records) = run_json(&[
        "replay",
        &pcap,
        "--max-flows",
        &MAX.to_string(),
        "--connections",
        "-",
        "--quiet",
    ]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let evicted: Vec<u16> = records
        .iter()
        .filter(|r| r["ended_by"] == "evicted")
        .map(|r| r["client_port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(evicted.len(), 1500 - MAX);
    assert_eq!(evicted, expected_evictions);
}
