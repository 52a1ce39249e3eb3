//! Reliability torture suite: blit under crashes, full disks, sources changing underneath it,
//! hostile permissions and names, symlink races, and silent corruption.
//!
//! Each scenario prints one summary line (`name: runs=N failures_found=N outcome=... ...`) and
//! counts every engine failure it finds before failing, so one run gives the whole picture.
//! `BLIT_TORTURE=full` selects the full size (see `scripts/torture.sh` and
//! `docs/RELIABILITY.md`); by default the CI size runs. `BLIT_TORTURE_SEED=N` replays a run.

mod common;

mod torture {
    pub mod deep;
    pub mod support;
    pub mod trace;
}

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use torture::deep::{self, DirFd};
use torture::support::*;
use torture::trace;

/// `[verb, extra..., src, dst]` as blit arguments.
fn args(verb: &str, extra: &[&str], src: &Path, dst: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![verb.into()];
    v.extend(extra.iter().map(OsString::from));
    v.push(src.into());
    v.push(dst.into());
    v
}

/// Regular files of a tree (relative paths).
fn files_of(t: &Tree) -> Vec<PathBuf> {
    t.rel_paths()
        .into_iter()
        .filter(|r| t.meta(r).is_file())
        .collect()
}

/// Sets a fresh, unique mtime on `rel` (see [`unique_mtime`]).
fn stamp(t: &Tree, rel: impl AsRef<Path>, rng: &mut Rng) {
    let (s, n) = unique_mtime(rng);
    t.set_mtime(rel, s, n);
}

/// `(size, mtime)` of a file.
fn size_mtime(m: &fs::Metadata) -> (u64, (i64, i64)) {
    (m.len(), (m.mtime(), m.mtime_nsec()))
}

/// Writes `bytes` over `rel` through a new inode (written aside in `stage`, then renamed over),
/// the way editors save.
fn replace_file(t: &Tree, rel: impl AsRef<Path>, bytes: &[u8], stage: &Path) {
    fs::create_dir_all(stage).unwrap();
    let tmp = stage.join("replacement");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, t.p(rel)).unwrap();
}

/// Asserts the two trees are equal, recording a problem instead of panicking.
fn trees_equal_or_problem(rep: &mut Report, a: &Path, b: &Path, ctx: &str) -> bool {
    match caught(|| assert_trees_equal(a, b)) {
        Ok(()) => true,
        Err(msg) => {
            rep.problem(format!("{ctx}: trees differ: {msg}"));
            false
        }
    }
}

/// The exit code of a run, recording a problem if blit died of a signal or panicked.
fn code_or_problem(rep: &mut Report, a: &assert_cmd::assert::Assert, ctx: &str) -> Option<i32> {
    let out = a.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked") {
        rep.problem(format!("{ctx}: blit panicked:\n{stderr}"));
    }
    match out.status.code() {
        Some(c) => Some(c),
        None => {
            rep.problem(format!("{ctx}: blit died: {:?}\n{stderr}", out.status));
            None
        }
    }
}

/// Runs a mirror and records a problem unless it exits 0 and leaves an exact replica without
/// temporaries.
fn converge(
    rep: &mut Report,
    runner: impl FnOnce() -> assert_cmd::assert::Assert,
    src: &Path,
    dst: &Path,
    ctx: &str,
) -> bool {
    let a = runner();
    let code = code_or_problem(rep, &a, ctx);
    if code != Some(0) {
        rep.problem(format!(
            "{ctx}: exit {code:?}, want 0; stderr:\n{}",
            stderr_of(&a)
        ));
        return false;
    }
    let temps = temps_under(dst);
    if !temps.is_empty() {
        rep.problem(format!("{ctx}: temporaries left: {temps:?}"));
    }
    trees_equal_or_problem(rep, src, dst, ctx) && temps.is_empty()
}

// =============================================================================================
// 1. Crash anywhere
// =============================================================================================

/// Every version of every source file seen so far, so that a destination file can be checked
/// against the version it claims by size + mtime.
#[derive(Default)]
struct Versions {
    files: HashMap<(PathBuf, u64, (i64, i64)), Hash>,
    links: HashMap<PathBuf, HashSet<PathBuf>>,
    /// Identity of what was last hashed per path, to skip unchanged files.
    seen: HashMap<PathBuf, FileId>,
}

impl Versions {
    fn record(&mut self, t: &Tree) {
        for rel in t.rel_paths() {
            let m = t.meta(&rel);
            if m.file_type().is_symlink() {
                let target = fs::read_link(t.p(&rel)).unwrap();
                self.links.entry(rel).or_default().insert(target);
                continue;
            }
            if !m.is_file() {
                continue;
            }
            let (size, mtime) = size_mtime(&m);
            let id = (m.ino(), m.ctime(), m.ctime_nsec(), size, mtime);
            if self.seen.get(&rel) == Some(&id) {
                continue;
            }
            let h = hash_file(&t.p(&rel)).unwrap();
            if let Some(old) = self.files.insert((rel.clone(), size, mtime), h) {
                assert_eq!(
                    old, h,
                    "test bug: two versions of {rel:?} share size and mtime"
                );
            }
            self.seen.insert(rel, id);
        }
    }
}

struct CrashSpec {
    dirs: usize,
    per_dir: usize,
    small_max: u64,
    bigs_mib: Vec<u64>,
    /// Largest change to a big file's length in one edit.
    big_step: u64,
}

fn crash_spec() -> CrashSpec {
    pick(
        CrashSpec {
            dirs: 12,
            per_dir: 30,
            small_max: 24 << 10,
            bigs_mib: vec![12, 20, 28],
            big_step: MIB,
        },
        CrashSpec {
            dirs: 60,
            per_dir: 50,
            small_max: 64 << 10,
            bigs_mib: vec![50, 80, 120, 160, 200],
            big_step: 8 * MIB,
        },
    )
}

fn small_len(rng: &mut Rng, max: u64) -> usize {
    if rng.chance(0.3) {
        rng.below(600) as usize
    } else {
        rng.below(max) as usize
    }
}

fn build_crash_source(t: &Tree, rng: &mut Rng, spec: &CrashSpec) {
    t.mkroot();
    for d in 0..spec.dirs {
        for f in 0..spec.per_dir {
            let len = small_len(rng, spec.small_max);
            t.file(format!("d{d:03}/f{f:04}"), noise(len, rng.next_u64()));
        }
    }
    for (i, mib) in spec.bigs_mib.iter().enumerate() {
        t.file(
            format!("big/b{i}.bin"),
            noise((mib * MIB) as usize, rng.next_u64()),
        );
    }
    t.symlink("links/to-f0", "../d000/f0000")
        .symlink("links/dangling", "/nonexistent/blit-torture")
        .hardlink("d000/hard", "d000/f0000")
        .dir("empty");
    for rel in files_of(t) {
        stamp(t, &rel, rng);
    }
}

/// One random change to the source between runs; returns what it did.
fn edit_crash_source(t: &Tree, rng: &mut Rng, spec: &CrashSpec, stage: &Path, n: u64) -> String {
    let files = files_of(t);
    let bigs: Vec<&PathBuf> = files.iter().filter(|r| r.starts_with("big")).collect();
    let smalls: Vec<&PathBuf> = files.iter().filter(|r| !r.starts_with("big")).collect();
    match rng.below(10) {
        0 | 1 if !smalls.is_empty() => {
            let rel = rng.choose(&smalls).to_path_buf();
            t.file(&rel, noise(small_len(rng, spec.small_max), rng.next_u64()));
            stamp(t, &rel, rng);
            format!("rewrote {rel:?}")
        }
        2 => {
            let rel = rng.choose(&bigs).to_path_buf();
            let len = t.meta(&rel).len();
            let chunk = MIB.min(len);
            let off = rng.below(len - chunk + 1) & !4095;
            let f = fs::OpenOptions::new().write(true).open(t.p(&rel)).unwrap();
            f.write_all_at(&noise(chunk as usize, rng.next_u64()), off)
                .unwrap();
            drop(f);
            stamp(t, &rel, rng);
            format!("rewrote 1 MiB inside {rel:?} at {off}")
        }
        3 => {
            let rel = rng.choose(&bigs).to_path_buf();
            let len = t.meta(&rel).len();
            let add = rng.range(1, spec.big_step);
            let f = fs::OpenOptions::new().write(true).open(t.p(&rel)).unwrap();
            f.write_all_at(&noise(add as usize, rng.next_u64()), len)
                .unwrap();
            drop(f);
            stamp(t, &rel, rng);
            format!("grew {rel:?} by {add}")
        }
        4 => {
            let rel = rng.choose(&bigs).to_path_buf();
            let len = t.meta(&rel).len();
            let cut = rng.range(1, spec.big_step.min(len / 2));
            fs::OpenOptions::new()
                .write(true)
                .open(t.p(&rel))
                .unwrap()
                .set_len(len - cut)
                .unwrap();
            stamp(t, &rel, rng);
            format!("shrank {rel:?} by {cut}")
        }
        5 => {
            let rel = rng.choose(&bigs).to_path_buf();
            let len = t.meta(&rel).len();
            let new_len = (len as i64 + rng.range(0, 2 * spec.big_step) as i64
                - spec.big_step as i64)
                .max(MIB as i64) as usize;
            replace_file(t, &rel, &noise(new_len, rng.next_u64()), stage);
            stamp(t, &rel, rng);
            format!("replaced {rel:?} with a new file of {new_len} bytes")
        }
        6 if smalls.len() > 10 => {
            let rel = rng.choose(&smalls).to_path_buf();
            t.remove(&rel);
            format!("deleted {rel:?}")
        }
        7 => {
            let dirs: Vec<PathBuf> = t
                .rel_paths()
                .into_iter()
                .filter(|r| {
                    r.components().count() == 1
                        && r.to_string_lossy().starts_with('d')
                        && t.meta(r).is_dir()
                })
                .collect();
            if dirs.len() > 3 {
                let rel = rng.choose(&dirs).clone();
                t.remove(&rel);
                format!("deleted folder {rel:?}")
            } else {
                "nothing".into()
            }
        }
        8 if !smalls.is_empty() => {
            // A type change: a file becomes a folder holding a file.
            let rel = rng.choose(&smalls).to_path_buf();
            t.remove(&rel);
            let inner = rel.join("now-a-folder");
            t.file(
                &inner,
                noise(small_len(rng, spec.small_max), rng.next_u64()),
            );
            stamp(t, &inner, rng);
            format!("turned {rel:?} into a folder")
        }
        _ => {
            for i in 0..rng.range(1, 20) {
                let rel = format!("new{n:03}/g{i:03}");
                t.file(&rel, noise(small_len(rng, spec.small_max), rng.next_u64()));
                stamp(t, &rel, rng);
            }
            if t.exists("links/to-f0") {
                t.remove("links/to-f0")
                    .symlink("links/to-f0", format!("../new{n:03}/g000"));
            }
            format!("added folder new{n:03}")
        }
    }
}

/// Share of the work a mirror of `src` onto `dst` still has to do (bytes, plus 16 KiB per file
/// for its fixed costs).
fn work_left(src: &Tree, dst: &Tree) -> f64 {
    let (mut todo, mut total) = (0f64, 0f64);
    for rel in files_of(src) {
        let m = src.meta(&rel);
        let w = m.len() as f64 + 16384.0;
        total += w;
        let done = fs::symlink_metadata(dst.p(&rel))
            .is_ok_and(|d| d.is_file() && size_mtime(&d) == size_mtime(&m));
        if !done {
            todo += w;
        }
    }
    if total == 0.0 {
        0.0
    } else {
        todo / total
    }
}

type FileId = (u64, i64, i64, u64, (i64, i64));

