//! One connection, shared by many threads: any thread may send a request and wait for its reply
//! while others do the same, and requests from the other side are handed to a [`Handler`].
//!
//! A reader thread owns the receiving half and routes each frame: replies and data to the
//! request that awaits them (by id), requests and other messages to the handler. A writer thread
//! owns the sending half and drains a queue of finished frames, flushing only when the queue is
//! empty, so many small replies (small files) leave in one system call and one TCP segment train
//! instead of one each: batching without any added delay.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::chan::Chan;
#[cfg(any(target_os = "linux", target_os = "macos", windows))]
use super::tls::Writer as TlsWriter;
use super::wire::{self, Frame, Msg, Rep, Req};
use crate::budget::{Budget, Charge};

/// What arrives for a request.
#[derive(Debug)]
pub enum Incoming {
    Rep(Rep),
    Data { offset: u64, data: Vec<u8> },
}

/// Frames of file data a transfer being copied may have buffered before the reader waits for
/// it: bounds memory per transfer (and pushes back on the sender through TCP).
const DATA_QUEUE: usize = 4;

/// An item on its way to the requester, with what holding it costs.
type Routed = (Incoming, Charge);

enum Route {
    /// Listings and small replies: never block the reader.
    Open(Sender<Routed>),
    /// File data of a transfer being copied: bounded; the reader waits for room.
    Bounded(SyncSender<Routed>),
    /// File data of a small file asked for ahead of its copy: room for all of it; more than
    /// that is a peer sending what was not asked for, and ends the session (waiting for a copy
    /// that may be far off would stop every other reply).
    Ahead(SyncSender<Routed>),
}

impl Route {
    /// Hands the item over; `Err` only for a peer that overfilled an ahead route.
    fn send(&self, i: Routed) -> io::Result<()> {
        match self {
            Route::Open(s) => {
                let _ = s.send(i);
            }
            Route::Bounded(s) => {
                let _ = s.send(i);
            }
            Route::Ahead(s) => {
                if let Err(mpsc::TrySendError::Full(_)) = s.try_send(i) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent more data for a file than the file holds",
                    ));
                }
            }
        }
        Ok(())
    }

    fn clone_route(&self) -> Route {
        match self {
            Route::Open(s) => Route::Open(s.clone()),
            Route::Bounded(s) => Route::Bounded(s.clone()),
            Route::Ahead(s) => Route::Ahead(s.clone()),
        }
    }
}

/// Hears what the other side sends besides replies. Each request and message comes with its
/// charge against the connection's memory budget, to be dropped when it is no longer held.
pub trait Handler: Send + Sync + 'static {
    fn request(&self, peer: &Arc<Peer>, id: u32, req: Req, charge: Charge);
    fn message(&self, peer: &Arc<Peer>, msg: Msg, charge: Charge);
    /// The connection ended (cleanly or not).
    fn closed(&self, _why: &str) {}
}

/// Each side sends a [`Msg::Ping`] this often, far inside the daemon's idle timeout (600 s by
/// default) and the client's stall timeout (300 s).
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// Bytes that may wait in the send queue: a sender reading files faster than the network takes
/// them waits here instead of holding whole files in memory.
const QUEUE_BYTES: usize = 16 << 20;

/// Why a connection closed when the other side ended its stream in order: the one close that
/// is not a failure.
const CLOSED_IN_ORDER: &str = "the other side closed the connection";

pub struct Peer {
    out: Arc<Mutex<Option<Sender<Vec<u8>>>>>,
    /// Requests from the other side being served here, and whether it has cancelled each.
    serving: Mutex<HashMap<u32, bool>>,
    /// Bytes queued and not yet written, and the signal that some were.
    queued: Arc<(Mutex<usize>, Condvar)>,
    pending: Mutex<HashMap<u32, Route>>,
    next_id: AtomicU32,
    closed: Mutex<Option<String>>,
    /// Signalled when `closed` is set.
    closed_cv: Condvar,
    is_closed: AtomicBool,
    /// Run once when the connection closes.
    on_close: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// What the other side's frames held here take, capped (see `budget`).
    held: Arc<Budget>,
}

/// A request's replies, as they come. Dropping it before the end discards what is still on its
/// way and tells the other side to stop sending it.
pub struct Replies {
    id: u32,
    rx: Receiver<Routed>,
    peer: Arc<Peer>,
}

