//! Decode stage: link layer, VLAN tags, PPPoE, IP and TCP headers, as checked views over the
//! frame's bytes (nothing is copied). Every length is checked before use; a frame that is cut
//! by the snap length still yields its headers, with the missing payload reported so that
//! reassembly treats it as a hole instead of mis-reading it.
//!
//! Below the IP layer, MPLS label stacks (`mpls`, with Ethernet pseudo-wires) and Cisco TrustSec
//! tags (`cmd`) are stepped over like VLAN tags, together at most `MAX_LINK_DEPTH` headers per
//! frame. Tunnels (VXLAN, GRE, ERSPAN, Geneve, GTP-U, IP in IP; see `tunnel`, `geneve`, `gtp`)
//! are followed down to the TCP segment inside, at most `MAX_TUNNEL_LAYERS` deep. The segment then carries its innermost tunnel: that is the one whose
//! network the inner addresses belong to (an ERSPAN session mirroring a VXLAN overlay still has
//! the overlay's addresses inside), so it is what keeps overlapping address spaces apart.

pub mod cmd;
pub mod geneve;
pub mod gtp;
pub mod mpls;
pub mod tunnel;

use std::net::IpAddr;

use etherparse::{IpNumber, LaxIpPayloadSlice, LaxIpSlice, TcpSlice};

use tunnel::{Decapsulated, Inner};
pub use tunnel::{MAX_TUNNEL_LAYERS, Tunnel, TunnelKey, TunnelKind};

/// LINKTYPE_* values this stage understands.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_BSD_12: i32 = 12;
    pub const RAW_BSD_14: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

const ETH_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_MPLS_UNICAST: u16 = 0x8847;
const ETH_MPLS_MULTICAST: u16 = 0x8848;
const ETH_TRUSTSEC: u16 = 0x8909;
/// Link-layer headers (VLAN tags, TrustSec tags, MPLS stacks, pseudo-wire Ethernet frames) one
/// frame may stack; deeper is not real traffic, so stop instead of looping (an MPLS pseudo-wire
/// can carry another MPLS frame, and so on).
pub const MAX_LINK_DEPTH: usize = 8;
/// VLAN ids kept per packet (outer first).
pub const MAX_VLANS: usize = 2;

/// Why a frame produced no TCP segment. Each is counted in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    UnsupportedLinkType,
    NotIp,
    NotTcp,
    Fragment,
    Malformed,
    /// A tunnel header pinwatch does not follow: VXLAN without the I flag, GRE version 1 (PPTP)
    /// or with source routing, an unknown ERSPAN version or frame type, Geneve other than
    /// version 0 or carrying neither Ethernet nor IP, GTP-U signalling (echo, end marker) or GTP',
    /// an MPLS payload that is neither IP nor a pseudo-wire with a control word, a TrustSec header
    /// of another version.
    TunnelUnsupported,
    /// More than `MAX_TUNNEL_LAYERS` tunnels inside each other, or an MPLS stack deeper than
    /// `mpls::MAX_LABELS`.
    TunnelTooDeep,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::UnsupportedLinkType => "unsupported_linktype",
            Skip::NotIp => "not_ip",
            Skip::NotTcp => "not_tcp",
            Skip::Fragment => "ip_fragment",
            Skip::Malformed => "malformed",
            Skip::TunnelUnsupported => "tunnel_unsupported",
            Skip::TunnelTooDeep => "tunnel_too_deep",
        }
    }
}

/// TCP flag bits as on the wire.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A decoded TCP segment: a view into the frame.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    /// VLAN tags of the innermost Ethernet frame (the underlay's tags are not kept).
    pub vlans: [u16; MAX_VLANS],
    pub vlan_count: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Payload bytes present in the capture.
    pub payload: &'a [u8],
    /// Payload length on the wire; larger than `payload.len()` when the snap length cut it.
    pub wire_len: u32,
    /// The innermost tunnel the segment arrived in, if any.
    pub tunnel: Option<Tunnel>,
}

