//! The encapsulation headers below and between IP layers: the first input byte picks the parser
//! (0 Geneve, 1 GTP-U, 2 MPLS, 3 TrustSec, modulo 4), the rest is the bytes after the UDP header
//! or the EtherType. Whatever a parser returns must be a view into its input that starts after the
//! header it read, and what it names must agree with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::decode::tunnel::{Decapsulated, Inner, TunnelKind};
use pinwatch::decode::{cmd, geneve, gtp, mpls};

/// `inner` lies inside `outer`, at least `header` bytes from its start.
fn within(outer: &[u8], inner: &[u8], header: usize) {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    assert!(
        i.start >= o.start && i.end <= o.end,
        "not a view into the input"
    );
    assert_eq!(
        i.end, o.end,
        "the inner packet runs to the end of the input"
    );
    assert!(inner.len() + header <= outer.len(), "header stepped over");
}

fn inner_of<'a>(d: &Decapsulated<'a>) -> &'a [u8] {
    match d.inner {
        Inner::Ethernet(f) => f,
        Inner::EtherType(t, p) => {
            assert!(t == 0x0800 || t == 0x86dd, "EtherType {t:#x}");
            p
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            if let Ok(d) = geneve::parse(bytes) {
                assert_eq!(d.kind, TunnelKind::Geneve);
                assert!(d.id.is_some_and(|vni| vni < 1 << 24));
                within(bytes, inner_of(&d), 8 + usize::from(bytes[0] & 0x3f) * 4);
            }
        }
        1 => {
            if let Ok(d) = gtp::parse(bytes) {
                assert_eq!(d.kind, TunnelKind::GtpU);
                let packet = inner_of(&d);
                assert!(matches!(packet.first().map(|b| b >> 4), Some(4 | 6)));
                // Bounded by the header's length field, so it may end before the input.
                let o = bytes.as_ptr_range();
                let i = packet.as_ptr_range();
                assert!(i.start >= o.start && i.end <= o.end);
                assert!(packet.len() + 8 <= bytes.len());
            }
        }
        2 => match mpls::parse(bytes) {
            Ok(mpls::Payload::Ip(t, ip)) => {
                assert!(t == 0x0800 || t == 0x86dd);
                within(bytes, ip, 4);
            }
            Ok(mpls::Payload::Ethernet(frame)) => within(bytes, frame, 8),
            Err(_) => {}
        },
        _ => {
            if let Ok(t) = cmd::parse(bytes) {
                within(bytes, t.rest, 8);
                assert_eq!(t.ether_type, u16::from_be_bytes([bytes[6], bytes[7]]));
            }
        }
    }
});
