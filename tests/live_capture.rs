//! Live capture against real traffic: an `openssl s_server` on loopback, a real `s_client`
//! handshake, captured through libpcap with a BPF filter, decoded and replayed into a
//! connection record. Also the errors a user meets first (unknown interface, bad filter, no
//! permission) and dropping to `nobody` with the capture still running, in a child process
//! because credentials belong to the whole process, not to one test thread.
//!
//! Opening a capture needs root (CAP_NET_RAW); without it those tests say so and skip.

#![cfg(all(target_os = "linux", feature = "live"))]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pinwatch::capture::live::{LiveCapture, LiveError, LiveOptions};
use pinwatch::decode::{self, flags};
use pinwatch::privs::{self, ProcStatus};
use pinwatch::tls::handshake::{self, Message};

const SNI: &str = "live.pinwatch.test";
/// Environment variable that turns the ignored helper test into the privilege-drop child.
const CHILD_PORT_VAR: &str = "PINWATCH_LIVE_CHILD_PORT";
/// Upper bound on any wait for traffic, so a broken capture fails instead of hanging.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(30);

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: opening a live capture needs root (CAP_NET_RAW)");
    }
    root
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn capture_loopback(port: u16) -> LiveCapture {
    let mut opts = LiveOptions::new("lo");
    opts.bpf = Some(format!("tcp port {port}"));
    opts.buffer_mb = 4;
    LiveCapture::open(&opts).expect("open a live capture on lo")
}