/// Checks every entry of `dst` under a final name against the source version it claims.
/// Returns the number of partial or mixed files found and the temporaries present.
fn check_final_names(
    dst: &Tree,
    v: &Versions,
    verified: &mut HashMap<PathBuf, FileId>,
    rep: &mut Report,
    ctx: &str,
) -> (u64, Vec<PathBuf>) {
    let (mut partial, mut temps) = (0, Vec::new());
    for rel in dst.rel_paths() {
        if in_temporary(&rel) {
            // A temporary file, or a folder still being filled (counted once, its contents
            // not: nothing in it is under its final path).
            let inside = rel.parent().is_some_and(|p| p.iter().any(is_temp_dir_name));
            if !inside {
                temps.push(rel);
            }
            continue;
        }
        let Ok(m) = fs::symlink_metadata(dst.p(&rel)) else {
            continue;
        };
        if m.is_file() {
            let (size, mtime) = size_mtime(&m);
            let Some(want) = v.files.get(&(rel.clone(), size, mtime)) else {
                partial += 1;
                rep.problem(format!(
                    "{ctx}: {rel:?} (size {size}, mtime {}.{:09}) sits under its final name but \
                     matches no version of the source",
                    mtime.0, mtime.1
                ));
                continue;
            };
            let id = (m.ino(), m.ctime(), m.ctime_nsec(), size, mtime);
            if verified.get(&rel) == Some(&id) {
                continue;
            }
            if hash_file(&dst.p(&rel)).unwrap() == *want {
                verified.insert(rel, id);
            } else {
                partial += 1;
                rep.problem(format!(
                    "{ctx}: {rel:?} has the size and mtime of a source version but not its \
                     content (partial or mixed old/new)"
                ));
            }
        } else if m.file_type().is_symlink() {
            let target = fs::read_link(dst.p(&rel)).unwrap();
            if !v.links.get(&rel).is_some_and(|s| s.contains(&target)) {
                partial += 1;
                rep.problem(format!(
                    "{ctx}: symlink {rel:?} -> {target:?} matches no version of the source"
                ));
            }
        }
    }
    (partial, temps)
}

#[test]
fn crash_anywhere() {
    let mut rep = Report::new("crash_anywhere");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let spec = crash_spec();
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let stage = sb.join("stage");
    build_crash_source(&src, &mut rng, &spec);
    let mut versions = Versions::default();
    versions.record(&src);

    // How long a full and a no-op mirror take, to spread the kills over a run's whole length.
    let cal = sb.tree("calibrate");
    let t = Instant::now();
    expect_code(&run(args("mirror", &["-q"], src.root(), cal.root())), 0);
    let t_full = t.elapsed().as_secs_f64();
    let t = Instant::now();
    expect_code(&run(args("mirror", &["-q"], src.root(), cal.root())), 0);
    let t_noop = t.elapsed().as_secs_f64();
    cal.remove("");
    rep.set("full_run_ms", (t_full * 1000.0) as u64);

    // Runs go on until this many were killed (a run that finishes before its kill counts as a
    // run, not a kill); the kill moments adapt to how long runs really take.
    let target_kills = pick(8, 50);
    let mut scale = 1.0f64;
    let mut verified = HashMap::new();
    let mut last_kill_temps: Vec<PathBuf> = Vec::new();
    let (mut kills, mut completed, mut partial, mut temps_left, mut edits) = (0u64, 0, 0, 0, 0);
    let mut mid_write_kills = 0u64;
    let mut round = 0u64;
    while kills < target_kills && round < target_kills * 4 {
        round += 1;
        let ctx = format!("round {round}");
        if round > 1 {
            if rng.chance(0.15) && dst.exists("") {
                // Start over now and then, so kills also land in a first full copy.
                dst.remove("");
                last_kill_temps.clear();
            }
            if rng.chance(0.4) || work_left(&src, &dst) < 0.05 {
                for _ in 0..rng.range(1, 4) {
                    edits += 1;
                    let what = edit_crash_source(&src, &mut rng, &spec, &stage, edits);
                    eprintln!("[crash_anywhere] {ctx}: {what}");
                }
                versions.record(&src);
            }
        }
        let est = t_noop + (t_full - t_noop).max(0.0) * work_left(&src, &dst);
        let delay = Duration::from_secs_f64(rng.unit() * est * scale);
        // Vary the worker count and flushing, which change what is in flight at the kill.
        let workers = rng.range(1, 8).to_string();
        let mut extra = vec!["-q", "--workers", workers.as_str()];
        if rng.chance(0.25) {
            extra.push("--fsync");
        }
        let mut child = spawn(args("mirror", &extra, src.root(), dst.root()));
        let start = Instant::now();
        while start.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep((delay - start.elapsed().min(delay)).min(Duration::from_millis(1)));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let killed = match (out.status.code(), out.status.signal()) {
            (_, Some(libc::SIGKILL)) => true,
            (Some(0), _) => false,
            (code, sig) => {
                rep.problem(format!(
                    "{ctx}: blit ended with code {code:?} signal {sig:?} before the kill:\n{stderr}"
                ));
                false
            }
        };
        let (p, temps) = check_final_names(&dst, &versions, &mut verified, &mut rep, &ctx);
        partial += p;
        if killed {
            kills += 1;
            mid_write_kills += u64::from(!temps.is_empty());
            temps_left += temps.len() as u64;
            last_kill_temps = temps;
        } else {
            completed += 1;
            // Learn how long runs really take compared with the estimate.
            let ratio = start.elapsed().as_secs_f64() / est.max(1e-3);
            scale = (0.5 * scale + 0.5 * ratio * 1.1).clamp(0.05, 2.0);
            // A run that finished must have converged, and removed what the last kill left.
            for t in &last_kill_temps {
                if dst.exists(t) {
                    rep.problem(format!(
                        "{ctx}: {t:?} left by the previous kill survived a complete run"
                    ));
                }
            }
            if !temps.is_empty() {
                rep.problem(format!("{ctx}: complete run left temporaries {temps:?}"));
            }
            trees_equal_or_problem(&mut rep, src.root(), dst.root(), &ctx);
            last_kill_temps.clear();
        }
        eprintln!(
            "[crash_anywhere] {ctx}: delay {:.0} ms of ~{:.0} ms, {}, {} temporaries",
            delay.as_secs_f64() * 1000.0,
            est * 1000.0,
            if killed { "killed" } else { "finished first" },
            temps_left
        );
    }

    // The converging run.
    let a = run(args("mirror", &["-q"], src.root(), dst.root()));
    let leftover = temps_under(dst.root()).len();
    if code_or_problem(&mut rep, &a, "converging run") != Some(0) {
        rep.problem(format!("converging run failed:\n{}", stderr_of(&a)));
    }
    if leftover > 0 {
        rep.problem(format!(
            "{leftover} temporaries left after the converging run"
        ));
    }
    trees_equal_or_problem(&mut rep, src.root(), dst.root(), "converging run");

    rep.runs = round;
    rep.set("kills", kills);
    rep.set("kills_leaving_temporaries", mid_write_kills);
    rep.set("finished_before_kill", completed);
    rep.set("source_edits", edits);
    rep.set("partial_final_files", partial);
    rep.set("temporaries_left_by_kills", temps_left);
    rep.set("leftover_temporaries_after_converge", leftover);
    rep.finish();
}

/// A run killed while updating files leaves named temporaries; the source then drops the folders
/// holding them (deleted, or replaced by a file). The next mirror must still remove every
/// leftover and converge.
#[test]
fn leftovers_in_folders_the_source_dropped() {
    let mut rep = Report::new("leftovers_in_dropped_folders");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let big = (pick(24, 160) * MIB) as usize;
    let folders = ["doomed", "becomes-file", "kept"];
    for d in folders {
        src.file(format!("{d}/big.bin"), noise(big, rng.next_u64()))
            .file(format!("{d}/small"), b"s");
    }
    expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
    let rounds = pick(3, 10);
    let mut left_total = 0;
    for round in 0..rounds {
        let ctx = format!("round {round}");
        for d in folders {
            if !src.exists(d) || !src.meta(d).is_dir() {
                if src.exists(d) {
                    src.remove(d);
                }
                src.file(format!("{d}/small"), b"s");
            }
            // Updates (not new files) are written to named temporaries.
            src.file(format!("{d}/big.bin"), noise(big, rng.next_u64()));
            stamp(&src, format!("{d}/big.bin"), &mut rng);
        }
        if !dst.exists("doomed/big.bin") || !dst.exists("becomes-file/big.bin") {
            expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
            for d in folders {
                src.file(format!("{d}/big.bin"), noise(big, rng.next_u64()));
                stamp(&src, format!("{d}/big.bin"), &mut rng);
            }
        }
        let mut child = spawn(args("mirror", &["-q"], src.root(), dst.root()));
        let caught_mid_copy = wait_for(Duration::from_secs(30), || {
            temps_under(dst.root()).len() >= 2 || child.try_wait().unwrap().is_some()
        });
        let _ = child.kill();
        let _ = child.wait();
        let left = temps_under(dst.root());
        left_total += left.len();
        if !caught_mid_copy || left.is_empty() {
            eprintln!("[leftovers_in_dropped_folders] {ctx}: the run finished before the kill");
        }
        // The source drops two of the folders.
        src.remove("doomed")
            .remove("becomes-file")
            .file("becomes-file", b"now a file");
        let a = run(args("mirror", &["--json"], src.root(), dst.root()));
        rep.runs += 1;
        let code = code_or_problem(&mut rep, &a, &ctx);
        if code != Some(0) {
            rep.problem(format!("{ctx}: exit {code:?}:\n{}", stderr_of(&a)));
        }
        let t = temps_under(dst.root());
        if !t.is_empty() {
            rep.problem(format!("{ctx}: leftovers survived: {t:?}"));
        }
        trees_equal_or_problem(&mut rep, src.root(), dst.root(), &ctx);
    }
    rep.set("leftovers_made", left_total);
    rep.finish();
}

/// A leftover temporary is not the user's data: removing it is housekeeping, not a deletion to
/// report (`-v`, `--json`) or to count against `--max-delete`, wherever it sits.
#[test]
fn leftovers_are_not_reported_as_deleted_entries() {
    let mut rep = Report::new("leftovers_not_reported");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    src.file("kept/a", b"a").file("doomed/b", b"b");
    expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
    // What a killed run leaves: named temporaries (the name is all blit goes by).
    dst.file("kept/.~blit-dead-1.tmp", b"partial")
        .file("doomed/.~blit-dead-2.tmp", b"partial")
        .file(
            "doomed/.~blit-dead-4.dir/c",
            b"in a folder a killed run was filling",
        );
    src.remove("doomed");
    let a = run(args("mirror", &["-v"], src.root(), dst.root()));
    rep.runs += 1;
    expect_code(&a, 0);
    for (sym, path) in verbose_entries(&stdout_of(&a)) {
        if path.contains(".~blit-") {
            rep.problem(format!("-v reports a leftover as an entry: {sym} {path}"));
        }
    }
    assert_trees_equal(src.root(), dst.root());
    // --max-delete counts only the user's entries: doomed/b and doomed/ are two.
    src.file("doomed/b", b"b");
    expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
    dst.file("doomed/.~blit-dead-3.tmp", b"partial").file(
        "doomed/.~blit-dead-5.dir/d/e",
        b"in a folder a killed run was filling",
    );
    src.remove("doomed");
    let a = run(args(
        "mirror",
        &["--json", "--max-delete", "2"],
        src.root(),
        dst.root(),
    ));
    rep.runs += 1;
    let j = json_of(&a);
    if j["exit_code"] != 0 || j["actions"]["delete"]["count"] != 2 {
        rep.problem(format!(
            "--max-delete 2 with two entries to delete (and a leftover): {j}"
        ));
    }
    rep.finish();
}

