//! Connections before they are sessions: counted apart from sessions, capped per address and in
//! all, and given a short deadline.
//!
//! Before its hello a connection has shown no token and costs its sender nothing, so a session
//! slot must not be spent on it: a few hundred sockets that never speak would otherwise fill
//! every slot and lock real clients out for the whole opening deadline. A connection is only
//! counted against `max_connections` once its hello has been read; until then it is held here.
//! When an address (or the daemon) has as many opening connections as it may, the oldest one
//! that has not even sent its preamble is cut to make room, else the oldest of all: a new
//! client always gets its turn, and what it displaces is whoever waited longest doing least.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Opening connections one address may hold at once: room for a burst of honest clients on one
/// host (each opening lasts a few round trips), far below what a flood needs to matter.
pub const PER_ADDRESS: usize = 128;
/// Opening connections the daemon holds at once, from all addresses.
pub const IN_ALL: usize = 512;

/// The opening connections, by number, and how long each may take to become a session.
pub struct Gate {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Opening>>,
    /// Wakes the reaper when a connection comes (it may be the next to expire).
    arrived: Condvar,
    deadline: Duration,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate({} opening)", self.len())
    }
}

struct Opening {
    addr: IpAddr,
    since: Instant,
    /// Its preamble arrived: it is a client, not a bare socket.
    spoke: Arc<AtomicBool>,
    /// A handle to cut it with.
    sock: TcpStream,
}

/// An opening connection's place in the gate; dropping it (the connection became a session,
/// or ended) frees the place.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    spoke: Arc<AtomicBool>,
}

impl Ticket {
    /// The connection has sent its preamble.
    pub fn spoke(&self) {
        self.spoke.store(true, Ordering::Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.open.lock().unwrap().remove(&self.id);
    }
}

impl Gate {
    /// A gate whose connections must have become sessions (preamble, TLS and hello done)
    /// within `deadline`, or are cut. One thread keeps the time for all of them, sleeping until
    /// the next one is due.
    pub fn new(deadline: Duration) -> std::io::Result<Arc<Gate>> {
        let gate = Arc::new(Gate {
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            arrived: Condvar::new(),
            deadline,
        });
        let weak = Arc::downgrade(&gate);
        std::thread::Builder::new()
            .name("opening deadline".into())
            .spawn(move || reap(weak))?;
        Ok(gate)
    }

    /// Admits a new connection from `addr` as opening, cutting another (see the module's doc)
    /// when `addr` or the daemon is at its limit.
    pub fn enter(self: &Arc<Self>, addr: IpAddr, sock: &TcpStream) -> std::io::Result<Ticket> {
        let cut = sock.try_clone()?;
        let spoke = Arc::new(AtomicBool::new(false));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap();
        let from_addr = open.values().filter(|o| o.addr == addr).count();
        if from_addr >= PER_ADDRESS {
            evict(&mut open, Some(addr));
        }
        if open.len() >= IN_ALL {
            evict(&mut open, None);
        }
        open.insert(
            id,
            Opening {
                addr,
                since: Instant::now(),
                spoke: Arc::clone(&spoke),
                sock: cut,
            },
        );
        self.arrived.notify_one();
        Ok(Ticket {
            gate: Arc::clone(self),
            id,
            spoke,
        })
    }

    /// Opening connections now (for tests and reports).
    pub fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts every connection whose opening outlasts the gate's deadline, until the gate is gone.
fn reap(gate: std::sync::Weak<Gate>) {
    loop {
        let Some(g) = gate.upgrade() else { return };
        let mut open = g.open.lock().unwrap();
        let now = Instant::now();
        open.retain(|_, o| {
            let due = now.duration_since(o.since) >= g.deadline;
            if due {
                let _ = o.sock.shutdown(std::net::Shutdown::Both);
            }
            !due
        });
        // Asleep until the oldest is due, or a while (to notice the gate is gone).
        let next = open
            .values()
            .map(|o| (o.since + g.deadline).saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let _ = g.arrived.wait_timeout(open, next).unwrap();
    }
}

/// Cuts one opening connection (of `addr`, or of any address): the oldest silent one, else the
/// oldest.
fn evict(open: &mut HashMap<u64, Opening>, addr: Option<IpAddr>) {
    let candidates = || {
        open.iter()
            .filter(move |(_, o)| addr.is_none() || addr == Some(o.addr))
    };
    let victim = candidates()
        .filter(|(_, o)| !o.spoke.load(Ordering::Relaxed))
        .min_by_key(|(_, o)| o.since)
        .or_else(|| candidates().min_by_key(|(_, o)| o.since))
        .map(|(&id, _)| id);
    if let Some(o) = victim.and_then(|id| open.remove(&id)) {
        let _ = o.sock.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// Past the limit, the oldest silent connection is cut, never one that spoke.
    #[test]
    fn the_oldest_silent_connection_makes_room() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let gate = Gate::new(Duration::from_secs(60)).unwrap();
        let mut held = Vec::new();
        let mut tickets = Vec::new();
        for i in 0..PER_ADDRESS + 3 {
            let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, a) = l.accept().unwrap();
            let t = gate.enter(a.ip(), &s).unwrap();
            if i == 0 {
                // The first one spoke: it is kept although it is the oldest.
                t.spoke();
            }
            held.push((s, _client));
            tickets.push(t);
        }
        assert_eq!(gate.len(), PER_ADDRESS);
        let mut buf = [0u8; 1];
        // Connections 1, 2 and 3 (silent, oldest) were cut: their reads end at once.
        for (s, _) in &mut held[1..4] {
            assert_eq!(s.read(&mut buf).unwrap(), 0);
        }
        held[0]
            .0
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(
            held[0].0.read(&mut buf).is_err(),
            "the one that spoke was cut"
        );
        drop(tickets);
        assert!(gate.is_empty());
    }

    /// A connection still opening when its deadline passes is cut.
    #[test]
    fn an_opening_past_its_deadline_is_cut() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let gate = Gate::new(Duration::from_millis(200)).unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, a) = l.accept().unwrap();
        let _t = gate.enter(a.ip(), &s).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "cut after {took:?}");
        assert!(gate.is_empty());
    }
}
