//! Helpers of the robustness tests (adversarial captures, bad files and flags, poisoning):
//! hand-built TCP conversations, a streaming pcap writer for inputs too large to hold in memory,
//! real TLS flights lifted from the project's captures, and a way to run the release binary
//! while measuring its peak memory (with GNU time). Linux only, like the sensor.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::{Packet, parse_tcp, read_pcap};

pub const BIN: &str = env!("CARGO_BIN_EXE_pinwatch");

// ---------------------------------------------------------------------------------------------
// Frames and conversations
// ---------------------------------------------------------------------------------------------

/// An Ethernet + IPv4 + TCP frame (checksums left zero: pinwatch never checks them).
#[allow(clippy::too_many_arguments)]
pub fn frame(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One TCP connection written packet by packet, with sequence numbers kept by the builder.
/// Every packet is 100 us after the previous one unless the caller moves `ts_ns`.
pub struct Conv {
    pub client: ([u8; 4], u16),
    pub server: ([u8; 4], u16),
    /// Next sequence number of each side.
    pub cseq: u32,
    pub sseq: u32,
    pub ts_ns: i64,
    pub step_ns: i64,
    pub packets: Vec<Packet>,
}

impl Conv {
    pub fn new(client: ([u8; 4], u16), server: ([u8; 4], u16), ts_ns: i64) -> Self {
        Conv {
            client,
            server,
            cseq: 1_000,
            sseq: 50_000,
            ts_ns,
            step_ns: 100_000,
            packets: Vec::new(),
        }
    }

    /// A packet with an explicit sequence number; nothing is advanced but the clock.
    pub fn raw(&mut self, from_client: bool, seq: u32, flags: u8, payload: &[u8]) {
        let ((sa, sp), (da, dp), ack) = if from_client {
            (self.client, self.server, self.sseq)
        } else {
            (self.server, self.client, self.cseq)
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let data = frame(sa, sp, da, dp, seq, ack, flags, payload);
        self.packets.push(Packet::new(
            self.ts_ns,
            crate::common::LINKTYPE_ETHERNET,
            data,
        ));
        self.ts_ns += self.step_ns;
    }

    fn send(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let seq = if from_client { self.cseq } else { self.sseq };
        self.raw(from_client, seq, flags, payload);
        let used = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.cseq = self.cseq.wrapping_add(used);
        } else {
            self.sseq = self.sseq.wrapping_add(used);
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn open(&mut self) {
        self.send(true, SYN, &[]);
        self.send(false, SYN | ACK, &[]);
        self.send(true, ACK, &[]);
    }

    pub fn client(&mut self, payload: &[u8]) {
        self.send(true, ACK | PSH, payload);
    }

    pub fn server(&mut self, payload: &[u8]) {
        self.send(false, ACK | PSH, payload);
    }

    /// One segment per `size` bytes.
    pub fn server_in(&mut self, payload: &[u8], size: usize) {
        for piece in payload.chunks(size) {
            self.server(piece);
        }
    }

    pub fn client_in(&mut self, payload: &[u8], size: usize) {
        for piece in payload.chunks(size) {
            self.client(piece);
        }
    }

    pub fn client_fin(&mut self) {
        self.send(true, FIN | ACK, &[]);
    }

    pub fn server_fin(&mut self) {
        self.send(false, FIN | ACK, &[]);
    }
}

/// A TLS record of the given content type (version field 3,3).
pub fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// The bodies of the TLS records a byte stream holds (whole records only).
pub fn records(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= stream.len() {
        let len = u16::from_be_bytes([stream[at + 3], stream[at + 4]]) as usize;
        let Some(body) = stream.get(at + 5..at + 5 + len) else {
            break;
        };
        out.push((stream[at], body.to_vec()));
        at += 5 + len;
    }
    out
}

/// The payload flights of one connection of a real capture, in capture order: each a run of
/// one side's data segments, as (from_client, bytes). The lab captures have no loss or
/// reordering, so concatenation is the stream.
pub fn real_flights(path: &str, client_port: u16) -> Vec<(bool, Vec<u8>)> {
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    for p in read_pcap(path) {
        let Some(t) = parse_tcp(&p) else { continue };
        let from_client = t.src_port() == client_port;
        if (!from_client && t.dst_port() != client_port) || t.payload.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((side, bytes)) if *side == from_client => bytes.extend_from_slice(&t.payload),
            _ => out.push((from_client, t.payload.clone())),
        }
    }
    out
}

/// The real TLS 1.2 exchange of `captures/origin-cert-error.pcap`'s first connection: a curl
/// client that rejects an expired origin certificate. Flights: ClientHello; ServerHello,
/// Certificate, ServerKeyExchange, ServerHelloDone; the client's fatal certificate_expired alert.
pub fn tls12_rejection() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let path = crate::common::repo_file("captures/origin-cert-error.pcap");
    let f = real_flights(&path, 56438);
    assert_eq!(f.len(), 3, "ClientHello, server flight, alert");
    assert!(f[0].0 && !f[1].0 && f[2].0);
    (f[0].1.clone(), f[1].1.clone(), f[2].1.clone())
}

// ---------------------------------------------------------------------------------------------
// Large captures
// ---------------------------------------------------------------------------------------------

/// Writes a classic pcap (Ethernet, microseconds) packet by packet, for inputs too large to
/// build in memory.
pub struct PcapWriter {
    out: BufWriter<File>,
}

impl PcapWriter {
    pub fn create(path: &Path) -> Self {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create pcap"));
        let mut h = Vec::new();
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&262_144u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        out.write_all(&h).unwrap();
        PcapWriter { out }
    }

    pub fn packet(&mut self, ts_ns: i64, data: &[u8]) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.write_all(&h).unwrap();
        self.out.write_all(data).unwrap();
    }

    pub fn packets(&mut self, packets: &[Packet]) {
        for p in packets {
            self.packet(p.ts_ns, &p.data);
        }
    }

    pub fn finish(mut self) {
        self.out.flush().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// How a run of the binary went, with its resource use as GNU time measured it.
#[derive(Debug)]
pub struct Measured {
    pub code: Option<i32>,
    pub stderr: String,
    /// Peak resident set size of the child, KiB.
    pub max_rss_kib: u64,
    pub user_s: f64,
    pub wall_s: f64,
}

impl Measured {
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// GNU time (Debian package `time`) measures the child. Why not `wait4` here: Linux carries the
/// peak RSS of the forking process's memory into the child's `ru_maxrss` across `execve`, so a
/// child of this (large, multi-threaded) test process reports the test's own peak. GNU time is
/// a small process in between, and its child's figure is clean.
const GNU_TIME: &str = "/usr/bin/time";

/// A command that runs what follows it and writes "PEAK_RSS_KIB USER_SECONDS" to `report`:
/// GNU time where installed (CI installs it), else a few lines of Python (a fresh machine has
/// python3 but maybe not `time`). Either forks from a small process, so the figure is the
/// child's own (rusage of a child forked from this big test process would carry its peak).
fn measuring_command(report: &Path) -> Command {
    if Path::new(GNU_TIME).exists() {
        let mut c = Command::new(GNU_TIME);
        c.args(["-f", "%M %U", "-o"]).arg(report);
        return c;
    }
    const METER: &str = "import resource, subprocess, sys\n\
        code = subprocess.call(sys.argv[2:])\n\
        r = resource.getrusage(resource.RUSAGE_CHILDREN)\n\
        open(sys.argv[1], 'w').write(f'{r.ru_maxrss} {r.ru_utime}\\n')\n\
        sys.exit(code)\n";
    let mut c = Command::new("python3");
    c.args(["-c", METER]).arg(report);
    c
}

/// Measured replays use one worker thread unless told otherwise: the bounds asserted here are
/// those of the flow table, reassembly and TLS stages, and with one worker `--max-flows` is one
/// table's exact LRU cap. (Several workers add their fixed input queues, up to 16 batches of
/// 256 frames each, and split `--max-flows` between them.)
fn one_worker(args: &[&str]) -> &'static [&'static str] {
    if args.first() == Some(&"replay") && !args.contains(&"--threads") {
        &["--threads", "1"]
    } else {
        &[]
    }
}

/// Runs pinwatch with `args`, handing each line of its standard output to `on_line` as it
/// comes (so millions of records need no memory here), and measures it.
pub fn run_measured(args: &[&str], mut on_line: impl FnMut(&str) + Send) -> Measured {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let report = std::env::temp_dir().join(format!("pinwatch-time-{}-{n}", std::process::id()));
    let started = Instant::now();
    let mut child = measuring_command(&report)
        .arg(BIN)
        .args(args)
        .args(one_worker(args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pinwatch under a resource meter");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (status, stderr) = std::thread::scope(|s| {
        let err = s.spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).unwrap();
            text
        });
        s.spawn(move || {
            for line in BufReader::new(stdout).lines() {
                on_line(&line.expect("stdout is UTF-8"));
            }
        });
        let status = child.wait().expect("wait");
        (status, err.join().unwrap())
    });
    let wall_s = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&report).expect("resource report");
    let _ = std::fs::remove_file(&report);
    // A non-zero exit adds a "Command exited with non-zero status" line before the figures.
    let figures: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let [rss, user] = figures[..] else {
        panic!("unexpected GNU time report: {text}");
    };
    Measured {
        code: status.code(),
        stderr,
        max_rss_kib: rss.parse().expect("RSS in KiB"),
        user_s: user.parse().expect("user seconds"),
        wall_s,
    }
}

/// Runs pinwatch and collects standard output as parsed NDJSON lines.
pub fn run_json(args: &[&str]) -> (Measured, Vec<serde_json::Value>) {
    let mut lines = Vec::new();
    let m = run_measured(args, |l| {
        lines.push(serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
    });
    (m, lines)
}

pub fn pinwatch(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pinwatch")
}

pub fn ndjson(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
