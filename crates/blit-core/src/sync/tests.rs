//! The engine's rules, run on trees in memory ([`crate::dest::memory`]): each test builds a
//! source and a destination, runs the engine, and compares every entry afterwards.

use std::path::PathBuf;
use std::sync::Mutex;

use super::*;
use crate::dest::memory::MemTree;

/// Every event of a run, as (action, path).
#[derive(Default)]
struct Log(Mutex<Vec<(Action, PathBuf)>>);

impl Observer for Log {
    fn event(&self, e: &Event<'_>) {
        self.0.lock().unwrap().push((e.action, e.rel.to_path_buf()));
    }
}

impl Log {
    fn sorted(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(a, p)| (format!("{a:?}"), p.clone()))
            .collect();
        v.sort();
        v
    }

    fn of(&self, action: Action) -> Vec<PathBuf> {
        let mut v: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| *a == action)
            .map(|(_, p)| p.clone())
            .collect();
        v.sort();
        v
    }
}

fn options(job: Options) -> SyncOptions {
    SyncOptions {
        job,
        rules: Rules {
            checksum: false,
            owner: false,
            xattrs: false,
            system_xattrs: false,
            link_owners: false,
        },
        meta: MetaOpts {
            owner: false,
            xattrs: false,
            system_xattrs: false,
            fake_super: false,
        },
        umask: 0o022,
        workers: 2,
        cancel: CancelToken::new(),
    }
}

/// Runs `job` from `src` into `dst` with `excludes`.
fn sync(src: &MemTree, dst: &MemTree, job: Options, excludes: &[&str]) -> (Result<Outcome>, Log) {
    let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
    let filter = Filter::new(&excludes, &[]).unwrap();
    let log = Log::default();
    let out = run(src, dst, &filter, &options(job), &log);
    (out, log)
}

fn mirror() -> Options {
    Options::new(Mode::Mirror)
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = list.iter().map(PathBuf::from).collect();
    v.sort();
    v
}

/// A source, and a destination that differs from it in every way a mirror mends.
fn a_source_and_a_stale_destination() -> (MemTree, MemTree) {
    let src = MemTree::with_root("/src");
    src.dir("a")
        .file("a/f", b"one")
        .file("a/g", b"two")
        .dir("n")
        .dir("n/m")
        .file("n/m/deep", b"three levels down")
        .symlink("l", "a/f")
        .file("t", b"top");
    let dst = MemTree::with_root("/dst");
    dst.dir("a")
        .file("a/f", b"older")
        .dir("extra")
        .file("extra/x", b"x")
        .dir("extra/sub")
        .file("extra/sub/y", b"y")
        .file("z", b"stale")
        .file("t", b"top");
    dst.change("t", |n| n.perm = 0o600);
    (src, dst)
}

#[test]
fn a_mirror_makes_the_destination_equal_and_reports_each_action() {
    let (src, dst) = a_source_and_a_stale_destination();
    let (out, log) = sync(&src, &dst, mirror(), &[]);
    let out = out.unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(dst.contents(), src.contents());
    assert_eq!(
        log.of(Action::Create),
        paths(&["a/g", "l", "n", "n/m", "n/m/deep"])
    );
    assert_eq!(log.of(Action::Update), paths(&["a/f"]));
    assert_eq!(log.of(Action::Metadata), paths(&["t"]));
    assert_eq!(
        log.of(Action::Delete),
        paths(&["extra", "extra/sub", "extra/sub/y", "extra/x", "z"])
    );
    // A second run finds nothing to do.
    let (again, log) = sync(&src, &dst, mirror(), &[]);
    assert!(log.sorted().is_empty(), "{:?}", log.sorted());
    assert_eq!(again.unwrap().unchanged, 5);
}

#[test]
fn copy_never_deletes_and_a_new_destination_is_made_whole() {
    let (src, dst) = a_source_and_a_stale_destination();
    let (out, log) = sync(&src, &dst, Options::new(Mode::Copy), &[]);
    assert!(out.unwrap().failures.is_empty());
    assert!(log.of(Action::Delete).is_empty());
    for kept in ["extra/sub/y", "z"] {
        assert!(dst.contents().contains_key(&PathBuf::from(kept)), "{kept}");
    }
    let fresh = MemTree::new("/fresh");
    let (out, log) = sync(&src, &fresh, Options::new(Mode::Copy), &[]);
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(fresh.contents(), src.contents());
    assert_eq!(
        log.of(Action::Create),
        paths(&["", "a", "a/f", "a/g", "l", "n", "n/m", "n/m/deep", "t"])
    );
}

