//! Any byte stream fed to the frame reader: frames decode or fail cleanly, never panic, never
//! allocate beyond the frame limit.
#![no_main]

use blit_core::remote::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    for _ in 0..64 {
        match wire::read_frame(&mut input) {
            Ok(Some(wire::Frame::Msg(m))) => {
                // What decodes must encode again.
                let _ = wire::encode_msg(&m);
            }
            Ok(Some(wire::Frame::Data { data, .. })) => assert!(data.len() <= wire::MAX_FRAME),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = wire::decode_msg(data);
});
