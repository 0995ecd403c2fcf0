//! Live capture against real traffic: an `openssl s_server` on loopback, a real `s_client`
//! handshake, captured through libpcap with a BPF filter, decoded and replayed into a
//! connection record. Also the errors a user meets first (unknown interface, bad filter).
//! Dropping privileges is in `live_privs`, which needs a single-threaded child process.
//!
//! Opening a capture needs root (CAP_NET_RAW): those tests are `#[ignore]`d, `.ci/run` runs them
//! as root with `--ignored`, and run without root they fail saying so.

#![cfg(all(target_os = "linux", feature = "live"))]

mod common;
mod live_common;

use std::time::{SystemTime, UNIX_EPOCH};

use pinwatch::capture::live::{LiveCapture, LiveError, LiveOptions};

use live_common::*;

fn require_root() {
    assert!(
        is_root(),
        "opening a live capture needs root (CAP_NET_RAW): run as root"
    );
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and openssl; .ci/run runs it"]
fn tls_handshake_on_loopback_is_captured_decoded_and_classified() {
    require_root();
    let dir = common::temp_dir("live-tls");
    let port = free_port();
    let mut cap = capture_loopback(port);
    let server = TlsServer::start(&dir, port);
    tls_client(port);
    let frames = collect(&mut cap, |f| inspect(f, port).client_fin);
    drop(server);

    let seen = inspect(&frames, port);
    assert!(seen.syn_to_server, "no SYN captured: {seen:?}");
    assert_eq!(seen.client_hello_sni.as_deref(), Some(SNI), "{seen:?}");
    assert!(seen.server_hello, "no ServerHello captured: {seen:?}");
    assert!(!seen.other_port, "the BPF filter let other traffic through");

    // Nanosecond timestamps on the wall clock: a unit mix-up would be off by a factor 1000.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for f in &frames {
        let age_s = (now.as_nanos() as i64 - f.ts_ns) / 1_000_000_000;
        assert!(
            (0..600).contains(&age_s),
            "timestamp {} is not now",
            f.ts_ns
        );
    }
    assert!(cap.nanosecond_timestamps(), "libpcap on Linux gives ns");

    // The same frames through the whole pipeline: one TLS 1.3 connection to our server.
    let records = common::run_packets(&dir, "live.pcap", &frames);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["sni"], SNI);
    assert_eq!(r["server_port"], port);
    assert_eq!(r["tls_version"], "TLS 1.3");
    // The client finishes the handshake, then closes politely: close_notify, then FIN.
    assert_eq!(r["outcome"], "client_closed_after_handshake", "{r}");
    assert_eq!(r["outcome_detail"], "close_notify+fin", "{r}");

    let stats = cap.stats().expect("capture statistics");
    assert!(
        stats.received >= frames.len() as u64,
        "{stats:?} for {} frames",
        frames.len()
    );
    assert_eq!(
        stats.dropped_kernel, 0,
        "a handful of packets fit the buffer"
    );
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and openssl; .ci/run runs it"]
fn idle_capture_returns_none_instead_of_blocking() {
    require_root();
    // A port nothing talks on: each call must come back empty so the caller can tick.
    let mut cap = capture_loopback(free_port());
    for _ in 0..3 {
        assert!(cap.next_frame().expect("read").is_none());
    }
}

#[test]
fn unknown_interface_names_the_available_ones() {
    let err = LiveCapture::open(&LiveOptions::new("pw-no-such0")).unwrap_err();
    let LiveError::UnknownInterface { available, .. } = &err else {
        panic!("expected an unknown-interface error, got: {err}");
    };
    assert!(available.iter().any(|name| name == "lo"), "{available:?}");
    let text = err.to_string();
    assert!(
        text.contains("`pw-no-such0`") && text.contains("lo"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and openssl; .ci/run runs it"]
fn bad_filter_shows_libpcaps_reason() {
    require_root();
    let mut opts = LiveOptions::new("lo");
    opts.bpf = Some("tcp prot 443".into());
    let err = LiveCapture::open(&opts).unwrap_err();
    assert!(matches!(err, LiveError::BadFilter { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`tcp prot 443`") && text.contains("syntax error"),
        "{text}"
    );
}
