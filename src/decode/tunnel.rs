//! Tunnel headers that mirror and overlay traffic arrives in: VXLAN (RFC 7348), GRE (RFC 2784 and
//! 2890) carrying IP or Ethernet, and ERSPAN types I, II and III (draft-foschiano-erspan) inside
//! GRE; the UDP tunnels are told apart by destination port here (Geneve and GTP-U have their own
//! modules). Each parser takes the bytes after the outer IP header, checks every length it reads
//! and returns where the inner packet starts and what it is. The caller bounds the nesting.

use std::net::IpAddr;

use etherparse::{IpNumber, UdpSlice};

use super::{Skip, geneve, gtp};

/// UDP destination ports taken for VXLAN: the IANA port, and the one Linux uses when
/// `ip link add ... type vxlan` is given no `dstport`.
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];
/// At most this many tunnel layers are followed; a packet nested deeper is skipped as
/// `tunnel_too_deep` (no real network stacks more than two or three).
pub const MAX_TUNNEL_LAYERS: u8 = 4;

const GRE_C: u8 = 0x80;
const GRE_R: u8 = 0x40;
const GRE_K: u8 = 0x20;
const GRE_S: u8 = 0x10;
const GRE_VERSION_MASK: u8 = 0x07;
const GRE_TEB: u16 = 0x6558;
const GRE_ERSPAN_II: u16 = 0x88be;
const GRE_ERSPAN_III: u16 = 0x22eb;

/// The kind of tunnel a packet arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    Vxlan,
    Gre,
    /// GRE protocol 0x88BE without a sequence number: the Ethernet frame follows at once.
    ErspanI,
    ErspanII,
    ErspanIII,
    /// Geneve (UDP 6081).
    Geneve,
    /// GTP-U G-PDUs (UDP 2152).
    GtpU,
    /// An IP packet right inside another (IP protocol 4 or 41: IPv4 or IPv6 in either).
    IpInIp,
}

impl TunnelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Gre => "gre",
            TunnelKind::ErspanI => "erspan_i",
            TunnelKind::ErspanII => "erspan_ii",
            TunnelKind::ErspanIII => "erspan_iii",
            TunnelKind::Geneve => "geneve",
            TunnelKind::GtpU => "gtp_u",
            TunnelKind::IpInIp => "ip_in_ip",
        }
    }
}

/// The innermost tunnel a segment was carried in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// VXLAN or Geneve VNI (24 bits), GRE key (absent when the header has none), ERSPAN session
    /// id (10 bits; absent for type I), GTP-U TEID of this packet; absent for IP in IP.
    pub id: Option<u32>,
    /// Source and destination of the IP header right outside this tunnel.
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// Tunnel layers the segment was inside, this one included (1 = not nested).
    pub layers: u8,
}

impl Tunnel {
    /// What separates one tunnel's inner address space from another's in the flow table.
    pub fn key(&self) -> TunnelKey {
        // A GTP-U TEID names the receiving end: uplink and downlink of one bearer carry different
        // ones, so it cannot keep the two directions of a connection together.
        let id = match self.kind {
            TunnelKind::GtpU => None,
            _ => self.id,
        };
        TunnelKey {
            kind: self.kind,
            id,
        }
    }
}

/// The part of a [`Tunnel`] that goes into a flow key: the outer endpoints do not, because the two
/// directions of one overlay connection travel between the endpoints in opposite directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelKey {
    pub kind: TunnelKind,
    pub id: Option<u32>,
}

