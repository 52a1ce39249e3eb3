//! Behaviour every platform must share: copy, mirror, move, deletions, filters, times and the
//! refusals. These tests judge only what Windows can hold too (types, bytes, modification times at
//! NTFS's 100 ns resolution), so CI also runs them against the Windows build under Wine
//! (`BLIT_BIN=scripts/wine/blit`), where the copies go through `CopyFileExW`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_deletions_come_last, expect_code, json_of, run, Sandbox, Tree};

/// What a Windows filesystem keeps of an entry: kind, content, and mtime in 100 ns ticks.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Dir { mtime: (i64, i64) },
    File { bytes: Vec<u8>, mtime: (i64, i64) },
}

fn ticks(md: &fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (md.mtime(), md.mtime_nsec() / 100)
}

fn shapes(root: &Path) -> BTreeMap<PathBuf, Shape> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Shape>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if md.is_dir() {
                out.insert(rel, Shape::Dir { mtime: ticks(&md) });
                walk(root, &p, out);
            } else {
                assert!(md.is_file(), "unexpected entry type at {}", p.display());
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    Shape::File {
                        bytes,
                        mtime: ticks(&md),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Both trees hold the same entries with the same bytes and times (100 ns), the roots' times too.
fn assert_same(src: &Path, dst: &Path) {
    let (a, b) = (shapes(src), shapes(dst));
    let names = |m: &BTreeMap<PathBuf, Shape>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "entry lists differ");
    for (rel, shape) in &a {
        assert_eq!(Some(shape), b.get(rel), "{} differs", rel.display());
    }
    let root = |p: &Path| ticks(&fs::metadata(p).unwrap());
    assert_eq!(root(src), root(dst), "root folder times differ");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A small tree with nested folders and set times (on 100 ns boundaries, as NTFS stores them).
fn sample(t: &Tree) {
    t.file("top.txt", b"top level")
        .file("a/one.bin", common::noise(70_000, 1))
        .file("a/b/two.txt", b"two")
        .file("a/b/c/three.txt", b"three")
        .file("empty.dat", b"")
        .dir("hollow")
        .set_mtime("top.txt", 1_500_000_000, 123_456_700)
        .set_mtime("a/one.bin", 1_600_000_000, 0)
        .set_mtime("a/b/two.txt", 1_600_000_002, 200)
        .set_mtime("a/b/c/three.txt", 1_600_000_003, 300)
        .set_mtime("empty.dat", 1_600_000_004, 400)
        .set_mtime("a/b/c", 1_400_000_000, 500)
        .set_mtime("hollow", 1_300_000_000, 900);
}

#[test]
fn copy_makes_the_tree_with_bytes_and_times() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let dst = sb.join("out");
    expect_code(&run(["copy", s(src.root()), s(&dst)]), 0);
    assert_same(src.root(), &dst);
}

#[test]
fn copy_keeps_extra_destination_entries() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let dst = sb.dst();
    dst.file("mine.txt", b"keep me")
        .file("a/also-mine", b"me too");
    expect_code(&run(["copy", s(src.root()), s(dst.root())]), 0);
    assert_eq!(dst.read("mine.txt"), b"keep me");
    assert_eq!(dst.read("a/also-mine"), b"me too");
    assert_eq!(dst.read("a/b/c/three.txt"), b"three");
}

#[test]
fn mirror_updates_changes_and_deletes_extras() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let dst = sb.join("out");
    expect_code(&run(["mirror", s(src.root()), s(&dst)]), 0);
    src.file("top.txt", b"grown top level content")
        .set_mtime("top.txt", 1_500_000_001, 0)
        .file("a/b/two.txt", b"TWO")
        .set_mtime("a/b/two.txt", 1_000_000_000, 100)
        .remove("a/b/c")
        .file("new/file.txt", b"new");
    let d = Tree::at(dst.clone());
    d.file("stray.txt", b"not in source")
        .file("a/stray/deep.txt", b"gone");
    expect_code(&run(["mirror", s(src.root()), s(&dst)]), 0);
    assert_same(src.root(), &dst);
}

