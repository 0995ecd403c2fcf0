//! Micro-benchmarks of the per-packet hot path, on real bytes from `captures/`:
//!
//! - `decode`: one full-size Ethernet/IPv4/TCP frame (1448-byte payload) to a `Segment`;
//! - `flow/pure_ack_100k_flows`: a client's pure ACK looked up among 100,000 tracked flows,
//!   each an established TLS 1.3 connection replayed from a real capture;
//! - `reassembly/established_data_segment`: a 1448-byte in-order server data segment on a flow
//!   whose outcome is settled (the steady state of a bulk transfer);
//! - `tls/app_data_scan`: 1448-byte chunks of a stream of application-data records fed to
//!   `tls::Session::feed` (record framing only; bodies are skipped).
//!
//! Run: `cargo bench --bench hot_path` (the defaults below keep it to about 20 s; criterion's
//! `-- --warm-up-time S --measurement-time S` override them).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pinwatch::capture::CaptureReader;
use pinwatch::decode::{self, Segment, flags, linktype};
use pinwatch::flow::{Connection, FlowConfig, FlowTable};
use pinwatch::tls::{At, Dir, Session};

/// Payload of a full-size segment with TCP timestamps on a 1500-byte MTU.
const MSS: usize = 1448;
/// Flows tracked while the lookup is measured.
const FLOWS: u32 = 100_000;
/// The capture holding the established TLS 1.3 connection the flow benchmarks replay.
const ESTABLISHED: &str = "mitm-explicit-success.pcap";

struct Frame {
    linktype: i32,
    ts_ns: i64,
    data: Vec<u8>,
}

fn captures_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/captures"))
}

fn read_capture(path: &Path) -> Vec<Frame> {
    let name = path.to_str().expect("capture path is UTF-8");
    let mut reader = CaptureReader::open(name).expect("bundled capture opens");
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame().expect("bundled capture reads") {
        frames.push(Frame {
            linktype: f.linktype,
            ts_ns: f.ts_ns,
            data: f.data.to_vec(),
        });
    }
    frames
}

/// The first Ethernet IPv4 TCP frame in the bundled captures carrying at least `MSS` payload
/// bytes, cut to exactly `MSS` (the captures were taken on veth links with larger segments),
/// with its IPv4 length and checksum fixed up.
fn full_size_frame() -> Vec<u8> {
    let mut paths: Vec<_> = std::fs::read_dir(captures_dir())
        .expect("captures/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    paths.sort();
    for path in paths {
        for f in read_capture(&path) {
            let is_ipv4 = f.data.get(12..14) == Some(&[0x08, 0x00][..]);
            if f.linktype != linktype::ETHERNET || !is_ipv4 {
                continue;
            }
            let Ok(seg) = decode::decode(f.linktype, &f.data) else {
                continue;
            };
            if seg.payload.len() < MSS {
                continue;
            }
            let headers = f.data.len() - seg.payload.len();
            let cut = seg.payload.len() - MSS;
            let mut frame = f.data[..headers + MSS].to_vec();
            let ip = &mut frame[14..];
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize - cut;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let ihl = (ip[0] & 0x0f) as usize * 4;
            ip[10..12].copy_from_slice(&[0, 0]);
            let sum = ones_complement_sum(&ip[..ihl]);
            ip[10..12].copy_from_slice(&(!sum).to_be_bytes());
            return frame;
        }
    }
    panic!("no TCP frame with a {MSS}-byte payload in captures/");
}

fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A real established TLS 1.3 connection: its frames up to and including the packet with the
/// client's first application data (after which the outcome is settled), and its client.
struct Established {
    frames: Vec<Frame>,
    client: (IpAddr, u16),
}

impl Established {
    fn load() -> Self {
        let frames = read_capture(&captures_dir().join(ESTABLISHED));
        let mut table = FlowTable::new(FlowConfig::default());
        let mut done = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if let Ok(seg) = decode::decode(f.linktype, &f.data) {
                table.packet(&seg, at(i as u64 + 1, f.ts_ns), &mut |c| done.push(c));
            }
        }
        table.drain(&mut |c| done.push(c));
        let conn = done
            .iter()
            .find(|c| c.session.obs.tls13() && c.session.obs.client_app().is_some())
            .expect("an established TLS 1.3 connection in the capture");
        let settled_at = conn.session.obs.client_app().expect("checked");
        let (client, server) = (conn.client.endpoint, conn.server.endpoint);
        let mine = |seg: &Segment<'_>| {
            let (a, b) = ((seg.src, seg.sport), (seg.dst, seg.dport));
            let c = (client.ip, client.port);
            let s = (server.ip, server.port);
            (a == c && b == s) || (a == s && b == c)
        };
        let frames = frames
            .into_iter()
            .take(settled_at as usize)
            .filter(|f| decode::decode(f.linktype, &f.data).is_ok_and(|s| mine(&s)))
            .collect();
        Established {
            frames,
            client: (client.ip, client.port),
        }
    }

    fn segments(&self) -> Vec<Segment<'_>> {
        self.frames
            .iter()
            .map(|f| decode::decode(f.linktype, &f.data).expect("decoded before"))
            .collect()
    }

    /// The connection's segments with the client moved to `ip`.
    fn readdressed<'a>(&self, segs: &[Segment<'a>], ip: IpAddr) -> Vec<Segment<'a>> {
        segs.iter()
            .map(|s| {
                let mut s = s.clone();
                if (s.src, s.sport) == self.client {
                    s.src = ip;
                } else {
                    s.dst = ip;
                }
                s
            })
            .collect()
    }
}

