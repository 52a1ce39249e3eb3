//! What a transfer is asked to do: one type read by the CLI (which fills it from flags), the
//! engine (which acts on it) and the wire (a push carries it whole to the daemon). Adding an
//! option means a field here, its flag, and the code that acts on it.
//!
//! How to reach a remote end is not here (see [`crate::remote::Access`]); neither is what the
//! caller wants to hear (see [`crate::Observer`]), nor anything the machine decides (workers'
//! defaults, owners kept only as root: see [`crate::sync::SyncOptions`]).

use serde::{Deserialize, Serialize};

/// What happens to the source and to destination entries the source lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Make the destination hold the source's entries; leave others alone.
    #[default]
    Copy,
    /// As copy, and delete destination entries the source lacks.
    Mirror,
    /// As copy, then remove each source entry once it is safely in place.
    Move,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::Mirror => "mirror",
            Mode::Move => "move",
        }
    }
}

/// Declares [`Options`] and, for each field, a setter of the same name, so that the struct can
/// grow without breaking callers (it is `non_exhaustive`) and a field is written once.
macro_rules! options {
    ($($(#[$attr:meta])* $field:ident: $ty:ty,)*) => {
        /// A transfer's choices. Build it with [`Options::new`] and the setters:
        ///
        /// ```
        /// use blit_core::{Mode, Options};
        /// let opts = Options::new(Mode::Mirror).dry_run(true).max_delete(Some(100));
        /// assert_eq!(opts.mode, Mode::Mirror);
        /// ```
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub struct Options {
            $($(#[$attr])* pub $field: $ty,)*
        }

        /// The fields of [`Options`] with their types, as written. A push job carries
        /// `Options`, so a change here changes what the wire carries (see
        /// `remote::wire::VERSION`, whose test pins this).
        #[cfg_attr(not(all(test, feature = "remote")), allow(dead_code))]
        pub(crate) const SHAPE: &str =
            concat!($(stringify!($field), ": ", stringify!($ty), "; ",)*);

        impl Options {
            $(
                #[doc = concat!("Sets [`Options::", stringify!($field), "`].")]
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

options! {
    mode: Mode,
    /// Say what would change; change nothing.
    dry_run: bool,
    /// Compare file contents (BLAKE3) when size and mtime agree.
    checksum: bool,
    /// Patterns of entries to leave out (see [`crate::filter`]).
    #[cfg_attr(feature = "remote", serde(deserialize_with = "crate::remote::wire::bounded::vec"))]
    excludes: Vec<String>,
    /// Patterns taken back in from the excludes.
    #[cfg_attr(feature = "remote", serde(deserialize_with = "crate::remote::wire::bounded::vec"))]
    includes: Vec<String>,
    /// `mirror`: refuse to delete more than this many entries.
    max_delete: Option<u64>,
    /// `mirror`: delete only after every copy (rsync's `--delete-after`), so a run cut short has
    /// deleted nothing; by default deletions run during the walk.
    delete_after: bool,
    /// Worker threads; `None` lets Blit choose.
    workers: Option<u32>,
    /// Flush each file (and its folder) to stable storage before it is renamed into place.
    fsync: bool,
    /// Re-read each written file and compare its BLAKE3 with the source's before it is renamed
    /// into place.
    verify: bool,
    /// Leave extended attributes alone (neither copied nor compared), like rsync without `-X`.
    no_xattrs: bool,
    /// Allow a mirror from an empty source to empty a non-empty destination.
    force: bool,
    /// Continue large files an interrupted run left half-transferred (remote sources).
    resume: bool,
}

impl Options {
    /// The defaults for `mode`.
    pub fn new(mode: Mode) -> Self {
        Options {
            mode,
            ..Options::default()
        }
    }
}