// =============================================================================================
// 2. Full disk
// =============================================================================================

/// Content hashes of every version a file has had: (rel, size, mtime) -> hash.
type VersionMap = HashMap<(PathBuf, u64, (i64, i64)), Hash>;

fn record_versions(t: &Tree, into: &mut VersionMap) {
    for rel in files_of(t) {
        let (size, mtime) = size_mtime(&t.meta(&rel));
        into.insert((rel.clone(), size, mtime), hash_file(&t.p(&rel)).unwrap());
    }
}

/// Fills the filesystem so that about `free` bytes stay available.
fn fill_blocks(lfs: &LoopFs, filler: &Path, free: u64) {
    let mut want = lfs.avail().saturating_sub(free) & !4095;
    while fallocate(filler, want).is_err() && want > 0 {
        want = want.saturating_sub(256 << 10);
    }
}

/// Uses up every free inode but `free`.
fn fill_inodes(dir: &Path, free: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    while fs::File::create(dir.join(format!("i{n}"))).is_ok() {
        n += 1;
    }
    for i in 0..free.min(n) {
        fs::remove_file(dir.join(format!("i{}", n - 1 - i))).unwrap();
    }
}

/// On a `grpid` mount every folder hands its group to what is created in it, set-group-ID or
/// not. Copies whose owner is Blit's own must still end with the source's group: in a folder of
/// another group, in the subfolders Blit makes there, and for a single file.
#[test]
fn a_grpid_mount_does_not_give_its_groups_to_copies() {
    let sb = Sandbox::new();
    // Declared after the sandbox, so it is unmounted first.
    let lfs = LoopFs::with_options(16, 256, "loop,grpid");
    let src = sb.src();
    let rels = roots_tree(&src);
    let dst = Tree::at(lfs.mnt());
    dst.dir("inbox")
        .chown("inbox", 0, 4321)
        .dir("single")
        .chown("single", 0, 4321);
    assert_eq!(dst.meta("inbox").mode() & 0o2000, 0, "not set-group-ID");
    expect_code(&run(args("copy", &[], src.root(), &dst.p("inbox"))), 0);
    assert_roots(&dst.p("inbox"), &rels);
    assert_trees_equal(src.root(), &dst.p("inbox"));
    expect_code(&run(args("copy", &[], &src.p("f"), &dst.p("single"))), 0);
    assert_eq!(dst.meta("single/f").gid(), 0, "a single file");
}

/// Where a filesystem's listings carry no entry types (ext4 without `filetype`), `--max-delete`
/// still counts what deleting a folder would remove, every entry inside it included.
#[test]
fn max_delete_counts_folders_where_listings_carry_no_types() {
    let sb = Sandbox::new();
    // Declared after the sandbox, so it is unmounted first.
    let lfs = LoopFs::with_features(16, 256, &["-O", "^filetype"], "loop");
    let src = sb.src();
    src.file("keep", b"k");
    let dst = Tree::at(lfs.mnt());
    dst.file("keep", b"k");
    for i in 0..5 {
        dst.file(format!("extra/sub/f{i}"), b"x");
    }
    let a = run(args(
        "mirror",
        &["--max-delete", "3"],
        src.root(),
        dst.root(),
    ));
    assert_ne!(code_of(&a), 0, "{}", stderr_of(&a));
    for i in 0..5 {
        assert!(
            dst.exists(format!("extra/sub/f{i}")),
            "f{i} deleted past --max-delete"
        );
    }
}

/// `move` onto a filesystem that keeps coarser times (ext4 with 128-byte inodes: whole seconds)
/// still removes its sources: whether a source changed after its copy is judged by the source
/// itself, not by the copy's rounded time.
#[test]
fn move_onto_coarse_timestamps_removes_its_sources() {
    let sb = Sandbox::new();
    // Declared after the sandbox, so it is unmounted first.
    let lfs = LoopFs::with_features(16, 256, &["-I", "128"], "loop");
    let src = sb.src();
    src.file("a", b"alpha")
        .file("d/b", b"beta")
        .set_mtime("a", 1_600_000_000, 123_456_789)
        .set_mtime("d/b", 1_600_000_001, 987_654_321);
    let dst = Tree::at(lfs.mnt().join("dst"));
    let a = run(args("move", &[], src.root(), dst.root()));
    expect_code(&a, 0);
    assert!(!src.exists(""), "sources kept: {}", stderr_of(&a));
    assert_eq!(dst.read("a"), b"alpha");
    assert_eq!(dst.read("d/b"), b"beta");
    assert_eq!(dst.mtime("a").0, 1_600_000_000);
}

#[test]
fn full_disk() {
    let mut rep = Report::new("full_disk");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let fs_mib = pick(32, 64);
    // Declared after the sandbox, so it is unmounted first.
    let lfs = LoopFs::new(fs_mib, 512);
    let (src, dst) = (sb.src(), Tree::at(lfs.mnt().join("dst")));
    let filler = lfs.mnt().join("filler");
    let filler_inodes = lfs.mnt().join("filler-inodes");
    let stage = sb.join("stage");
    // Sizes relative to the room there is, so the first mirror and the rerun always fit.
    let big_max = lfs.avail() / 5;
    let runs = pick(4, 20);
    let (mut enospc_runs, mut fit_runs, mut truncated, mut lost, mut temps_total) =
        (0u64, 0, 0, 0, 0);
    let mut naming_temp = 0;
    for run_no in 0..runs {
        let ctx = format!("run {run_no}");
        for p in [&filler, &filler_inodes] {
            let _ = fs::remove_file(p);
            let _ = fs::remove_dir_all(p);
        }
        if dst.exists("") {
            dst.remove("");
        }
        if src.exists("") {
            src.remove("");
        }
        // Version A, mirrored completely while there is room.
        src.mkroot();
        for i in 0..24 {
            src.file(
                format!("s/{i:02}"),
                noise(rng.range(1, 64 << 10) as usize, rng.next_u64()),
            );
        }
        for i in 0..8 {
            src.file(
                format!("keep/{i}"),
                noise(rng.range(1, 32 << 10) as usize, rng.next_u64()),
            );
        }
        src.file(
            "big/a.bin",
            noise(rng.range(MIB / 2, 3 * MIB / 2) as usize, rng.next_u64()),
        )
        .file(
            "big/b.bin",
            noise(rng.range(MIB / 2, MIB) as usize, rng.next_u64()),
        );
        for rel in files_of(&src) {
            stamp(&src, &rel, &mut rng);
        }
        if !converge(
            &mut rep,
            || run(args("mirror", &["-q"], src.root(), dst.root())),
            src.root(),
            dst.root(),
            &format!("{ctx}: first mirror"),
        ) {
            continue;
        }
        let mut versions = VersionMap::new();
        record_versions(&src, &mut versions);
        let before: BTreeSet<PathBuf> = files_of(&src).into_iter().collect();

        // Version B: bigger files, new files, a few deletions.
        replace_file(
            &src,
            "big/a.bin",
            &noise(rng.range(big_max / 2, big_max) as usize, rng.next_u64()),
            &stage,
        );
        src.file(
            "big/b.bin",
            noise(rng.range(big_max / 3, big_max) as usize, rng.next_u64()),
        );
        for i in 0..24 {
            if rng.chance(0.3) {
                src.file(
                    format!("s/{i:02}"),
                    noise(rng.range(1, 128 << 10) as usize, rng.next_u64()),
                );
            } else if rng.chance(0.1) {
                src.remove(format!("s/{i:02}"));
            }
        }
        for i in 0..rng.range(1, 12) {
            src.file(
                format!("new/{i:02}"),
                noise(rng.range(1, 128 << 10) as usize, rng.next_u64()),
            );
        }
        for rel in files_of(&src) {
            if !rel.starts_with("keep")
                && versions
                    .keys()
                    .all(|(r, s, m)| r != &rel || (*s, *m) != size_mtime(&src.meta(&rel)))
            {
                stamp(&src, &rel, &mut rng);
            }
        }
        record_versions(&src, &mut versions);

        // Fill the disk: by blocks, or (every third run) by inodes.
        let need: u64 = files_of(&src)
            .iter()
            .map(|r| src.meta(r).len())
            .sum::<u64>();
        let by_inodes = run_no % 3 == 2;
        if by_inodes {
            fill_inodes(&filler_inodes, rng.below(6));
        } else {
            fill_blocks(&lfs, &filler, rng.below(need * 9 / 10));
        }
        let fsync = run_no % 2 == 1;
        let extra: &[&str] = if fsync { &["-q", "--fsync"] } else { &["-q"] };
        let a = run(args("mirror", extra, src.root(), dst.root()));
        let stderr = stderr_of(&a);
        match code_or_problem(&mut rep, &a, &ctx) {
            Some(1) => {
                enospc_runs += 1;
                if !stderr.contains("No space left on device") {
                    rep.problem(format!(
                        "{ctx}: exit 1 without a full-disk error:\n{stderr}"
                    ));
                }
                // Each error names the entry (its path in the destination), never a temporary.
                for l in error_lines(&stderr) {
                    if l.contains(".~blit-") || !l.contains(&*dst.root().to_string_lossy()) {
                        naming_temp += 1;
                        rep.problem(format!("{ctx}: error does not name the entry: {l}"));
                    }
                }
            }
            Some(0) => {
                fit_runs += 1;
                trees_equal_or_problem(
                    &mut rep,
                    src.root(),
                    dst.root(),
                    &format!("{ctx}: it fitted"),
                );
            }
            other => rep.problem(format!(
                "{ctx}: exit {other:?}, want 1 (or 0 if it fitted):\n{stderr}"
            )),
        }
        let stray = stray_lines(&stderr);
        if !stray.is_empty() {
            rep.problem(format!("{ctx}: unexpected output: {stray:?}"));
        }
        let temps = temps_under(dst.root());
        temps_total += temps.len() as u64;
        if !temps.is_empty() {
            rep.problem(format!(
                "{ctx}: temporaries left after a full-disk failure: {temps:?}"
            ));
        }
        // Nothing truncated under a final name: each file is a complete version.
        for rel in files_of(&dst) {
            let (size, mtime) = size_mtime(&dst.meta(&rel));
            match versions.get(&(rel.clone(), size, mtime)) {
                Some(h) if hash_file(&dst.p(&rel)).unwrap() == *h => {}
                Some(_) => {
                    truncated += 1;
                    rep.problem(format!(
                        "{ctx}: {rel:?} claims a source version but its content differs"
                    ));
                }
                None => {
                    truncated += 1;
                    rep.problem(format!(
                        "{ctx}: {rel:?} (size {size}) is no complete version of the source"
                    ));
                }
            }
        }
        // What was complete stays: every file the source still has and the first mirror put in
        // place is still there (in its old or new version).
        for rel in &before {
            if src.exists(rel) && !dst.exists(rel) {
                lost += 1;
                rep.problem(format!(
                    "{ctx}: {rel:?} was complete before the failed run and is gone"
                ));
            }
        }
        // Space back: the rerun completes.
        let _ = fs::remove_file(&filler);
        let _ = fs::remove_dir_all(&filler_inodes);
        converge(
            &mut rep,
            || run(args("mirror", &["-q"], src.root(), dst.root())),
            src.root(),
            dst.root(),
            &format!("{ctx}: rerun with space"),
        );
        eprintln!(
            "[full_disk] {ctx}: by {}, fsync {fsync}, exit {:?}",
            if by_inodes { "inodes" } else { "blocks" },
            a.get_output().status.code()
        );
    }
    rep.runs = runs;
    rep.set("enospc_runs", enospc_runs);
    rep.set("runs_that_fitted", fit_runs);
    rep.set("truncated_final_files", truncated);
    rep.set("complete_files_lost", lost);
    rep.set("temporaries_left", temps_total);
    rep.set("errors_not_naming_the_entry", naming_temp);
    rep.finish();
}

