//! What blit prints: `-v` lines, `--json` reports and error lines. Scripts parse these, so their
//! shape is part of the contract.

mod common;

use std::ffi::OsString;

use common::*;

fn args(mode: &str, extra: &[&str], sb: &Sandbox) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![mode.into()];
    v.extend(extra.iter().map(OsString::from));
    v.push(sb.src().root().into());
    v.push(sb.dst().root().into());
    v
}

#[test]
fn verbose_lists_created_entries_with_folders_ending_in_slash() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"a")
        .file("d/e/f.txt", b"f")
        .dir("empty")
        .symlink("link", "a.txt");
    let a = run(args("copy", &["-v"], &sb));
    expect_code(&a, 0);
    assert_eq!(
        verbose_entries_below_root(&stdout_of(&a)),
        [
            entry("+", "a.txt"),
            entry("+", "d/"),
            entry("+", "d/e/"),
            entry("+", "d/e/f.txt"),
            entry("+", "empty/"),
            entry("+", "link"),
        ]
        .into()
    );
}

#[test]
fn verbose_symbols_for_update_metadata_delete_and_link() {
    let sb = Sandbox::new();
    sb.src()
        .file("content", b"v1")
        .file("meta", b"m")
        .file("gone", b"g")
        .file("linked", b"l")
        .file("d/x", b"x");
    expect_code(&run(args("mirror", &[], &sb)), 0);
    let t = sb.src();
    let (sec, nsec) = t.mtime("");
    t.file("content", b"version two")
        .chmod("meta", 0o600)
        .remove("gone")
        .hardlink("linked-2", "linked")
        .remove("d");
    t.set_mtime("", sec, nsec);
    let a = run(args("mirror", &["--verbose"], &sb));
    expect_code(&a, 0);
    let v = verbose_entries_below_root(&stdout_of(&a));
    for e in [
        entry("*", "content"),
        entry(".", "meta"),
        entry("-", "gone"),
        entry("=", "linked-2"),
        entry("-", "d/"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }
    // Nothing else changed, so nothing else may be reported (contents of a deleted folder
    // excepted: whether they get their own lines is left open).
    let rest: Vec<_> = v
        .iter()
        .filter(|(_, p)| {
            !["content", "meta", "gone", "linked-2", "d/"].contains(&p.as_str())
                && !p.starts_with("d/")
        })
        .collect();
    assert!(rest.is_empty(), "unexpected lines: {rest:?}");
    assert_trees_equal(t.root(), sb.dst().root());
}

#[test]
fn verbose_escapes_names_so_none_is_lost() {
    let sb = Sandbox::new();
    sb.src()
        .file(bpath(b"caf\xe9"), b"1")
        .file("new\nline", b"2")
        .file("tab\there", b"3")
        .file("back\\slash", b"4")
        .file(bpath(b"dir\xff/inner"), b"5");
    sb.dst().mkroot();
    let a = run(args("copy", &["-v"], &sb));
    expect_code(&a, 0);
    let out = stdout_of(&a);
    assert_eq!(
        verbose_entries_below_root(&out),
        [
            entry("+", "caf\\xe9"),
            entry("+", "new\\nline"),
            entry("+", "tab\\there"),
            entry("+", "back\\\\slash"),
            entry("+", "dir\\xff/"),
            entry("+", "dir\\xff/inner"),
        ]
        .into()
    );
    // A raw newline in a name would have split an entry over two lines.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("+ ")).count(),
        6,
        "{out}"
    );
}

#[test]
fn json_report_has_the_documented_shape_and_counts() {
    let sb = Sandbox::new();
    sb.src()
        .file("same1", b"unchanged")
        .file("same2", b"unchanged too")
        .file("upd", b"old")
        .file("meta", b"m")
        .file("del", b"d")
        .file("h", b"hard");
    expect_code(&run(args("mirror", &[], &sb)), 0);
    let t = sb.src();
    let (sec, nsec) = t.mtime("");
    t.file("new1", b"0123456789")
        .file("new2", [7u8; 20])
        .file("upd", b"updated")
        .chmod("meta", 0o640)
        .remove("del")
        .hardlink("h2", "h");
    t.set_mtime("", sec, nsec);
    let a = run(args("mirror", &["--json"], &sb));
    expect_code(&a, 0);
    let j = json_of(&a);
    assert_eq!(j["mode"], "mirror", "{j}");
    assert_eq!(j["dry_run"], false, "{j}");
    assert_eq!(j["exit_code"], 0, "{j}");
    assert_eq!(j["failures"], serde_json::json!([]), "{j}");
    assert!(j["elapsed_secs"].as_f64().is_some_and(|s| s >= 0.0), "{j}");
    let act = &j["actions"];
    for k in ["create", "update", "metadata", "delete", "link"] {
        assert!(act[k]["count"].is_u64(), "actions.{k}.count: {j}");
        assert!(act[k]["bytes"].is_u64(), "actions.{k}.bytes: {j}");
    }
    assert_eq!(act["create"]["count"], 2, "{j}");
    assert_eq!(act["create"]["bytes"], 30, "{j}");
    assert_eq!(act["update"]["count"], 1, "{j}");
    assert_eq!(act["update"]["bytes"], 7, "{j}");
    assert_eq!(act["metadata"]["count"], 1, "{j}");
    assert_eq!(act["delete"]["count"], 1, "{j}");
    assert_eq!(act["link"]["count"], 1, "{j}");
    // same1, same2 and h at least; whether folders count is left open.
    assert!(j["unchanged"].as_u64().is_some_and(|n| n >= 3), "{j}");
    assert_trees_equal(t.root(), sb.dst().root());
}

