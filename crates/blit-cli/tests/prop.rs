//! Property tests: for random trees and random edits, mirror converges to an exact replica, and
//! copy never deletes anything from the destination.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(String),
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        5 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Node::File),
        2 => Just(Node::Dir),
        1 => prop::collection::vec(0usize..4, 1..6).prop_map(|v| {
            Node::Link(v.into_iter().map(|i| ['a', 'b', '/', '.'][i]).collect())
        }),
    ]
}

/// Entry specs: a path of up to three names from a small alphabet (so paths collide and types
/// clash often) and what to put there.
fn spec() -> impl Strategy<Value = Vec<(Vec<usize>, Node)>> {
    prop::collection::vec((prop::collection::vec(0usize..3, 1..4), node()), 0..20)
}

#[derive(Clone, Debug)]
struct Edit {
    target: Index,
    op: u8,
    bytes: Vec<u8>,
    mtime: (i64, i64),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            any::<Index>(),
            0u8..7,
            prop::collection::vec(any::<u8>(), 1..32),
            (1_000_000_000i64..2_000_000_000, 0i64..1_000_000_000),
        )
            .prop_map(|(target, op, bytes, mtime)| Edit {
                target,
                op,
                bytes,
                mtime,
            }),
        0..8,
    )
}

/// Builds the tree described by `spec` under `t`, skipping entries that clash with earlier ones.
fn build(t: &Tree, spec: &[(Vec<usize>, Node)]) {
    t.mkroot();
    for (names, node) in spec {
        let rel: PathBuf = names.iter().map(|&i| ["a", "b", "c"][i]).collect();
        let blocked = rel
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .any(|p| t.exists(p) && !t.meta(p).is_dir());
        if blocked || t.exists(&rel) {
            continue;
        }
        match node {
            Node::File(b) => t.file(&rel, b),
            Node::Dir => t.dir(&rel),
            Node::Link(target) => t.symlink(&rel, target),
        };
    }
}

/// Applies random edits (content, delete, add, type change, mtime, mode, extra hard link) that a
/// size+mtime comparison can see: content edits always change the size, since a rewrite within
/// one clock tick can keep the old mtime.
fn apply(t: &Tree, edits: &[Edit]) {
    for (n, e) in edits.iter().enumerate() {
        let entries: Vec<PathBuf> = t
            .rel_paths()
            .into_iter()
            .filter(|r| !r.as_os_str().is_empty())
            .collect();
        if entries.is_empty() {
            t.file(format!("added{n}"), &e.bytes);
            continue;
        }
        let rel = e.target.get(&entries).clone();
        let m = t.meta(&rel);
        match e.op {
            0 if m.is_file() => {
                let mut content = t.read(&rel);
                content.extend_from_slice(&e.bytes);
                t.file(&rel, content);
            }
            0 | 1 => {
                t.remove(&rel);
            }
            2 => {
                let name = format!("added{n}");
                let new = if m.is_dir() {
                    rel.join(name)
                } else {
                    rel.parent().unwrap_or(Path::new("")).join(name)
                };
                if !t.exists(&new) {
                    t.file(&new, &e.bytes);
                }
            }
            3 => {
                t.remove(&rel);
                if m.is_dir() {
                    t.file(&rel, &e.bytes);
                } else {
                    t.file(rel.join("inner"), &e.bytes);
                }
            }
            4 => {
                t.set_mtime(&rel, e.mtime.0, e.mtime.1);
            }
            5 if !m.file_type().is_symlink() => {
                const MODES: [u32; 8] = [0o600, 0o640, 0o700, 0o755, 0o777, 0o1777, 0o2755, 0o444];
                t.chmod(&rel, MODES[e.bytes[0] as usize % MODES.len()]);
            }
            6 if m.is_file() => {
                let link = rel
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(format!("link{n}"));
                if !t.exists(&link) {
                    t.hardlink(&link, &rel);
                }
            }
            _ => {}
        }
    }
}

fn blit_args(mode: &str, src: &Path, dst: &Path) -> Vec<OsString> {
    vec![mode.into(), src.into(), dst.into()]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mirror_converges_after_random_edits(
        tree in spec(),
        src_edits in edits(),
        dst_edits in edits(),
    ) {
        let sb = Sandbox::new();
        let (src, dst) = (sb.src(), sb.dst());
        build(&src, &tree);
        // An empty source is refused by design; keep the property about replication.
        if src.rel_paths().len() == 1 {
            src.file("always", b"x");
        }
        expect_code(&run(blit_args("mirror", src.root(), dst.root())), 0);
        assert_trees_equal(src.root(), dst.root());

        apply(&src, &src_edits);
        apply(&dst, &dst_edits);
        if src.rel_paths().len() == 1 {
            src.file("always", b"x");
        }
        expect_code(&run(blit_args("mirror", src.root(), dst.root())), 0);
        assert_trees_equal(src.root(), dst.root());
    }

    #[test]
    fn copy_never_deletes(src_tree in spec(), dst_tree in spec()) {
        let sb = Sandbox::new();
        let (src, dst) = (sb.src(), sb.dst());
        build(&src, &src_tree);
        build(&dst, &dst_tree);
        // Both trees are written within milliseconds, and a file of the same size made in the
        // same clock tick has the same mtime: the size+mtime check rightly calls such a pair
        // unchanged (as rsync does), whatever the bytes. Older times on the destination's files
        // keep the property about what a copy writes, not about the clock.
        for rel in dst.rel_paths() {
            if dst.meta(&rel).is_file() {
                dst.set_mtime(&rel, 1_000_000_000, 0);
            }
        }
        let before: BTreeMap<PathBuf, bool> = dst
            .rel_paths()
            .into_iter()
            .map(|r| {
                let m = dst.meta(&r);
                let non_empty_dir =
                    m.is_dir() && std::fs::read_dir(dst.p(&r)).unwrap().next().is_some();
                (r, non_empty_dir)
            })
            .collect();
        // A source non-folder meeting a non-empty destination folder is the one refusal.
        let conflicts: Vec<PathBuf> = src
            .rel_paths()
            .into_iter()
            .filter(|r| !src.meta(r).is_dir() && before.get(r) == Some(&true))
            .collect();

        let a = run(blit_args("copy", src.root(), dst.root()));
        expect_code(&a, if conflicts.is_empty() { 0 } else { 1 });

        for rel in before.keys() {
            prop_assert!(dst.exists(rel), "copy deleted {:?}", rel);
        }
        for rel in src.rel_paths() {
            if conflicts.iter().any(|c| rel.starts_with(c)) || src.meta(&rel).is_dir() {
                continue;
            }
            assert_entry_equal(&src.p(&rel), &dst.p(&rel), &format!("{rel:?}"));
        }
        prop_assert!(temps_under(dst.root()).is_empty());
    }
}
