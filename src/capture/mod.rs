//! Capture stage: reads pcap and pcapng files (or standard input) and yields raw link-layer
//! frames with their timestamps and link types. Pure Rust (rusticata's `pcap-parser`), so
//! offline replay needs no system library. `live` (cargo feature `live`) reads the same frames
//! from a network interface through libpcap. A gzip-compressed capture (`.pcap.gz`, as
//! rotated captures usually are) is recognised by its magic bytes, whatever its name, and read
//! through a decompressor as a stream.

pub mod bpf;
mod classic;
mod in_place;
#[cfg(all(unix, feature = "live"))]
pub mod live;
mod split;

pub use classic::{ClassicReader, Legacy};
pub use in_place::{Backing, InPlaceReader, MapShare, MappedFile, SharedMap};
pub use split::{SplitReader, SplitWalk};

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

/// The first two bytes of every gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the file at `path` starts like gzip.
pub fn is_gzip(path: &str) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 0))
        .is_ok_and(|()| magic == GZIP_MAGIC)
}

/// `input` decompressed when it starts like gzip (every member of a concatenated file, as
/// `cat a.gz b.gz` makes), else as it is.
fn maybe_gunzip<R: Read + Send + 'static>(input: R) -> Box<dyn Read + Send> {
    let mut input = BufReader::with_capacity(64 << 10, input);
    match input.fill_buf() {
        Ok(head) if head.starts_with(&GZIP_MAGIC) => {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        }
        _ => Box::new(input),
    }
}

/// Largest record a capture may claim. libpcap's own maximum snap length is 256 KiB; anything
/// larger is a lie in the file, not a packet.
const MAX_RECORD: usize = 1 << 20;
/// Read buffer: large reads keep replay from being syscall-bound. Fuzz builds (`cargo fuzz`
/// sets `cfg(fuzzing)`) start small: a fresh 4 MiB buffer per input would make every run a
/// page-fault storm, and a small one also exercises the buffer-growing path on small inputs.
const READ_BUFFER: usize = if cfg!(fuzzing) { 64 << 10 } else { 4 << 20 };

/// A failure to read a capture file. The offset is the byte position in the file where the
/// damage starts; every packet before it has already been handed out. Each message is one line
/// that says what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{name}: cannot open: {source}{}", open_hint(.source))]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: is a directory, not a capture file; name the capture files in it")]
    IsDirectory { name: String },
    #[error("{name}: empty file, not a pcap or pcapng capture; nothing to replay")]
    Empty { name: String },
    #[error(
        "{name}: not a pcap or pcapng capture (unrecognised header at offset 0); \
         convert it with `tshark -F pcapng -r FILE -w FILE.pcapng`"
    )]
    NotCapture { name: String },
    /// The file ends inside the capture's own header: no packet was ever in it, so this is an
    /// unusable input (exit 3), not damage part-way (exit 4).
    #[error(
        "{name}: too short to be a capture: it ends inside the pcap/pcapng file header; \
         the file was cut off before its first packet, copy it again"
    )]
    TooShort { name: String },
    #[error(
        "{name}: truncated: the record at offset {offset} ends before its stated length; \
         the packets before it were replayed"
    )]
    Truncated { name: String, offset: u64 },
    #[error("{name}: damaged at offset {offset}: {what}; the packets before it were replayed")]
    Damaged {
        name: String,
        offset: u64,
        what: String,
    },
    #[error("{name}: read error at offset {offset}; the packets before it were replayed")]
    Read { name: String, offset: u64 },
}

/// What to do when a file cannot be opened, for the causes a user can fix.
fn open_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "; check the path",
        std::io::ErrorKind::PermissionDenied => {
            "; give the user running pinwatch read access, or copy the file"
        }
        _ => "",
    }
}

impl CaptureError {
    /// Errors after which the packets before the damage were still processed.
    pub fn is_mid_file(&self) -> bool {
        matches!(
            self,
            CaptureError::Truncated { .. }
                | CaptureError::Damaged { .. }
                | CaptureError::Read { .. }
        )
    }
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// LINKTYPE_* value of the interface that captured it.
    pub linktype: i32,
    /// Captured bytes (possibly cut by the snap length).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// The decoder's quick flow hash of the frame, when the reader has already worked it out
    /// (a [`SplitReader`]): `Some(None)` means the frame does not have the common shape.
    pub flow_hash: Option<Option<u64>>,
}

