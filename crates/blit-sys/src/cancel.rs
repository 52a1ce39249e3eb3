//! Cooperative cancellation: a signal handler flips the flag, workers look at it between files and
//! between chunks of a large file, and unwind through the temp-file guard so nothing half-written
//! is ever left under a final name. Code blocked on something else (a connection) registers a
//! hook that unblocks it, so nothing has to wake up now and then to look at the flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
}

/// Shared flag; cloning shares the same flag.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelToken")
            .field(&self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and runs the hooks registered so far (once each).
    pub fn cancel(&self) {
        let hooks = {
            let mut hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
            self.0.cancelled.store(true, Ordering::SeqCst);
            std::mem::take(&mut *hooks)
        };
        for hook in hooks {
            hook();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Relaxed)
    }

    /// Runs `hook` when the token is cancelled: at once if it already is.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.0.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.cancelled.load(Ordering::SeqCst) {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_once_whenever_they_were_registered() {
        let ran = Arc::new(AtomicUsize::new(0));
        let token = CancelToken::new();
        let count = |ran: &Arc<AtomicUsize>| {
            let ran = Arc::clone(ran);
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        };
        token.on_cancel(count(&ran));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        token.clone().cancel();
        assert!(token.is_cancelled());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        token.cancel();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "a hook runs once");
        token.on_cancel(count(&ran));
        assert_eq!(ran.load(Ordering::SeqCst), 2, "a late hook runs at once");
    }
}
