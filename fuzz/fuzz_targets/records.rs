//! Any byte stream fed to the TLS record reader as the peer's sealed records: it delivers
//! plaintext, ends at close_notify or fails, and never panics, never grows its buffer, never
//! makes a large allocation, never hands out more than one record's plaintext at once, and
//! delivers nothing after it failed or closed.
//!
//! Random bytes almost never open under any key, so the input is read one of two ways (its
//! first byte says which, and which side the reader plays):
//! - raw: the rest is the sealed stream itself (record headers, lengths, failed decryption);
//! - built: the rest is a list of chunks, each sealed as a record (or several) with the
//!   reader's own key and the right sequence number, some then corrupted, so content types,
//!   handshake messages (key updates, floods of them, session tickets), alerts and padding are
//!   reached too; in some inputs behind half a megabyte of good records, so that the reader's
//!   buffer fills and is compacted.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::OnceLock;

use blit_core::remote::tls::Opener;
use libfuzzer_sys::fuzz_target;

/// Largest plaintext of a record (RFC 8446 §5.1).
const MAX_PLAIN: usize = 1 << 14;
/// Largest single allocation the reader may make while reading (an error's message, a key
/// update's decrypter): anything near a record's size means a buffer that grows.
const LARGEST_ALLOWED: usize = 4 << 10;
/// What the reader may keep allocated after reading a whole stream (a failure's message).
const KEPT_ALLOWED: isize = 16 << 10;

/// Counts the allocations made while `WATCHING`.
struct Counting;

