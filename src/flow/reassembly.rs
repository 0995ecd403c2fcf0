//! One direction of a TCP connection, reassembled in sequence order.
//!
//! Bytes are handed to the consumer as soon as they are in order (in-order segments are passed
//! through without copying). Out-of-order segments wait in a bounded queue. Holes the capture
//! will never fill (the peer acknowledged past them, the queue is full, the direction closed or
//! the flow ended) are skipped and reported as gaps, so the consumer knows it lost sync.
//! Retransmitted bytes are compared with the first copy while that copy is still retained
//! (delivered bytes of the handshake region that the peer has not acknowledged yet); a
//! different second copy is flagged, the first copy wins.

use std::collections::BTreeMap;

/// `fin_offset` before a FIN was seen: no stream reaches it (offsets grow by 32-bit sequence
/// deltas from what was seen), and every acknowledgement is below it.
const NO_FIN: u64 = u64::MAX;
/// An acknowledgement further ahead than this is not believed (hostile or garbage).
const MAX_ACK_AHEAD: u64 = 16 << 20;
/// What one queued piece costs beyond its bytes (its vector, its map entry, the allocator's
/// rounding), charged against the cap. Without it a sender of 1-byte out-of-order segments made
/// the queue hold tens of times the cap in bookkeeping (found by fuzzing, see fuzz/).
const PIECE_COST: usize = 64;

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

/// Bytes delivery keeps: the out-of-order queue and the retained prefix.
#[derive(Debug, Default)]
struct Held {
    /// Out-of-order bytes waiting for the hole before them, keyed by stream offset.
    queue: BTreeMap<u64, Vec<u8>>,
    queued_bytes: usize,
    /// Delivered bytes from `retained_start` on, kept to compare retransmissions with: only
    /// the stream's first `cap` bytes, and only until the peer acknowledges them. A copy sent
    /// after the acknowledgement cannot change what the receiver took (its TCP drops it), and
    /// keeping the whole prefix cost kilobytes per connection that never settles.
    retained: Vec<u8>,
    retained_start: u64,
}

#[derive(Debug, Default)]
pub struct Reassembler {
    /// Stream offset of the next byte the consumer expects.
    next: u64,
    /// Highest stream offset seen (end of the furthest segment), for byte counts.
    highest: u64,
    /// What delivery holds; boxed and made on first use, since a connection past its handshake
    /// only counts and would otherwise carry the empty containers for as long as it lives.
    held: Option<Box<Held>>,
    /// What a clean stream never needs; boxed and made on first use, so that such a stream
    /// carries 8 bytes for it rather than 40 for as long as its connection is tracked.
    rare: Option<Box<Rare>>,
    /// Sequence number of stream offset 0, once `started`.
    base_seq: u32,
    /// The first SYN or segment fixed `base_seq`.
    started: bool,
    /// A SYN was seen.
    syn_seen: bool,
    /// Once set, bytes are no longer delivered or kept: only counted.
    counting_only: bool,
    // The bound of the queue and the retained prefix is not stored: it is the same for every
    // stream, so the caller passes it, and each of two million streams saves 8 bytes.
}

/// The parts of a stream's state that only trouble or its end sets.
#[derive(Debug)]
struct Rare {
    stats: ReassemblyStats,
    /// Stream offset of this direction's FIN; `NO_FIN` until one is seen.
    fin_offset: u64,
}

impl Reassembler {
    pub fn new() -> Self {
        Reassembler::default()
    }

