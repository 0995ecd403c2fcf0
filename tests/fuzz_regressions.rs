//! Regression tests for what the fuzz targets (fuzz/, `scripts/fuzz`) found: each replays the
//! minimised input through the API the target drives and checks what a user would notice.

use pinwatch::flow::reassembly::{Chunk, Reassembler};

/// reassembly target: thousands of 1-byte out-of-order segments, each leaving a hole. The queue
/// counted only payload bytes, so 2000 one-byte pieces (2000 "bytes" under an 8 KiB cap) held
/// about 29 KB of vectors and map entries, and with the default 64 KiB cap a hostile sender could
/// make one direction hold megabytes. Each piece now costs its bookkeeping too, so the queue
/// overflows (holes are given up and reported) long before that.
#[test]
fn one_byte_out_of_order_segments_cannot_hold_many_times_the_cap() {
    let cap = 8192;
    let mut r = Reassembler::new(cap);
    r.syn(1000);
    let mut sink = Sink::default();
    for i in 0..2000u32 {
        // Stream offsets 1, 3, 5...: every even offset is a hole the capture never fills.
        r.segment(1000 + 2 + 2 * i, b"x", 1, &mut |c| sink.take(c));
    }
    assert!(
        r.stats.queue_overflows > 0,
        "2000 queued pieces fit an 8 KiB queue"
    );
    let released_by_overflow = sink.data.len();
    r.finish(&mut |c| sink.take(c));
    // What was still queued at the end: bounded by the cap, bookkeeping included.
    let held_at_end = sink.data.len() - released_by_overflow;
    assert!(
        held_at_end * 64 <= cap,
        "{held_at_end} one-byte pieces were still queued under a {cap}-byte cap"
    );
    // Every byte came out once, each after its hole.
    assert_eq!(sink.data, vec![b'x'; 2000]);
    assert_eq!(sink.gaps, 2000);
}

#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    gaps: usize,
}

impl Sink {
    fn take(&mut self, chunk: Chunk<'_>) {
        match chunk {
            Chunk::Data { bytes, .. } => self.data.extend_from_slice(bytes),
            Chunk::Gap { .. } => self.gaps += 1,
        }
    }
}