impl Segment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    pub fn vlans(&self) -> &[u16] {
        &self.vlans[..self.vlan_count as usize]
    }

    /// A hash of the connection that is the same for both directions, for sharding flows
    /// across worker threads. Not for hash tables an attacker can aim at: it is only used to
    /// pick a worker.
    pub fn flow_hash(&self) -> u64 {
        flow_hash(self.src, self.sport, self.dst, self.dport, self.vlans())
    }
}

fn flow_hash(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, vlans: &[u16]) -> u64 {
    let a = endpoint_hash(src, sport);
    let b = endpoint_hash(dst, dport);
    let mut h = a.min(b) ^ b.max(a).rotate_left(29);
    for &v in vlans {
        h = (h ^ u64::from(v)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h ^= h >> 31;
    h.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 7
}

/// [`Segment::flow_hash`] read straight from fixed offsets, for the common frame that is plain
/// Ethernet, IPv4 and TCP; `None` for any other frame. Whenever [`decode`] accepts such a frame,
/// its segment's `flow_hash()` is this value, so a worker can pass over the packets of other
/// workers' flows without decoding them.
pub fn quick_flow_hash(linktype: i32, frame: &[u8]) -> Option<u64> {
    if linktype != linktype::ETHERNET || be16(frame, 12)? != ETH_IPV4 {
        return None;
    }
    let ip = frame.get(14..)?;
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || header_len < 20 || *ip.get(9)? != IPPROTO_TCP {
        return None;
    }
    let ports = ip.get(header_len..header_len + 4)?;
    let addr = |at: usize| {
        IpAddr::V4(std::net::Ipv4Addr::new(
            ip[at],
            ip[at + 1],
            ip[at + 2],
            ip[at + 3],
        ))
    };
    Some(flow_hash(
        addr(12),
        u16::from_be_bytes([ports[0], ports[1]]),
        addr(16),
        u16::from_be_bytes([ports[2], ports[3]]),
        &[],
    ))
}

fn endpoint_hash(ip: IpAddr, port: u16) -> u64 {
    let bits: u128 = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17);
    (folded ^ u64::from(port).rotate_left(48)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Decodes one frame of the given link type into a TCP segment.
pub fn decode(linktype: i32, frame: &[u8]) -> Result<Segment<'_>, Skip> {
    let mut vlans = Vlans::default();
    let ip = match linktype {
        linktype::ETHERNET => ethernet(frame, &mut vlans, 0)?,
        linktype::LINUX_SLL => {
            let proto = be16(frame, 14).ok_or(Skip::Malformed)?;
            ether_payload(
                proto,
                frame.get(16..).ok_or(Skip::Malformed)?,
                &mut vlans,
                0,
            )?
        }
        linktype::LINUX_SLL2 => {
            let proto = be16(frame, 0).ok_or(Skip::Malformed)?;
            ether_payload(
                proto,
                frame.get(20..).ok_or(Skip::Malformed)?,
                &mut vlans,
                0,
            )?
        }
        linktype::RAW
        | linktype::RAW_BSD_12
        | linktype::RAW_BSD_14
        | linktype::IPV4
        | linktype::IPV6 => frame,
        linktype::NULL | linktype::LOOP => {
            // The address family is in host order for NULL and network order for LOOP; read
            // both ways. IPv4 is 2 everywhere; IPv6 is 10, 24, 28 or 30 depending on the OS.
            let head = frame.get(..4).ok_or(Skip::Malformed)?;
            let family = u32::from_le_bytes([head[0], head[1], head[2], head[3]])
                .min(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
            match family {
                2 | 10 | 24 | 28 | 30 => &frame[4..],
                _ => return Err(Skip::NotIp),
            }
        }
        _ => return Err(Skip::UnsupportedLinkType),
    };
    ip_tcp(ip, vlans)
}

#[derive(Default, Clone, Copy)]
struct Vlans {
    ids: [u16; MAX_VLANS],
    count: u8,
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn ethernet<'a>(frame: &'a [u8], vlans: &mut Vlans, depth: usize) -> Result<&'a [u8], Skip> {
    let ether_type = be16(frame, 12).ok_or(Skip::Malformed)?;
    ether_payload(ether_type, &frame[14..], vlans, depth)
}

/// Follows VLAN tags, TrustSec tags, MPLS and PPPoE down to the IP header.
fn ether_payload<'a>(
    ether_type: u16,
    data: &'a [u8],
    vlans: &mut Vlans,
    depth: usize,
) -> Result<&'a [u8], Skip> {
    if depth > MAX_LINK_DEPTH {
        return Err(Skip::Malformed);
    }
    match ether_type {
        ETH_IPV4 | ETH_IPV6 => Ok(data),
        ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
            let tci = be16(data, 0).ok_or(Skip::Malformed)?;
            let inner = be16(data, 2).ok_or(Skip::Malformed)?;
            if (vlans.count as usize) < MAX_VLANS {
                vlans.ids[vlans.count as usize] = tci & 0x0fff;
                vlans.count += 1;
            }
            ether_payload(inner, &data[4..], vlans, depth + 1)
        }
        ETH_TRUSTSEC => {
            let tagged = cmd::parse(data)?;
            ether_payload(tagged.ether_type, tagged.rest, vlans, depth + 1)
        }
        ETH_MPLS_UNICAST | ETH_MPLS_MULTICAST => match mpls::parse(data)? {
            mpls::Payload::Ip(ether_type, ip) => ether_payload(ether_type, ip, vlans, depth + 1),
            // The pseudo-wire's frame belongs to the customer's network: its own tags scope it.
            mpls::Payload::Ethernet(frame) => {
                *vlans = Vlans::default();
                ethernet(frame, vlans, depth + 1)
            }
        },
        ETH_PPPOE_SESSION => {
            // 6-byte PPPoE header, then the 2-byte PPP protocol number. The PPPoE length bounds
            // the IP packet: some senders pad it and the IP length then counts the padding.
            let pppoe_len = be16(data, 4).ok_or(Skip::Malformed)? as usize;
            let end = (6 + pppoe_len).min(data.len());
            match be16(data, 6).ok_or(Skip::Malformed)? {
                0x0021 | 0x0057 if end >= 8 => Ok(&data[8..end]),
                0x0021 | 0x0057 => Err(Skip::Malformed),
                _ => Err(Skip::NotIp),
            }
        }
        _ => Err(Skip::NotIp),
    }
}

