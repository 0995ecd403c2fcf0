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

/// Peak RSS of a replay of a tiny capture: the fixed cost (binary, allocator).
fn baseline_rss_kib() -> u64 {
    least_peak_rss_kib(&[
        "replay",
        &common::repo_file("captures/non-tls.pcap"),
        "--connections",
        "-",
        "--quiet",
    ])
}

/// The lowest peak RSS of three runs. Peak RSS moves in steps of up to 2 MiB with where the
/// allocator's segments and the kernel's huge pages happen to land, from run to run of the same
/// input; the lowest of three is what the program itself needed.
fn least_peak_rss_kib(args: &[&str]) -> u64 {
    (0..3)
        .map(|_| {
            let m = run_measured(args, |_| {});
            assert_eq!(m.code, Some(0), "{}", m.stderr);
            m.max_rss_kib
        })
        .min()
        .unwrap_or(0)
}

fn anomalies(r: &Value) -> Vec<String> {
    common::anomalies(r)
}

// 1. SYN flood ---------------------------------------------------------------------------------

const FLOOD: u32 = 1_000_000;
const FLOOD_MAX_FLOWS: u32 = 10_000;
/// Peak memory allowed for the flood with `--max-flows 10000`. The table holds 10,000 SYN-only
/// connections (about 2 KB each: 20 MiB); the allocator (mimalloc) keeps freed pages for reuse,
/// per thread, which put the whole process at 70-110 MiB. A table that grew with the flood
/// would need about 2 GiB.
const FLOOD_RSS_LIMIT_MIB: f64 = 128.0;
/// What a flood four times larger may add: nothing that grows with the connections.
const FLOOD_GROWTH_LIMIT_MIB: f64 = 12.0;

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
    // Distinct source addresses and ports, 10 us apart: 10 s of capture, under the idle
    // timeout, so only --max-flows can finish connections early.
    let write_flood = |name: &str, count: u32| {
        let pcap = dir.join(name);
        let mut w = PcapWriter::create(&pcap);
        for i in 0..count {
            let src = (0x0a00_0000u32 + i).to_be_bytes();
            let sport = 1024 + (i % 60_000) as u16;
            let ts = 1_700_000_000_000_000_000 + i as i64 * 10_000;
            w.packet(ts, &frame(src, sport, [192, 0, 2, 1], 443, i, 0, SYN, &[]));
        }
        w.finish();
        pcap
    };
    let pcap = write_flood("flood.pcap", FLOOD);
    let quarter = write_flood("quarter.pcap", FLOOD / 4);

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
    let smaller = run_measured(
        &[
            "replay",
            &path_string(&quarter),
            "--max-flows",
            &max_flows,
            "--connections",
            "-",
        ],
        |_| {},
    );
    assert_eq!(smaller.code, Some(0), "{}", smaller.stderr);
    println!(
        "SYN flood of {}: peak RSS {:.1} MiB",
        FLOOD / 4,
        smaller.max_rss_mib()
    );
    assert!(
        m.max_rss_mib() < smaller.max_rss_mib() + FLOOD_GROWTH_LIMIT_MIB,
        "4x the flood took {:.1} MiB instead of {:.1} MiB",
        m.max_rss_mib(),
        smaller.max_rss_mib()
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

/// Extra peak memory allowed over a tiny capture for inputs of a few MB: the mapped file's
/// pages not yet handed back (up to 4 MiB), the 64 KiB handshake cap per direction, and the
/// allocator's next segment (it grows in steps of 2 MiB or more). Measured: about 4 MiB of file
/// pages and 2 MiB of heap for the 8 MB inputs. Buffering such an input whole would add 8 MB.
const SMALL_EXTRA_RSS_MIB: f64 = 10.0;

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
        let args = ["replay", &pcap, "--connections", "-", "--quiet"];
        let (m, recs) = run_json(&args);
        let peak_kib = least_peak_rss_kib(&args);
        println!(
            "{label} x {n}: {} bytes, peak RSS {:.1} MiB, user {:.2} s, wall {:.2} s",
            server.len(),
            peak_kib as f64 / 1024.0,
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
        let extra = peak_kib.saturating_sub(baseline) as f64 / 1024.0;
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

// 4. Holes, conflicting copies, tags ----------------------------------------------------------

#[test]
fn a_hole_before_every_segment_is_reported_and_bounded() {
    let tls = real_tls12();
    let dir = temp_dir("holes");
    // (a) The real exchange with every other 40-byte segment of the server's flight lost, the
    // first included: the client's alert is still read, but with the ServerHello lost nothing
    // may be concluded about the handshake.
    let server: Vec<u8> = tls.server.concat();
    let mut conv = Conv::new(
        ([10, 1, 4, 1], 44_001),
        ([192, 0, 2, 11], 443),
        1_700_000_000_000_000_000,
    );
    conv.open();
    conv.client(&tls.client_hello);
    for (i, piece) in server.chunks(40).enumerate() {
        if i % 2 == 1 {
            conv.server(piece);
        } else {
            conv.sseq = conv.sseq.wrapping_add(piece.len() as u32);
        }
    }
    conv.client(&tls.alert);
    conv.client_fin();
    // (b) 100,000 segments, each a whole 95-byte record after a 10-byte hole, from a server
    // after its real ServerHello; the client acknowledges everything every 100 segments.
    let mut flood = Conv::new(([10, 1, 4, 2], 44_002), ([192, 0, 2, 11], 443), conv.ts_ns);
    flood.step_ns = 1_000;
    flood.open();
    flood.client(&tls.client_hello);
    flood.server(&tls.server[0]);
    let body = [0x42u8; 90];
    let rec = record(23, &body);
    for i in 0..100_000 {
        flood.sseq = flood.sseq.wrapping_add(10);
        flood.server(&rec);
        if i % 100 == 99 {
            let seq = flood.cseq;
            flood.raw(true, seq, ACK, &[]);
        }
    }
    flood.client(&tls.alert);
    flood.client_fin();
    let pcap = dir.join("holes.pcap");
    let mut w = PcapWriter::create(&pcap);
    w.packets(&conv.packets);
    w.packets(&flood.packets);
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
        "hole before each of 100,000 segments: peak RSS {:.1} MiB, user {:.2} s, wall {:.2} s",
        m.max_rss_mib(),
        m.user_s,
        m.wall_s
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let an = anomalies(r);
        assert!(an.contains(&"server_gap".to_string()), "{an:?}");
        assert!(!an.contains(&"client_gap".to_string()), "{an:?}");
        assert_eq!(r["alert"]["description"], "certificate_expired", "{r:#}");
        assert!(r["sni"].is_string());
    }
    assert_eq!(recs[0]["outcome"], "incomplete", "{:#}", recs[0]);
    assert_eq!(recs[0]["outcome_detail"], "server_hello_not_captured");
    assert!(recs[0]["cert"].is_null(), "nothing made up: {:#}", recs[0]);
    // The flood kept its ServerHello: the client's alert is the outcome.
    assert_eq!(recs[1]["outcome"], "client_alert", "{:#}", recs[1]);
    assert_eq!(recs[1]["outcome_detail"], "certificate_expired");
    assert_eq!(recs[1]["server_packets"], 100_000 + 2); // + SYN-ACK and ServerHello
    let extra = m.max_rss_kib.saturating_sub(baseline) as f64 / 1024.0;
    assert!(
        extra < SMALL_EXTRA_RSS_MIB,
        "{extra:.1} MiB over a tiny capture"
    );
}

#[test]
fn conflicting_copies_in_the_queue_and_across_the_edge_keep_the_first_copy() {
    // The ClientHello in three segments A, B, C. Sent as A, C, C' (C shifted by 7 bytes and
    // forged: it overlaps C in the queue and reaches past it), B, A' (A forged, wholly old),
    // then the true bytes after C' again. The name and fingerprint come from the first copies;
    // both conflicts are flagged.
    let tls = real_tls12();
    let ch = &tls.client_hello;
    let (b, c) = (ch.len() / 3, 2 * ch.len() / 3);
    let forge = |bytes: &[u8]| bytes.iter().map(|x| x ^ 0x5a).collect::<Vec<u8>>();
    let mut conv = Conv::new(
        ([10, 1, 5, 1], 45_001),
        ([192, 0, 2, 12], 443),
        1_700_000_000_000_000_000,
    );
    conv.open();
    let s = conv.cseq;
    conv.raw(true, s, ACK | PSH, &ch[..b]);
    conv.raw(true, s + c as u32, ACK | PSH, &ch[c..]);
    let mut shifted = forge(&ch[c + 7..]);
    shifted.extend_from_slice(b"tail past the end");
    conv.raw(true, s + (c + 7) as u32, ACK | PSH, &shifted);
    conv.raw(true, s + b as u32, ACK | PSH, &ch[b..c]);
    conv.raw(true, s, ACK | PSH, &forge(&ch[..b]));
    conv.cseq = s + ch.len() as u32 + 17;
    conv.server(&tls.server.concat());
    conv.client_fin();

    let mut clean = Conv::new(([10, 1, 5, 2], 45_002), ([192, 0, 2, 12], 443), conv.ts_ns);
    clean.open();
    clean.client(ch);
    clean.server(&tls.server.concat());
    clean.client_fin();
    let dir = temp_dir("forged");
    let mut packets = conv.packets;
    packets.extend(clean.packets);
    let pcap = common::write_pcap(&dir.join("forged.pcap"), &packets);
    let (m, recs) = run_json(&["replay", &pcap, "--connections", "-", "--quiet"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let (forged, clean) = (&recs[0], &recs[1]);
    for field in ["sni", "ja4", "ja3", "tls_version", "cert"] {
        assert_eq!(forged[field], clean[field], "{field}");
    }
    assert!(clean["sni"].is_string());
    let an = anomalies(forged);
    assert!(
        an.contains(&"client_overlap_mismatch".to_string()),
        "{an:?}"
    );
    assert!(!anomalies(clean).contains(&"client_overlap_mismatch".to_string()));
}

/// The real exchange, each frame carrying `tags` stacked 802.1Q tags.
fn tagged_exchange(tags: usize) -> Vec<Packet> {
    let tls = real_tls12();
    let packets = exchange(&tls, &tls.client_hello, &tls.server.concat(), 1, 1200);
    let ids: Vec<u16> = (1..=tags as u16).collect();
    common::map_frames(&packets, |t| t.to_ethernet(&ids))
}

#[test]
fn deep_vlan_stacks_are_counted_as_malformed_without_recursion_trouble() {
    let dir = temp_dir("vlans");
    // 8 tags are followed (the first two are recorded); 9, 50 and 10,000 are not traffic.
    let ok = common::write_pcap(&dir.join("8.pcap"), &tagged_exchange(8));
    let (m, recs) = run_json(&["replay", &ok, "--connections", "-", "--quiet"]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["vlan"], serde_json::json!([1, 2]));
    assert_eq!(recs[0]["outcome"], "client_alert");
    for tags in [9, 50, 10_000] {
        let packets = tagged_exchange(tags);
        let pcap = common::write_pcap(&dir.join(format!("{tags}.pcap")), &packets);
        let (m, recs) = run_json(&["replay", &pcap, "--connections", "-"]);
        assert_eq!(m.code, Some(0), "{tags}: {}", m.stderr);
        assert!(recs.is_empty(), "{tags}: {recs:?}");
        assert!(
            m.stderr.contains(&format!(
                "packets not analysed: malformed={}\n",
                packets.len()
            )),
            "{tags}: {}",
            m.stderr
        );
    }
}

// 5. Record lengths that lie ------------------------------------------------------------------

/// Runs a damaged file and checks: exit 4, one stderr line naming the file and the offset of
/// the damaged record, and exactly the records of the packets before it.
fn check_damaged(label: &str, file: &std::path::Path, offset: usize, before: &[Packet]) {
    let name = path_string(file);
    let out = pinwatch(&["replay", &name, "--connections", "-", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{label}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{label}: {stderr}");
    assert!(lines[0].contains(&name), "{label}: {stderr}");
    assert!(
        lines[0].contains(&format!("offset {offset}")),
        "{label}: {stderr}"
    );
    let dir = file.parent().unwrap();
    let expected = common::run_packets(dir, &format!("clean-{label}.pcap"), before);
    assert!(!expected.is_empty());
    common::assert_same(label, &expected, &ndjson(&out.stdout), |r| {
        common::without(r, common::RUN_ORIGIN)
    });
}

#[test]
fn pcap_record_lengths_that_lie() {
    let dir = temp_dir("lies");
    let packets = common::read_pcap(&common::repo_file("captures/mitm-explicit-pinning.pcap"));
    let clean = common::pcap_bytes(common::LINKTYPE_ETHERNET, false, &packets);
    let offsets = common::pcap_record_offsets(&packets);
    let k = packets.len() * 2 / 3;
    let with_caplen = |caplen: u32| {
        let mut b = clean.clone();
        b[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&caplen.to_le_bytes());
        b
    };
    // A captured length no packet has, and one reaching past the end of the file from the
    // middle of it: the damage is reported where it starts, everything before is kept.
    for (label, caplen) in [("caplen-ffffffff", u32::MAX), ("caplen-2mib", 2 << 20)] {
        let file = dir.join(format!("{label}.pcap"));
        std::fs::write(&file, with_caplen(caplen)).unwrap();
        check_damaged(label, &file, offsets[k], &packets[..k]);
    }

    // pcapng: a block whose total length claims nearly 4 GiB.
    let iface = common::Iface {
        linktype: common::LINKTYPE_ETHERNET as u16,
        tsresol: 6,
    };
    let ng: Vec<(usize, Packet)> = packets.iter().map(|p| (0, p.clone())).collect();
    let mut bytes = common::pcapng_bytes(&[iface], &ng);
    // Block offsets: walk the blocks (section header, interface, then one per packet).
    let mut at = 0;
    let mut blocks = Vec::new();
    while at < bytes.len() {
        blocks.push(at);
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    let damaged = blocks[2 + k];
    bytes[damaged + 4..damaged + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let file = dir.join("blocklen.pcapng");
    std::fs::write(&file, &bytes).unwrap();
    check_damaged("pcapng-block-length", &file, damaged, &packets[..k]);
}

#[test]
fn inconsistent_but_intact_lengths_are_read_like_wireshark_does() {
    // A captured length above the file's snap length, and a wire length below the captured
    // length, contradict the headers but not the framing: libpcap and Wireshark read such
    // packets, and so does pinwatch. Refusing them would lose real traffic.
    let dir = temp_dir("inconsistent");
    let path = common::repo_file("captures/mitm-explicit-pinning.pcap");
    let packets = common::read_pcap(&path);
    let expected = common::run(std::slice::from_ref(&path));
    let mut snap = common::pcap_bytes(common::LINKTYPE_ETHERNET, false, &packets);
    snap[16..20].copy_from_slice(&128u32.to_le_bytes());
    let mut orig = common::pcap_bytes(common::LINKTYPE_ETHERNET, false, &packets);
    for at in common::pcap_record_offsets(&packets) {
        orig[at + 12..at + 16].copy_from_slice(&0u32.to_le_bytes());
    }
    for (label, bytes) in [("snaplen-128", snap), ("orig-len-0", orig)] {
        let file = dir.join(format!("{label}.pcap"));
        std::fs::write(&file, bytes).unwrap();
        let out = pinwatch(&[
            "replay",
            &path_string(&file),
            "--connections",
            "-",
            "--quiet",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty());
        common::assert_same(label, &expected, &ndjson(&out.stdout), |r| {
            common::without(r, common::RUN_ORIGIN)
        });
    }
}
