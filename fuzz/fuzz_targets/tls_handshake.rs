//! One TLS handshake message (4-byte header included), as the TLS stage hands it to the parser:
//! hellos with their fingerprints, certificate chains with their summaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::tls::cert;
use pinwatch::tls::handshake::{self, Message};

fuzz_target!(|data: &[u8]| {
    match handshake::parse(data) {
        Message::ClientHello(ch) => {
            // Everything the connection record takes from a ClientHello.
            let print = &ch.print;
            let _ = (print.alpn(), print.max_version(), print.offered_versions());
            let _ = handshake::version_name(print.max_version());
            assert!(print.ja4.is_ascii());
            assert_eq!(print.ja3.len(), 32, "ja3 is an MD5 in hex");
            assert_eq!(print.fields.sni.is_some(), ch.sni.is_some());
            if let Some(sni) = &ch.sni {
                assert!(sni.len() <= 4 * 255, "printable() bounds names");
            }
        }
        Message::ServerHello(sh) => {
            let _ = (sh.is_tls13(), handshake::cipher_name(sh.cipher));
            let _ = handshake::version_name(sh.version);
            assert_eq!(sh.ja3s.len(), 32, "ja3s is an MD5 in hex");
        }
        Message::Certificate(chain) => {
            let fresh = cert::summarize(&chain);
            // The shared summary (from the per-thread cache when this message was seen before)
            // is the one a fresh parse gives.
            let shared = cert::summarize_shared(data, &chain);
            assert_eq!(fresh.as_ref(), shared.as_deref());
            if let Some(summary) = fresh {
                serde_json::to_string(&summary).expect("a summary serialises");
            }
        }
        Message::CertificateStatus(has_sct) => {
            // Only a status_type 1 (OCSP) message can carry SCTs; the OCSP walk is its own
            // target (ocsp.rs).
            assert!(!has_sct || data.get(4) == Some(&1));
        }
        Message::ServerHelloDone | Message::Other(_) | Message::Malformed(_) => {}
    }
});
