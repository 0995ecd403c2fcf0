//! One direction of a TCP connection, reassembled in sequence order.
//!
//! Bytes are handed to the consumer as soon as they are in order (in-order segments are passed
//! through without copying). Out-of-order segments wait in a bounded queue. Holes the capture
//! will never fill (the peer acknowledged past them, the queue is full, the direction closed or
//! the flow ended) are skipped and reported as gaps, so the consumer knows it lost sync.
//! Retransmitted bytes are compared with the first copy while that copy is still retained
//! (the handshake prefix); a different second copy is flagged, the first copy wins.

use std::collections::BTreeMap;

/// What the reassembler hands to its consumer, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// In-order bytes starting at `offset` in the stream.
    Data { offset: u64, bytes: &'a [u8] },
    /// `len` bytes at `offset` that the capture does not hold.
    Gap { offset: u64, len: u64 },
}

/// Counters of what reassembly saw; they end up in the connection record's anomalies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub gaps: u32,
    pub gap_bytes: u64,
    pub retransmissions: u32,
    pub overlap_mismatches: u32,
    pub truncated_segments: u32,
    pub queue_overflows: u32,
}

#[derive(Debug)]
pub struct Reassembler {
    /// Sequence number of stream offset 0; `None` until the first SYN or segment.
    base_seq: Option<u32>,
    /// Stream offset of the next byte the consumer expects.
    next: u64,
    /// Highest stream offset seen (end of the furthest segment), for byte counts.
    highest: u64,
    /// Out-of-order bytes waiting for the hole before them, keyed by stream offset.
    queue: BTreeMap<u64, Vec<u8>>,
    queued_bytes: usize,
    /// The stream's first bytes, kept to compare retransmissions with.
    retained: Vec<u8>,
    /// Bound for both the queue and the retained prefix.
    cap: usize,
    /// Once set, bytes are no longer delivered or kept: only counted.
    counting_only: bool,
    pub stats: ReassemblyStats,
}

impl Reassembler {
    pub fn new(cap: usize) -> Self {
        Reassembler {
            base_seq: None,
            next: 0,
            highest: 0,
            queue: BTreeMap::new(),
            queued_bytes: 0,
            retained: Vec::new(),
            cap,
            counting_only: false,
            stats: ReassemblyStats::default(),
        }
    }

    /// A SYN fixes the initial sequence number; data starts one after it.
    pub fn syn(&mut self, seq: u32) {
        if self.base_seq.is_none() {
            self.base_seq = Some(seq.wrapping_add(1));
        }
    }

    pub fn started(&self) -> bool {
        self.base_seq.is_some()
    }

    /// Bytes of the stream seen so far (unique, by sequence space).
    pub fn stream_bytes(&self) -> u64 {
        self.highest
    }

    /// The consumer no longer needs bytes: free the buffers and only count from now on.
    pub fn stop_delivering(&mut self) {
        self.counting_only = true;
        self.queue = BTreeMap::new();
        self.queued_bytes = 0;
        self.retained = Vec::new();
    }

    /// Stream offset of a sequence number, relative to the next expected byte.
    fn offset_of(&self, seq: u32) -> Option<u64> {
        let base = self.base_seq?;
        let next_seq = base.wrapping_add(self.next as u32);
        let delta = seq.wrapping_sub(next_seq) as i32 as i64;
        Some((self.next as i64 + delta).max(-1) as u64)
    }

