//! Blit's engine: make one file tree an exact, crash-safe copy of another, fast.
//!
//! A run is a pipeline with one module per stage, so each stage can be replaced (a remote end
//! later stands where a local folder stands) without touching the others:
//!
//! 1. [`sync`] walks both trees folder by folder on a worker pool, with [`filter`] applied while
//!    listing, and merges each pair of folder listings as soon as it has them;
//! 2. [`decide`] says, per entry, what makes the destination right (rewrite, metadata, nothing);
//! 3. the actions run at once on the same pool, through the platform primitives in [`sys`];
//! 4. [`report`] counts what happened, and an [`Observer`] hears about each entry as it happens.
//!
//! Memory holds the folders being merged, not the trees, so a million entries need megabytes.
//!
//! [`Job`] wires the stages together:
//!
//! ```no_run
//! use blit_core::{Endpoint, Job, Mode, NullObserver, Options};
//! let src = Endpoint::parse("/data/src").unwrap();
//! let dst = Endpoint::parse("/backup/dst").unwrap();
//! let job = Job::new(src, dst, Options::new(Mode::Mirror));
//! let summary = job.run(&NullObserver).expect("mirror refused");
//! assert!(summary.failures.is_empty());
//! ```

#![deny(unsafe_code)]

// The types every layer shares come from the platform crate, which alone uses `unsafe`.
pub(crate) use blit_sys as sys;
pub(crate) use blit_sys::fakesuper;
pub use blit_sys::{cancel, entry, error, names};

pub mod budget;
pub mod decide;
pub mod dest;
pub mod dirs;
pub mod endpoint;
pub mod filter;
pub mod job;
pub mod landing;
pub mod options;
pub mod remote;
pub mod report;
pub mod source;
pub mod sync;
pub mod tempname;
mod tree;
pub mod trust;

/// Entry points for the fuzz targets (`fuzz/`): decoders that are otherwise internal. Not an
/// API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::fakesuper::{parse_stat, present};
    #[cfg(feature = "remote")]
    pub use crate::remote::entries::to_entry;
}

pub use cancel::CancelToken;
pub use endpoint::Endpoint;
pub use error::{Error, Op};
pub use job::Job;
pub use options::{Mode, Options};
pub use report::{NullObserver, Observer, Summary};