impl Replies {
    pub fn next(&self) -> io::Result<Incoming> {
        self.next_charged().map(|(i, _)| i)
    }

    /// The next item with its charge, for a caller that keeps what it carries (a listing
    /// being gathered).
    pub fn next_charged(&self) -> io::Result<Routed> {
        self.rx.recv().map_err(|_| self.peer.lost())
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        // Still routed: its last reply has not arrived (the reader unroutes a request when it
        // does), so the other side may still be sending.
        let open = self.peer.pending.lock().unwrap().remove(&self.id).is_some();
        // Unblock a reader waiting to hand this request a frame, before anything else.
        drop(std::mem::replace(&mut self.rx, mpsc::channel().1));
        if open && !self.peer.is_closed() {
            let _ = self.peer.send_unthrottled(&Msg::Cancel(self.id));
        }
    }
}

impl Peer {
    /// Starts the reader and writer threads on a connection whose opening is done.
    pub fn start(chan: Chan, handler: Arc<dyn Handler>) -> io::Result<Arc<Peer>> {
        Self::start_with(chan, handler, KEEPALIVE)
    }

    fn start_with(
        chan: Chan,
        handler: Arc<dyn Handler>,
        keepalive: std::time::Duration,
    ) -> io::Result<Arc<Peer>> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let out = Arc::new(Mutex::new(Some(tx)));
        // The TLS reader keeps whole records in its own buffer; a second one on top would only
        // copy the bytes again. The plain reader's buffer takes many small frames per read; a
        // data frame's bytes beyond what it holds go straight from the socket into the frame
        // (reads of at least its size bypass it), so at most this much of each frame is copied
        // twice: 256 KiB cost the daemon 28 ms more user CPU per GiB pushed than 64 KiB.
        let (reader, writer): (Box<dyn BufRead + Send>, Out) = match chan {
            Chan::Plain(stream) => (
                Box::new(BufReader::with_capacity(64 << 10, stream.try_clone()?)),
                Out::Plain(stream),
            ),
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Chan::Tls(session) => {
                let (reader, writer) = session.split()?;
                (Box::new(reader), Out::Tls(Box::new(writer)))
            }
        };
        let queued = Arc::new((Mutex::new(0usize), Condvar::new()));
        let peer = Arc::new(Peer {
            out,
            serving: Mutex::new(HashMap::new()),
            queued: Arc::clone(&queued),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: Mutex::new(None),
            closed_cv: Condvar::new(),
            is_closed: AtomicBool::new(false),
            on_close: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            held: Budget::connection(),
        });
        let w = {
            let peer = Arc::clone(&peer);
            std::thread::spawn(move || {
                let mut writer = writer;
                if let Err(e) = write_loop(&mut writer, rx, &queued) {
                    peer.close(&format!("send failed: {e}"));
                }
                // The other side's reader sees the end of the stream: nothing more is coming.
                writer.end();
            })
        };
        let r = {
            let peer = Arc::clone(&peer);
            std::thread::spawn(move || {
                let why = match read_loop(&peer, reader, &*handler) {
                    Ok(()) => CLOSED_IN_ORDER.to_string(),
                    Err(e) => format!("connection lost: {e}"),
                };
                peer.close(&why);
                handler.closed(&why);
            })
        };
        peer.threads.lock().unwrap().extend([w, r]);
        // Not joined: it ends when the connection closes (the reader, which holds the peer as
        // long as this does, closes it on its way out).
        let keeper = Arc::clone(&peer);
        std::thread::spawn(move || {
            while !keeper.wait_closed_for(keepalive) {
                let _ = keeper.send(&Msg::Ping);
            }
        });
        Ok(peer)
    }

    fn lost(&self) -> io::Error {
        let why = self
            .closed
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        io::Error::new(io::ErrorKind::ConnectionAborted, why)
    }

    /// After [`Peer::finish`]: `Err` with the reason if the connection ended other than by the
    /// other side closing it in order (a broken stream, a frame over the memory budget), so a
    /// server can log why a session was cut short.
    pub fn outcome(&self) -> io::Result<()> {
        let in_order = self.closed.lock().unwrap().as_deref() == Some(CLOSED_IN_ORDER);
        if in_order || !self.is_closed() {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Relaxed)
    }

    /// Waits until the connection is closed.
    pub fn wait_closed(&self) {
        let c = self.closed.lock().unwrap();
        let _c = self.closed_cv.wait_while(c, |c| c.is_none()).unwrap();
    }

    /// Waits at most `d` for the connection to close; whether it is closed.
    pub fn wait_closed_for(&self, d: std::time::Duration) -> bool {
        let c = self.closed.lock().unwrap();
        let (c, _) = self
            .closed_cv
            .wait_timeout_while(c, d, |c| c.is_none())
            .unwrap();
        c.is_some()
    }

    /// Runs `hook` once the connection closes: at once if it is closed already.
    pub fn on_close(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.on_close.lock().unwrap();
        if self.is_closed() {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }

    /// Marks the connection dead: waiting requests fail, sends are dropped, and whoever waits
    /// for the close (a sender held back by a full queue included) is woken.
    pub fn close(&self, why: &str) {
        {
            let mut c = self.closed.lock().unwrap();
            if c.is_none() {
                *c = Some(why.to_string());
            }
        }
        self.closed_cv.notify_all();
        {
            // Marked under the same lock a request registers under: no request can slip in
            // between the mark and the clearing and then wait for a reply forever.
            let mut pending = self.pending.lock().unwrap();
            self.is_closed.store(true, Ordering::Relaxed);
            pending.clear();
        }
        self.out.lock().unwrap().take();
        {
            // Taken so that a sender between its check of the flag and its wait cannot miss
            // this.
            let _q = self.queued.0.lock().unwrap();
            self.queued.1.notify_all();
        }
        let hooks = std::mem::take(&mut *self.on_close.lock().unwrap());
        for hook in hooks {
            hook();
        }
    }

    /// Queues an encoded frame, first waiting while the queue holds [`QUEUE_BYTES`] already
    /// (a frame always goes when the queue is empty, whatever its size).
    pub fn send_frame(&self, frame: Vec<u8>) -> io::Result<()> {
        {
            let (lock, cv) = &*self.queued;
            let mut q = lock.lock().unwrap();
            while *q > 0 && *q + frame.len() > QUEUE_BYTES && !self.is_closed() {
                q = cv.wait(q).unwrap();
            }
            *q += frame.len();
        }
        let out = self.out.lock().unwrap();
        match out.as_ref() {
            Some(tx) => tx.send(frame).map_err(|_| self.lost()),
            None => Err(self.lost()),
        }
    }

    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        self.send_frame(wire::encode_msg(msg)?)
    }

    /// Sends a small control message without waiting for room in the queue (it is sent from
    /// `Drop`, which should not wait behind megabytes of data).
    fn send_unthrottled(&self, msg: &Msg) -> io::Result<()> {
        let frame = wire::encode_msg(msg)?;
        *self.queued.0.lock().unwrap() += frame.len();
        match self.out.lock().unwrap().as_ref() {
            Some(tx) => tx.send(frame).map_err(|_| self.lost()),
            None => Err(self.lost()),
        }
    }

    /// Sends a request whose replies are small (any number may wait unread).
    pub fn request(self: &Arc<Self>, req: Req) -> io::Result<Replies> {
        let (tx, rx) = mpsc::channel();
        self.request_on(req, Route::Open(tx), rx)
    }

    /// Sends a request whose replies carry file data: only a few frames wait unread.
    pub fn request_data(self: &Arc<Self>, req: Req) -> io::Result<Replies> {
        let (tx, rx) = mpsc::sync_channel(DATA_QUEUE);
        self.request_on(req, Route::Bounded(tx), rx)
    }

    /// Sends a request for a small file ahead of its copy, whose whole reply (`frames` data
    /// frames and the end) waits unread until then.
    pub fn request_ahead(self: &Arc<Self>, req: Req, frames: usize) -> io::Result<Replies> {
        let (tx, rx) = mpsc::sync_channel(frames + 1);
        self.request_on(req, Route::Ahead(tx), rx)
    }

    /// Bytes the other side's frames take here now (what this side has not yet used).
    pub fn held(&self) -> usize {
        self.held.used()
    }

    fn request_on(
        self: &Arc<Self>,
        req: Req,
        route: Route,
        rx: Receiver<Routed>,
    ) -> io::Result<Replies> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending.lock().unwrap();
            if self.is_closed() {
                drop(pending);
                return Err(self.lost());
            }
            pending.insert(id, route);
        }
        let replies = Replies {
            id,
            rx,
            peer: Arc::clone(self),
        };
        self.send(&Msg::Req { id, req })?;
        Ok(replies)
    }

    /// Closes the sending half once everything queued is written, and waits for both threads.
    pub fn finish(&self) {
        self.out.lock().unwrap().take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }

    /// The request `id` from the other side is taken on (by a handler, as it arrives, so before
    /// any cancel of it is read): from now until [`Peer::served`], a cancel of it is heard.
    pub fn serving(&self, id: u32) {
        self.serving.lock().unwrap().insert(id, false);
    }

    /// The other side cancelled its request `id`: whoever serves it stops at its next frame. A
    /// cancel of a request not (or no longer) being served is ignored, so none pile up.
    fn cancel_received(&self, id: u32) {
        if let Some(c) = self.serving.lock().unwrap().get_mut(&id) {
            *c = true;
        }
    }

    /// Whether the other side cancelled its request `id` (asked by the code serving it).
    pub fn is_cancelled(&self, id: u32) -> bool {
        self.serving.lock().unwrap().get(&id) == Some(&true)
    }

    /// The request `id` from the other side is answered.
    pub fn served(&self, id: u32) {
        self.serving.lock().unwrap().remove(&id);
    }

    /// Hands an item to the request `id` awaits, charged at `weight`; an item for no request
    /// (one cancelled, or never made) is dropped. `Err` when holding it would exceed the budget,
    /// or the peer overfilled a route: the session ends.
    fn route(&self, id: u32, item: Incoming, last: bool, weight: usize) -> io::Result<()> {
        // Look up without holding the lock while sending (a bounded send may wait).
        let route = {
            let mut p = self.pending.lock().unwrap();
            if last {
                p.remove(&id)
            } else {
                p.get(&id).map(Route::clone_route)
            }
        };
        match route {
            Some(r) => r.send((item, self.charge(weight)?)),
            None => Ok(()),
        }
    }

    /// Charges what the other side sent against this connection's budget.
    pub(crate) fn charge(&self, weight: usize) -> io::Result<Charge> {
        self.held
            .charge(weight)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// Where the writer thread sends: the socket, or the TLS session on it.
enum Out {
    Plain(TcpStream),
    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    Tls(Box<TlsWriter>),
}

impl Out {
    /// Sends a frame the writer is done with; over TLS, large ones are sealed where they lie.
    fn write_owned(&mut self, frame: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Out::Plain(s) => s.write_all(frame),
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Out::Tls(t) => t.write_owned(frame),
        }
    }

    fn end(&mut self) {
        match self {
            Out::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Out::Tls(t) => {
                let _ = t.close();
                let _ = t.sock.shutdown(Shutdown::Write);
            }
        }
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Plain(s) => s.write(buf),
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Out::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Plain(s) => s.flush(),
            #[cfg(any(target_os = "linux", target_os = "macos", windows))]
            Out::Tls(t) => t.flush(),
        }
    }
}

