//! A classic pcap file walked by several threads at once, region by region.
//!
//! Finding the frames of a capture is a chain: a frame's length says where the next begins.
//! Walked by one thread, that chain is a cache miss per frame, and it was the largest cost of a
//! multi-threaded replay when every worker walked the whole file itself. Here the file is cut
//! into regions of [`REGION_BYTES`]; the readers take turns walking them, a few regions ahead
//! of where they read, each region once, into an index of its frames (offset, length, time,
//! flow hash) that every reader then goes through in order. Within a region the walk follows
//! several stretches side by side, so that several headers are being fetched at once.
//!
//! A region after the first is walked before the one in front of it is done, from a *guessed*
//! first frame: the first offset past the region's boundary where several plausible record
//! headers chain up. A guess is only a guess: a reader uses a region only after checking that
//! its walk began exactly where the region in front of it ended (the true chain). A region
//! walked from a wrong guess (a capture inside a capture, a hostile file) is walked again from
//! the true start, so the frames, their order and any damage reported are exactly those of a
//! plain sequential read. The cost of a wrong guess is one more walk of one region.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::classic::{Damage, Legacy};
use super::in_place::{Positions, SharedMap, classic_pcap, prefetch};
use super::{CaptureError, Frame, MAX_RECORD};

/// Bytes per region: large enough that a region holds thousands of frames (the index of one is
/// a few hundred KB), small enough that readers share the walking evenly.
const REGION_BYTES: usize = 4 << 20;
/// A reader walks regions at most this far ahead of the one it reads.
const LOOKAHEAD: usize = 4;
/// Record headers that must chain up for an offset to be taken as a frame's start.
const GUESS_CHAIN: usize = 8;
/// How far past a region's boundary a guess looks for a frame start. Frames longer than this
/// make the region wait for the true start instead.
const GUESS_SCAN: usize = 64 << 10;
/// Stretches of a region walked side by side.
const CHAINS: usize = 8;
/// A reader asks for a frame's first bytes this many frames before it reads them.
const PREFETCH_FRAMES: usize = 4;
/// Consecutive frames of a plausible chain are at most this far apart in time.
const GUESS_MAX_GAP_S: u32 = 86_400;

/// A frame in a region's index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: usize,
    len: u32,
    orig_len: u32,
    ts_ns: i64,
    flow_hash: Option<u64>,
}

/// One region's walk.
struct Region {
    /// Where the walk began; only a walk that began at the true start counts.
    start: usize,
    /// Where the next region's first frame begins (or the end of the file, or the damage).
    end: usize,
    frames: Vec<Entry>,
    damage: Option<Damage>,
    /// Where `frames` goes back to when the region is dropped.
    spare: Arc<Spare>,
}

impl Drop for Region {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.frames));
    }
}

/// Index vectors kept for the next walks. A region's index is a few hundred KB; allocated
/// afresh for every region, the allocator handed the pages back and the kernel zeroed them
/// again for the next one (a twentieth of a two-thread replay).
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<Entry>>>);

/// Spare vectors kept at most: enough for the regions in flight and their stretches.
const MAX_SPARE: usize = 4 * CHAINS;

impl Spare {
    fn take(&self) -> Vec<Entry> {
        self.0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut v: Vec<Entry>) {
        v.clear();
        if v.capacity() > 0
            && let Ok(mut spare) = self.0.lock()
            && spare.len() < MAX_SPARE
        {
            spare.push(v);
        }
    }
}

enum Slot {
    Open,
    Walking,
    Walked(Arc<Region>),
    /// Every reader is past it.
    Gone,
}

struct RegionSlot {
    state: Mutex<Slot>,
    walked: Condvar,
}

/// A region this reader has marked `Walking`. Dropped without `done` (no walk, or a panic
/// during one), it opens the region again, so no other reader waits for it forever.
struct Walking<'a> {
    slot: &'a RegionSlot,
    region: Option<Arc<Region>>,
}

impl<'a> Walking<'a> {
    fn claimed(slot: &'a RegionSlot) -> Self {
        Walking { slot, region: None }
    }

    fn done(mut self, region: Arc<Region>) {
        self.region = Some(region);
    }
}

impl Drop for Walking<'_> {
    fn drop(&mut self) {
        let mut state = self
            .slot
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = match self.region.take() {
            Some(region) => Slot::Walked(region),
            None => Slot::Open,
        };
        self.slot.walked.notify_all();
    }
}

