//! A client's known_hosts file, however damaged, is read as bytes and either parses as a whole
//! or is an error naming the line: never a panic, and never a fingerprint that is not 64 hex
//! digits.
#![no_main]

use blit_core::remote::tls;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line of the input names the host looked for; the rest is the file.
    let (host, file) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    match tls::fingerprint_in(file, &host) {
        Ok(Some(fp)) => assert!(tls::is_fingerprint(&fp)),
        Ok(None) => {}
        Err((line, _)) => assert!(line >= 1),
    }
});