/// Parses IP headers, following tunnels, down to a TCP segment.
fn ip_tcp(mut data: &[u8], mut vlans: Vlans) -> Result<Segment<'_>, Skip> {
    let mut tunnel: Option<Tunnel> = None;
    loop {
        let (ip, _ext_err) = LaxIpSlice::from_slice(data).map_err(|_| Skip::NotIp)?;
        let payload = ip.payload();
        if payload.fragmented {
            return Err(Skip::Fragment);
        }
        let (src, dst) = addresses(&ip);
        let decap = match payload.ip_number {
            IpNumber::TCP => return tcp(&ip, payload, src, dst, vlans, tunnel),
            IpNumber::UDP => tunnel::udp(payload.payload)?.ok_or(Skip::NotTcp)?,
            IpNumber::GRE => tunnel::gre(payload.payload)?,
            IpNumber::IPV4 | IpNumber::IPV6 => tunnel::ip_in_ip(payload.ip_number, payload.payload),
            _ => return Err(Skip::NotTcp),
        };
        let layers = tunnel.map_or(0, |t| t.layers) + 1;
        if layers > MAX_TUNNEL_LAYERS {
            return Err(Skip::TunnelTooDeep);
        }
        let Decapsulated { kind, id, inner } = decap;
        tunnel = Some(Tunnel {
            kind,
            id,
            outer_src: src,
            outer_dst: dst,
            layers,
        });
        // The inner frame's own tags are what scope its addresses; the underlay's are dropped.
        vlans = Vlans::default();
        data = match inner {
            Inner::Ethernet(frame) => ethernet(frame, &mut vlans, 0)?,
            Inner::EtherType(ether_type, rest) => ether_payload(ether_type, rest, &mut vlans, 0)?,
        };
    }
}