#[test]
fn a_second_mirror_changes_nothing() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let dst = sb.join("out");
    expect_code(&run(["mirror", s(src.root()), s(&dst)]), 0);
    let a = run(["mirror", "--json", s(src.root()), s(&dst)]);
    expect_code(&a, 0);
    let v = json_of(&a);
    for action in ["create", "update", "metadata", "delete", "link"] {
        assert_eq!(v["actions"][action]["count"], 0, "{action} in {v}");
    }
    assert_eq!(v["unchanged"], 5, "{v}");
}

#[test]
fn mirror_replaces_a_file_by_a_folder_and_back() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("x", b"file").dir("y").file("y/inner", b"inner");
    let dst = sb.join("out");
    expect_code(&run(["mirror", s(src.root()), s(&dst)]), 0);
    src.remove("x")
        .remove("y")
        .file("x/inside", b"now a folder")
        .file("y", b"now a file");
    expect_code(&run(["mirror", s(src.root()), s(&dst)]), 0);
    assert_same(src.root(), &dst);
}

#[test]
fn move_empties_the_source_into_the_destination() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let snapshot = sb.tree("snapshot");
    sample(&snapshot);
    let dst = sb.join("out");
    expect_code(&run(["move", s(src.root()), s(&dst)]), 0);
    assert!(!src.root().exists(), "the emptied source folder is removed");
    let (want, got) = (shapes(snapshot.root()), shapes(&dst));
    assert_eq!(want.len(), got.len());
    for (rel, shape) in want {
        match (shape, got.get(&rel)) {
            (Shape::File { bytes, mtime }, Some(Shape::File { bytes: b, mtime: m })) => {
                assert_eq!(&bytes, b, "{}", rel.display());
                assert_eq!(&mtime, m, "{}", rel.display());
            }
            (Shape::Dir { .. }, Some(Shape::Dir { .. })) => {}
            (want, got) => panic!("{}: want {want:?}, got {got:?}", rel.display()),
        }
    }
}

#[test]
fn filters_leave_excluded_entries_alone_on_both_sides() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("keep.txt", b"k")
        .file("skip.log", b"s")
        .file("logs/important.log", b"i")
        .file("cache/big.bin", b"c");
    let dst = sb.dst();
    dst.file("local.log", b"dst-only excluded entry");
    expect_code(
        &run([
            "mirror",
            "--exclude",
            "*.log",
            "--include",
            "important.log",
            "--exclude",
            "cache/",
            s(src.root()),
            s(dst.root()),
        ]),
        0,
    );
    assert_eq!(dst.read("keep.txt"), b"k");
    assert_eq!(dst.read("logs/important.log"), b"i");
    assert!(!dst.exists("skip.log"));
    assert!(!dst.exists("cache"));
    assert_eq!(dst.read("local.log"), b"dst-only excluded entry");
}

#[test]
fn a_file_source_lands_in_an_existing_folder() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("report.pdf", b"%PDF")
        .set_mtime("report.pdf", 1_234_567_890, 100);
    let dst = sb.dst();
    dst.dir("docs");
    expect_code(
        &run(["copy", s(&src.p("report.pdf")), s(&dst.p("docs"))]),
        0,
    );
    assert_eq!(dst.read("docs/report.pdf"), b"%PDF");
    assert_eq!(dst.mtime("docs/report.pdf"), (1_234_567_890, 100));
}

#[test]
fn dry_run_changes_nothing() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let dst = sb.dst();
    dst.file("stray", b"x");
    let before = shapes(dst.root());
    expect_code(&run(["mirror", "-n", s(src.root()), s(dst.root())]), 0);
    assert_eq!(before, shapes(dst.root()));
}

#[test]
fn a_missing_source_is_refused_and_nothing_is_created() {
    let sb = Sandbox::new();
    let dst = sb.join("out");
    let a = run(["mirror", s(&sb.join("no-such-source")), s(&dst)]);
    expect_code(&a, 2);
    assert!(common::stderr_of(&a).contains("no-such-source"));
    assert!(!dst.exists());
}

#[test]
fn a_destination_inside_the_source_is_refused() {
    let sb = Sandbox::new();
    let src = sb.src();
    sample(&src);
    let before = shapes(src.root());
    expect_code(&run(["mirror", s(src.root()), s(&src.p("a/inner"))]), 2);
    assert_eq!(before, shapes(src.root()));
}