/// Each per-entry failure must name the entry the user knows (its final name), not the hidden
/// temporary it was being written to.
#[test]
fn failure_messages_name_the_file() {
    let mut rep = Report::new("failure_messages");
    let sb = Sandbox::new();
    // Full disk while writing one big file.
    {
        let lfs = LoopFs::new(32, 512);
        let src = sb.tree("enospc-src");
        let dst = Tree::at(lfs.mnt().join("dst"));
        src.file("data/big.bin", noise(12 << 20, 1))
            .file("data/small.txt", b"fits");
        fill_blocks(&lfs, &lfs.mnt().join("filler"), 4 << 20);
        let a = run(args("mirror", &["-q"], src.root(), dst.root()));
        rep.runs += 1;
        expect_code(&a, 1);
        let err = stderr_of(&a);
        let lines: Vec<_> = error_lines(&err)
            .into_iter()
            .filter(|l| l.contains("No space"))
            .collect();
        if lines.is_empty() {
            rep.problem(format!("no full-disk error: {err}"));
        }
        for l in lines {
            if !l.contains("data/big.bin") || l.contains(".~blit-") {
                rep.problem(format!("full disk: error does not name data/big.bin: {l}"));
            }
        }
    }
    // A destination folder without write permission.
    {
        sb.tree("ro-src")
            .file("ro/new.txt", b"n")
            .file("ok.txt", b"ok");
        sb.tree("ro-dst").dir("ro");
        sb.give_to_nobody();
        sb.tree("ro-dst").chown("ro", 0, 0).chmod("ro", 0o555);
        let a = run_as_nobody(
            &sb,
            args("copy", &["-q"], &sb.join("ro-src"), &sb.join("ro-dst")),
        );
        rep.runs += 1;
        expect_code(&a, 1);
        let err = stderr_of(&a);
        let named = error_lines(&err)
            .into_iter()
            .any(|l| l.contains("ro/new.txt") && !l.contains(".~blit-"));
        if !named {
            rep.problem(format!(
                "read-only folder: no error names ro/new.txt: {err}"
            ));
        }
    }
    rep.finish();
}

// =============================================================================================
// 3. Source changing during the copy
// =============================================================================================

/// One change the mutator makes to the big source file, each a single system call (a rename for
/// a replacement), so that between two changes the file is a complete version.
#[derive(Clone, Debug)]
enum Op {
    Pwrite { off: u64, len: usize, seed: u64 },
    Append { len: usize, seed: u64 },
    Truncate { len: u64 },
    Replace { len: usize, seed: u64 },
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pace {
    /// One change.
    Once,
    /// A few changes, some milliseconds apart.
    Few,
    /// A change every millisecond or so until blit exits: every attempt sees a change.
    Storm,
    /// The file is deleted (and maybe recreated).
    Delete,
}

/// What the mutator did: the changes, and after each the file's size and mtime (`None` when it
/// did not exist). `states[0]` is the file before any change.
#[derive(Debug, Default)]
struct Mutations {
    ops: Vec<Op>,
    states: Vec<Option<(u64, (i64, i64))>>,
}

fn state_of(p: &Path) -> Option<(u64, (i64, i64))> {
    fs::symlink_metadata(p).ok().map(|m| size_mtime(&m))
}

/// Applies one change. A replacement already written aside (`staged`) makes it a bare rename.
fn apply_op(path: &Path, stage: &Path, op: &Op, staged: Option<PathBuf>) {
    match op {
        Op::Pwrite { off, len, seed } => {
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.write_all_at(&noise(*len, *seed), *off).unwrap();
        }
        Op::Append { len, seed } => {
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            let end = f.metadata().unwrap().len();
            f.write_all_at(&noise(*len, *seed), end).unwrap();
        }
        Op::Truncate { len } => {
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(*len)
                .unwrap();
        }
        Op::Replace { len, seed } => {
            let tmp = staged.unwrap_or_else(|| {
                let tmp = stage.join("next");
                fs::write(&tmp, noise(*len, *seed)).unwrap();
                tmp
            });
            fs::rename(&tmp, path).unwrap();
        }
        Op::Delete => fs::remove_file(path).unwrap(),
    }
}

/// The content after the first `k` changes, replayed from the content before them.
fn content_after(base: &[u8], ops: &[Op], k: usize) -> Option<Vec<u8>> {
    let mut v = Some(base.to_vec());
    for op in &ops[..k] {
        v = match (op, v) {
            (Op::Pwrite { off, len, seed }, Some(mut b)) => {
                let o = *off as usize;
                b[o..o + len].copy_from_slice(&noise(*len, *seed));
                Some(b)
            }
            (Op::Append { len, seed }, Some(mut b)) => {
                b.extend_from_slice(&noise(*len, *seed));
                Some(b)
            }
            (Op::Truncate { len }, Some(mut b)) => {
                b.truncate(*len as usize);
                Some(b)
            }
            (Op::Replace { len, seed }, _) => Some(noise(*len, *seed)),
            (Op::Delete, _) => None,
            (op, None) => panic!("test bug: {op:?} on a deleted file"),
        };
    }
    v
}

/// A random change that keeps the file's length within sensible bounds.
fn random_op(rng: &mut Rng, len: u64, base_len: u64) -> Op {
    const PAGE: u64 = 4096;
    match rng.below(6) {
        0..=2 if len > 64 << 10 => Op::Pwrite {
            off: rng.below(len - (64 << 10) + 1) & !(PAGE - 1),
            len: 64 << 10,
            seed: rng.next_u64(),
        },
        3 if len < base_len * 2 => Op::Append {
            len: rng.range(64 << 10, MIB) as usize,
            seed: rng.next_u64(),
        },
        4 if len > base_len / 2 => Op::Truncate {
            len: len - rng.range(64 << 10, MIB).min(len / 4),
        },
        _ => Op::Replace {
            len: rng.range(base_len * 3 / 4, base_len * 5 / 4) as usize,
            seed: rng.next_u64(),
        },
    }
}

/// A replacement file written aside before the run: (length, seed, where).
type Staged = (usize, u64, PathBuf);

/// Writes `n` replacements for a file of about `len` bytes aside in `stage`, so that a
/// replacement during the run is a bare rename (writing hundreds of MiB would take longer than
/// the copy it is meant to disturb).
fn stage_replacements(stage: &Path, len: u64, n: usize, rng: &mut Rng) -> Vec<Staged> {
    (0..n)
        .map(|i| {
            let l = rng.range(len * 3 / 4, len * 5 / 4) as usize;
            let seed = rng.next_u64();
            let p = stage.join(format!("staged-{i}"));
            fs::write(&p, noise(l, seed)).unwrap();
            (l, seed, p)
        })
        .collect()
}

/// Turns a replacement into one of the staged ones, if any is left.
fn use_staged(op: Op, staged: &mut Vec<Staged>) -> (Op, Option<PathBuf>) {
    match op {
        Op::Replace { .. } => match staged.pop() {
            Some((len, seed, p)) => (Op::Replace { len, seed }, Some(p)),
            None => (op, None),
        },
        other => (other, None),
    }
}

/// True when process `pid` has `file` open.
fn has_open(pid: u32, file: &Path) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    rd.flatten()
        .any(|e| fs::read_link(e.path()).is_ok_and(|t| t == file))
}