    /// Feeds one segment's payload. `wire_len` is the payload length on the wire; when the snap
    /// length cut the frame the missing tail becomes a gap.
    pub fn segment(
        &mut self,
        seq: u32,
        data: &[u8],
        wire_len: u32,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        if wire_len == 0 {
            return;
        }
        if self.base_seq.is_none() {
            self.base_seq = Some(seq);
        }
        let base = self.base_seq.unwrap_or(seq);
        let next_seq = base.wrapping_add(self.next as u32);
        let delta = seq.wrapping_sub(next_seq) as i32 as i64;
        // A segment that starts before offset 0 (data before the SYN we anchored on) is trimmed.
        let start = self.next as i64 + delta;
        let end = start + wire_len as i64;
        if end <= 0 {
            return;
        }
        let (start, skip) = if start < 0 {
            (0u64, (-start) as usize)
        } else {
            (start as u64, 0)
        };
        let data = data.get(skip..).unwrap_or(&[]);
        let end = end as u64;
        self.highest = self.highest.max(end);
        let present_end = start + data.len() as u64;
        if present_end < end {
            self.stats.truncated_segments += 1;
        }
        if self.counting_only {
            if end <= self.next {
                self.stats.retransmissions += 1;
            }
            self.next = self.next.max(end);
            return;
        }
        if end <= self.next {
            self.stats.retransmissions += 1;
            // A keep-alive probe repeats the last byte with arbitrary content: not a conflict.
            let keepalive = wire_len == 1 && end == self.next;
            if !keepalive {
                self.compare_with_retained(start, data);
            }
            return;
        }
        if start > self.next {
            self.enqueue(start, data, end, out);
            return;
        }
        // Overlaps or starts exactly at the next expected byte.
        let overlap = (self.next - start) as usize;
        if overlap > 0 {
            self.stats.retransmissions += 1;
            self.compare_with_retained(start, &data[..overlap.min(data.len())]);
        }
        let fresh = data.get(overlap..).unwrap_or(&[]);
        self.deliver(fresh, out);
        if present_end < end {
            self.skip_to(end, out);
        }
        self.drain(out);
    }