#[test]
fn an_empty_source_never_empties_the_destination_without_force() {
    let src = MemTree::with_root("/src");
    let dst = MemTree::with_root("/dst");
    dst.file("precious", b"p");
    let before = dst.snapshot();
    let (out, log) = sync(&src, &dst, mirror(), &[]);
    let e = out.unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(log.sorted().is_empty());
    assert_eq!(dst.snapshot(), before);

    let (out, log) = sync(&src, &dst, mirror().force(true), &[]);
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(log.of(Action::Delete), paths(&["precious"]));
    assert_eq!(dst.contents(), src.contents());
}

#[test]
fn nothing_is_deleted_beneath_a_source_folder_that_could_not_be_read() {
    let src = MemTree::with_root("/src");
    src.dir("a").file("a/only-in-src", b"s").file("b", b"b");
    src.unreadable("a");
    let dst = MemTree::with_root("/dst");
    dst.dir("a")
        .file("a/x", b"x")
        .dir("a/d")
        .file("a/d/y", b"y");
    dst.file("c", b"c");
    let (out, log) = sync(&src, &dst, mirror(), &[]);
    let out = out.unwrap();
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert!(out.failures[0].to_string().contains("/src/a"));
    assert_eq!(log.of(Action::Delete), paths(&["c"]));
    assert_eq!(log.of(Action::Create), paths(&["b"]));
    let now = dst.contents();
    for kept in ["a/x", "a/d", "a/d/y"] {
        assert!(now.contains_key(&PathBuf::from(kept)), "{kept} was deleted");
    }
}

#[test]
fn max_delete_deletes_all_or_nothing() {
    let src = MemTree::with_root("/src");
    src.file("keep", b"k");
    let build = || {
        let dst = MemTree::with_root("/dst");
        dst.file("keep", b"k")
            .file("x1", b"1")
            .dir("x2")
            .file("x2/in", b"2");
        dst
    };
    // Three deletions (x1, x2 and what it holds) against a limit of two: none.
    let dst = build();
    let before = dst.snapshot();
    let (out, log) = sync(&src, &dst, mirror().max_delete(Some(2)), &[]);
    let out = out.unwrap();
    assert_eq!(out.failures.len(), 1);
    assert!(out.failures[0].to_string().contains("--max-delete 2"));
    assert!(log.of(Action::Delete).is_empty());
    assert_eq!(dst.snapshot(), before);
    // Within the limit: all.
    let dst = build();
    let (out, log) = sync(&src, &dst, mirror().max_delete(Some(3)), &[]);
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(log.of(Action::Delete), paths(&["x1", "x2", "x2/in"]));
    assert_eq!(dst.contents(), src.contents());
}

#[test]
fn excluded_entries_are_left_alone_on_both_sides() {
    let src = MemTree::with_root("/src");
    src.file("n", b"n").file("s.keep", b"not copied");
    let dst = MemTree::with_root("/dst");
    dst.dir("old")
        .file("old/k.keep", b"protected")
        .file("old/f", b"f")
        .file("top.keep", b"protected too");
    let (out, log) = sync(&src, &dst, mirror(), &["*.keep"]);
    assert!(out.unwrap().failures.is_empty());
    // The folder holding a protected entry stays, and is not reported as deleted.
    assert_eq!(log.of(Action::Delete), paths(&["old/f"]));
    assert_eq!(log.of(Action::Create), paths(&["n"]));
    let now = dst.contents();
    let names: Vec<_> = now.keys().cloned().collect();
    assert_eq!(names, paths(&["", "n", "old", "old/k.keep", "top.keep"]));
}

