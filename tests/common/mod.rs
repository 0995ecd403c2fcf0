//! A tiny pcap toolkit for the edge-case and property tests: read classic pcap, write classic
//! pcap and multi-interface pcapng, take TCP frames apart and put them back together, change
//! link layers and VLAN tags. Std only.
//!
//! Checksums: rebuilt frames keep the original IPv4 header checksum and TCP checksum, which are
//! then wrong. pinwatch never verifies checksums (a passive sensor must not: offloading makes
//! captured checksums wrong all the time), so the tests do not bother recomputing them.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use pinwatch::replay::{ReplayConfig, Summary, replay};
use serde_json::Value;

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_SLL2: u32 = 276;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ts_ns: i64,
    pub linktype: u32,
    pub data: Vec<u8>,
    /// Length on the wire (`data` may be shorter when cut by a snap length).
    pub orig_len: u32,
}

impl Packet {
    pub fn new(ts_ns: i64, linktype: u32, data: Vec<u8>) -> Self {
        let orig_len = data.len() as u32;
        Packet {
            ts_ns,
            linktype,
            data,
            orig_len,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// A file of the repository (`captures/...`).
pub fn repo_file(rel: &str) -> String {
    format!("{}/{}", env!("CARGO_MANIFEST_DIR"), rel)
}

/// A file of the public corpus kept in the repository (`tests/corpus/public`).
pub fn corpus_file(rel: &str) -> String {
    format!("{}/tests/corpus/public/{}", env!("CARGO_MANIFEST_DIR"), rel)
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> TempDir {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "pinwatch-test-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

pub fn path_string(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

// ---------------------------------------------------------------------------------------------
// Classic pcap
// ---------------------------------------------------------------------------------------------

/// Reads a classic pcap file (either byte order, micro- or nanosecond timestamps).
pub fn read_pcap(path: &str) -> Vec<Packet> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_pcap(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<Packet>, String> {
    if bytes.len() < 24 {
        return Err("shorter than a pcap header".into());
    }
    let magic_le = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let (big_endian, nanos) = match magic_le {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => return Err(format!("not a classic pcap (magic {m:#010x})")),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let a: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let linktype = u32_at(bytes, 20) & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut pos = 24;
    while pos < bytes.len() {
        if pos + 16 > bytes.len() {
            return Err(format!("record header cut at offset {pos}"));
        }
        let sec = u32_at(bytes, pos) as i64;
        let frac = u32_at(bytes, pos + 4) as i64;
        let caplen = u32_at(bytes, pos + 8) as usize;
        let orig_len = u32_at(bytes, pos + 12);
        let start = pos + 16;
        if start + caplen > bytes.len() {
            return Err(format!("record at offset {pos} cut"));
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        out.push(Packet {
            ts_ns,
            linktype,
            data: bytes[start..start + caplen].to_vec(),
            orig_len,
        });
        pos = start + caplen;
    }
    Ok(out)
}

/// Serialises packets as a classic little-endian pcap. All packets must share `linktype`.
pub fn pcap_bytes(linktype: u32, nanos: bool, packets: &[Packet]) -> Vec<u8> {
    let mut b = Vec::new();
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    b.extend_from_slice(&magic.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&262_144u32.to_le_bytes());
    b.extend_from_slice(&linktype.to_le_bytes());
    for p in packets {
        assert_eq!(p.linktype, linktype, "one link type per classic pcap");
        let sec = p.ts_ns.div_euclid(1_000_000_000);
        let sub = p.ts_ns.rem_euclid(1_000_000_000);
        let frac = if nanos { sub } else { sub / 1000 };
        b.extend_from_slice(&(sec as u32).to_le_bytes());
        b.extend_from_slice(&(frac as u32).to_le_bytes());
        b.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.orig_len.max(p.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&p.data);
    }
    b
}

/// Writes packets as a classic pcap with the link type of the first packet.
pub fn write_pcap(path: &Path, packets: &[Packet]) -> String {
    let linktype = packets.first().map_or(LINKTYPE_ETHERNET, |p| p.linktype);
    std::fs::write(path, pcap_bytes(linktype, false, packets)).expect("write pcap");
    path_string(path)
}

/// Offsets of each record header in a classic pcap written by [`pcap_bytes`].
pub fn pcap_record_offsets(packets: &[Packet]) -> Vec<usize> {
    let mut pos = 24;
    packets
        .iter()
        .map(|p| {
            let at = pos;
            pos += 16 + p.data.len();
            at
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pcapng
// ---------------------------------------------------------------------------------------------

/// One pcapng interface: link type and `if_tsresol` (the option byte: 6 = microseconds,
/// 9 = nanoseconds, 0x80 | n = 2^-n seconds).
#[derive(Debug, Clone, Copy)]
pub struct Iface {
    pub linktype: u16,
    pub tsresol: u8,
}

fn ng_block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    out.extend_from_slice(&block_type.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&total.to_le_bytes());
}

fn ng_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len() + (value.len().div_ceil(4) * 4 - value.len()), 0);
}

/// Timestamp units per second for an `if_tsresol` byte.
pub fn units_per_sec(tsresol: u8) -> u128 {
    if tsresol & 0x80 != 0 {
        1u128 << (tsresol & 0x7f)
    } else {
        10u128.pow(tsresol as u32)
    }
}

/// Serialises a little-endian pcapng: one section, the interfaces, then one EPB per packet on
/// the interface given with it. The packet's own `linktype` must match its interface.
pub fn pcapng_bytes(ifaces: &[Iface], packets: &[(usize, Packet)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    ng_option(&mut shb, 4, b"pinwatch tests"); // shb_userappl
    ng_option(&mut shb, 0, &[]);
    ng_block(&mut out, 0x0a0d_0d0a, &shb);
    for iface in ifaces {
        let mut idb = Vec::new();
        idb.extend_from_slice(&iface.linktype.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&262_144u32.to_le_bytes());
        ng_option(&mut idb, 9, &[iface.tsresol]); // if_tsresol
        ng_option(&mut idb, 0, &[]);
        ng_block(&mut out, 1, &idb);
    }
    for (if_id, p) in packets {
        let iface = ifaces[*if_id];
        assert_eq!(
            p.linktype, iface.linktype as u32,
            "packet on an interface of another link type"
        );
        let ups = units_per_sec(iface.tsresol);
        let units = (p.ts_ns as u128 * ups / 1_000_000_000) as u64;
        let mut epb = Vec::new();
        epb.extend_from_slice(&(*if_id as u32).to_le_bytes());
        epb.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(units as u32).to_le_bytes());
        epb.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&p.orig_len.max(p.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&p.data);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        ng_block(&mut out, 6, &epb);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A TCP frame taken apart. `link` is everything before the IP header (Ethernet with its tags,
/// SLL2, or nothing for raw IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFrame {
    pub linktype: u32,
    pub link: Vec<u8>,
    pub ip: Vec<u8>,
    pub tcp: Vec<u8>,
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]))
}

/// Length of the link header before IP, following VLAN tags. `None` when not IP.
fn link_len(linktype: u32, frame: &[u8]) -> Option<usize> {
    match linktype {
        LINKTYPE_RAW => Some(0),
        LINKTYPE_SLL2 => matches!(be16(frame, 0)?, 0x0800 | 0x86dd).then_some(20),
        LINKTYPE_ETHERNET => {
            let mut at = 12;
            loop {
                match be16(frame, at)? {
                    0x8100 | 0x88a8 | 0x9100 => at += 4,
                    0x0800 | 0x86dd => return Some(at + 2),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

/// Takes a complete (not snap-cut) TCP frame apart; `None` for anything else.
pub fn parse_tcp(p: &Packet) -> Option<TcpFrame> {
    let frame = &p.data;
    let l = link_len(p.linktype, frame)?;
    let ipb = frame.get(l..)?;
    let (ip_hdr_len, ip_total) = match ipb.first()? >> 4 {
        4 => {
            if ipb[9] != 6 {
                return None;
            }
            ((ipb[0] & 0x0f) as usize * 4, be16(ipb, 2)? as usize)
        }
        6 => {
            if *ipb.get(6)? != 6 {
                return None; // extension headers: not needed by these tests
            }
            (40, 40 + be16(ipb, 4)? as usize)
        }
        _ => return None,
    };
    if ip_total > ipb.len() {
        return None; // snap-cut
    }
    let seg = &ipb[ip_hdr_len..ip_total];
    let tcp_len = (*seg.get(12)? >> 4) as usize * 4;
    if tcp_len < 20 || tcp_len > seg.len() {
        return None;
    }
    Some(TcpFrame {
        linktype: p.linktype,
        link: frame[..l].to_vec(),
        ip: ipb[..ip_hdr_len].to_vec(),
        tcp: seg[..tcp_len].to_vec(),
        payload: seg[tcp_len..].to_vec(),
    })
}

impl TcpFrame {
    pub fn is_v6(&self) -> bool {
        self.ip[0] >> 4 == 6
    }
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes(self.tcp[4..8].try_into().unwrap())
    }
    pub fn set_seq(&mut self, seq: u32) {
        self.tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    }
    pub fn flags(&self) -> u8 {
        self.tcp[13]
    }
    pub fn set_flags(&mut self, flags: u8) {
        self.tcp[13] = flags;
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }
    pub fn src_port(&self) -> u16 {
        be16(&self.tcp, 0).unwrap()
    }
    pub fn dst_port(&self) -> u16 {
        be16(&self.tcp, 2).unwrap()
    }
    fn addrs(&self) -> (Vec<u8>, Vec<u8>) {
        if self.is_v6() {
            (self.ip[8..24].to_vec(), self.ip[24..40].to_vec())
        } else {
            (self.ip[12..16].to_vec(), self.ip[16..20].to_vec())
        }
    }
    /// Source and destination as (address bytes, port), for grouping into directions.
    pub fn direction(&self) -> DirKey {
        let (s, d) = self.addrs();
        DirKey {
            src: (s, self.src_port()),
            dst: (d, self.dst_port()),
        }
    }

    /// The frame with lengths recomputed (IPv4 total length, IPv6 payload length).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut ip = self.ip.clone();
        let l4 = self.tcp.len() + self.payload.len();
        if self.is_v6() {
            ip[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
        } else {
            let total = (ip.len() + l4) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
        }
        let mut out = self.link.clone();
        out.extend_from_slice(&ip);
        out.extend_from_slice(&self.tcp);
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn to_packet(&self, ts_ns: i64) -> Packet {
        Packet::new(ts_ns, self.linktype, self.to_bytes())
    }

    /// A copy with another payload, sequence number and flags.
    pub fn with(&self, seq: u32, flags: u8, payload: &[u8]) -> TcpFrame {
        let mut f = self.clone();
        f.set_seq(seq);
        f.set_flags(flags);
        f.payload = payload.to_vec();
        f
    }

    fn ether_type(&self) -> u16 {
        if self.is_v6() { 0x86dd } else { 0x0800 }
    }

    /// The same frame over Ethernet with the given VLAN ids (outer first): tag 0x88a8 for the
    /// outer of two, 0x8100 otherwise. Any existing link header is replaced.
    pub fn to_ethernet(&self, vlans: &[u16]) -> TcpFrame {
        let mut link = if self.linktype == LINKTYPE_ETHERNET {
            self.link[..12].to_vec()
        } else {
            vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]
        };
        for (i, id) in vlans.iter().enumerate() {
            let tpid: u16 = if i + 1 < vlans.len() { 0x88a8 } else { 0x8100 };
            link.extend_from_slice(&tpid.to_be_bytes());
            link.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        link.extend_from_slice(&self.ether_type().to_be_bytes());
        TcpFrame {
            linktype: LINKTYPE_ETHERNET,
            link,
            ..self.clone()
        }
    }

    /// Linux "cooked" v2 (LINKTYPE_LINUX_SLL2, 276): 20-byte header, no tags.
    pub fn to_sll2(&self) -> TcpFrame {
        let mut link = Vec::with_capacity(20);
        link.extend_from_slice(&self.ether_type().to_be_bytes()); // protocol
        link.extend_from_slice(&[0, 0]); // reserved
        link.extend_from_slice(&3u32.to_be_bytes()); // interface index
        link.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
        link.push(0); // packet type: to us
        link.push(6); // address length
        link.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x07, 0, 0]);
        TcpFrame {
            linktype: LINKTYPE_SLL2,
            link,
            ..self.clone()
        }
    }

    /// Raw IP (LINKTYPE_RAW, 101).
    pub fn to_raw(&self) -> TcpFrame {
        TcpFrame {
            linktype: LINKTYPE_RAW,
            link: Vec::new(),
            ..self.clone()
        }
    }

    /// The same TCP segment over IPv6: addresses `2001:db8::a.b.c.d`. IPv4 options are dropped.
    pub fn to_ipv6(&self) -> TcpFrame {
        if self.is_v6() {
            return self.clone();
        }
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 6, self.ip[8]];
        for a in [&self.ip[12..16], &self.ip[16..20]] {
            ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            ip.extend_from_slice(&[0; 8]);
            ip.extend_from_slice(a);
        }
        let mut f = TcpFrame { ip, ..self.clone() };
        if f.linktype == LINKTYPE_ETHERNET {
            let n = f.link.len();
            f.link[n - 2..].copy_from_slice(&0x86ddu16.to_be_bytes());
        } else if f.linktype == LINKTYPE_SLL2 {
            f.link[0..2].copy_from_slice(&0x86ddu16.to_be_bytes());
        }
        f
    }
}

/// The IPv6 form [`TcpFrame::to_ipv6`] gives an IPv4 address.
pub fn v6_of(v4: &str) -> String {
    let a: std::net::Ipv4Addr = v4.parse().expect("IPv4");
    let o = a.octets();
    let v6 = std::net::Ipv6Addr::new(
        0x2001,
        0x0db8,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    );
    v6.to_string()
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirKey {
    pub src: (Vec<u8>, u16),
    pub dst: (Vec<u8>, u16),
}

impl DirKey {
    /// The connection, the same for both directions.
    pub fn conn(&self) -> (DirKey, bool) {
        if self.src <= self.dst {
            (self.clone(), true)
        } else {
            (
                DirKey {
                    src: self.dst.clone(),
                    dst: self.src.clone(),
                },
                false,
            )
        }
    }
}

/// Applies `f` to every TCP frame (non-TCP packets are kept as they are).
pub fn map_frames(packets: &[Packet], mut f: impl FnMut(TcpFrame) -> TcpFrame) -> Vec<Packet> {
    packets
        .iter()
        .map(|p| match parse_tcp(p) {
            Some(t) => f(t).to_packet(p.ts_ns),
            None => p.clone(),
        })
        .collect()
}

/// Splits every TCP payload into pieces of at most `size` bytes with adjusted sequence numbers.
/// FIN and RST go on the last piece only; SYN segments are left whole.
pub fn resegment(packets: &[Packet], size: usize) -> Vec<Packet> {
    let mut out = Vec::new();
    for p in packets {
        let Some(t) = parse_tcp(p) else {
            out.push(p.clone());
            continue;
        };
        if t.payload.len() <= size || t.has(SYN) {
            out.push(p.clone());
            continue;
        }
        let pieces: Vec<&[u8]> = t.payload.chunks(size).collect();
        let mut off = 0u32;
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let flags = if last {
                t.flags()
            } else {
                t.flags() & !(FIN | RST)
            };
            out.push(
                t.with(t.seq().wrapping_add(off), flags, piece)
                    .to_packet(p.ts_ns),
            );
            off += piece.len() as u32;
        }
    }
    out
}

/// Packets of one TCP connection in a flight: a maximal run of one direction's packets with no
/// packet of the other direction in between (other connections' packets do not break it).
/// Returns, per packet index, the flight id (`None` for non-TCP packets).
pub fn flights(packets: &[Packet]) -> Vec<Option<usize>> {
    let mut current: HashMap<DirKey, (bool, usize)> = HashMap::new();
    let mut next_id = 0;
    packets
        .iter()
        .map(|p| {
            let t = parse_tcp(p)?;
            let (conn, forward) = t.direction().conn();
            let id = match current.get(&conn) {
                Some(&(fwd, id)) if fwd == forward => id,
                _ => {
                    next_id += 1;
                    current.insert(conn, (forward, next_id));
                    next_id
                }
            };
            Some(id)
        })
        .collect()
}

/// Rewrites every flight: SYNs first, then the payload of its data segments cut into pieces by
/// `cut` and put in the order `order` gives, then pure ACKs, then FIN/RST (emptied of data)
/// last. The whole flight is emitted where its first packet was, with that packet's timestamp,
/// so timestamps stay monotonic and no ACK from the peer can overtake the data it acknowledges.
pub fn rewrite_flights(
    packets: &[Packet],
    cut: &mut dyn FnMut(usize) -> Vec<usize>,
    order: &mut dyn FnMut(&mut Vec<TcpFrame>),
) -> Vec<Packet> {
    let ids = flights(packets);
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        if let Some(id) = id {
            members.entry(*id).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let Some(id) = ids[i] else {
            out.push(p.clone());
            continue;
        };
        let group = &members[&id];
        if group[0] != i {
            continue;
        }
        let ts = p.ts_ns;
        let frames: Vec<TcpFrame> = group
            .iter()
            .map(|&j| parse_tcp(&packets[j]).unwrap())
            .collect();
        let mut syns = Vec::new();
        let mut data = Vec::new();
        let mut acks = Vec::new();
        let mut closes = Vec::new();
        for f in frames {
            if f.has(SYN) {
                syns.push(f);
                continue;
            }
            let closing = f.has(FIN) || f.has(RST);
            if !f.payload.is_empty() {
                let mut off = 0usize;
                for len in cut(f.payload.len()) {
                    let piece = &f.payload[off..off + len];
                    data.push(f.with(
                        f.seq().wrapping_add(off as u32),
                        f.flags() & !(FIN | RST | SYN),
                        piece,
                    ));
                    off += len;
                }
                assert_eq!(off, f.payload.len(), "cut must cover the payload");
            }
            if closing {
                let end = f.seq().wrapping_add(f.payload.len() as u32);
                closes.push(f.with(end, f.flags(), &[]));
            } else if f.payload.is_empty() {
                acks.push(f);
            }
        }
        order(&mut data);
        for f in syns.iter().chain(&data).chain(&acks).chain(&closes) {
            out.push(f.to_packet(ts));
        }
    }
    out
}

/// Cuts `len` bytes into pieces of `size` (the last shorter).
pub fn even_cut(size: usize) -> impl FnMut(usize) -> Vec<usize> {
    move |len| {
        let mut v = vec![size; len / size];
        if len % size > 0 {
            v.push(len % size);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Running pinwatch
// ---------------------------------------------------------------------------------------------

/// Replays files through the library; records as JSON plus the summary.
pub fn run_with_summary(paths: &[String]) -> (Vec<Value>, Summary) {
    let mut records = Vec::new();
    let summary = replay::<Infallible>(paths, ReplayConfig::default(), &mut |rec, _| {
        records.push(serde_json::to_value(rec).expect("record serialises"));
        Ok(())
    })
    .unwrap_or_else(|e| match e {});
    (records, summary)
}

/// Replays files through the library; the records as JSON. Panics when a file had errors.
pub fn run(paths: &[String]) -> Vec<Value> {
    let (records, summary) = run_with_summary(paths);
    assert!(
        summary.errors.is_empty(),
        "capture errors: {:?}",
        summary.errors
    );
    records
}

/// `pinwatch ARGS` as a user runs it (the release binary), which must succeed; its standard
/// output, one JSON value per line (rules, records or findings).
pub fn pinwatch_lines(args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args(args)
        .output()
        .expect("run pinwatch");
    assert!(
        out.status.success(),
        "pinwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
        .collect()
}

pub fn run_packets(dir: &Path, name: &str, packets: &[Packet]) -> Vec<Value> {
    let path = write_pcap(&dir.join(name), packets);
    run(&[path])
}

/// Removes fields that legitimately change when packets are split, duplicated or moved.
pub fn without(record: &Value, fields: &[&str]) -> Value {
    let mut r = record.clone();
    if let Some(obj) = r.as_object_mut() {
        for f in fields {
            obj.remove(*f);
        }
    }
    r
}

/// Where a record says it came from (the run's sensor name and the file or interface): a
/// record read from a rewritten copy of a capture names the copy.
pub const RUN_ORIGIN: &[&str] = &["sensor", "file", "iface"];

/// Timing and packet counting fields.
pub const VOLATILE: &[&str] = &[
    "ts_start",
    "ts_end",
    "abort_delay_ms",
    "server_hello_delay_ms",
    "server_rtt_ms",
    "client_packets",
    "server_packets",
];

/// The facts every transformation must keep: outcome, alert, SNI, version, JA4, certificate.
pub fn core(record: &Value) -> Value {
    serde_json::json!({
        "client": [record["client_ip"], record["client_port"]],
        "server": [record["server_ip"], record["server_port"]],
        "outcome": record["outcome"],
        "outcome_detail": record["outcome_detail"],
        "alert_description": record["alert"]["description"],
        "alert_from": record["alert"]["from"],
        "sni": record["sni"],
        "tls_version": record["tls_version"],
        "ja4": record["ja4"],
        "cert_sha256": record["cert"]["sha256"],
    })
}

pub fn anomalies(record: &Value) -> Vec<String> {
    record["anomalies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares records one by one (same order) after `project`, with a readable failure.
pub fn assert_same(
    label: &str,
    original: &[Value],
    changed: &[Value],
    project: impl Fn(&Value) -> Value,
) {
    assert_eq!(
        original.len(),
        changed.len(),
        "{label}: number of connections differs\noriginal: {:#?}\nchanged: {:#?}",
        original.iter().map(core).collect::<Vec<_>>(),
        changed.iter().map(core).collect::<Vec<_>>()
    );
    for (i, (a, b)) in original.iter().zip(changed).enumerate() {
        let (pa, pb) = (project(a), project(b));
        assert_eq!(
            pa, pb,
            "{label}: connection {i} differs\noriginal: {a:#}\nchanged: {b:#}"
        );
    }
}

/// The project's own captures (`captures/*.pcap`, made with real clients behind real
/// proxies), sorted; the set grows as captures are added. `non-tls.pcap` is left out, and so are
/// the tunnelled `tunnel-*.pcap`: the transformations here rewrite the outermost IP/TCP headers,
/// and a tunnelled frame's outermost header is the underlay's (`tests/tunnels.rs` covers them).
pub fn tls_captures() -> Vec<String> {
    let dir = repo_file("captures");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .filter(|p| !p.ends_with("non-tls.pcap"))
        .filter(|p| !file_name(&path_string(p)).starts_with("tunnel-"))
        .map(|p| path_string(&p))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no capture in {dir}");
    v
}

/// Corpus captures with TLS connections of known shape.
pub const CORPUS_CAPTURES: &[&str] = &[
    "ja4/pcap/badcurveball.pcap",
    "zeek/Traces/tls/tls13draft16-ff52.a01.pcap",
    "suricata-verify/tests/tls/tls-client-hello-frag-01/dump_mtu300.pcap",
];

/// Every capture used for "same records" checks, as absolute paths.
pub fn all_captures() -> Vec<String> {
    let mut v = tls_captures();
    v.extend(CORPUS_CAPTURES.iter().map(|c| corpus_file(c)));
    v.push(repo_file("captures/non-tls.pcap"));
    v
}

pub fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// A real HTTP receiver (webhook tests).

pub struct Received {
    pub head: String,
    pub body: Value,
    /// The body as sent, for checking its signature.
    pub raw: Vec<u8>,
}

/// How the receiver answers the n-th request (0-based).
pub type Answer = Box<dyn Fn(usize) -> u16 + Send>;

/// Serves `listener` on a thread: reads each request fully, reports it on the returned channel
/// and answers with `answer(n)`. If `gate` is given, the first request is reported, then its
/// answer waits until the gate's sender sends (or is dropped).
pub fn receiver(
    listener: TcpListener,
    answer: Answer,
    gate: Option<mpsc::Receiver<()>>,
) -> mpsc::Receiver<Received> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut stream) = conn else { continue };
            let Some(request) = read_request(&mut stream) else {
                continue;
            };
            if tx.send(request).is_err() {
                return;
            }
            if n == 0
                && let Some(gate) = &gate
            {
                let _ = gate.recv();
            }
            let status = answer(n);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    rx
}

pub fn read_request(stream: impl Read) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length: usize = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse().ok())
    })??;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        head,
        body: serde_json::from_slice(&body).ok()?,
        raw: body,
    })
}