fn at(pkt: u64, ts_ns: i64) -> At {
    At::new(pkt, ts_ns)
}

fn client_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i))
}

fn bench_decode(c: &mut Criterion) {
    let frame = full_size_frame();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ethernet_ipv4_tcp_1448", |b| {
        b.iter(|| decode::decode(linktype::ETHERNET, black_box(&frame)).map(|s| s.payload.len()))
    });
    g.finish();
}

fn bench_flow(c: &mut Criterion) {
    let conn = Established::load();
    let segs = conn.segments();
    let ts = conn.frames[0].ts_ns;
    let mut table = FlowTable::new(FlowConfig::default());
    let mut pkt = 0u64;
    let mut sink = |c: Connection| {
        black_box(c);
    };
    for i in 0..FLOWS {
        for s in conn.readdressed(&segs, client_ip(i)) {
            pkt += 1;
            table.packet(&s, at(pkt, ts), &mut sink);
        }
    }
    assert_eq!(table.len(), FLOWS as usize);
    // The client's pure ACK of the server's flight, for flows picked in a scattered order so
    // the lookups miss the CPU caches as they would on a busy link.
    let ack = segs
        .iter()
        .rev()
        .find(|s| (s.src, s.sport) == conn.client && s.payload.is_empty() && s.has(flags::ACK))
        .expect("the client acknowledges something");
    let acks: Vec<Segment<'_>> = (0..4096u32)
        .map(|k| {
            let mut s = ack.clone();
            s.src = client_ip(k.wrapping_mul(2_654_435_761) % FLOWS);
            s
        })
        .collect();
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    g.bench_function("pure_ack_100k_flows", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            pkt += 1;
            table.packet(&acks[k], at(pkt, ts), &mut sink);
        })
    });
    g.finish();
}

fn bench_reassembly(c: &mut Criterion) {
    let conn = Established::load();
    let segs = conn.segments();
    let ts = conn.frames[0].ts_ns;
    let mut table = FlowTable::new(FlowConfig::default());
    let mut pkt = 0u64;
    let mut sink = |c: Connection| {
        black_box(c);
    };
    for s in &segs {
        pkt += 1;
        table.packet(s, at(pkt, ts), &mut sink);
    }
    let frame = full_size_frame();
    let bulk = decode::decode(linktype::ETHERNET, &frame).expect("decodes");
    // The server's last data segment, carrying a full-size payload, in sequence from there on.
    let last = segs
        .iter()
        .rev()
        .find(|s| (s.src, s.sport) != conn.client && !s.payload.is_empty())
        .expect("the server sent data");
    let mut seg = last.clone();
    seg.payload = bulk.payload;
    seg.wire_len = MSS as u32;
    seg.seq = last.seq.wrapping_add(last.wire_len);
    let mut g = c.benchmark_group("reassembly");
    g.throughput(Throughput::Bytes(MSS as u64));
    g.bench_function("established_data_segment", |b| {
        b.iter(|| {
            pkt += 1;
            table.packet(&seg, at(pkt, ts), &mut sink);
            seg.seq = seg.seq.wrapping_add(MSS as u32);
        })
    });
    g.finish();
}

fn bench_tls(c: &mut Criterion) {
    let conn = Established::load();
    let segs = conn.segments();
    // A session that has seen the real handshake up to the client's first application data.
    let mut session = Session::new(64 * 1024);
    let mut offsets = [0u64; 2];
    for (i, s) in segs.iter().enumerate() {
        let (dir, slot) = if (s.src, s.sport) == conn.client {
            (Dir::Client, 0)
        } else {
            (Dir::Server, 1)
        };
        session.feed(dir, offsets[slot], s.payload, at(i as u64 + 1, 0));
        offsets[slot] += s.payload.len() as u64;
    }
    // 64 full application-data records (TLS 1.3 maximum: 16384 + type byte + 16-byte tag) whose
    // bodies are real ciphertext bytes, cut into 1448-byte segments as a bulk download would be.
    let frame = full_size_frame();
    let filler = decode::decode(linktype::ETHERNET, &frame)
        .expect("decodes")
        .payload;
    let body_len = 16384 + 1 + 16;
    let mut stream = Vec::new();
    for _ in 0..64 {
        stream.extend_from_slice(&[23, 3, 3]);
        stream.extend_from_slice(&(body_len as u16).to_be_bytes());
        stream.extend(filler.iter().cycle().take(body_len));
    }
    let mut pos = 0usize;
    let mut offset = offsets[1];
    let mut pkt = segs.len() as u64;
    let mut g = c.benchmark_group("tls");
    g.throughput(Throughput::Bytes(MSS as u64));
    g.bench_function("app_data_scan", |b| {
        b.iter(|| {
            let chunk = &stream[pos..(pos + MSS).min(stream.len())];
            pkt += 1;
            session.feed(Dir::Server, offset, black_box(chunk), at(pkt, 0));
            offset += chunk.len() as u64;
            pos += chunk.len();
            if pos == stream.len() {
                pos = 0;
            }
        })
    });
    g.finish();
    assert!(session.obs.server_app_offset().is_some());
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_decode, bench_flow, bench_reassembly, bench_tls
}
criterion_main!(hot_path);
