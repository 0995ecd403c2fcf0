//! Outcome classes of issue 21, each on a real capture from `scripts/captures/outcomes.py`
//! (Python ssl, openssl s_server, curl on a namespace's loopback), with a transformed copy of a
//! real capture where a network or a damaged file would do the same.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn only(capture: &str) -> Value {
    let records = run(&[repo_file(capture)]);
    assert_eq!(records.len(), 1, "{capture}: {records:?}");
    records.into_iter().next().unwrap()
}

/// Class 1: the client sent its ClientHello and closed; the ServerHello came 300 ms later.
#[test]
fn client_closing_before_the_server_hello_is_decided_by_wire_order() {
    let r = only("captures/wire-early-close.pcap");
    assert_eq!(r["outcome"], "client_closed_before_server_hello", "{r}");
    assert_eq!(r["sni"], "early.example");
    assert!(
        r["tls_version"].is_string(),
        "the late ServerHello is still read: {r}"
    );
    // Class 2: no delay, and the record says why.
    assert!(r["abort_delay_ms"].is_null());
    assert_eq!(r["delay_missing"], "no_server_handshake_before");
}

/// Class 2: times that run backwards give no delay rather than a measured 0 ms.
#[test]
fn a_clock_running_backwards_gives_no_abort_delay() {
    let path = repo_file("captures/mitm-transparent-pinning.pcap");
    let original = run(std::slice::from_ref(&path));
    let measured: Vec<&Value> = original
        .iter()
        .filter(|r| r["abort_delay_ms"].as_f64().is_some_and(|d| d > 0.0))
        .collect();
    assert!(!measured.is_empty(), "the capture has measured aborts");
    let mut packets = read_pcap(&path);
    let (lo, hi) = (packets[0].ts_ns, packets[packets.len() - 1].ts_ns);
    for p in &mut packets {
        p.ts_ns = hi - (p.ts_ns - lo);
    }
    let dir = temp_dir("outcomes-clock");
    let reversed = run_packets(&dir, "reversed.pcap", &packets);
    assert_eq!(reversed.len(), original.len());
    let failures: Vec<&Value> = reversed
        .iter()
        .filter(|r| {
            r["outcome"].as_str().is_some_and(|o| {
                o.starts_with("client_") && o != "client_closed_before_server_hello"
            })
        })
        .collect();
    assert!(failures.len() >= measured.len(), "{reversed:?}");
    for r in failures {
        assert!(r["abort_delay_ms"].is_null(), "{r}");
        assert_eq!(r["delay_missing"], "clock_out_of_order", "{r}");
    }
}

/// Class 3: TLS 1.2 application data, close_notify and FIN in one segment.
#[test]
fn tls12_data_then_close_notify_in_one_segment_is_established() {
    let r = only("captures/wire-tls12-data-close.pcap");
    assert_eq!(r["tls_version"], "TLS 1.2");
    assert_eq!(r["outcome"], "established", "{r}");
    assert!(r["client_app_bytes"].as_u64().unwrap() > 0);
}

/// Class 5: a mirror that carries only one direction of a good TLS 1.2 exchange.
#[test]
fn one_sided_captures_are_incomplete_naming_the_missing_direction() {
    let client = only("captures/wire-client-only.pcap");
    assert_eq!(client["outcome"], "incomplete", "{client}");
    assert_eq!(client["outcome_detail"], "server_direction_not_captured");
    assert_eq!(client["sni"], "oneside.example");
    let server = only("captures/wire-server-only.pcap");
    assert_eq!(server["outcome"], "incomplete", "{server}");
    assert_eq!(server["outcome_detail"], "client_direction_not_captured");
}

fn findings(capture: &str, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["replay", &repo_file(capture), "--findings", "-"])
        .args(extra)
        .output()
        .expect("run pinwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("finding JSON"))
        .collect()
}

/// Class 10: `L=San Francisco` is a place, not Cisco.
#[test]
fn a_locality_containing_a_product_word_is_not_an_interception_ca() {
    let f = findings("captures/wire-issuer-locality.pcap", &[]);
    assert!(
        f.iter().all(|f| f["kind"] != "proxy_ca"),
        "learned a proxy CA from a locality: {f:?}"
    );
}

/// Class 10: an enterprise PKI (four domains, no SCTs) is learned as interception unless
/// `--not-proxy-ca` names it.
#[test]
fn not_proxy_ca_keeps_an_internal_pki_from_being_learned() {
    let learned = findings("captures/wire-internal-pki.pcap", &[]);
    assert!(
        learned.iter().any(|f| f["kind"] == "proxy_ca"),
        "without the flag the PKI looks like interception: {learned:?}"
    );
    let ca = repo_file("captures/certs/internal-pki-ca.pem");
    let f = findings("captures/wire-internal-pki.pcap", &["--not-proxy-ca", &ca]);
    assert!(f.iter().all(|f| f["kind"] != "proxy_ca"), "{f:?}");

    let bad = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["replay", &repo_file("captures/wire-internal-pki.pcap")])
        .args(["--not-proxy-ca", &repo_file("Cargo.toml")])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--not-proxy-ca") && err.contains("no PEM certificate"),
        "{err}"
    );
}

