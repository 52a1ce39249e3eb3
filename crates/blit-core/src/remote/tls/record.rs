//! The TLS 1.3 record layer of a session, after rustls's handshake.
//!
//! rustls's buffered connection moves every byte several times (plaintext into a record, the
//! record into a send queue, the socket read 4 KiB at a time into a buffer that is resized and
//! zero-filled, plaintext copied out of it twice), and it cannot be split into a sending and a
//! receiving half, so both threads of a peer took turns on one lock. On a 1 GiB transfer that
//! cost more than the encryption itself. So, as kernel TLS would, Blit takes the traffic keys
//! once the handshake is over (rustls's `kernel` API, which also derives the next keys at a key
//! update) and runs the record layer itself: the sender seals each 16 KiB of a frame with
//! ring's AEAD (in place when the frame is given up, see [`Sealer::seal_in_place`]) and writes
//! a batch of records with one system call; the receiver reads straight into a large buffer,
//! opens each record in place with rustls's own decrypter, and hands the plaintext out from
//! there. The bytes on the wire are ordinary TLS 1.3 records; the ciphers are ring's, not ours.
//!
//! What rustls would otherwise do for us and is done here: sequence numbers, a key update well
//! before the cipher's confidentiality limit (and on the peer's request), the peer's key
//! updates (each ending its record, a bounded number in a row), close_notify (a connection
//! that ends without one is an error, not an end), and the end of the connection at any other
//! alert or any record that fails to open (nothing behind it is delivered).

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::crypto::cipher::{AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, Tls13CipherSuite};

/// Largest plaintext in one record (RFC 8446 §5.1).
const MAX_PLAIN: usize = 1 << 14;
/// Largest ciphertext in one record (RFC 8446 §5.2).
const MAX_SEALED: usize = MAX_PLAIN + 256;
const HEADER: usize = 5;
/// The AEAD tag after each record's ciphertext (16 bytes for all three TLS 1.3 ciphers).
const TAG: usize = 16;
/// The receive buffer: many records per read, so a read system call moves up to this much.
const RECV_BUFFER: usize = 512 << 10;
/// Records written per system call at most.
const BATCH: usize = 64;

const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;
const CLOSE_NOTIFY: u8 = 0;
/// The two alert levels TLS defines (RFC 8446 §6).
const WARNING: u8 = 1;
const FATAL: u8 = 2;
/// The peer's key updates allowed in a row, with no application data between them; one more is
/// refused. Each costs us a key derivation, and one asking for ours makes us send a record, so
/// an unbounded run would let a peer keep us busy while moving no data. An honest peer sends
/// one per few thousand records (Blit, at most one per record it sends, see `Sealer::seal`), or
/// one per explicit request, so 32 in a row only comes from a misbehaving peer. It is the bound
/// rustls and BoringSSL put on their own connections (`kMaxKeyUpdates`).
const MAX_KEY_UPDATES: u32 = 32;

fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {why}"))
}

/// rustls's remaining handshake state: it derives the keys after each key update.
pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
    /// No handshake behind it: the fixed, public keys of [`Opener::for_fuzzing`], the same
    /// in every epoch.
    Fixed {
        server: bool,
    },
}

impl Kernel {
    pub(super) fn suite(&self) -> rustls::SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
            Kernel::Fixed { .. } => rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        }
    }

    fn is_server(&self) -> bool {
        matches!(self, Kernel::Server(_) | Kernel::Fixed { server: true })
    }

    fn next_keys(&mut self, sending: bool) -> io::Result<ConnectionTrafficSecrets> {
        let next = match (self, sending) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
            (Kernel::Fixed { .. }, _) => return Ok(fuzz_keys()),
        };
        next.map(|(_, keys)| keys).map_err(invalid)
    }
}

/// What both halves share: the key schedule and whether the peer asked us for new keys.
pub(super) struct Shared {
    pub kernel: Mutex<Kernel>,
    pub suite: &'static Tls13CipherSuite,
    pub update_asked: AtomicBool,
}

/// The key and IV of a direction, whatever the (TLS 1.3) cipher.
fn key_iv(keys: ConnectionTrafficSecrets) -> io::Result<(AeadKey, Iv)> {
    match keys {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(invalid("an unsupported cipher was negotiated")),
    }
}

