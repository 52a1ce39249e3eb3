//! Where the time went (`--stats`): worker seconds per activity and the copy paths taken.

use super::*;

/// Worker time per activity of the sync phase, for `--stats`: walk, plan and copy overlap in
/// wall time (each worker takes whatever is next), so only their sums say where the time went.
#[derive(Default)]
pub(super) struct Busy {
    pub(super) walk: AtomicU64,
    pub(super) plan: AtomicU64,
    pub(super) copy: AtomicU64,
    pub(super) delete: AtomicU64,
}

impl Busy {
    pub(super) fn seconds(&self) -> BTreeMap<&'static str, f64> {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        BTreeMap::from([
            ("walk", s(&self.walk)),
            ("plan", s(&self.plan)),
            ("copy", s(&self.copy)),
            ("delete", s(&self.delete)),
        ])
    }
}

/// Adds the time until it is dropped to its counter.
pub(super) struct Clock<'c>(&'c AtomicU64, Instant);

impl<'c> Clock<'c> {
    pub(super) fn start(counter: &'c AtomicU64) -> Self {
        Clock(counter, Instant::now())
    }
}

impl Drop for Clock<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_add(self.1.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The class of entry a copy path is reported for (`--stats`): the fastest path depends on it.
pub(super) fn class_of(a: &Entry) -> &'static str {
    match a.kind {
        Kind::File if a.size == 0 => "empty files",
        Kind::File if a.size < sys::BUFFER_MAX as u64 => "files under 1 MiB",
        Kind::File => "files of 1 MiB or more",
        Kind::Symlink => "symlinks",
        _ => "specials",
    }
}

pub(super) fn method_name(m: Method) -> &'static str {
    match m {
        Method::Empty => "empty",
        Method::Native => "native",
        Method::Clone => "clone",
        Method::KernelCopy => "kernel_copy",
        Method::Sparse => "sparse",
        Method::ReadWrite => "read_write",
        Method::Network => "network",
        Method::NetworkStriped => "network_striped",
        Method::Planned => "planned",
    }
}
