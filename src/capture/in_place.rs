//! Capture bytes parsed where they lie: a memory-mapped file (or any byte slice), walked
//! block by block with pcap-parser's own block parsers.
//!
//! Why: pcap-parser's streaming readers copy every byte twice, once from the page cache into
//! their buffer (`read`) and once more when the buffer shifts its unread tail to the front.
//! Together that was about a fifth of a single-threaded replay. A mapped file is parsed in
//! place and frames are borrowed straight from the map.
//!
//! The reader implements pcap-parser's [`PcapReaderIterator`], the same interface as the
//! streaming readers, so [`super::CaptureReader`] interprets blocks, locates frames and reports
//! damage identically whichever reader is underneath.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pcap_parser::nom::{self, Offset};

use super::classic::Legacy;
use super::split::SplitWalk;
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{
    LegacyPcapBlock, PcapBlockOwned, PcapError, PcapHeader, parse_pcap_frame, parse_pcap_frame_be,
    parse_pcap_frame_modified, parse_pcap_header,
};

type FrameParser = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

enum Format {
    /// Classic pcap: the file header, then frames all parsed the same way.
    Legacy {
        header: PcapHeader,
        parse: FrameParser,
    },
    /// pcapng: blocks in the byte order of the current section.
    Ng { big_endian: bool },
}

/// Bytes an [`InPlaceReader`] walks through, told when the reader is done with a prefix.
pub trait Backing: AsRef<[u8]> {
    /// Every byte before `pos` has been read (frames handed out earlier may still be looked at).
    fn read_up_to(&mut self, pos: usize) {
        let _ = pos;
    }
}

impl Backing for Vec<u8> {}

/// Where each of several readers of one file has got (`usize::MAX` once a reader is done), so
/// that what every reader is past can be let go.
pub(crate) struct Positions(Box<[AtomicUsize]>);

impl Positions {
    pub(crate) fn new(readers: usize) -> Self {
        Positions((0..readers.max(1)).map(|_| AtomicUsize::new(0)).collect())
    }

    /// Reader `reader` is at `pos`; returns where the slowest reader is.
    pub(crate) fn set(&self, reader: usize, pos: usize) -> usize {
        if let Some(p) = self.0.get(reader) {
            p.store(pos, Ordering::Release);
        }
        self.0
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn readers(&self) -> usize {
        self.0.len()
    }
}

/// A capture file mapped once for every reader of it. The reading workers of a multi-threaded
/// replay each go through the whole file; through one mapping its pages are faulted in once,
/// not once per worker, and handed back once, when every reader is past them.
pub struct SharedMap {
    map: Bytes,
    /// How far each reader has got, published a chunk at a time.
    positions: Positions,
    /// Pages before this offset have been handed back.
    released: Mutex<usize>,
}

/// The bytes behind a [`SharedMap`].
enum Bytes {
    Mapped(memmap2::Mmap),
    /// Bytes already in memory (tests and fuzzing): nothing to hand back.
    Owned(Vec<u8>),
}

impl SharedMap {
    /// A mapping that `readers` readers will walk; `MappedFile::reader` hands each its view.
    pub fn new(map: memmap2::Mmap, readers: usize) -> Arc<Self> {
        let _ = map.advise(memmap2::Advice::Sequential);
        Self::with(Bytes::Mapped(map), readers)
    }

    /// Bytes already in memory, read the same way as a mapped file.
    pub fn from_vec(bytes: Vec<u8>, readers: usize) -> Arc<Self> {
        Self::with(Bytes::Owned(bytes), readers)
    }