/// The sending direction's key. Records are sealed with ring directly (the AEAD rustls's own
/// ring provider uses) because rustls's encrypter only seals a copy of the plaintext in a
/// buffer it allocates, and a frame the writer owns can be sealed where it lies.
pub(super) struct SealKey {
    key: LessSafeKey,
    iv: [u8; 12],
}

impl SealKey {
    pub(super) fn new(keys: ConnectionTrafficSecrets) -> io::Result<SealKey> {
        use ring::aead::{AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
        let (alg, key, iv) = match keys {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(invalid("an unsupported cipher was negotiated")),
        };
        let key =
            UnboundKey::new(alg, key.as_ref()).map_err(|_| invalid("a key of the wrong size"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| invalid("an IV of the wrong size"))?;
        Ok(SealKey {
            key: LessSafeKey::new(key),
            iv,
        })
    }

    /// Seals `body` (the record's plaintext and its inner content type) in place; `header` is
    /// the record's header, which TLS 1.3 authenticates as the additional data (RFC 8446 §5.2).
    fn seal(&self, seq: u64, header: [u8; HEADER], body: &mut [u8]) -> io::Result<ring::aead::Tag> {
        // The per-record nonce: the IV with the sequence number XORed into its end (§5.3).
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        self.key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                body,
            )
            .map_err(|_| invalid("a record could not be sealed"))
    }
}

/// The header of a record whose plaintext (content type included) is `inner` bytes.
fn header(inner: usize) -> [u8; HEADER] {
    let [hi, lo] = ((inner + TAG) as u16).to_be_bytes();
    [u8::from(ContentType::ApplicationData), 3, 3, hi, lo]
}

pub(super) fn decrypter(
    suite: &Tls13CipherSuite,
    keys: ConnectionTrafficSecrets,
) -> io::Result<Box<dyn MessageDecrypter>> {
    let (key, iv) = key_iv(keys)?;
    Ok(suite.aead_alg.decrypter(key, iv))
}

/// The sending direction: plaintext in, sealed records out.
pub struct Sealer {
    pub(super) shared: Arc<Shared>,
    pub(super) key: SealKey,
    pub(super) seq: u64,
    /// Records sealed under one key before the next key update; far below the cipher's
    /// confidentiality limit.
    pub(super) rekey_after: u64,
    /// Key updates sent so far.
    pub(super) updates: u64,
}

impl Sealer {
    /// Seals `plain` as application data, one record per 16 KiB, appended to `out`.
    pub(super) fn seal(&mut self, plain: &[u8], out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.seq >= self.rekey_after
                || self.shared.update_asked.swap(false, Ordering::AcqRel)
            {
                self.rekey(out)?;
            }
            out.push(self.record(ContentType::ApplicationData, chunk)?);
        }
        Ok(())
    }

    /// One record holding a copy of `payload`.
    pub(super) fn record(&mut self, typ: ContentType, payload: &[u8]) -> io::Result<Vec<u8>> {
        let inner = payload.len() + 1;
        let header = header(inner);
        let mut record = Vec::with_capacity(HEADER + inner + TAG);
        record.extend_from_slice(&header);
        record.extend_from_slice(payload);
        record.push(u8::from(typ));
        let tag = self.key.seal(self.seq, header, &mut record[HEADER..])?;
        self.seq += 1;
        record.extend_from_slice(tag.as_ref());
        Ok(record)
    }

