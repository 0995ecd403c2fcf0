//! The capture-file reader over arbitrary bytes: pcap and pcapng headers, blocks, options and
//! record lengths come straight from the input. It must end with a frame list and either a
//! clean end or one typed error, never a panic, a hang or an allocation the file merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::capture::CaptureReader;

/// The reader refuses records larger than this (capture::MAX_RECORD).
const MAX_RECORD: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) =
        CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    let mut last_offset = 0;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(frame.data.len() <= MAX_RECORD);
                // A frame is made of input bytes: it cannot be longer than the input.
                assert!(frame.data.len() <= data.len());
            }
            Ok(None) => break,
            Err(e) => {
                // The error names a place inside the file, and its message is one line.
                assert!(!e.to_string().contains('\n'));
                break;
            }
        }
        assert!(reader.offset() >= last_offset, "offset went backwards");
        assert!(reader.offset() <= data.len() as u64);
        last_offset = reader.offset();
    }
});
