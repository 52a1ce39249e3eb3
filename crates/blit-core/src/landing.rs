//! Where a source lands in its destination: one rule for a local run, a pull, and a daemon
//! placing a push.

use std::path::{Path, PathBuf};

use crate::error::{Error, Op, Result};

/// A folder's contents go into DST. A file goes into DST, under its own name, when DST is a
/// folder or is written with a trailing slash (`cp f dir/`, `rsync f dir/`); otherwise the file
/// becomes DST.
pub fn file_goes_inside(dst_is_dir: bool, trailing_slash: bool) -> bool {
    dst_is_dir || trailing_slash
}

/// A file goes into a folder that may not exist yet (`blit copy f new/dir/`).
pub fn make_parent(dst: &Path) -> Result<()> {
    match dst.parent() {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(Op::Mkdir, parent, e))
        }
        None => Ok(()),
    }
}

/// Where a local DST argument puts the source (see [`file_goes_inside`]).
pub fn resolve_dest(src_is_dir: bool, name: &std::ffi::OsStr, dst_arg: &Path) -> Result<PathBuf> {
    if src_is_dir {
        return Ok(absolute(dst_arg));
    }
    let dst_is_dir = std::fs::metadata(dst_arg).is_ok_and(|md| md.is_dir());
    if file_goes_inside(dst_is_dir, has_trailing_separator(dst_arg)) {
        Ok(absolute(dst_arg).join(name))
    } else {
        Ok(absolute(dst_arg))
    }
}

/// `dir/` (or `dir\` on Windows): the user said DST is a folder.
pub fn has_trailing_separator(p: &Path) -> bool {
    let s = p.as_os_str().as_encoded_bytes();
    s.last()
        .is_some_and(|&b| b == b'/' || (cfg!(windows) && b == b'\\'))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
