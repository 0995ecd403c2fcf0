//! The PROXY protocol header parser, over the first bytes of a client stream. A header is
//! decided by its own bytes: its length is within the input and the limits, the same bytes alone
//! give the same header, and every shorter prefix asks for more instead of giving an answer (a
//! header split across TCP segments must not be misread).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::session::proxy_protocol::{self, MAX_HEADER_LEN, MAX_V1_LEN, Parse};

fuzz_target!(|data: &[u8]| {
    match proxy_protocol::parse(data) {
        Parse::Header { len, header } => {
            assert!(len <= data.len());
            match header.version {
                1 => assert!(len <= MAX_V1_LEN),
                2 => assert!(len <= MAX_HEADER_LEN),
                v => panic!("version {v}"),
            }
            assert_eq!(header.source.is_some(), header.destination.is_some());
            if let (Some(s), Some(d)) = (header.source, header.destination) {
                assert_eq!(s.is_ipv4(), d.is_ipv4());
            }
            assert_eq!(
                proxy_protocol::parse(&data[..len]),
                Parse::Header {
                    len,
                    header: header.clone()
                }
            );
            for cut in 0..len {
                assert_eq!(
                    proxy_protocol::parse(&data[..cut]),
                    Parse::NeedMore,
                    "cut {cut}"
                );
            }
        }
        Parse::NeedMore => {
            assert!(proxy_protocol::may_start(data));
            assert!(data.len() < MAX_HEADER_LEN);
        }
        Parse::Invalid => {}
    }
});
