//! The TLS stage of one connection fed both byte streams, as the flow stage feeds it: in-order
//! chunks per direction, interleaved, with holes where the capture lost bytes.
//!
//! Input: a config byte (bits 0-2: handshake cap 256 << n), then chunks: a header byte (bit 0:
//! 0 client / 1 server; bit 1: a hole of (bits 2-7) + 1 bytes comes first), a u16 length and
//! that many bytes (fewer at the end of the input). The streams may hold a CONNECT or SOCKS
//! prelude, TLS records, or anything else.
//!
//! Checked: once settled the session wants no more bytes; anomaly names are not repeated;
//! application data is placed inside the bytes fed; the memory held stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::tls::{At, Dir, Session};
use pinwatch_fuzz::{Input, live_bytes};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(config) = input.u8() else { return };
    let cap = 256usize << (config & 7);
    let baseline = live_bytes();
    let mut session = Session::new(cap);
    // Per direction: buffers bounded by the handshake cap (grown by doubling), a record body,
    // an HTTP head, a SOCKS prelude; plus what the hellos and the certificate summary keep.
    let bound = 32 * cap + (256 << 10);
    let mut offsets = [0u64; 2];
    let mut at = At::new(1, 0);
    while let (Some(head), Some(len)) = (input.u8(), input.u16()) {
        let bytes = input.take_up_to(len as usize);
        let (dir, i) = if head & 1 == 0 {
            (Dir::Client, 0)
        } else {
            (Dir::Server, 1)
        };
        at = At::new(at.pkt() + 1, at.ts_ns + 1_000_000);
        if head & 2 != 0 {
            session.gap(dir);
            offsets[i] += u64::from(head >> 2) + 1;
        }
        if session.wants(dir) {
            session.feed(dir, offsets[i], bytes, at);
        }
        offsets[i] += bytes.len() as u64;

        if session.settled() {
            assert!(!session.wants(Dir::Client) && !session.wants(Dir::Server));
        }
        let obs = &session.obs;
        for (n, a) in obs.anomalies().iter().enumerate() {
            assert!(!obs.anomalies()[..n].contains(a), "anomaly {a} listed twice");
        }
        if let Some(o) = obs.client_app_offset() {
            assert!(o < offsets[0], "client data placed past the bytes fed");
        }
        if let Some(o) = obs.server_app_offset() {
            assert!(o < offsets[1], "server data placed past the bytes fed");
        }
        let held = live_bytes().saturating_sub(baseline);
        assert!(
            held <= bound,
            "session holds {held} bytes with a cap of {cap}"
        );
    }
});
