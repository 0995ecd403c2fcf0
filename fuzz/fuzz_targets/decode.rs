//! Packet decode for every link type pinwatch reads: the first input byte picks the link type,
//! the rest is the frame. A decoded segment must be a view into the frame that agrees with it,
//! and the quick shard hash of a plain Ethernet/IPv4/TCP frame must be the decoded segment's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::decode::{self, MAX_VLANS};
use pinwatch_fuzz::LINKTYPES;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let linktype = LINKTYPES[pick as usize % LINKTYPES.len()];
    let quick = decode::quick_flow_hash(linktype, frame);
    let Ok(seg) = decode::decode(linktype, frame) else {
        return;
    };
    // Workers pass over other shards' packets by the quick hash: it must be the decoded one.
    if let Some(hash) = quick {
        assert_eq!(hash, seg.flow_hash(), "{seg:?}");
    }
    // The payload is borrowed from the frame, not copied or invented.
    let frame_range = frame.as_ptr_range();
    let payload_range = seg.payload.as_ptr_range();
    assert!(seg.payload.is_empty() || frame_range.start <= payload_range.start);
    assert!(payload_range.end <= frame_range.end);
    // Bytes present never exceed the bytes the headers say were on the wire.
    assert!(seg.payload.len() as u64 <= u64::from(seg.wire_len));
    assert!(seg.vlan_count as usize <= MAX_VLANS);
    assert_eq!(seg.vlans().len(), seg.vlan_count as usize);
    assert_eq!(seg.src.is_ipv4(), seg.dst.is_ipv4());
});
