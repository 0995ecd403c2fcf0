//! Live-mode sinks against real sockets and files: a webhook receiver that is down and then
//! comes up, answers 500, 400 or hangs; a full queue; log rotation; /dev/full; the Prometheus
//! endpoint scraped over HTTP and parsed by Prometheus' own Python parser (the PyPI package
//! `prometheus-client`); that test is `#[ignore]`d, `.ci/run` runs it, and it fails when the
//! parser is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pinwatch::classify::Outcome;
use pinwatch::sinks::file::{FileSinkError, Flush, LineSink, Target};
use pinwatch::sinks::metrics::MetricsServer;
use pinwatch::sinks::webhook::{
    SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER, USER_AGENT, WebhookConfig, WebhookError,
    WebhookSink, read_ca_file, read_secret,
};
use pinwatch::stats::Stats;
use serde_json::{Value, json};

mod common;

/// Generous bound for things that happen in milliseconds, so a loaded machine never fails a
/// test; only a real hang reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

// A real HTTP receiver: `common::receiver`.
use common::{Received, read_request, receiver};

/// A loopback port with nothing listening on it (bound, then released).
fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fast_retries(url: &str) -> WebhookConfig {
    let mut config = WebhookConfig::new(url);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn suggestion(i: usize) -> Value {
    json!({"sni": format!("host{i}.example.com"), "confidence": 0.9, "seq": i})
}

// ---------------------------------------------------------------------------------------
// Webhook.

#[test]
fn webhook_keeps_suggestions_while_the_receiver_is_down_and_delivers_them_in_order() {
    let port = refused_port();
    let sink = WebhookSink::start(fast_retries(&format!("http://127.0.0.1:{port}/rules"))).unwrap();
    for i in 0..5 {
        assert!(sink.send(&suggestion(i)));
    }
    wait_for("retries against the absent receiver", || {
        sink.counts().retried >= 2
    });
    let why = sink.last_error().unwrap();
    assert!(why.contains("refused"), "{why}");
    assert_eq!(sink.counts().delivered, 0);

    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let got = receiver(listener, Box::new(|_| 200), None);
    for i in 0..5 {
        let request = got.recv_timeout(PATIENCE).expect("suggestion delivered");
        assert_eq!(request.body, suggestion(i), "delivered in order");
        let head = request.head.to_ascii_lowercase();
        assert!(head.starts_with("post /rules http/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!(
                "\r\nuser-agent: {}\r\n",
                USER_AGENT.to_ascii_lowercase()
            )),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
    }
    let counts = sink.shutdown(PATIENCE);
    assert_eq!(counts.delivered, 5);
    assert!(counts.retried >= 2, "{counts:?}");
    assert_eq!(
        (
            counts.dropped,
            counts.rejected,
            counts.pending_lost,
            counts.queued
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn webhook_retries_a_500_and_does_not_retry_a_400() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rules", listener.local_addr().unwrap());
    // First request 500 (retried), the retry 200, then 400 for the second suggestion, then 200.
    let got = receiver(listener, Box::new(|n| [500, 200, 400, 200][n.min(3)]), None);
    let sink = WebhookSink::start(fast_retries(&url)).unwrap();
    sink.send(&suggestion(0));
    sink.send(&suggestion(1));
    sink.send_bytes(serde_json::to_vec(&suggestion(2)).unwrap());
    let seen: Vec<Value> = (0..4)
        .map(|_| got.recv_timeout(PATIENCE).expect("request").body)
        .collect();
    assert_eq!(
        seen,
        [suggestion(0), suggestion(0), suggestion(1), suggestion(2)]
    );
    let counts = sink.shutdown(PATIENCE);
    assert_eq!(counts.delivered, 2);
    assert_eq!(counts.retried, 1);
    assert_eq!(counts.rejected, 1);
    assert!(got.try_recv().is_err(), "the 400 was not retried");
}

#[test]
fn webhook_full_queue_drops_the_newest_and_counts_them() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = fast_retries(&format!("http://{}/rules", listener.local_addr().unwrap()));
    config.queue_capacity = 2;
    let (release, gate) = mpsc::channel();
    let got = receiver(listener, Box::new(|_| 200), Some(gate));
    let sink = WebhookSink::start(config).unwrap();

    assert!(sink.send(&suggestion(0)));
    // Suggestion 0 is now in flight, held by the receiver: the queue is empty.
    assert_eq!(got.recv_timeout(PATIENCE).unwrap().body, suggestion(0));
    let accepted: Vec<bool> = (1..6).map(|i| sink.send(&suggestion(i))).collect();
    assert_eq!(accepted, [true, true, false, false, false]);
    assert_eq!(sink.counts().dropped, 3);
    assert_eq!(sink.counts().queued, 3);

    drop(release);
    for i in 1..3 {
        assert_eq!(got.recv_timeout(PATIENCE).unwrap().body, suggestion(i));
    }
    let counts = sink.shutdown(PATIENCE);
    assert_eq!(
        (counts.delivered, counts.dropped, counts.pending_lost),
        (3, 3, 0)
    );
}

#[test]
fn webhook_shutdown_gives_up_at_the_deadline_and_counts_what_was_lost() {
    let port = refused_port();
    let sink = WebhookSink::start(fast_retries(&format!("http://127.0.0.1:{port}/"))).unwrap();
    for i in 0..3 {
        sink.send(&suggestion(i));
    }
    let counts = sink.shutdown(Duration::from_millis(300));
    assert_eq!(
        (counts.delivered, counts.pending_lost, counts.queued),
        (0, 3, 0)
    );
}

#[test]
fn webhook_shutdown_is_not_held_up_by_a_receiver_that_never_answers() {
    // Accepts and reads, never answers; the request timeout is an hour.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = fast_retries(&format!("http://{}/rules", listener.local_addr().unwrap()));
    config.io_timeout = Duration::from_secs(3600);
    let (_hold, gate) = mpsc::channel();
    let got = receiver(listener, Box::new(|_| 200), Some(gate));
    let sink = WebhookSink::start(config).unwrap();
    sink.send(&suggestion(0));
    sink.send(&suggestion(1));
    got.recv_timeout(PATIENCE).expect("request in flight");

    let (done, result) = mpsc::channel();
    std::thread::spawn(move || done.send(sink.shutdown(Duration::from_millis(200))));
    let counts = result
        .recv_timeout(PATIENCE)
        .expect("shutdown returned despite the hanging request");
    assert_eq!((counts.delivered, counts.pending_lost), (0, 2));
}

#[test]
fn webhook_refuses_other_schemes_and_malformed_urls_at_start() {
    assert!(matches!(
        WebhookSink::start(WebhookConfig::new("ftp://127.0.0.1/rules")),
        Err(WebhookError::UnsupportedScheme { .. })
    ));
    for bad in ["127.0.0.1:8080/rules", "https://user:pw@127.0.0.1/rules"] {
        assert!(
            matches!(
                WebhookSink::start(WebhookConfig::new(bad)),
                Err(WebhookError::BadUrl { .. })
            ),
            "{bad}"
        );
    }
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What a receiver does: HMAC-SHA256 over `timestamp "." body` with the shared secret,
/// compared with the header; and the timestamp within five minutes of now.
fn receiver_accepts_signature(got: &Received, secret: &[u8]) -> bool {
    use hmac::{KeyInit, Mac};
    let (Some(ts), Some(sig)) = (
        header(&got.head, TIMESTAMP_HEADER),
        header(&got.head, SIGNATURE_HEADER),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = ts.parse::<u64>().is_ok_and(|t| t.abs_diff(now) <= 300);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&got.raw);
    let expected = hex::encode(mac.finalize().into_bytes());
    fresh && expected == hex_sig
}

#[test]
fn webhook_sends_the_authorization_header_and_a_signature_the_receiver_verifies() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = fast_retries(&format!("http://{}/rules", listener.local_addr().unwrap()));
    config.authorization = Some(Secret::new("Bearer s3cr3t-token"));
    config.hmac_secret = Some(Secret::new("shared key"));
    let got = receiver(listener, Box::new(|_| 204), None);
    let sink = WebhookSink::start(config).unwrap();
    sink.send(&suggestion(7));
    let got = got.recv_timeout(PATIENCE).expect("request");
    assert_eq!(
        header(&got.head, "authorization"),
        Some("Bearer s3cr3t-token")
    );
    assert!(
        receiver_accepts_signature(&got, b"shared key"),
        "{}",
        got.head
    );
    assert!(!receiver_accepts_signature(&got, b"another key"));
    let mut tampered = got.raw.clone();
    tampered[2] ^= 1;
    let tampered = Received {
        head: got.head.clone(),
        body: Value::Null,
        raw: tampered,
    };
    assert!(!receiver_accepts_signature(&tampered, b"shared key"));
    assert_eq!(sink.shutdown(PATIENCE).delivered, 1);
}

/// A test CA and a certificate for 127.0.0.1 and localhost signed by it (rcgen, in memory).
struct TestPki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

// ring is the provider ureq's `rustls` feature uses; rustls deprecates it for lacking
// post-quantum key exchange, which a loopback test does not need.
#[allow(deprecated)]
fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pinwatch test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// An HTTPS receiver: rustls over each accepted connection, then as [`receiver`] (answers 200).
fn tls_receiver(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let Ok(session) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(session, tcp);
            // A client that refuses the certificate ends here: nothing to report.
            let Some(request) = read_request(&mut tls) else {
                continue;
            };
            if tx.send(request).is_err() {
                return;
            }
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    rx
}

#[test]
fn webhook_delivers_over_https_to_a_receiver_signed_by_the_given_ca_and_refuses_it_otherwise() {
    let pki = test_pki();
    let dir = scratch("webhook-ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    // Trusting the test CA (--webhook-ca): delivered, signed, over TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/rules",
        listener.local_addr().unwrap().port()
    );
    let got = tls_receiver(listener, Arc::clone(&pki.server));
    let mut config = fast_retries(&url);
    config.roots = Some(read_ca_file(&ca_file).unwrap());
    config.hmac_secret = Some(Secret::new("k"));
    let sink = WebhookSink::start(config).unwrap();
    sink.send(&suggestion(1));
    let request = got.recv_timeout(PATIENCE).expect("request over TLS");
    assert_eq!(request.body, suggestion(1));
    assert!(receiver_accepts_signature(&request, b"k"));
    let counts = sink.shutdown(PATIENCE);
    assert_eq!((counts.delivered, counts.pending_lost), (1, 0));

    // Mozilla's roots (no --webhook-ca) do not include the test CA: never delivered, retried,
    // and the reason names the certificate.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/rules",
        listener.local_addr().unwrap().port()
    );
    let got = tls_receiver(listener, Arc::clone(&pki.server));
    let sink = WebhookSink::start(fast_retries(&url)).unwrap();
    sink.send(&suggestion(2));
    wait_for("a retry", || sink.counts().retried >= 2);
    let why = sink.last_error().unwrap_or_default();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert!(
        got.try_recv().is_err(),
        "an untrusted receiver got the suggestion"
    );
    let counts = sink.shutdown(Duration::from_millis(100));
    assert_eq!((counts.delivered, counts.pending_lost), (0, 1));
}

#[test]
fn webhook_secret_and_ca_files_that_are_missing_or_empty_are_one_clear_error() {
    let dir = scratch("webhook-secret");
    let missing = dir.join("no-such-secret");
    let e = read_secret(
        "--webhook-secret-file",
        Some(&missing),
        "PINWATCH_TEST_UNSET",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--webhook-secret-file "), "{e}");
    assert!(e.contains("no-such-secret") && !e.contains('\n'), "{e}");
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = read_secret("--webhook-secret-file", Some(&empty), "X").unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    // One trailing line end (echo's) is not part of the secret.
    let file = dir.join("secret");
    std::fs::write(&file, "abc\n").unwrap();
    assert_eq!(
        read_secret("--webhook-secret-file", Some(&file), "X").unwrap(),
        Some(Secret::new("abc"))
    );
    let e = read_ca_file(&file).unwrap_err().to_string();
    assert!(e.starts_with("--webhook-ca ") && e.contains("PEM"), "{e}");
}

/// The live binary stops before capturing when a secret file cannot be read: one line, exit 2.
/// The files are read before the capture is opened, so no privileges are needed to see it.
#[cfg(feature = "live")]
#[test]
fn live_with_a_missing_webhook_secret_file_exits_2_with_one_line() {
    let dir = scratch("webhook-live");
    let out = Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(["live", "-i", "lo", "--webhook", "http://127.0.0.1:9/rules"])
        .arg("--webhook-secret-file")
        .arg(dir.join("absent"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--webhook-secret-file") && stderr.contains("absent"),
        "{stderr}"
    );
}

/// The signature checked by Python's own `hmac` module, independently of the Rust crates.
#[test]
#[ignore = "needs python3; .ci/run runs it"]
fn webhook_signature_is_verified_by_python_hmac() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = fast_retries(&format!("http://{}/rules", listener.local_addr().unwrap()));
    config.hmac_secret = Some(Secret::new("py secret"));
    let got = receiver(listener, Box::new(|_| 200), None);
    let sink = WebhookSink::start(config).unwrap();
    sink.send(&suggestion(3));
    let got = got.recv_timeout(PATIENCE).expect("request");
    sink.shutdown(PATIENCE);
    let check = "import hmac,hashlib,sys\n\
                 ts,sig,body=sys.argv[1],sys.argv[2],sys.stdin.buffer.read()\n\
                 mac=hmac.new(b'py secret',ts.encode()+b'.'+body,hashlib.sha256).hexdigest()\n\
                 sys.exit(0 if hmac.compare_digest('sha256='+mac,sig) else 1)";
    let mut child = Command::new("python3")
        .args(["-c", check])
        .arg(header(&got.head, TIMESTAMP_HEADER).unwrap())
        .arg(header(&got.head, SIGNATURE_HEADER).unwrap())
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    child.stdin.take().unwrap().write_all(&got.raw).unwrap();
    assert!(child.wait().unwrap().success(), "python's hmac disagrees");
}

// ---------------------------------------------------------------------------------------
// File sink.

/// A fresh, empty directory for one test, removed when the test ends.
fn scratch(name: &str) -> common::TempDir {
    common::temp_dir(&format!("sinks-{name}"))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn file_sink_reopens_after_rotation_and_new_lines_land_in_the_new_file() {
    let dir = scratch("rotate");
    let path = dir.join("pinwatch.ndjson");
    let rotated = dir.join("pinwatch.ndjson.1");
    let mut sink = LineSink::open(Target::File(path.clone()), Flush::EveryLine).unwrap();
    let rotate = sink.reopen_handle();
    sink.write(&json!({"n": 1})).unwrap();
    sink.write(&json!({"n": 2})).unwrap();
    std::fs::rename(&path, &rotated).unwrap();
    // Until told, the sink keeps its open file, now under the rotated name.
    sink.write(&json!({"n": 3})).unwrap();
    rotate.request();
    sink.write(&json!({"n": 4})).unwrap();
    sink.write_line(br#"{"n":5}"#).unwrap();
    assert_eq!(
        lines(&rotated),
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
    assert_eq!(lines(&path), [json!({"n": 4}), json!({"n": 5})]);
    assert_eq!(sink.written(), 5);
}

#[test]
fn file_sink_flushes_each_line_for_readers_or_waits_for_flush_when_manual() {
    let dir = scratch("flush");
    let eager = dir.join("eager.ndjson");
    let mut sink = LineSink::open(Target::File(eager.clone()), Flush::EveryLine).unwrap();
    sink.write(&json!({"a": 1})).unwrap();
    assert_eq!(
        lines(&eager),
        [json!({"a": 1})],
        "visible without a flush or close"
    );

    let batched = dir.join("batched.ndjson");
    let mut sink = LineSink::open(Target::File(batched.clone()), Flush::Manual).unwrap();
    sink.write(&json!({"b": 1})).unwrap();
    assert!(lines(&batched).is_empty());
    sink.flush().unwrap();
    assert_eq!(lines(&batched), [json!({"b": 1})]);
}

#[test]
fn file_sink_appends_to_an_existing_file_instead_of_truncating_it() {
    let dir = scratch("append");
    let path = dir.join("out.ndjson");
    LineSink::open(Target::File(path.clone()), Flush::EveryLine)
        .unwrap()
        .write(&json!({"run": 1}))
        .unwrap();
    LineSink::open(Target::File(path.clone()), Flush::EveryLine)
        .unwrap()
        .write(&json!({"run": 2}))
        .unwrap();
    assert_eq!(lines(&path), [json!({"run": 1}), json!({"run": 2})]);
}

#[test]
fn file_sink_reports_a_full_disk_distinctly() {
    let mut sink = LineSink::open(Target::File("/dev/full".into()), Flush::EveryLine).unwrap();
    let err = sink.write(&json!({"x": 1})).unwrap_err();
    assert!(matches!(err, FileSinkError::DiskFull { .. }), "{err:?}");
    assert!(err.is_fatal());
    assert!(
        err.to_string().starts_with(
            "/dev/full: disk full, cannot write (No space left on device); free some space"
        ),
        "{err}"
    );
}

#[test]
fn file_sink_failed_reopen_is_reported_and_writing_goes_on_in_the_old_file() {
    let dir = scratch("reopen-fails");
    let sub = dir.join("gone");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("out.ndjson");
    let kept = dir.join("kept.ndjson");
    let mut sink = LineSink::open(Target::File(path.clone()), Flush::EveryLine).unwrap();
    sink.write(&json!({"n": 1})).unwrap();
    std::fs::rename(&path, &kept).unwrap();
    std::fs::remove_dir(&sub).unwrap();
    sink.reopen_handle().request();
    let err = sink.write(&json!({"n": 2})).unwrap_err();
    assert!(matches!(err, FileSinkError::Reopen { .. }), "{err:?}");
    assert!(!err.is_fatal());
    sink.write(&json!({"n": 3})).unwrap();
    assert_eq!(lines(&kept), [json!({"n": 1}), json!({"n": 3})]);
}

// ---------------------------------------------------------------------------------------
// Stats and the Prometheus endpoint.

#[test]
fn stats_from_two_busy_workers_add_up_exactly() {
    let stats = Arc::new(Stats::new(2));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                let mut local = stats.worker();
                for i in 0..200_000u64 {
                    local.record_packet(100 + t, 1_000 + i % 5_000);
                }
                local.outcome(Outcome::ServerAbort);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = stats.snapshot();
    assert_eq!(s.packets, 400_000);
    assert_eq!(s.bytes, 200_000 * 100 + 200_000 * 101);
    assert_eq!(s.latency.len(), 400_000);
    assert_eq!(s.outcome(Outcome::ServerAbort), 2);
}

/// One request, the whole response: (status line, headers lowercased, body). A reset after
/// the response (the server closed with part of the request unread) ends it like a close.
fn http(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn busy_stats() -> Arc<Stats> {
    let stats = Arc::new(Stats::new(2));
    let mut local = stats.worker();
    for ns in [2_000, 3_000, 40_000] {
        local.record_packet(1000, ns);
    }
    local.outcome(Outcome::ClientAlert);
    local.flow_opened();
    drop(local);
    stats.set_capture_drops(5, 1);
    stats.set_queue_depth(1, 17);
    stats.add_rules_emitted(2);
    stats
        .webhook
        .delivered
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    stats
}

#[test]
fn metrics_endpoint_serves_the_counters_and_404s_elsewhere() {
    let server = MetricsServer::start("127.0.0.1:0", busy_stats()).unwrap();
    let addr = server.local_addr();

    let (status, headers, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    for line in [
        "pinwatch_packets_total 3",
        "pinwatch_bytes_total 3000",
        "pinwatch_flows 1",
        "pinwatch_connections_total{outcome=\"client_alert\"} 1",
        "pinwatch_connections_total{outcome=\"established\"} 0",
        "pinwatch_capture_drops_total{source=\"kernel\"} 5",
        "pinwatch_capture_drops_total{source=\"interface\"} 1",
        "pinwatch_queue_depth{queue=\"1\"} 17",
        "pinwatch_rules_emitted_total 2",
        "pinwatch_webhook_delivered_total 4",
        "pinwatch_packet_latency_seconds_bucket{le=\"0.0000025\"} 1",
        "pinwatch_packet_latency_seconds_bucket{le=\"0.00005\"} 3",
        "pinwatch_packet_latency_seconds_bucket{le=\"+Inf\"} 3",
        "pinwatch_packet_latency_seconds_count 3",
        "pinwatch_packet_latency_seconds_sum 0.000045",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }

    let (status, _, body) = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert_eq!(get(addr, "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(addr, "/metrics/x").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(http(addr, b"hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.resize(20 * 1024, b'a');
    assert_eq!(
        http(addr, &huge).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Still serving after the bad requests.
    assert_eq!(get(addr, "/metrics?from=test").0, "HTTP/1.1 200 OK");
    // A client that sends nothing keeps neither the thread nor other scrapes waiting.
    let silent = TcpStream::connect(addr).unwrap();
    let (status, _, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("pinwatch_packets_total 3\n"), "{body}");
    drop(silent);
    // Returns (the thread is joined); whether the port is then refused is not asserted, as a
    // parallel test may already have been given the same port.
    server.stop();
}

#[test]
fn a_scrape_has_the_latency_histogram_and_the_process_metrics() {
    let server = MetricsServer::start("127.0.0.1:0", busy_stats()).unwrap();
    let (status, _, body) = get(server.local_addr(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let value = |series: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{body}"));
        line[series.len()..].trim().parse().unwrap()
    };
    assert!(body.contains("# TYPE pinwatch_packet_latency_seconds histogram\n"));
    assert!(!body.contains(" summary\n"), "{body}");
    assert_eq!(
        value("pinwatch_packet_latency_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert!(value("process_resident_memory_bytes") > 0.0, "{body}");
    assert!(value("process_virtual_memory_bytes") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    assert!(value("process_max_fds") > 0.0);
    assert!(value("process_start_time_seconds") > 1e9);
    value("process_cpu_seconds_total");
}

#[test]
fn metrics_address_taken_or_malformed_is_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = MetricsServer::start(&addr, busy_stats()).err().unwrap();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot listen for metrics on {addr}: ")),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    let err = MetricsServer::start("no-port", busy_stats()).err().unwrap();
    assert!(
        err.to_string().starts_with("metrics address \"no-port\": "),
        "{err}"
    );
}

/// Families and samples as Prometheus' reference Python parser sees them:
/// {sample name + labels: [family type, value]}.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
families = list(text_string_to_metric_families(sys.stdin.read()))
out["__families__"] = ["", str(len(families))]
for family in families:
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = [family.type, repr(float(s.value))]
print(json.dumps(out))
"#;

fn require_python_parser() {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with prometheus_client is needed: pip install prometheus-client"
    );
}

#[test]
#[ignore = "needs python3 with prometheus_client (pip install prometheus-client); .ci/run runs it"]
fn metrics_text_is_accepted_by_the_prometheus_python_parser() {
    require_python_parser();
    let server = MetricsServer::start("127.0.0.1:0", busy_stats()).unwrap();
    let (_, _, body) = get(server.local_addr(), "/metrics");
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let sample = |name: &str| {
        parsed
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {parsed:?}"))
            .clone()
    };
    assert_eq!(sample("pinwatch_packets_total"), json!(["counter", "3.0"]));
    assert_eq!(sample("pinwatch_flows"), json!(["gauge", "1.0"]));
    assert_eq!(
        sample("pinwatch_connections_total{outcome=\"client_alert\"}"),
        json!(["counter", "1.0"])
    );
    assert_eq!(
        sample("pinwatch_queue_depth{queue=\"1\"}"),
        json!(["gauge", "17.0"])
    );
    assert_eq!(
        sample("pinwatch_packet_latency_seconds_count"),
        json!(["histogram", "3.0"])
    );
    // 2, 3 and 40 µs: one packet up to 2.5 µs, two up to 5 µs, all three up to 50 µs.
    for (le, n) in [
        ("0.0000025", "1.0"),
        ("0.000005", "2.0"),
        ("0.00005", "3.0"),
    ] {
        assert_eq!(
            sample(&format!(
                "pinwatch_packet_latency_seconds_bucket{{le=\"{le}\"}}"
            )),
            json!(["histogram", n])
        );
    }
    assert_eq!(
        sample("pinwatch_packet_latency_seconds_bucket{le=\"+Inf\"}"),
        json!(["histogram", "3.0"])
    );
    let [kind, rss] = sample("process_resident_memory_bytes")
        .as_array()
        .unwrap()
        .clone()
        .try_into()
        .unwrap();
    assert_eq!(kind, "gauge");
    assert!(rss.as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{rss}");
    // 17 of pinwatch's, 7 process_* ones.
    assert_eq!(sample("__families__"), json!(["", "24"]));
    let build = format!(
        "pinwatch_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&build), json!(["gauge", "1.0"]));
}

/// Cost of per-packet accounting; run with
/// `cargo test --release --test sinks -- --ignored --nocapture record_packet_cost`.
#[test]
#[ignore = "benchmark: prints figures, asserts nothing about speed"]
fn record_packet_cost() {
    const PER_THREAD: u64 = 20_000_000;
    for threads in [1u64, 2] {
        let stats = Arc::new(Stats::new(0));
        let start = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || {
                    let mut local = stats.worker();
                    for i in 0..PER_THREAD {
                        local.record_packet(60 + (i & 1023), 200 + (i * 7919) % 50_000);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let total = threads * PER_THREAD;
        assert_eq!(stats.snapshot().packets, total);
        println!(
            "{threads} thread(s): {total} packets in {secs:.2} s = {:.1} ns/packet/thread, {:.0} Mpackets/s in all",
            secs * 1e9 / PER_THREAD as f64,
            total as f64 / secs / 1e6
        );
    }
    let h = pinwatch::stats::new_latency_histogram();
    println!("latency histogram: {} counters", h.distinct_values());
}
