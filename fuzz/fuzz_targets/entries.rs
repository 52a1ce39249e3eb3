//! Decoded listing replies turned into engine entries: names and paths from the wire are checked,
//! never trusted, and bad ones are errors rather than panics.
#![no_main]

use blit_core::remote::{serve, source, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire::Msg::Rep {
        rep: wire::Rep::Entries { entries, .. },
        ..
    }) = wire::decode_msg(data)
    {
        for e in entries {
            if let wire::Listed::Ok(w) = e {
                let _ = source::to_entry(std::path::PathBuf::from("x"), &w);
            }
        }
    }
    let _ = serve::wire_rel(data);
});
