//! Summary of a TLS 1.2 certificate chain, parsed with `x509-parser`: the fields a rule
//! engine and a human need to tell a proxy-minted certificate from the origin's own.

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::intern::{CACHE_LIMIT, Interner};
use crate::output::time::rfc3339_secs;

/// Chains longer than this are cut in the record (the count still says how long it was).
const MAX_CHAIN_SUMMARY: usize = 8;
/// SAN entries kept per certificate.
const MAX_SAN: usize = 64;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub san: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// Hex SHA-256 of the DER certificate.
    pub sha256: String,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo: the form HPKP and `--pinnedpubkey` use.
    pub spki_sha256: String,
    /// Whether the leaf comes with Signed Certificate Timestamps (public CAs log theirs;
    /// proxies do not): embedded in it, or delivered as `sct_delivered_in` says.
    pub has_sct: bool,
    /// SCTs delivered beside the leaf rather than in it, in the order seen: `tls_extension`
    /// (the TLS 1.2 ServerHello's signed_certificate_timestamp extension), `ocsp_response` (a
    /// stapled OCSP response's SCT extension). Per connection; omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sct_delivered_in: Vec<&'static str>,
    /// Authority key identifier (hex), to tie the leaf to its issuing CA.
    pub authority_key_id: Option<String>,
    pub self_signed: bool,
    /// Number of certificates the server sent.
    pub chain_len: usize,
    /// Each certificate after the leaf, in the order sent.
    pub chain: Vec<ChainEntry>,
    /// False when the leaf could not be parsed; only `sha256` and `chain_len` are then set.
    pub parsed: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChainEntry {
    pub subject: String,
    pub issuer: String,
    pub sha256: String,
    pub subject_key_id: Option<String>,
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

thread_local! {
    /// Summaries by SHA-256 of the whole Certificate message.
    static SUMMARIES: RefCell<Interner<[u8; 32], CertSummary>> =
        RefCell::new(Interner::new(CACHE_LIMIT));
}

/// [`summarize`] for the chain of one Certificate handshake message (`message`, header
/// included), shared with earlier connections that sent the same message byte for byte. The key
/// is a SHA-256, so a crafted chain cannot pass for another one.
pub fn summarize_shared(message: &[u8], chain: &[&[u8]]) -> Option<Arc<CertSummary>> {
    let (leaf, rest) = chain.split_first()?;
    let key: [u8; 32] = Sha256::digest(message).into();
    let summary = SUMMARIES
        .with_borrow_mut(|cache| cache.get_or_make(key, |_| summarize_leaf_first(leaf, rest)));
    Some(summary)
}

/// Summarises a chain as sent (leaf first). `None` for an empty chain.
pub fn summarize(chain: &[&[u8]]) -> Option<CertSummary> {
    let (leaf, rest) = chain.split_first()?;
    Some(summarize_leaf_first(leaf, rest))
}

fn summarize_leaf_first(leaf_der: &[u8], after_leaf: &[&[u8]]) -> CertSummary {
    let rest: Vec<ChainEntry> = after_leaf
        .iter()
        .take(MAX_CHAIN_SUMMARY)
        .map(|der| match X509Certificate::from_der(der) {
            Ok((_, c)) => ChainEntry {
                subject: c.subject().to_string(),
                issuer: c.issuer().to_string(),
                sha256: sha256_hex(der),
                subject_key_id: subject_key_id(&c),
            },
            Err(_) => ChainEntry {
                subject: String::new(),
                issuer: String::new(),
                sha256: sha256_hex(der),
                subject_key_id: None,
            },
        })
        .collect();
    let mut summary = CertSummary {
        subject: String::new(),
        issuer: String::new(),
        san: Vec::new(),
        not_before: None,
        not_after: None,
        sha256: sha256_hex(leaf_der),
        spki_sha256: String::new(),
        has_sct: false,
        sct_delivered_in: Vec::new(),
        authority_key_id: None,
        self_signed: false,
        chain_len: after_leaf.len() + 1,
        chain: rest,
        parsed: false,
    };
    let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
        return summary;
    };
    summary.parsed = true;
    summary.subject = leaf.subject().to_string();
    summary.issuer = leaf.issuer().to_string();
    summary.self_signed = leaf.subject().as_raw() == leaf.issuer().as_raw();
    summary.not_before = rfc3339_secs(leaf.validity().not_before.timestamp());
    summary.not_after = rfc3339_secs(leaf.validity().not_after.timestamp());
    summary.spki_sha256 =
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(leaf.public_key().raw));
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in san.general_names.iter().take(MAX_SAN) {
                    match name {
                        GeneralName::DNSName(d) => summary.san.push(d.to_string()),
                        GeneralName::IPAddress(ip) => summary.san.push(ip_text(ip)),
                        _ => {}
                    }
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                summary.authority_key_id = aki.key_identifier.as_ref().map(|k| hex::encode(k.0));
            }
            ParsedExtension::SCT(_) => summary.has_sct = true,
            _ => {
                // 1.3.6.1.4.1.11129.2.4.2: embedded SCT list, even when the parser did not decode it.
                if ext.oid.to_id_string() == "1.3.6.1.4.1.11129.2.4.2" {
                    summary.has_sct = true;
                }
            }
        }
    }
    summary
}

fn subject_key_id(c: &X509Certificate<'_>) -> Option<String> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(hex::encode(k.0)),
            _ => None,
        })
}

fn ip_text(raw: &[u8]) -> String {
    match raw.len() {
        4 => std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            std::net::Ipv6Addr::from(b).to_string()
        }
        _ => hex::encode(raw),
    }
}