/// Class 6: TLS 1.3 records padded to 64-byte blocks (OpenSSL's block padding, both sides).
/// The client's Finished and its close_notify are both 80 bytes: size alone cannot tell the
/// close_notify from data, what follows does (the client closed first, nothing after it).
#[test]
fn a_padded_tls13_close_notify_after_a_failed_pin_check_is_not_data() {
    let r = only("captures/wire-tls13-padded-pinned.pcap");
    assert_eq!(r["tls_version"], "TLS 1.3");
    assert_eq!(r["outcome"], "client_closed_after_handshake", "{r}");
    // The client's kernel resets the server's late session ticket.
    assert_eq!(r["outcome_detail"], "close_notify+fin+rst", "{r}");
    assert!(r["abort_delay_ms"].as_f64().is_some(), "{r}");
}

/// Class 6: the same padded stacks, a successful client whose request (80 bytes) is as long
/// as its Finished and whose close_notify comes after the server's answer.
#[test]
fn a_padded_tls13_client_with_a_short_request_is_established() {
    let r = only("captures/wire-tls13-padded-success.pcap");
    assert_eq!(r["tls_version"], "TLS 1.3");
    assert_eq!(r["outcome"], "established", "{r}");
    assert!(r["client_app_bytes"].as_u64().unwrap() > 0, "{r}");
}

/// The padded-pinned capture cut back to the client's first encrypted record (80 bytes, as
/// long as a padded alert) and its FIN; `keep_ticket` keeps the server's session ticket that
/// answered it.
fn padded_first_record_then_fin(keep_ticket: bool) -> Vec<Value> {
    let packets = read_pcap(&repo_file("captures/wire-tls13-padded-pinned.pcap"));
    let frames: Vec<TcpFrame> = packets.iter().map(|p| parse_tcp(p).unwrap()).collect();
    let client_port = frames[0].src_port();
    // The client's packet carrying close_notify and FIN, and the server's ticket after it.
    let close = frames
        .iter()
        .position(|f| f.src_port() == client_port && f.has(0x01))
        .expect("the client's FIN");
    let ticket = frames
        .iter()
        .skip(close)
        .position(|f| f.src_port() != client_port && !f.payload.is_empty())
        .map(|i| i + close)
        .expect("the server's ticket");
    let mut out = Vec::new();
    for (i, (f, p)) in frames.iter().zip(&packets).enumerate() {
        if i == close {
            let fin = f.with(f.seq(), f.flags(), &[]);
            if keep_ticket {
                // The ticket answers the Finished before the client leaves.
                out.push(frames[ticket].to_packet(p.ts_ns - 1000));
            }
            out.push(fin.to_packet(p.ts_ns));
        } else if i != ticket && !f.has(0x04) {
            out.push(p.clone());
        }
    }
    let dir = temp_dir("outcomes-padded-first");
    run_packets(&dir, "cut.pcap", &out)
}

/// Class 6 edge case beside the real captures: the client's only encrypted record, padded to
/// a Finished's size, unanswered, then its close: an encrypted alert sent instead of the
/// Finished. Answered by the server (its session ticket), the same record was the Finished.
#[test]
fn a_lone_padded_tls13_record_then_close_is_an_alert_unless_the_server_answered_it() {
    let alone = padded_first_record_then_fin(false);
    assert_eq!(alone.len(), 1, "{alone:?}");
    assert_eq!(alone[0]["outcome"], "client_alert", "{}", alone[0]);
    assert_eq!(alone[0]["outcome_detail"], "encrypted");
    let answered = padded_first_record_then_fin(true);
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(
        answered[0]["outcome"], "client_closed_after_handshake",
        "{}",
        answered[0]
    );
}

/// Class 9: leaves without embedded SCTs whose SCTs come in the TLS 1.2 ServerHello's
/// signed_certificate_timestamp extension (`openssl s_server -serverinfo`, `s_client -ct`) or
/// in a stapled OCSP response (`-status_file`, `s_client -status`): publicly logged, so the CA
/// minting for four registrable domains is not learned as interception. The internal PKI of
/// the same shape without SCTs is (class 10's capture).
#[test]
fn scts_in_the_tls_extension_or_a_stapled_ocsp_response_count_as_logged() {
    for (capture, source) in [
        ("captures/wire-sct-extension.pcap", "tls_extension"),
        ("captures/wire-sct-ocsp.pcap", "ocsp_response"),
    ] {
        let records = run(&[repo_file(capture)]);
        assert_eq!(records.len(), 4, "{capture}: {records:?}");
        for r in &records {
            assert_eq!(r["outcome"], "established", "{r}");
            assert_eq!(r["cert"]["has_sct"], true, "{r}");
            assert_eq!(
                r["cert"]["sct_delivered_in"],
                serde_json::json!([source]),
                "{r}"
            );
        }
        let f = findings(capture, &[]);
        assert!(
            f.iter().all(|f| f["kind"] != "proxy_ca"),
            "{capture}: a logged CA learned as a proxy CA: {f:?}"
        );
    }
    let unlogged = findings("captures/wire-internal-pki.pcap", &[]);
    assert!(
        unlogged.iter().any(|f| f["kind"] == "proxy_ca"),
        "{unlogged:?}"
    );
    let plain = only_first("captures/wire-internal-pki.pcap");
    assert_eq!(plain["cert"]["has_sct"], false);
    assert!(plain["cert"].get("sct_delivered_in").is_none(), "{plain}");
}

