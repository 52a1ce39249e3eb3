//! Plumbing for the torture scenarios: suite size, a seeded random source, the per-scenario
//! summary line, content hashes, a loop-mounted filesystem that always unmounts, and helpers for
//! reading blit's error lines.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Size of the suite
// ---------------------------------------------------------------------------------------------

/// `BLIT_TORTURE=full` selects the full-size suite; anything else (or nothing) the CI size.
pub fn full() -> bool {
    static FULL: OnceLock<bool> = OnceLock::new();
    *FULL.get_or_init(|| std::env::var("BLIT_TORTURE").is_ok_and(|v| v == "full"))
}

/// `ci` in the CI-sized suite, `full` in the full one.
pub fn pick<T>(ci: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        ci
    }
}

pub const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// The seed of a scenario: `BLIT_TORTURE_SEED` when set (to replay a failure), else the clock.
/// Every summary line prints it.
pub fn seed() -> u64 {
    match std::env::var("BLIT_TORTURE_SEED") {
        Ok(s) => s.parse().expect("BLIT_TORTURE_SEED must be a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
        }
    }
}

/// xorshift64*: small, fast and reproducible from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The summary line
// ---------------------------------------------------------------------------------------------

/// What one scenario found. [`Report::finish`] prints the one summary line
/// (`name: runs=N failures_found=N outcome=... key=value...`) that `scripts/torture.sh` collects,
/// then fails the test if anything was found. If the scenario panics before that, the line is
/// still printed (with `outcome=FAIL`) when the report is dropped.
pub struct Report {
    name: &'static str,
    pub runs: u64,
    problems: Vec<String>,
    figures: BTreeMap<&'static str, String>,
    order: Vec<&'static str>,
    started: Instant,
    done: bool,
}

impl Report {
    pub fn new(name: &'static str) -> Report {
        Report {
            name,
            runs: 0,
            problems: Vec::new(),
            figures: BTreeMap::new(),
            order: Vec::new(),
            started: Instant::now(),
            done: false,
        }
    }

    /// Records a failure of the engine (the test keeps going, to count them all).
    pub fn problem(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        eprintln!("[{}] FAILURE: {msg}", self.name);
        self.problems.push(msg);
    }

    pub fn problems(&self) -> usize {
        self.problems.len()
    }

    /// Sets a figure printed after the outcome (`key=value`), in first-set order.
    pub fn set(&mut self, key: &'static str, value: impl ToString) {
        if !self.figures.contains_key(key) {
            self.order.push(key);
        }
        self.figures.insert(key, value.to_string());
    }

    fn line(&self, outcome: &str) -> String {
        let mut s = format!(
            "{}: runs={} failures_found={} outcome={}",
            self.name,
            self.runs,
            self.problems.len(),
            outcome
        );
        for k in &self.order {
            s.push_str(&format!(" {k}={}", self.figures[k]));
        }
        s.push_str(&format!(
            " size={} secs={:.1}",
            if full() { "full" } else { "ci" },
            self.started.elapsed().as_secs_f64()
        ));
        s
    }

    /// Prints the summary line and fails the test if any problem was recorded.
    pub fn finish(mut self) {
        self.done = true;
        let outcome = if self.problems.is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        // On a line of its own: the test harness may have printed "test name ... " before it.
        println!("\n{}", self.line(outcome));
        if !self.problems.is_empty() {
            let shown: Vec<_> = self.problems.iter().take(25).cloned().collect();
            panic!(
                "{}: {} failure(s) found:\n  {}{}",
                self.name,
                self.problems.len(),
                shown.join("\n  "),
                if self.problems.len() > 25 {
                    "\n  ..."
                } else {
                    ""
                }
            );
        }
    }

    /// Prints the summary line for a scenario that could not run here (say, strace missing).
    pub fn skip(mut self, why: &str) {
        self.done = true;
        println!(
            "\n{}",
            self.line(&format!("skipped({})", why.replace(' ', "_")))
        );
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.done {
            println!("\n{}", self.line("FAIL(panicked)"));
        }
    }
}

/// Runs `f`, turning a panic (a failed assertion inside it) into an `Err` with its message, so a
/// scenario can count failures instead of stopping at the first.
pub fn caught(f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

// ---------------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------------

pub type Hash = [u8; 32];

pub fn hash_bytes(b: &[u8]) -> Hash {
    *blake3::hash(b).as_bytes()
}

pub fn hash_file(p: &Path) -> std::io::Result<Hash> {
    let mut f = fs::File::open(p)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(*h.finalize().as_bytes())
}

/// `(seconds, nanoseconds)` mtimes, unique per call within a process, so that size + mtime
/// identifies one version of a file.
pub fn unique_mtime(rng: &mut Rng) -> (i64, i64) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (1_650_000_000 + n * 3, rng.below(1_000_000_000) as i64)
}

