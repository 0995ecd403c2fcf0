//! Geneve (RFC 8926), as cloud load balancers and traffic mirrors send it on UDP 6081.
//!
//! Contract: `parse` takes the UDP payload and returns the VNI and the inner packet, a view into
//! the same bytes. It reads the fixed 8-byte header and steps over the variable options whose
//! length the header states (at most 63 four-byte words, so a packet cannot ask for more than
//! 252 bytes); it never reads past the slice. Version 0 is the only one defined; any other is
//! `tunnel_unsupported`, as is a protocol type that is neither Ethernet nor IP.

use super::Skip;
use super::tunnel::{Decapsulated, Inner, TunnelKind};

/// The IANA UDP destination port of Geneve.
pub const PORT: u16 = 6081;

const HEADER_LEN: usize = 8;
/// Options are counted in 4-byte words in the low 6 bits of the first byte.
const OPTION_WORD: usize = 4;

/// The Geneve protocol type field: an EtherType naming what follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolType(pub u16);

impl ProtocolType {
    /// Transparent Ethernet bridging: an Ethernet frame follows (what AWS Gateway Load Balancer
    /// and Linux `type geneve` send).
    pub const ETHERNET: ProtocolType = ProtocolType(0x6558);
    pub const IPV4: ProtocolType = ProtocolType(0x0800);
    pub const IPV6: ProtocolType = ProtocolType(0x86dd);
}

/// Takes one Geneve header apart. The critical-options bit (C) is not honoured: a receiver that
/// terminates the tunnel must drop what it does not understand, but a passive sensor reads the
/// inner packet either way, and no option changes where that packet starts.
pub fn parse(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let header = data.get(..HEADER_LEN).ok_or(Skip::Malformed)?;
    let version = header[0] >> 6;
    if version != 0 {
        return Err(Skip::TunnelUnsupported);
    }
    let options = usize::from(header[0] & 0x3f) * OPTION_WORD;
    let protocol = ProtocolType(u16::from_be_bytes([header[2], header[3]]));
    let vni = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    let rest = data.get(HEADER_LEN + options..).ok_or(Skip::Malformed)?;
    let inner = match protocol {
        ProtocolType::ETHERNET => Inner::Ethernet(rest),
        ProtocolType::IPV4 | ProtocolType::IPV6 => Inner::EtherType(protocol.0, rest),
        _ => return Err(Skip::TunnelUnsupported),
    };
    Ok(Decapsulated {
        kind: TunnelKind::Geneve,
        id: Some(vni),
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first: u8, protocol: u16, vni: u32) -> Vec<u8> {
        let v = vni.to_be_bytes();
        let p = protocol.to_be_bytes();
        vec![first, 0, p[0], p[1], v[1], v[2], v[3], 0]
    }

    #[test]
    fn options_are_stepped_over_and_the_vni_read() {
        let mut pkt = header(2, 0x6558, 0x12_3456);
        pkt.extend_from_slice(&[0xaa; 8]); // two option words
        pkt.extend_from_slice(b"frame");
        let d = parse(&pkt).unwrap();
        assert_eq!(d.id, Some(0x12_3456));
        assert_eq!(d.inner, Inner::Ethernet(b"frame"));
    }

    #[test]
    fn ip_payloads_are_named_by_their_ethertype() {
        let mut pkt = header(0, 0x86dd, 1);
        pkt.push(0x60);
        assert_eq!(
            parse(&pkt).unwrap().inner,
            Inner::EtherType(0x86dd, &[0x60])
        );
    }

    #[test]
    fn hostile_headers_are_refused_without_reading_past_the_slice() {
        // Options longer than the packet.
        let pkt = header(0x3f, 0x6558, 1);
        assert_eq!(parse(&pkt).unwrap_err(), Skip::Malformed);
        assert_eq!(parse(&pkt[..7]).unwrap_err(), Skip::Malformed);
        // Version 1 and an unknown protocol type are not followed.
        assert_eq!(
            parse(&header(0x40, 0x6558, 1)).unwrap_err(),
            Skip::TunnelUnsupported
        );
        assert_eq!(
            parse(&header(0, 0x8847, 1)).unwrap_err(),
            Skip::TunnelUnsupported
        );
    }
}