/// What a tunnel header encloses.
#[derive(Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// An Ethernet frame (destination MAC first).
    Ethernet(&'a [u8]),
    /// Something named by an EtherType with no Ethernet header around it (GRE carrying IP).
    EtherType(u16, &'a [u8]),
}

/// A tunnel header taken apart: its kind and id, and what follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub kind: TunnelKind,
    pub id: Option<u32>,
    pub inner: Inner<'a>,
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A UDP datagram: `Ok(None)` when it is not addressed to a tunnel port (an ordinary UDP packet).
pub fn udp(datagram: &[u8]) -> Result<Option<Decapsulated<'_>>, Skip> {
    let Some(dport) = be16(datagram, 2) else {
        return Ok(None);
    };
    let is_tunnel = VXLAN_PORTS.contains(&dport) || dport == geneve::PORT || dport == gtp::PORT;
    if !is_tunnel {
        return Ok(None);
    }
    // The UDP length bounds the payload when it is plausible; a capture cut short keeps what it has.
    let udp = UdpSlice::from_slice_lax(datagram).map_err(|_| Skip::Malformed)?;
    let payload = udp.payload();
    match dport {
        geneve::PORT => geneve::parse(payload),
        gtp::PORT => gtp::parse(payload),
        _ => vxlan(payload),
    }
    .map(Some)
}

/// An IP packet carried right after an outer IP header (RFC 2003 IPv4 in IPv4, RFC 4213 IPv6 in
/// IPv4 as `sit` sends it, RFC 2473 either in IPv6 as `ip6tnl` sends it). There is no header of
/// its own: the outer header's protocol number says which IP version follows.
pub fn ip_in_ip(protocol: IpNumber, payload: &[u8]) -> Decapsulated<'_> {
    let ether_type = if protocol == IpNumber::IPV6 {
        0x86dd
    } else {
        0x0800
    };
    Decapsulated {
        kind: TunnelKind::IpInIp,
        id: None,
        inner: Inner::EtherType(ether_type, payload),
    }
}

/// The 8-byte VXLAN header: flags (I = 0x08 says the VNI is valid), 3 reserved bytes, the 24-bit
/// VNI and a reserved byte; an Ethernet frame follows. Other flag bits (VXLAN-GBP's G and its
/// policy id) are ignored, as RFC 7348 asks of receivers.
fn vxlan(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let header = data.get(..8).ok_or(Skip::Malformed)?;
    if header[0] & 0x08 == 0 {
        return Err(Skip::TunnelUnsupported);
    }
    let vni = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    Ok(Decapsulated {
        kind: TunnelKind::Vxlan,
        id: Some(vni),
        inner: Inner::Ethernet(&data[8..]),
    })
}

