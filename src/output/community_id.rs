//! Community ID v1 (corelight/community-id-spec): the flow hash Zeek, Suricata, Arkime and
//! Elastic put on their records, so a pinwatch record joins theirs.
//!
//! Contract: `1:` and the base64 of SHA-1 over seed (2 bytes, big-endian), the lower endpoint's
//! address, the higher one's, the IP protocol, a zero byte, then the lower one's port and the
//! higher one's (big-endian), "lower" ordering by address and then port, so both directions of
//! a connection hash alike. Written here (a dozen lines over the `sha1` crate) because the one
//! crate for it pulls in `anyhow` and covers protocols pinwatch never sees.

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// IANA protocol number of TCP, the only protocol pinwatch makes records for.
pub const IPPROTO_TCP: u8 = 6;

/// The address's bytes in a fixed buffer, and how many of them there are (4 or 16): no
/// allocation for the two addresses of every record.
fn octets(ip: &IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// The Community ID of a flow between `a` and `b` (either order), with the default seed 0
/// unless the deployment's other sensors use another.
pub fn community_id_v1(seed: u16, proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> String {
    let (a_buf, a_len) = octets(&a.0);
    let (b_buf, b_len) = octets(&b.0);
    let (a_ip, b_ip) = (&a_buf[..a_len], &b_buf[..b_len]);
    let ((lo_ip, lo_port), (hi_ip, hi_port)) = if (a_ip, a.1) <= (b_ip, b.1) {
        ((a_ip, a.1), (b_ip, b.1))
    } else {
        ((b_ip, b.1), (a_ip, a.1))
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(lo_ip);
    h.update(hi_ip);
    h.update([proto, 0]);
    h.update(lo_port.to_be_bytes());
    h.update(hi_port.to_be_bytes());
    // "1:" and 28 base64 characters.
    let mut out = String::with_capacity(30);
    out.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(h.finalize(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The spec's baseline vectors (the same values Zeek's and Suricata's tests check).
    #[test]
    fn spec_test_vectors() {
        let a = (v4("1.2.3.4"), 1122);
        let b = (v4("5.6.7.8"), 3344);
        for (seed, proto, want) in [
            (0, IPPROTO_TCP, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
            (0, 17, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
            (1, IPPROTO_TCP, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
            (1, 17, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
        ] {
            assert_eq!(community_id_v1(seed, proto, a, b), want);
            assert_eq!(
                community_id_v1(seed, proto, b, a),
                want,
                "direction must not matter"
            );
        }
    }

    /// IPv6 TCP, as corelight's reference implementation (Python `communityid` 1.5) computes it.
    #[test]
    fn ipv6_matches_the_reference_implementation() {
        let a: IpAddr = "fe80:1:203:405:607:809:a0b:c0d".parse().unwrap();
        let b: IpAddr = "fe80:1011:1213:1415:1617:1819:1a1b:1c1d".parse().unwrap();
        assert_eq!(
            community_id_v1(0, IPPROTO_TCP, (a, 1122), (b, 3344)),
            "1:x46CnGcE5e7seY/CGiklKh9QYug="
        );
    }

    #[test]
    fn ordering_uses_ports_when_addresses_are_equal() {
        let ip = v4("10.0.0.1");
        assert_eq!(
            community_id_v1(0, IPPROTO_TCP, (ip, 443), (ip, 50000)),
            community_id_v1(0, IPPROTO_TCP, (ip, 50000), (ip, 443))
        );
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let other: IpAddr = "fe80::2".parse().unwrap();
        assert_ne!(
            community_id_v1(0, IPPROTO_TCP, (v6, 1), (other, 2)),
            community_id_v1(0, IPPROTO_TCP, (v6, 2), (other, 1))
        );
    }
}
