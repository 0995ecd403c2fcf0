//! TLS client and server fingerprints computed from parsed handshake fields.
//!
//! * JA4 (FoxIO, BSD-3-Clause part of JA4+): the TCP ClientHello fingerprint,
//!   `t13d1516h2_8daaf6152771_e5627efa2ab1`.
//! * JA3 / JA3S (Salesforce): comma-separated decimal field lists and their
//!   MD5 digests.
//!
//! The caller hands over the ClientHello fields in wire order with GREASE
//! values (RFC 8701) still present; every function here drops them itself.

use md5::Md5;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// ClientHello fields needed for fingerprints, in wire order, GREASE values still present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HelloFields {
    /// ClientHello.legacy_version.
    pub legacy_version: u16,
    /// Offered cipher suites.
    pub ciphers: Vec<u16>,
    /// Extension type codes, wire order.
    pub extensions: Vec<u16>,
    /// Host name from the server_name extension (0).
    pub sni: Option<String>,
    /// ALPN protocol names (extension 16), wire order.
    pub alpn: Vec<Vec<u8>>,
    /// From supported_versions (extension 43), wire order.
    pub supported_versions: Vec<u16>,
    /// From signature_algorithms (extension 13), wire order.
    pub signature_algorithms: Vec<u16>,
    /// supported_groups (extension 10), wire order.
    pub groups: Vec<u16>,
    /// ec_point_formats (extension 11).
    pub ec_point_formats: Vec<u8>,
}

impl HelloFields {
    /// Replaces every GREASE value by 0x0a0a. Fingerprints skip GREASE whatever its value, so
    /// they do not change; hellos that differ only in their random GREASE become equal.
    pub fn normalize_grease(&mut self) {
        for list in [
            &mut self.ciphers,
            &mut self.extensions,
            &mut self.supported_versions,
            &mut self.signature_algorithms,
            &mut self.groups,
        ] {
            for value in list.iter_mut().filter(|v| is_grease(**v)) {
                *value = 0x0a0a;
            }
        }
    }
}

/// Extension type code of server_name.
const EXT_SERVER_NAME: u16 = 0x0000;
/// Extension type code of application_layer_protocol_negotiation.
const EXT_ALPN: u16 = 0x0010;
/// Part b / part c of JA4 when there is nothing to hash.
const JA4_EMPTY_HASH: &str = "000000000000";

/// True for the sixteen reserved GREASE values `0x0a0a, 0x1a1a, ..., 0xfafa`
/// (RFC 8701): both bytes equal, low nibble of each byte `0xa`.
pub fn is_grease(v: u16) -> bool {
    let [hi, lo] = v.to_be_bytes();
    hi == lo && lo & 0x0f == 0x0a
}

fn without_grease(values: &[u16]) -> Vec<u16> {
    values.iter().copied().filter(|&v| !is_grease(v)).collect()
}

/// Two-character JA4 version code.
fn ja4_version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// Two-digit decimal count, capped at 99.
fn ja4_count(n: usize) -> String {
    format!("{:02}", n.min(99))
}

/// The two ALPN characters of JA4 section a, from the first ALPN value.
///
/// Empty or absent: `00`. If both the first and last byte are ASCII
/// alphanumeric, those two characters. Otherwise the first hex digit of the
/// first byte and the last hex digit of the last byte (the first and last
/// characters of the value's hex representation).
fn ja4_alpn(alpn: &[Vec<u8>]) -> String {
    let Some(value) = alpn.first() else {
        return "00".to_string();
    };
    let (Some(&first), Some(&last)) = (value.first(), value.last()) else {
        return "00".to_string();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        let mut s = String::with_capacity(2);
        s.push(char::from(first));
        s.push(char::from(last));
        s
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(2);
        s.push(char::from(HEX[usize::from(first >> 4)]));
        s.push(char::from(HEX[usize::from(last & 0x0f)]));
        s
    }
}

/// Lowercase 4-hex-digit values joined by commas.
fn hex_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{v:04x}");
    }
    s
}

/// First 12 lowercase hex characters of SHA-256(`input`).
fn sha256_12(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut h = hex::encode(digest);
    h.truncate(12);
    h
}

