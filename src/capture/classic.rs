//! Classic pcap records read straight from the bytes of a mapped file.
//!
//! A classic pcap file is a 24-byte header and then records of a 16-byte header (seconds,
//! fraction, captured length, wire length) and the frame. That is simple enough that the
//! readers of mapped classic files parse it here directly, with the same checks and the same
//! errors as [`super::CaptureReader`] (pcap-parser) gives: for a single-threaded replay the
//! generic block reader's layers (a boxed iterator, the block enum, the interpretation) were a
//! tenth of the time. pcapng and the rare "modified" format keep going through pcap-parser.

use super::in_place::{Backing, MappedFile, SharedMap, classic_pcap, prefetch};
use super::{CaptureError, Frame, MAX_RECORD};

/// The record format of a classic pcap file with standard 16-byte record headers.
#[derive(Debug, Clone, Copy)]
pub struct Legacy {
    pub big_endian: bool,
    pub units_per_sec: u64,
    pub linktype: i32,
}

/// One record, located.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    /// Offset of the frame's first byte.
    pub offset: usize,
    pub len: u32,
    pub orig_len: u32,
    pub ts_ns: i64,
}

impl Record {
    /// Where the next record begins.
    pub fn next(&self) -> usize {
        self.offset + self.len as usize
    }
}

/// Why reading stopped before the end of the file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Damage {
    /// The record at this offset ends after the file does.
    Truncated { offset: usize },
    /// The record at this offset claims more captured bytes than any packet has.
    Oversized { offset: usize, caplen: u32 },
}

impl Damage {
    pub fn error(self, name: &str) -> CaptureError {
        match self {
            Damage::Truncated { offset } => CaptureError::Truncated {
                name: name.to_string(),
                offset: offset as u64,
            },
            Damage::Oversized { offset, caplen } => CaptureError::Damaged {
                name: name.to_string(),
                offset: offset as u64,
                what: format!("record claims {caplen} captured bytes"),
            },
        }
    }
}

/// The four words of a record header.
pub(crate) struct RecordHeader {
    pub ts_sec: u32,
    pub ts_frac: u32,
    pub caplen: u32,
    pub orig_len: u32,
}

impl Legacy {
    /// The record header at `pos`, if 16 bytes are there.
    #[inline]
    pub(crate) fn header(&self, data: &[u8], pos: usize) -> Option<RecordHeader> {
        let raw: &[u8; 16] = data.get(pos..pos.checked_add(16)?)?.try_into().ok()?;
        let word = |i: usize| {
            let b = [raw[i], raw[i + 1], raw[i + 2], raw[i + 3]];
            if self.big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        Some(RecordHeader {
            ts_sec: word(0),
            ts_frac: word(4),
            caplen: word(8),
            orig_len: word(12),
        })
    }

    /// The record at `pos` (which is before the end of `data`). Checked in pcap-parser's
    /// order: a record cut short by the end of the file is truncated, whatever it claims.
    #[inline]
    pub(crate) fn record(&self, data: &[u8], pos: usize) -> Result<Record, Damage> {
        let truncated = Damage::Truncated { offset: pos };
        let header = self.header(data, pos).ok_or(truncated)?;
        let offset = pos + 16;
        let end = offset + header.caplen as usize;
        if end > data.len() {
            return Err(truncated);
        }
        if header.caplen as usize > MAX_RECORD {
            return Err(Damage::Oversized {
                offset: pos,
                caplen: header.caplen,
            });
        }
        let units = self.units_per_sec;
        let frac = u64::from(header.ts_frac) % units;
        Ok(Record {
            offset,
            len: header.caplen,
            orig_len: header.orig_len,
            ts_ns: i64::from(header.ts_sec) * 1_000_000_000 + (frac * 1_000_000_000 / units) as i64,
        })
    }
}

/// A mapped classic pcap file read record by record on one thread.
pub struct ClassicReader {
    name: String,
    map: MappedFile,
    format: Legacy,
    /// The next record's offset.
    pos: usize,
    current: Option<Record>,
    done: bool,
}

impl ClassicReader {
    /// `map` holds a classic pcap file in `format` whose first record is at `first`.
    pub(crate) fn new(name: String, map: MappedFile, format: Legacy, first: usize) -> Self {
        ClassicReader {
            name,
            map,
            format,
            pos: first,
            current: None,
            done: false,
        }
    }

    /// A reader of `bytes` if they are a classic pcap file (tests and fuzzing).
    pub fn of_bytes(name: String, bytes: Vec<u8>) -> Option<Self> {
        let (format, first) = classic_pcap(&bytes)?;
        let map = MappedFile::reader(SharedMap::from_vec(bytes, 1), 0);
        Some(Self::new(name, map, format, first))
    }

    /// See [`super::CaptureReader::advance`].
    #[inline]
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        self.current = None;
        let data = self.map.as_ref();
        if self.done || self.pos >= data.len() {
            self.done = true;
            return Ok(false);
        }
        match self.format.record(data, self.pos) {
            Ok(record) => {
                self.pos = record.next();
                // The next record's header and the frame's first bytes, while this one is
                // processed: otherwise every record starts with a cache miss.
                prefetch(data.get(self.pos..).unwrap_or_default());
                self.current = Some(record);
                self.map.read_up_to(self.pos);
                Ok(true)
            }
            Err(damage) => {
                self.done = true;
                Err(damage.error(&self.name))
            }
        }
    }

    /// See [`super::CaptureReader::frame`].
    #[inline]
    pub fn frame(&self) -> Option<Frame<'_>> {
        let r = self.current?;
        Some(Frame {
            ts_ns: r.ts_ns,
            linktype: self.format.linktype,
            data: self.map.as_ref().get(r.offset..r.next())?,
            orig_len: r.orig_len,
            flow_hash: None,
        })
    }

    pub fn bytes_read(&self) -> u64 {
        self.pos as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::FileReader;
    use crate::capture::test_support::{Seen, bundled_pcaps, read_all, sequential};

    fn both(bytes: &[u8]) -> (Seen, Seen) {
        let classic = ClassicReader::of_bytes("t".into(), bytes.to_vec()).expect("classic");
        (
            sequential(bytes),
            read_all(FileReader::Classic(classic), |_| {}),
        )
    }

    /// The bundled captures, whole and cut at every few hundred bytes: the same frames and the
    /// same error as pcap-parser's reader.
    #[test]
    fn reads_what_pcap_parser_reads_of_the_bundled_captures_whole_and_cut() {
        for (name, bytes) in bundled_pcaps() {
            for cut in (24..bytes.len()).step_by(997).chain([bytes.len()]) {
                let (generic, classic) = both(&bytes[..cut]);
                assert!(generic == classic, "{name} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_record_claiming_more_than_any_packet_is_damage_in_both() {
        let mut bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/captures/squid-bump.pcap"
        ))
        .expect("read");
        // The second record's captured length, with more than a MiB of file after it.
        let first_len = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
        let at = 24 + 16 + first_len + 8;
        bytes.extend(std::iter::repeat_n(0u8, MAX_RECORD + 64));
        bytes[at..at + 4].copy_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes());
        let (generic, classic) = both(&bytes);
        assert_eq!(generic.0.len(), 1);
        assert!(generic.1.as_deref().is_some_and(|e| e.contains("claims")));
        assert!(generic == classic);
    }
}
