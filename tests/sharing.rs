//! What connections share: the certificate summary and the ClientHello print of a real TLS 1.2
//! exchange are parsed once per thread and held by reference, so a tracked connection does not
//! carry its own copy of kilobytes of strings (see `scripts/bench-memory`).

mod common;
mod hostile;

use std::sync::Arc;

use pinwatch::tls::cert;
use pinwatch::tls::{At, Dir, Session};

/// A session that saw the real exchange's ClientHello and server flight.
fn session_after_server_flight(client_hello: &[u8], server: &[u8]) -> Session {
    let mut session = Session::new(64 * 1024);
    session.feed(Dir::Client, 0, client_hello, At::new(1, 1));
    session.feed(Dir::Server, 0, server, At::new(2, 2));
    session
}

#[test]
fn connections_with_the_same_chain_and_hello_shape_share_one_parsed_copy() {
    let (client_hello, server, _alert) = hostile::tls12_rejection();
    let a = session_after_server_flight(&client_hello, &server);
    let b = session_after_server_flight(&client_hello, &server);

    let (cert_a, cert_b) = (a.obs.cert.as_ref(), b.obs.cert.as_ref());
    let (cert_a, cert_b) = (cert_a.expect("chain parsed"), cert_b.expect("chain parsed"));
    assert!(cert_a.parsed, "{cert_a:?}");
    assert!(
        Arc::ptr_eq(cert_a, cert_b),
        "one summary for both connections"
    );

    let (hello_a, hello_b) = (a.obs.client_hello.as_ref(), b.obs.client_hello.as_ref());
    let (hello_a, hello_b) = (hello_a.expect("hello"), hello_b.expect("hello"));
    assert!(Arc::ptr_eq(&hello_a.print, &hello_b.print));
    assert_eq!(hello_a.sni, hello_b.sni);
    assert!(hello_a.sni.is_some());
    // The shared print says a name was sent without holding one connection's name.
    assert_eq!(hello_a.print.fields.sni.as_deref(), Some(""));

    let server_hello = |s: &Session| s.obs.server_hello.clone().expect("server hello");
    assert!(Arc::ptr_eq(&server_hello(&a), &server_hello(&b)));
}

#[test]
fn a_shared_summary_is_the_one_a_fresh_parse_gives() {
    let (client_hello, server, _alert) = hostile::tls12_rejection();
    let shared = session_after_server_flight(&client_hello, &server)
        .obs
        .cert
        .expect("chain parsed");
    let chain = chain_of(&server);
    let fresh = cert::summarize(&chain.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert_eq!(Some(&*shared), fresh.as_ref());
}

/// The certificates of the Certificate message in a TLS 1.2 server flight (plaintext records).
fn chain_of(flight: &[u8]) -> Vec<Vec<u8>> {
    let mut handshake = Vec::new();
    let mut rest = flight;
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if rest[0] == 22 {
            handshake.extend_from_slice(&rest[5..5 + len]);
        }
        rest = &rest[5 + len..];
    }
    let mut messages = handshake.as_slice();
    while messages.len() >= 4 {
        let len = u32::from_be_bytes([0, messages[1], messages[2], messages[3]]) as usize;
        let body = &messages[4..4 + len];
        if messages[0] == 11 {
            let mut certs = Vec::new();
            let mut list = &body[3..];
            while list.len() >= 3 {
                let n = u32::from_be_bytes([0, list[0], list[1], list[2]]) as usize;
                certs.push(list[3..3 + n].to_vec());
                list = &list[3 + n..];
            }
            return certs;
        }
        messages = &messages[4 + len..];
    }
    panic!("no Certificate message in the flight");
}