    /// Seals a frame the caller gives up as application data records, in place: each record's
    /// ciphertext stays in `frame`, and what lies between them (the next header, and this
    /// record's encrypted content type and tag) goes to `between`, 22 bytes a record: header,
    /// then per record its type byte, tag and the next header. False (nothing done) for an
    /// empty frame, or when a key update is due inside the frame or asked for by the peer; the
    /// caller then seals a copy.
    ///
    /// Why: sealing a copy moved every byte of file data once more through memory and
    /// allocated a buffer per record: about a tenth of the sender's CPU time on a 1 GiB push
    /// (user time 0.21 s against 0.17 s, of 0.5 s in all). A record's plaintext must be followed
    /// by its content type byte, which here is the next record's first byte: that byte is set
    /// aside, the record sealed, its encrypted type byte moved to `between`, and the byte put
    /// back before the next record is sealed. The frame's bytes are ciphertext afterwards.
    fn seal_in_place(&mut self, frame: &mut Vec<u8>, between: &mut Vec<u8>) -> io::Result<bool> {
        let n = frame.len();
        let records = n.div_ceil(MAX_PLAIN) as u64;
        if n == 0
            || self.seq + records > self.rekey_after
            || self.shared.update_asked.load(Ordering::Acquire)
        {
            return Ok(false);
        }
        between.clear();
        frame.push(0); // room for the last record's content type
        let mut start = 0;
        while start < n {
            let end = (start + MAX_PLAIN).min(n);
            let header = header(end - start + 1);
            between.extend_from_slice(&header);
            let kept = std::mem::replace(&mut frame[end], u8::from(ContentType::ApplicationData));
            let tag = self.key.seal(self.seq, header, &mut frame[start..=end]);
            self.seq += 1;
            between.push(std::mem::replace(&mut frame[end], kept));
            between.extend_from_slice(tag?.as_ref());
            start = end;
        }
        frame.truncate(n);
        Ok(true)
    }

    /// A KeyUpdate (not asking the peer to update too) under the old key, then the new key.
    fn rekey(&mut self, out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        out.push(self.record(ContentType::Handshake, &[KEY_UPDATE, 0, 0, 1, 0])?);
        self.next_key()?;
        self.updates += 1;
        Ok(())
    }

    /// Moves to the next sending key, as after sending a KeyUpdate.
    pub(super) fn next_key(&mut self) -> io::Result<()> {
        let keys = self.shared.kernel.lock().unwrap().next_keys(true)?;
        self.key = SealKey::new(keys)?;
        self.seq = 0;
        Ok(())
    }

    fn close_notify(&mut self) -> io::Result<Vec<u8>> {
        // Level warning (1), description close_notify.
        self.record(ContentType::Alert, &[1, CLOSE_NOTIFY])
    }
}

/// The receiving direction: records read into one buffer and opened in place.
pub struct Opener {
    pub(super) shared: Arc<Shared>,
    pub(super) dec: Box<dyn MessageDecrypter>,
    pub(super) seq: u64,
    buf: Vec<u8>,
    /// Sealed bytes not yet opened: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Opened plaintext not yet taken.
    plain: Range<usize>,
    closed: bool,
    /// Whether this is the daemon's side (which no session ticket may reach).
    server: bool,
    /// The peer's key updates since its last record of application data.
    key_updates: u32,
    /// Why the stream broke, once it has: every later read fails the same way, so nothing behind
    /// a bad record or an error alert is ever delivered, however often the caller tries.
    failed: Option<String>,
}

impl Opener {
    /// `plain` and `sealed` are what the handshake read past its end: plaintext rustls already
    /// opened, then records it did not look at.
    pub(super) fn new(
        shared: Arc<Shared>,
        dec: Box<dyn MessageDecrypter>,
        seq: u64,
        plain: &[u8],
        sealed: &[u8],
    ) -> Opener {
        let early = plain.len() + sealed.len();
        let mut buf = vec![0u8; RECV_BUFFER.max(early + HEADER + MAX_SEALED)];
        buf[..plain.len()].copy_from_slice(plain);
        buf[plain.len()..early].copy_from_slice(sealed);
        let server = shared.kernel.lock().unwrap().is_server();
        Opener {
            shared,
            dec,
            seq,
            buf,
            start: plain.len(),
            end: early,
            plain: 0..plain.len(),
            closed: false,
            server,
            key_updates: 0,
            failed: None,
        }
    }