    fn with(map: Bytes, readers: usize) -> Arc<Self> {
        Arc::new(SharedMap {
            map,
            positions: Positions::new(readers),
            released: Mutex::new(0),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.map {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }

    /// Reader `reader` has read everything before `pos`: unmaps the pages every reader is past,
    /// a chunk at a time, so the process's resident size stays at tens of MB instead of
    /// growing to the file's size (the pages stay in the page cache).
    pub(crate) fn reader_at(&self, reader: usize, pos: usize) {
        let slowest = self.positions.set(reader, pos).min(self.bytes().len());
        let Bytes::Mapped(map) = &self.map else {
            return;
        };
        let Ok(mut released) = self.released.lock() else {
            return;
        };
        if slowest < *released + 2 * RELEASE_CHUNK {
            return;
        }
        // Keep the last chunk mapped: frames of recent blocks may still be borrowed.
        let end = (slowest - RELEASE_CHUNK) / RELEASE_CHUNK * RELEASE_CHUNK;
        // SAFETY: the map is MAP_SHARED, read-only, of a file nobody may truncate (see
        // `CaptureReader::open`). MADV_DONTNEED on such a map only drops page table entries: a
        // later access faults the very same file bytes back in from the page cache, so a slice
        // still borrowed from this range reads what it read before.
        #[cfg(unix)]
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                *released,
                end - *released,
            )
        };
        *released = end;
    }
}

/// Where the readers of one file find its [`SharedMap`]: the first to open the file maps it.
pub struct MapShare {
    map: Mutex<Option<Arc<SharedMap>>>,
    readers: usize,
    /// Whether the file is walked region by region (decided by the first reader to ask).
    split: Mutex<Option<Option<Arc<SplitWalk>>>>,
}

impl MapShare {
    /// For a file that `readers` readers will open.
    pub fn new(readers: usize) -> Self {
        MapShare {
            map: Mutex::new(None),
            readers,
            split: Mutex::new(None),
        }
    }

    /// The shared region-by-region walk of the file, if it is a classic pcap file that was
    /// mapped; made by the first reader to ask.
    pub fn split_walk(&self, flow_hash: fn(i32, &[u8]) -> Option<u64>) -> Option<Arc<SplitWalk>> {
        let mut split = self.split.lock().ok()?;
        if split.is_none() {
            let map = self.map.lock().ok()?.clone();
            *split = Some(map.and_then(|map| {
                let (format, first_frame) = classic_pcap(map.bytes())?;
                Some(SplitWalk::new(
                    map,
                    format,
                    first_frame,
                    self.readers,
                    flow_hash,
                ))
            }));
        }
        split.clone().flatten()
    }

    /// Reader `reader`'s view of the file, mapped by `map_file` if no reader has mapped it yet.
    pub fn view(
        &self,
        reader: usize,
        map_file: impl FnOnce() -> Option<memmap2::Mmap>,
    ) -> Option<MappedFile> {
        let mut slot = self.map.lock().ok()?;
        if slot.is_none() {
            *slot = Some(SharedMap::new(map_file()?, self.readers));
        }
        let shared = Arc::clone(slot.as_ref()?);
        Some(MappedFile::reader(shared, reader))
    }
}

/// One reader's view of a [`SharedMap`].
pub struct MappedFile {
    shared: Arc<SharedMap>,
    reader: usize,
    /// The last position told to the shared map.
    published: usize,
    /// Another reader type reports this reader's progress (see [`MappedFile::detach`]).
    detached: bool,
}

/// Pages are handed back this many bytes at a time, and readers tell the map how far they have
/// got this often.
const RELEASE_CHUNK: usize = 2 << 20;

impl MappedFile {
    /// The only reader of `map`.
    pub fn new(map: memmap2::Mmap) -> Self {
        Self::reader(SharedMap::new(map, 1), 0)
    }

    /// Reader number `reader` (below the `readers` the map was made for) of `shared`.
    pub fn reader(shared: Arc<SharedMap>, reader: usize) -> Self {
        MappedFile {
            shared,
            reader,
            published: 0,
            detached: false,
        }
    }

