//! Tests of the test fixtures. Every other test trusts `assert_trees_equal` to notice a wrong
//! copy; these prove that it does, field by field, so a lenient comparison cannot make the whole
//! suite pass vacuously. None of them runs blit.

mod common;

use std::path::Path;

use common::*;

/// Two identical trees built independently (snapshot) with one field then broken in `b`.
fn pair(break_it: impl FnOnce(&Tree)) -> Sandbox {
    let sb = Sandbox::new();
    populate_rich(&sb.tree("left"));
    snapshot(&sb.join("left"), &sb.join("right"));
    break_it(&sb.tree("right"));
    sb
}

/// Runs `f`, then puts back the mtime of folder `dir` that re-creating an entry in it disturbed,
/// so the only difference left is the one under test.
fn keeping_time(b: &Tree, dir: &str, f: impl FnOnce()) {
    let (s, n) = b.mtime(dir);
    f();
    b.set_mtime(dir, s, n);
}

fn compare(sb: &Sandbox) {
    assert_trees_equal(&sb.join("left"), &sb.join("right"));
}

#[test]
fn identical_snapshots_compare_equal() {
    compare(&pair(|_| {}));
}

#[test]
#[should_panic(expected = "only in")]
fn notices_a_leftover_temporary_file() {
    compare(&pair(|b| {
        b.file("a/.~blit-1-0.tmp", b"");
    }));
}

#[test]
#[should_panic(expected = "content differs")]
fn notices_a_changed_byte() {
    compare(&pair(|b| {
        let mut v = b.read("big.bin");
        v[1_000_000] ^= 1;
        let (s, n) = b.mtime("big.bin");
        b.file("big.bin", v).set_mtime("big.bin", s, n);
    }));
}

#[test]
#[should_panic(expected = "permission bits differ")]
fn notices_a_mode_change() {
    compare(&pair(|b| {
        b.chmod("sticky", 0o777);
    }));
}

#[test]
#[should_panic(expected = "uid differs")]
fn notices_an_owner_change() {
    compare(&pair(|b| {
        b.chown("rel-link", 1112, 2222);
    }));
}

#[test]
#[should_panic(expected = "mtime differs")]
fn notices_a_one_nanosecond_mtime_change_on_a_folder() {
    compare(&pair(|b| {
        let (s, n) = b.mtime("a/b");
        b.set_mtime("a/b", s, n + 1);
    }));
}

#[test]
#[should_panic(expected = "mtime differs")]
fn notices_a_root_mtime_change() {
    compare(&pair(|b| {
        let (s, n) = b.mtime("");
        b.set_mtime("", s + 1, n);
    }));
}

#[test]
#[should_panic(expected = "xattrs differ")]
fn notices_an_xattr_change() {
    compare(&pair(|b| {
        b.set_xattr("a/sib.txt", "user.empty", b"x");
    }));
}

#[test]
#[should_panic(expected = "symlink target differs")]
fn notices_a_symlink_target_change() {
    compare(&pair(|b| {
        let (s, n) = b.mtime("rel-link");
        keeping_time(b, "", || {
            b.remove("rel-link")
                .symlink("rel-link", "a/b/c/deep.txT")
                .chown("rel-link", 1111, 2222)
                .set_mtime("rel-link", s, n);
        });
    }));
}

#[test]
#[should_panic(expected = "type differs")]
fn notices_a_type_change() {
    compare(&pair(|b| {
        keeping_time(b, "", || {
            b.remove("pipe").file("pipe", b"");
        });
    }));
}

#[test]
#[should_panic(expected = "hard links differ")]
fn notices_a_broken_hard_link() {
    compare(&pair(|b| {
        let (s, n) = b.mtime("a/hard-2");
        let x = xattrs_of(&b.p("a/hard-2"));
        keeping_time(b, "a", || {
            b.remove("a/hard-2").file("a/hard-2", b"hello blit\n");
        });
        for (k, v) in x {
            b.set_xattr("a/hard-2", k.to_str().unwrap(), &v);
        }
        b.set_mtime("a/hard-2", s, n);
    }));
}

#[test]
#[should_panic(expected = "sparse")]
fn notices_a_filled_hole() {
    compare(&pair(|b| {
        let v = b.read("sparse.img");
        let (s, n) = b.mtime("sparse.img");
        b.file("sparse.img", v).set_mtime("sparse.img", s, n);
    }));
}

#[test]
fn temp_name_recognition_matches_the_contract() {
    assert!(is_temp_name(".~blit-1f2e-0.tmp".as_ref()));
    assert!(is_temp_name(".~blit-anything.tmp".as_ref()));
    assert!(!is_temp_name(".~blit-.tmp".as_ref()));
    assert!(!is_temp_name("blit-1.tmp".as_ref()));
    assert!(!is_temp_name(".~blit-1.tm".as_ref()));
    assert!(is_temp_dir_name(".~blit-1f2e-3.dir".as_ref()));
    assert!(!is_temp_dir_name(".~blit-1f2e-3.tmp".as_ref()));
    assert!(in_temporary(Path::new("a/.~blit-1-2.dir/b/c")));
    assert!(in_temporary(Path::new("a/.~blit-1-2.tmp")));
    assert!(!in_temporary(Path::new("a/b/c")));
}

#[test]
fn verbose_parser_requires_a_reason_and_skips_other_lines() {
    let v = verbose_entries("+ a [new]\n* b c [size]\nsummary: 2 created\n- d/ [not in source]\n");
    assert_eq!(
        v,
        [entry("+", "a"), entry("*", "b c"), entry("-", "d/")].into()
    );
    let bad = std::panic::catch_unwind(|| verbose_entries("+ a\n"));
    assert!(bad.is_err(), "a line without a reason was accepted");
}