/// What opening a path gave.
enum Opened {
    Mapped(MappedFile),
    Stream(String, Box<dyn Read + Send>),
}

/// A capture file being read, the fastest way its kind and the run allow.
pub enum FileReader {
    /// Through pcap-parser's readers: pcapng, the "modified" pcap format, standard input.
    Whole(CaptureReader),
    /// A mapped classic pcap file, record by record.
    Classic(ClassicReader),
    /// A mapped classic pcap file as one of several readers, through their shared walk.
    Split(SplitReader),
}

impl FileReader {
    /// Opens `path` (`-`: standard input) for a single reader.
    pub fn open(path: &str) -> Result<Self, CaptureError> {
        match CaptureReader::open_path(path, None)? {
            Opened::Mapped(mapped) => match in_place::classic_pcap(mapped.as_ref()) {
                Some((format, first)) => Ok(FileReader::Classic(ClassicReader::new(
                    path.to_string(),
                    mapped,
                    format,
                    first,
                ))),
                None => CaptureReader::from_bytes(path.to_string(), mapped).map(FileReader::Whole),
            },
            Opened::Stream(name, input) => {
                CaptureReader::from_read(name, input).map(FileReader::Whole)
            }
        }
    }

    /// Opens `path` for reader `reader` of `share`; `flow_hash` goes into a split walk's index.
    pub fn open_shared(
        path: &str,
        share: &MapShare,
        reader: usize,
        flow_hash: fn(i32, &[u8]) -> Option<u64>,
    ) -> Result<Self, CaptureError> {
        // Opening checks the file and maps it (once for every reader).
        let mapped = match CaptureReader::open_path(path, Some((share, reader)))? {
            Opened::Mapped(mapped) => mapped,
            Opened::Stream(name, input) => {
                return CaptureReader::from_read(name, input).map(FileReader::Whole);
            }
        };
        match share.split_walk(flow_hash) {
            Some(walk) => {
                // The split reader tells the mapping how far it has got from now on.
                mapped.detach();
                let reader = SplitReader::new(path.to_string(), walk, reader);
                Ok(FileReader::Split(reader))
            }
            None => CaptureReader::from_bytes(path.to_string(), mapped).map(FileReader::Whole),
        }
    }

