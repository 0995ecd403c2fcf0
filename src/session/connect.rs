//! HTTP CONNECT request and reply heads (RFC 9110, 9.3.6), parsed from a bounded buffer.

use crate::tls::handshake::printable;

/// The start line of an HTTP head in the explicit-proxy prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// Request: method (e.g. `CONNECT`); reply: empty.
    pub method: Box<str>,
    /// Request: target (`host:port`); reply: empty.
    pub target: Box<str>,
    /// Reply: status code.
    pub status: Option<u16>,
    /// Reply: reason phrase.
    pub reason: Box<str>,
}

impl HttpHead {
    /// An HTTP CONNECT or a SOCKS connect: a tunnel request.
    pub fn is_connect(&self) -> bool {
        self.method.eq_ignore_ascii_case("CONNECT") || self.method.starts_with("SOCKS")
    }
    /// The proxy opened the tunnel (HTTP 2xx, SOCKS4 90, SOCKS5 0).
    pub fn status_ok(&self) -> bool {
        self.status.is_some_and(|s| match &*self.method {
            "SOCKS4" => s == 90,
            "SOCKS5" => s == 0,
            _ => (200..300).contains(&s),
        })
    }
    /// The host part of a CONNECT target (`[v6]:port`, `host:port`, or a bare host).
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

/// `CONNECT host:port HTTP/1.1`
pub fn parse_request(head: &[u8]) -> Option<HttpHead> {
    let words = start_line(head);
    let (method, target, version) = (words.first()?, words.get(1)?, words.get(2)?);
    if !version.starts_with(b"HTTP/") {
        return None;
    }
    Some(HttpHead {
        method: printable(method).into(),
        target: printable(target).into(),
        status: None,
        reason: Box::default(),
    })
}

/// `HTTP/1.1 200 Connection established`
pub fn parse_response(head: &[u8]) -> Option<HttpHead> {
    let words = start_line(head);
    if !words.first()?.starts_with(b"HTTP/") {
        return None;
    }
    let status = std::str::from_utf8(words.get(1)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let reason: Vec<String> = words[2..].iter().map(|w| printable(w)).collect();
    Some(HttpHead {
        method: Box::default(),
        target: Box::default(),
        status: Some(status),
        reason: reason.join(" ").into(),
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
        let r = parse_request(req).unwrap();
        assert!(r.is_connect());
        assert_eq!(r.target_host(), "api.example.test");
        let rep = parse_response(b"HTTP/1.0 200 Connection Established\r\nProxy-agent: x\r\n\r\n")
            .unwrap();
        assert!(rep.status_ok());
        assert_eq!(&*rep.reason, "Connection Established");
        let denied = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n").unwrap();
        assert!(!denied.status_ok());
    }

    #[test]
    fn ipv6_target_and_garbage() {
        let r = parse_request(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.target_host(), "2001:db8::1");
        assert!(parse_request(b"CONNECT\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_none());
    }
}