fn addresses(ip: &LaxIpSlice<'_>) -> (IpAddr, IpAddr) {
    match ip {
        LaxIpSlice::Ipv4(v4) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        ),
        LaxIpSlice::Ipv6(v6) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        ),
    }
}

fn tcp<'a>(
    ip: &LaxIpSlice<'a>,
    payload: &LaxIpPayloadSlice<'a>,
    src: IpAddr,
    dst: IpAddr,
    vlans: Vlans,
    tunnel: Option<Tunnel>,
) -> Result<Segment<'a>, Skip> {
    // What the IP header says the TCP segment's length is (the slice may be shorter when the
    // snap length cut the frame).
    let ip_stated_len = match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (h.total_len() as usize).saturating_sub(h.ihl() as usize * 4)
        }
        LaxIpSlice::Ipv6(_) => payload.payload.len(),
    };
    let tcp_bytes = payload.payload;
    let header_len = tcp_header_len(tcp_bytes)?;
    let tcp = TcpSlice::from_slice(&tcp_bytes[..header_len.min(tcp_bytes.len())])
        .map_err(|_| Skip::Malformed)?;
    let present = &tcp_bytes[header_len..];
    let wire_len = if payload.incomplete {
        ip_stated_len.saturating_sub(header_len).max(present.len())
    } else {
        present.len()
    };
    let raw_flags = tcp.header_slice()[13];
    Ok(Segment {
        vlans: vlans.ids,
        vlan_count: vlans.count,
        src,
        dst,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: raw_flags,
        payload: present,
        wire_len: wire_len.min(u32::MAX as usize) as u32,
        tunnel,
    })
}

/// The TCP header length, checked against the bytes present.
fn tcp_header_len(tcp: &[u8]) -> Result<usize, Skip> {
    let offset_byte = *tcp.get(12).ok_or(Skip::Malformed)?;
    let len = (offset_byte >> 4) as usize * 4;
    if len < 20 || len > tcp.len() {
        return Err(Skip::Malformed);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_ipv4(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0,
            0, // TCP
        ];
        p.extend_from_slice(payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    #[test]
    fn qinq_tags_are_recorded_outer_first() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x88, 0xa8, 0x0e, 0x78, 0x81, 0x00, 0x09, 0xaa, 0x08, 0x00]);
        frame.extend(tcp_ipv4(b"hello"));
        let seg = decode(linktype::ETHERNET, &frame).unwrap();
        assert_eq!(seg.vlans(), &[3704, 2474]);
        assert_eq!(seg.payload, b"hello");
        assert_eq!(seg.dport, 443);
    }

    #[test]
    fn snaplen_cut_reports_the_wire_length() {
        let ip = tcp_ipv4(&[0x16; 100]);
        let seg = decode(linktype::RAW, &ip[..60]).unwrap();
        assert_eq!(seg.payload.len(), 20);
        assert_eq!(seg.wire_len, 100);
    }

    #[test]
    fn cut_inside_tcp_header_is_malformed_not_a_panic() {
        let ip = tcp_ipv4(b"");
        assert_eq!(
            decode(linktype::RAW, &ip[..30]).unwrap_err(),
            Skip::Malformed
        );
        assert_eq!(
            decode(linktype::ETHERNET, &[0u8; 5]).unwrap_err(),
            Skip::Malformed
        );
    }

    #[test]
    fn endless_vlan_tags_stop() {
        let mut frame = vec![0u8; 12];
        for _ in 0..100 {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
        }
        assert_eq!(
            decode(linktype::ETHERNET, &frame).unwrap_err(),
            Skip::Malformed
        );
    }
}