    /// See [`CaptureReader::advance`].
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        match self {
            FileReader::Whole(r) => r.advance(),
            FileReader::Classic(r) => r.advance(),
            FileReader::Split(r) => r.advance(),
        }
    }

    /// See [`CaptureReader::frame`].
    pub fn frame(&self) -> Option<Frame<'_>> {
        match self {
            FileReader::Whole(r) => r.frame(),
            FileReader::Classic(r) => r.frame(),
            FileReader::Split(r) => r.frame(),
        }
    }

    pub fn bytes_read(&self) -> u64 {
        match self {
            FileReader::Whole(r) => r.bytes_read(),
            FileReader::Classic(r) => r.bytes_read(),
            FileReader::Split(r) => r.bytes_read(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_s: i64,
}

/// Timestamp units per second from a pcapng `if_tsresol` byte: 10^n, or 2^n when the high bit
/// is set. (pcap-parser 0.17 rejects every binary resolution because it compares the byte with
/// its flag bit still set, so this is decoded here.)
fn units_per_second(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 != 0 {
        (n <= 63).then(|| 1u64 << n)
    } else {
        10u64.checked_pow(n)
    }
}

/// Where the current packet's bytes sit in the reader's buffer, with its metadata.
struct Pending {
    start: usize,
    len: usize,
    ts_ns: i64,
    linktype: i32,
    orig_len: u32,
}

/// A streaming reader over one capture file.
pub struct CaptureReader {
    name: String,
    reader: Box<dyn PcapReaderIterator + Send>,
    /// Bytes of the file consumed so far (start of the next block).
    offset: u64,
    /// Size of the block returned by the previous call, consumed on the next.
    to_consume: usize,
    legacy: Option<Interface>,
    interfaces: Vec<Interface>,
    /// Byte order of the current pcapng section, once its header was read.
    ng_big_endian: Option<bool>,
    /// Bytes read so far, for the progress bar.
    bytes_read: u64,
    /// The packet [`CaptureReader::advance`] stopped at.
    current: Option<Pending>,
}

impl CaptureReader {
    /// Opens a file by path; `-` reads standard input.
    pub fn open(path: &str) -> Result<Self, CaptureError> {
        match Self::open_path(path, None)? {
            Opened::Mapped(mapped) => Self::from_bytes(path.to_string(), mapped),
            Opened::Stream(name, input) => Self::from_read(name, input),
        }
    }

    /// Checks and opens a path: mapped when it is a non-empty regular file that can be, as
    /// reader `reader` of the mapping shared through `share` if given (the first reader to open
    /// the file maps it, the others read the same mapping).
    fn open_path(path: &str, share: Option<(&MapShare, usize)>) -> Result<Opened, CaptureError> {
        if path == "-" {
            let stdin = maybe_gunzip(std::io::stdin());
            return Ok(Opened::Stream("standard input".to_string(), stdin));
        }
        let meta = std::fs::metadata(path).map_err(|source| CaptureError::Open {
            name: path.to_string(),
            source,
        })?;
        if meta.is_dir() {
            return Err(CaptureError::IsDirectory {
                name: path.to_string(),
            });
        }
        let file = File::open(path).map_err(|source| CaptureError::Open {
            name: path.to_string(),
            source,
        })?;
        if meta.is_file() && is_gzip(path) {
            return Ok(Opened::Stream(path.to_string(), maybe_gunzip(file)));
        }
        if meta.is_file() && meta.len() > 0 {
            // SAFETY: the map is only read, and only through bounds-checked slices. The one
            // hazard is another process truncating the file while it is replayed, which ends
            // the process with SIGBUS; the README says so. Appends are harmless (they are not
            // seen). If mapping fails (a file system that cannot), the file is streamed.
            let map_file = || unsafe { memmap2::Mmap::map(&file) }.ok();
            let mapped = match share {
                Some((share, reader)) => share.view(reader, map_file),
                None => map_file().map(MappedFile::new),
            };
            if let Some(mapped) = mapped {
                return Ok(Opened::Mapped(mapped));
            }
        }
        Ok(Opened::Stream(path.to_string(), Box::new(file)))
    }

    /// Parses bytes already in memory (a mapped file, or a buffer) in place: frames are
    /// borrowed from `bytes`, nothing is copied.
    pub fn from_bytes<B: Backing + Send + 'static>(
        name: String,
        bytes: B,
    ) -> Result<Self, CaptureError> {
        match InPlaceReader::new(bytes) {
            Ok(r) => Ok(Self::with_reader(name, Box::new(r))),
            Err(e) => Err(Self::opening_error(name, e)),
        }
    }

    /// Wraps any byte source.
    pub fn from_read<R: Read + Send + 'static>(
        name: String,
        input: R,
    ) -> Result<Self, CaptureError> {
        match pcap_parser::create_reader(READ_BUFFER, input) {
            Ok(r) => Ok(Self::with_reader(name, r)),
            Err(e) => Err(Self::opening_error(name, e)),
        }
    }

    /// Why a file could not even start: what the first bytes said.
    fn opening_error(name: String, e: PcapError<&[u8]>) -> CaptureError {
        match e {
            PcapError::Eof => CaptureError::Empty { name },
            PcapError::ReadError => CaptureError::Read { name, offset: 0 },
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => CaptureError::TooShort { name },
            _ => CaptureError::NotCapture { name },
        }
    }

    fn with_reader(name: String, reader: Box<dyn PcapReaderIterator + Send>) -> Self {
        CaptureReader {
            name,
            reader,
            offset: 0,
            to_consume: 0,
            legacy: None,
            interfaces: Vec::new(),
            ng_big_endian: None,
            bytes_read: 0,
            current: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Byte offset in the file of the next unread block.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn damaged(&self, what: impl Into<String>) -> CaptureError {
        CaptureError::Damaged {
            name: self.name.clone(),
            offset: self.offset,
            what: what.into(),
        }
    }

    /// The next frame, `Ok(None)` at the clean end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        Ok(if self.advance()? { self.frame() } else { None })
    }

    /// Moves to the next packet; `Ok(false)` at the clean end of the file. The packet is then
    /// available from [`CaptureReader::frame`] until the next call.
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        self.current = None;
        loop {
            if self.to_consume > 0 {
                self.reader.consume(self.to_consume);
                self.offset += self.to_consume as u64;
                self.to_consume = 0;
            }
            match self.next_block()? {
                None => return Ok(false),
                Some(None) => {}
                Some(Some(p)) => {
                    self.current = Some(p);
                    return Ok(true);
                }
            }
        }
    }

    /// The packet the last successful [`CaptureReader::advance`] stopped at.
    pub fn frame(&self) -> Option<Frame<'_>> {
        let p = self.current.as_ref()?;
        Some(Frame {
            ts_ns: p.ts_ns,
            linktype: p.linktype,
            data: &self.reader.data()[p.start..p.start + p.len],
            orig_len: p.orig_len,
            flow_hash: None,
        })
    }

    /// Reads one block. `Ok(None)`: end of file; `Ok(Some(None))`: a non-packet block was
    /// handled; `Ok(Some(Some(p)))`: a packet whose bytes stay in the buffer until the next call.
    fn next_block(&mut self) -> Result<Option<Option<Pending>>, CaptureError> {
        let mut refills = 0;
        loop {
            if let Some(len) = self.short_ng_block() {
                return Err(self.damaged(format!(
                    "pcapng block length {len} is shorter than a block header"
                )));
            }
            let buffer_start = self.reader.data().as_ptr() as usize;
            match self.reader.next() {
                Ok((size, block)) => {
                    if let PcapBlockOwned::NG(Block::SectionHeader(shb)) = &block {
                        self.ng_big_endian = Some(shb.big_endian());
                    }
                    let outcome = Self::interpret(
                        block,
                        buffer_start,
                        &mut self.legacy,
                        &mut self.interfaces,
                    );
                    self.to_consume = size;
                    self.bytes_read = self.offset + size as u64;
                    return match outcome {
                        Ok(p) => Ok(Some(p)),
                        Err(what) => Err(self.damaged(what)),
                    };
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    refills += 1;
                    if refills > 64 {
                        return Err(CaptureError::Truncated {
                            name: self.name.clone(),
                            offset: self.offset,
                        });
                    }
                    if self.reader.refill().is_err() {
                        return Err(CaptureError::Read {
                            name: self.name.clone(),
                            offset: self.offset,
                        });
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(CaptureError::Truncated {
                        name: self.name.clone(),
                        offset: self.offset,
                    });
                }
                Err(PcapError::BufferTooSmall) => {
                    let size = self.reader.data().len() * 2;
                    if size > MAX_RECORD * 2 || !self.reader.grow(size.max(READ_BUFFER)) {
                        return Err(self.damaged("record length larger than any real packet"));
                    }
                }
                Err(PcapError::ReadError) => {
                    return Err(CaptureError::Read {
                        name: self.name.clone(),
                        offset: self.offset,
                    });
                }
                Err(_) => return Err(self.damaged("unparseable record header")),
            }
        }
    }

    /// The stated length of the next pcapng block when it is under the 12 bytes every block
    /// takes. pcap-parser 0.17 subtracts 12 from it before checking it for some block types
    /// (process information), which overflows (a panic in debug builds, found by fuzzing), so
    /// such a block is refused before the parser sees it.
    fn short_ng_block(&self) -> Option<u32> {
        let big_endian = self.ng_big_endian?;
        let raw: [u8; 4] = self.reader.data().get(4..8)?.try_into().ok()?;
        let len = if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        (len < 12).then_some(len)
    }

    fn interpret(
        block: PcapBlockOwned<'_>,
        buffer_start: usize,
        legacy: &mut Option<Interface>,
        interfaces: &mut Vec<Interface>,
    ) -> Result<Option<Pending>, String> {
        let locate = |data: &[u8]| data.as_ptr() as usize - buffer_start;
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                let units = if h.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                };
                *legacy = Some(Interface {
                    linktype: h.network.0,
                    units_per_sec: units,
                    offset_s: 0,
                });
                Ok(None)
            }
            PcapBlockOwned::Legacy(b) => {
                let iface = legacy.ok_or("packet record before the file header")?;
                if b.caplen as usize > MAX_RECORD {
                    return Err(format!("record claims {} captured bytes", b.caplen));
                }
                let frac = b.ts_usec as u64 % iface.units_per_sec;
                let ts_ns = b.ts_sec as i64 * 1_000_000_000
                    + (frac * 1_000_000_000 / iface.units_per_sec) as i64;
                Ok(Some(Pending {
                    start: locate(b.data),
                    len: b.data.len(),
                    ts_ns,
                    linktype: iface.linktype,
                    orig_len: b.origlen,
                }))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                interfaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let units_per_sec = units_per_second(idb.if_tsresol).ok_or_else(|| {
                    format!(
                        "interface timestamp resolution byte {:#04x} is invalid",
                        idb.if_tsresol
                    )
                })?;
                interfaces.push(Interface {
                    linktype: idb.linktype.0,
                    units_per_sec,
                    offset_s: idb.ts_offset(),
                });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let iface = *interfaces.get(epb.if_id as usize).ok_or_else(|| {
                    format!(
                        "packet names interface {} that was never described",
                        epb.if_id
                    )
                })?;
                let caplen = (epb.caplen as usize).min(epb.data.len());
                let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                // Saturating: `if_tsoffset` and the units are whatever the file says, and a sum
                // past i64 overflowed (tests/fuzz_regressions.rs); such a time means nothing anyway.
                let secs = i64::try_from(units / iface.units_per_sec)
                    .unwrap_or(i64::MAX)
                    .saturating_add(iface.offset_s);
                let frac = units % iface.units_per_sec;
                let ts_ns = secs.saturating_mul(1_000_000_000).saturating_add(
                    (frac as u128 * 1_000_000_000 / iface.units_per_sec as u128) as i64,
                );
                Ok(Some(Pending {
                    start: locate(epb.data),
                    len: caplen,
                    ts_ns,
                    linktype: iface.linktype,
                    orig_len: epb.origlen,
                }))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let iface = *interfaces
                    .first()
                    .ok_or("packet before any interface description")?;
                let len = (spb.origlen as usize).min(spb.data.len());
                Ok(Some(Pending {
                    start: locate(spb.data),
                    len,
                    ts_ns: 0,
                    linktype: iface.linktype,
                    orig_len: spb.origlen,
                }))
            }
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