/// The shared walk of one file.
pub struct SplitWalk {
    map: Arc<SharedMap>,
    format: Legacy,
    first_frame: usize,
    flow_hash: fn(i32, &[u8]) -> Option<u64>,
    region_bytes: usize,
    slots: Box<[RegionSlot]>,
    /// The region each reader reads next.
    reading: Positions,
    /// Regions before this one have been freed.
    freed: Mutex<usize>,
    /// Stretches walked again because a guess was wrong (tests look at it).
    rewalks: AtomicUsize,
    spare: Arc<Spare>,
}

impl SplitWalk {
    /// A walk of `map` (a classic pcap file whose records begin at `first_frame`) for `readers`
    /// readers; `flow_hash` is computed once per frame, for the readers to shard by.
    pub fn new(
        map: Arc<SharedMap>,
        format: Legacy,
        first_frame: usize,
        readers: usize,
        flow_hash: fn(i32, &[u8]) -> Option<u64>,
    ) -> Arc<Self> {
        Self::with_regions(map, format, first_frame, readers, flow_hash, REGION_BYTES)
    }

    /// A walk of `bytes` if they are a classic pcap file, with regions of `region_bytes`:
    /// tests and fuzzing use small ones to cross many boundaries.
    pub fn of_bytes(
        bytes: Vec<u8>,
        readers: usize,
        flow_hash: fn(i32, &[u8]) -> Option<u64>,
        region_bytes: usize,
    ) -> Option<Arc<Self>> {
        let map = SharedMap::from_vec(bytes, readers);
        let (format, first) = classic_pcap(map.bytes())?;
        let walk = Self::with_regions(map, format, first, readers, flow_hash, region_bytes);
        Some(walk)
    }

    /// Stretches walked again because a guess about where a frame begins was wrong.
    pub fn rewalks(&self) -> usize {
        self.rewalks.load(Ordering::Relaxed)
    }

    /// The same as [`SplitWalk::new`] with regions of `region_bytes`.
    pub fn with_regions(
        map: Arc<SharedMap>,
        format: Legacy,
        first_frame: usize,
        readers: usize,
        flow_hash: fn(i32, &[u8]) -> Option<u64>,
        region_bytes: usize,
    ) -> Arc<Self> {
        let region_bytes = region_bytes.max(CHAINS);
        let regions = map.bytes().len().div_ceil(region_bytes).max(1);
        let slots = (0..regions)
            .map(|_| RegionSlot {
                state: Mutex::new(Slot::Open),
                walked: Condvar::new(),
            })
            .collect();
        Arc::new(SplitWalk {
            map,
            format,
            first_frame,
            flow_hash,
            region_bytes,
            slots,
            reading: Positions::new(readers),
            freed: Mutex::new(0),
            rewalks: AtomicUsize::new(0),
            spare: Arc::default(),
        })
    }

    fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    fn lock(&self, k: usize) -> Option<MutexGuard<'_, Slot>> {
        self.slots.get(k)?.state.lock().ok()
    }

    /// Region `k`'s walk from `true_start`: the one already made when it began there, or a
    /// new one. Returns `None` only if a lock was poisoned (a reader panicked).
    fn region(&self, k: usize, true_start: usize) -> Option<Arc<Region>> {
        let slot = self.slots.get(k)?;
        let mut state = slot.state.lock().ok()?;
        loop {
            match &*state {
                Slot::Walked(r) if r.start == true_start => return Some(Arc::clone(r)),
                Slot::Walking => state = slot.walked.wait(state).ok()?,
                // Not walked yet, walked from a wrong guess, or (never for a reader still
                // before it) released: walk it from the true start.
                other => {
                    if matches!(other, Slot::Walked(_)) {
                        self.rewalks.fetch_add(1, Ordering::Relaxed);
                    }
                    *state = Slot::Walking;
                    drop(state);
                    let walking = Walking::claimed(slot);
                    let region = Arc::new(self.walk(k, true_start));
                    walking.done(Arc::clone(&region));
                    return Some(region);
                }
            }
        }
    }

    /// Reader `reader`, about to read region `k`, walks the first of its share of the next
    /// [`LOOKAHEAD`] regions (every `readers`-th) that nobody has walked yet, from where the
    /// region before it ended or, not walked yet, from a guess. Sharing regions out this way
    /// keeps the readers walking side by side rather than the one in front walking them all.
    fn walk_ahead(&self, reader: usize, k: usize) {
        let readers = self.reading.readers();
        let ahead =
            (k + 1..(k + 1 + LOOKAHEAD).min(self.slots.len())).filter(|j| j % readers == reader);
        for j in ahead {
            let Some(mut state) = self.lock(j) else {
                return;
            };
            if !matches!(*state, Slot::Open) {
                continue;
            }
            *state = Slot::Walking;
            drop(state);
            let walking = Walking::claimed(&self.slots[j]);
            let known = match self.lock(j - 1).as_deref() {
                Some(Slot::Walked(r)) if r.damage.is_none() => Some(r.end),
                _ => None,
            };
            let start = known
                .or_else(|| self.guess_start(j * self.region_bytes, (j + 1) * self.region_bytes));
            match start {
                Some(start) => walking.done(Arc::new(self.walk(j, start))),
                // No plausible frame start: the region is walked when its true start is known.
                None => drop(walking),
            }
            return;
        }
    }

    /// Reader `reader` reads region `next` next (`usize::MAX`: it has stopped). The indexes of
    /// the regions every reader is past are freed.
    fn reader_at(&self, reader: usize, next: usize) {
        let slowest = self.reading.set(reader, next).min(self.slots.len());
        let Ok(mut freed) = self.freed.lock() else {
            return;
        };
        for k in *freed..slowest {
            if let Some(mut state) = self.lock(k) {
                *state = Slot::Gone;
            }
        }
        *freed = (*freed).max(slowest);
    }

    /// Walks the frames that begin in region `k` (before its end boundary) from `start`.
    ///
    /// One chain of headers waits for memory at every frame. The region is therefore walked
    /// as [`CHAINS`] chains side by side, each over its own stretch, the later ones from a
    /// guessed start, so that several frames' headers are being fetched at once. A chain whose
    /// guess turns out wrong (it did not begin where the chain before it ended) is walked
    /// again from the true start.
    fn walk(&self, k: usize, start: usize) -> Region {
        let len = self.bytes().len();
        let boundary = (k + 1)
            .saturating_mul(self.region_bytes)
            .min(len)
            .max(start);
        let stretch = (boundary - start) / CHAINS;
        let mut chains: Vec<Chain> = (0..CHAINS)
            .map(|i| {
                let from = start + i * stretch;
                let to = if i + 1 == CHAINS {
                    boundary
                } else {
                    from + stretch
                };
                let begin = if i == 0 {
                    Some(start)
                } else {
                    self.guess_start(from, to)
                };
                Chain::new(begin.unwrap_or(to), to, self.spare.take())
            })
            .collect();
        // Step every chain one frame at a time, round robin: their loads are independent.
        let mut active = CHAINS;
        while active > 0 {
            active = 0;
            for chain in &mut chains {
                if self.step(chain) {
                    active += 1;
                }
            }
        }
        // Stitch: each chain must begin where the one before it ended.
        let mut frames = self.spare.take();
        let mut pos = start;
        let mut damage = None;
        for mut chain in chains {
            if damage.is_none() {
                if chain.start != pos {
                    self.rewalks.fetch_add(1, Ordering::Relaxed);
                    self.spare.give(chain.frames);
                    chain = Chain::new(pos, chain.end, self.spare.take());
                    while self.step(&mut chain) {}
                }
                frames.extend_from_slice(&chain.frames);
                pos = chain.pos;
                damage = chain.damage;
            }
            self.spare.give(chain.frames);
        }
        Region {
            start,
            end: pos,
            frames,
            damage,
            spare: Arc::clone(&self.spare),
        }
    }

    /// Reads the record at the chain's position into its index; false once the chain has
    /// reached its end or damage.
    #[inline]
    fn step(&self, chain: &mut Chain) -> bool {
        let data = self.bytes();
        let pos = chain.pos;
        if pos >= chain.end || pos >= data.len() || chain.damage.is_some() {
            return false;
        }
        match self.format.record(data, pos) {
            Ok(r) => {
                let frame = &data[r.offset..r.next()];
                chain.frames.push(Entry {
                    offset: r.offset,
                    len: r.len,
                    orig_len: r.orig_len,
                    ts_ns: r.ts_ns,
                    flow_hash: (self.flow_hash)(self.format.linktype, frame),
                });
                chain.pos = r.next();
                // The chain's next header is read again only after every other chain's next
                // step: ask for it now.
                prefetch(data.get(chain.pos..).unwrap_or_default());
                true
            }
            Err(damage) => {
                chain.damage = Some(damage);
                false
            }
        }
    }

    /// The first offset at or after `from`, before `before` and within [`GUESS_SCAN`] of
    /// `from`, where [`GUESS_CHAIN`] plausible record headers chain up, or where fewer do and
    /// the last ends exactly at the end of the file.
    fn guess_start(&self, from: usize, before: usize) -> Option<usize> {
        let end = before
            .min(self.bytes().len())
            .min(from.saturating_add(GUESS_SCAN));
        (from.max(self.first_frame)..end).find(|&p| self.plausible_chain(p))
    }

    fn plausible_chain(&self, mut pos: usize) -> bool {
        let len = self.bytes().len();
        let mut last_sec = None;
        for _ in 0..GUESS_CHAIN {
            if pos == len {
                return last_sec.is_some();
            }
            let Some(h) = self.format.header(self.bytes(), pos) else {
                return false;
            };
            let plausible = h.caplen as usize <= MAX_RECORD
                && h.caplen <= h.orig_len
                && u64::from(h.ts_frac) < self.format.units_per_sec
                && last_sec.is_none_or(|s: u32| h.ts_sec.abs_diff(s) <= GUESS_MAX_GAP_S);
            let next = pos + 16 + h.caplen as usize;
            if !plausible || next > len {
                return false;
            }
            last_sec = Some(h.ts_sec);
            pos = next;
        }
        true
    }
}

