//! Cisco TrustSec metadata (CMD, EtherType 0x8909): the Security Group Tag a TrustSec switch
//! inserts between the MAC addresses and the frame's EtherType.
//!
//! Contract: `parse` takes the bytes after the 0x8909 EtherType and returns the SGT, the inner
//! EtherType and the bytes after it. The header is 8 bytes: version, length, an option word
//! (3-bit length, 13-bit type), the 16-bit SGT, then the EtherType of what follows. Only version
//! 1 with a single SGT option (the only form defined) is followed; anything else is
//! `tunnel_unsupported`.

use super::Skip;

const HEADER_LEN: usize = 8;
const VERSION_1: u8 = 1;
/// The length byte of the one defined form (one 8-byte unit).
const LENGTH_ONE_OPTION: u8 = 1;
const OPTION_TYPE_MASK: u16 = 0x1fff;

/// The CMD option type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionType(pub u16);

impl OptionType {
    pub const SGT: OptionType = OptionType(1);
}

/// A TrustSec header taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct Tagged<'a> {
    pub sgt: u16,
    pub ether_type: u16,
    pub rest: &'a [u8],
}

pub fn parse(data: &[u8]) -> Result<Tagged<'_>, Skip> {
    let h = data.get(..HEADER_LEN).ok_or(Skip::Malformed)?;
    let option = OptionType(u16::from_be_bytes([h[2], h[3]]) & OPTION_TYPE_MASK);
    if h[0] != VERSION_1 || h[1] != LENGTH_ONE_OPTION || option != OptionType::SGT {
        return Err(Skip::TunnelUnsupported);
    }
    Ok(Tagged {
        sgt: u16::from_be_bytes([h[4], h[5]]),
        ether_type: u16::from_be_bytes([h[6], h[7]]),
        rest: &data[HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sgt_and_inner_ethertype_are_read() {
        let pkt = [1, 1, 0, 1, 0x00, 0x11, 0x08, 0x00, 0x45];
        let t = parse(&pkt).unwrap();
        assert_eq!((t.sgt, t.ether_type, t.rest), (17, 0x0800, &[0x45][..]));
    }

    #[test]
    fn other_versions_and_cut_headers_are_refused() {
        assert_eq!(
            parse(&[2, 1, 0, 1, 0, 1, 8, 0]).unwrap_err(),
            Skip::TunnelUnsupported
        );
        assert_eq!(
            parse(&[1, 2, 0, 1, 0, 1, 8, 0]).unwrap_err(),
            Skip::TunnelUnsupported
        );
        assert_eq!(
            parse(&[1, 1, 0, 2, 0, 1, 8, 0]).unwrap_err(),
            Skip::TunnelUnsupported
        );
        for cut in 0..HEADER_LEN {
            assert_eq!(
                parse(&[1, 1, 0, 1, 0, 1, 8, 0][..cut]).unwrap_err(),
                Skip::Malformed
            );
        }
    }
}
