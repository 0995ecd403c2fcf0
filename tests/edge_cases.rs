//! Edge cases built from real captures: each test transforms a capture the way a network or a
//! capture tool could (segmentation, order, duplicates, loss, tags, link types, file damage)
//! and checks that pinwatch reports the same connections, or says what it could not see.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use serde_json::Value;

fn originals() -> Vec<(String, Vec<Packet>, Vec<Value>)> {
    all_captures()
        .into_iter()
        .map(|path| {
            let packets = read_pcap(&path);
            let records = run(std::slice::from_ref(&path));
            assert!(
                !records.is_empty(),
                "{path}: no connection in the untouched capture"
            );
            (path, packets, records)
        })
        .collect()
}

/// Runs `transform` on every capture and checks the records against the untouched ones.
fn check_all(
    tag: &str,
    transform: impl Fn(&[Packet]) -> Vec<Packet>,
    project: impl Fn(&Value) -> Value,
) -> Vec<(String, Vec<Value>)> {
    let dir = temp_dir(tag);
    let mut out = Vec::new();
    for (path, packets, original) in originals() {
        let changed = run_packets(&dir, &file_name(&path), &transform(&packets));
        assert_same(&format!("{tag} {path}"), &original, &changed, &project);
        out.push((path, changed));
    }
    out
}

fn assert_no_mismatch(tag: &str, results: &[(String, Vec<Value>)]) {
    for (path, records) in results {
        for r in records {
            let a = anomalies(r);
            assert!(
                !a.iter().any(|x| x.ends_with("_overlap_mismatch")),
                "{tag} {path}: {a:?}"
            );
            assert!(
                !a.iter().any(|x| x.ends_with("_gap")),
                "{tag} {path}: {a:?}"
            );
        }
    }
}

// 1. ------------------------------------------------------------------------------------------

#[test]
fn one_byte_segments_give_the_same_records() {
    // Everything but timing and packet counts must be identical, anomalies included.
    let results = check_all("seg1", |p| resegment(p, 1), |r| without(r, VOLATILE));
    assert_no_mismatch("seg1", &results);
}

// 2. ------------------------------------------------------------------------------------------

#[test]
fn reordered_segments_give_the_same_records() {
    // Each flight (one direction's run of packets) is cut into 40-byte segments that are then
    // sent in reverse, and separately with neighbours swapped.
    let reversed = check_all(
        "reverse",
        |p| rewrite_flights(p, &mut even_cut(40), &mut |d| d.reverse()),
        |r| without(r, VOLATILE),
    );
    assert_no_mismatch("reverse", &reversed);
    let swapped = check_all(
        "swap",
        |p| {
            rewrite_flights(p, &mut even_cut(25), &mut |d| {
                for pair in d.chunks_mut(2) {
                    pair.reverse();
                }
            })
        },
        |r| without(r, VOLATILE),
    );
    assert_no_mismatch("swap", &swapped);
}

// 3. ------------------------------------------------------------------------------------------

fn duplicate_data(packets: &[Packet]) -> Vec<Packet> {
    let mut out = Vec::new();
    for p in packets {
        out.push(p.clone());
        if parse_tcp(p).is_some_and(|t| !t.payload.is_empty()) {
            out.push(p.clone());
        }
    }
    out
}

#[test]
fn duplicated_segments_give_the_same_records() {
    let mut volatile = VOLATILE.to_vec();
    volatile.extend(["client_bytes", "server_bytes"]);
    let results = check_all("dup", duplicate_data, |r| without(r, &volatile));
    assert_no_mismatch("dup", &results);
}

// 4. ------------------------------------------------------------------------------------------

/// After the first data segment of each direction of each connection, a retransmission of the
/// same sequence range with different bytes.
fn conflicting_retransmissions(packets: &[Packet]) -> Vec<Packet> {
    let mut seen: HashMap<DirKey, ()> = HashMap::new();
    let mut out = Vec::new();
    for p in packets {
        out.push(p.clone());
        let Some(t) = parse_tcp(p) else { continue };
        if t.payload.is_empty() || seen.insert(t.direction(), ()).is_some() {
            continue;
        }
        let forged: Vec<u8> = t.payload.iter().map(|b| b ^ 0x5a).collect();
        out.push(t.with(t.seq(), t.flags(), &forged).to_packet(p.ts_ns));
    }
    out
}

