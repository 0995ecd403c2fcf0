//! Real-traffic helpers shared by the live-capture tests: a loopback TLS server and client
//! (`openssl`), a capture on `lo` filtered to one port, and what the captured frames show.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pinwatch::capture::live::{LiveCapture, LiveOptions};
use pinwatch::decode::{self, flags};
use pinwatch::tls::handshake::{self, Message};

use crate::common;

pub const SNI: &str = "live.pinwatch.test";
/// Upper bound on any wait for traffic, so a broken capture fails instead of hanging.
pub const TRAFFIC_DEADLINE: Duration = Duration::from_secs(30);

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

pub fn capture_loopback(port: u16) -> LiveCapture {
    let mut opts = LiveOptions::new("lo");
    opts.bpf = Some(format!("tcp port {port}"));
    opts.buffer_mb = 4;
    LiveCapture::open(&opts).expect("open a live capture on lo")
}

/// A self-signed certificate for the SNI, made fresh for each test.
pub fn make_certificate(dir: &Path) -> (PathBuf, PathBuf) {
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
pub struct TlsServer(Child);

impl TlsServer {
    pub fn start(dir: &Path, port: u16) -> TlsServer {
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

/// One full TLS handshake with SNI, then a clean close: close_notify, then FIN, and no
/// application data. Python's `ssl` rather than `openssl s_client`: Debian's OpenSSL
/// 3.0.22-1~deb12u2 s_client writes its own session summary into the connection as
/// application data, which makes the connection `established`.
pub fn tls_client(port: u16) {
    let script = format!(
        "import socket, ssl\n\
         c = ssl.create_default_context()\n\
         c.check_hostname = False\n\
         c.verify_mode = ssl.CERT_NONE\n\
         s = c.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='{SNI}')\n\
         s.settimeout(5)\n\
         try:\n    s.unwrap()\nexcept (OSError, ssl.SSLError):\n    pass\n\
         s.close()\n"
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run python3");
    assert!(status.success(), "the python3 TLS client failed");
}

/// Frames until `done` says enough or the capture stays idle for a few timeouts after it,
/// bounded by the deadline.
pub fn collect(
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
pub struct Seen {
    pub syn_to_server: bool,
    pub client_hello_sni: Option<String>,
    pub server_hello: bool,
    pub client_fin: bool,
    pub other_port: bool,
}

pub fn inspect(frames: &[common::Packet], port: u16) -> Seen {
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
                Message::ClientHello(ch) if to_server => {
                    seen.client_hello_sni = ch.sni.map(String::from)
                }
                Message::ServerHello(_) if !to_server => seen.server_hello = true,
                _ => {}
            }
        }
    }
    seen
}

/// The next line of a child's output that starts with `tag`; `None` once the child is gone.
pub fn wait_for(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    tag: &str,
) -> Option<String> {
    lines.map_while(Result::ok).find(|l| l.starts_with(tag))
}