#[test]
fn json_counts_of_a_dry_run_match_the_real_run() {
    let sb = Sandbox::new();
    sb.src().file("a", b"12").file("d/b", b"345");
    sb.dst().file("stale", b"s");
    let dry = json_of(&run(args("mirror", &["-n", "--json"], &sb)));
    let real = json_of(&run(args("mirror", &["--json"], &sb)));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(real["dry_run"], false);
    assert_eq!(dry["actions"], real["actions"]);
    assert_eq!(real["actions"]["create"]["bytes"], 5);
    assert_eq!(real["actions"]["delete"]["count"], 1);
}

#[test]
fn json_stays_parseable_with_progress_requested() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a");
    let a = run(args("copy", &["--json", "--progress"], &sb));
    expect_code(&a, 0);
    let j = json_of(&a);
    assert_eq!(j["mode"], "copy");
    assert_eq!(j["actions"]["create"]["bytes"], 1);
}

#[test]
fn idle_run_reports_everything_unchanged() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a").file("b", b"b").file("c", b"c");
    expect_code(&run(args("mirror", &[], &sb)), 0);
    let j = json_of(&run(args("mirror", &["--json"], &sb)));
    for k in ["create", "update", "metadata", "delete", "link"] {
        assert_eq!(j["actions"][k]["count"], 0, "{k}: {j}");
    }
    assert!(j["unchanged"].as_u64().is_some_and(|n| n >= 3), "{j}");
}

#[test]
fn error_lines_name_the_path() {
    let sb = Sandbox::new();
    sb.src().file("blocked", b"file").file("fine", b"f");
    sb.dst().file("blocked/inside", b"folder in the way");
    let a = run(args("copy", &[], &sb));
    expect_code(&a, 1);
    let err = stderr_of(&a);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("blocked")).collect();
    assert!(!lines.is_empty(), "no error names the path: {err}");
    assert!(lines.iter().all(|l| l.starts_with("blit: ")), "{err}");
    // The run continued past the failure.
    assert_eq!(sb.dst().read("fine"), b"f");
}

#[test]
fn non_utf8_path_in_an_error_is_escaped_not_mangled() {
    let sb = Sandbox::new();
    sb.src().file(bpath(b"bad\xe9"), b"file");
    sb.dst()
        .file(bpath(b"bad\xe9/inside"), b"folder in the way");
    let a = run(args("copy", &[], &sb));
    expect_code(&a, 1);
    let err = stderr_of(&a);
    assert!(err.contains("bad\\xe9"), "{err}");
}

/// `--stats` says what the run did: the copy path each class of entry took, the wall time of each
/// phase, the worker time of each activity, workers and buffer sizes; `--json` carries the same.
#[test]
fn stats_report_paths_per_class_phases_and_buffers() {
    let sb = Sandbox::new();
    sb.src()
        .file("empty", b"")
        .file("small", b"a few bytes")
        .file("d/large", noise(3 << 20, 7))
        .symlink("link", "small");
    sb.dst().file("stale", b"to delete");
    let a = run(args("mirror", &["--stats"], &sb));
    expect_code(&a, 0);
    let err = stderr_of(&a);
    for want in [
        "stats: workers ",
        "stats: phases (wall): sync ",
        "delete ",
        "metadata ",
        "stats: sync phase (worker seconds): walk ",
        "empty files: empty 1",
        "symlinks: symlink 1",
        "stats: buffers: userspace copy up to 1024 KiB",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    // The copy path of regular files depends on the filesystem (clone, kernel_copy, ...); the
    // class must be named either way.
    assert!(err.contains("files under 1 MiB: "), "{err}");
    assert!(err.contains("files of 1 MiB or more: "), "{err}");
    // The stale file went during the walk: its worker time is counted apart.
    let busy = err
        .lines()
        .find(|l| l.starts_with("stats: sync phase (worker seconds):"))
        .unwrap();
    assert!(busy.contains(" delete "), "{busy}");

    let sb = Sandbox::new();
    sb.src()
        .file("small", b"x")
        .file("d/large", noise(2 << 20, 8));
    let a = run(args("copy", &["--json"], &sb));
    expect_code(&a, 0);
    let st = &json_of(&a)["stats"];
    let methods = st["methods"].as_object().unwrap();
    let count = |class: &str| -> u64 {
        methods
            .iter()
            .filter(|(k, _)| k.starts_with(class))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("files under 1 MiB: "), 1, "{st}");
    assert_eq!(count("files of 1 MiB or more: "), 1, "{st}");
    for activity in ["walk", "plan", "copy"] {
        assert!(st["busy"][activity].as_f64().unwrap() >= 0.0, "{st}");
    }
    assert!(st["busy"]["copy"].as_f64().unwrap() > 0.0, "{st}");
    assert!(st["phases"]["sync"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(st["read_buffer"], 1 << 20);
    assert_eq!(st["source_entries"], 3, "{st}");
}
