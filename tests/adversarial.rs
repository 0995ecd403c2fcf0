//! Hostile captures: each test writes a capture an attacker (or a broken network) could produce,
//! runs the release binary on it and asserts a bound a user would notice: peak memory of the
//! process (measured by GNU time), the counters of the summary and of the records, and the
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

// 2. Oversized claims ---------------------------------------------------------------------------

/// The real TLS 1.2 exchange split into its records: ClientHello; ServerHello, Certificate,
/// ServerKeyExchange, ServerHelloDone; the client's alert.
struct RealTls12 {
    client_hello: Vec<u8>,
    server: Vec<Vec<u8>>,
    alert: Vec<u8>,
}

fn real_tls12() -> RealTls12 {
    let (ch, server, alert) = tls12_rejection();
    let server: Vec<Vec<u8>> = records(&server)
        .into_iter()
        .map(|(t, body)| record(t, &body))
        .collect();
    assert_eq!(server.len(), 4, "one handshake message per record");
    RealTls12 {
        client_hello: ch,
        server,
        alert,
    }
}

const BIG: usize = (1 << 24) - 1;
/// What a hostile 16 MiB handshake message may add to the fixed cost: the default handshake
/// cap (64 KiB) per direction is all that may be buffered; buffering the message would add
/// 16 MiB.
const BIG_MESSAGE_EXTRA_RSS_MIB: f64 = 8.0;

/// The server's Certificate message claims 16 MiB - 1 (the largest 24-bit length) and the whole
/// body really follows, in 16 KiB records: 1024 TCP segments.
fn big_certificate_flight(tls: &RealTls12) -> Vec<Vec<u8>> {
    let mut message = vec![11, 0xff, 0xff, 0xff];
    message.resize(4 + BIG, 0x30);
    let mut segments = vec![tls.server[0].clone()];
    segments.extend(message.chunks(16_384).map(|c| record(22, c)));
    segments.push(tls.server[3].clone());
    segments
}