/// The mutator thread: waits until blit has the big file open (or a set delay), then changes
/// it as `kind` says, until `stop`.
#[allow(clippy::too_many_arguments)]
fn mutate(
    path: PathBuf,
    pid: u32,
    stage: PathBuf,
    mut staged: Vec<Staged>,
    kind: Pace,
    delay: Option<Duration>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> Mutations {
    let mut m = Mutations {
        ops: Vec::new(),
        states: vec![state_of(&path)],
    };
    let t0 = Instant::now();
    // The trigger: blit holds the file open, i.e. is reading it. (Watching for its temporary
    // would not do: a new file is written unnamed until complete.)
    let real = fs::canonicalize(&path).unwrap();
    loop {
        if stop.load(Ordering::Relaxed) {
            return m;
        }
        let go = match delay {
            Some(d) => t0.elapsed() >= d,
            None => has_open(pid, &real),
        };
        if go {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let base_len = m.states[0].map_or(MIB, |s| s.0);
    let n = match kind {
        Pace::Once => 1,
        Pace::Few => rng.range(2, 5),
        Pace::Storm => 5000,
        Pace::Delete => 1,
    };
    for i in 0..n {
        if i > 0 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let pause = match kind {
                Pace::Storm => Duration::from_micros(rng.range(200, 1000)),
                _ => Duration::from_millis(rng.range(0, 15)),
            };
            std::thread::sleep(pause);
        }
        let cur = m.states.last().unwrap().map_or(0, |s| s.0);
        let op = match kind {
            Pace::Delete => Op::Delete,
            Pace::Storm => Op::Pwrite {
                off: rng.below(cur - (64 << 10) + 1) & !4095,
                len: 64 << 10,
                seed: rng.next_u64(),
            },
            _ => random_op(&mut rng, cur, base_len),
        };
        let (op, pre) = use_staged(op, &mut staged);
        apply_op(&path, &stage, &op, pre);
        m.ops.push(op);
        m.states.push(state_of(&path));
    }
    if kind == Pace::Delete && rng.chance(0.5) {
        std::thread::sleep(Duration::from_millis(rng.range(0, 10)));
        let op = Op::Replace {
            len: rng.range(base_len / 2, base_len) as usize,
            seed: rng.next_u64(),
        };
        let (op, pre) = use_staged(op, &mut staged);
        apply_op(&path, &stage, &op, pre);
        m.ops.push(op);
        m.states.push(state_of(&path));
    }
    m
}

/// The changing file of `source_changes_during_copy`, inside a folder so that a run into an
/// empty destination makes that folder.
const BIG: &str = "in/big.bin";

#[test]
fn source_changes_during_copy() {
    let mut rep = Report::new("source_changes_during_copy");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let stage = sb.join("stage");
    fs::create_dir_all(&stage).unwrap();
    let big_len = pick(48, 256) * MIB;
    for i in 0..4 {
        src.file(format!("s/{i}"), noise(1000 + i, i as u64));
    }
    // How long an undisturbed mirror of the file takes, to place changes at random moments in it.
    src.file(BIG, noise(big_len as usize, rng.next_u64()));
    let mut t_run = f64::MAX;
    for _ in 0..2 {
        if dst.exists("") {
            dst.remove("");
        }
        let t = Instant::now();
        expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
        t_run = t_run.min(t.elapsed().as_secs_f64());
    }
    rep.set("undisturbed_run_ms", (t_run * 1000.0) as u64);
    let runs = pick(10, 40);
    let kinds = [Pace::Once, Pace::Few, Pace::Storm, Pace::Delete, Pace::Few];
    let mut outcome: HashMap<&'static str, u64> = HashMap::new();
    let (mut torn, mut storms, mut storms_reported) = (0u64, 0u64, 0u64);
    for run_no in 0..runs {
        let ctx = format!("run {run_no}");
        // The file as it is now (or a new one) is this run's first version.
        let drifted =
            !src.exists(BIG) || !(big_len / 2..=big_len * 2).contains(&src.meta(BIG).len());
        if drifted {
            src.file(BIG, noise(big_len as usize, rng.next_u64()));
        }
        stamp(&src, BIG, &mut rng);
        let base = src.read(BIG);
        // Half the runs start without the file in the destination, half from the last run's
        // copy (an update goes through a named temporary); that copy, a complete version
        // checked in its own run, is the other acceptable outcome. Without it, either the
        // destination is empty (the file is written under its name in a folder still under a
        // temporary name) or only the file is gone (written unnamed, linked in).
        let previous = if dst.exists(BIG) && rng.chance(0.5) {
            let m = dst.meta(BIG);
            Some((size_mtime(&m), hash_file(&dst.p(BIG)).unwrap()))
        } else {
            if dst.exists(BIG) && rng.chance(0.5) {
                dst.remove(BIG);
            } else if dst.exists("") {
                dst.remove("");
            }
            None
        };
        let kind = kinds[run_no as usize % kinds.len()];
        // Half the runs wait for the copy to start; the others change the file at a random
        // moment, before the walk or between the walk and the copy included.
        let delay = (run_no % 2 == 1).then(|| Duration::from_secs_f64(rng.unit() * t_run));
        let stop = Arc::new(AtomicBool::new(false));
        let staged = match kind {
            Pace::Storm => Vec::new(),
            _ => stage_replacements(&stage, big_len, pick(1, 2), &mut rng),
        };
        let child = spawn(args("mirror", &["-q"], src.root(), dst.root()));
        let mutator = {
            let (p, pid, s, st, r) = (
                src.p(BIG),
                child.id(),
                stage.clone(),
                Arc::clone(&stop),
                Rng::new(rng.next_u64()),
            );
            std::thread::spawn(move || mutate(p, pid, s, staged, kind, delay, r, st))
        };
        let a = assert_cmd::assert::Assert::new(child.wait_with_output().unwrap());
        stop.store(true, Ordering::Relaxed);
        let muts = mutator.join().unwrap();
        let err = stderr_of(&a);
        let code = code_or_problem(&mut rep, &a, &ctx);
        if kind == Pace::Storm {
            storms += 1;
        }
        let temps = temps_under(dst.root());
        if !temps.is_empty() {
            rep.problem(format!("{ctx}: temporaries left: {temps:?}"));
        }
        if code == Some(1) && !names(&err, "big.bin") {
            rep.problem(format!("{ctx}: exit 1 but no error names big.bin:\n{err}"));
        }
        if !matches!(code, Some(0) | Some(1)) {
            rep.problem(format!("{ctx}: exit {code:?}:\n{err}"));
        }
        let verdict: &'static str = match fs::symlink_metadata(dst.p(BIG)) {
            Ok(m) => {
                let claim = size_mtime(&m);
                let got = dst.read(BIG);
                let matches: Vec<usize> = (0..muts.states.len())
                    .filter(|&k| muts.states[k] == Some(claim))
                    .collect();
                if matches.is_empty() && previous.is_some_and(|(c, _)| c == claim) {
                    if previous.is_some_and(|(_, h)| h != hash_bytes(&got)) {
                        torn += 1;
                        rep.problem(format!("{ctx}: the previous copy of big.bin was altered"));
                    } else if code != Some(1) && !muts.states.iter().any(Option::is_none) {
                        // Kept without an error: only right if the file vanished meanwhile (a
                        // name listed but gone before its stat is left alone).
                        rep.problem(format!(
                            "{ctx}: exit {code:?} but big.bin was not updated in the destination"
                        ));
                    } else if kind == Pace::Storm && err.contains("source changed") {
                        storms_reported += 1;
                    }
                    "reported_kept_previous_copy"
                } else if matches.is_empty() {
                    torn += 1;
                    rep.problem(format!(
                        "{ctx} ({kind:?}): big.bin in the destination (size {}) matches no \
                         version of the source; changes: {:?}",
                        claim.0, muts.ops
                    ));
                    "torn"
                } else if matches
                    .iter()
                    .any(|&k| content_after(&base, &muts.ops, k).as_deref() == Some(&got[..]))
                {
                    if code == Some(1) && err.contains("source changed") {
                        rep.problem(format!(
                            "{ctx}: reported 'source changed' yet put a copy in place"
                        ));
                    }
                    if *matches.last().unwrap() == muts.states.len() - 1 {
                        "copied_latest_version"
                    } else {
                        "copied_earlier_version"
                    }
                } else {
                    torn += 1;
                    rep.problem(format!(
                        "{ctx} ({kind:?}): torn copy recorded as done: big.bin has the size and \
                         mtime of a source version but other content; changes: {:?}",
                        muts.ops
                    ));
                    "torn"
                }
            }
            Err(_) => {
                let deleted = muts.states.iter().any(Option::is_none);
                if code == Some(1) && err.contains("source changed") {
                    if kind == Pace::Storm {
                        storms_reported += 1;
                    }
                    "reported_source_changed"
                } else if code == Some(1) || deleted {
                    "reported_or_vanished"
                } else {
                    rep.problem(format!(
                        "{ctx}: exit 0 but big.bin is missing from the destination"
                    ));
                    "missing"
                }
            }
        };
        *outcome.entry(verdict).or_default() += 1;
        eprintln!(
            "[source_changes_during_copy] {ctx}: {kind:?}, {} changes, exit {code:?}, {verdict}",
            muts.ops.len()
        );
    }
    if storms > 0 && storms_reported == 0 {
        rep.problem(format!("{storms} runs changed the file every millisecond, none was reported as 'source changed'"));
    }
    rep.runs = runs;
    rep.set("torn_copies", torn);
    for k in [
        "copied_latest_version",
        "copied_earlier_version",
        "reported_source_changed",
        "reported_or_vanished",
        "reported_kept_previous_copy",
    ] {
        rep.set(k, outcome.get(k).copied().unwrap_or(0));
    }
    rep.set("storms_reported", format!("{storms_reported}/{storms}"));
    rep.finish();
}

/// Source folders lose and regain their permissions while an unprivileged mirror walks them:
/// whatever listing fails, nothing the source has is ever deleted from the destination.
#[test]
fn listing_fails_mid_walk() {
    let mut rep = Report::new("listing_fails_mid_walk");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let folders = pick(60, 300);
    for i in 0..folders {
        for j in 0..12 {
            src.file(
                format!("f{i:03}/x{j:02}"),
                noise(rng.range(0, 3000) as usize, rng.next_u64()),
            );
        }
        src.file(format!("f{i:03}/sub/y"), b"y");
    }
    sb.give_to_nobody();
    expect_code(
        &run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        0,
    );
    let dirs: Vec<PathBuf> = src
        .rel_paths()
        .into_iter()
        .filter(|r| !r.as_os_str().is_empty() && src.meta(r).is_dir())
        .collect();
    let runs = pick(4, 20);
    let (mut lost, mut failed_runs, mut toggles_total) = (0u64, 0u64, 0u64);
    for run_no in 0..runs {
        let ctx = format!("run {run_no}");
        // New work, and stale entries a mirror may delete where it could list.
        for _ in 0..20 {
            let d = rng.choose(&dirs).clone();
            let rel = d.join(format!("new-{run_no}-{}", rng.below(1000)));
            src.file(&rel, b"new").chown(&rel, NOBODY, NOBODY);
            let stale = d.join(format!("stale-{run_no}-{}", rng.below(1000)));
            if dst.exists(&d) {
                dst.file(&stale, b"stale").chown(&stale, NOBODY, NOBODY);
            }
        }
        let before = dst.listing();
        let in_src = src.listing();
        let stop = Arc::new(AtomicBool::new(false));
        let toggles = Arc::new(AtomicU64::new(0));
        let toggler = {
            let (stop, toggles, src, dirs) = (
                Arc::clone(&stop),
                Arc::clone(&toggles),
                src.clone(),
                dirs.clone(),
            );
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let d = rng.choose(&dirs);
                    let p = src.p(d);
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o000));
                    std::thread::sleep(Duration::from_micros(rng.range(0, 400)));
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
                    toggles.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
        stop.store(true, Ordering::Relaxed);
        toggler.join().unwrap();
        for d in &dirs {
            src.chmod(d, 0o755);
        }
        toggles_total += toggles.load(Ordering::Relaxed);
        let after = dst.listing();
        let gone: Vec<_> = before
            .intersection(&in_src)
            .filter(|e| !after.contains(*e))
            .collect();
        lost += gone.len() as u64;
        if !gone.is_empty() {
            rep.problem(format!(
                "{ctx}: deleted from the destination although in the source: {gone:?}"
            ));
        }
        let err = stderr_of(&a);
        match code_or_problem(&mut rep, &a, &ctx) {
            Some(0) => {
                if after != in_src {
                    rep.problem(format!(
                        "{ctx}: exit 0 but the destination is not a replica"
                    ));
                }
            }
            Some(1) => {
                failed_runs += 1;
                if error_lines(&err).is_empty() {
                    rep.problem(format!("{ctx}: exit 1 without an error line:\n{err}"));
                }
            }
            c => rep.problem(format!("{ctx}: exit {c:?}:\n{err}")),
        }
        // A folder seen as 000 is replicated as 000: the next run must cope with that too.
    }
    converge(
        &mut rep,
        || run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "final run with permissions restored",
    );
    rep.runs = runs;
    rep.set("permission_toggles", toggles_total);
    rep.set("runs_with_failed_listings", failed_runs);
    rep.set("entries_wrongly_deleted", lost);
    rep.finish();
}

// =============================================================================================
// 4. Permissions and odd entries
// =============================================================================================

/// True when `rel` or one of its ancestors is in `set`.
fn under_any(rel: &Path, set: &[PathBuf]) -> bool {
    set.iter().any(|s| rel.starts_with(s))
}

