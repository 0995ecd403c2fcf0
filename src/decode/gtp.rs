//! GTP-U version 1 (3GPP TS 29.281), the user plane of mobile networks, on UDP 2152.
//!
//! Contract: `parse` takes the UDP payload and returns the TEID and the user's IP packet (a
//! T-PDU), a view into the same bytes, bounded by the header's length field when that is
//! plausible (a capture cut short keeps what it has). Only G-PDU messages carry user traffic;
//! echo, error indication and end marker messages, GTP' (PT = 0) and other versions are
//! `tunnel_unsupported`. The optional sequence/N-PDU/next-type word is stepped over, then the
//! chain of extension headers (PDU session container and the like), at most
//! `MAX_EXTENSION_HEADERS` of them: each states its own length, so a chain is followed without
//! reading past the slice, and an endless one stops.

use super::Skip;
use super::tunnel::{Decapsulated, Inner, TunnelKind};

/// The IANA UDP port of GTP-U (both ends use it).
pub const PORT: u16 = 2152;
/// Real stacks send one or two extension headers (a PDU session container, maybe a UDP port);
/// more than this is a crafted chain.
pub const MAX_EXTENSION_HEADERS: usize = 8;

const HEADER_LEN: usize = 8;
const OPTIONAL_LEN: usize = 4;
const VERSION_1: u8 = 1;
const FLAG_PT: u8 = 0x10;
const FLAG_E: u8 = 0x04;
const FLAG_S: u8 = 0x02;
const FLAG_PN: u8 = 0x01;
/// Extension header lengths are counted in 4-byte units.
const EXTENSION_UNIT: usize = 4;

/// The GTP message type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType(pub u8);

impl MessageType {
    pub const ECHO_REQUEST: MessageType = MessageType(1);
    pub const ECHO_RESPONSE: MessageType = MessageType(2);
    pub const ERROR_INDICATION: MessageType = MessageType(26);
    pub const END_MARKER: MessageType = MessageType(254);
    /// A G-PDU: the payload is the user's packet.
    pub const G_PDU: MessageType = MessageType(255);
}

/// The next-extension-header type byte; zero ends the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionType(pub u8);

impl ExtensionType {
    pub const NONE: ExtensionType = ExtensionType(0);
    pub const PDU_SESSION_CONTAINER: ExtensionType = ExtensionType(0x85);
}

pub fn parse(data: &[u8]) -> Result<Decapsulated<'_>, Skip> {
    let header = data.get(..HEADER_LEN).ok_or(Skip::Malformed)?;
    let flags = header[0];
    if flags >> 5 != VERSION_1 || flags & FLAG_PT == 0 {
        return Err(Skip::TunnelUnsupported);
    }
    if MessageType(header[1]) != MessageType::G_PDU {
        return Err(Skip::TunnelUnsupported);
    }
    let stated = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let teid = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let end = (HEADER_LEN + stated).min(data.len());
    let message = &data[..end];
    let mut at = HEADER_LEN;
    if flags & (FLAG_E | FLAG_S | FLAG_PN) != 0 {
        let optional = message.get(at..at + OPTIONAL_LEN).ok_or(Skip::Malformed)?;
        let mut next = ExtensionType(optional[3]);
        at += OPTIONAL_LEN;
        if flags & FLAG_E == 0 {
            next = ExtensionType::NONE;
        }
        let mut count = 0;
        while next != ExtensionType::NONE {
            count += 1;
            if count > MAX_EXTENSION_HEADERS {
                return Err(Skip::TunnelUnsupported);
            }
            let units = usize::from(*message.get(at).ok_or(Skip::Malformed)?);
            if units == 0 {
                return Err(Skip::Malformed);
            }
            let len = units * EXTENSION_UNIT;
            let extension = message.get(at..at + len).ok_or(Skip::Malformed)?;
            next = ExtensionType(extension[len - 1]);
            at += len;
        }
    }
    let packet = message.get(at..).ok_or(Skip::Malformed)?;
    let ether_type = match packet.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => return Err(Skip::NotIp),
    };
    Ok(Decapsulated {
        kind: TunnelKind::GtpU,
        id: Some(teid),
        inner: Inner::EtherType(ether_type, packet),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpdu(flags: u8, teid: u32, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![flags, 255];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&teid.to_be_bytes());
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn a_pdu_session_container_is_stepped_over() {
        // seq 0, N-PDU 0, next = PDU session container (1 unit: length, 2 bytes, next = 0).
        let mut rest = vec![0, 0, 0, 0x85, 1, 0x10, 0x09, 0];
        rest.extend_from_slice(&[0x45, 0, 0, 20]);
        let pkt = gpdu(0x34, 0xdead_beef, &rest);
        let d = parse(&pkt).unwrap();
        assert_eq!(d.id, Some(0xdead_beef));
        assert_eq!(d.inner, Inner::EtherType(0x0800, &[0x45, 0, 0, 20]));
    }

    #[test]
    fn the_length_field_bounds_the_user_packet() {
        let mut pkt = gpdu(0x30, 7, &[0x60, 1, 2]);
        pkt.extend_from_slice(b"trailer");
        assert_eq!(
            parse(&pkt).unwrap().inner,
            Inner::EtherType(0x86dd, &[0x60, 1, 2])
        );
    }

    #[test]
    fn signalling_and_other_versions_are_not_followed() {
        let mut echo = gpdu(0x32, 0, &[0, 1, 0, 0]);
        echo[1] = MessageType::ECHO_REQUEST.0;
        assert_eq!(parse(&echo).unwrap_err(), Skip::TunnelUnsupported);
        let gtp_prime = gpdu(0x20, 1, &[0x45]);
        assert_eq!(parse(&gtp_prime).unwrap_err(), Skip::TunnelUnsupported);
        let v2 = gpdu(0x50, 1, &[0x45]);
        assert_eq!(parse(&v2).unwrap_err(), Skip::TunnelUnsupported);
    }

    #[test]
    fn hostile_extension_chains_stop() {
        // Zero-length extension: would loop in place.
        let zero = gpdu(0x34, 1, &[0, 0, 0, 0x85, 0, 0, 0, 0x85]);
        assert_eq!(parse(&zero).unwrap_err(), Skip::Malformed);
        // An extension claiming more than the message holds.
        let long = gpdu(0x34, 1, &[0, 0, 0, 0x85, 200, 0, 0, 0]);
        assert_eq!(parse(&long).unwrap_err(), Skip::Malformed);
        // An endless chain of one-unit extensions.
        let mut chain = vec![0, 0, 0, 0x85];
        for _ in 0..100 {
            chain.extend_from_slice(&[1, 0, 0, 0x85]);
        }
        assert_eq!(
            parse(&gpdu(0x34, 1, &chain)).unwrap_err(),
            Skip::TunnelUnsupported
        );
        // Truncated anywhere in the fixed header.
        let ok = gpdu(0x30, 1, &[0x45]);
        for cut in 0..HEADER_LEN {
            assert_eq!(parse(&ok[..cut]).unwrap_err(), Skip::Malformed);
        }
    }
}