/// One stretch of a region being walked.
struct Chain {
    /// Where the walk of this stretch began.
    start: usize,
    /// The next record's offset.
    pos: usize,
    /// Records that begin at or after this belong to the next stretch.
    end: usize,
    frames: Vec<Entry>,
    damage: Option<Damage>,
}

impl Chain {
    /// A stretch from `start` to `end`, indexed into `frames` (empty, maybe with capacity).
    fn new(start: usize, end: usize, frames: Vec<Entry>) -> Self {
        Chain {
            start,
            pos: start,
            end,
            frames,
            damage: None,
        }
    }
}

/// One reader's way through a [`SplitWalk`]: every frame of the file, in order.
pub struct SplitReader {
    name: String,
    walk: Arc<SplitWalk>,
    reader: usize,
    /// The region being read and its number.
    region: Option<(usize, Arc<Region>)>,
    next_frame: usize,
    /// Where the next region's true chain begins.
    true_start: usize,
    next_region: usize,
    done: bool,
}

impl SplitReader {
    /// Reader number `reader` of `walk`.
    pub fn new(name: String, walk: Arc<SplitWalk>, reader: usize) -> Self {
        let true_start = walk.first_frame;
        SplitReader {
            name,
            walk,
            reader,
            region: None,
            next_frame: 0,
            true_start,
            next_region: 0,
            done: false,
        }
    }

    /// Moves to the next frame: `Ok(false)` at the end of the file, an error at damage (the
    /// frames before it have all been handed out).
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        loop {
            if self.done {
                return Ok(false);
            }
            if let Some((_, region)) = &self.region {
                if self.next_frame < region.frames.len() {
                    // The frame's first bytes were last touched by whichever reader walked the
                    // region, maybe on another core: start loading a few frames ahead.
                    if let Some(e) = region.frames.get(self.next_frame + PREFETCH_FRAMES) {
                        let data = self.walk.bytes();
                        prefetch(data.get(e.offset..).unwrap_or_default());
                    }
                    self.next_frame += 1;
                    return Ok(true);
                }
                let damage = region.damage;
                self.true_start = region.end;
                self.leave_region();
                if let Some(damage) = damage {
                    self.done = true;
                    return Err(damage.error(&self.name));
                }
            }
            if self.true_start >= self.walk.bytes().len()
                || self.next_region >= self.walk.slots.len()
            {
                self.done = true;
                return Ok(false);
            }
            let k = self.next_region;
            self.walk.walk_ahead(self.reader, k);
            let Some(region) = self.walk.region(k, self.true_start) else {
                self.done = true;
                return Err(CaptureError::Read {
                    name: self.name.clone(),
                    offset: self.true_start as u64,
                });
            };
            self.region = Some((k, region));
            self.next_region = k + 1;
            self.next_frame = 0;
        }
    }

    /// The frame `advance` moved to, with its flow hash.
    pub fn frame(&self) -> Option<Frame<'_>> {
        let (_, region) = self.region.as_ref()?;
        let e = region.frames.get(self.next_frame.checked_sub(1)?)?;
        Some(Frame {
            ts_ns: e.ts_ns,
            linktype: self.walk.format.linktype,
            data: self.walk.bytes().get(e.offset..e.offset + e.len as usize)?,
            orig_len: e.orig_len,
            flow_hash: Some(e.flow_hash),
        })
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.region {
            Some((_, r)) => r
                .frames
                .get(self.next_frame)
                .map_or(r.end, |e| e.offset - 16) as u64,
            None => self.true_start as u64,
        }
    }

    fn leave_region(&mut self) {
        if let Some((k, region)) = self.region.take() {
            self.walk.map.reader_at(self.reader, region.end);
            self.walk.reader_at(self.reader, k + 1);
        }
    }
}

