//! HTTP CONNECT request and reply heads (RFC 9110, 9.3.6), parsed from a bounded buffer.

use compact_str::CompactString;

use crate::tls::handshake::printable;

/// The kind of tunnel a client asked its proxy for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// HTTP `CONNECT host:port`.
    Connect,
    Socks4,
    Socks5,
}

/// The client's tunnel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// `host:port` (HTTP), or the host and port a SOCKS client named, written the same way.
    pub target: CompactString,
}

impl Request {
    /// The host part of the target (`[v6]:port`, `host:port`, or a bare host).
    pub fn target_host(&self) -> &str {
        let t = &*self.target;
        if let Some(rest) = t.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match t.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => t,
        }
    }
}

/// The proxy's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code, or the SOCKS reply code (SOCKS4 `CD`, SOCKS5 `REP`).
    pub status: u16,
    /// HTTP reason phrase; empty for SOCKS.
    pub reason: CompactString,
}

/// What an explicit-proxy prelude said, both ways, and the PROXY protocol header a load balancer
/// put in front of it. One allocation holds them all: most proxied connections have both
/// request and reply, and two boxes of the old shared request/reply shape (each with the other's
/// empty fields) cost a tracked connection about 64 bytes more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    pub request: Option<Request>,
    pub reply: Option<Reply>,
    pub proxy_protocol: Option<crate::session::proxy_protocol::Header>,
}

impl Exchange {
    /// The proxy opened the tunnel: HTTP 2xx, SOCKS4 90, SOCKS5 0, judged by the kind of
    /// request (a reply with no request seen is read as HTTP).
    pub fn opened(&self) -> bool {
        let Some(reply) = &self.reply else {
            return false;
        };
        match self.request.as_ref().map(|r| r.method) {
            Some(Method::Socks4) => reply.status == 90,
            Some(Method::Socks5) => reply.status == 0,
            Some(Method::Connect) | None => (200..300).contains(&reply.status),
        }
    }
}

/// Position just past the blank line ending the head, if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn start_line(head: &[u8]) -> Vec<&[u8]> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    head[..line_end]
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect()
}

/// `CONNECT host:port HTTP/1.1`; any other method is not a tunnel request.
pub fn parse_request(head: &[u8]) -> Option<Request> {
    let words = start_line(head);
    let (method, target, version) = (words.first()?, words.get(1)?, words.get(2)?);
    if !method.eq_ignore_ascii_case(b"CONNECT") || !version.starts_with(b"HTTP/") {
        return None;
    }
    Some(Request {
        method: Method::Connect,
        target: CompactString::new(printable(target)),
    })
}

/// `HTTP/1.1 200 Connection established`
pub fn parse_response(head: &[u8]) -> Option<Reply> {
    let words = start_line(head);
    if !words.first()?.starts_with(b"HTTP/") {
        return None;
    }
    let status = std::str::from_utf8(words.get(1)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let reason: Vec<String> = words[2..].iter().map(|w| printable(w)).collect();
    Some(Reply {
        status,
        reason: CompactString::new(reason.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_and_reply() {
        let req = b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n";
        let end = head_end(req).unwrap();
        assert_eq!(end, req.len());
        let request = parse_request(req).unwrap();
        assert_eq!(request.method, Method::Connect);
        assert_eq!(request.target_host(), "api.example.test");
        let reply =
            parse_response(b"HTTP/1.0 200 Connection Established\r\nProxy-agent: x\r\n\r\n")
                .unwrap();
        assert_eq!(&*reply.reason, "Connection Established");
        let mut exchange = Exchange {
            request: Some(request),
            reply: Some(reply),
            proxy_protocol: None,
        };
        assert!(exchange.opened());
        exchange.reply = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n");
        assert!(!exchange.opened());
        assert!(parse_request(b"GET / HTTP/1.1\r\n\r\n").is_none());
    }

    /// A SOCKS reply is judged by SOCKS codes, not HTTP's: 90 (SOCKS4) and 0 (SOCKS5) open the
    /// tunnel, and 200 means nothing there.
    #[test]
    fn socks_replies_are_judged_by_the_requests_protocol() {
        let exchange = |method, status| Exchange {
            request: Some(Request {
                method,
                target: "api.example.test:443".into(),
            }),
            reply: Some(Reply {
                status,
                reason: CompactString::default(),
            }),
            proxy_protocol: None,
        };
        assert!(exchange(Method::Socks4, 90).opened());
        assert!(!exchange(Method::Socks4, 91).opened());
        assert!(exchange(Method::Socks5, 0).opened());
        assert!(!exchange(Method::Socks5, 200).opened());
        assert!(!Exchange::default().opened());
    }

    #[test]
    fn ipv6_target_and_garbage() {
        let r = parse_request(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.target_host(), "2001:db8::1");
        assert!(parse_request(b"CONNECT\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_none());
    }
}
