//! Blit's engine: make one file tree an exact, crash-safe copy of another, fast.
//!
//! A run is a pipeline with one module per stage, so each stage can be replaced (a remote end
//! later stands where a local folder stands) without touching the others:
//!
//! 1. [`sync`] walks both trees folder by folder on a worker pool, with [`filter`] applied while
//!    listing, and merges each pair of folder listings as soon as it has them;
//! 2. [`decide`] says, per entry, what makes the destination right (rewrite, metadata, nothing);
//! 3. the actions run at once on the same pool, on a [`dest::Destination`] (a local folder
//!    through the platform crate `blit-sys`);
//! 4. [`report`] counts what happened, and an [`Observer`] hears about each entry as it happens.
//!
//! Memory holds the folders being merged, not the trees, so a million entries need megabytes.
//!
//! [`Job`] wires the stages together. A mirror that prints each change as it happens:
//!
//! ```
//! use blit_core::{Endpoint, Event, Job, Mode, Observer, Options};
//!
//! struct Printer;
//! impl Observer for Printer {
//!     fn event(&self, e: &Event<'_>) {
//!         println!("{:?} {}", e.action, e.rel.display());
//!     }
//! }
//! # let tmp = std::env::temp_dir().join(format!("blit-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(tmp.join("src")).unwrap();
//! # std::fs::write(tmp.join("src/hello.txt"), "hi").unwrap();
//! # let (src, dst) = (tmp.join("src"), tmp.join("dst"));
//!
//! let job = Job::new(Endpoint::Local(src), Endpoint::Local(dst), Options::new(Mode::Mirror));
//! let summary = job.run(&Printer)?; // Err: refused before anything changed
//! assert!(summary.failures.is_empty());
//! assert_eq!(summary.actions.create.count, 2); // the folder and hello.txt
//! # std::fs::remove_dir_all(&tmp).unwrap();
//! # Ok::<(), blit_core::Error>(())
//! ```
//!
//! The library prints nothing and decides no exit code: what happened is in the [`Summary`] and
//! what the observer heard. [`Options`] is built with setters and may grow without breaking
//! callers. Where the engine reads and writes are traits ([`source::Source`],
//! [`dest::Destination`]), so another kind of tree plugs into the same engine.

#![deny(unsafe_code)]

// The types every layer shares come from the platform crate, which alone uses `unsafe`.
pub(crate) use blit_sys as sys;
pub(crate) use blit_sys::fakesuper;
pub use blit_sys::{cancel, entry, error, names};

pub mod budget;
pub mod decide;
pub mod dest;
mod dirs;
pub mod endpoint;
pub mod filter;
pub mod job;
mod landing;
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
    pub use crate::remote::{entries::to_entry, serve::wire_rel};
}

pub use cancel::CancelToken;
pub use endpoint::Endpoint;
pub use error::{Error, Op};
pub use job::Job;
pub use options::{Mode, Options};
pub use report::{Action, Event, NullObserver, Observer, Summary};