impl Drop for SplitReader {
    /// A reader that stops early must not hold the others' pages mapped or regions indexed.
    fn drop(&mut self) {
        self.region = None;
        self.walk.map.reader_at(self.reader, usize::MAX);
        self.walk.reader_at(self.reader, usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::FileReader;
    use crate::capture::test_support::{Seen, bundled_pcaps, read_all, sequential};

    /// A cheap stand-in for the decoder's hash: the first byte of the frame, if any.
    fn first_byte(_: i32, frame: &[u8]) -> Option<u64> {
        frame.first().map(|&b| u64::from(b))
    }

    /// Every one of `readers` readers, running at once on their own threads.
    fn split(bytes: &[u8], readers: usize, region_bytes: usize) -> (Vec<Seen>, usize) {
        let walk = SplitWalk::of_bytes(bytes.to_vec(), readers, first_byte, region_bytes)
            .expect("a classic pcap file");
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..readers)
                .map(|r| {
                    let walk = Arc::clone(&walk);
                    scope.spawn(move || {
                        let reader = SplitReader::new("t".into(), walk, r);
                        read_all(FileReader::Split(reader), |f| {
                            assert_eq!(f.flow_hash, Some(first_byte(0, f.data)));
                        })
                    })
                })
                .collect();
            let seen = handles
                .into_iter()
                .map(|h| h.join().expect("reader"))
                .collect();
            (seen, walk.rewalks())
        })
    }

    /// Returns how many stretches were walked again after a wrong guess.
    fn assert_same_as_sequential(bytes: &[u8], what: &str) -> usize {
        let expected = sequential(bytes);
        let mut rewalks = 0;
        for readers in [1, 2, 3] {
            for region_bytes in [700, 4096, 65_536] {
                let (seen, again) = split(bytes, readers, region_bytes);
                rewalks += again;
                for (r, seen) in seen.iter().enumerate() {
                    assert_eq!(
                        seen.0.len(),
                        expected.0.len(),
                        "{what}: reader {r} of {readers}, regions of {region_bytes}: frame count"
                    );
                    assert!(
                        seen == &expected,
                        "{what}: reader {r} of {readers}, regions of {region_bytes} differ"
                    );
                }
            }
        }
        rewalks
    }

    fn record(ts_sec: u32, ts_usec: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [ts_sec, ts_usec, data.len() as u32, data.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn file_header() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65_535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h
    }

    #[test]
    fn every_reader_sees_exactly_the_frames_of_a_sequential_read_of_the_bundled_captures() {
        for (name, bytes) in bundled_pcaps() {
            assert_same_as_sequential(&bytes, &name);
        }
    }

    /// Frames whose payload is itself a run of well-formed records (a capture inside a
    /// capture): the walks that start from a guess inside them guess wrong, and the frames
    /// handed out must still be the true ones.
    #[test]
    fn a_capture_inside_a_capture_misleads_guesses_but_not_the_frames() {
        let mut inner = Vec::new();
        for i in 0..40u32 {
            inner.extend(record(1_700_000_000 + i, i, &[0xab; 9]));
        }
        let mut bytes = file_header();
        for i in 0..300u32 {
            let payload: &[u8] = if i % 3 == 0 { &inner } else { &[7; 60] };
            bytes.extend(record(1_600_000_000 + i, 500_000, payload));
        }
        let rewalks = assert_same_as_sequential(&bytes, "nested");
        assert!(rewalks > 0, "no guess landed inside the nested records");
    }

    #[test]
    fn damage_is_reported_where_a_sequential_read_reports_it_after_the_same_frames() {
        let mut good = file_header();
        for i in 0..200u32 {
            good.extend(record(1_600_000_000 + i, 0, &[i as u8; 100]));
        }
        // Cut inside the last record.
        let truncated = good[..good.len() - 30].to_vec();
        assert_same_as_sequential(&truncated, "truncated");
        // A record in the middle that claims more captured bytes than any packet, with more
        // than that many bytes after it (with fewer, the record is simply cut short).
        let mut oversized = good.clone();
        for i in 0..11_000u32 {
            oversized.extend(record(1_600_001_000 + i, 0, &[i as u8; 100]));
        }
        let at = 24 + 120 * 116 + 8;
        oversized[at..at + 4].copy_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes());
        let (frames, error) = sequential(&oversized);
        assert_eq!(frames.len(), 120);
        assert!(error.is_some_and(|e| e.contains("claims")));
        assert_same_as_sequential(&oversized, "oversized");
    }
}