#[test]
fn conflicting_retransmission_keeps_the_first_copy_and_is_flagged() {
    let dir = temp_dir("conflict");
    for path in tls_captures() {
        let c = file_name(&path);
        let original = run(std::slice::from_ref(&path));
        let changed = run_packets(
            &dir,
            &file_name(&path),
            &conflicting_retransmissions(&read_pcap(&path)),
        );
        assert_same(&format!("conflict {c}"), &original, &changed, core);
        for r in &changed {
            let a = anomalies(r);
            // Both directions got a forged copy of their first bytes while those are still
            // kept for comparison (a one-sided capture has only one direction to forge).
            if r["client_bytes"].as_u64().unwrap_or(0) > 0 {
                assert!(
                    a.contains(&"client_overlap_mismatch".to_string()),
                    "{c}: {a:?}"
                );
            }
            // A refused CONNECT leaves nothing to follow in the server's stream, which then stops
            // being reassembled: its forged copy is not compared.
            let refused = r["outcome_detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("connect_refused"));
            if r["server_bytes"].as_u64().unwrap_or(0) > 0 && !refused {
                assert!(
                    a.contains(&"server_overlap_mismatch".to_string()),
                    "{c}: {a:?}"
                );
            }
        }
    }
}

// 5. ------------------------------------------------------------------------------------------

/// The server side of each record as a direction key.
fn server_sides(records: &[Value]) -> Vec<(String, u16)> {
    records
        .iter()
        .map(|r| {
            (
                r["server_ip"].as_str().unwrap().to_string(),
                r["server_port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

fn src_ip(t: &TcpFrame) -> String {
    let k = t.direction();
    if k.src.0.len() == 4 {
        std::net::Ipv4Addr::new(k.src.0[0], k.src.0[1], k.src.0[2], k.src.0[3]).to_string()
    } else {
        let a: [u8; 16] = k.src.0.clone().try_into().unwrap();
        std::net::Ipv6Addr::from(a).to_string()
    }
}

/// Drops the server's `nth` data segment (0-based) of every connection where more server data
/// follows it (so the hole is inside the stream, not at its end). Returns the packets and the
/// client ports of the connections that lost a segment.
fn drop_server_segment(
    packets: &[Packet],
    records: &[Value],
    nth: usize,
) -> (Vec<Packet>, Vec<u64>) {
    let servers = server_sides(records);
    let is_server = |t: &TcpFrame| servers.contains(&(src_ip(t), t.src_port()));
    let data = |p: &Packet| parse_tcp(p).filter(|t| !t.payload.is_empty() && is_server(t));
    let mut total: HashMap<DirKey, usize> = HashMap::new();
    for t in packets.iter().filter_map(data) {
        *total.entry(t.direction()).or_default() += 1;
    }
    let mut count: HashMap<DirKey, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut hit = Vec::new();
    for p in packets {
        if let Some(t) = data(p) {
            let n = count.entry(t.direction()).or_default();
            *n += 1;
            if *n == nth + 1 && total[&t.direction()] > nth + 1 {
                hit.push(t.dst_port() as u64);
                continue;
            }
        }
        out.push(p.clone());
    }
    (out, hit)
}

/// Drops, in every connection, the first server data segment that is followed by more server
/// data before the client sends any: a segment in the middle of a server flight, within the
/// handshake (before the client's first ChangeCipherSpec, alert or application data record).
fn drop_mid_flight_server_segment(
    packets: &[Packet],
    records: &[Value],
) -> (Vec<Packet>, Vec<u64>) {
    let servers = server_sides(records);
    let data: Vec<Option<(DirKey, bool)>> = packets
        .iter()
        .map(|p| {
            let t = parse_tcp(p).filter(|t| !t.payload.is_empty())?;
            let from_server = servers.contains(&(src_ip(&t), t.src_port()));
            Some((t.direction().conn().0, from_server))
        })
        .collect();
    let mut done = std::collections::HashSet::new();
    let mut drop = std::collections::HashSet::new();
    for (i, d) in data.iter().enumerate() {
        let Some((conn, from_server)) = d else {
            continue;
        };
        if !from_server {
            let t = parse_tcp(&packets[i]).unwrap();
            if matches!(t.payload[..], [0x14 | 0x15 | 0x17, 3, 0..=4, ..]) {
                done.insert(conn.clone());
            }
            continue;
        }
        if done.contains(conn) {
            continue;
        }
        let next = data[i + 1..].iter().flatten().find(|(c, _)| c == conn);
        if let Some((_, true)) = next {
            done.insert(conn.clone());
            drop.insert(i);
        }
    }
    let hit = drop
        .iter()
        .map(|&i| parse_tcp(&packets[i]).unwrap().dst_port() as u64)
        .collect();
    let kept = packets
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, p)| p.clone())
        .collect();
    (kept, hit)
}

fn check_gaps(
    tag: &str,
    cases: Vec<String>,
    drop: impl Fn(&[Packet], &[Value]) -> (Vec<Packet>, Vec<u64>),
) -> usize {
    let dir = temp_dir(tag);
    let mut observed = Vec::new();
    let mut gaps = 0;
    for path in cases {
        let original = run(std::slice::from_ref(&path));
        let (packets, hit) = drop(&read_pcap(&path), &original);
        let changed = run_packets(&dir, &file_name(&path), &packets);
        assert_eq!(original.len(), changed.len(), "{path}");
        for (a, b) in original.iter().zip(&changed) {
            if !hit.contains(&b["client_port"].as_u64().unwrap()) {
                assert_eq!(core(a), core(b), "{path}: untouched connection changed");
                continue;
            }
            gaps += 1;
            let an = anomalies(b);
            observed.push(format!(
                "{} {}: {} -> {} {:?}",
                file_name(&path),
                a["client_port"],
                a["outcome"],
                b["outcome"],
                an
            ));
            assert!(
                an.contains(&"server_gap".to_string()),
                "{tag} {path}: no server_gap {an:?}\n{b:#}"
            );
            if a["outcome"] != "established" {
                assert_ne!(
                    b["outcome"], "established",
                    "{tag} {path}: the gap turned {a:#}\ninto {b:#}"
                );
            }
            assert_eq!(a["sni"], b["sni"], "the ClientHello was not touched");
            assert_eq!(a["ja4"], b["ja4"], "the ClientHello was not touched");
        }
    }
    // Shown with --nocapture: what a gap does to each outcome.
    for line in observed {
        println!("{line}");
    }
    gaps
}

#[test]
fn lost_segment_inside_a_server_flight_is_a_gap_and_never_a_confident_wrong_outcome() {
    // The corpus capture sent at MTU 300 spreads the server's certificate over many segments.
    let mut cases = vec![corpus_file(
        "suricata-verify/tests/tls/tls-client-hello-frag-01/dump_mtu300.pcap",
    )];
    cases.extend(CORPUS_CAPTURES[..2].iter().map(|c| corpus_file(c)));
    cases.extend(tls_captures());
    let gaps = check_gaps("gapflight", cases, drop_mid_flight_server_segment);
    assert!(gaps >= 3, "too few connections lost a segment: {gaps}");
}

#[test]
fn lost_server_hello_segment_is_a_gap_and_never_a_confident_wrong_outcome() {
    // The server's second data segment: after a CONNECT reply this is its whole first TLS
    // flight (ServerHello..Finished), lost before the client answers it.
    let original = repo_file("captures/mitm-explicit-idle.pcap");
    let gaps = check_gaps("gaphello", vec![original], |p, r| {
        drop_server_segment(p, r, 1)
    });
    assert!(gaps >= 1);
}

// 6. ------------------------------------------------------------------------------------------

#[test]
fn vlan_and_qinq_tags_give_the_same_records() {
    for (tag, vlans) in [("vlan", vec![42u16]), ("qinq", vec![3704u16, 2474])] {
        let results = check_all(
            tag,
            |p| map_frames(p, |t| t.to_ethernet(&vlans)),
            // flow_id hashes the VLAN tags: the same tuple on two VLANs is two flows.
            |r| without(r, &[VOLATILE, &["vlan", "flow_id"]].concat()),
        );
        for (path, records) in results {
            for r in records {
                let got: Vec<u64> = r["vlan"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                let want: Vec<u64> = vlans.iter().map(|&v| v as u64).collect();
                assert_eq!(got, want, "{tag} {path}");
            }
        }
    }
}

#[test]
fn same_tuple_on_two_vlans_is_two_connections() {
    // The same packets seen on VLAN 10 and again on VLAN 20 (two legs of a span port) are two
    // connections each, not one confused one.
    let path = repo_file("captures/mitm-explicit-pinning.pcap");
    let original = run(std::slice::from_ref(&path));
    let packets = read_pcap(&path);
    let mut both = Vec::new();
    for p in &packets {
        let t = parse_tcp(p).unwrap();
        both.push(t.to_ethernet(&[10]).to_packet(p.ts_ns));
        both.push(t.to_ethernet(&[20]).to_packet(p.ts_ns));
    }
    let dir = temp_dir("twovlans");
    let changed = run_packets(&dir, "two.pcap", &both);
    assert_eq!(changed.len(), 2 * original.len());
    for vlan in [10u64, 20] {
        let mine: Vec<Value> = changed
            .iter()
            .filter(|r| r["vlan"][0] == vlan)
            .cloned()
            .collect();
        assert_same(&format!("vlan {vlan}"), &original, &mine, core);
    }
}

// 7. ------------------------------------------------------------------------------------------

#[test]
fn ipv6_corpus_captures_give_sane_records() {
    let draft28 = run(&[corpus_file(
        "suricata-verify/tests/tls/tls13-draft28/tls13_draft28.pcap",
    )]);
    assert_eq!(draft28.len(), 2);
    for r in &draft28 {
        assert_eq!(r["client_ip"], "::1");
        assert_eq!(r["server_ip"], "::1");
        assert_eq!(r["server_port"], 4433);
        assert_eq!(r["sni"], "localhost");
        assert_eq!(r["tls_version"], "TLS 1.3 draft-28");
        // JA4 has no code for a draft version: it maps to "00".
        assert!(r["ja4"].as_str().unwrap().starts_with("t00d"), "{r:#}");
        assert_eq!(r["roles"], "observed");
    }
    // One client sends data, the other closes after the handshake.
    let outcomes: Vec<&str> = draft28
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["client_closed_after_handshake", "established"]);

    let failed = run(&[corpus_file(
        "zeek/Traces/tls/certificate-request-failed.pcap",
    )]);
    assert_eq!(failed.len(), 1);
    let r = &failed[0];
    let client: std::net::IpAddr = r["client_ip"].as_str().unwrap().parse().unwrap();
    let server: std::net::IpAddr = r["server_ip"].as_str().unwrap().parse().unwrap();
    assert!(client.is_ipv6() && server.is_ipv6(), "{r:#}");
    assert_eq!(r["server_port"], 3000);
    assert_eq!(r["tls_version"], "TLS 1.2");
    // The server asked for a client certificate, got none and sent a fatal handshake_failure.
    assert_eq!(r["outcome"], "server_abort");
    assert_eq!(r["alert"]["from"], "server");
    assert_eq!(r["alert"]["description"], "handshake_failure");
    assert!(r["cert"]["sha256"].is_string());
}

#[test]
fn ipv4_captures_converted_to_ipv6_give_the_same_records() {
    let dir = temp_dir("v6");
    for (path, packets, original) in originals() {
        let changed = run_packets(
            &dir,
            &file_name(&path),
            &map_frames(&packets, |t| t.to_ipv6()),
        );
        let project = |r: &Value| {
            without(
                r,
                &[
                    "client_ip",
                    "server_ip",
                    // Both hash the addresses.
                    "community_id",
                    "flow_id",
                    "ts_start",
                    "ts_end",
                    "abort_delay_ms",
                    // The mapping puts every client in one /64 where they had /24s of their
                    // own, and the path evidence is per client network.
                    "path",
                    "path_signal",
                ],
            )
        };
        assert_same(&format!("v6 {path}"), &original, &changed, project);
        for (a, b) in original.iter().zip(&changed) {
            assert_eq!(b["client_ip"], v6_of(a["client_ip"].as_str().unwrap()));
            assert_eq!(b["server_ip"], v6_of(a["server_ip"].as_str().unwrap()));
        }
    }
}

// 8. ------------------------------------------------------------------------------------------

#[test]
fn sll2_and_raw_ip_link_types_give_the_same_records() {
    let exact = |r: &Value| without(r, &["abort_delay_ms"]);
    check_all("sll2", |p| map_frames(p, |t| t.to_sll2()), exact);
    check_all("raw", |p| map_frames(p, |t| t.to_raw()), exact);
    check_all("eth", |p| map_frames(p, |t| t.to_ethernet(&[])), exact);
}

// 9. ------------------------------------------------------------------------------------------

fn pcapng_case(tag: &str, ifaces: &[Iface], pick: impl Fn(usize) -> usize) {
    pcapng_case_with(
        tag,
        ifaces,
        pick,
        &["abort_delay_ms", "server_hello_delay_ms"],
    );
}

fn pcapng_case_with(tag: &str, ifaces: &[Iface], pick: impl Fn(usize) -> usize, ignored: &[&str]) {
    let dir = temp_dir(tag);
    for (path, packets, original) in originals() {
        let ng: Vec<(usize, Packet)> = packets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = parse_tcp(p).expect("TCP");
                let iface = pick(i);
                let frame = match ifaces[iface].linktype as u32 {
                    LINKTYPE_ETHERNET => t.to_ethernet(&[]),
                    LINKTYPE_SLL2 => t.to_sll2(),
                    _ => t.to_raw(),
                };
                (iface, frame.to_packet(p.ts_ns))
            })
            .collect();
        let file = dir.join(format!("{}.pcapng", file_name(&path)));
        std::fs::write(&file, pcapng_bytes(ifaces, &ng)).unwrap();
        let changed = run(&[path_string(&file)]);
        // ts_start and ts_end are printed to the microsecond and must match exactly, unless
        // the interface's resolution cannot represent every microsecond.
        assert_same(&format!("{tag} {path}"), &original, &changed, |r| {
            without(r, ignored)
        });
        for (o, c) in original.iter().zip(&changed) {
            for field in ["ts_start", "ts_end"] {
                let micros = |v: &Value| {
                    let t = v[field].as_str().unwrap();
                    let (secs, frac) = t.trim_end_matches('Z').rsplit_once('.').unwrap();
                    (secs.to_string(), frac.parse::<i64>().unwrap())
                };
                let ((so, uo), (sc, uc)) = (micros(o), micros(c));
                assert_eq!(so, sc, "{tag} {path}: {field} second differs");
                assert!((uo - uc).abs() <= 1, "{tag} {path}: {field} {uo} vs {uc}");
            }
        }
    }
}

#[test]
fn pcapng_with_two_interfaces_gives_the_same_records() {
    // Half the packets on Ethernet with microseconds, half on SLL2 with nanoseconds.
    let ifaces = [
        Iface {
            linktype: LINKTYPE_ETHERNET as u16,
            tsresol: 6,
        },
        Iface {
            linktype: LINKTYPE_SLL2 as u16,
            tsresol: 9,
        },
    ];
    pcapng_case("ng", &ifaces, |i| i % 2);
    // Three interfaces, the third raw IP at 10^-7 s.
    let three = [
        ifaces[0],
        ifaces[1],
        Iface {
            linktype: LINKTYPE_RAW as u16,
            tsresol: 7,
        },
    ];
    pcapng_case("ng3", &three, |i| i % 3);
}

#[test]
fn pcapng_binary_timestamp_resolution() {
    // if_tsresol = 0x80 | 20: units of 2^-20 s, finer than a microsecond.
    let ifaces = [
        Iface {
            linktype: LINKTYPE_ETHERNET as u16,
            tsresol: 6,
        },
        Iface {
            linktype: LINKTYPE_RAW as u16,
            tsresol: 0x80 | 20,
        },
    ];
    // 2^-20 s cannot hold every microsecond: times may read up to one unit (< 1 us) early, so
    // the printed microsecond may differ by one; everything else must match exactly.
    pcapng_case_with(
        "ngbin",
        &ifaces,
        |i| i % 2,
        // flow_id hashes the first packet's time, so it moves with it.
        &[
            "abort_delay_ms",
            "client_rtt_ms",
            "server_rtt_ms",
            "server_hello_delay_ms",
            "ts_start",
            "ts_end",
            "flow_id",
        ],
    );
}

// 10. -----------------------------------------------------------------------------------------

fn pinwatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(args)
        .output()
        .expect("run pinwatch")
}

fn ndjson(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

#[test]
fn truncated_file_exits_4_and_keeps_what_came_before() {
    let dir = temp_dir("cut");
    let path = repo_file("captures/mitm-explicit-pinning.pcap");
    let packets = read_pcap(&path);
    let bytes = pcap_bytes(LINKTYPE_ETHERNET, false, &packets);
    let offsets = pcap_record_offsets(&packets);
    let k = packets.len() * 2 / 3;
    // Cut in the middle of a record's data, and in the middle of a record header.
    for (label, cut) in [
        ("data", offsets[k] + 16 + packets[k].data.len() / 2),
        ("header", offsets[k] + 7),
    ] {
        let file = dir.join(format!("cut-{label}.pcap"));
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let name = path_string(&file);
        let out = pinwatch(&["replay", &name, "--connections", "-", "--quiet"]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{label}: {stderr}");
        assert!(lines[0].contains(&name), "{label}: {stderr}");
        assert!(
            lines[0].contains(&format!("offset {}", offsets[k])),
            "{label}: {stderr}"
        );

        // Everything before the damaged record is reported, exactly as from a clean file of it.
        let expected = run_packets(&dir, &format!("clean-{label}.pcap"), &packets[..k]);
        let printed = ndjson(&out.stdout);
        assert!(!printed.is_empty());
        assert_same(&format!("cut {label}"), &expected, &printed, |r| {
            without(r, RUN_ORIGIN)
        });
    }
}

// 11. -----------------------------------------------------------------------------------------

#[test]
fn snap_length_96_is_flagged_and_never_falsely_established() {
    let dir = temp_dir("snap");
    for (path, packets, original) in originals() {
        // Directions (client port, server port as seen from the sender) that had a frame cut
        // inside its payload.
        let mut cut_dirs = std::collections::HashSet::new();
        let cut: Vec<Packet> = packets
            .iter()
            .map(|p| {
                if let Some(t) = parse_tcp(p)
                    && !t.payload.is_empty()
                    && p.data.len() > 96
                {
                    cut_dirs.insert((t.src_port(), t.dst_port()));
                }
                let mut q = p.clone();
                q.orig_len = p.orig_len.max(p.data.len() as u32);
                q.data.truncate(96);
                q
            })
            .collect();
        let changed = run_packets(&dir, &file_name(&path), &cut);
        assert_eq!(original.len(), changed.len(), "{path}");
        for (a, b) in original.iter().zip(&changed) {
            let an = anomalies(b);
            let (cp, sp) = (
                b["client_port"].as_u64().unwrap() as u16,
                b["server_port"].as_u64().unwrap() as u16,
            );
            if cut_dirs.contains(&(cp, sp)) {
                assert!(
                    an.contains(&"client_truncated_segment".to_string()),
                    "{path}: {an:?}\n{b:#}"
                );
            }
            if cut_dirs.contains(&(sp, cp)) {
                assert!(
                    an.contains(&"server_truncated_segment".to_string()),
                    "{path}: {an:?}\n{b:#}"
                );
            }
            if a["outcome"] != "established" {
                assert_ne!(b["outcome"], "established", "{path}: {a:#}\n{b:#}");
            }
            assert_eq!(a["client_ip"], b["client_ip"]);
            assert_eq!(a["server_port"], b["server_port"]);
            // Byte counts come from the wire lengths, not from what was kept.
            assert_eq!(a["client_bytes"], b["client_bytes"], "{path}");
            assert_eq!(a["server_bytes"], b["server_bytes"], "{path}");
        }
    }
}

// 12. -----------------------------------------------------------------------------------------

#[test]
fn bad_inputs_exit_3_with_one_line_naming_the_file() {
    let dir = temp_dir("bad");
    let missing = path_string(&dir.join("no-such.pcap"));
    let directory = path_string(&dir);
    let empty = path_string(&dir.join("empty.pcap"));
    std::fs::write(&empty, b"").unwrap();
    let magic = path_string(&dir.join("magic.pcap"));
    let mut junk = b"GIF89a not a capture".to_vec();
    junk.resize(200, 0);
    std::fs::write(&magic, &junk).unwrap();
    for (what, file) in [
        ("missing", &missing),
        ("directory", &directory),
        ("empty", &empty),
        ("magic", &magic),
    ] {
        let out = pinwatch(&["replay", file, "--connections", "-", "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains(file.as_str()), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: nothing to print");
    }
    // A bad file among good ones: the good ones are reported and the exit code still says 3.
    let good = repo_file("captures/non-tls.pcap");
    let out = pinwatch(&["replay", &missing, &good, "--connections", "-", "--quiet"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(ndjson(&out.stdout).len(), 3);
}

#[test]
fn bad_input_without_quiet_is_one_line() {
    let dir = temp_dir("badloud");
    let missing = path_string(&dir.join("no-such.pcap"));
    let out = pinwatch(&["replay", &missing, "--connections", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&missing));
}
