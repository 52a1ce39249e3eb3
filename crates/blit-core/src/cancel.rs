//! Cooperative cancellation: a signal handler flips the flag, workers look at it between files and
//! between chunks of a large file, and unwind through the temp-file guard so nothing half-written
//! is ever left under a final name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared flag; cloning shares the same flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