/// A self-signed certificate for the SNI, made fresh for each test.
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={SNI}")])
        .args(["-addext", &format!("subjectAltName=DNS:{SNI}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req (is openssl installed?)");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// `openssl s_server` for one connection; killed when dropped. Its stdin stays open: at end of
/// input it would shut down.
struct TlsServer(Child);

impl TlsServer {
    fn start(dir: &Path, port: u16) -> TlsServer {
        let (cert, key) = make_certificate(dir);
        let mut child = Command::new("openssl")
            .args(["s_server", "-naccept", "1", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        // It prints ACCEPT once it listens; EOF first means it died.
        let out = child.stdout.take().expect("server stdout");
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("ACCEPT"));
        assert!(ready, "openssl s_server on port {port} did not start");
        TlsServer(child)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One full TLS handshake with SNI, then a clean close (stdin is empty).
fn tls_client(port: u16) {
    let status = Command::new("openssl")
        .args(["s_client", "-brief", "-servername", SNI, "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl s_client");
    assert!(status.success(), "openssl s_client failed");
}

/// Frames until `done` says enough or the capture stays idle for a few timeouts after it,
/// bounded by the deadline.
fn collect(
    cap: &mut LiveCapture,
    mut done: impl FnMut(&[common::Packet]) -> bool,
) -> Vec<common::Packet> {
    let mut frames = Vec::new();
    let started = Instant::now();
    let mut idle = 0;
    while started.elapsed() < TRAFFIC_DEADLINE && idle < 5 {
        match cap.next_frame().expect("read the live capture") {
            Some(f) => {
                frames.push(common::Packet {
                    ts_ns: f.ts_ns,
                    linktype: f.linktype as u32,
                    data: f.data.to_vec(),
                    orig_len: f.orig_len,
                });
                idle = 0;
            }
            None if done(&frames) => idle += 1,
            None => {}
        }
    }
    frames
}

/// What the handshake looked like from the captured frames alone.
#[derive(Debug, Default)]
struct Seen {
    syn_to_server: bool,
    client_hello_sni: Option<String>,
    server_hello: bool,
    client_fin: bool,
    other_port: bool,
}

fn inspect(frames: &[common::Packet], port: u16) -> Seen {
    let mut seen = Seen::default();
    for f in frames {
        let seg = decode::decode(f.linktype as i32, &f.data).expect("a TCP segment");
        let to_server = seg.dport == port;
        if !to_server && seg.sport != port {
            seen.other_port = true;
        }
        seen.syn_to_server |= to_server && seg.has(flags::SYN);
        seen.client_fin |= to_server && seg.has(flags::FIN);
        // A handshake record: type 22, then the handshake message after the 5-byte header.
        if seg.payload.len() > 5 && seg.payload[0] == 22 {
            match handshake::parse(&seg.payload[5..]) {
                Message::ClientHello(ch) if to_server => seen.client_hello_sni = ch.fields.sni,
                Message::ServerHello(_) if !to_server => seen.server_hello = true,
                _ => {}
            }
        }
    }
    seen
}

#[test]
fn tls_handshake_on_loopback_is_captured_decoded_and_classified() {
    if !root_or_skip("tls_handshake_on_loopback_is_captured_decoded_and_classified") {
        return;
    }
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
    // s_client finishes the handshake, then closes politely: close_notify, then FIN.
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
fn idle_capture_returns_none_instead_of_blocking() {
    if !root_or_skip("idle_capture_returns_none_instead_of_blocking") {
        return;
    }
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
fn bad_filter_shows_libpcaps_reason() {
    if !root_or_skip("bad_filter_shows_libpcaps_reason") {
        return;
    }
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

#[test]
fn dropped_privileges_keep_the_capture_running() {
    if !root_or_skip("dropped_privileges_keep_the_capture_running") {
        return;
    }
    let dir = common::temp_dir("live-privs");
    let port = free_port();
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "privilege_drop_child", "--include-ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_PORT_VAR, port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child test process");
    let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    let dropped = wait_for(&mut lines, "CHILD-DROPPED");
    assert!(dropped.is_some(), "child failed before dropping privileges");

    // The kernel's view of the child, not the child's own claim.
    let status = ProcStatus::of_pid(child.id()).expect("child /proc status");
    assert_eq!(status.uid, [65534; 4], "{status:?}");
    assert_eq!(status.gid, [65534; 4], "{status:?}");
    assert_eq!((status.cap_eff, status.cap_prm), (0, 0), "{status:?}");

    let server = TlsServer::start(&dir, port);
    tls_client(port);
    let result = wait_for(&mut lines, "CHILD-RESULT");
    drop(server);
    let exit = child.wait().expect("wait for the child");
    assert!(exit.success(), "child test failed: {result:?}");
    assert_eq!(
        result.as_deref(),
        Some(format!("CHILD-RESULT sni={SNI} server_hello=true").as_str())
    );
}

fn wait_for(lines: &mut std::io::Lines<BufReader<ChildStdout>>, tag: &str) -> Option<String> {
    // The harness prints "test name ... " in front of the first line.
    let line = lines.map_while(Result::ok).find(|l| l.contains(tag))?;
    Some(line[line.find(tag)?..].to_string())
}

/// The child half of `dropped_privileges_keep_the_capture_running`: open as root, drop to
/// nobody, then capture the parent's handshake.
#[test]
#[ignore = "helper: run in a child process by dropped_privileges_keep_the_capture_running"]
fn privilege_drop_child() {
    let Ok(port) = std::env::var(CHILD_PORT_VAR) else {
        eprintln!("privilege_drop_child: nothing to do outside its parent test");
        return;
    };
    let port: u16 = port.parse().expect("port number");
    let mut cap = capture_loopback(port);
    privs::drop_privileges("nobody").expect("drop privileges to nobody");

    // As nobody, a new capture is refused with the setcap advice.
    let err = LiveCapture::open(&LiveOptions::new("lo")).unwrap_err();
    assert!(matches!(err, LiveError::PermissionDenied { .. }), "{err}");
    assert!(err.to_string().contains("setcap cap_net_raw"), "{err}");

    println!("CHILD-DROPPED");
    let frames = collect(&mut cap, |f| {
        let seen = inspect(f, port);
        seen.client_hello_sni.is_some() && seen.server_hello
    });
    let seen = inspect(&frames, port);
    println!(
        "CHILD-RESULT sni={} server_hello={}",
        seen.client_hello_sni.unwrap_or_default(),
        seen.server_hello
    );
}
