//! Handshake messages that matter for pinwatch, parsed with `tls-parser` into owned summaries.
//! Extensions are walked one by one so that a malformed extension loses only itself, never the
//! list of extension types the fingerprints need.

use std::cell::RefCell;
use std::sync::Arc;

use compact_str::CompactString;
use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

use super::fingerprint::{self, HelloFields};
use super::intern::{CACHE_LIMIT, Interner};

/// `random` of a ServerHello that is really a HelloRetryRequest (RFC 8446, 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
/// SNI and ALPN values longer than this are cut: the record must stay small and printable.
const MAX_NAME: usize = 255;

/// A ClientHello: the server name, which is the connection's own, and everything else, which
/// is shared with every ClientHello of the same shape (in practice, of the same client program).
#[derive(Debug, Clone)]
pub struct ClientHello {
    /// Inline when up to 24 bytes long, as most names are.
    pub sni: Option<CompactString>,
    pub print: Arc<HelloPrint>,
}

/// The parts of a ClientHello that do not name the server, with their fingerprints.
#[derive(Debug)]
pub struct HelloPrint {
    /// The hello's fields; `sni` only says whether a name was sent (it is empty).
    pub fields: HelloFields,
    /// Shared strings: every record of this print points at them rather than copying them.
    pub ja4: Arc<str>,
    pub ja3: Arc<str>,
    pub ja3_string: Arc<str>,
}

impl HelloPrint {
    pub fn alpn(&self) -> Vec<String> {
        self.fields.alpn.iter().map(|p| printable(p)).collect()
    }
    /// The highest version offered (supported_versions if present, else legacy_version).
    pub fn max_version(&self) -> u16 {
        self.fields
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !fingerprint::is_grease(*v))
            .max_by_key(|v| version_rank(*v))
            .unwrap_or(self.fields.legacy_version)
    }
    pub fn offered_versions(&self) -> Vec<u16> {
        if self.fields.supported_versions.is_empty() {
            return vec![self.fields.legacy_version];
        }
        self.fields
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !fingerprint::is_grease(*v))
            .collect()
    }
}

thread_local! {
    /// Hello prints by shape; see [`super::intern`].
    static HELLO_PRINTS: RefCell<Interner<HelloFields, HelloPrint>> =
        RefCell::new(Interner::new(CACHE_LIMIT));
    /// Server hellos by everything but their fingerprint strings.
    static SERVER_HELLOS: RefCell<Interner<ServerShape, ServerHello>> =
        RefCell::new(Interner::new(CACHE_LIMIT));
}

/// Splits the name off and shares the rest. GREASE values are made one value first: they are
/// random per connection in some clients and no output depends on which one was sent.
fn client_hello(mut fields: HelloFields) -> ClientHello {
    fields.normalize_grease();
    let sni = fields.sni.take();
    fields.sni = sni.as_ref().map(|_| String::new());
    let print = HELLO_PRINTS.with_borrow_mut(|cache| {
        cache.get_or_make(fields, |fields| {
            let (ja3_string, ja3) = fingerprint::ja3(fields);
            HelloPrint {
                fields: fields.clone(),
                ja4: fingerprint::ja4(fields).into(),
                ja3: ja3.into(),
                ja3_string: ja3_string.into(),
            }
        })
    });
    ClientHello {
        sni: sni.as_deref().map(CompactString::new),
        print,
    }
}

#[derive(Debug, Clone)]
pub struct ServerHello {
    /// The negotiated version (supported_versions when present).
    pub version: u16,
    pub cipher: u16,
    pub alpn: Option<String>,
    pub extensions: Vec<u16>,
    pub hello_retry: bool,
    pub ja3s: Arc<str>,
    pub ja3s_string: Arc<str>,
}

impl ServerHello {
    pub fn is_tls13(&self) -> bool {
        is_tls13(self.version)
    }
}

pub fn is_tls13(version: u16) -> bool {
    version == 0x0304 || (version >> 8) == 0x7f || (version >> 8) == 0xfb
}

/// Orders versions so that TLS 1.3 drafts rank between 1.2 and 1.3 final.
fn version_rank(v: u16) -> u32 {
    match v {
        0x0304 => 0x0003_0400,
        v if (v >> 8) == 0x7f || (v >> 8) == 0xfb => 0x0003_0380 + (v & 0xff) as u32 / 2,
        v => (v as u32) << 8,
    }
}

/// A parsed handshake message of interest.
pub enum Message<'a> {
    ClientHello(ClientHello),
    ServerHello(Arc<ServerHello>),
    Certificate(Vec<&'a [u8]>),
    ServerHelloDone,
    /// A stapled OCSP response; true when it carries the leaf's SCTs.
    CertificateStatus(bool),
    Other(u8),
    Malformed(u8),
}

