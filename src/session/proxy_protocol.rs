//! The PROXY protocol header (haproxy's proxy-protocol.txt, versions 1 and 2) that a load
//! balancer (haproxy `send-proxy`, AWS NLB, nginx `proxy_protocol on`...) writes at the start of
//! the connection it opens to the server, naming the client it accepted the connection from.
//!
//! Contract: `parse` takes the first bytes of the client's stream and says whether they hold a
//! whole header (and how long it is), need more bytes, or are not a PROXY header. It reads only
//! inside the slice and never holds more than `MAX_HEADER_LEN` bytes: version 1 lines are at most
//! `MAX_V1_LEN` bytes by definition, and a version 2 header longer than `MAX_HEADER_LEN` (its TLVs
//! can run to 64 KiB) is reported as not understood instead of being buffered. Addresses come
//! from the address block (v2) or the text fields (v1), which must parse as IP addresses and
//! ports; TLVs are stepped over unread. `LOCAL` (v2) and `UNKNOWN` (v1) headers have no
//! addresses: the balancer's health checks send them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The version 1 line's start.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, CRLF included (TCP6 with the longest addresses and ports).
pub const MAX_V1_LEN: usize = 107;
/// The longest header held while it is parsed: larger version 2 headers (many or long TLVs) are
/// not followed, so a connection never buffers 64 KiB for them.
pub const MAX_HEADER_LEN: usize = 2048;

const V2_FIXED_LEN: usize = 16;
const V2_VERSION: u8 = 0x20;

/// The version 2 command (low nibble of the 13th byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(pub u8);

impl Command {
    /// The balancer's own connection (a health check): no client addresses.
    pub const LOCAL: Command = Command(0);
    /// Relayed for a client: the addresses are the client's and the balancer's.
    pub const PROXY: Command = Command(1);

    pub fn as_str(self) -> &'static str {
        if self == Command::LOCAL {
            "local"
        } else {
            "proxy"
        }
    }
}

/// The version 2 address family (high nibble of the 14th byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family(pub u8);

impl Family {
    pub const UNSPEC: Family = Family(0);
    pub const INET: Family = Family(1);
    pub const INET6: Family = Family(2);
    pub const UNIX: Family = Family(3);

    pub fn as_str(self) -> &'static str {
        match self {
            Family::INET => "inet",
            Family::INET6 => "inet6",
            Family::UNIX => "unix",
            _ => "unspec",
        }
    }

    /// Bytes of the address block this family has (source and destination, then ports).
    fn block_len(self) -> Option<usize> {
        match self {
            Family::UNSPEC => Some(0),
            Family::INET => Some(12),
            Family::INET6 => Some(36),
            Family::UNIX => Some(216),
            _ => None,
        }
    }
}

/// The version 2 transport protocol (low nibble of the 14th byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport(pub u8);

impl Transport {
    pub const UNSPEC: Transport = Transport(0);
    pub const STREAM: Transport = Transport(1);
    pub const DGRAM: Transport = Transport(2);

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::STREAM => "stream",
            Transport::DGRAM => "dgram",
            _ => "unspec",
        }
    }
}

/// A PROXY header taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// `PROXY` for a relayed client; `LOCAL` for a version 2 health check. Version 1 has no
    /// command: its lines are `PROXY`, `UNKNOWN` ones without addresses.
    pub command: Command,
    pub family: Family,
    pub transport: Transport,
    /// The client the balancer accepted the connection from, and the address it was sent to;
    /// `None` when the header carries no IP addresses (LOCAL, UNKNOWN, UNSPEC, UNIX).
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// What the first bytes of a stream are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    NeedMore,
    /// Not a PROXY header, or one that is broken or longer than `MAX_HEADER_LEN`.
    Invalid,
    /// A whole header of `len` bytes; the stream proper starts after it.
    Header {
        len: usize,
        header: Header,
    },
}

/// Whether a stream that starts with `held` may be a PROXY header (a prefix of either
/// signature counts, the empty one too, so a header split across segments is not missed).
pub fn may_start(held: &[u8]) -> bool {
    let prefix_of = |sig: &[u8]| {
        let n = held.len().min(sig.len());
        held[..n] == sig[..n]
    };
    prefix_of(V1_PREFIX) || prefix_of(&V2_SIGNATURE)
}

pub fn parse(buf: &[u8]) -> Parse {
    if buf.starts_with(&V2_SIGNATURE) {
        v2(buf)
    } else if buf.starts_with(V1_PREFIX) {
        v1(buf)
    } else if may_start(buf) {
        Parse::NeedMore
    } else {
        Parse::Invalid
    }
}

fn v1(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1_LEN {
            Parse::Invalid
        } else {
            Parse::NeedMore
        };
    };
    let Ok(line) = std::str::from_utf8(&window[V1_PREFIX.len()..cr]) else {
        return Parse::Invalid;
    };
    let mut fields = line.split(' ');
    let family = match fields.next() {
        Some("TCP4") => Family::INET,
        Some("TCP6") => Family::INET6,
        Some("UNKNOWN") => {
            return Parse::Header {
                len: cr + 2,
                header: Header {
                    version: 1,
                    command: Command::PROXY,
                    family: Family::UNSPEC,
                    transport: Transport::UNSPEC,
                    source: None,
                    destination: None,
                },
            };
        }
        _ => return Parse::Invalid,
    };
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Parse::Invalid;
    };
    let ip = |s: &str| -> Option<IpAddr> {
        let ip: IpAddr = s.parse().ok()?;
        (ip.is_ipv4() == (family == Family::INET)).then_some(ip)
    };
    // Ports are decimal without sign or leading zeros beyond "0" (u16's parser accepts "+1").
    let port = |s: &str| -> Option<u16> {
        let canonical = s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        canonical.then(|| s.parse().ok()).flatten()
    };
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(s), Some(d), Some(sp), Some(dp)) => Parse::Header {
            len: cr + 2,
            header: Header {
                version: 1,
                command: Command::PROXY,
                family,
                transport: Transport::STREAM,
                source: Some(SocketAddr::new(s, sp)),
                destination: Some(SocketAddr::new(d, dp)),
            },
        },
        _ => Parse::Invalid,
    }
}

