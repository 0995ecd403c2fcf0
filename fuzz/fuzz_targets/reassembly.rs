//! One direction of TCP reassembly driven by a fuzzed sequence of segments, ACKs and FINs.
//!
//! Input: a config byte (bits 0-2: queue cap 64 << n; bit 7: "consistent" payloads), a 4-byte
//! initial sequence number, then operations. Each operation is an opcode byte (bits 0-2: kind;
//! bit 3: a 4-byte sequence offset instead of 2 bytes) followed by its fields:
//!   0 SYN    offset
//!   1 DATA   offset, u16 length, u8 cut (bytes missing at the end, as after a snap length),
//!            then the payload itself unless payloads are consistent
//!   2 ACK    offset (the peer acknowledged up to there)
//!   3 FIN    offset, u16 length
//!   4 STOP   the consumer wants no more bytes
//!   5 FINISH the flow ended: flush past every hole
//! A consistent payload byte is a function of its sequence number, so every copy of a byte is
//! the same and the delivered stream can be checked byte for byte.
//!
//! Checked: chunks are handed out in stream order without overlap or holes between them; no
//! chunk after STOP; consistent payloads arrive intact with no mismatch flagged; the memory
//! held stays within a fixed multiple of the cap whatever the segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::flow::reassembly::{Chunk, Reassembler};
use pinwatch_fuzz::{Input, live_bytes};

/// The byte at a sequence number in consistent mode.
fn byte_at(seq: u32) -> u8 {
    (seq.wrapping_mul(0x9e37_79b1) >> 24) as u8
}

/// What the consumer has seen, checked chunk by chunk.
struct Consumer {
    /// Stream offset the next chunk must start at.
    next: u64,
    /// Sequence number of stream offset 0, as the reassembler anchors it.
    base: Option<u32>,
    consistent: bool,
    stopped: bool,
}

impl Consumer {
    fn take(&mut self, chunk: Chunk<'_>) {
        assert!(!self.stopped, "chunk delivered after stop_delivering");
        let (offset, len) = match chunk {
            Chunk::Data { offset, bytes } => {
                if self.consistent {
                    let base = self.base.expect("data before any anchor");
                    for (i, &b) in bytes.iter().enumerate() {
                        let seq = base.wrapping_add((offset + i as u64) as u32);
                        assert_eq!(
                            b,
                            byte_at(seq),
                            "wrong byte at stream offset {}",
                            offset + i as u64
                        );
                    }
                }
                (offset, bytes.len() as u64)
            }
            Chunk::Gap { offset, len } => (offset, len),
        };
        assert_eq!(offset, self.next, "chunk out of stream order");
        assert!(len > 0, "empty chunk");
        self.next += len;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (Some(config), Some(isn)) = (input.u8(), input.u32()) else {
        return;
    };
    let cap = 64usize << (config & 7);
    let consistent = config & 0x80 != 0;
    // Allocated before the baseline so that only the reassembler's own memory is measured.
    let mut payload = vec![0u8; 1 << 16];
    let mut r = Reassembler::new();
    let mut c = Consumer {
        next: 0,
        base: None,
        consistent,
        stopped: false,
    };
    let baseline = live_bytes();
    // The queue is charged its bytes plus a fixed cost per piece and holds at most `cap` of
    // that (the map's half-empty nodes may take a little more than the charge); the retained
    // prefix holds at most `cap` bytes, in a vector that may have doubled past that.
    let bound = 4 * cap + 4096;
    while let Some(op) = input.u8() {
        let offset = if op & 8 != 0 {
            input.u32()
        } else {
            input.u16().map(u32::from)
        };
        let Some(offset) = offset else { break };
        let seq = isn.wrapping_add(offset);
        match op & 7 {
            0 => {
                c.base.get_or_insert(seq.wrapping_add(1));
                r.syn(seq);
            }
            1 => {
                let (Some(len), Some(cut)) = (input.u16(), input.u8()) else {
                    break;
                };
                let len = len as usize;
                let present = len.saturating_sub(cut as usize);
                let bytes = if consistent {
                    for (i, b) in payload[..present].iter_mut().enumerate() {
                        *b = byte_at(seq.wrapping_add(i as u32));
                    }
                    &payload[..present]
                } else {
                    input.take_up_to(present)
                };
                // Without consistent payloads the wire length follows what the input held.
                let wire_len = if consistent {
                    len
                } else {
                    bytes.len() + cut as usize
                };
                if wire_len > 0 {
                    c.base.get_or_insert(seq);
                }
                r.segment(seq, bytes, wire_len as u32, cap, &mut |ch| c.take(ch));
            }
            2 => r.peer_acked(seq, cap, &mut |ch| c.take(ch)),
            3 => {
                let Some(len) = input.u16() else { break };
                r.fin(seq, u32::from(len));
            }
            4 => {
                r.stop_delivering();
                c.stopped = true;
            }
            5 => r.finish(cap, &mut |ch| c.take(ch)),
            _ => {}
        }
        let held = live_bytes().saturating_sub(baseline);
        assert!(
            held <= bound,
            "reassembler holds {held} bytes with a cap of {cap}"
        );
    }
    r.finish(cap, &mut |ch| c.take(ch));
    if consistent {
        assert_eq!(
            r.stats().overlap_mismatches, 0,
            "identical copies flagged as different"
        );
    }
    let held = live_bytes().saturating_sub(baseline);
    assert!(held <= bound, "reassembler holds {held} bytes after finish");
});