fn only_first(capture: &str) -> Value {
    run(&[repo_file(capture)])
        .into_iter()
        .next()
        .expect("a record")
}

/// Class 4: a RST answering a stale ACK (real kernels: Linux answers a SYN on a 4-tuple it
/// still holds with a challenge ACK, the client resets at that ACK's number) is outside the
/// new connection's window: RFC 5961 receivers drop it, the retransmitted SYN completes and
/// TLS goes on. One connection, established, not reset by the client.
#[test]
fn a_rst_outside_the_window_does_not_end_the_connection() {
    let r = only("captures/wire-stale-ack-rst.pcap");
    assert_eq!(r["outcome"], "established", "{r}");
    assert_eq!(r["sni"], "stale.example");
    assert_eq!(r["client_close"], serde_json::json!(["fin"]), "{r}");
    assert_eq!(r["closed_by"], "server", "{r}");
    let anomalies = r["anomalies"].as_array().unwrap();
    assert!(
        anomalies.iter().any(|a| a == "client_rst_not_accepted"),
        "{r}"
    );
}

/// Class 4 edge case beside the real capture: the retransmitted SYN 6 s after the stale RST,
/// past the 5 s a closed connection lingers. Taken as a close, the RST finished the connection
/// and the SYN started a second one.
#[test]
fn a_late_retransmitted_syn_after_a_stale_rst_keeps_one_connection() {
    let mut packets = read_pcap(&repo_file("captures/wire-stale-ack-rst.pcap"));
    let rst = packets
        .iter()
        .position(|p| parse_tcp(p).unwrap().has(0x04))
        .expect("the stale RST");
    for p in &mut packets[rst + 1..] {
        p.ts_ns += 6_000_000_000;
    }
    let dir = temp_dir("outcomes-stale-rst");
    let records = run_packets(&dir, "late-syn.pcap", &packets);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "established", "{}", records[0]);
}

/// Class 7: TCP Fast Open (curl --tcp-fastopen against a TFO server on a namespace's
/// loopback). The first connection fetches the cookie; the second's SYN carries the
/// ClientHello, which is read like any other: same SNI and JA4 as the first.
#[test]
fn a_client_hello_in_a_fast_open_syn_is_followed() {
    let records = run(&[repo_file("captures/wire-tcp-fast-open.pcap")]);
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["outcome"], "established", "{r}");
        assert_eq!(r["sni"], "tfo.example", "{r}");
    }
    assert_eq!(records[0]["ja4"], records[1]["ja4"]);
    let syn_with_data = read_pcap(&repo_file("captures/wire-tcp-fast-open.pcap"))
        .iter()
        .filter_map(parse_tcp)
        .any(|f| f.has(0x02) && !f.has(0x10) && !f.payload.is_empty());
    assert!(syn_with_data, "the capture has a SYN with data");
}

/// Class 8: an SSLv2-format ClientHello offering TLS 1.0 (RFC 5246 E.2), answered by a real
/// `openssl s_server -tls1` with its TLS 1.0 flight. The hello is read (version, TLS suites,
/// JA3/JA4 without extensions) and the handshake followed: the server's hello and certificate
/// are read, and the client's close after the flight is judged like any other.
#[test]
fn an_sslv2_format_hello_is_followed_into_tls() {
    let r = only("captures/wire-sslv2-hello.pcap");
    assert_eq!(r["client_version"], "TLS 1.0", "{r}");
    assert_eq!(r["tls_version"], "TLS 1.0", "{r}");
    assert_eq!(r["outcome"], "client_closed_in_handshake", "{r}");
    assert_eq!(r["cert"]["subject"], "CN=legacy.example", "{r}");
    // Only the TLS suites of the cipher specs (00 xx yy), in order; no extensions.
    assert_eq!(r["ja3_string"], "769,47-53-10-255,,,", "{r}");
    let ja4 = r["ja4"].as_str().unwrap();
    assert!(ja4.starts_with("t10i040000_"), "{ja4}");
    assert!(
        r["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "sslv2_hello")
    );
}