/// JA4 (FoxIO spec, BSD-3 part only) for a TCP ClientHello: e.g. "t13d1516h2_8daaf6152771_e5627efa2ab1".
pub fn ja4(h: &HelloFields) -> String {
    let ciphers = without_grease(&h.ciphers);
    let extensions = without_grease(&h.extensions);

    let version = h
        .supported_versions
        .iter()
        .copied()
        .filter(|&v| !is_grease(v))
        .max()
        .unwrap_or(h.legacy_version);
    let sni = h.sni.is_some() || extensions.contains(&EXT_SERVER_NAME);

    let mut out = String::with_capacity(36);
    out.push('t');
    out.push_str(ja4_version_code(version));
    out.push(if sni { 'd' } else { 'i' });
    out.push_str(&ja4_count(ciphers.len()));
    out.push_str(&ja4_count(extensions.len()));
    out.push_str(&ja4_alpn(&h.alpn));
    out.push('_');

    // Part b: sorted cipher list.
    if ciphers.is_empty() {
        out.push_str(JA4_EMPTY_HASH);
    } else {
        let mut sorted = ciphers;
        sorted.sort_unstable();
        out.push_str(&sha256_12(&hex_list(&sorted)));
    }
    out.push('_');

    // Part c: sorted extensions minus SNI and ALPN, then "_" and the
    // signature algorithms in wire order (only if there are any).
    let mut exts: Vec<u16> = extensions
        .into_iter()
        .filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN)
        .collect();
    if exts.is_empty() {
        out.push_str(JA4_EMPTY_HASH);
    } else {
        exts.sort_unstable();
        let mut input = hex_list(&exts);
        let sigs = without_grease(&h.signature_algorithms);
        if !sigs.is_empty() {
            input.push('_');
            input.push_str(&hex_list(&sigs));
        }
        out.push_str(&sha256_12(&input));
    }
    out
}

/// Decimal values joined by dashes.
fn dec_list<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    let mut s = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        let _ = write!(s, "{v}");
    }
    s
}

fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// JA3 string "771,4865-4866,...,0-23-...,29-23-24,0" and its MD5 hex.
///
/// Fields: legacy version, ciphers, extension types, supported groups,
/// EC point formats; GREASE values removed from every list; an empty list
/// leaves its field empty.
pub fn ja3(h: &HelloFields) -> (String, String) {
    let s = format!(
        "{},{},{},{},{}",
        h.legacy_version,
        dec_list(without_grease(&h.ciphers)),
        dec_list(without_grease(&h.extensions)),
        dec_list(without_grease(&h.groups)),
        dec_list(h.ec_point_formats.iter()),
    );
    let md5 = md5_hex(&s);
    (s, md5)
}