/// Parses one whole handshake message (4-byte header included).
pub fn parse(msg: &[u8]) -> Message<'_> {
    let kind = msg.first().copied().unwrap_or(0);
    let parsed = match tls_parser::parse_tls_message_handshake(msg) {
        Ok((_, TlsMessage::Handshake(h))) => h,
        _ if kind == 2 => {
            return draft_server_hello(msg).map_or(Message::Malformed(kind), Message::ServerHello);
        }
        _ => return Message::Malformed(kind),
    };
    match parsed {
        TlsMessageHandshake::ClientHello(ch) => {
            let mut fields = HelloFields {
                legacy_version: ch.version.0,
                ciphers: ch.ciphers.iter().map(|c| c.0).collect(),
                ..HelloFields::default()
            };
            walk_extensions(ch.ext.unwrap_or(&[]), |ty, raw| {
                fields.extensions.push(ty);
                client_extension(&mut fields, raw);
            });
            Message::ClientHello(client_hello(fields))
        }
        TlsMessageHandshake::ServerHello(sh) => {
            Message::ServerHello(server_hello(sh.version.0, sh.random, sh.cipher.0, sh.ext))
        }
        TlsMessageHandshake::ServerHelloV13Draft18(sh) => {
            Message::ServerHello(server_hello(sh.version.0, sh.random, sh.cipher.0, sh.ext))
        }
        TlsMessageHandshake::HelloRetryRequest(hrr) => Message::ServerHello(server_hello(
            hrr.version.0,
            &HRR_RANDOM,
            hrr.cipher.0,
            hrr.ext,
        )),
        TlsMessageHandshake::Certificate(c) => {
            Message::Certificate(c.cert_chain.iter().map(|c| c.data).collect())
        }
        TlsMessageHandshake::ServerDone(_) => Message::ServerHelloDone,
        // status_type 1 is OCSP (RFC 6066, 8).
        TlsMessageHandshake::CertificateStatus(s) => {
            Message::CertificateStatus(s.status_type == 1 && super::ocsp::has_sct(s.blob))
        }
        _ => Message::Other(kind),
    }
}

/// An SSLv2-format CLIENT-HELLO (the body after its 2-byte record header; draft-hickman SSL
/// 2.0, kept by RFC 6101 appendix E and RFC 5246 appendix E.2 for clients that also speak SSL
/// 2.0): message type 1, the highest version offered, three lengths, 3-byte cipher specs, the
/// session id and the challenge. Its fields become a ClientHello without extensions: the
/// cipher specs whose first byte is 0 are the TLS suites (the others are SSL 2.0 kinds, which
/// no later version negotiates). JA3 and JA4 are taken from those fields as from any hello:
/// FoxIO's JA4 specification has no rule of its own for this format, so JA4 reads `t`, the
/// offered version (`10` for TLS 1.0, `s3`, `s2`), `i` (no SNI can be sent), the TLS suite
/// count, `00` extensions and ALPN, and the hashes of those lists.
pub fn parse_sslv2_hello(body: &[u8]) -> Option<ClientHello> {
    let [1, v0, v1, c0, c1, s0, s1, h0, h1, rest @ ..] = body else {
        return None;
    };
    let specs_len = usize::from(u16::from_be_bytes([*c0, *c1]));
    let session_len = usize::from(u16::from_be_bytes([*s0, *s1]));
    let challenge_len = usize::from(u16::from_be_bytes([*h0, *h1]));
    // SSL 2.0's own rules: whole cipher specs, a session id of 0 or 16 bytes, a challenge of
    // 16 to 32 bytes, and nothing else in the record.
    let well_formed = specs_len % 3 == 0
        && specs_len > 0
        && (session_len == 0 || session_len == 16)
        && (16..=32).contains(&challenge_len)
        && rest.len() == specs_len + session_len + challenge_len;
    if !well_formed {
        return None;
    }
    let ciphers = rest[..specs_len]
        .chunks_exact(3)
        .filter(|spec| spec[0] == 0)
        .map(|spec| u16::from_be_bytes([spec[1], spec[2]]))
        .collect();
    Some(client_hello(HelloFields {
        legacy_version: u16::from_be_bytes([*v0, *v1]),
        ciphers,
        ..HelloFields::default()
    }))
}

/// A ServerHello's fields before its fingerprint strings: the key under which servers share one.
#[derive(PartialEq, Eq, Hash)]
struct ServerShape {
    legacy_version: u16,
    version: u16,
    cipher: u16,
    alpn: Option<String>,
    extensions: Vec<u16>,
    hello_retry: bool,
}