    /// The next plaintext, reading from `sock` as needed; empty at the peer's close_notify.
    #[doc(hidden)]
    pub fn fill(&mut self, sock: &mut impl Read) -> io::Result<&[u8]> {
        loop {
            if let Some(why) = &self.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
            }
            if !self.plain.is_empty() || self.closed {
                return Ok(&self.buf[self.plain.clone()]);
            }
            match self.next_record() {
                Ok(true) => continue,
                Ok(false) => self.read_more(sock)?,
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// Opens the record at the start of the sealed bytes; false if it is not all there yet.
    fn next_record(&mut self) -> io::Result<bool> {
        let have = self.end - self.start;
        if have < HEADER {
            return Ok(false);
        }
        let h = &self.buf[self.start..self.start + HEADER];
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if h[0] != u8::from(ContentType::ApplicationData) || h[1..3] != [3, 3] {
            return Err(invalid("a malformed record"));
        }
        if len > MAX_SEALED {
            return Err(invalid("a record longer than allowed"));
        }
        if have < HEADER + len {
            return Ok(false);
        }
        let body = self.start + HEADER..self.start + HEADER + len;
        self.start = body.end;
        self.open(body)?;
        Ok(true)
    }

    /// Reads more sealed bytes, first making room for a whole record behind those kept.
    fn read_more(&mut self, sock: &mut impl Read) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.start < HEADER + MAX_SEALED {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = sock.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended without a TLS close (cut off?)",
            ));
        }
        self.end += n;
        Ok(())
    }

    #[doc(hidden)]
    pub fn consume(&mut self, n: usize) {
        self.plain.start = (self.plain.start + n).min(self.plain.end);
    }

    fn open(&mut self, body: Range<usize>) -> io::Result<()> {
        let base = self.buf.as_ptr() as usize;
        let msg = InboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            &mut self.buf[body],
        );
        let opened = self
            .dec
            .decrypt(msg, self.seq)
            .map_err(|e| invalid(format!("a record did not decrypt ({e})")))?;
        self.seq += 1;
        let typ = opened.typ;
        let at = opened.payload.as_ptr() as usize - base;
        let range = at..at + opened.payload.len();
        match typ {
            ContentType::ApplicationData => self.application_data(range),
            ContentType::Alert => self.alert(range)?,
            ContentType::Handshake => self.handshake(range)?,
            _ => return Err(invalid("an unexpected record type")),
        }
        Ok(())
    }

    /// Plaintext for the caller. Only a record that carries some ends a run of key updates: an
    /// empty one costs the peer nothing, so it must not reset the bound on them.
    fn application_data(&mut self, range: Range<usize>) {
        if !range.is_empty() {
            self.key_updates = 0;
        }
        self.plain = range;
    }

    /// An alert is 2 bytes, level and description (RFC 8446 §6). close_notify ends the stream
    /// (the level, warning or fatal, does not matter in TLS 1.3); every other alert, a warning
    /// or user_canceled included, ends the connection with an error, since TLS 1.3 leaves no
    /// alert but close_notify that a connection could go on after. A level TLS does not
    /// define, or an alert of another length (a fragment, or several in one record, both
    /// forbidden by §5.1), is malformed.
    fn alert(&mut self, range: Range<usize>) -> io::Result<()> {
        match self.buf[range] {
            [WARNING | FATAL, CLOSE_NOTIFY] => {
                self.closed = true;
                self.plain = 0..0;
                Ok(())
            }
            [level @ (WARNING | FATAL), description] => Err(invalid(format!(
                "the peer sent alert {description} (level {level})"
            ))),
            ref alert => Err(invalid(format!(
                "a malformed alert ({} bytes)",
                alert.len()
            ))),
        }
    }

    /// Post-handshake messages (RFC 8446 §4.6): the peer's key updates, and session tickets
    /// (see [`Opener::session_ticket`]). A message must lie whole in its record: they are a few
    /// bytes, and no TLS stack splits them.
    fn handshake(&mut self, mut rest: Range<usize>) -> io::Result<()> {
        if rest.is_empty() {
            // RFC 8446 §5.1: handshake records are never empty.
            return Err(invalid("an empty handshake record"));
        }
        while !rest.is_empty() {
            let (typ, body) = self.message(rest.clone())?;
            rest.start = body.end;
            match typ {
                KEY_UPDATE => self.key_update(body, rest.is_empty())?,
                NEW_SESSION_TICKET => self.session_ticket()?,
                t => return Err(invalid(format!("unexpected handshake message {t}"))),
            }
        }
        Ok(())
    }

    /// The type and body of the handshake message at the start of `at`.
    fn message(&self, at: Range<usize>) -> io::Result<(u8, Range<usize>)> {
        let m = &self.buf[at.clone()];
        if m.len() < 4 {
            return Err(invalid("a truncated handshake message"));
        }
        let len = u32::from_be_bytes([0, m[1], m[2], m[3]]) as usize;
        if m.len() - 4 < len {
            return Err(invalid("a truncated handshake message"));
        }
        Ok((m[0], at.start + 4..at.start + 4 + len))
    }

    /// The peer's next keys, from the record after this one. A KeyUpdate must end its record
    /// (`last`): bytes after it in the same record were sealed under the old key but would be
    /// read as if under the new one, and RFC 8446 §5.1 forbids handshake messages spanning a
    /// key change (unexpected_message).
    fn key_update(&mut self, body: Range<usize>, last: bool) -> io::Result<()> {
        if !last {
            return Err(invalid(
                "a key update not at the end of its record (RFC 8446 §5.1)",
            ));
        }
        let asked = match self.buf[body] {
            [0] => false,
            [1] => true,
            _ => return Err(invalid("a malformed key update")),
        };
        self.count_key_update()?;
        if asked {
            // Answered once, before our next record, however many requests come first.
            self.shared.update_asked.store(true, Ordering::Release);
        }
        let keys = self.shared.kernel.lock().unwrap().next_keys(false)?;
        self.dec = decrypter(self.shared.suite, keys)?;
        self.seq = 0;
        Ok(())
    }

    /// Refuses a peer that sends more than [`MAX_KEY_UPDATES`] key updates in a row.
    fn count_key_update(&mut self) -> io::Result<()> {
        self.key_updates += 1;
        if self.key_updates > MAX_KEY_UPDATES {
            return Err(invalid(format!(
                "more than {MAX_KEY_UPDATES} key updates in a row with no data between them"
            )));
        }
        Ok(())
    }

    /// Only a server may send a NewSessionTicket (RFC 8446 §4.6.1), so one reaching the daemon
    /// is refused. The client ignores one, as a client may (a ticket is an offer, and Blit's
    /// client resumes nothing): Blit's daemon sends none, but a later one that does, or another
    /// TLS server, should not make every client fail; and an ignored ticket changes no state.
    fn session_ticket(&self) -> io::Result<()> {
        if self.server {
            return Err(invalid(
                "a session ticket from the client (only a server may send one)",
            ));
        }
        Ok(())
    }
}

