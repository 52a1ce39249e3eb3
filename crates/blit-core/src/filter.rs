//! Include/exclude rules, rsync-style but without rsync's order-dependent rule list: an entry is
//! left out when it matches some exclude and no include. That is easy to predict, and it is what
//! both ends apply, so an excluded entry is neither copied nor deleted.
//!
//! Patterns are globs relative to the source root (`*` stays within one name, `**` crosses
//! folders). A pattern without `/` matches a name at any depth (like `.gitignore`); with a `/` it
//! matches the whole relative path (a leading `/` is optional); a trailing `/` limits it to folders.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    exclude: Rules,
    include: Rules,
}

impl Filter {
    pub fn new(excludes: &[String], includes: &[String]) -> Result<Self> {
        Ok(Filter {
            exclude: Rules::new(excludes)?,
            include: Rules::new(includes)?,
        })
    }

    /// Reads exclude patterns from a file, one per line; blank lines and `#` comments are skipped.
    pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(crate::error::Op::Read, path, e))?;
        Ok(text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    /// True when the entry at `rel` (relative to the root) is to be left alone.
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        if self.exclude.is_empty() || rel.as_os_str().is_empty() {
            return false;
        }
        self.exclude.matches(rel, is_dir) && !self.include.matches(rel, is_dir)
    }
}

/// Four sets, so each path needs at most four lookups whatever the number of patterns.
#[derive(Clone, Debug, Default)]
struct Rules {
    name: Option<GlobSet>,
    path: Option<GlobSet>,
    dir_name: Option<GlobSet>,
    dir_path: Option<GlobSet>,
}

impl Rules {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut sets: [GlobSetBuilder; 4] = std::array::from_fn(|_| GlobSetBuilder::new());
        let mut used = [false; 4];
        for raw in patterns {
            let bad = |reason: String| Error::Pattern {
                pattern: raw.clone(),
                reason,
            };
            let (body, dir_only) = match raw.strip_suffix('/') {
                Some(b) => (b, true),
                None => (raw.as_str(), false),
            };
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(bad("empty pattern".into()));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            let slot = usize::from(anchored) + 2 * usize::from(dir_only);
            sets[slot].add(glob);
            used[slot] = true;
        }
        let mut built = Vec::with_capacity(4);
        for (builder, used) in sets.into_iter().zip(used) {
            built.push(if used {
                Some(builder.build().map_err(|e| Error::Pattern {
                    pattern: patterns.join(" "),
                    reason: e.to_string(),
                })?)
            } else {
                None
            });
        }
        let mut it = built.into_iter();
        Ok(Rules {
            name: it.next().flatten(),
            path: it.next().flatten(),
            dir_name: it.next().flatten(),
            dir_path: it.next().flatten(),
        })
    }

    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.path.is_none()
            && self.dir_name.is_none()
            && self.dir_path.is_none()
    }

    fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        let hit = |set: &Option<GlobSet>, p: &Path| set.as_ref().is_some_and(|s| s.is_match(p));
        hit(&self.name, name)
            || hit(&self.path, rel)
            || (is_dir && (hit(&self.dir_name, name) || hit(&self.dir_path, rel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(ex: &[&str], inc: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::new(&s(ex), &s(inc)).unwrap()
    }

    #[test]
    fn name_patterns_match_at_any_depth() {
        let f = f(&["*.log"], &[]);
        assert!(f.excludes(Path::new("a.log"), false));
        assert!(f.excludes(Path::new("x/y/a.log"), false));
        assert!(!f.excludes(Path::new("x/a.txt"), false));
    }

    #[test]
    fn slash_patterns_are_anchored_and_star_stays_in_one_name() {
        let f = f(&["/src/*.rs", "deep/**/z"], &[]);
        assert!(f.excludes(Path::new("src/a.rs"), false));
        assert!(!f.excludes(Path::new("src/m/a.rs"), false));
        assert!(!f.excludes(Path::new("x/src/a.rs"), false));
        assert!(f.excludes(Path::new("deep/a/b/z"), false));
    }

    #[test]
    fn trailing_slash_means_folders_only_and_include_wins() {
        let f = f(&["cache/", "*.tmp"], &["keep.tmp"]);
        assert!(f.excludes(Path::new("a/cache"), true));
        assert!(!f.excludes(Path::new("a/cache"), false));
        assert!(f.excludes(Path::new("b.tmp"), false));
        assert!(!f.excludes(Path::new("d/keep.tmp"), false));
    }

    #[test]
    fn bad_pattern_is_reported() {
        let err = Filter::new(&["a[".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("a["));
    }
}
