//! Regression tests for what the fuzz targets (fuzz/, `scripts/fuzz`) found: each replays the
//! minimised input through the API the target drives and checks what a user would notice.

use pinwatch::capture::{CaptureError, CaptureReader};
use pinwatch::flow::reassembly::{Chunk, Reassembler};

/// Reads a capture held in memory to its end: the frames' lengths, then how it ended.
fn read_all(bytes: &[u8]) -> (Vec<usize>, Result<(), CaptureError>) {
    let mut reader =
        match CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(bytes.to_vec())) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Err(e)),
        };
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => frames.push(f.data.len()),
            Ok(None) => return (frames, Ok(())),
            Err(e) => return (frames, Err(e)),
        }
    }
}

/// A little-endian pcapng section header block (28 bytes), no options.
fn pcapng_shb() -> Vec<u8> {
    let mut b = vec![
        0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0,
    ];
    b.extend([0xff; 8]);
    b.extend([28, 0, 0, 0]);
    b
}

/// capture_reader target: a pcapng process-information block (type 0x80000001) stating a
/// length of 8. pcap-parser subtracts the 12 header bytes from it unchecked: a panic in debug
/// builds, and in release a wrapped length reported as an oversized record. The reader now
/// refuses the block itself and says why.
#[test]
fn pcapng_block_shorter_than_its_header_is_damage_not_a_panic() {
    let mut file = pcapng_shb();
    file.extend([0x01, 0x00, 0x00, 0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let (frames, end) = read_all(&file);
    assert!(frames.is_empty());
    match end {
        Err(CaptureError::Damaged { offset, what, .. }) => {
            assert_eq!(offset, 28, "the damage starts at the second block");
            assert!(what.contains("shorter than a block header"), "{what}");
        }
        other => panic!("expected damage at offset 28, got {other:?}"),
    }
}

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
        r.segment(1000 + 2 + 2 * i, &[b'x'], 1, &mut |c| sink.take(c));
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