/// JA3S string "771,49199,65281-0-11" (server version, chosen cipher, extension types in wire order) and MD5.
///
/// GREASE extension types (which a ServerHello should never carry) are dropped,
/// as in JA3.
pub fn ja3s(server_version: u16, cipher: u16, extensions: &[u16]) -> (String, String) {
    let s = format!(
        "{},{},{}",
        server_version,
        cipher,
        dec_list(without_grease(extensions))
    );
    let md5 = md5_hex(&s);
    (s, md5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ClientHello of the worked example in the JA4 specification
    /// (GREASE values added, which must not change anything).
    fn spec_example() -> HelloFields {
        HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![
                0x3a3a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x2a2a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005,
                0x0023, 0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015, 0xfafa,
            ],
            sni: Some("example.com".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            supported_versions: vec![0x7a7a, 0x0304, 0x0303],
            signature_algorithms: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            groups: vec![0x8a8a, 0x001d, 0x0017, 0x0018],
            ec_point_formats: vec![0],
        }
    }

    #[test]
    fn grease_values() {
        let grease: Vec<u16> = (0..16u16).map(|i| (i << 12) | (i << 4) | 0x0a0a).collect();
        assert_eq!(grease[0], 0x0a0a);
        assert_eq!(grease[15], 0xfafa);
        for g in &grease {
            assert!(is_grease(*g), "{g:#06x}");
        }
        let count = (0..=u16::MAX).filter(|&v| is_grease(v)).count();
        assert_eq!(count, 16);
        for v in [
            0x0000, 0x0a0b, 0x1a2a, 0x0a1a, 0xaaab, 0x1301, 0xefef, 0xeeee,
        ] {
            assert!(!is_grease(v), "{v:#06x}");
        }
    }

    #[test]
    fn spec_example_vector() {
        assert_eq!(ja4(&spec_example()), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn spec_example_without_signature_algorithms() {
        // Spec: no signature algorithms -> no trailing underscore; that list hashes to 6d807ffa2a79.
        let mut h = spec_example();
        h.signature_algorithms.clear();
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_6d807ffa2a79");
        // Only GREASE signature algorithms count as none.
        h.signature_algorithms = vec![0x0a0a];
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_6d807ffa2a79");
    }

    #[test]
    fn grease_anywhere_is_ignored() {
        let mut plain = spec_example();
        plain.ciphers.retain(|&c| !is_grease(c));
        plain.extensions.retain(|&e| !is_grease(e));
        plain.supported_versions.retain(|&v| !is_grease(v));
        plain.groups.retain(|&g| !is_grease(g));
        let mut greasy = spec_example();
        greasy.signature_algorithms.insert(3, 0x5a5a);
        greasy.supported_versions.push(0xfafa); // numerically highest, must not win
        assert_eq!(ja4(&plain), ja4(&greasy));
        assert_eq!(ja3(&plain), ja3(&greasy));
    }

    #[test]
    fn empty_hello() {
        let h = HelloFields::default();
        assert_eq!(ja4(&h), "t00i000000_000000000000_000000000000");
        let (s, m) = ja3(&h);
        assert_eq!(s, "0,,,,");
        assert_eq!(m, md5_hex("0,,,,"));
    }

    #[test]
    fn only_sni_and_alpn_extensions_give_empty_part_c() {
        let h = HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![0x1301],
            extensions: vec![0x0000, 0x0010],
            sni: Some("a.example".into()),
            alpn: vec![b"h2".to_vec()],
            signature_algorithms: vec![0x0403],
            ..Default::default()
        };
        let fp = ja4(&h);
        assert!(fp.starts_with("t12d0102h2_"), "{fp}");
        assert!(fp.ends_with("_000000000000"), "{fp}");
        assert_ne!(&fp[11..23], "000000000000");
    }

    #[test]
    fn version_selection() {
        let mut h = HelloFields {
            legacy_version: 0x0301,
            ..Default::default()
        };
        let code = |h: &HelloFields| ja4(h)[1..3].to_string();
        assert_eq!(code(&h), "10");
        h.supported_versions = vec![0x0a0a];
        assert_eq!(code(&h), "10", "only GREASE -> legacy_version");
        h.supported_versions = vec![0x0303, 0x0304, 0x0302];
        assert_eq!(code(&h), "13", "highest, not first");
        for (v, c) in [
            (0x0303, "12"),
            (0x0302, "11"),
            (0x0300, "s3"),
            (0x0002, "s2"),
            (0xfeff, "d1"),
            (0xfefd, "d2"),
            (0xfefc, "d3"),
            (0x7f1c, "00"),
            (0x0200, "00"),
        ] {
            h.supported_versions = vec![v];
            assert_eq!(code(&h), c, "{v:#06x}");
        }
    }

    #[test]
    fn sni_flag_and_counts_cap() {
        let mut h = HelloFields {
            legacy_version: 0x0303,
            ciphers: (1..=150).collect(),
            extensions: (100..250).collect(),
            ..Default::default()
        };
        assert_eq!(&ja4(&h)[..10], "t12i999900");
        // SNI extension present is enough.
        h.extensions.push(0);
        assert_eq!(&ja4(&h)[..4], "t12d");
        h.extensions.pop();
        h.sni = Some("x".into());
        assert_eq!(&ja4(&h)[..4], "t12d");
    }

    #[test]
    fn alpn_rules() {
        let a = |v: &[&[u8]]| ja4_alpn(&v.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
        assert_eq!(a(&[]), "00");
        assert_eq!(a(&[b""]), "00");
        assert_eq!(a(&[b"", b"h2"]), "00", "only the first value counts");
        assert_eq!(a(&[b"h2", b"http/1.1"]), "h2");
        assert_eq!(a(&[b"http/1.1"]), "h1");
        assert_eq!(a(&[b"h"]), "hh");
        assert_eq!(a(&[b"spdy/3"]), "s3");
        assert_eq!(a(&[b"ftp"]), "fp");
        // Examples from the specification.
        assert_eq!(a(&[&[0xab]]), "ab");
        assert_eq!(a(&[&[0xab, 0xcd]]), "ad");
        assert_eq!(a(&[&[0x30, 0xab]]), "3b");
        assert_eq!(a(&[&[0x30, 0x31, 0xab, 0xcd]]), "3d");
        assert_eq!(a(&[&[0x30, 0xab, 0xcd, 0x31]]), "01");
        // Printable but not alphanumeric.
        assert_eq!(a(&[b"h2-"]), "6d");
        assert_eq!(a(&[b"/"]), "2f");
        assert_eq!(a(&[b"h\x1f"]), "6f");
    }

    #[test]
    fn ja3_spec_example_shape() {
        let (s, m) = ja3(&spec_example());
        assert_eq!(
            s,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,29-23-24,0"
        );
        assert_eq!(m.len(), 32);
        assert_eq!(m, md5_hex(&s));
    }

    #[test]
    fn md5_known_answer() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn ja3s_format() {
        let (s, m) = ja3s(771, 49199, &[65281, 0, 11]);
        assert_eq!(s, "771,49199,65281-0-11");
        assert_eq!(m, md5_hex("771,49199,65281-0-11"));
        let (s, _) = ja3s(771, 4865, &[]);
        assert_eq!(s, "771,4865,");
        let (s, _) = ja3s(771, 4865, &[0x0a0a, 43, 51]);
        assert_eq!(s, "771,4865,43-51");
    }

    // ---- Real ClientHellos from the FoxIO JA4 test captures -------------------
    // Fields were read with `tshark -T fields` from tests/corpus/public/ja4/pcap;
    // expected values are from ja4/expected/python/*.json (JA4) and tshark's
    // tls.handshake.ja3 / ja3_full (JA3).

    /// badcurveball.pcap, stream 0 (Chrome, GREASE everywhere, 0x000a cipher last).
    fn badcurveball() -> HelloFields {
        HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![
                0xaaaa, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                0xc013, 0xc014, 0x9c, 0x9d, 0x2f, 0x35, 0xa,
            ],
            extensions: vec![
                19018, 0, 23, 65281, 10, 11, 35, 16, 5, 13, 18, 51, 45, 43, 27, 31354, 21,
            ],
            sni: Some("bad.curveballtest.com".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            supported_versions: vec![0x2a2a, 0x304, 0x303, 0x302, 0x301],
            signature_algorithms: vec![
                0x403, 0x804, 0x401, 0x503, 0x805, 0x501, 0x806, 0x601, 0x201,
            ],
            groups: vec![0xcaca, 0x1d, 0x17, 0x18],
            ec_point_formats: vec![0],
        }
    }

    #[test]
    fn corpus_badcurveball() {
        let h = badcurveball();
        assert_eq!(ja4(&h), "t13d1615h2_46e7e9700bed_45f260be83e2");
        let (s, m) = ja3(&h);
        assert_eq!(
            s,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53-10,\
             0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21,29-23-24,0"
        );
        assert_eq!(m, "66918128f1b9b03303d77c6f2eefd128");
    }

    /// tls-handshake.pcapng, stream 6 (mtalk.google.com:5228): no ALPN.
    #[test]
    fn corpus_mtalk_no_alpn() {
        let h = HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![
                0xaaaa, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
                0xc013, 0xc014, 0x9c, 0x9d, 0x2f, 0x35,
            ],
            extensions: vec![
                6682, 51, 43, 27, 0, 18, 45, 13, 10, 5, 35, 23, 65281, 11, 51914, 21,
            ],
            sni: Some("mtalk.google.com".into()),
            alpn: vec![],
            supported_versions: vec![0x9a9a, 0x304, 0x303],
            signature_algorithms: vec![0x403, 0x804, 0x401, 0x503, 0x805, 0x501, 0x806, 0x601],
            groups: vec![0x1a1a, 0x1d, 0x17, 0x18],
            ec_point_formats: vec![0],
        };
        assert_eq!(ja4(&h), "t13d151400_8daaf6152771_de4a06bb82e3");
        let (s, m) = ja3(&h);
        assert_eq!(
            s,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             51-43-27-0-18-45-13-10-5-35-23-65281-11-21,29-23-24,0"
        );
        assert_eq!(m, "bfc66ad4d55e0c1a1847863d4d5c301a");
    }

    /// ipv6.pcapng, stream 0: TLS 1.2 only (no supported_versions), and
    /// signature algorithms 0xefef/0xeeee/0xeded that look odd but are not GREASE.
    #[test]
    fn corpus_ipv6_tls12() {
        let h = HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![
                0xc030, 0xc02c, 0xc028, 0xc024, 0xc014, 0xc00a, 0x9f, 0x6b, 0x39, 0xcca9, 0xcca8,
                0xccaa, 0xff85, 0xc4, 0x88, 0x81, 0x9d, 0x3d, 0x35, 0xc0, 0x84, 0xc02f, 0xc02b,
                0xc027, 0xc023, 0xc013, 0xc009, 0x9e, 0x67, 0x33, 0xbe, 0x45, 0x9c, 0x3c, 0x2f,
                0xba, 0x41, 0xc011, 0xc007, 0x5, 0x4, 0xc012, 0xc008, 0x16, 0xa, 0xff,
            ],
            extensions: vec![0, 11, 10, 13, 16],
            sni: Some("www.cloudflare.com".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            supported_versions: vec![],
            signature_algorithms: vec![
                0x601, 0x603, 0xefef, 0x501, 0x503, 0x401, 0x403, 0xeeee, 0xeded, 0x301, 0x303,
                0x201, 0x203,
            ],
            groups: vec![0x1d, 0x17, 0x18],
            ec_point_formats: vec![0],
        };
        assert_eq!(ja4(&h), "t12d4605h2_85626a9a5f7f_aaf95bb78ec9");
        assert_eq!(ja3(&h).1, "3faa4ad39f690c4ef1c3160caa375465");
    }

    /// socks-https-example.pcap, stream 0: TLS 1.0, SNI is the only extension
    /// (part c = zeros), and JA3 with empty group / point-format fields.
    #[test]
    fn corpus_socks_tls10_only_sni() {
        let h = HelloFields {
            legacy_version: 0x0301,
            ciphers: vec![
                0x39, 0x38, 0x35, 0x16, 0x13, 0xa, 0x33, 0x32, 0x2f, 0x9a, 0x99, 0x96, 0x5, 0x4,
                0x15, 0x12, 0x9, 0x14, 0x11, 0x8, 0x6, 0x3, 0xff,
            ],
            extensions: vec![0],
            sni: Some("www.example.com".into()),
            ..Default::default()
        };
        assert_eq!(ja4(&h), "t10d230100_6a57a6f57151_000000000000");
        let (s, m) = ja3(&h);
        assert_eq!(
            s,
            "769,57-56-53-22-19-10-51-50-47-154-153-150-5-4-21-18-9-20-17-8-6-3-255,0,,"
        );
        assert_eq!(m, "06a92bf69b367389d2feb0d70501ddfe");
    }

    /// https-connect.pcap: 86 ciphers, no SNI, no ALPN (expected JA4 from the
    /// FoxIO Rust snapshot).
    #[test]
    fn corpus_https_connect_no_sni() {
        let h = HelloFields {
            legacy_version: 0x0303,
            ciphers: vec![
                0xc030, 0xc02c, 0xc028, 0xc024, 0xc014, 0xc00a, 0xa5, 0xa3, 0xa1, 0x9f, 0x6b, 0x6a,
                0x69, 0x68, 0x39, 0x38, 0x37, 0x36, 0x88, 0x87, 0x86, 0x85, 0xc032, 0xc02e, 0xc02a,
                0xc026, 0xc00f, 0xc005, 0x9d, 0x3d, 0x35, 0x84, 0xc02f, 0xc02b, 0xc027, 0xc023,
                0xc013, 0xc009, 0xa4, 0xa2, 0xa0, 0x9e, 0x67, 0x40, 0x3f, 0x3e, 0x33, 0x32, 0x31,
                0x30, 0x9a, 0x99, 0x98, 0x97, 0x45, 0x44, 0x43, 0x42, 0xc031, 0xc02d, 0xc029,
                0xc025, 0xc00e, 0xc004, 0x9c, 0x3c, 0x2f, 0x96, 0x41, 0xc012, 0xc008, 0x16, 0x13,
                0x10, 0xd, 0xc00d, 0xc003, 0xa, 0x7, 0xc011, 0xc007, 0xc00c, 0xc002, 0x5, 0x4,
                0xff,
            ],
            extensions: vec![11, 10, 35, 13, 15],
            sni: None,
            alpn: vec![],
            supported_versions: vec![],
            signature_algorithms: vec![
                0x601, 0x602, 0x603, 0x501, 0x502, 0x503, 0x401, 0x402, 0x403, 0x301, 0x302, 0x303,
                0x201, 0x202, 0x203,
            ],
            groups: vec![0x17, 0x19, 0x18, 0x16],
            ec_point_formats: vec![0, 1, 2],
        };
        assert_eq!(ja4(&h), "t12i860500_e18388e7f3a3_a1e935682795");
        assert_eq!(ja3(&h).1, "b288289af2999820648eb3ca4d8304c5");
    }
}
