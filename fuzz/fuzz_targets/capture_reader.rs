//! The capture-file reader over arbitrary bytes: pcap and pcapng headers, blocks, options and
//! record lengths come straight from the input. It must end with a frame list and either a
//! clean end or one typed error, never a panic, a hang or an allocation the file merely claims.
//!
//! Both readers run on every input: the streaming one (standard input, pipes) and the in-place
//! one (mapped files). They must hand out the same frames and stop at the same place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::capture::{CaptureError, CaptureReader};

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
    let in_place = read_all(CaptureReader::from_bytes("fuzz".into(), data.to_vec()), data);
    assert_eq!(streamed, in_place, "the two readers disagree");
});