/// The AES-256-GCM key and IV of every epoch of a fuzzing opener: all zeros.
const FUZZ_KEY: [u8; 32] = [0; 32];
const FUZZ_IV: [u8; 12] = [0; 12];

fn fuzz_keys() -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from(FUZZ_KEY),
        iv: Iv::from(FUZZ_IV),
    }
}

/// The record reader without a handshake, for its fuzz target (`fuzz/fuzz_targets/records.rs`):
/// the fuzzer cannot run a handshake, and would never find a record that opens under real
/// keys. Nothing here is fit for a network: the keys are public constants.
impl Opener {
    /// An opener on the daemon's side (`server`) or the client's, whose keys in every epoch (a
    /// key update included) are the all-zero AES-256-GCM key and IV.
    #[doc(hidden)]
    pub fn for_fuzzing(server: bool) -> io::Result<Opener> {
        let kernel = Kernel::Fixed { server };
        // Built without TLS 1.2, every suite is a TLS 1.3 one.
        let rustls::SupportedCipherSuite::Tls13(suite) = kernel.suite();
        let shared = Arc::new(Shared {
            kernel: Mutex::new(kernel),
            suite,
            update_asked: AtomicBool::new(false),
        });
        Ok(Opener::new(
            shared,
            decrypter(suite, fuzz_keys())?,
            0,
            &[],
            &[],
        ))
    }

    /// The record with sequence number `seq` whose plaintext (content, content type, padding)
    /// is `inner`, sealed under the keys of [`Opener::for_fuzzing`].
    #[doc(hidden)]
    pub fn seal_for_fuzzing(seq: u64, inner: &[u8]) -> io::Result<Vec<u8>> {
        if inner.len() + TAG > u16::MAX as usize {
            return Err(invalid("a record longer than its header can say"));
        }
        let key = SealKey::new(fuzz_keys())?;
        let header = header(inner.len());
        let mut record = Vec::with_capacity(HEADER + inner.len() + TAG);
        record.extend_from_slice(&header);
        record.extend_from_slice(inner);
        let tag = key.seal(seq, header, &mut record[HEADER..])?;
        record.extend_from_slice(tag.as_ref());
        Ok(record)
    }

