//! Folder handles: opening a tree's folders without following links, and listing them.

use super::*;

/// An open folder, plus its path for messages.
#[derive(Debug)]
pub struct Dir {
    pub(super) fd: OwnedFd,
    pub(super) path: PathBuf,
}

pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens a tree's root. The root is the one path the user named, so a symlink there is
    /// followed; nothing below it ever is.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).at(Op::Open, path)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a tree's root without following a symlink at its last name (a daemon's push: the
    /// name was checked beneath the module, and may not be swapped for a link since).
    pub fn open_nofollow(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .at(Op::Open, path)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a subfolder; fails (rather than following) if `name` is now a symlink.
    pub fn open_child(&self, name: &OsStr) -> Result<Dir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .at(Op::Open, &path)?;
        Ok(Dir { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder's device and inode: what identifies it whatever its name.
    pub fn id(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.fd).at(Op::Stat, &self.path)?;
        #[allow(clippy::unnecessary_cast)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// The folder holding this one, opened as its `..` (the caller checks it is the one it
    /// expects: a folder moved elsewhere has another `..`).
    pub fn open_parent(&self) -> Result<Dir> {
        let path = self.path.parent().unwrap_or(&self.path).to_path_buf();
        let fd =
            rustix::fs::openat(&self.fd, "..", DIR_FLAGS, Mode::empty()).at(Op::Open, &path)?;
        Ok(Dir { fd, path })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The names in this folder (without `.` and `..`), with their type when the filesystem
    /// reports it, so folders can be told without a stat.
    pub fn read_names(&self) -> Result<Vec<(OsString, Option<Kind>)>> {
        let mut out = Vec::new();
        read_names_into(self, &mut out).at(Op::ReadDir, &self.path)?;
        Ok(out)
    }
}

/// Adds one directory entry to the listing, skipping `.` and `..`.
pub(super) fn push_name(out: &mut Vec<(OsString, Option<Kind>)>, name: &[u8], t: FileType) {
    if name != b"." && name != b".." {
        out.push((OsString::from_vec(name.to_vec()), kind_of_type(t)));
    }
}

/// Reads through a descriptor of its own (`.` opened relative to the folder's), as
/// `rustix::fs::Dir` does elsewhere: a handle shared from a cache may have been read to its end
/// already, and would list nothing, which a mirror would take for an empty folder. Closing it
/// at once also frees the kernel's per-reader state (ext4 keeps a sorted copy of a hashed
/// folder's names) in the worker that listed the folder, not all at the end of the run.
#[cfg(target_os = "linux")]
pub(super) fn read_names_into(
    dir: &Dir,
    out: &mut Vec<(OsString, Option<Kind>)>,
) -> io::Result<()> {
    use rustix::fs::RawDir;
    let own = rustix::fs::openat(
        &dir.fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut iter = RawDir::new(&own, buf.spare_capacity_mut());
    while let Some(entry) = iter.next() {
        let entry = entry?;
        push_name(out, entry.file_name().to_bytes(), entry.file_type());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn read_names_into(
    dir: &Dir,
    out: &mut Vec<(OsString, Option<Kind>)>,
) -> io::Result<()> {
    let mut d = rustix::fs::Dir::read_from(&dir.fd)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        push_name(out, entry.file_name().to_bytes(), entry.file_type());
    }
    Ok(())
}

pub(super) fn kind_of_type(t: FileType) -> Option<Kind> {
    Some(match t {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Socket => Kind::Socket,
        _ => return None,
    })
}