/// What the capture readers' unit tests share: reading a file to its end, and the bundled
/// captures to read.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{CaptureReader, FileReader, Frame};

    /// What a reader handed out: each frame (time, link type, bytes, wire length), then how it
    /// ended (the error's message, if any).
    pub type Seen = (Vec<(i64, i32, Vec<u8>, u32)>, Option<String>);

    /// Reads to the end, calling `check` on every frame.
    pub fn read_all(mut reader: FileReader, check: impl Fn(&Frame<'_>)) -> Seen {
        let mut frames = Vec::new();
        loop {
            match reader.advance() {
                Ok(true) => {
                    let f = reader.frame().expect("advance said there is a frame");
                    check(&f);
                    frames.push((f.ts_ns, f.linktype, f.data.to_vec(), f.orig_len));
                }
                Ok(false) => return (frames, None),
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }

    /// What pcap-parser's in-place reader makes of `bytes`.
    pub fn sequential(bytes: &[u8]) -> Seen {
        let reader = CaptureReader::from_bytes("t".into(), bytes.to_vec()).expect("opens");
        read_all(FileReader::Whole(reader), |_| {})
    }

    /// The classic pcap files in `captures/` (name, bytes).
    pub fn bundled_pcaps() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/captures");
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("captures/")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "pcap"))
            .map(|path| {
                (
                    path.display().to_string(),
                    std::fs::read(&path).expect("read"),
                )
            })
            .collect();
        assert!(files.len() >= 10, "only {} captures found", files.len());
        files
    }
}

#[cfg(test)]
mod tests {
    use super::units_per_second;

    #[test]
    fn decimal_and_binary_timestamp_resolutions() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(9), Some(1_000_000_000));
        assert_eq!(units_per_second(0x80 | 20), Some(1 << 20));
        assert_eq!(units_per_second(0x80 | 63), Some(1 << 63));
        assert_eq!(units_per_second(0x80 | 64), None);
        assert_eq!(units_per_second(20), None);
    }
}