/// The path of the blit binary the tests run (what `common::blit()` runs).
pub fn blit_path() -> PathBuf {
    match std::env::var_os("BLIT_BIN") {
        Some(b) => PathBuf::from(b),
        None => assert_cmd::cargo::cargo_bin("blit"),
    }
}

// ---------------------------------------------------------------------------------------------
// blit's error lines
// ---------------------------------------------------------------------------------------------

/// The `blit: <operation> <path>: <cause>` lines of a run's stderr.
pub fn error_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("blit: "))
        .map(str::to_string)
        .collect()
}

/// Lines of stderr that are neither error lines nor blit's closing summary line.
pub fn stray_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            !l.starts_with("blit: ")
                && !l.trim().is_empty()
                && !["copy: ", "mirror: ", "move: "]
                    .iter()
                    .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// True if some error line mentions `needle` (a file name or path).
pub fn names(stderr: &str, needle: &str) -> bool {
    error_lines(stderr).iter().any(|l| l.contains(needle))
}

// ---------------------------------------------------------------------------------------------
// A small filesystem for the full-disk scenario
// ---------------------------------------------------------------------------------------------

/// An ext4 image loop-mounted on a fresh folder. Dropping it (also while a test unwinds from a
/// panic) unmounts it and deletes the image.
pub struct LoopFs {
    dir: Option<tempfile::TempDir>,
    mnt: PathBuf,
    mounted: bool,
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl LoopFs {
    /// `size_mib` MiB with at most `inodes` inodes, no blocks reserved for root (blit runs as
    /// root, so reserved blocks would be usable and "full" would not be full).
    pub fn new(size_mib: u64, inodes: u32) -> LoopFs {
        Self::with_options(size_mib, inodes, "loop")
    }

    /// As [`LoopFs::new`], mounted with `options` (which must include `loop`).
    pub fn with_options(size_mib: u64, inodes: u32, options: &str) -> LoopFs {
        Self::with_features(size_mib, inodes, &[], options)
    }

    /// As [`LoopFs::with_options`], made with extra `mkfs.ext4` arguments (`-O ^filetype`…).
    pub fn with_features(size_mib: u64, inodes: u32, mkfs: &[&str], options: &str) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("blit-loopfs-")
            .tempdir_in(std::env::temp_dir())
            .expect("tempdir for the image");
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&img)
            .unwrap()
            .set_len(size_mib * MIB)
            .unwrap();
        let mut fs = LoopFs {
            dir: Some(dir),
            mnt,
            mounted: false,
        };
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-N", &inodes.to_string()])
            .args(mkfs)
            .arg(&img))
        .expect("mkfs.ext4 (install e2fsprogs)");
        sh(Command::new("mount")
            .args(["-o", options])
            .arg(&img)
            .arg(&fs.mnt))
        .expect("loop mount (needs root)");
        fs.mounted = true;
        // lost+found is noise for the trees under test; the filesystem works without it.
        let _ = fs::remove_dir(fs.mnt.join("lost+found"));
        fs
    }

    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// Bytes a new file can still get.
    pub fn avail(&self) -> u64 {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_bytes()).unwrap();
        // SAFETY: `st` is plain data filled by statvfs; `c` is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let mut ok = false;
            for _ in 0..50 {
                if sh(Command::new("umount").arg(&self.mnt)).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                // Busy (a blit still running after a panic): detach now, freed when unused.
                let _ = sh(Command::new("umount").arg("-l").arg(&self.mnt));
            }
        }
        drop(self.dir.take());
    }
}

/// Allocates `len` bytes for real (not a hole) in a new file at `p`.
pub fn fallocate(p: &Path, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::create(p)?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: valid descriptor we own.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// strace
// ---------------------------------------------------------------------------------------------

/// True when `strace` can be run, installing it with apt-get once if it is missing.
pub fn strace_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let works = || {
            Command::new("strace")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works() {
            return true;
        }
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "strace"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        if !works() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).output();
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "strace"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output();
        }
        works()
    })
}

/// True for blit's temporary names, as `common::is_temp_name`, for `&str` callers.
pub fn is_temp(name: &OsStr) -> bool {
    crate::common::is_temp_name(name)
}
