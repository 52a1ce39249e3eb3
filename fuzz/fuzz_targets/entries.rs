//! Decoded listing replies turned into engine entries and taken as a receiver that trusts
//! nothing privileged would take them: names and paths from the wire are checked, never
//! trusted, and bad ones are errors rather than panics; what is admitted carries no setuid or
//! setgid bit on a file, no device and no privileged or reserved attribute.
#![no_main]

use blit_core::entry::Kind;
use blit_core::fuzzing::{to_entry, wire_rel};
use blit_core::remote::wire;
use blit_core::trust::Trust;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire::Msg::Rep {
        rep: wire::Rep::Entries { entries, .. },
        ..
    }) = wire::decode_msg(data)
    {
        for e in entries {
            if let wire::WireListed::Ok(w) = e {
                let Ok(entry) = to_entry(std::path::PathBuf::from("x"), &w) else {
                    continue;
                };
                let Ok(taken) = Trust::NONE.admit(entry) else {
                    continue;
                };
                assert!(!matches!(taken.kind, Kind::CharDevice | Kind::BlockDevice));
                if taken.kind != Kind::Dir {
                    assert_eq!(taken.perm & 0o6000, 0);
                }
                for (n, _) in taken.extra.iter().filter_map(|x| x.xattrs.as_ref()).flatten() {
                    assert!(Trust::NONE.takes_xattr(n));
                }
            }
        }
    }
    let _ = wire_rel(data);
});