/// Frames of at least this size skip the writer's buffer and are handed over whole (over TLS,
/// sealed in place); smaller ones gather in the buffer and leave together.
const OWNED_FRAME: usize = 64 << 10;

fn write_loop(
    writer: &mut Out,
    rx: Receiver<Vec<u8>>,
    queued: &(Mutex<usize>, Condvar),
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(256 << 10, writer);
    let written = |n: usize| {
        let (lock, cv) = queued;
        let mut q = lock.lock().unwrap();
        *q = q.saturating_sub(n);
        cv.notify_all();
    };
    // Small frames gather in the buffer; a large one goes straight to the connection, which
    // may seal it in place (it is not used again).
    let send = |w: &mut BufWriter<&mut Out>, mut frame: Vec<u8>| -> io::Result<()> {
        if frame.len() >= OWNED_FRAME {
            w.flush()?;
            w.get_mut().write_owned(&mut frame)?;
        } else {
            w.write_all(&frame)?;
        }
        written(frame.len());
        wire::recycle(frame);
        Ok(())
    };
    while let Ok(frame) = rx.recv() {
        send(&mut w, frame)?;
        loop {
            match rx.try_recv() {
                Ok(frame) => send(&mut w, frame)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    w.flush()?;
                    return Ok(());
                }
            }
        }
        w.flush()?;
    }
    w.flush()
}

