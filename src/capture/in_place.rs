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

use pcap_parser::nom::{self, Offset};
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

/// A memory-mapped capture file.
pub struct MappedFile {
    map: memmap2::Mmap,
    /// Pages before this offset have been handed back.
    released: usize,
}

/// Pages are handed back this many bytes at a time.
const RELEASE_CHUNK: usize = 2 << 20;

impl MappedFile {
    pub fn new(map: memmap2::Mmap) -> Self {
        let _ = map.advise(memmap2::Advice::Sequential);
        MappedFile { map, released: 0 }
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Backing for MappedFile {
    /// Unmaps the pages already read, a chunk at a time, so the process's resident size stays
    /// at tens of MB instead of growing to the file's size (the pages stay in the page cache).
    fn read_up_to(&mut self, pos: usize) {
        if pos < self.released + 2 * RELEASE_CHUNK {
            return;
        }
        // Keep the last chunk mapped: frames of recent blocks may still be borrowed.
        let end = (pos - RELEASE_CHUNK) / RELEASE_CHUNK * RELEASE_CHUNK;
        // SAFETY: the map is MAP_SHARED, read-only, of a file nobody may truncate (see
        // `CaptureReader::open`). MADV_DONTNEED on such a map only drops page table entries: a
        // later access faults the very same file bytes back in from the page cache, so a slice
        // still borrowed from this range reads what it read before.
        #[cfg(unix)]
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.released,
                end - self.released,
            )
        };
        self.released = end;
    }
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
fn prefetch(next: &[u8]) {
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