static WATCHING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn allocated(size: usize) {
    if WATCHING.load(Ordering::Relaxed) {
        LIVE.fetch_add(size as isize, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

fn freed(size: usize) {
    if WATCHING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size as isize, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        freed(layout.size());
        allocated(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The sealed stream, handed out a few bytes at a time in some inputs, so that headers and
/// records arrive in pieces.
struct Trickle<'a> {
    data: &'a [u8],
    pace: u8,
    reads: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let step = match self.pace % 4 {
            0 => usize::MAX,
            // Byte by byte for a while only: the long inputs would take seconds.
            1 if self.reads < 4096 => 1 + self.reads % 7,
            1 => usize::MAX,
            2 => 4096,
            _ => MAX_PLAIN + 5 + self.reads % 300,
        };
        let n = step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Takes bytes off the front of the input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// One record to seal, `copies` times: `content`, then its content type, then `padding`
/// zeros; `flip` (when not 0) picks a bit of each sealed copy to corrupt.
struct Chunk {
    typ: u8,
    content: Vec<u8>,
    padding: usize,
    flip: u8,
    copies: usize,
}

/// Content types (RFC 8446 §5.1).
const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const CHANGE_CIPHER_SPEC: u8 = 20;
/// A NewSessionTicket: lifetime 60 s, age_add 0, a 1-byte nonce, a 1-byte ticket, no extensions.
const TICKET: [u8; 19] = [4, 0, 0, 15, 0, 0, 0, 60, 0, 0, 0, 0, 1, 0, 0, 1, 0xaa, 0, 0];
/// Copies of one chunk stop at this many sealed bytes.
const COPIES_UP_TO: usize = 256 << 10;

impl Chunk {
    /// The content type and content of a chunk of kind `kind` around the input's `bytes`:
    /// mostly what a peer may send in a protected record (a fuzzer would take long to find a
    /// key update by chance), sometimes any content type (`other`).
    fn typed_content(kind: u8, bytes: &[u8], other: u8) -> (u8, Vec<u8>) {
        let with = |head: &[u8]| [head, bytes].concat();
        match kind % 16 {
            0..=3 => (APPLICATION_DATA, bytes.to_vec()),
            4 => (HANDSHAKE, bytes.to_vec()),
            5 => (ALERT, bytes.to_vec()),
            6 => (HANDSHAKE, with(&[24, 0, 0, 1, 0])), // KeyUpdate
            7 => (HANDSHAKE, with(&[24, 0, 0, 1, 1])), // KeyUpdate, ours asked for
            8 => (HANDSHAKE, with(&TICKET)),
            9 => (ALERT, with(&[1, 0])),   // close_notify
            10 => (ALERT, with(&[2, 90])), // user_canceled
            11 => (CHANGE_CIPHER_SPEC, bytes.to_vec()),
            12 => (HANDSHAKE, [bytes, &[24, 0, 0, 1, 0]].concat()), // a KeyUpdate last
            _ => (other, bytes.to_vec()),
        }
    }

    /// Whether the reader must deliver this record's content whole.
    fn clean(&self) -> bool {
        self.typ == APPLICATION_DATA
            && self.flip == 0
            && self.content.len() + 1 + self.padding <= MAX_PLAIN + 1
    }

    /// Whether the reader moves to new keys after this record: it ends with a KeyUpdate.
    fn updates_keys(&self) -> bool {
        self.typ == HANDSHAKE
            && self.padding == 0
            && matches!(self.content[..], [.., 24, 0, 0, 1, 0 | 1])
    }

    fn seal(&self, seq: u64) -> Vec<u8> {
        let mut inner = self.content.clone();
        inner.push(self.typ);
        inner.resize(inner.len() + self.padding, 0);
        let mut record = Opener::seal_for_fuzzing(seq, &inner).expect("a record fits its header");
        if self.flip != 0 {
            let at = (self.flip as usize - 1) % record.len();
            record[at] ^= 1 << (self.flip % 8);
        }
        record
    }
}

/// Chunks, each `[kind, copies, length (2 bytes), padding, flip, content]`; for kinds 13 to
/// 15, `padding` is the content type instead (there is no padding then).
fn chunks(mut input: Input<'_>) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    while let (Some(kind), Some(copies), Some(hi), Some(lo), Some(pad), Some(flip)) = (
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
    ) {
        // Past the limit by a little at most: the reader must refuse it, not choke on it.
        let len = (u16::from_be_bytes([hi, lo]) as usize).min(MAX_PLAIN + 300);
        let (typ, content) = Chunk::typed_content(kind, input.bytes(len), pad);
        let padding = if kind % 16 >= 13 { 0 } else { pad as usize };
        let copies = (1 + copies as usize % 64).min(COPIES_UP_TO / (content.len() + padding + 22));
        chunks.push(Chunk {
            typ,
            content,
            padding,
            flip,
            copies: copies.max(1),
        });
    }
    chunks
}

/// Records of 16 KiB of zeros, sealed with sequence numbers from 0: past this many, the
/// reader's 512 KiB buffer has less than a record's room left, so what follows is moved to its
/// start.
const FILLER_RECORDS: usize = 31;

/// The filler's sealed stream, made once: sealing half a megabyte for every input would make
/// the target ten times slower.
fn filler() -> &'static [u8] {
    static FILLER: OnceLock<Vec<u8>> = OnceLock::new();
    FILLER.get_or_init(|| {
        let zeros = Chunk {
            typ: APPLICATION_DATA,
            content: vec![0; MAX_PLAIN],
            padding: 0,
            flip: 0,
            copies: 1,
        };
        (0..FILLER_RECORDS as u64)
            .flat_map(|seq| zeros.seal(seq))
            .collect()
    })
}

/// The sealed stream of `chunks` (behind the filler if `long`), and the plaintext the reader
/// must deliver first: that of the clean records before any other.
fn seal_all(chunks: &[Chunk], long: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut stream, mut expected, mut seq) = if long {
        let plain = vec![0; FILLER_RECORDS * MAX_PLAIN];
        (filler().to_vec(), plain, FILLER_RECORDS as u64)
    } else {
        (Vec::new(), Vec::new(), 0)
    };
    let mut leading = true;
    for chunk in chunks {
        for _ in 0..chunk.copies {
            stream.extend_from_slice(&chunk.seal(seq));
            seq += 1;
            if chunk.updates_keys() {
                seq = 0;
            }
            leading &= chunk.clean();
            if leading {
                expected.extend_from_slice(&chunk.content);
            }
        }
    }
    (stream, expected)
}

/// Runs `f` with allocations counted.
fn watched<T>(f: impl FnOnce() -> T) -> T {
    WATCHING.store(true, Ordering::Relaxed);
    let t = f();
    WATCHING.store(false, Ordering::Relaxed);
    t
}

/// Reads the whole stream as a session would, checking the reader's promises on the way;
/// returns the plaintext delivered.
fn read_all(opener: &mut Opener, sock: &mut Trickle<'_>, pace: u8) -> Vec<u8> {
    let buffer = opener.buffer_capacity();
    let mut delivered = Vec::new();
    loop {
        let taken = match watched(|| opener.fill(sock).map(|p| p.len())) {
            Ok(0) => {
                // close_notify: the end, for good.
                assert_eq!(watched(|| opener.fill(sock).map(|p| p.len())).ok(), Some(0));
                break;
            }
            Ok(n) => {
                assert!(n <= MAX_PLAIN, "{n} bytes of plaintext from one record");
                // Sometimes taken a few bytes at a time (for a while: see `Trickle`).
                let step = if pace & 4 != 0 && delivered.len() < 4096 {
                    n.min(1 + pace as usize % 13)
                } else {
                    n
                };
                let plain = opener.fill(sock).expect("plaintext stays until taken");
                delivered.extend_from_slice(&plain[..step]);
                step
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().starts_with("TLS: "), "{e}");
                let again = watched(|| opener.fill(sock).map(|p| p.len()));
                assert!(again.is_err(), "read on after an error: {again:?}");
                break;
            }
        };
        opener.consume(taken);
        assert_eq!(
            opener.buffer_capacity(),
            buffer,
            "the receive buffer changed"
        );
    }
    delivered
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    let server = mode & 1 != 0;
    let built = mode & 2 != 0;
    let long = mode & 4 != 0;
    let pace = mode >> 3;
    let (stream, expected) = if built {
        seal_all(&chunks(input), long)
    } else {
        (input.0.to_vec(), Vec::new())
    };
    let mut opener = Opener::for_fuzzing(server).expect("an opener with the fuzzing keys");
    let mut sock = Trickle {
        data: &stream,
        pace,
        reads: 0,
    };
    LIVE.store(0, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let delivered = read_all(&mut opener, &mut sock, pace);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= LARGEST_ALLOWED,
        "an allocation of {largest} bytes while reading"
    );
    let kept = LIVE.load(Ordering::Relaxed);
    assert!(
        kept <= KEPT_ALLOWED,
        "{kept} bytes still allocated after reading"
    );
    assert!(
        delivered.starts_with(&expected),
        "the clean records' plaintext was not delivered intact"
    );
});
