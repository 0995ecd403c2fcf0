//! What a tracked connection keeps once its outcome is settled: the handshake timeline goes
//! with the framing state, and the connection itself stays within one small allocation (see
//! `scripts/bench-memory` for the resident memory per connection this gives).

mod common;
mod hostile;

use pinwatch::flow::Connection;
use pinwatch::tls::{At, Dir, Session, Timeline};

/// The real TLS 1.2 exchange up to the server's flight, on a fresh session.
fn after_server_flight() -> (Session, Vec<u8>, Vec<u8>) {
    let (client_hello, server, alert) = hostile::tls12_rejection();
    let mut session = Session::new(64 * 1024);
    session.feed(Dir::Client, 0, &client_hello, At::new(1, 1_000));
    session.feed(Dir::Server, 0, &server, At::new(2, 2_000));
    (session, client_hello, alert)
}

fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

#[test]
fn an_established_connection_drops_its_handshake_timeline() {
    let (mut session, client_hello, _) = after_server_flight();
    let timeline = session.obs.timeline().clone();
    assert!(timeline.server_hello.is_some(), "{timeline:?}");
    assert!(timeline.server_hello_done.is_some(), "{timeline:?}");

    // The client's answer: ChangeCipherSpec, its encrypted Finished, then application data.
    let mut answer = record(20, &[1]);
    answer.extend(record(22, &[0x5a; 40]));
    answer.extend(record(23, &[0xa5; 64]));
    session.feed(
        Dir::Client,
        client_hello.len() as u64,
        &answer,
        At::new(3, 3_000),
    );

    assert!(session.settled());
    assert!(session.obs.client_app().is_some());
    assert_eq!(session.obs.timeline(), &Timeline::default());
}

#[test]
fn a_rejected_handshake_keeps_the_timeline_it_is_judged_by() {
    let (mut session, client_hello, alert) = after_server_flight();
    session.feed(
        Dir::Client,
        client_hello.len() as u64,
        &alert,
        At::new(3, 3_000),
    );
    assert!(session.obs.client_alert().is_some());
    let timeline = session.obs.timeline();
    assert!(timeline.last_server_handshake.is_some(), "{timeline:?}");
    assert!(timeline.server_hello_done.is_some(), "{timeline:?}");
}

/// 320 bytes is one of the allocator's size classes: a connection one byte larger is stored in
/// the 384-byte class, 20% more memory for every tracked connection. (It was 512 until the
/// counters, FIN/RST times and CONNECT heads that most connections never need moved out of line,
/// then 384 until the reassembly cap stopped being stored in each stream and the alerts and
/// anomalies shared one box.)
#[test]
fn a_connection_fits_the_320_byte_size_class() {
    let size = std::mem::size_of::<Connection>();
    assert!(size <= 320, "Connection is {size} bytes");
}