#[test]
fn an_empty_source_does_not_empty_the_destination_without_force() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.mkroot();
    let dst = sb.dst();
    dst.file("precious", b"p");
    expect_code(&run(["mirror", s(src.root()), s(dst.root())]), 2);
    assert_eq!(dst.read("precious"), b"p");
    expect_code(&run(["mirror", "--force", s(src.root()), s(dst.root())]), 0);
    assert!(!dst.exists("precious"));
}

#[test]
fn max_delete_stops_all_deletions_beyond_the_cap() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("kept", b"k");
    let dst = sb.dst();
    dst.file("x1", b"1").file("x2", b"2").file("x3", b"3");
    expect_code(
        &run(["mirror", "--max-delete", "2", s(src.root()), s(dst.root())]),
        1,
    );
    assert!(dst.exists("x1") && dst.exists("x2") && dst.exists("x3"));
    assert_eq!(dst.read("kept"), b"k");
}

/// A file renamed only by case in the source. Where names are compared without case (Windows,
/// and Wine here) the copy of `README.txt` lands on the destination's `readme.txt`; deleting
/// `readme.txt` as an extra afterwards deleted the new copy (with `--delete-after`, or
/// whenever the deletion ran after the write). Either way the content must arrive, once.
#[test]
fn a_name_whose_case_changed_keeps_its_content() {
    for extra in [&[][..], &["--delete-after"], &["--max-delete", "5"]] {
        let sb = Sandbox::new();
        let src = sb.src();
        src.file("README.txt", b"the new text");
        let dst = sb.dst();
        dst.file("readme.txt", b"old");
        let mut argv = vec!["mirror"];
        argv.extend(extra);
        argv.extend([s(src.root()), s(dst.root())]);
        expect_code(&run(argv), 0);
        let names: Vec<String> = fs::read_dir(dst.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "with {extra:?}: {names:?}");
        assert!(names[0].eq_ignore_ascii_case("readme.txt"), "{names:?}");
        assert_eq!(dst.read(&names[0]), b"the new text", "with {extra:?}");
    }
}

#[test]
fn delete_after_deletes_once_every_copy_is_done() {
    let sb = Sandbox::new();
    let src = sb.src();
    let dst = sb.dst();
    for d in 0..20 {
        src.file(format!("d{d}/new"), b"n");
        dst.file(format!("d{d}/old"), b"o");
    }
    let a = run([
        "mirror",
        "-v",
        "--delete-after",
        s(src.root()),
        s(dst.root()),
    ]);
    expect_code(&a, 0);
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert_eq!(assert_deletions_come_last(&out), 20, "{out}");
    assert_same(src.root(), dst.root());
}

// ---------------------------------------------------------------------------------------------
// Remote: the client on this platform against a `blit-daemon` on Linux (under Wine, the Windows
// client crosses the loopback to the native daemon), TLS on, the certificate pinned.
// ---------------------------------------------------------------------------------------------

/// A native `blit-daemon` serving `root` as module `m`, trusted with everything (its sessions
/// run as root and keep owners, modes and devices, behind a token), as a file server's would;
/// killed on drop.
struct Served {
    child: std::process::Child,
    port: u16,
    fingerprint: String,
    _tls: tempfile::TempDir,
}

/// The token of the served module.
const TOKEN: &str = "portable-tests-token";