/// A GRE packet. Version 0 only (version 1 is PPTP's), and no RFC 1701 source routing, as Linux
/// accepts; the optional checksum (4 bytes with its reserved half), key and sequence number are
/// stepped over in that order.
pub fn gre(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let flags = *data.first().ok_or(Skip::Malformed)?;
    let version = *data.get(1).ok_or(Skip::Malformed)? & GRE_VERSION_MASK;
    let protocol = be16(data, 2).ok_or(Skip::Malformed)?;
    if version != 0 || flags & GRE_R != 0 {
        return Err(Skip::TunnelUnsupported);
    }
    let mut at = 4;
    if flags & GRE_C != 0 {
        at += 4;
    }
    let key = if flags & GRE_K != 0 {
        let k = be32(data, at).ok_or(Skip::Malformed)?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let has_seq = flags & GRE_S != 0;
    if has_seq {
        at += 4;
    }
    let rest = data.get(at..).ok_or(Skip::Malformed)?;
    match protocol {
        GRE_TEB => Ok(Decapsulated {
            kind: TunnelKind::Gre,
            id: key,
            inner: Inner::Ethernet(rest),
        }),
        GRE_ERSPAN_II if !has_seq => Ok(Decapsulated {
            kind: TunnelKind::ErspanI,
            id: None,
            inner: Inner::Ethernet(rest),
        }),
        GRE_ERSPAN_II => erspan_ii(rest),
        GRE_ERSPAN_III => erspan_iii(rest),
        other => Ok(Decapsulated {
            kind: TunnelKind::Gre,
            id: key,
            inner: Inner::EtherType(other, rest),
        }),
    }
}

/// Version (4 bits), VLAN (12), CoS (3), encapsulation (2), truncated (1), session id (10): the
/// first word of ERSPAN types II and III. Returns (version, session id).
fn erspan_word0(data: &[u8]) -> Result<(u8, u32), Skip> {
    let w = be32(data, 0).ok_or(Skip::Malformed)?;
    Ok(((w >> 28) as u8, w & 0x3ff))
}

/// ERSPAN type II: 8 bytes (the first word, then 12 reserved bits and a 20-bit index), then the
/// mirrored Ethernet frame.
fn erspan_ii(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let (version, session) = erspan_word0(data)?;
    if version != 1 {
        return Err(Skip::TunnelUnsupported);
    }
    let frame = data.get(8..).ok_or(Skip::Malformed)?;
    Ok(Decapsulated {
        kind: TunnelKind::ErspanII,
        id: Some(session),
        inner: Inner::Ethernet(frame),
    })
}

/// ERSPAN type III: 12 bytes (the first word, a timestamp, then SGT, P, frame type, hardware id,
/// direction, granularity and O), plus an 8-byte platform-specific subheader when O is set. Frame
/// type 0 is Ethernet, 2 is a bare IP packet.
fn erspan_iii(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let (version, session) = erspan_word0(data)?;
    if version != 2 {
        return Err(Skip::TunnelUnsupported);
    }
    let word2 = be32(data, 8).ok_or(Skip::Malformed)?;
    let frame_type = (word2 >> 10) & 0x1f;
    let optional = word2 & 1 != 0;
    let start = if optional { 20 } else { 12 };
    let rest = data.get(start..).ok_or(Skip::Malformed)?;
    let inner = match frame_type {
        0 => Inner::Ethernet(rest),
        2 => match rest.first().map(|b| b >> 4) {
            Some(4) => Inner::EtherType(0x0800, rest),
            Some(6) => Inner::EtherType(0x86dd, rest),
            _ => return Err(Skip::Malformed),
        },
        _ => return Err(Skip::TunnelUnsupported),
    };
    Ok(Decapsulated {
        kind: TunnelKind::ErspanIII,
        id: Some(session),
        inner,
    })
}

/// Hand-built tunnel headers around one inner TCP segment, each checked through the public
/// `decode` entry point (the way replay sees them), plus hostile variants.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Skip, decode, linktype};

    const INNER_SRC: [u8; 4] = [10, 77, 1, 11];
    const INNER_DST: [u8; 4] = [10, 77, 0, 1];

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0xfd, 0x77, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0x77, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// The inner packet every tunnel below carries: 10.77.1.11:12345 -> 10.77.0.1:8080, "hello".
    fn inner_ip() -> Vec<u8> {
        let mut tcp = vec![
            0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ];
        tcp.extend_from_slice(b"hello");
        ipv4(6, INNER_SRC, INNER_DST, &tcp)
    }

    fn ethernet(ether_type: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(id) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&id.to_be_bytes());
        }
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0xc3, 0x50];
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn vxlan(flags: u8, vni: u32, frame: &[u8]) -> Vec<u8> {
        let v = vni.to_be_bytes();
        let mut h = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
        h.extend_from_slice(frame);
        h
    }

    /// GRE with the optional fields present as asked.
    fn gre(
        protocol: u16,
        csum: bool,
        key: Option<u32>,
        seq: Option<u32>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut flags = 0u8;
        if csum {
            flags |= GRE_C;
        }
        if key.is_some() {
            flags |= GRE_K;
        }
        if seq.is_some() {
            flags |= GRE_S;
        }
        let mut g = vec![flags, 0];
        g.extend_from_slice(&protocol.to_be_bytes());
        if csum {
            g.extend_from_slice(&[0xab, 0xcd, 0, 0]);
        }
        if let Some(k) = key {
            g.extend_from_slice(&k.to_be_bytes());
        }
        if let Some(s) = seq {
            g.extend_from_slice(&s.to_be_bytes());
        }
        g.extend_from_slice(payload);
        g
    }

    fn erspan_ii(session: u32, frame: &[u8]) -> Vec<u8> {
        // version 1, VLAN 0x123, CoS/En/T zero, then the index.
        let w0 = (1u32 << 28) | (0x123 << 16) | (session & 0x3ff);
        let mut h = w0.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0, 0, 7]);
        h.extend_from_slice(frame);
        h
    }

    fn erspan_iii(session: u32, frame_type: u32, subheader: bool, frame: &[u8]) -> Vec<u8> {
        let w0 = (2u32 << 28) | (session & 0x3ff);
        let w2 = (frame_type << 10) | (5 << 4) | u32::from(subheader);
        let mut h = w0.to_be_bytes().to_vec();
        h.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        h.extend_from_slice(&w2.to_be_bytes());
        if subheader {
            h.extend_from_slice(&[0xff; 8]);
        }
        h.extend_from_slice(frame);
        h
    }

    fn underlay(proto: u8, payload: &[u8]) -> Vec<u8> {
        // The underlay frame has its own VLAN tag, which must not leak into the inner segment.
        ethernet(
            0x0800,
            Some(100),
            &ipv4(proto, [10, 77, 9, 1], [10, 77, 9, 100], payload),
        )
    }

    fn decoded(frame: &[u8]) -> crate::decode::Segment<'_> {
        decode(linktype::ETHERNET, frame).expect("decodes")
    }

    fn assert_inner(seg: &crate::decode::Segment<'_>) {
        assert_eq!(seg.src.to_string(), "10.77.1.11");
        assert_eq!(seg.dst.to_string(), "10.77.0.1");
        assert_eq!((seg.sport, seg.dport), (12345, 8080));
        assert_eq!(seg.payload, b"hello");
    }

    #[test]
    fn vxlan_on_both_ports_gives_the_inner_segment_its_vni_and_inner_vlan() {
        for port in VXLAN_PORTS {
            let inner = ethernet(0x0800, Some(7), &inner_ip());
            let frame = underlay(17, &udp(port, &vxlan(0x08, 0x00ab_cdef, &inner)));
            let seg = decoded(&frame);
            assert_inner(&seg);
            assert_eq!(seg.vlans(), &[7], "only the inner frame's tag is kept");
            let t = seg.tunnel.expect("tunnel");
            assert_eq!(
                (t.kind, t.id, t.layers),
                (TunnelKind::Vxlan, Some(0xab_cdef), 1)
            );
            assert_eq!(t.outer_src.to_string(), "10.77.9.1");
            assert_eq!(t.outer_dst.to_string(), "10.77.9.100");
        }
        // Another UDP port is just UDP; VXLAN without the I flag is not followed.
        let inner = ethernet(0x0800, None, &inner_ip());
        let other = underlay(17, &udp(4790, &vxlan(0x08, 1, &inner)));
        assert_eq!(
            decode(linktype::ETHERNET, &other).unwrap_err(),
            Skip::NotTcp
        );
        let no_i = underlay(17, &udp(4789, &vxlan(0x00, 1, &inner)));
        assert_eq!(
            decode(linktype::ETHERNET, &no_i).unwrap_err(),
            Skip::TunnelUnsupported
        );
    }

    #[test]
    fn gre_optional_fields_are_stepped_over_for_every_combination() {
        let ip = inner_ip();
        for csum in [false, true] {
            for key in [None, Some(0xfeed_beef)] {
                for seq in [None, Some(9)] {
                    let frame = underlay(47, &gre(0x0800, csum, key, seq, &ip));
                    let seg = decoded(&frame);
                    assert_inner(&seg);
                    assert!(seg.vlans().is_empty());
                    let t = seg.tunnel.unwrap();
                    assert_eq!(
                        (t.kind, t.id),
                        (TunnelKind::Gre, key),
                        "csum {csum} seq {seq:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn gre_carries_ipv6_and_ethernet_over_an_ipv6_underlay() {
        let mut tcp = vec![
            0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        tcp.extend_from_slice(b"v6");
        let inner6 = ipv6(6, &tcp);
        let frame = ethernet(
            0x86dd,
            None,
            &ipv6(47, &gre(0x86dd, false, Some(5), None, &inner6)),
        );
        let seg = decoded(&frame);
        assert_eq!(seg.payload, b"v6");
        assert_eq!(seg.tunnel.unwrap().outer_src.to_string(), "fd77:9::1");

        let bridged = ethernet(0x0800, None, &inner_ip());
        let frame = ethernet(
            0x86dd,
            None,
            &ipv6(47, &gre(0x6558, true, Some(66), Some(1), &bridged)),
        );
        let seg = decoded(&frame);
        assert_inner(&seg);
        assert_eq!(seg.tunnel.unwrap().id, Some(66));
    }

    #[test]
    fn gre_version_1_and_source_routing_are_not_followed() {
        let mut pptp = gre(0x0800, false, Some(1), None, &inner_ip());
        pptp[1] |= 1;
        assert_eq!(
            decode(linktype::ETHERNET, &underlay(47, &pptp)).unwrap_err(),
            Skip::TunnelUnsupported
        );
        let mut routed = gre(0x0800, false, None, None, &inner_ip());
        routed[0] |= GRE_R;
        assert_eq!(
            decode(linktype::ETHERNET, &underlay(47, &routed)).unwrap_err(),
            Skip::TunnelUnsupported
        );
        // An EtherType that is not IP inside GRE (ARP) is simply not IP; MPLS in GRE is followed.
        let arp = gre(0x0806, false, None, None, &inner_ip());
        assert_eq!(
            decode(linktype::ETHERNET, &underlay(47, &arp)).unwrap_err(),
            Skip::NotIp
        );
        let mut labelled = vec![0x00, 0x06, 0x41, 0x40]; // label 100, bottom of stack, TTL 64
        labelled.extend(inner_ip());
        let mpls = gre(0x8847, false, None, None, &labelled);
        assert_inner(&decoded(&underlay(47, &mpls)));
    }

    #[test]
    fn erspan_types_give_their_session_ids() {
        let frame = ethernet(0x0800, None, &inner_ip());
        let ii = underlay(
            47,
            &gre(0x88be, false, None, Some(3), &erspan_ii(0x3ff, &frame)),
        );
        let t = decoded(&ii).tunnel.unwrap();
        assert_eq!((t.kind, t.id), (TunnelKind::ErspanII, Some(0x3ff)));

        let i = underlay(47, &gre(0x88be, false, None, None, &frame));
        let t = decoded(&i).tunnel.unwrap();
        assert_eq!((t.kind, t.id), (TunnelKind::ErspanI, None));

        for subheader in [false, true] {
            let iii = underlay(
                47,
                &gre(
                    0x22eb,
                    false,
                    None,
                    Some(3),
                    &erspan_iii(513, 0, subheader, &frame),
                ),
            );
            let seg = decoded(&iii);
            assert_inner(&seg);
            let t = seg.tunnel.unwrap();
            assert_eq!(
                (t.kind, t.id),
                (TunnelKind::ErspanIII, Some(513)),
                "O bit {subheader}"
            );
        }
        // Frame type 2: a bare IP packet after the header.
        let bare = underlay(
            47,
            &gre(
                0x22eb,
                false,
                None,
                Some(3),
                &erspan_iii(1, 2, false, &inner_ip()),
            ),
        );
        assert_inner(&decoded(&bare));
    }

    #[test]
    fn erspan_with_the_wrong_version_or_frame_type_is_not_followed() {
        let frame = ethernet(0x0800, None, &inner_ip());
        let mut wrong = erspan_ii(1, &frame);
        wrong[0] = 0x20 | (wrong[0] & 0x0f); // version 2 under protocol 0x88BE
        let pkt = underlay(47, &gre(0x88be, false, None, Some(1), &wrong));
        assert_eq!(
            decode(linktype::ETHERNET, &pkt).unwrap_err(),
            Skip::TunnelUnsupported
        );
        let ft = underlay(
            47,
            &gre(
                0x22eb,
                false,
                None,
                Some(1),
                &erspan_iii(1, 3, false, &frame),
            ),
        );
        assert_eq!(
            decode(linktype::ETHERNET, &ft).unwrap_err(),
            Skip::TunnelUnsupported
        );
    }

    #[test]
    fn every_truncation_of_a_tunnelled_frame_is_an_error_or_a_shorter_segment() {
        let inner = ethernet(0x0800, None, &inner_ip());
        let frames = [
            underlay(17, &udp(4789, &vxlan(0x08, 42, &inner))),
            underlay(47, &gre(0x6558, true, Some(7), Some(1), &inner)),
            underlay(
                47,
                &gre(0x88be, false, None, Some(1), &erspan_ii(3, &inner)),
            ),
            underlay(
                47,
                &gre(
                    0x22eb,
                    false,
                    None,
                    Some(1),
                    &erspan_iii(3, 0, true, &inner),
                ),
            ),
        ];
        for frame in &frames {
            let header_end = frame.len() - 5; // the inner payload "hello" is last
            for cut in 0..frame.len() {
                // Outer IP and UDP lengths still claim the whole packet, as after a snap length.
                match decode(linktype::ETHERNET, &frame[..cut]) {
                    Ok(seg) => {
                        assert!(
                            cut >= header_end,
                            "decoded a segment from {cut} of {} bytes",
                            frame.len()
                        );
                        assert_eq!(seg.payload, &b"hello"[..cut - header_end]);
                        assert_eq!(seg.wire_len, 5, "the inner IP length still says 5 bytes");
                    }
                    Err(e) => assert!(cut < header_end, "cut {cut}: {e:?}"),
                }
            }
        }
        // A cut inside the GRE key is malformed, not something else.
        let gre_start = 14 + 4 + 20;
        assert_eq!(
            decode(linktype::ETHERNET, &frames[1][..gre_start + 9]).unwrap_err(),
            Skip::Malformed
        );
    }

    #[test]
    fn nesting_is_followed_four_deep_and_refused_beyond() {
        let build = |depth: usize| {
            let mut pkt = inner_ip();
            for _ in 0..depth {
                pkt = ipv4(
                    47,
                    [10, 77, 9, 1],
                    [10, 77, 9, 2],
                    &gre(0x0800, false, Some(1), None, &pkt),
                );
            }
            pkt
        };
        let four = build(4);
        let seg = decode(linktype::RAW, &four).unwrap();
        assert_inner(&seg);
        assert_eq!(seg.tunnel.unwrap().layers, 4);
        assert_eq!(
            decode(linktype::RAW, &build(5)).unwrap_err(),
            Skip::TunnelTooDeep
        );
        // A nesting bomb (each layer only 28 bytes) is refused after the limit, not followed.
        assert_eq!(
            decode(linktype::RAW, &build(2000)).unwrap_err(),
            Skip::TunnelTooDeep
        );
        // Mixed kinds count alike: VXLAN inside GRE inside VXLAN...
        let mut pkt = ethernet(0x0800, None, &inner_ip());
        for i in 0..5 {
            let ip = if i % 2 == 0 {
                ipv4(
                    17,
                    [10, 77, 9, 1],
                    [10, 77, 9, 2],
                    &udp(4789, &vxlan(0x08, i, &pkt)),
                )
            } else {
                ipv4(
                    47,
                    [10, 77, 9, 1],
                    [10, 77, 9, 2],
                    &gre(0x6558, false, Some(i), None, &pkt),
                )
            };
            pkt = ethernet(0x0800, None, &ip);
        }
        assert_eq!(
            decode(linktype::ETHERNET, &pkt).unwrap_err(),
            Skip::TunnelTooDeep
        );
    }

    #[test]
    fn innermost_tunnel_is_reported() {
        // ERSPAN mirroring a VXLAN overlay: the VNI scopes the inner addresses.
        let overlay = ethernet(0x0800, None, &inner_ip());
        let vx = ethernet(
            0x0800,
            None,
            &ipv4(
                17,
                [10, 77, 8, 1],
                [10, 77, 8, 2],
                &udp(4789, &vxlan(0x08, 42, &overlay)),
            ),
        );
        let frame = underlay(47, &gre(0x88be, false, None, Some(1), &erspan_ii(9, &vx)));
        let seg = decoded(&frame);
        assert_inner(&seg);
        let t = seg.tunnel.unwrap();
        assert_eq!((t.kind, t.id, t.layers), (TunnelKind::Vxlan, Some(42), 2));
        assert_eq!(t.outer_src.to_string(), "10.77.8.1");
    }
}
