//! Memory a peer can make this side hold, counted in bytes and capped.
//!
//! Whatever a peer sends is held here until it is used: replies and file data routed to the
//! request that awaits them, requests waiting for a worker, a folder's listing being gathered
//! before the engine merges it, messages waiting to be shown. Each such item is charged, at
//! what it takes in memory (`remote::wire::decode_weighed`), to its connection's budget and to
//! the process's, and the charge is given back when the item is dropped. A peer that makes a
//! connection exceed its budget has its session ended with an error saying so; the process's
//! budget keeps many connections together (a daemon's 64 sessions) within one bound.
//!
//! Why caps that end the session rather than back-pressure: a connection carries many requests
//! at once, and a reader that waited for room for one reply would stop the replies the side
//! asking is waiting for; an honest peer never comes near the caps (it sends only what was asked
//! for, in pages), so reaching one is itself the sign of a hostile or broken peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The process's cap when nothing else is set (a daemon's `max_memory`, a client's default):
/// with what is not charged (a frame being decoded, buffers, threads), 64 hostile sessions at
/// once stay under a GiB.
pub const PROCESS_DEFAULT: usize = 320 << 20;

/// One connection's share of the process's cap: half, and no less than this. (Half: one
/// connection may gather a large folder's listing, about 450,000 entries at the default, while
/// another works beside it.)
pub const SESSION_MIN: usize = 32 << 20;

/// A count of bytes held, with its cap, within its parent's (a connection's within the
/// process's).
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    used: AtomicUsize,
    parent: Option<Arc<Budget>>,
}

static PROCESS: OnceLock<Arc<Budget>> = OnceLock::new();

/// Sets the process's cap, once, before the first connection (later calls change nothing).
pub fn set_process_cap(cap: usize) {
    let _ = PROCESS.set(Arc::new(Budget {
        cap,
        used: AtomicUsize::new(0),
        parent: None,
    }));
}

/// The process's budget.
pub fn process() -> Arc<Budget> {
    Arc::clone(PROCESS.get_or_init(|| {
        Arc::new(Budget {
            cap: PROCESS_DEFAULT,
            used: AtomicUsize::new(0),
            parent: None,
        })
    }))
}

/// A connection would exceed a cap: what is held, and the cap.
#[derive(Debug)]
pub struct Exceeded {
    pub cap: usize,
    pub whole_process: bool,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.cap >> 20;
        if self.whole_process {
            write!(
                f,
                "the peer's data would take this process past its memory limit for peers \
                 ({mib} MiB, all connections together)"
            )
        } else {
            write!(
                f,
                "the peer sent more than this connection may hold ({mib} MiB) before it is used"
            )
        }
    }
}

impl Budget {
    /// A new connection's budget: half the process's cap (at least [`SESSION_MIN`]).
    pub fn connection() -> Arc<Budget> {
        let process = process();
        Arc::new(Budget {
            cap: (process.cap / 2).max(SESSION_MIN).min(process.cap),
            used: AtomicUsize::new(0),
            parent: Some(process),
        })
    }

    /// A budget of its own (tests).
    pub fn with_cap(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap,
            used: AtomicUsize::new(0),
            parent: None,
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes to this budget and its parent, or to neither if either would pass its
    /// cap.
    pub fn charge(self: &Arc<Self>, n: usize) -> Result<Charge, Exceeded> {
        let mut taken: Vec<&Budget> = Vec::with_capacity(2);
        let mut b: Option<&Budget> = Some(self);
        while let Some(budget) = b {
            let before = budget.used.fetch_add(n, Ordering::AcqRel);
            if before.saturating_add(n) > budget.cap {
                budget.used.fetch_sub(n, Ordering::AcqRel);
                for t in taken {
                    t.used.fetch_sub(n, Ordering::AcqRel);
                }
                return Err(Exceeded {
                    cap: budget.cap,
                    whole_process: budget.parent.is_none() && !std::ptr::eq(budget, &**self),
                });
            }
            taken.push(budget);
            b = budget.parent.as_deref();
        }
        Ok(Charge {
            budget: Some(Arc::clone(self)),
            n,
        })
    }
}

/// Bytes charged to a budget, given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<Budget>>,
    n: usize,
}

impl Charge {
    /// Nothing charged.
    pub fn none() -> Charge {
        Charge::default()
    }

    /// Adds another charge of the same budget to this one (a listing gathered from several
    /// replies is given back in one piece).
    pub fn absorb(&mut self, mut other: Charge) {
        match (&self.budget, other.budget.take()) {
            (_, None) => {}
            (None, Some(b)) => {
                self.budget = Some(b);
                self.n = other.n;
            }
            (Some(mine), Some(theirs)) if Arc::ptr_eq(mine, &theirs) => self.n += other.n,
            // Another budget: given back as it was taken.
            (Some(_), Some(theirs)) => {
                drop(Charge {
                    budget: Some(theirs),
                    n: other.n,
                });
            }
        }
        other.n = 0;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut b = self.budget.as_deref();
        while let Some(budget) = b {
            budget.used.fetch_sub(self.n, Ordering::AcqRel);
            b = budget.parent.as_deref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_either_cap_and_come_back_when_dropped() {
        let process = Budget::with_cap(100);
        let a = Arc::new(Budget {
            cap: 60,
            used: AtomicUsize::new(0),
            parent: Some(Arc::clone(&process)),
        });
        let b = Arc::new(Budget {
            cap: 60,
            used: AtomicUsize::new(0),
            parent: Some(Arc::clone(&process)),
        });
        let ca = a.charge(50).unwrap();
        assert!(a.charge(20).is_err(), "past the connection's cap");
        let cb = b.charge(50).unwrap();
        let e = b.charge(5).unwrap_err();
        assert!(e.whole_process, "past the process's cap: {e}");
        assert_eq!((a.used(), b.used(), process.used()), (50, 50, 100));
        drop(ca);
        assert_eq!((a.used(), process.used()), (0, 50));
        let mut c = b.charge(5).unwrap();
        c.absorb(b.charge(5).unwrap());
        assert_eq!(b.used(), 60);
        drop((c, cb));
        assert_eq!((b.used(), process.used()), (0, 0));
    }
}
