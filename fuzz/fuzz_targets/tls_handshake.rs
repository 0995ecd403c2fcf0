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
            let _ = (ch.alpn(), ch.max_version(), ch.offered_versions());
            let _ = handshake::version_name(ch.max_version());
            assert!(ch.ja4.is_ascii());
            assert_eq!(ch.ja3.len(), 32, "ja3 is an MD5 in hex");
            if let Some(sni) = &ch.fields.sni {
                assert!(sni.len() <= 4 * 255, "printable() bounds names");
            }
        }
        Message::ServerHello(sh) => {
            let _ = (sh.is_tls13(), handshake::cipher_name(sh.cipher));
            let _ = handshake::version_name(sh.version);
            assert_eq!(sh.ja3s.len(), 32, "ja3s is an MD5 in hex");
        }
        Message::Certificate(chain) => {
            if let Some(summary) = cert::summarize(&chain) {
                serde_json::to_string(&summary).expect("a summary serialises");
            }
        }
        Message::ServerHelloDone
        | Message::CertificateRequest
        | Message::ClientKeyExchange
        | Message::Other(_)
        | Message::Malformed(_) => {}
    }
});