impl Served {
    fn start(root: &Path) -> Served {
        use std::io::BufRead;
        let bin = Path::new(env!("CARGO_BIN_EXE_blit")).with_file_name("blit-daemon");
        let tls = tempfile::tempdir().unwrap();
        let token = tls.path().join("token");
        fs::write(&token, TOKEN).unwrap();
        let config = tls.path().join("daemon.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[[module]]\nname = \"m\"\npath = {:?}\n\
             token_file = {:?}\nuid = \"root\"\nkeep = [\"all\"]\n",
            s(root),
            s(&token)
        );
        fs::write(&config, text).unwrap();
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--tls-dir")
            .arg(tls.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin:?}: {e} (built by `cargo test --workspace`)"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "blit-daemon listening on 127.0.0.1:PORT (TLS, certificate fingerprint HEX)"
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from blit-daemon: {line:?}"));
        let fingerprint = line
            .rsplit(' ')
            .next()
            .map(|f| f.trim().trim_end_matches(')').to_string())
            .unwrap();
        Served {
            child,
            port,
            fingerprint,
            _tls: tls,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("blit://127.0.0.1:{}/m/{path}", self.port)
    }

    /// Runs the client (`args` starts with the verb) with the daemon's certificate pinned and
    /// the module's token; a pull takes the daemon's metadata as sent (`--trust-metadata`).
    fn run(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        let mut all = vec![args[0], "--tls-fingerprint", &self.fingerprint];
        let pull = args.len() >= 3 && args[args.len() - 2].starts_with("blit://");
        if pull {
            all.push("--trust-metadata");
        }
        all.extend_from_slice(&args[1..]);
        let mut cmd = common::blit();
        cmd.args(all).env("BLIT_TOKEN", TOKEN);
        common::finish(cmd)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample tree as a source, and a daemon serving an empty module beside it.
fn sample_served(sb: &Sandbox) -> (Tree, PathBuf, Served) {
    let src = sb.src();
    sample(&src);
    let module = sb.join("module");
    fs::create_dir(&module).unwrap();
    let d = Served::start(&module);
    (src, module, d)
}

#[test]
fn remote_push_and_pull_keep_bytes_and_times() {
    let sb = Sandbox::new();
    let (src, module, d) = sample_served(&sb);

    // Push, then a second push that finds nothing to do.
    expect_code(&d.run(&["copy", s(src.root()), &d.url("tree")]), 0);
    assert_same(src.root(), &module.join("tree"));
    let again = d.run(&["mirror", "--json", s(src.root()), &d.url("tree")]);
    expect_code(&again, 0);
    let v = json_of(&again);
    for action in ["create", "update", "metadata", "delete"] {
        assert_eq!(
            v["actions"][action]["count"], 0,
            "second push did {action}: {v}"
        );
    }

    // Pull into a fresh folder, then converge after changes on the daemon's side.
    let pulled = sb.join("pulled");
    expect_code(&d.run(&["mirror", &d.url("tree"), s(&pulled)]), 0);
    assert_same(&module.join("tree"), &pulled);
    let served = Tree::at(module.join("tree"));
    served
        .file("a/b/two.txt", b"changed on the server")
        .set_mtime("a/b/two.txt", 1_700_000_000, 700)
        .remove("a/b/c/three.txt")
        .file("new/made.txt", b"new")
        .set_mtime("new/made.txt", 1_700_000_001, 0)
        .set_mtime("a/b/c", 1_400_000_000, 500)
        .set_mtime("new", 1_700_000_002, 0)
        .set_mtime("a/b", 1_600_000_000, 0);
    expect_code(&d.run(&["mirror", &d.url("tree"), s(&pulled)]), 0);
    assert_same(&module.join("tree"), &pulled);
}

/// A large file travels in stripes over two connections both ways (under Wine: the Windows
/// client writing stripes at their offsets from two threads, and serving two on a push).
#[test]
fn remote_large_file_travels_in_stripes_both_ways() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("big.bin", common::noise(40 << 20, 9))
        .file("small.txt", b"small")
        .set_mtime("big.bin", 1_600_000_000, 123_456_700);
    let module = sb.join("module");
    fs::create_dir(&module).unwrap();
    let d = Served::start(&module);

    let push = d.run(&[
        "copy",
        "--json",
        "--streams",
        "2",
        s(src.root()),
        &d.url("tree"),
    ]);
    expect_code(&push, 0);
    assert_same(src.root(), &module.join("tree"));
    assert_eq!(
        common::striped_files(&push),
        1,
        "{}",
        common::stdout_of(&push)
    );

    let pulled = sb.join("pulled");
    let pull = d.run(&[
        "copy",
        "--json",
        "--streams",
        "2",
        &d.url("tree"),
        s(&pulled),
    ]);
    expect_code(&pull, 0);
    assert_same(src.root(), &pulled);
    assert_eq!(
        common::striped_files(&pull),
        1,
        "{}",
        common::stdout_of(&pull)
    );
}

/// `--resume` picks up a partial file both ways: pulled, this platform's client finds the fixed
/// temporary, hashes its whole blocks and asks only for the rest; pushed, this platform's client
/// compares the daemon's block hashes with its own file and sends only the blocks that differ.
#[test]
fn remote_resume_continues_from_a_partial_file_both_ways() {
    const MIB: usize = 1 << 20;
    let sb = Sandbox::new();
    let src = sb.src();
    let data = common::noise(5 * MIB + (300 << 10), 11);
    src.file("big.bin", &data)
        .set_mtime("big.bin", 1_600_000_000, 500);
    let module = sb.join("module");
    fs::create_dir(&module).unwrap();
    let d = Served::start(&module);

    // What an interrupted run leaves: the first 3 MiB and a bit of the fourth, in the fixed
    // temporary, with its second block damaged.
    let partial = |dir: &Path| {
        fs::create_dir_all(dir).unwrap();
        let mut kept = data[..3 * MIB + 4096].to_vec();
        kept[MIB + 10..MIB + 30].copy_from_slice(b"DAMAGED BLOCK HERE..");
        let name = blit_core::tempname::partial(std::ffi::OsStr::new("big.bin"));
        fs::write(dir.join(name), kept).unwrap();
    };
    // Two whole blocks are good; the damaged one and everything after are sent.
    let want = (data.len() - 2 * MIB) as u64;

    let pulled = sb.join("pulled");
    partial(&pulled);
    Tree::at(module.join("tree"))
        .file("big.bin", &data)
        .set_mtime("big.bin", 1_600_000_000, 500);
    let pull = d.run(&["copy", "--resume", "--json", &d.url("tree"), s(&pulled)]);
    expect_code(&pull, 0);
    assert_eq!(common::bytes_moved(&json_of(&pull)), want);
    assert_same(&module.join("tree"), &pulled);

    partial(&module.join("pushed"));
    let push = d.run(&[
        "copy",
        "--resume",
        "--json",
        s(src.root()),
        &d.url("pushed"),
    ]);
    expect_code(&push, 0);
    assert_eq!(common::bytes_moved(&json_of(&push)), want);
    assert_same(src.root(), &module.join("pushed"));
}

#[test]
fn remote_refusals_name_the_url_and_change_nothing() {
    let sb = Sandbox::new();
    let (src, module, d) = sample_served(&sb);
    let wrong = format!("blit://127.0.0.1:{}/nosuch/x", d.port);
    let a = d.run(&["copy", s(src.root()), &wrong]);
    expect_code(&a, 2);
    let err = common::stderr_of(&a);
    assert!(err.contains("nosuch"), "{err}");
    // A pinned fingerprint that does not match is refused before anything is sent.
    let a = run([
        "copy",
        "--tls-fingerprint",
        "00",
        s(src.root()),
        &d.url("tree"),
    ]);
    expect_code(&a, 2);
    assert!(!module.join("tree").exists());
}

/// A name that is not UTF-8 crosses to a Unix client exactly; a Windows client cannot hold it,
/// so that one entry fails by name (exit 1) and the rest arrives. It is never renamed on the way.
#[test]
fn remote_name_that_is_not_unicode_arrives_exactly_or_fails_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let module = sb.join("module");
    let bad = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
    fs::create_dir_all(module.join("t")).unwrap();
    fs::write(module.join("t/good.txt"), b"good").unwrap();
    fs::write(module.join("t").join(bad), b"bad").unwrap();
    let d = Served::start(&module);
    let pulled = sb.join("pulled");
    let a = d.run(&["mirror", &d.url("t"), s(&pulled)]);
    assert_eq!(fs::read(pulled.join("good.txt")).unwrap(), b"good");
    let names: Vec<_> = fs::read_dir(&pulled)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    match common::code_of(&a) {
        0 => assert!(names.iter().any(|n| n == bad), "{names:?}"),
        1 => {
            let err = common::stderr_of(&a);
            assert!(err.contains("not valid Unicode"), "{err}");
            assert_eq!(names, ["good.txt"], "the bad name arrived altered");
        }
        c => panic!("exit {c}: {}", common::stderr_of(&a)),
    }
}
