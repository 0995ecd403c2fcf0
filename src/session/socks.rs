//! SOCKS4/4a (no RFC; the NEC protocol note) and SOCKS5 (RFC 1928, RFC 1929 auth) preludes:
//! how many bytes each side spends before the tunnelled stream starts, and the target.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::tls::handshake::printable;

/// Parse state of a prelude held in a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Prelude {
    NeedMore,
    Invalid,
    /// The prelude takes `len` bytes.
    Client {
        len: usize,
        version: u8,
        target: String,
    },
    Server {
        len: usize,
        code: u8,
    },
}

/// Most bytes a prelude may take before it is not SOCKS.
pub const MAX_PRELUDE: usize = 1024;

fn cstring(buf: &[u8], from: usize) -> Option<(usize, &[u8])> {
    let rest = buf.get(from..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some((from + end + 1, &rest[..end]))
}

/// SOCKS5 address (after ATYP) and port; returns (bytes used, "host:port").
fn socks5_addr(buf: &[u8], at: usize) -> Result<(usize, String), bool> {
    let atyp = *buf.get(at).ok_or(true)?;
    let (host, used) = match atyp {
        1 => {
            let a = buf.get(at + 1..at + 5).ok_or(true)?;
            (Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(), 4)
        }
        3 => {
            let n = *buf.get(at + 1).ok_or(true)? as usize;
            (printable(buf.get(at + 2..at + 2 + n).ok_or(true)?), 1 + n)
        }
        4 => {
            let a: [u8; 16] = buf
                .get(at + 1..at + 17)
                .ok_or(true)?
                .try_into()
                .map_err(|_| false)?;
            (format!("[{}]", Ipv6Addr::from(a)), 16)
        }
        _ => return Err(false),
    };
    let p = buf.get(at + 1 + used..at + 3 + used).ok_or(true)?;
    Ok((
        1 + used + 2,
        format!("{host}:{}", u16::from_be_bytes([p[0], p[1]])),
    ))
}

fn need(incomplete: bool) -> Prelude {
    if incomplete {
        Prelude::NeedMore
    } else {
        Prelude::Invalid
    }
}

/// The client's side: SOCKS4 request, or SOCKS5 greeting [+ auth] + request.
pub fn client(buf: &[u8]) -> Prelude {
    match buf.first() {
        Some(4) => {
            if buf.len() < 9 {
                return Prelude::NeedMore;
            }
            if buf[1] != 1 {
                return Prelude::Invalid;
            }
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let Some((after_user, _)) = cstring(buf, 8) else {
                return Prelude::NeedMore;
            };
            // SOCKS4a: 0.0.0.x means a host name follows the user id.
            if buf[4..7] == [0, 0, 0] && buf[7] != 0 {
                let Some((end, host)) = cstring(buf, after_user) else {
                    return Prelude::NeedMore;
                };
                return Prelude::Client {
                    len: end,
                    version: 4,
                    target: format!("{}:{port}", printable(host)),
                };
            }
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            Prelude::Client {
                len: after_user,
                version: 4,
                target: format!("{ip}:{port}"),
            }
        }
        Some(5) => {
            let Some(&n) = buf.get(1) else {
                return Prelude::NeedMore;
            };
            let mut at = 2 + n as usize;
            // RFC 1929 username/password sub-negotiation, if the client sent one.
            if buf.get(at) == Some(&1) {
                let Some(&ulen) = buf.get(at + 1) else {
                    return Prelude::NeedMore;
                };
                let Some(&plen) = buf.get(at + 2 + ulen as usize) else {
                    return Prelude::NeedMore;
                };
                at += 3 + ulen as usize + plen as usize;
            }
            match buf.get(at..at + 3) {
                None => Prelude::NeedMore,
                Some([5, 1, 0]) => match socks5_addr(buf, at + 3) {
                    Ok((used, target)) => Prelude::Client {
                        len: at + 3 + used,
                        version: 5,
                        target,
                    },
                    Err(incomplete) => need(incomplete),
                },
                Some(_) => Prelude::Invalid,
            }
        }
        _ => Prelude::Invalid,
    }
}

/// The proxy's side: SOCKS4 reply (8 bytes), or SOCKS5 method [+ auth status] + reply.
pub fn server(buf: &[u8], version: u8) -> Prelude {
    if version == 4 {
        return match buf.get(..8) {
            Some(r) if r[0] == 0 => Prelude::Server { len: 8, code: r[1] },
            Some(_) => Prelude::Invalid,
            None => Prelude::NeedMore,
        };
    }
    let Some(method) = buf.get(..2) else {
        return Prelude::NeedMore;
    };
    if method[0] != 5 {
        return Prelude::Invalid;
    }
    let mut at = 2;
    if method[1] == 2 {
        at += 2;
    }
    match buf.get(at..at + 3) {
        None => Prelude::NeedMore,
        Some([5, code, 0]) => match socks5_addr(buf, at + 3) {
            Ok((used, _)) => Prelude::Server {
                len: at + 3 + used,
                code: *code,
            },
            Err(incomplete) => need(incomplete),
        },
        Some(_) => Prelude::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks4a_and_socks5() {
        let req = b"\x04\x01\x01\xbb\x00\x00\x00\x01user\x00www.example.com\x00\x16\x03\x01";
        assert_eq!(
            client(req),
            Prelude::Client {
                len: req.len() - 3,
                version: 4,
                target: "www.example.com:443".into()
            }
        );
        assert_eq!(
            server(b"\x00\x5a\x00\x00\x00\x00\x00\x00\x16", 4),
            Prelude::Server { len: 8, code: 0x5a }
        );
        let req5 = b"\x05\x01\x00\x05\x01\x00\x03\x0ewww.google.com\x01\xbb";
        assert_eq!(
            client(req5),
            Prelude::Client {
                len: req5.len(),
                version: 5,
                target: "www.google.com:443".into()
            }
        );
        assert_eq!(client(&req5[..6]), Prelude::NeedMore);
        let rep5 = b"\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38";
        assert_eq!(
            server(rep5, 5),
            Prelude::Server {
                len: rep5.len(),
                code: 0
            }
        );
        assert_eq!(client(b"\x05\x01\x00\x05\x02\x00"), Prelude::Invalid);
    }
}