fn read_loop(
    peer: &Arc<Peer>,
    mut r: Box<dyn BufRead + Send>,
    handler: &dyn Handler,
) -> io::Result<()> {
    while let Some((frame, weight)) = wire::read_frame_weighed(&mut r)? {
        match frame {
            Frame::Data { id, offset, data } => {
                peer.route(id, Incoming::Data { offset, data }, false, weight)?
            }
            Frame::Msg(msg) => match *msg {
                Msg::Rep { id, rep } => {
                    let last = !matches!(rep, Rep::Entries { last: false, .. });
                    peer.route(id, Incoming::Rep(rep), last, weight)?;
                }
                Msg::Req { id, req } => handler.request(peer, id, req, peer.charge(weight)?),
                Msg::Cancel(id) => peer.cancel_received(id),
                msg => handler.message(peer, msg, peer.charge(weight)?),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    struct Ignore;
    impl Handler for Ignore {
        fn request(&self, _: &Arc<Peer>, _: u32, _: Req, _: Charge) {}
        fn message(&self, _: &Arc<Peer>, _: Msg, _: Charge) {}
    }

    /// Two peers over loopback; `b` gives up after 300 ms of silence.
    fn pair(keepalive: Duration) -> (Arc<Peer>, Arc<Peer>) {
        pair_serving(keepalive, Arc::new(Ignore))
    }

    /// As [`pair`], with `b` answering requests through `serve`.
    fn pair_serving(keepalive: Duration, serve: Arc<dyn Handler>) -> (Arc<Peer>, Arc<Peer>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let pa = Peer::start_with(Chan::Plain(a), Arc::new(Ignore), keepalive).unwrap();
        let pb = Peer::start_with(Chan::Plain(b), serve, Duration::from_secs(3600)).unwrap();
        (pa, pb)
    }

    /// Answers any request with data frames (64 KiB each, at most `LIMIT`) until the requester
    /// cancels it; counts what it sent.
    struct Endless {
        sent: Arc<AtomicU32>,
        done: Arc<AtomicBool>,
    }
    const LIMIT: u32 = 50_000;
    impl Handler for Endless {
        fn request(&self, peer: &Arc<Peer>, id: u32, _: Req, _: Charge) {
            peer.serving(id);
            let (peer, sent, done) = (
                Arc::clone(peer),
                Arc::clone(&self.sent),
                Arc::clone(&self.done),
            );
            std::thread::spawn(move || {
                for i in 0..LIMIT {
                    if peer.is_cancelled(id) {
                        break;
                    }
                    let mut f = wire::data_header(id, u64::from(i) << 16, 1 << 16).to_vec();
                    f.resize(17 + (1 << 16), 7);
                    if peer.send_frame(f).is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = peer.send(&Msg::Rep {
                    id,
                    rep: Rep::ReadDone(0),
                });
                peer.served(id);
                done.store(true, Ordering::Relaxed);
            });
        }
        fn message(&self, _: &Arc<Peer>, _: Msg, _: Charge) {}
    }

    #[test]
    fn dropping_replies_early_stops_the_sender() {
        let (sent, done) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let serve = Arc::new(Endless {
            sent: Arc::clone(&sent),
            done: Arc::clone(&done),
        });
        let (a, b) = pair_serving(Duration::from_millis(100), serve);
        let replies = a.request_data(Req::Hash(b"f".to_vec())).unwrap();
        for _ in 0..2 {
            assert!(matches!(replies.next().unwrap(), Incoming::Data { .. }));
        }
        drop(replies);
        let start = std::time::Instant::now();
        while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(done.load(Ordering::Relaxed), "the sender never stopped");
        // What was queued and in the sockets when the cancel came; not the 3 GiB asked.
        let n = sent.load(Ordering::Relaxed);
        assert!(n < 2_000, "{n} frames of 64 KiB sent after the cancel");
        assert!(
            b.serving.lock().unwrap().is_empty(),
            "a served request is still held"
        );
        a.finish();
        b.finish();
    }

    #[test]
    fn pings_keep_a_quiet_session_open() {
        let (a, b) = pair(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!b.is_closed(), "the silent side timed out despite pings");
        a.finish();
        b.finish();
    }

    #[test]
    fn without_pings_a_quiet_session_times_out() {
        let (a, b) = pair(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(1200));
        assert!(
            b.is_closed(),
            "a silent session stayed open past its timeout"
        );
        a.finish();
        b.finish();
    }
}
