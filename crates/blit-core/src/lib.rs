//! Blit's engine: make one file tree an exact, crash-safe copy of another, fast.
//!
//! A run is a pipeline with one module per stage, so each stage can be replaced (a remote end
//! later stands where a local folder stands) without touching the others:
//!
//! 1. [`walk`] lists both trees in parallel, with [`filter`] applied while walking;
//! 2. [`plan`] merges the two sorted listings into the actions that make the destination right;
//! 3. [`execute`] carries the plan out on a worker pool through the platform primitives in `sys`;
//! 4. [`report`] counts what happened, and an [`Observer`] hears about each entry as it happens.
//!
//! [`Job`] wires the stages together:
//!
//! ```no_run
//! use blit_core::{Endpoint, Job, Mode, NullObserver, Options};
//! let src = Endpoint::parse("/data/src");
//! let dst = Endpoint::parse("/backup/dst");
//! let job = Job::new(Mode::Mirror, src, dst, Options::default());
//! let summary = job.run(&NullObserver).expect("mirror refused");
//! assert!(summary.failures.is_empty());
//! ```

pub mod cancel;
pub mod dirs;
pub mod endpoint;
pub mod entry;
pub mod error;
pub mod execute;
pub mod filter;
pub mod job;
pub mod names;
pub mod plan;
pub mod report;
pub mod sys;
pub mod tempname;
pub mod walk;

pub use cancel::CancelToken;
pub use endpoint::Endpoint;
pub use error::{Error, Op};
pub use job::{Job, Mode, Options};
pub use report::{NullObserver, Observer, Summary};