/// Unreadable files and folders, as an unprivileged user: each fails alone, with an error naming
/// it; everything else is mirrored; nothing beneath an unreadable folder is deleted.
#[test]
fn unreadable_source_entries() {
    let mut rep = Report::new("unreadable_source_entries");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let nd = pick(20, 100);
    for i in 0..nd {
        for j in 0..10 {
            src.file(
                format!("d{i:03}/f{j}"),
                noise(rng.range(0, 5000) as usize, rng.next_u64()),
            );
        }
        for j in 0..3 {
            src.file(format!("d{i:03}/inner/g{j}"), noise(100, rng.next_u64()));
        }
    }
    sb.give_to_nobody();
    expect_code(
        &run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        0,
    );
    // Changes the run must copy, some of them to files that will be locked.
    for rel in files_of(&src) {
        if rng.chance(0.2) {
            src.file(&rel, noise(rng.range(0, 5000) as usize, rng.next_u64()));
            stamp(&src, &rel, &mut rng);
        }
    }
    let dirs: Vec<PathBuf> = (0..nd).map(|i| PathBuf::from(format!("d{i:03}"))).collect();
    // Folders: no access at all, read without search (names but no stat), search without read.
    let mut locked_dirs: Vec<(PathBuf, u32)> = Vec::new();
    for (k, mode) in [0o000, 0o400, 0o100, 0o000].into_iter().enumerate() {
        let d = if k == 3 {
            dirs[1].join("inner")
        } else {
            dirs[2 + k * (nd / 5)].clone()
        };
        locked_dirs.push((d, mode));
    }
    let locked_dir_paths: Vec<PathBuf> = locked_dirs.iter().map(|(d, _)| d.clone()).collect();
    // Locked files are changed too, so the run must read them (an unchanged file is never
    // opened, and an empty one may be made from its lstat alone).
    let mut locked_files = Vec::new();
    for rel in files_of(&src) {
        if !under_any(&rel, &locked_dir_paths) && rng.chance(0.05) {
            src.file(&rel, noise(rng.range(1, 5000) as usize, rng.next_u64()));
            stamp(&src, &rel, &mut rng);
            locked_files.push(rel);
        }
    }
    // Stale entries in the destination: beneath locked folders they must survive.
    for (i, d) in dirs.iter().enumerate().take(nd) {
        if i % 3 == 0 || locked_dir_paths.contains(d) {
            dst.file(d.join("stale"), b"stale")
                .chown(d.join("stale"), NOBODY, NOBODY);
        }
    }
    dst.file(dirs[1].join("inner/stale"), b"stale").chown(
        dirs[1].join("inner/stale"),
        NOBODY,
        NOBODY,
    );
    let dst_before = snapshot_into(&sb, dst.root(), "dst-before");
    let before = Tree::at(&dst_before);
    for rel in &locked_files {
        src.chmod(rel, 0o000);
    }
    for (d, mode) in &locked_dirs {
        src.chmod(d, *mode);
    }
    let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
    let err = stderr_of(&a);
    rep.runs += 1;
    if code_or_problem(&mut rep, &a, "locked run") != Some(1) {
        rep.problem(format!(
            "exit {:?}, want 1:\n{err}",
            a.get_output().status.code()
        ));
    }
    for rel in &locked_files {
        if !names(&err, &rel.to_string_lossy()) {
            rep.problem(format!("no error names the unreadable file {rel:?}"));
        }
        if !same_content(&before.p(rel), &dst.p(rel)) {
            rep.problem(format!(
                "{rel:?}: the destination's copy changed although the source could not be read"
            ));
        }
    }
    for (d, mode) in &locked_dirs {
        if !names(&err, &d.to_string_lossy()) {
            rep.problem(format!(
                "no error names the unreadable folder {d:?} (mode {mode:o})"
            ));
        }
        // Everything the destination had beneath it is still there, unchanged.
        for rel in before.rel_paths() {
            // A folder that could be listed but not searched (0400) gave its names: an entry
            // directly in it that the source lacks may rightly go.
            let may_go = *mode == 0o400 && rel.parent() == Some(d.as_path()) && !src.exists(&rel);
            if rel.starts_with(d) && before.meta(&rel).is_file() && !may_go {
                if !dst.exists(&rel) {
                    rep.problem(format!("{rel:?} deleted beneath unreadable folder {d:?}"));
                } else if !same_content(&before.p(&rel), &dst.p(&rel)) {
                    rep.problem(format!("{rel:?} changed beneath unreadable folder {d:?}"));
                }
            }
        }
    }
    // Everything readable was mirrored exactly.
    for (d, _) in &locked_dirs {
        src.chmod(d, 0o755);
    }
    let mut mirrored = 0;
    for rel in files_of(&src) {
        if under_any(&rel, &locked_dir_paths) || locked_files.contains(&rel) {
            continue;
        }
        mirrored += 1;
        if let Err(e) =
            caught(|| assert_entry_equal(&src.p(&rel), &dst.p(&rel), &rel.to_string_lossy()))
        {
            rep.problem(format!("readable entry not mirrored: {e}"));
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        if i % 3 == 0 && !locked_dir_paths.contains(d) && dst.exists(d.join("stale")) {
            rep.problem(format!(
                "{:?} not deleted although its folder was readable",
                d.join("stale")
            ));
        }
    }
    if !temps_under(dst.root()).is_empty() {
        rep.problem(format!("temporaries left: {:?}", temps_under(dst.root())));
    }
    // Unlocked, everything converges.
    for rel in &locked_files {
        src.chmod(rel, 0o644);
    }
    rep.runs += 1;
    converge(
        &mut rep,
        || run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "run after unlocking",
    );
    rep.set("unreadable_files", locked_files.len());
    rep.set("unreadable_folders", locked_dirs.len());
    rep.set("files_mirrored_meanwhile", mirrored);
    rep.finish();
}

/// Destination folders the user may not write to (or even enter): the entries inside fail one by
/// one, nothing in them changes, and the rest of the tree is mirrored.
#[test]
fn readonly_destination_folders() {
    let mut rep = Report::new("readonly_destination_folders");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    for i in 0..50 {
        src.file(format!("open/f{i:02}"), noise(2000 + i, i as u64));
    }
    src.file("ro/changed", b"old")
        .file("ro/same", b"same")
        .file("closed/y", b"y");
    sb.give_to_nobody();
    expect_code(
        &run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        0,
    );
    src.file("ro/changed", b"new content")
        .file("ro/new1", b"n1")
        .file("ro/sub/new2", b"n2")
        .file("closed/new3", b"n3")
        .file("open/added", b"added");
    dst.file("ro/stale", b"stale")
        .file("closed/stale", b"stale");
    for i in 0..50 {
        if i % 4 == 0 {
            src.file(format!("open/f{i:02}"), noise(3000, 100 + i as u64));
        }
    }
    sb.give_to_nobody();
    let before = Tree::at(snapshot_into(&sb, dst.root(), "dst-before"));
    // Owned by root, so nobody cannot lift the restrictions.
    dst.chown("ro", 0, 0)
        .chmod("ro", 0o555)
        .chown("closed", 0, 0)
        .chmod("closed", 0o000);
    let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
    rep.runs += 1;
    let err = stderr_of(&a);
    if code_or_problem(&mut rep, &a, "restricted run") != Some(1) {
        rep.problem(format!(
            "exit {:?}, want 1:\n{err}",
            a.get_output().status.code()
        ));
    }
    for name in ["ro", "closed"] {
        if !names(&err, &dst.p(name).to_string_lossy()) {
            rep.problem(format!(
                "no error names the destination folder {name}:\n{err}"
            ));
        }
    }
    // Nothing inside them changed.
    for rel in [
        "ro/changed",
        "ro/same",
        "ro/stale",
        "closed/y",
        "closed/stale",
    ] {
        if !dst.exists(rel) {
            rep.problem(format!(
                "{rel} was removed from a folder blit may not write"
            ));
        } else if !same_content(&before.p(rel), &dst.p(rel)) {
            rep.problem(format!("{rel} changed in a folder blit may not write"));
        }
    }
    for rel in ["ro/new1", "ro/sub", "closed/new3"] {
        if dst.exists(rel) {
            rep.problem(format!("{rel} appeared in a folder blit may not write"));
        }
    }
    // The rest is mirrored.
    for rel in files_of(&src).into_iter().filter(|r| r.starts_with("open")) {
        if let Err(e) =
            caught(|| assert_entry_equal(&src.p(&rel), &dst.p(&rel), &rel.to_string_lossy()))
        {
            rep.problem(format!("not mirrored: {e}"));
        }
    }
    if !temps_under(dst.root()).is_empty() {
        rep.problem(format!("temporaries left: {:?}", temps_under(dst.root())));
    }

    // Permissions back: it converges.
    dst.chown("ro", NOBODY, NOBODY)
        .chmod("ro", 0o755)
        .chown("closed", NOBODY, NOBODY)
        .chmod("closed", 0o755);
    rep.runs += 1;
    converge(
        &mut rep,
        || run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "run with permissions back",
    );
    rep.finish();
}

/// An unprivileged user mirrors a tree holding a read-only folder (0555) and a folder it had
/// locked (000) for a while. The destination folders get those modes too, as they should; the
/// user then changes the source, and later mirrors must still bring the destination up to date.
/// blit owns those destination folders, so it can give itself access while it works in them (as
/// rsync does) and put the replicated mode back afterwards.
#[test]
fn unprivileged_mirror_updates_restricted_folders() {
    let mut rep = Report::new("restricted_folder_updates");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    src.file("ro/a", b"a")
        .file("ro/c", b"c")
        .file("locked/x", b"x")
        .file("top", b"t");
    sb.give_to_nobody();
    src.chmod("ro", 0o555);
    rep.runs += 1;
    converge(
        &mut rep,
        || run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "first mirror",
    );
    // The user edits inside the read-only folder (lifting and restoring its mode) and locks the
    // other folder for one run.
    src.chmod("ro", 0o755)
        .file("ro/a", b"a, edited")
        .file("ro/b", b"new")
        .remove("ro/c");
    src.chown("ro/a", NOBODY, NOBODY)
        .chown("ro/b", NOBODY, NOBODY)
        .chmod("ro", 0o555);
    src.chmod("locked", 0o000);
    let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
    rep.runs += 1;
    if code_or_problem(&mut rep, &a, "run with a locked folder") != Some(1) {
        rep.problem(format!(
            "run with a locked folder: exit {:?}, want 1",
            a.get_output().status.code()
        ));
    }
    if !same_content(&src.p("ro/a"), &dst.p("ro/a")) || !dst.exists("ro/b") || dst.exists("ro/c") {
        rep.problem(format!(
            "changes inside the read-only folder not mirrored:
{}",
            stderr_of(&a)
        ));
    }
    src.chmod("locked", 0o755);
    rep.runs += 1;
    converge(
        &mut rep,
        || run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "run with the folder unlocked",
    );
    rep.finish();
}

/// Names of exactly 255 bytes (the Linux limit), in several encodings, as files, folders,
/// symlinks and hard links, copied, updated and deleted.
#[test]
fn names_of_255_bytes() {
    let mut rep = Report::new("names_of_255_bytes");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let names: Vec<Vec<u8>> = vec![
        vec![b'a'; 255],
        ["é".repeat(127), "x".into()].concat().into_bytes(),
        "€".repeat(85).into_bytes(),
        ["😀".repeat(63), "abc".into()].concat().into_bytes(),
        vec![0xe9; 255],
        [b"new\nline, tab\t and \\ ".as_slice(), &[b'x'; 234]].concat(),
    ];
    for n in &names {
        assert_eq!(n.len(), 255);
    }
    let dir = bpath(&[b'D'; 255]);
    let nested = dir.join(bpath(&[b'E'; 255])).join(bpath(&[b'F'; 255]));
    for (i, n) in names.iter().enumerate() {
        src.file(dir.join(bpath(n)), noise(100 + i, i as u64));
        src.file(nested.join(bpath(n)), noise(200 + i, 10 + i as u64));
    }
    src.file(bpath(&names[0]), b"top");
    src.symlink(dir.join(bpath(&[b'L'; 255])), bpath(&names[1]));
    src.hardlink(dir.join(bpath(&[b'H'; 255])), dir.join(bpath(&names[2])));
    let check = |rep: &mut Report, what: &str| {
        rep.runs += 1;
        converge(
            rep,
            || run(args("mirror", &["-q"], src.root(), dst.root())),
            src.root(),
            dst.root(),
            what,
        );
    };
    check(&mut rep, "first mirror");
    let mut rng = Rng::new(7);
    for n in &names {
        let rel = nested.join(bpath(n));
        src.file(&rel, noise(300, rng.next_u64()));
        stamp(&src, &rel, &mut rng);
    }
    check(&mut rep, "update");
    src.remove(bpath(&names[0])).remove(&nested);
    check(&mut rep, "deletions");
    rep.set("name_kinds", names.len());
    rep.finish();
}

/// A tree deeper than PATH_MAX: every entry is copied, updated and deleted like any other.
#[test]
fn deeper_than_path_max() {
    let mut rep = Report::new("deeper_than_path_max");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    src.mkroot();
    // 42 levels of 120-byte names: 5,082 bytes below the root (full size: 84 levels, 10,164).
    let comps: Vec<OsString> = (0..pick(42, 84))
        .map(|i| format!("{i:02}-{}", "d".repeat(117)).into())
        .collect();
    let depth: usize = comps.iter().map(|c| c.len() + 1).sum();
    assert!(depth > 5000);
    let mut d = DirFd::open(src.root()).unwrap();
    for (i, c) in comps.iter().enumerate() {
        d = d.mkdir(c);
        if i % 10 == 9 {
            fs::write(d.p("file.txt"), format!("depth {i}")).unwrap();
        }
    }
    fs::write(d.p("deep.bin"), noise(200_000, 42)).unwrap();
    xattr::set(d.p("deep.bin"), "user.depth", b"42").unwrap();
    std::os::unix::fs::symlink("deep.bin", d.p("link")).unwrap();
    fs::write(d.p(OsStr::from_bytes(&[b'n'; 255])), b"long name, deep").unwrap();
    fs::set_permissions(d.p("deep.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    deep::set_mtime_in(&d, OsStr::new("deep.bin"), 1_700_000_000, 123);
    drop(d);

    let mirror_and_compare = |rep: &mut Report, what: &str| {
        rep.runs += 1;
        let a = run(args("mirror", &["-q"], src.root(), dst.root()));
        if code_or_problem(rep, &a, what) != Some(0) {
            rep.problem(format!(
                "{what}: exit {:?}; stderr:\n{}",
                a.get_output().status.code(),
                stderr_of(&a).chars().take(2000).collect::<String>()
            ));
        }
        if !dst.exists("") {
            rep.problem(format!("{what}: destination not created"));
            return;
        }
        let (diffs, n) = deep::compare_deep(src.root(), dst.root());
        for x in diffs.iter().take(5) {
            rep.problem(format!("{what}: {x}"));
        }
        if diffs.len() > 5 {
            rep.problem(format!("{what}: ... {} differences in all", diffs.len()));
        }
        rep.set("entries_compared", n);
    };
    mirror_and_compare(&mut rep, "first mirror");
    // An update and a deletion at the bottom.
    let d = deep::mkdir_chain(src.root(), &comps);
    fs::write(d.p("deep.bin"), noise(250_000, 43)).unwrap();
    fs::remove_file(d.p("link")).unwrap();
    drop(d);
    mirror_and_compare(&mut rep, "update at the bottom");
    rep.set("depth_bytes", depth);
    rep.finish();
}

/// Compares one entry of two trees on type, mode, owner, size, mtime and (small files) content.
fn small_entry_differs(a: &Tree, b: &Tree, rel: &Path) -> Option<String> {
    let ma = a.meta(rel);
    let Ok(mb) = fs::symlink_metadata(b.p(rel)) else {
        return Some("missing".into());
    };
    // A folder's size is the filesystem's business, not a property a copy keeps.
    let len = |m: &fs::Metadata| if m.is_dir() { 0 } else { m.len() };
    let fa = (
        ma.mode(),
        ma.uid(),
        ma.gid(),
        len(&ma),
        ma.file_type().is_dir(),
    );
    let fb = (
        mb.mode(),
        mb.uid(),
        mb.gid(),
        len(&mb),
        mb.file_type().is_dir(),
    );
    if fa != fb {
        return Some(format!("(mode, uid, gid, size, folder) {fa:?} vs {fb:?}"));
    }
    if ma.is_file() {
        if size_mtime(&ma) != size_mtime(&mb) {
            return Some("mtime differs".into());
        }
        if fs::read(a.p(rel)).unwrap() != fs::read(b.p(rel)).unwrap() {
            return Some("content differs".into());
        }
    }
    None
}

/// One folder holding a very large number of entries, a few of them unreadable: those fail one by
/// one and everything else is mirrored.
#[test]
fn huge_folder() {
    let mut rep = Report::new("huge_folder");
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    let n: usize = pick(20_000, 1_000_000);
    let t = Instant::now();
    src.dir("many");
    for i in 0..n {
        let p = src.p(format!("many/e{i:07}"));
        if i % 3 == 0 {
            fs::File::create(&p).unwrap();
        } else {
            fs::write(&p, i.to_string()).unwrap();
        }
    }
    for i in 0..3 {
        src.file(format!("many/sub{i}/inside"), b"x");
    }
    sb.give_to_nobody();
    rep.set("build_secs", format!("{:.1}", t.elapsed().as_secs_f64()));
    // Non-empty files (an empty one may be made from its lstat without being opened).
    let locked: Vec<String> = (0..pick(5, 20))
        .map(|k| (k * 7919 + 13) % n)
        .map(|i| format!("many/e{:07}", if i % 3 == 0 { i + 1 } else { i }))
        .collect();
    for rel in &locked {
        src.chmod(rel, 0o000);
    }
    src.chmod("many/sub1", 0o000);

    let t = Instant::now();
    let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
    rep.set(
        "first_mirror_secs",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    rep.runs += 1;
    let err = stderr_of(&a);
    if code_or_problem(&mut rep, &a, "first mirror") != Some(1) {
        rep.problem(format!(
            "exit {:?}, want 1:\n{}",
            a.get_output().status.code(),
            err.chars().take(2000).collect::<String>()
        ));
    }
    for rel in locked.iter().map(String::as_str).chain(["many/sub1"]) {
        if !names(&err, rel) {
            rep.problem(format!("no error names {rel}"));
        }
    }
    if error_lines(&err).len() > locked.len() + 1 {
        rep.problem(format!(
            "{} error lines for {} unreadable entries",
            error_lines(&err).len(),
            locked.len() + 1
        ));
    }
    // Everything else is there, equal.
    let t = Instant::now();
    let skip: HashSet<PathBuf> = locked.iter().map(PathBuf::from).collect();
    let mut checked = 0u64;
    for i in 0..n {
        let rel = PathBuf::from(format!("many/e{i:07}"));
        if skip.contains(&rel) {
            if dst.exists(&rel) {
                rep.problem(format!(
                    "{rel:?} unreadable, yet present in the destination"
                ));
            }
            continue;
        }
        checked += 1;
        if let Some(why) = small_entry_differs(&src, &dst, &rel) {
            rep.problem(format!("{rel:?}: {why}"));
        }
        if rep.problems() > 20 {
            break;
        }
    }
    rep.set("check_secs", format!("{:.1}", t.elapsed().as_secs_f64()));
    // A second run changes nothing and fails the same entries again.
    let t = Instant::now();
    let a = run_as_nobody(&sb, args("mirror", &["--json"], src.root(), dst.root()));
    rep.set(
        "noop_mirror_secs",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    rep.runs += 1;
    let j = json_of(&a);
    let acts = &j["actions"];
    let changed: u64 = ["create", "update", "delete"]
        .iter()
        .map(|k| acts[k]["count"].as_u64().unwrap_or(0))
        .sum();
    if changed != 0 {
        rep.problem(format!("second run changed {changed} entries: {acts}"));
    }
    // Unlocked, it converges.
    for rel in &locked {
        src.chmod(rel, 0o644);
    }
    src.chmod("many/sub1", 0o755);
    rep.runs += 1;
    let t = Instant::now();
    let a = run_as_nobody(&sb, args("mirror", &["-q"], src.root(), dst.root()));
    if code_or_problem(&mut rep, &a, "run after unlocking") != Some(0) {
        rep.problem(format!("run after unlocking: {}", stderr_of(&a)));
    }
    rep.set(
        "last_mirror_secs",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    let t = Instant::now();
    // Entry by entry (assert_trees_equal reads each file through megabyte buffers: too slow
    // for a million entries).
    if src.listing() != dst.listing() {
        rep.problem("listings differ after the run that should converge".to_string());
    } else {
        for rel in src.rel_paths() {
            if let Some(why) = small_entry_differs(&src, &dst, &rel) {
                rep.problem(format!("after unlocking: {rel:?}: {why}"));
                if rep.problems() > 20 {
                    break;
                }
            }
        }
    }
    rep.set(
        "final_check_secs",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    rep.set("entries", n);
    rep.set("checked_equal", checked);
    rep.finish();
}

// =============================================================================================
// 5. Safe traversal
// =============================================================================================

/// Builds a source and a stale destination that make a mirror do every kind of write: create,
/// replace, delete (files and folders), type changes, metadata and xattr updates, links.
fn busy_pair(sb: &Sandbox) -> (Tree, Tree) {
    let (src, dst) = (sb.src(), sb.dst());
    populate_rich(&src);
    for i in 0..40 {
        src.file(format!("many/m{i:02}"), noise(500 + i, i as u64));
    }
    expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
    let mut rng = Rng::new(99);
    // Enough new files that the traced run makes many writes of its own (folders it did not
    // touch are no longer rewritten, so the tree's own size does not make them).
    for i in 0..20 {
        src.file(format!("added/n{i:02}"), noise(300 + i, 100 + i as u64));
    }
    src.file("small.txt", b"changed content")
        .file("added/new.txt", b"new")
        .file("a/b/c/deep2.txt", b"deeper");
    stamp(&src, "small.txt", &mut rng);
    src.chmod("private", 0o640)
        .set_xattr("a/sib.txt", "user.empty", b"now set");
    src.remove("a/b/c/deep.txt")
        .dir("a/b/c/deep.txt")
        .file("a/b/c/deep.txt/inside", b"i");
    dst.file("stale.txt", b"stale")
        .file("stale-dir/x/y", b"y")
        .chmod("many/m01", 0o600)
        .set_xattr("many/m02", "user.extra", b"remove me");
    dst.remove("a/empty-dir")
        .file("a/empty-dir", b"file where a folder belongs");
    dst.remove("sticky").symlink("sticky", "/tmp");
    (src, dst)
}

#[test]
fn strace_writes_are_descriptor_relative() {
    let mut rep = Report::new("strace_descriptor_relative");
    if !strace_available() {
        println!("note: strace is not installed and could not be installed; skipping");
        rep.skip("strace unavailable");
        return;
    }
    let (mut relative, mut proc_fd, mut violations) = (0u64, 0u64, Vec::new());
    // As root, and as an unprivileged user (whose runs take other paths: no chown, unnamed
    // files linked in through /proc).
    for as_nobody in [false, true] {
        let who = if as_nobody { "nobody" } else { "root" };
        let sb = Sandbox::new();
        let (src, dst) = busy_pair(&sb);
        let bin = if as_nobody {
            sb.give_to_nobody();
            sb.nobody_binary()
        } else {
            blit_path()
        };
        let log = sb.join("trace/log");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-ff", "-y", "-s", "4096", "-e", "trace=%file,%desc"]);
        if as_nobody {
            cmd.args(["-u", "nobody"]);
        }
        let out = cmd
            .arg("-o")
            .arg(&log)
            .arg(&bin)
            .args(args("mirror", &["-q"], src.root(), dst.root()))
            .current_dir(sb.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        rep.runs += 1;
        if !out.status.success() {
            rep.problem(format!(
                "traced mirror as {who} failed: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        trees_equal_or_problem(
            &mut rep,
            src.root(),
            dst.root(),
            &format!("traced mirror as {who}"),
        );
        let dst_root = fs::canonicalize(dst.root()).unwrap();
        let mut seen = 0;
        for calls in trace::read_logs(&log) {
            for c in calls {
                for t in trace::write_targets(&c) {
                    match trace::judge(&t, &dst_root, sb.path()) {
                        trace::Verdict::Outside => {}
                        trace::Verdict::Relative => {
                            relative += 1;
                            seen += 1;
                        }
                        trace::Verdict::ProcFd => proc_fd += 1,
                        trace::Verdict::Violation(why) => {
                            violations.push(format!("as {who}: {why}: {}", c.line))
                        }
                    }
                }
            }
        }
        if seen < 50 {
            rep.problem(format!(
                "as {who}: only {seen} descriptor-relative writes seen: is the trace complete?"
            ));
        }
    }
    for v in violations.iter().take(20) {
        rep.problem(v.clone());
    }
    if violations.len() > 20 {
        rep.problem(format!("... {} violations in all", violations.len()));
    }
    rep.set(
        "writes_inside_dst",
        relative + proc_fd + violations.len() as u64,
    );
    rep.set("descriptor_relative", relative);
    rep.set("via_proc_self_fd", proc_fd);
    rep.set("full_path_writes", violations.len());
    rep.finish();
}

/// A mirror under attack: another process keeps replacing destination folders with symlinks to a
/// folder outside. Nothing may ever be written there.
#[test]
fn symlink_swap_race() {
    let mut rep = Report::new("symlink_swap_race");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let outside_dir = tempfile::Builder::new()
        .prefix("outside-")
        .tempdir_in("/tmp")
        .unwrap();
    let outside = Tree::at(outside_dir.path());
    let (src, dst) = (sb.src(), sb.dst());
    let per = pick(1500, 12000);
    for a in 0..6 {
        for i in 0..per / 6 {
            src.file(
                format!("sub/a{a}/f{i:04}"),
                noise(rng.range(100, 6000) as usize, rng.next_u64()),
            );
        }
        src.file(format!("sub/a{a}/b/deep"), b"deep");
        // Decoys outside with the same names, so a write-through would land on them.
        outside
            .file(format!("a{a}/f0000"), b"outside original")
            .file(format!("a{a}/b/deep"), b"outside original");
    }
    for i in 0..4 {
        src.file(
            format!("sub/big{i}"),
            noise(pick(4, 16) as usize * MIB as usize, i),
        );
    }
    outside
        .file("f0000", b"outside original")
        .file("big0", b"outside original");
    let before = snapshot_into(&sb, outside.root(), "outside-before");
    let targets: Vec<(String, PathBuf)> =
        std::iter::once(("sub".to_string(), outside.root().to_path_buf()))
            .chain((0..6).map(|a| (format!("sub/a{a}"), outside.p(format!("a{a}")))))
            .chain((0..6).map(|a| (format!("sub/a{a}/b"), outside.p(format!("a{a}/b")))))
            .collect();
    let rounds = pick(3, 20);
    let (mut swaps_total, mut errored_runs) = (0u64, 0u64);
    for round in 0..rounds {
        let ctx = format!("round {round}");
        // Vary the starting point: empty, partial or complete destination.
        if dst.exists("sub") && rng.chance(0.5) {
            let p = dst.p("sub");
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let attacker = {
            let (stop, swaps, dst, targets) = (
                Arc::clone(&stop),
                Arc::clone(&swaps),
                dst.clone(),
                targets.clone(),
            );
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (rel, to) = rng.choose(&targets);
                    let p = dst.p(rel);
                    n += 1;
                    // Only through real folders: a path through a symlink this thread planted
                    // would reach outside, and the attacker itself would move things there.
                    // (Only this thread makes symlinks; blit only turns them into folders.)
                    let real_parents = Path::new(rel).ancestors().skip(1).all(|a| {
                        fs::symlink_metadata(dst.p(a)).is_ok_and(|m| m.file_type().is_dir())
                    });
                    if !real_parents {
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    let moved = fs::rename(&p, dst.p(format!(".aside-{round}-{n}"))).is_ok();
                    if (moved || fs::symlink_metadata(&p).is_err())
                        && std::os::unix::fs::symlink(to, &p).is_ok()
                    {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_micros(rng.range(100, 2000)));
                }
            })
        };
        let a = run(args("mirror", &["-q"], src.root(), dst.root()));
        stop.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
        rep.runs += 1;
        swaps_total += swaps.load(Ordering::Relaxed);
        errored_runs += u64::from(a.get_output().status.code() == Some(1));
        let code = code_or_problem(&mut rep, &a, &ctx);
        if !matches!(code, Some(0) | Some(1)) {
            rep.problem(format!("{ctx}: exit {code:?}:\n{}", stderr_of(&a)));
        }
        if let Err(e) = caught(|| assert_trees_equal(&before, outside.root())) {
            rep.problem(format!("{ctx}: the folder outside changed: {e}"));
        }
        let t = temps_under(outside.root());
        if !t.is_empty() {
            rep.problem(format!("{ctx}: temporaries written outside: {t:?}"));
        }
        eprintln!(
            "[symlink_swap_race] {ctx}: {} swaps, exit {code:?}",
            swaps.load(Ordering::Relaxed)
        );
    }
    rep.runs += 1;
    converge(
        &mut rep,
        || run(args("mirror", &["-q"], src.root(), dst.root())),
        src.root(),
        dst.root(),
        "final mirror",
    );
    if let Err(e) = caught(|| assert_trees_equal(&before, outside.root())) {
        rep.problem(format!("the folder outside changed: {e}"));
    }
    rep.set("swaps", swaps_total);
    rep.set("runs_that_met_a_swapped_folder", errored_runs);
    rep.finish();
}

// =============================================================================================
// 6. Verification
// =============================================================================================

fn mixed_source(t: &Tree, rng: &mut Rng, big: u64, smalls: usize) {
    populate_rich(t);
    for i in 0..smalls {
        t.file(
            format!("small/s{i:04}"),
            noise(rng.range(0, 20_000) as usize, rng.next_u64()),
        );
    }
    for i in 0..3 {
        t.file(
            format!("bigs/b{i}"),
            noise((big + i * 12345) as usize, rng.next_u64()),
        );
    }
}

/// With strace: every file `--verify` wrote was opened again for reading before it was renamed.
/// Returns (files written, files re-read before their rename).
fn traced_verify_run(sb: &Sandbox, src: &Path, dst: &Path, rep: &mut Report) -> Option<(u64, u64)> {
    if !strace_available() {
        return None;
    }
    let log = sb.join("verify-trace/log");
    let _ = fs::remove_dir_all(log.parent().unwrap());
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-ff",
            "-y",
            "-s",
            "4096",
            "-e",
            "trace=%file,%desc",
            "-o",
        ])
        .arg(&log)
        .arg(blit_path())
        .args(args("mirror", &["-q", "--verify"], src, dst))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        rep.problem(format!(
            "traced --verify run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (mut written, mut reread) = (0, 0);
    for calls in trace::read_logs(&log) {
        let (mut created, mut read) = (HashSet::new(), HashSet::new());
        for c in calls {
            let name_of = |i: usize| match c.args.get(i) {
                Some(trace::Arg::Str(s)) if is_temp(OsStr::from_bytes(s)) => Some(s.clone()),
                _ => None,
            };
            let flags = match c.args.get(2) {
                Some(trace::Arg::Other(f)) => f.clone(),
                _ => String::new(),
            };
            match c.name.as_str() {
                "openat" if flags.contains("O_CREAT") => {
                    if let Some(n) = name_of(1) {
                        created.insert(n);
                    }
                }
                "openat" if flags.contains("O_RDONLY") => {
                    if let Some(n) = name_of(1) {
                        read.insert(n);
                    }
                }
                "renameat" | "renameat2" => {
                    if let Some(n) = name_of(1) {
                        if created.contains(&n) {
                            written += 1;
                            if read.contains(&n) {
                                reread += 1;
                            } else {
                                rep.problem(format!(
                                    "--verify renamed {} into place without reading it back",
                                    String::from_utf8_lossy(&n)
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Some((written, reread))
}

#[test]
fn verify_rereads_every_written_file() {
    let mut rep = Report::new("verify");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    mixed_source(&src, &mut rng, pick(4, 100) * MIB, pick(200, 2000));
    let rounds = pick(3, 10);
    let mut traced = None;
    for round in 0..rounds {
        let ctx = format!("round {round}");
        if round > 0 {
            let files: Vec<PathBuf> = files_of(&src)
                .into_iter()
                .filter(|r| r.starts_with("small") || r.starts_with("bigs"))
                .collect();
            for _ in 0..rng.range(5, 40) {
                let rel = rng.choose(&files).clone();
                let len = src.meta(&rel).len().max(1);
                src.file(&rel, noise(rng.range(0, len * 2) as usize, rng.next_u64()));
                stamp(&src, &rel, &mut rng);
            }
            src.file(format!("added/r{round}"), noise(777, round));
        }
        rep.runs += 1;
        if round == 1 {
            // One round traced, to see each written file read back before its rename.
            traced = traced_verify_run(&sb, src.root(), dst.root(), &mut rep);
            trees_equal_or_problem(&mut rep, src.root(), dst.root(), &ctx);
        } else {
            converge(
                &mut rep,
                || run(args("mirror", &["-q", "--verify"], src.root(), dst.root())),
                src.root(),
                dst.root(),
                &ctx,
            );
        }
    }
    match traced {
        Some((w, r)) => {
            rep.set("traced_files_written", w);
            rep.set("traced_files_read_back", r);
            if w == 0 {
                rep.problem("the traced --verify run wrote no file".to_string());
            }
        }
        None => rep.set("traced", "no(strace unavailable)"),
    }
    rep.finish();
}

#[test]
fn checksum_finds_corruption_that_a_plain_mirror_misses() {
    let mut rep = Report::new("corruption_checksum");
    let seed = seed();
    rep.set("seed", seed);
    let mut rng = Rng::new(seed);
    let sb = Sandbox::new();
    let (src, dst) = (sb.src(), sb.dst());
    mixed_source(&src, &mut rng, pick(4, 100) * MIB, pick(300, 3000));
    expect_code(&run(args("mirror", &["-q"], src.root(), dst.root())), 0);
    let rounds = pick(2, 10);
    let per_round = pick(6, 50);
    let (mut planted, mut found_plain, mut repaired) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        let ctx = format!("round {round}");
        let candidates: Vec<PathBuf> = files_of(&dst)
            .into_iter()
            // Plain names only, so `-v` shows them as they are.
            .filter(|r| {
                dst.meta(r).len() > 0
                    && dst.meta(r).nlink() == 1
                    && r.as_os_str()
                        .as_bytes()
                        .iter()
                        .all(|&b| b.is_ascii_graphic() && b != b'\\')
            })
            .collect();
        let mut bad = BTreeSet::new();
        while bad.len() < per_round.min(candidates.len()) {
            bad.insert(rng.choose(&candidates).clone());
        }
        for rel in &bad {
            let len = dst.meta(rel).len();
            let off = match rng.below(3) {
                0 => 0,
                1 => len - 1,
                _ => rng.below(len),
            };
            let (s, n) = dst.mtime(rel);
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dst.p(rel))
                .unwrap();
            let mut b = [0u8];
            f.read_exact_at(&mut b, off).unwrap();
            f.write_all_at(&[b[0] ^ 0x5a], off).unwrap();
            drop(f);
            dst.set_mtime(rel, s, n);
        }
        planted += bad.len() as u64;
        // A plain mirror compares size and mtime only: it cannot see these.
        let a = run(args("mirror", &["-v"], src.root(), dst.root()));
        rep.runs += 1;
        if code_or_problem(&mut rep, &a, &ctx) != Some(0) {
            rep.problem(format!("{ctx}: plain mirror failed:\n{}", stderr_of(&a)));
        }
        let touched: BTreeSet<String> = verbose_entries(&stdout_of(&a))
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        for rel in &bad {
            let still_bad = !same_content(&src.p(rel), &dst.p(rel));
            if touched.contains(&*rel.to_string_lossy()) || !still_bad {
                found_plain += 1;
                rep.problem(format!(
                    "{ctx}: the plain mirror noticed {rel:?}: the corruption was not silent"
                ));
            }
        }
        // --checksum reads both sides and repairs exactly the corrupted files.
        let a = run(args(
            "mirror",
            &["-v", "--checksum"],
            src.root(),
            dst.root(),
        ));
        rep.runs += 1;
        if code_or_problem(&mut rep, &a, &ctx) != Some(0) {
            rep.problem(format!(
                "{ctx}: --checksum mirror failed:\n{}",
                stderr_of(&a)
            ));
        }
        let out = stdout_of(&a);
        let rewritten: BTreeSet<String> = out
            .lines()
            .filter(|l| l.starts_with("* ") && l.ends_with("[checksum]"))
            .map(|l| l[2..l.len() - " [checksum]".len()].to_string())
            .collect();
        let want: BTreeSet<String> = bad
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        repaired += want.intersection(&rewritten).count() as u64;
        if rewritten != want {
            rep.problem(format!(
                "{ctx}: --checksum rewrote {rewritten:?}, want exactly {want:?}"
            ));
        }
        trees_equal_or_problem(&mut rep, src.root(), dst.root(), &ctx);
    }
    rep.set("corruptions_planted", planted);
    rep.set("noticed_by_plain_mirror", found_plain);
    rep.set("repaired_by_checksum", repaired);
    rep.finish();
}
