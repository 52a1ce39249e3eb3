//! The platform interface: every function each platform file (`unix/`, `windows.rs`, with
//! `linux.rs`, `macos.rs` or `fallback.rs` for the data copy) must offer, with its exact
//! signature. The list is checked by the compiler on every target: a platform that lacks one of
//! these, or types it differently, does not build. Adding a platform primitive means adding it
//! here, so the layers above can call it without a `cfg`.

// Signatures are spelled out whole here: that is the point of the list.
#![allow(clippy::type_complexity)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::{At, CopyOutcome, CopyRequest, Dir, Fed, MetaOpts, Output, Xattrs};

// Folder handles: opened without following links, children opened relative to them.
const _: () = {
    let _: fn(&Path) -> Result<Dir> = Dir::open;
    let _: fn(&Path) -> Result<Dir> = Dir::open_nofollow;
    let _: fn(&Dir, &OsStr) -> Result<Dir> = Dir::open_child;
    let _: fn(&Dir) -> Result<Dir> = Dir::open_parent;
    let _: fn(&Dir) -> Result<(u64, u64)> = Dir::id;
    let _: fn(&Dir) -> &Path = Dir::path;
    let _: fn(&Dir) -> Result<Vec<(OsString, Option<Kind>)>> = Dir::read_names;
    let _: fn(&Dir) -> bool = crate::hold_dir;
    let _: fn(&Dir) -> bool = crate::dir_held;
    let _: fn(&Dir) -> Result<()> = crate::fsync_dir;
    let _: bool = crate::FRESH_FOLDERS;
};

// Looking at entries.
const _: () = {
    let _: fn(At<'_>, PathBuf) -> Result<Entry> = crate::stat_at;
    let _: for<'a> fn(&'a File, At<'a>) -> Result<Entry> = crate::stat_fd;
    let _: for<'a> fn(&'a File, At<'a>, &'a Entry) -> Result<Entry> = crate::stat_settled;
    let _: fn(At<'_>) -> Result<PathBuf> = crate::read_link_at;
    let _: fn(At<'_>) -> bool = crate::link_is_dir;
    let _: fn(At<'_>) -> Result<bool> = crate::has_xattrs;
    let _: fn(At<'_>) -> Result<Xattrs> = crate::xattrs_of;
    let _: fn(&Path) -> Xattrs = crate::path_xattrs;
    let _: fn(At<'_>) -> bool = crate::has_default_acl;
};

// Making, naming and removing entries.
const _: () = {
    let _: fn(At<'_>) -> Result<()> = crate::mkdir_at;
    let _: fn(&Path, At<'_>, bool) -> Result<()> = crate::symlink_at;
    let _: fn(At<'_>, &Entry, MetaOpts) -> Result<()> = crate::make_special_at;
    let _: for<'a> fn(At<'a>, At<'a>) -> Result<()> = crate::hard_link_at;
    let _: for<'a> fn(At<'a>, At<'a>) -> Result<()> = crate::rename_at;
    let _: for<'a> fn(At<'a>, At<'a>) -> io::Result<()> = crate::try_rename_at;
    let _: for<'a> fn(At<'a>, At<'a>) -> Result<()> = crate::publish_dir;
    let _: fn(At<'_>) -> Result<()> = crate::unlink_at;
    let _: fn(At<'_>) -> Result<bool> = crate::rmdir_at;
    let _: fn(At<'_>) -> Result<()> = crate::fsync_at;
};

// Metadata.
const _: () = {
    let _: for<'a> fn(At<'a>, &'a Entry, MetaOpts, Option<&'a Xattrs>) -> Result<()> =
        crate::apply_meta_at;
    let _: for<'a> fn(At<'a>, &'a Entry) -> Result<()> = crate::set_mtime_at;
    let _: fn(At<'_>, u32) -> Result<()> = crate::chmod_at;
    let _: fn(&Entry) -> u32 = crate::mode_for_wire;
    let _: fn(u32, Kind) -> u32 = crate::perm_from_wire;
};

// File content: the whole-file copy, receiving a peer's bytes, and positioned I/O.
const _: () = {
    let _: fn(&CopyRequest<'_>) -> Result<CopyOutcome> = crate::copy_to_temp;
    let _: for<'a> fn(
        &'a Output<'a>,
        &'a Entry,
        Option<&'a Xattrs>,
        &'a mut dyn FnMut(&File) -> Result<Fed>,
    ) -> Result<CopyOutcome> = crate::receive_to_temp;
    let _: fn(At<'_>) -> Result<File> = crate::open_source;
    let _: fn(At<'_>) -> Result<File> = crate::open_partial;
    let _: fn(&File, &mut [u8], u64) -> io::Result<usize> = crate::read_at;
    let _: fn(&File, &[u8], u64) -> io::Result<()> = crate::write_all_at;
    #[cfg(unix)]
    let _: CopyData = crate::copy_data;
};

/// The data copy's cascade of fast paths (one per Unix family; Windows copies natively).
#[cfg(unix)]
type CopyData = for<'a> fn(
    &'a mut File,
    &'a mut File,
    u64,
    bool,
    &'a crate::FastPaths,
    &'a crate::cancel::CancelToken,
) -> io::Result<(u64, crate::Method)>;

// The process.
const _: () = {
    let _: fn() -> bool = crate::is_root;
    let _: fn() -> (u32, u32) = crate::creator;
    let _: fn() -> u32 = crate::current_umask;
    let _: fn() = crate::raise_fd_limit;
};