    /// The size of the receive buffer, which nothing the peer sends may change.
    #[doc(hidden)]
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Writes every buffer whole, in as few system calls as the socket allows.
fn write_all_records(sock: &mut TcpStream, records: &[Vec<u8>]) -> io::Result<()> {
    for batch in records.chunks(BATCH) {
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|r| IoSlice::new(r)).collect();
        write_all_slices(sock, &mut slices)?;
    }
    Ok(())
}

fn write_all_slices(sock: &mut TcpStream, mut left: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !left.is_empty() {
        let n = match sock.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// A whole session on one socket: used for the opening exchange, then split for the peer's
/// two threads.
pub struct Session {
    pub sock: TcpStream,
    pub(super) seal: Sealer,
    pub(super) open: Opener,
}

impl Session {
    /// Sends `bytes` sealed.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        self.seal.seal(bytes, &mut out)?;
        write_all_records(&mut self.sock, &out)
    }

    /// The two halves, each with its own handle on the socket.
    pub fn split(self) -> io::Result<(Reader, Writer)> {
        let reader = Reader {
            sock: self.sock.try_clone()?,
            open: self.open,
        };
        let writer = Writer {
            sock: self.sock,
            seal: self.seal,
            records: Vec::new(),
            between: Vec::new(),
        };
        Ok((reader, writer))
    }

    #[cfg(test)]
    pub fn rekey_after(&mut self, records: u64) {
        self.seal.rekey_after = records;
    }
}

/// Exact reads during the opening: nothing past what is asked leaves the session's buffer.
impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let plain = self.open.fill(&mut self.sock)?;
        let n = plain.len().min(buf.len());
        buf[..n].copy_from_slice(&plain[..n]);
        self.open.consume(n);
        Ok(n)
    }
}

/// The receiving half for the peer's reader thread. It buffers (whole records) itself, so it
/// is read as a `BufRead` with no second buffer on top.
pub struct Reader {
    sock: TcpStream,
    pub(super) open: Opener,
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let plain = self.fill_buf()?;
        let n = plain.len().min(buf.len());
        buf[..n].copy_from_slice(&plain[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Reader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.open.fill(&mut self.sock)
    }

    fn consume(&mut self, n: usize) {
        self.open.consume(n);
    }
}

/// The sending half for the peer's writer thread: every write is sealed and on the socket
/// when it returns.
pub struct Writer {
    pub sock: TcpStream,
    pub(super) seal: Sealer,
    /// Sealed records on their way out (the list is reused).
    records: Vec<Vec<u8>>,
    /// What goes between the records of a frame sealed in place (reused).
    between: Vec<u8>,
}

impl Writer {
    /// Sends a frame the caller gives up, sealed where it lies when it can be; its bytes are
    /// unspecified afterwards.
    pub fn write_owned(&mut self, frame: &mut Vec<u8>) -> io::Result<()> {
        if !self.seal.seal_in_place(frame, &mut self.between)? {
            return self.write_all(frame);
        }
        let between = &self.between;
        let per = HEADER + 1 + TAG;
        let mut slices = Vec::with_capacity(2 * frame.len().div_ceil(MAX_PLAIN) + 1);
        slices.push(IoSlice::new(&between[..HEADER]));
        for (k, body) in frame.chunks(MAX_PLAIN).enumerate() {
            slices.push(IoSlice::new(body));
            let after = HEADER + k * per;
            slices.push(IoSlice::new(
                &between[after..(after + per).min(between.len())],
            ));
        }
        write_all_slices(&mut self.sock, &mut slices)
    }

    /// Ends the session cleanly (a close_notify, so the other side can tell the end from a cut).
    pub fn close(&mut self) -> io::Result<()> {
        let record = self.seal.close_notify()?;
        write_all_records(&mut self.sock, &[record])
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.records.clear();
        self.seal.seal(buf, &mut self.records)?;
        write_all_records(&mut self.sock, &self.records)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}
