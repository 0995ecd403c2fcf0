//! The proxy preludes: HTTP CONNECT request and reply heads, SOCKS4/4a/5 client and server
//! preludes, all over the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::session::connect;
use pinwatch::session::socks::{self, Prelude};

fuzz_target!(|data: &[u8]| {
    let head = match connect::head_end(data) {
        Some(end) => {
            assert!(end >= 4 && end <= data.len());
            assert_eq!(&data[end - 4..end], b"\r\n\r\n");
            &data[..end]
        }
        None => data,
    };
    let request = connect::parse_request(head);
    if let Some(req) = &request {
        // The host is a part of the target, never more.
        assert!(req.target.contains(req.target_host()));
        assert_eq!(req.method, connect::Method::Connect);
    }
    let reply = connect::parse_response(head);
    let exchange = connect::Exchange {
        request,
        reply,
        proxy_protocol: None,
    };
    assert!(exchange.reply.is_some() || !exchange.opened());
    match socks::client(data) {
        Prelude::Client {
            len,
            version,
            target,
        } => {
            assert!(
                len > 0 && len <= data.len(),
                "prelude longer than its bytes"
            );
            assert!(version == 4 || version == 5);
            assert!(!target.is_empty());
        }
        Prelude::Server { .. } => panic!("client parser returned a server prelude"),
        Prelude::NeedMore | Prelude::Invalid => {}
    }
    for version in [4, 5] {
        match socks::server(data, version) {
            Prelude::Server { len, .. } => {
                assert!(
                    len > 0 && len <= data.len(),
                    "prelude longer than its bytes"
                );
            }
            Prelude::Client { .. } => panic!("server parser returned a client prelude"),
            Prelude::NeedMore | Prelude::Invalid => {}
        }
    }
});