    /// What reassembly saw so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.rare
            .as_ref()
            .map_or_else(ReassemblyStats::default, |r| r.stats)
    }

    fn stats_mut(&mut self) -> &mut ReassemblyStats {
        &mut self.rare_mut().stats
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(|| {
            Box::new(Rare {
                stats: ReassemblyStats::default(),
                fin_offset: NO_FIN,
            })
        })
    }

    fn fin_offset(&self) -> u64 {
        self.rare.as_ref().map_or(NO_FIN, |r| r.fin_offset)
    }

    /// A SYN fixes the initial sequence number; data starts one after it.
    pub fn syn(&mut self, seq: u32) {
        self.syn_seen = true;
        self.start_at(seq.wrapping_add(1));
    }

    fn start_at(&mut self, base_seq: u32) {
        if !self.started {
            self.base_seq = base_seq;
            self.started = true;
        }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// This direction sent a SYN.
    pub fn syn_seen(&self) -> bool {
        self.syn_seen
    }

    /// Bytes of the stream seen so far (unique, by sequence space).
    pub fn stream_bytes(&self) -> u64 {
        self.highest
    }

    /// The consumer no longer needs bytes: free the buffers and only count from now on.
    pub fn stop_delivering(&mut self) {
        self.counting_only = true;
        self.held = None;
    }

    /// Stream offset of a sequence number, relative to the next expected byte.
    fn offset_of(&self, seq: u32) -> Option<u64> {
        if !self.started {
            return None;
        }
        let base = self.base_seq;
        let next_seq = base.wrapping_add(self.next as u32);
        let delta = seq.wrapping_sub(next_seq) as i32 as i64;
        // Below the stream start (a stale ACK, or one from before a midstream join): says nothing.
        u64::try_from(self.next as i64 + delta).ok()
    }

    /// Feeds one segment's payload. `wire_len` is the payload length on the wire; when the snap
    /// length cut the frame the missing tail becomes a gap. `cap` bounds both the out-of-order
    /// queue and the retained prefix; a stream is always given the same one.
    pub fn segment(
        &mut self,
        seq: u32,
        data: &[u8],
        wire_len: u32,
        cap: usize,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        if wire_len == 0 {
            return;
        }
        self.start_at(seq);
        let base = self.base_seq;
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
            self.stats_mut().truncated_segments += 1;
        }
        if self.counting_only {
            if end <= self.next {
                self.stats_mut().retransmissions += 1;
            }
            self.next = self.next.max(end);
            return;
        }
        if end <= self.next {
            self.stats_mut().retransmissions += 1;
            // A keep-alive probe repeats the last byte with arbitrary content: not a conflict.
            let keepalive = wire_len == 1 && end == self.next;
            if !keepalive {
                self.compare_with_retained(start, data);
            }
            return;
        }
        if start > self.next {
            self.enqueue(start, data, end, cap, out);
            return;
        }
        // Overlaps or starts exactly at the next expected byte.
        let overlap = (self.next - start) as usize;
        if overlap > 0 {
            self.stats_mut().retransmissions += 1;
            self.compare_with_retained(start, &data[..overlap.min(data.len())]);
        }
        self.segment_at(start, data, end, cap, out);
    }

    fn enqueue(
        &mut self,
        start: u64,
        data: &[u8],
        end: u64,
        cap: usize,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        let cost = if data.is_empty() {
            0
        } else {
            data.len() + PIECE_COST
        };
        if self.queued_bytes() + cost > cap {
            // Full: give up holes, oldest first, until the segment fits or is in order.
            self.stats_mut().queue_overflows += 1;
            while self.queued_bytes() + cost > cap
                && self.first_queued().is_some()
                && start > self.next
            {
                self.skip_hole(cap, out);
            }
            if start > self.next && self.queued_bytes() + cost > cap {
                // The segment alone is larger than the queue: the hole before it is lost.
                self.skip_to(start, out);
            }
            if start <= self.next {
                return self.segment_at(start, data, end, cap, out);
            }
        }
        self.insert_first_copy_wins(start, data);
        // A segment spanning several queued pieces is queued as several pieces, which may cost
        // more than estimated above: give up the oldest holes until the queue is within its cap.
        if self.queued_bytes() > cap {
            self.stats_mut().queue_overflows += 1;
            while self.queued_bytes() > cap && self.first_queued().is_some() {
                self.skip_hole(cap, out);
            }
        }
    }

    /// Queues the parts of a segment that no queued segment covers yet; where they overlap, the
    /// queued (first) copy stays and differing bytes are flagged.
    fn insert_first_copy_wins(&mut self, start: u64, data: &[u8]) {
        let end = start + data.len() as u64;
        let overlapping: Vec<(u64, u64)> = self
            .held()
            .queue
            .range(..end)
            .rev()
            .map(|(&s, d)| (s, s + d.len() as u64))
            .take_while(|&(_, e)| e > start)
            .collect();
        let mut pos = start;
        let mut duplicate = false;
        for &(s, e) in overlapping.iter().rev() {
            if s > pos {
                self.queue_piece(
                    pos,
                    &data[(pos - start) as usize..(s.min(end) - start) as usize],
                );
            }
            let (from, to) = (s.max(start), e.min(end));
            let queued = self
                .held()
                .queue
                .get(&s)
                .map_or(&[][..], |q| &q[(from - s) as usize..(to - s) as usize]);
            if queued != &data[(from - start) as usize..(to - start) as usize] {
                self.stats_mut().overlap_mismatches += 1;
            }
            duplicate = true;
            pos = pos.max(e);
        }
        if pos < end {
            self.queue_piece(pos, &data[(pos - start) as usize..]);
        }
        if duplicate {
            self.stats_mut().retransmissions += 1;
        }
    }

    fn queue_piece(&mut self, at: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            let held = self.held();
            held.queued_bytes += bytes.len() + PIECE_COST;
            held.queue.insert(at, bytes.to_vec());
        }
    }

    /// Delivers a segment whose start is now at or before `self.next`.
    fn segment_at(
        &mut self,
        start: u64,
        data: &[u8],
        end: u64,
        cap: usize,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        if end <= self.next {
            return;
        }
        let overlap = (self.next.saturating_sub(start)) as usize;
        let fresh = data.get(overlap..).unwrap_or(&[]);
        self.deliver(fresh, cap, out);
        if start + (data.len() as u64) < end {
            self.skip_to(end, out);
        }
        self.drain(cap, out);
    }

    fn deliver(&mut self, bytes: &[u8], cap: usize, out: &mut dyn FnMut(Chunk<'_>)) {
        if bytes.is_empty() {
            return;
        }
        // Only the handshake region is retained: past it, no box is made just to be looked at.
        let (cap, next) = (cap as u64, self.next);
        if next < cap {
            let held = self.held();
            if held.retained_start + held.retained.len() as u64 == next {
                let room = (cap - next) as usize;
                held.retained
                    .extend_from_slice(&bytes[..room.min(bytes.len())]);
            }
        }
        out(Chunk::Data {
            offset: self.next,
            bytes,
        });
        self.next += bytes.len() as u64;
    }

    fn compare_with_retained(&mut self, start: u64, data: &[u8]) {
        let Some(held) = self.held.as_deref() else {
            return;
        };
        // Bytes before the retained window were acknowledged: nothing to compare them with.
        let skip = held.retained_start.saturating_sub(start);
        let Some(data) = usize::try_from(skip).ok().and_then(|s| data.get(s..)) else {
            return;
        };
        let from = start + skip - held.retained_start;
        let Some(kept) = usize::try_from(from)
            .ok()
            .and_then(|f| held.retained.get(f..))
        else {
            return;
        };
        let n = kept.len().min(data.len());
        if kept[..n] != data[..n] {
            self.stats_mut().overlap_mismatches += 1;
        }
    }

    /// The peer acknowledged everything before `acked`: those bytes need not be kept.
    fn release_acked(&mut self, acked: u64) {
        let Some(held) = self.held.as_deref_mut() else {
            return;
        };
        let done = acked.saturating_sub(held.retained_start);
        if done == 0 {
            return;
        }
        let kept = held.retained.len() as u64;
        if done >= kept {
            held.retained = Vec::new();
            held.retained_start = acked;
        } else if done * 2 >= kept {
            // Only when at least half goes: trimming the front for every small acknowledgement
            // would move the rest each time, quadratic in the prefix.
            held.retained.drain(..done as usize);
            held.retained_start = acked;
        }
        if held.retained.is_empty() && held.queue.is_empty() {
            self.held = None;
        }
    }

    /// Hands out every queued segment that is now in order.
    fn drain(&mut self, cap: usize, out: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(start) = self.first_queued() {
            if start > self.next {
                break;
            }
            let held = self.held();
            let data = held.queue.remove(&start).unwrap_or_default();
            held.queued_bytes -= data.len() + PIECE_COST;
            let end = start + data.len() as u64;
            if end <= self.next {
                self.compare_with_retained(start, &data);
                continue;
            }
            let overlap = (self.next - start) as usize;
            if overlap > 0 {
                self.compare_with_retained(start, &data[..overlap]);
            }
            self.deliver(&data[overlap..], cap, out);
        }
    }

    /// Declares the bytes up to `offset` lost.
    fn skip_to(&mut self, offset: u64, out: &mut dyn FnMut(Chunk<'_>)) {
        if offset <= self.next {
            return;
        }
        let len = offset - self.next;
        let stats = self.stats_mut();
        stats.gaps += 1;
        stats.gap_bytes += len;
        out(Chunk::Gap {
            offset: self.next,
            len,
        });
        self.next = offset;
    }

    /// Gives up on the hole before the first queued segment.
    fn skip_hole(&mut self, cap: usize, out: &mut dyn FnMut(Chunk<'_>)) {
        if let Some(first) = self.first_queued() {
            self.skip_to(first, out);
            self.drain(cap, out);
        }
    }

    /// The peer acknowledged `ack`: bytes before it were sent. A hole the peer has acknowledged
    /// will never be filled by the capture.
    pub fn peer_acked(&mut self, ack: u32, cap: usize, out: &mut dyn FnMut(Chunk<'_>)) {
        if self.counting_only {
            return;
        }
        let Some(mut acked) = self.offset_of(ack) else {
            return;
        };
        // The FIN takes one sequence number after the last byte.
        acked = acked.min(self.fin_offset());
        if acked > self.next && acked - self.next > MAX_ACK_AHEAD {
            return;
        }
        self.release_acked(acked.min(self.next));
        if acked <= self.next {
            return;
        }
        match self.first_queued() {
            Some(first) if acked >= first => self.skip_hole(cap, out),
            Some(_) => {}
            // Nothing queued: the acknowledged bytes passed without the capture seeing them.
            None => self.skip_to(acked, out),
        }
    }

    /// Whether a RST from this direction at `seq` ends it, as RFC 5961 (3.2) has a receiver
    /// decide: only a sequence number exactly at the next one this direction would send (after
    /// its furthest byte, and its FIN) resets. One elsewhere in the window only draws a
    /// challenge ACK, one outside it (answering a stale ACK) is dropped: the connection goes on
    /// at the receiver, so it goes on here. A direction whose sequence numbers are unknown (no
    /// SYN or segment seen: a RST refusing a SYN) cannot be judged, and its RST is taken.
    /// After a FIN, a RST at the FIN's own sequence number is taken too, as Linux takes it
    /// (`tcp_reset_check`): a closed socket answering data resets at the peer's acknowledgement,
    /// which does not cover the FIN yet, and macOS sends its FIN and RST that way.
    pub fn rst_acceptable(&self, seq: u32) -> bool {
        if !self.started {
            return true;
        }
        let Some(at) = self.offset_of(seq) else {
            return false;
        };
        match self.fin_offset() {
            NO_FIN => at == self.highest,
            fin => at == fin || at == fin + 1,
        }
    }

    /// This direction sent a FIN after `wire_len` bytes at `seq`.
    pub fn fin(&mut self, seq: u32, wire_len: u32) {
        if !self.started {
            return;
        }
        if self.fin_offset() == NO_FIN
            && let Some(at) = self.offset_of(seq)
        {
            self.rare_mut().fin_offset = at + wire_len as u64;
        }
    }

    /// The direction closed or the flow ended: whatever is queued is delivered past its holes.
    pub fn finish(&mut self, cap: usize, out: &mut dyn FnMut(Chunk<'_>)) {
        while self.first_queued().is_some() {
            self.skip_hole(cap, out);
        }
    }

    fn held(&mut self) -> &mut Held {
        let next = self.next;
        self.held.get_or_insert_with(|| {
            Box::new(Held {
                retained_start: next,
                ..Held::default()
            })
        })
    }

    fn queued_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.queued_bytes)
    }

    /// Stream offset of the first queued piece.
    fn first_queued(&self) -> Option<u64> {
        self.held.as_ref()?.queue.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1 << 16;

    fn collect(r: &mut Reassembler, segs: &[(u32, &[u8])]) -> (Vec<u8>, u32) {
        let mut bytes = Vec::new();
        let mut gaps = 0;
        for (seq, data) in segs {
            r.segment(*seq, data, data.len() as u32, CAP, &mut |c| match c {
                Chunk::Data { bytes: b, .. } => bytes.extend_from_slice(b),
                Chunk::Gap { .. } => gaps += 1,
            });
        }
        r.finish(CAP, &mut |c| match c {
            Chunk::Data { bytes: b, .. } => bytes.extend_from_slice(b),
            Chunk::Gap { .. } => gaps += 1,
        });
        (bytes, gaps)
    }

    #[test]
    fn out_of_order_and_duplicates_give_the_stream() {
        let mut r = Reassembler::new();
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
        assert_eq!(r.stats().overlap_mismatches, 0);
        assert!(r.stats().retransmissions >= 2);
    }

    #[test]
    fn acknowledged_bytes_are_released_and_later_ones_still_compared() {
        let mut r = Reassembler::new();
        r.syn(0);
        let mut sink = |_: Chunk<'_>| {};
        r.segment(1, b"first flight", 12, CAP, &mut sink);
        assert!(r.held.is_some(), "unacknowledged bytes are kept");
        // The peer acknowledges all of it: nothing is held any more.
        r.peer_acked(13, CAP, &mut sink);
        assert!(r.held.is_none());
        // A different copy of acknowledged bytes is counted as a retransmission only.
        r.segment(1, b"FIRST", 5, CAP, &mut sink);
        assert_eq!(r.stats().retransmissions, 1);
        assert_eq!(r.stats().overlap_mismatches, 0);
        // Bytes after the acknowledgement are kept again and compared.
        r.segment(13, b"second", 6, CAP, &mut sink);
        r.segment(13, b"SECOND", 6, CAP, &mut sink);
        assert_eq!(r.stats().overlap_mismatches, 1);
        // Half of them acknowledged: the rest is still compared.
        r.peer_acked(16, CAP, &mut sink);
        r.segment(16, b"OND", 3, CAP, &mut sink);
        assert_eq!(r.stats().overlap_mismatches, 2);
    }

    #[test]
    fn different_retransmission_is_flagged_and_first_copy_wins() {
        let mut r = Reassembler::new();
        r.syn(0);
        let (bytes, _) = collect(&mut r, &[(1, b"abcdef"), (3, b"XY")]);
        assert_eq!(bytes, b"abcdef");
        assert_eq!(r.stats().overlap_mismatches, 1);
    }

    #[test]
    fn sequence_wraps() {
        let mut r = Reassembler::new();
        r.syn(u32::MAX - 2);
        let (bytes, gaps) = collect(&mut r, &[(u32::MAX - 1, b"ab"), (0, b"cd"), (2, b"ef")]);
        assert_eq!(bytes, b"abcdef");
        assert_eq!(gaps, 0);
    }

    #[test]
    fn hole_is_reported_at_finish() {
        let mut r = Reassembler::new();
        r.syn(0);
        let (bytes, gaps) = collect(&mut r, &[(1, b"ab"), (10, b"zz")]);
        assert_eq!(bytes, b"abzz");
        assert_eq!(gaps, 1);
        assert_eq!(r.stats().gap_bytes, 7);
    }

    #[test]
    fn queue_is_bounded() {
        let mut r = Reassembler::new();
        r.syn(0);
        let chunk = [7u8; 16];
        for i in 0..100u32 {
            // every segment leaves a one-byte hole before it
            r.segment(2 + i * 17, &chunk, 16, 64, &mut |_| {});
            assert!(r.queued_bytes() <= 64);
        }
        assert!(r.stats().gaps > 0);
    }
}