fn server_hello(version: u16, random: &[u8], cipher: u16, ext: Option<&[u8]>) -> Arc<ServerHello> {
    let mut negotiated = version;
    let mut alpn = None;
    let mut extensions = Vec::new();
    walk_extensions(ext.unwrap_or(&[]), |ty, raw| {
        extensions.push(ty);
        match tls_parser::parse_tls_server_hello_extension(raw) {
            Ok((_, TlsExtension::SupportedVersions(v))) => {
                if let Some(first) = v.first() {
                    negotiated = first.0;
                }
            }
            Ok((_, TlsExtension::ALPN(protos))) => alpn = protos.first().map(|p| printable(p)),
            _ => {
                // tls-parser reads a ServerHello's supported_versions as a client list in some
                // versions; the server's form is a bare u16.
                if ty == 43 && raw.len() == 6 {
                    negotiated = u16::from_be_bytes([raw[4], raw[5]]);
                }
            }
        }
    });
    let shape = ServerShape {
        legacy_version: version,
        version: negotiated,
        cipher,
        alpn,
        extensions,
        hello_retry: random == HRR_RANDOM,
    };
    SERVER_HELLOS.with_borrow_mut(|cache| {
        cache.get_or_make(shape, |shape| {
            let (ja3s_string, ja3s) =
                fingerprint::ja3s(shape.legacy_version, shape.cipher, &shape.extensions);
            ServerHello {
                version: shape.version,
                cipher: shape.cipher,
                alpn: shape.alpn.clone(),
                extensions: shape.extensions.clone(),
                hello_retry: shape.hello_retry,
                ja3s: ja3s.into(),
                ja3s_string: ja3s_string.into(),
            }
        })
    })
}

/// TLS 1.3 drafts before 22 dropped the session id from the ServerHello; tls-parser does not
/// read that layout, so read it here: version, random, cipher, extensions.
fn draft_server_hello(msg: &[u8]) -> Option<Arc<ServerHello>> {
    let body = msg.get(4..)?;
    let version = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if version >> 8 != 0x7f {
        return None;
    }
    let random = body.get(2..34)?;
    let cipher = u16::from_be_bytes([*body.get(34)?, *body.get(35)?]);
    let ext_len = u16::from_be_bytes([*body.get(36)?, *body.get(37)?]) as usize;
    let ext = body.get(38..38 + ext_len)?;
    Some(server_hello(version, random, cipher, Some(ext)))
}

/// Calls `f(type, raw)` for each extension, where `raw` includes its 4-byte header.
fn walk_extensions(mut data: &[u8], mut f: impl FnMut(u16, &[u8])) {
    while data.len() >= 4 {
        let ty = u16::from_be_bytes([data[0], data[1]]);
        let len = u16::from_be_bytes([data[2], data[3]]) as usize;
        let Some(raw) = data.get(..4 + len) else {
            // Truncated extension: its type still counts for fingerprints.
            f(ty, &data[..4]);
            return;
        };
        f(ty, raw);
        data = &data[4 + len..];
    }
}

fn client_extension(fields: &mut HelloFields, raw: &[u8]) {
    let Ok((_, ext)) = tls_parser::parse_tls_client_hello_extension(raw) else {
        return;
    };
    match ext {
        TlsExtension::SNI(names) => {
            if let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) {
                fields.sni = Some(printable(name));
            }
        }
        TlsExtension::ALPN(protos) => fields.alpn = protos.iter().map(|p| p.to_vec()).collect(),
        TlsExtension::SupportedVersions(v) => {
            fields.supported_versions = v.iter().map(|v| v.0).collect()
        }
        TlsExtension::SignatureAlgorithms(v) => fields.signature_algorithms = v,
        TlsExtension::EllipticCurves(groups) => {
            fields.groups = groups.iter().map(|g| g.0).collect()
        }
        TlsExtension::EcPointFormats(f) => fields.ec_point_formats = f.to_vec(),
        _ => {}
    }
}

/// A name from the wire as a printable string: at most 255 bytes, non-printable bytes escaped.
pub fn printable(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_NAME)];
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// "TLS 1.2", "TLS 1.3", "TLS 1.3 draft-28", "SSL 3.0", or the hex value.
pub fn version_name(v: u16) -> String {
    match v {
        0x0002 => "SSL 2.0".into(),
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        v if (v >> 8) == 0x7f => format!("TLS 1.3 draft-{}", v & 0xff),
        v => format!("0x{v:04x}"),
    }
}

pub fn cipher_name(id: u16) -> String {
    match tls_parser::TlsCipherSuite::from_id(id) {
        Some(c) => c.name.to_string(),
        None => format!("0x{id:04x}"),
    }
}

/// IANA name of an alert description.
pub fn alert_name(code: u8) -> String {
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        other => return format!("unknown_{other}"),
    };
    name.to_string()
}
