//! The capture-file reader over arbitrary bytes: pcap and pcapng headers, blocks, options and
//! record lengths come straight from the input. It must end with a frame list and either a
//! clean end or one typed error, never a panic, a hang or an allocation the file merely claims.
//!
//! Both readers run on every input: the streaming one (standard input, pipes) and the in-place
//! one (mapped files). They must hand out the same frames and stop at the same place. A
//! classic pcap file is also read by the direct reader of mapped classic files, and the way
//! several replay workers read it, through a shared
//! region-by-region walk with tiny regions (many guessed frame starts, some wrong): every
//! reader of it must see exactly what the in-place reader saw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::capture::{
    CaptureError, CaptureReader, ClassicReader, FileReader, SplitReader, SplitWalk,
};

/// The reader refuses records larger than this (capture::MAX_RECORD).
const MAX_RECORD: usize = 1 << 20;

/// Everything a reader produced: each frame's metadata and bytes, then how it stopped.
#[derive(Debug, PartialEq)]
struct Run {
    frames: Vec<(i64, i32, Vec<u8>, u32)>,
    /// `None`: a clean end; otherwise the error's offset, when it has one.
    end: Option<Option<u64>>,
}

fn error_offset(e: &CaptureError) -> Option<u64> {
    match e {
        CaptureError::Truncated { offset, .. }
        | CaptureError::Damaged { offset, .. }
        | CaptureError::Read { offset, .. } => Some(*offset),
        _ => None,
    }
}

fn read_all(reader: Result<CaptureReader, CaptureError>, data: &[u8]) -> Run {
    let mut run = Run {
        frames: Vec::new(),
        end: None,
    };
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            run.end = Some(error_offset(&e));
            return run;
        }
    };
    let mut last_offset = 0;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(frame.data.len() <= MAX_RECORD);
                // A frame is made of input bytes: it cannot be longer than the input.
                assert!(frame.data.len() <= data.len());
                run.frames.push((
                    frame.ts_ns,
                    frame.linktype,
                    frame.data.to_vec(),
                    frame.orig_len,
                ));
            }
            Ok(None) => break,
            Err(e) => {
                // The error names a place inside the file, and its message is one line.
                assert!(!e.to_string().contains('\n'));
                run.end = Some(error_offset(&e));
                break;
            }
        }
        assert!(reader.offset() >= last_offset, "offset went backwards");
        assert!(reader.offset() <= data.len() as u64);
        last_offset = reader.offset();
    }
    run
}

fuzz_target!(|data: &[u8]| {
    let streamed = read_all(
        CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(data.to_vec())),
        data,
    );
    let in_place = read_all(
        CaptureReader::from_bytes("fuzz".into(), data.to_vec()),
        data,
    );
    assert_eq!(streamed, in_place, "the two readers disagree");
    if let Some(classic) = ClassicReader::of_bytes("fuzz".into(), data.to_vec()) {
        let classic = read_file(FileReader::Classic(classic), data);
        assert_eq!(classic, in_place, "the classic reader disagrees");
    }
    for region_bytes in [64, 1000] {
        let Some(walk) = SplitWalk::of_bytes(data.to_vec(), 2, first_byte, region_bytes) else {
            break;
        };
        // One reader after the other: the second finds the regions the first walked.
        for reader in 0..2 {
            let split = SplitReader::new("fuzz".into(), walk.clone(), reader);
            let split = read_file(FileReader::Split(split), data);
            assert_eq!(split, in_place, "a split reader disagrees");
        }
    }
});

fn first_byte(_: i32, frame: &[u8]) -> Option<u64> {
    frame.first().map(|&b| u64::from(b))
}

/// Reads a classic or split reader to its end. A split reader's frames carry the flow hash
/// its walk worked out; a classic reader's carry none.
fn read_file(mut reader: FileReader, data: &[u8]) -> Run {
    let split = matches!(reader, FileReader::Split(_));
    let mut run = Run {
        frames: Vec::new(),
        end: None,
    };
    loop {
        match reader.advance() {
            Ok(true) => {
                let frame = reader.frame().expect("advance said there is a frame");
                assert!(frame.data.len() <= data.len());
                let hash = split.then(|| first_byte(0, frame.data));
                assert_eq!(frame.flow_hash, hash);
                run.frames.push((
                    frame.ts_ns,
                    frame.linktype,
                    frame.data.to_vec(),
                    frame.orig_len,
                ));
            }
            Ok(false) => break,
            Err(e) => {
                run.end = Some(error_offset(&e));
                break;
            }
        }
    }
    run
}