    fn enqueue(&mut self, start: u64, data: &[u8], end: u64, out: &mut dyn FnMut(Chunk<'_>)) {
        if self.queued_bytes + data.len() > self.cap {
            self.stats.queue_overflows += 1;
            self.skip_hole(out);
            if start > self.next {
                // Still a hole before this segment: give it up too.
                self.skip_to(start, out);
            }
            return self.segment_at(start, data, end, out);
        }
        if let Some(existing) = self.queue.get(&start) {
            if existing.len() >= data.len() {
                self.stats.retransmissions += 1;
                if existing[..data.len()] != *data {
                    self.stats.overlap_mismatches += 1;
                }
                return;
            }
            self.queued_bytes -= existing.len();
        }
        self.queued_bytes += data.len();
        self.queue.insert(start, data.to_vec());
    }

    /// Delivers a segment whose start is now at or before `self.next`.
    fn segment_at(&mut self, start: u64, data: &[u8], end: u64, out: &mut dyn FnMut(Chunk<'_>)) {
        if end <= self.next {
            return;
        }
        let overlap = (self.next.saturating_sub(start)) as usize;
        let fresh = data.get(overlap..).unwrap_or(&[]);
        self.deliver(fresh, out);
        if start + (data.len() as u64) < end {
            self.skip_to(end, out);
        }
        self.drain(out);
    }

    fn deliver(&mut self, bytes: &[u8], out: &mut dyn FnMut(Chunk<'_>)) {
        if bytes.is_empty() {
            return;
        }
        if self.retained.len() < self.cap && self.retained.len() as u64 == self.next {
            let room = self.cap - self.retained.len();
            self.retained
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        out(Chunk::Data {
            offset: self.next,
            bytes,
        });
        self.next += bytes.len() as u64;
    }

    fn compare_with_retained(&mut self, start: u64, data: &[u8]) {
        let Some(kept) = self.retained.get(start as usize..) else {
            return;
        };
        let n = kept.len().min(data.len());
        if kept[..n] != data[..n] {
            self.stats.overlap_mismatches += 1;
        }
    }

    /// Hands out every queued segment that is now in order.
    fn drain(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.queue.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let data = entry.remove();
            self.queued_bytes -= data.len();
            let end = start + data.len() as u64;
            if end <= self.next {
                self.compare_with_retained(start, &data);
                continue;
            }
            let overlap = (self.next - start) as usize;
            if overlap > 0 {
                self.compare_with_retained(start, &data[..overlap]);
            }
            self.deliver(&data[overlap..], out);
        }
    }

    /// Declares the bytes up to `offset` lost.
    fn skip_to(&mut self, offset: u64, out: &mut dyn FnMut(Chunk<'_>)) {
        if offset <= self.next {
            return;
        }
        let len = offset - self.next;
        self.stats.gaps += 1;
        self.stats.gap_bytes += len;
        out(Chunk::Gap {
            offset: self.next,
            len,
        });
        self.next = offset;
    }

    /// Gives up on the hole before the first queued segment.
    fn skip_hole(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        if let Some((&first, _)) = self.queue.first_key_value() {
            self.skip_to(first, out);
            self.drain(out);
        }
    }

    /// The peer acknowledged `ack`: bytes before it were sent. A hole the peer has acknowledged
    /// will never be filled by the capture.
    pub fn peer_acked(&mut self, ack: u32, out: &mut dyn FnMut(Chunk<'_>)) {
        if self.counting_only || self.queue.is_empty() {
            return;
        }
        let Some(acked) = self.offset_of(ack) else {
            return;
        };
        if let Some((&first, _)) = self.queue.first_key_value()
            && acked > self.next
            && acked >= first
        {
            self.skip_hole(out);
        }
    }

    /// The direction closed or the flow ended: whatever is queued is delivered past its holes.
    pub fn finish(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        while !self.queue.is_empty() {
            self.skip_hole(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &mut Reassembler, segs: &[(u32, &[u8])]) -> (Vec<u8>, u32) {
        let mut bytes = Vec::new();
        let mut gaps = 0;
        for (seq, data) in segs {
            r.segment(*seq, data, data.len() as u32, &mut |c| match c {
                Chunk::Data { bytes: b, .. } => bytes.extend_from_slice(b),
                Chunk::Gap { .. } => gaps += 1,
            });
        }
        r.finish(&mut |c| match c {
            Chunk::Data { bytes: b, .. } => bytes.extend_from_slice(b),
            Chunk::Gap { .. } => gaps += 1,
        });
        (bytes, gaps)
    }

    #[test]
    fn out_of_order_and_duplicates_give_the_stream() {
        let mut r = Reassembler::new(1 << 16);
        r.syn(99);
        let (bytes, gaps) = collect(
            &mut r,
            &[
                (106, b"world"),
                (100, b"hello "),
                (100, b"hello "),
                (103, b"lo wor"),
            ],
        );
        assert_eq!(bytes, b"hello world");
        assert_eq!(gaps, 0);
        assert_eq!(r.stats.overlap_mismatches, 0);
        assert!(r.stats.retransmissions >= 2);
    }

    #[test]
    fn different_retransmission_is_flagged_and_first_copy_wins() {
        let mut r = Reassembler::new(1 << 16);
        r.syn(0);
        let (bytes, _) = collect(&mut r, &[(1, b"abcdef"), (3, b"XY")]);
        assert_eq!(bytes, b"abcdef");
        assert_eq!(r.stats.overlap_mismatches, 1);
    }

    #[test]
    fn sequence_wraps() {
        let mut r = Reassembler::new(1 << 16);
        r.syn(u32::MAX - 2);
        let (bytes, gaps) = collect(&mut r, &[(u32::MAX - 1, b"ab"), (0, b"cd"), (2, b"ef")]);
        assert_eq!(bytes, b"abcdef");
        assert_eq!(gaps, 0);
    }

    #[test]
    fn hole_is_reported_at_finish() {
        let mut r = Reassembler::new(1 << 16);
        r.syn(0);
        let (bytes, gaps) = collect(&mut r, &[(1, b"ab"), (10, b"zz")]);
        assert_eq!(bytes, b"abzz");
        assert_eq!(gaps, 1);
        assert_eq!(r.stats.gap_bytes, 7);
    }

    #[test]
    fn queue_is_bounded() {
        let mut r = Reassembler::new(64);
        r.syn(0);
        let chunk = [7u8; 16];
        for i in 0..100u32 {
            // every segment leaves a one-byte hole before it
            r.segment(2 + i * 17, &chunk, 16, &mut |_| {});
            assert!(r.queued_bytes <= 64);
        }
        assert!(r.stats.gaps > 0);
    }
}
