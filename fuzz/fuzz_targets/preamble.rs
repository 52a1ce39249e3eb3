//! Both preambles parse any bytes without panicking.
#![no_main]

use blit_core::remote::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::read_client_preamble(&mut &data[..]);
    let _ = wire::read_server_preamble(&mut &data[..]);
});
