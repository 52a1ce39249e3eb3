//! Lossless display of file names, which are raw bytes on Unix: a name that is not UTF-8, or holds
//! a newline, must still be printed so that a reader (or a script) can tell exactly which entry it
//! was. Escapes are backslash-based, so `\\` itself is doubled.

use std::fmt::Write;
use std::path::Path;

/// Renders `path` with `\xNN` for bytes that are not printable UTF-8, `\n`, `\t`, `\r` for those
/// controls and `\\` for a backslash.
pub fn escape(path: &Path) -> String {
    escape_bytes(path_bytes(path).as_ref())
}

/// Like [`escape`] for a path relative to a tree root, with `/` between components on every
/// platform, so output about the same tree reads the same on Windows and Unix.
pub fn escape_rel(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .components()
        .map(|c| escape(Path::new(c.as_os_str())))
        .collect();
    parts.join("/")
}

/// Text that came from a peer (a refusal, an error, a reason), made safe to print: control
/// characters, escape sequences among them, are shown escaped, never sent to a terminal.
pub fn escape_text(text: &str) -> String {
    escape_bytes(text.as_bytes())
}

pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' if cfg!(unix) => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(path.as_os_str().as_bytes())
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(path.to_string_lossy().into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_backslash_and_invalid_bytes() {
        assert_eq!(escape_bytes(b"a\nb\\c\td"), "a\\nb\\\\c\\td");
        assert_eq!(escape_bytes(b"caf\xe9"), "caf\\xe9");
        assert_eq!(escape_bytes("héllo".as_bytes()), "héllo");
        assert_eq!(escape_bytes(b"\x01"), "\\x01");
    }

    #[test]
    fn relative_paths_use_forward_slashes() {
        let rel: std::path::PathBuf = ["a", "b c", "d"].iter().collect();
        assert_eq!(escape_rel(&rel), "a/b c/d");
    }
}