fn v2(buf: &[u8]) -> Parse {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Parse::NeedMore;
    };
    if fixed[12] & 0xf0 != V2_VERSION {
        return Parse::Invalid;
    }
    let command = Command(fixed[12] & 0x0f);
    let family = Family(fixed[13] >> 4);
    let transport = Transport(fixed[13] & 0x0f);
    let len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let known_transport =
        [Transport::UNSPEC, Transport::STREAM, Transport::DGRAM].contains(&transport);
    if (command != Command::LOCAL && command != Command::PROXY) || !known_transport {
        return Parse::Invalid;
    }
    let Some(block_len) = family.block_len() else {
        return Parse::Invalid;
    };
    if len > MAX_HEADER_LEN || (command == Command::PROXY && len < V2_FIXED_LEN + block_len) {
        return Parse::Invalid;
    }
    let Some(whole) = buf.get(..len) else {
        return Parse::NeedMore;
    };
    let block = &whole[V2_FIXED_LEN..];
    let addresses = match (command, family) {
        (Command::PROXY, Family::INET) => {
            let a = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            Some((a(0), a(4), 8))
        }
        (Command::PROXY, Family::INET6) => {
            let a = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some((a(0), a(16), 32))
        }
        _ => None,
    };
    let (source, destination) = match addresses {
        Some((src, dst, ports)) => {
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            (
                Some(SocketAddr::new(src, port(ports))),
                Some(SocketAddr::new(dst, port(ports + 2))),
            )
        }
        None => (None, None),
    };
    Parse::Header {
        len,
        header: Header {
            version: 2,
            command,
            family,
            transport,
            source,
            destination,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(ver_cmd: u8, fam: u8, block: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&((block.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(block);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_lines_give_their_addresses_and_length() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n\x16\x03\x01";
        let Parse::Header { len, header } = parse(line) else {
            panic!()
        };
        assert_eq!(len, line.len() - 3);
        assert_eq!(header.source.unwrap().to_string(), "192.0.2.7:56324");
        assert_eq!(header.destination.unwrap().to_string(), "10.0.0.1:443");
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        let Parse::Header { header, .. } = parse(six) else {
            panic!()
        };
        assert_eq!(header.source.unwrap().to_string(), "[2001:db8::1]:1");
        assert!(matches!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Parse::Header { len: 24, .. }
        ));
    }

    #[test]
    fn v1_lines_that_lie_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 65536\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parse::Invalid,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // No CRLF within the longest possible line.
        let mut long = b"PROXY TCP6 ".to_vec();
        long.resize(MAX_V1_LEN + 50, b'1');
        assert_eq!(parse(&long), Parse::Invalid);
        assert_eq!(parse(&long[..60]), Parse::NeedMore);
    }

    #[test]
    fn v2_headers_give_their_addresses_and_step_over_tlvs() {
        let block = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        let tlv = [0x04, 0x00, 0x03, b'a', b'b', b'c'];
        let h = v2_header(0x21, 0x11, &block, &tlv);
        let Parse::Header { len, header } = parse(&h) else {
            panic!()
        };
        assert_eq!(len, h.len());
        assert_eq!(header.source.unwrap().to_string(), "192.0.2.7:56324");
        assert_eq!(header.destination.unwrap().to_string(), "10.0.0.1:443");
        // A health check: LOCAL, no addresses.
        let local = v2_header(0x20, 0x00, &[], &[]);
        let Parse::Header { header, .. } = parse(&local) else {
            panic!()
        };
        assert_eq!((header.command, header.source), (Command::LOCAL, None));
        // Split anywhere: more is needed, never a wrong answer.
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Parse::NeedMore, "cut {cut}");
        }
    }

    #[test]
    fn hostile_v2_headers_are_refused() {
        let block = [0u8; 12];
        let mut wrong_version = v2_header(0x11, 0x11, &block, &[]);
        assert_eq!(parse(&wrong_version), Parse::Invalid);
        wrong_version[12] = 0x2f;
        assert_eq!(parse(&wrong_version), Parse::Invalid);
        // A length too short for its family's addresses.
        assert_eq!(parse(&v2_header(0x21, 0x21, &block, &[])), Parse::Invalid);
        // An unknown family.
        assert_eq!(parse(&v2_header(0x21, 0x41, &block, &[])), Parse::Invalid);
        // 64 KiB of TLVs is not buffered.
        let mut huge = v2_header(0x21, 0x11, &block, &[]);
        huge[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse(&huge), Parse::Invalid);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Parse::Invalid);
        // Nothing yet is a prefix of every header.
        assert_eq!(parse(b""), Parse::NeedMore);
    }
}