#[test]
fn handshake_message_claiming_16_mib_is_skipped_not_buffered() {
    let tls = real_tls12();
    let flight = big_certificate_flight(&tls);
    let server_bytes: usize = flight.iter().map(Vec::len).sum();
    let mut conv = Conv::new(
        ([10, 1, 0, 1], 40_001),
        ([192, 0, 2, 7], 443),
        1_700_000_000_000_000_000,
    );
    conv.open();
    conv.client(&tls.client_hello);
    for seg in &flight {
        conv.server(seg);
    }
    conv.client(&tls.alert);
    conv.client_fin();
    conv.server_fin();
    // The same flight with its segments in reverse order: the out-of-order queue fills up.
    let mut rev = Conv::new(([10, 1, 0, 2], 40_002), ([192, 0, 2, 7], 443), conv.ts_ns);
    rev.open();
    rev.client(&tls.client_hello);
    let start = rev.sseq;
    let mut offsets = Vec::new();
    let mut at = 0u32;
    for seg in &flight {
        offsets.push(at);
        at += seg.len() as u32;
    }
    for (seg, off) in flight.iter().zip(&offsets).rev() {
        rev.raw(false, start.wrapping_add(*off), ACK | PSH, seg);
    }
    rev.sseq = start.wrapping_add(at);
    rev.client(&tls.alert);
    rev.client_fin();
    rev.server_fin();

    let dir = temp_dir("big");
    let pcap = dir.join("big.pcap");
    let mut w = PcapWriter::create(&pcap);
    w.packets(&conv.packets);
    w.packets(&rev.packets);
    w.finish();
    let baseline = baseline_rss_kib();
    let (m, recs) = run_json(&[
        "replay",
        &path_string(&pcap),
        "--connections",
        "-",
        "--quiet",
    ]);
    println!(
        "16 MiB handshake message: peak RSS {:.1} MiB (tiny capture: {:.1} MiB), wall {:.2} s",
        m.max_rss_mib(),
        baseline as f64 / 1024.0,
        m.wall_s
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(recs.len(), 2);
    let in_order = &recs[0];
    // The client's real alert still decides the outcome; the certificate is reported unread.
    assert_eq!(in_order["outcome"], "client_alert", "{in_order:#}");
    assert_eq!(in_order["outcome_detail"], "certificate_expired");
    assert!(in_order["cert"].is_null());
    let an = anomalies(in_order);
    assert!(
        an.contains(&"handshake_message_over_cap".to_string()),
        "{an:?}"
    );
    assert!(an.contains(&"certificate_not_parsed".to_string()), "{an:?}");
    assert_eq!(in_order["server_bytes"], server_bytes as u64);
    assert_eq!(in_order["tls_version"], "TLS 1.2");

    // Out of order, the queue gives up on the hole and the flight is lost: a gap, never a
    // success.
    let reversed = &recs[1];
    let an = anomalies(reversed);
    assert!(an.contains(&"server_gap".to_string()), "{an:?}");
    assert!(
        an.contains(&"server_reassembly_queue_full".to_string()),
        "{an:?}"
    );
    assert_ne!(reversed["outcome"], "established");
    assert_eq!(reversed["server_bytes"], server_bytes as u64);

    let extra = (m.max_rss_kib.saturating_sub(baseline)) as f64 / 1024.0;
    assert!(
        extra < BIG_MESSAGE_EXTRA_RSS_MIB,
        "peak RSS {:.1} MiB is {extra:.1} MiB over a tiny capture's",
        m.max_rss_mib()
    );
}

#[test]
fn record_claiming_more_than_arrives_ends_incomplete() {
    // After the real ServerHello the server starts a record and never finishes it: once with a
    // 64 KiB length no TLS record may have (the stream is no longer followed as TLS), once with
    // the largest legal length (18432) and 1000 bytes of it. Nothing else ever arrives.
    let tls = real_tls12();
    let mut packets = Vec::new();
    for (i, len) in [(1u8, 0xffffu16), (2, 18_432)] {
        let mut conv = Conv::new(
            ([10, 1, 1, i], 41_000),
            ([192, 0, 2, 8], 443),
            1_700_000_000_000_000_000 + i as i64 * 1_000_000_000,
        );
        conv.open();
        conv.client(&tls.client_hello);
        conv.server(&tls.server[0]);
        let mut partial = vec![22, 3, 3];
        partial.extend_from_slice(&len.to_be_bytes());
        partial.extend_from_slice(&[11; 1000]);
        conv.server(&partial);
        packets.extend(conv.packets);
    }
    let dir = temp_dir("claim");
    let pcap = common::write_pcap(&dir.join("claim.pcap"), &packets);
    let (m, recs) = run_json(&["replay", &pcap, "--connections", "-", "--quiet"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r["outcome"], "incomplete", "{r:#}");
        assert_eq!(r["tls_version"], "TLS 1.2", "the ServerHello was read");
        assert_eq!(r["ended_by"], "end_of_capture");
    }
    assert!(
        anomalies(&recs[0]).contains(&"server_not_tls_after_start".to_string()),
        "{:?}",
        anomalies(&recs[0])
    );
    assert!(
        !anomalies(&recs[1]).contains(&"server_not_tls_after_start".to_string()),
        "{:?}",
        anomalies(&recs[1])
    );
}

#[test]
fn message_after_an_oversized_one_in_the_same_record_is_still_read() {
    // With --handshake-cap 1024, a 1500-byte Certificate is skipped; the real ServerHelloDone
    // behind it in the same record must still end the server's flight, so a client that then
    // says nothing is "silent after the server flight", not "awaiting" it.
    let tls = real_tls12();
    let mut both = vec![11, 0, 0x05, 0xd8]; // 1496-byte body
    both.resize(4 + 1496, 0x30);
    both.extend_from_slice(&records(&tls.server[3])[0].1);
    let mut conv = Conv::new(
        ([10, 1, 3, 1], 43_001),
        ([192, 0, 2, 10], 443),
        1_700_000_000_000_000_000,
    );
    conv.open();
    conv.client(&tls.client_hello);
    conv.server(&tls.server[0]);
    conv.server(&record(22, &both));
    let dir = temp_dir("after");
    let pcap = common::write_pcap(&dir.join("after.pcap"), &conv.packets);
    let (m, recs) = run_json(&[
        "replay",
        &pcap,
        "--handshake-cap",
        "1024",
        "--connections",
        "-",
        "--quiet",
    ]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let r = &recs[0];
    assert!(anomalies(r).contains(&"handshake_message_over_cap".to_string()));
    assert_eq!(r["outcome"], "incomplete");
    assert_eq!(
        r["outcome_detail"], "client_silent_after_server_flight",
        "{r:#}"
    );
}

// 3. Endless tiny records -----------------------------------------------------------------------

/// Every byte of a handshake record stream as its own 1-byte record.
fn one_byte_records(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, body) in records(stream) {
        for b in body {
            out.extend(record(t, &[b]));
        }
    }
    out
}

/// One connection of the real exchange with the given client stream start and server flight,
/// each sent in segments of at most `mss` bytes.
fn exchange(tls: &RealTls12, client_hello: &[u8], server: &[u8], i: u8, mss: usize) -> Vec<Packet> {
    let mut conv = Conv::new(
        ([10, 1, 2, i], 42_000 + i as u16),
        ([192, 0, 2, 9], 443),
        1_700_000_000_000_000_000 + i as i64 * 10_000_000_000,
    );
    conv.open();
    conv.client_in(client_hello, mss);
    conv.server_in(server, mss);
    conv.client(&tls.alert);
    conv.client_fin();
    conv.server_fin();
    conv.packets
}

#[test]
fn one_byte_records_give_the_same_record_as_the_real_framing() {
    let tls = real_tls12();
    let server: Vec<u8> = tls.server.concat();
    let dir = temp_dir("tinyrec");
    let mut packets = exchange(&tls, &tls.client_hello, &server, 1, 1200);
    packets.extend(exchange(
        &tls,
        &one_byte_records(&tls.client_hello),
        &one_byte_records(&server),
        2,
        1200,
    ));
    let pcap = common::write_pcap(&dir.join("tiny.pcap"), &packets);
    let (m, recs) = run_json(&["replay", &pcap, "--connections", "-", "--quiet"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(recs.len(), 2);
    let (a, b) = (&recs[0], &recs[1]);
    assert_eq!(a["outcome"], "client_alert");
    assert_eq!(a["outcome_detail"], "certificate_expired");
    assert!(a["cert"]["sha256"].is_string());
    for field in [
        "outcome",
        "outcome_detail",
        "sni",
        "ja4",
        "ja3",
        "ja3s",
        "tls_version",
        "cipher",
        "cert",
        "anomalies",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
}

/// A server flight after the real ServerHello: `filler` handshake bytes, then the real
/// ServerHelloDone, ready to be cut into segments.
fn flight_with(tls: &RealTls12, filler: &[u8]) -> Vec<u8> {
    let mut s = tls.server[0].clone();
    s.extend_from_slice(filler);
    s.extend_from_slice(&tls.server[3]);
    s
}

/// `n` handshake bytes of a Certificate message too large for the cap, each in its own record.
fn certificate_in_one_byte_records(n: usize) -> Vec<u8> {
    let mut message = vec![11];
    message.extend_from_slice(&((n - 4) as u32).to_be_bytes()[1..]);
    message.resize(n, 0x30);
    message.iter().flat_map(|b| record(22, &[*b])).collect()
}

/// `n` empty handshake messages (HelloRequest, 4 bytes each) packed into full records.
fn empty_messages_in_full_records(n: usize) -> Vec<u8> {
    let bytes = vec![0u8; 4 * n];
    bytes.chunks(16_384).flat_map(|c| record(22, c)).collect()
}

/// Extra peak memory allowed over a tiny capture for inputs of a few MB: the read buffer
/// (4 MiB, touched only by large files) plus the 64 KiB handshake cap per direction.
const SMALL_EXTRA_RSS_MIB: f64 = 8.0;

#[test]
fn endless_tiny_records_and_messages_are_handled_in_linear_time() {
    let tls = real_tls12();
    let baseline = baseline_rss_kib();
    let dir = temp_dir("endless");
    let mut user = Vec::new();
    for (label, n, filler) in [
        (
            "1-byte records",
            200_000,
            certificate_in_one_byte_records(200_000),
        ),
        (
            "1-byte records",
            2_000_000,
            certificate_in_one_byte_records(2_000_000),
        ),
        (
            "empty messages",
            200_000,
            empty_messages_in_full_records(200_000),
        ),
        (
            "empty messages",
            2_000_000,
            empty_messages_in_full_records(2_000_000),
        ),
    ] {
        let server = flight_with(&tls, &filler);
        // Segments as large as TCP segmentation offload makes them: a whole record stream in
        // one delivery is where per-message work on the buffered bytes would show.
        let packets = exchange(&tls, &tls.client_hello, &server, 1, 65_000);
        let pcap = common::write_pcap(&dir.join("endless.pcap"), &packets);
        let (m, recs) = run_json(&["replay", &pcap, "--connections", "-", "--quiet"]);
        println!(
            "{label} x {n}: {} bytes, peak RSS {:.1} MiB, user {:.2} s, wall {:.2} s",
            server.len(),
            m.max_rss_mib(),
            m.user_s,
            m.wall_s
        );
        user.push(m.user_s);
        assert_eq!(m.code, Some(0), "{}", m.stderr);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        // Every record was read: the ServerHelloDone behind them counts, and the client's
        // real alert after it decides the outcome.
        assert_eq!(r["outcome"], "client_alert", "{label} {n}: {r:#}");
        assert_eq!(r["outcome_detail"], "certificate_expired");
        assert_eq!(r["tls_version"], "TLS 1.2");
        assert_eq!(r["server_bytes"], server.len() as u64);
        let an = anomalies(r);
        if label == "1-byte records" {
            assert!(
                an.contains(&"handshake_message_over_cap".to_string()),
                "{an:?}"
            );
        }
        let extra = m.max_rss_kib.saturating_sub(baseline) as f64 / 1024.0;
        assert!(
            extra < SMALL_EXTRA_RSS_MIB,
            "{label} {n}: {extra:.1} MiB over a tiny capture"
        );
    }
    println!(
        "10x input, user time ratio: 1-byte records {:.1}, empty messages {:.1}",
        user[1] / user[0].max(0.01),
        user[3] / user[2].max(0.01)
    );
}