    /// Drops this view without telling the map that the reader is done: a
    /// [`super::SplitReader`] reads the same mapping as the same reader and reports instead.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for MappedFile {
    /// A reader that stops (at the end, or at damage) must not hold the others' pages mapped.
    fn drop(&mut self) {
        if !self.detached {
            self.shared.reader_at(self.reader, usize::MAX);
        }
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.shared.bytes()
    }
}

impl Backing for MappedFile {
    fn read_up_to(&mut self, pos: usize) {
        if pos >= self.published + RELEASE_CHUNK {
            self.published = pos;
            self.shared.reader_at(self.reader, pos);
        }
    }
}

/// The record format and first record's offset of a classic pcap file with standard records.
pub(crate) fn classic_pcap(data: &[u8]) -> Option<(Legacy, usize)> {
    if parse_sectionheaderblock(data).is_ok() {
        return None;
    }
    let (_, header) = parse_pcap_header(data).ok()?;
    if header.is_modified_format() {
        return None;
    }
    let format = Legacy {
        big_endian: header.is_bigendian(),
        units_per_sec: if header.is_nanosecond_precision() {
            1_000_000_000
        } else {
            1_000_000
        },
        linktype: header.network.0,
    };
    Some((format, header.size()))
}

/// A [`PcapReaderIterator`] over bytes already in memory.
pub struct InPlaceReader<B> {
    bytes: B,
    /// Start of the next block.
    pos: usize,
    format: Format,
}

impl<B: Backing> InPlaceReader<B> {
    /// Recognises the format from the first bytes, as pcap-parser's `create_reader` does.
    pub fn new(bytes: B) -> Result<Self, PcapError<&'static [u8]>> {
        let data = bytes.as_ref();
        if data.is_empty() {
            return Err(PcapError::Eof);
        }
        let format = if parse_sectionheaderblock(data).is_ok() {
            Format::Ng { big_endian: false }
        } else {
            match parse_pcap_header(data) {
                Ok((_, header)) => {
                    let parse: FrameParser = if header.is_modified_format() {
                        parse_pcap_frame_modified
                    } else if header.is_bigendian() {
                        parse_pcap_frame_be
                    } else {
                        parse_pcap_frame
                    };
                    Format::Legacy { header, parse }
                }
                // Every byte of the file is here: too short for a header means truncated.
                Err(nom::Err::Incomplete(_)) => return Err(PcapError::Incomplete(0)),
                Err(_) => return Err(PcapError::HeaderNotRecognized),
            }
        };
        Ok(InPlaceReader {
            bytes,
            pos: 0,
            format,
        })
    }
}

impl<B: Backing> PcapReaderIterator for InPlaceReader<B> {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        let data = self.bytes.as_ref().get(self.pos..).unwrap_or_default();
        if data.is_empty() {
            return Err(PcapError::Eof);
        }
        let parsed = match &mut self.format {
            Format::Legacy { header, .. } if self.pos == 0 => {
                return Ok((header.size(), PcapBlockOwned::from(header.clone())));
            }
            Format::Legacy { parse, .. } => parse(data).map(|(rem, b)| (rem, b.into())),
            Format::Ng { big_endian } => {
                let parse = if *big_endian {
                    parse_block_be
                } else {
                    parse_block_le
                };
                parse(data).map(|(rem, b)| {
                    if let Block::SectionHeader(shb) = &b {
                        *big_endian = shb.big_endian();
                    }
                    (rem, b.into())
                })
            }
        };
        match parsed {
            Ok((rem, block)) => {
                prefetch(rem);
                Ok((data.offset(rem), block))
            }
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e),
            // Nothing more will ever arrive: a block cut short is the end of a truncated file.
            Err(nom::Err::Incomplete(_)) => Err(PcapError::UnexpectedEof),
        }
    }

    fn consume(&mut self, offset: usize) {
        self.pos = self.pos.saturating_add(offset);
        self.bytes.read_up_to(self.pos);
    }

    fn consume_noshift(&mut self, offset: usize) {
        self.consume(offset);
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn grow(&mut self, _new_size: usize) -> bool {
        false
    }

    fn data(&self) -> &[u8] {
        self.bytes.as_ref().get(self.pos..).unwrap_or_default()
    }

    fn reader_exhausted(&self) -> bool {
        true
    }
}

/// Asks the CPU to start loading the next block's first cache lines (its record header and
/// the frame's link, IP and TCP headers) while this block is processed. Without it every
/// block began with a cache miss on a fresh line of the map: the block parser and the decoder
/// took about a sixth of a single-threaded replay waiting for memory.
#[inline]
pub(crate) fn prefetch(next: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for offset in [0, 64] {
        if let Some(byte) = next.get(offset) {
            // SAFETY: a prefetch is only a hint; it never faults and has no effect on memory.
            // The address is inside a live slice anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    std::ptr::from_ref(byte).cast(),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = next;
}