#[test]
fn a_mirror_replaces_entries_whose_type_changed() {
    let src = MemTree::with_root("/src");
    src.file("x", b"now a file")
        .dir("y")
        .file("y/f", b"in a folder");
    let dst = MemTree::with_root("/dst");
    dst.dir("x")
        .dir("x/deep")
        .file("x/deep/in", b"i")
        .file("y", b"was a file");
    let (out, log) = sync(&src, &dst, mirror(), &[]);
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(dst.contents(), src.contents());
    assert_eq!(log.of(Action::Update), paths(&["x", "y"]));
    // The folder in the way goes with all it held, each reported.
    assert_eq!(log.of(Action::Delete), paths(&["x", "x/deep", "x/deep/in"]));
}

#[test]
fn copy_never_deletes_a_non_empty_folder_in_the_way_of_a_file() {
    let src = MemTree::with_root("/src");
    src.file("x", b"a file").file("e", b"into an empty folder");
    let dst = MemTree::with_root("/dst");
    dst.dir("x").file("x/in", b"kept").dir("e");
    let (out, log) = sync(&src, &dst, Options::new(Mode::Copy), &[]);
    let out = out.unwrap();
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert!(out.failures[0].to_string().contains("copy never deletes"));
    assert_eq!(dst.contents()[&PathBuf::from("x/in")].data, b"kept");
    // An empty folder may give way.
    assert_eq!(log.of(Action::Update), paths(&["e"]));
    assert_eq!(dst.contents()[&PathBuf::from("e")].kind, Kind::File);
}

#[test]
fn hard_links_stay_links_and_shared_destination_inodes_are_split() {
    let src = MemTree::with_root("/src");
    src.file("a", b"data").link("a", "b").link("a", "c");
    // Separate files in the source, one inode in the destination.
    src.file("p", b"same").file("q", b"same");
    let dst = MemTree::with_root("/dst");
    dst.file("p", b"same").link("p", "q");
    let (out, log) = sync(&src, &dst, mirror(), &[]);
    assert!(out.unwrap().failures.is_empty());
    let snap = dst.snapshot();
    let ino = |n: &str| snap[&PathBuf::from(n)].1;
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("c"));
    assert_ne!(ino("p"), ino("q"));
    assert_eq!(dst.contents(), src.contents());
    assert_eq!(log.of(Action::Link), paths(&["b", "c"]));
    assert_eq!(log.of(Action::Update), paths(&["p", "q"]));
}

#[test]
fn a_move_removes_each_source_once_its_copy_is_in_place() {
    let src = MemTree::with_root("/src");
    src.dir("d").file("d/f", b"f").file("g", b"g");
    let wanted = src.contents();
    let dst = MemTree::new("/dst");
    let (out, _) = sync(&src, &dst, Options::new(Mode::Move), &[]);
    let out = out.unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(dst.contents(), wanted);
    assert!(src.snapshot().is_empty(), "{:?}", src.snapshot().keys());
}

#[test]
fn a_dry_run_reports_what_a_real_run_does_and_changes_nothing() {
    let (src, dst) = a_source_and_a_stale_destination();
    let (real, real_log) = sync(&src, &dst, mirror(), &[]);
    assert!(real.unwrap().failures.is_empty());

    let (src, dst) = a_source_and_a_stale_destination();
    let (src_before, dst_before) = (src.snapshot(), dst.snapshot());
    let log = Log::default();
    let filter = Filter::default();
    let dry = crate::dest::DryRun::new(dst);
    let out = run(
        &crate::dest::DryRun::new(&src),
        &dry,
        &filter,
        &options(mirror()),
        &log,
    );
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(log.sorted(), real_log.sorted());
    assert_eq!(src.snapshot(), src_before);
    assert_eq!(dry.into_inner().snapshot(), dst_before);

    // A destination that does not exist yet: every entry would be created.
    let fresh = crate::dest::DryRun::new(MemTree::new("/fresh"));
    let log = Log::default();
    let out = run(&src, &fresh, &filter, &options(mirror()), &log);
    assert!(out.unwrap().failures.is_empty());
    assert_eq!(
        log.of(Action::Create),
        paths(&["", "a", "a/f", "a/g", "l", "n", "n/m", "n/m/deep", "t"])
    );
    assert!(fresh.into_inner().snapshot().is_empty());
}
