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
    let mut r = Reassembler::new();
    r.syn(1000);
    let mut sink = Sink::default();
    for i in 0..2000u32 {
        // Stream offsets 1, 3, 5...: every even offset is a hole the capture never fills.
        r.segment(1000 + 2 + 2 * i, b"x", 1, cap, &mut |c| sink.take(c));
    }
    assert!(
        r.stats().queue_overflows > 0,
        "2000 queued pieces fit an 8 KiB queue"
    );
    let released_by_overflow = sink.data.len();
    r.finish(cap, &mut |c| sink.take(c));
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

/// A little-endian pcapng block.
fn ng_block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    let total = (12 + body.len().div_ceil(4) * 4) as u32;
    out.extend(block_type.to_le_bytes());
    out.extend(total.to_le_bytes());
    out.extend(body);
    out.resize(out.len() + body.len().div_ceil(4) * 4 - body.len(), 0);
    out.extend(total.to_le_bytes());
}

/// A pcapng section with one Ethernet interface per `if_tsoffset` given, each counting whole
/// seconds (`if_tsresol` 0), then one packet per (interface, timestamp units, frame).
fn pcapng_seconds(tsoffsets: &[i64], packets: &[(u32, u64, &[u8])]) -> Vec<u8> {
    let mut file = pcapng_shb();
    for offset in tsoffsets {
        let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
        idb.extend([9, 0, 1, 0, 0, 0, 0, 0]); // if_tsresol = 0: 10^0 units per second
        idb.extend([14, 0, 8, 0]); // if_tsoffset
        idb.extend(offset.to_le_bytes());
        idb.extend([0, 0, 0, 0]);
        ng_block(&mut file, 1, &idb);
    }
    for (iface, units, frame) in packets {
        let mut epb = Vec::new();
        epb.extend(iface.to_le_bytes());
        epb.extend(((units >> 32) as u32).to_le_bytes());
        epb.extend((*units as u32).to_le_bytes());
        epb.extend((frame.len() as u32).to_le_bytes());
        epb.extend((frame.len() as u32).to_le_bytes());
        epb.extend(*frame);
        ng_block(&mut file, 6, &epb);
    }
    file
}

/// capture_reader target: an `if_tsoffset` near i64::MAX added to the packet's seconds
/// overflowed (a panic in debug builds; in release the time wrapped to the year 1677). The sum
/// now saturates: the packet is read, as late as a timestamp can be.
#[test]
fn huge_pcapng_timestamp_offset_saturates() {
    let file = pcapng_seconds(&[i64::MAX], &[(0, 5, &[0u8; 60])]);
    let mut reader =
        CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(file)).expect("a pcapng");
    let frame = reader.next_frame().expect("readable").expect("one packet");
    assert_eq!(frame.ts_ns, i64::MAX);
    assert!(reader.next_frame().expect("clean end").is_none());
}

/// pipeline target: a client that aborts with unknown_ca, its first nine packets stamped about
/// 2262 (2^63 ns less 1000 s) and the rest on a second interface whose `if_tsoffset` puts them
/// in the far past. The abort delay subtracted the server's last handshake time from the
/// abort's: an overflow, a panic in debug builds; in release the wrapped difference reported a
/// 1.85 s delay for an alert stamped before the handshake. A clock that runs backwards now gives
/// no delay at all, with `delay_missing` saying why (a clamped 0 read as the fastest abort).
#[test]
fn timestamps_centuries_apart_do_not_overflow_the_abort_delay() {
    use pinwatch::decode;
    use pinwatch::flow::{FlowConfig, FlowTable};
    use pinwatch::output::record;
    use pinwatch::tls::At;

    let path = format!(
        "{}/captures/mitm-explicit-pinning.pcap",
        env!("CARGO_MANIFEST_DIR")
    );
    let capture = std::fs::read(path).expect("capture");
    let mut reader =
        CaptureReader::from_read("capture".into(), std::io::Cursor::new(capture)).expect("pcap");
    // The first connection's frames (13 packets: CONNECT, handshake, alert, FINs).
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut port = None;
    while let Some(f) = reader.next_frame().expect("readable") {
        let seg = decode::decode(f.linktype, f.data).expect("TCP");
        let client_port = *port.get_or_insert(seg.sport);
        if seg.sport == client_port || seg.dport == client_port {
            frames.push(f.data.to_vec());
        }
    }
    assert_eq!(frames.len(), 13);
    let late = (i64::MAX / 1_000_000_000 - 1000) as u64;
    let packets: Vec<(u32, u64, &[u8])> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i < 9 {
                (0, late, f.as_slice())
            } else {
                (1, 0, f.as_slice())
            }
        })
        .collect();
    let file = pcapng_seconds(&[0, i64::MIN], &packets);

    let mut reader =
        CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(file)).expect("a pcapng");
    let mut table = FlowTable::new(FlowConfig::default());
    let mut records = Vec::new();
    let mut pkt = 0;
    while let Some(frame) = reader.next_frame().expect("readable") {
        pkt += 1;
        let at = At::new(pkt, frame.ts_ns);
        let seg = decode::decode(frame.linktype, frame.data).expect("TCP");
        table.packet(&seg, at, &mut |c| records.push(record::build(&c).0));
    }
    table.drain(&mut |c| records.push(record::build(&c).0));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome.as_str(), "client_alert");
    assert_eq!(records[0].outcome_detail.as_deref(), Some("unknown_ca"));
    // The alert's timestamp is centuries before the handshake's: no delay can be measured, and
    // the record says why instead of passing for a fast abort.
    assert_eq!(records[0].abort_delay_ms, None);
    assert_eq!(
        records[0].delay_missing,
        Some(pinwatch::classify::DelayMissing::ClockOutOfOrder)
    );
}
