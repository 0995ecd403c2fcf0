//! MPLS label stacks (RFC 3032) under EtherType 0x8847 (unicast) and 0x8848 (multicast), and
//! what follows the bottom of the stack: IPv4, IPv6, or an Ethernet pseudo-wire (RFC 4448) whose
//! control word (RFC 4385) says so.
//!
//! Contract: `parse` takes the bytes after the EtherType and returns a view of the payload. It
//! reads 4-byte label entries until one has the bottom-of-stack bit, at most `MAX_LABELS` of
//! them: a longer stack is `tunnel_too_deep`, a stack the frame ends inside is `malformed`.
//! Nothing in an MPLS header names the payload; like Linux and Wireshark, the first nibble after
//! the stack decides it: 4 and 6 are IP, 0 is the pseudo-wire control word (an Ethernet frame
//! follows it), 1 is the associated channel (OAM, `tunnel_unsupported`). Anything else would be
//! an Ethernet pseudo-wire without a control word, which cannot be told from noise: it is
//! `tunnel_unsupported` too, counted and not guessed at.

use super::Skip;

/// Label entries followed down to the bottom of the stack. Segment-routing stacks run to ten or
/// so; anything longer is a crafted packet.
pub const MAX_LABELS: usize = 16;

const ENTRY_LEN: usize = 4;
const BOTTOM_OF_STACK: u8 = 0x01;
const CONTROL_WORD_LEN: usize = 4;

/// The first nibble after the bottom of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstNibble(pub u8);

impl FirstNibble {
    /// The pseudo-wire control word (RFC 4385: its first nibble is zero).
    pub const CONTROL_WORD: FirstNibble = FirstNibble(0);
    /// The generic associated channel header (RFC 5586).
    pub const ASSOCIATED_CHANNEL: FirstNibble = FirstNibble(1);
    pub const IPV4: FirstNibble = FirstNibble(4);
    pub const IPV6: FirstNibble = FirstNibble(6);
}

/// What the bottom of the label stack leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An IP packet, named by the EtherType it would have had.
    Ip(u16, &'a [u8]),
    /// An Ethernet frame carried by a pseudo-wire, its control word stepped over.
    Ethernet(&'a [u8]),
}

pub fn parse(data: &[u8]) -> Result<Payload<'_>, Skip> {
    let mut at = 0;
    let mut labels = 0;
    loop {
        let entry = data.get(at..at + ENTRY_LEN).ok_or(Skip::Malformed)?;
        labels += 1;
        at += ENTRY_LEN;
        if entry[2] & BOTTOM_OF_STACK != 0 {
            break;
        }
        if labels == MAX_LABELS {
            return Err(Skip::TunnelTooDeep);
        }
    }
    let rest = &data[at..];
    let nibble = FirstNibble(rest.first().ok_or(Skip::Malformed)? >> 4);
    match nibble {
        FirstNibble::IPV4 => Ok(Payload::Ip(0x0800, rest)),
        FirstNibble::IPV6 => Ok(Payload::Ip(0x86dd, rest)),
        FirstNibble::CONTROL_WORD => rest
            .get(CONTROL_WORD_LEN..)
            .map(Payload::Ethernet)
            .ok_or(Skip::Malformed),
        _ => Err(Skip::TunnelUnsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: u32, bottom: bool) -> [u8; 4] {
        ((label << 12) | (u32::from(bottom) << 8) | 64).to_be_bytes()
    }

    #[test]
    fn a_stack_of_three_leads_to_ip() {
        let mut pkt = Vec::new();
        pkt.extend_from_slice(&entry(100, false));
        pkt.extend_from_slice(&entry(200, false));
        pkt.extend_from_slice(&entry(300, true));
        pkt.extend_from_slice(&[0x45, 0]);
        assert_eq!(parse(&pkt).unwrap(), Payload::Ip(0x0800, &[0x45, 0]));
    }

    #[test]
    fn a_control_word_means_an_ethernet_pseudo_wire() {
        let mut pkt = entry(16, true).to_vec();
        pkt.extend_from_slice(&[0, 0, 0, 9]);
        pkt.extend_from_slice(b"frame");
        assert_eq!(parse(&pkt).unwrap(), Payload::Ethernet(b"frame"));
    }

    #[test]
    fn hostile_stacks_are_refused() {
        // No bottom of stack before the frame ends.
        let open: Vec<u8> = (0..5).flat_map(|l| entry(l, false)).collect();
        assert_eq!(parse(&open).unwrap_err(), Skip::Malformed);
        // No bottom of stack within the limit.
        let deep: Vec<u8> = (0..1000).flat_map(|l| entry(l, false)).collect();
        assert_eq!(parse(&deep).unwrap_err(), Skip::TunnelTooDeep);
        // The deepest stack allowed still leads to its payload.
        let mut max: Vec<u8> = (1..MAX_LABELS as u32)
            .flat_map(|l| entry(l, false))
            .collect();
        max.extend_from_slice(&entry(99, true));
        max.push(0x60);
        assert_eq!(parse(&max).unwrap(), Payload::Ip(0x86dd, &[0x60]));
        // Nothing after the stack; a cut control word; OAM; no control word.
        assert_eq!(parse(&entry(1, true)).unwrap_err(), Skip::Malformed);
        let mut cut = entry(1, true).to_vec();
        cut.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&cut).unwrap_err(), Skip::Malformed);
        for first in [0x10, 0x02 << 4, 0xa0] {
            let mut other = entry(1, true).to_vec();
            other.push(first);
            assert_eq!(parse(&other).unwrap_err(), Skip::TunnelUnsupported);
        }
    }
}
