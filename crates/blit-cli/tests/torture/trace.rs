//! Reading `strace -ff -y -s 4096 -o LOG` output: which system calls changed something inside the
//! destination, and whether each did so through a folder descriptor and a single-component name.
//!
//! With `-y`, every descriptor argument is printed with the path it refers to (`5</tmp/x/dst>`),
//! so a call's target folder is known without tracking descriptors; with `-ff`, each thread
//! writes its own file, so calls are never split into "unfinished"/"resumed" halves.

use std::path::{Path, PathBuf};

/// One argument of a traced call.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A descriptor, with the path strace resolved for it (if any).
    Fd(i64, Option<String>),
    /// `AT_FDCWD`.
    Cwd,
    /// A quoted string, unescaped to its bytes.
    Str(Vec<u8>),
    /// `NULL`.
    Null,
    /// Anything else, as printed (flags, numbers, structures).
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    pub line: String,
}

/// Parses one line of a per-thread strace log; `None` for signals, exits and the like.
pub fn parse_line(line: &str) -> Option<Call> {
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = open + 1;
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut closed = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' => {
                // A C string literal, possibly followed by `...` when truncated.
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                cur.push_str(&line[start..=i.min(bytes.len() - 1)]);
            }
            b'<' if cur.bytes().last().is_some_and(|b| b.is_ascii_digit())
                || cur.ends_with("AT_FDCWD") =>
            {
                // `-y` decoration: `5</path/of/fd>`.
                let start = i;
                while i < bytes.len() && bytes[i] != b'>' {
                    i += 1;
                }
                cur.push_str(&line[start..=i.min(bytes.len() - 1)]);
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                cur.push(c as char);
            }
            b')' if depth == 0 => {
                closed = true;
                break;
            }
            b')' | b']' | b'}' => {
                depth -= 1;
                cur.push(c as char);
            }
            b',' if depth == 0 => {
                args.push(classify(cur.trim()));
                cur.clear();
            }
            _ => cur.push(c as char),
        }
        i += 1;
    }
    if !closed {
        return None;
    }
    if !cur.trim().is_empty() {
        args.push(classify(cur.trim()));
    }
    Some(Call {
        name: name.to_string(),
        args,
        line: line.to_string(),
    })
}

fn classify(s: &str) -> Arg {
    if s == "NULL" {
        return Arg::Null;
    }
    if s.starts_with("AT_FDCWD") {
        return Arg::Cwd;
    }
    if s.starts_with('"') {
        let body = s.trim_end_matches("...");
        let body = &body[1..body.len().saturating_sub(1).max(1)];
        return Arg::Str(unescape(body));
    }
    let digits: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    if !digits.is_empty() && s[digits.len()..].starts_with('<') && s.ends_with('>') {
        let path = &s[digits.len() + 1..s.len() - 1];
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        return Arg::Fd(digits.parse().unwrap_or(-1), Some(path.to_string()));
    }
    Arg::Other(s.to_string())
}

/// Undoes strace's C-style escaping (`\"`, `\\`, `\n`, `\t`, `\xNN`, octal `\NNN`).
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).unwrap_or("0");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            d if d.is_ascii_digit() => {
                let mut v: u32 = 0;
                let mut k = 0;
                while k < 3 && i < b.len() && b[i].is_ascii_digit() {
                    v = v * 8 + (b[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
                continue;
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// How a mutating call named its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `*at` call: folder descriptor (with its path) and name.
    At { dir: String, name: Vec<u8> },
    /// `*at` call with `AT_FDCWD`, or a plain path call: the path as given.
    Path(Vec<u8>),
}

/// The targets a call writes to, if it is one that creates, changes or removes a named entry.
/// Calls on an open descriptor alone (`fchmod`, `futimens`, `write`, `fsetxattr`) name no entry
/// and are not listed: their descriptor came from an earlier, checked call.
pub fn write_targets(c: &Call) -> Vec<Target> {
    let a = &c.args;
    let at = |fd: usize, p: usize| -> Option<Target> {
        let name = match a.get(p)? {
            Arg::Str(s) => s.clone(),
            _ => return None,
        };
        match a.get(fd)? {
            Arg::Fd(_, Some(dir)) => Some(Target::At {
                dir: dir.clone(),
                name,
            }),
            // A descriptor strace could not resolve: report it as a bare name in an unknown
            // folder, which the checker treats as a violation if it could be inside.
            Arg::Fd(n, None) => Some(Target::At {
                dir: format!("<fd {n}>"),
                name,
            }),
            _ => Some(Target::Path(name)),
        }
    };
    let path = |p: usize| -> Option<Target> {
        match a.get(p)? {
            Arg::Str(s) => Some(Target::Path(s.clone())),
            _ => None,
        }
    };
    let writes_flags = |s: &str| {
        ["O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC"]
            .iter()
            .any(|f| s.contains(f))
    };
    let flags = |i: usize| match a.get(i) {
        Some(Arg::Other(s)) => s.clone(),
        _ => String::new(),
    };
    let v: Vec<Option<Target>> = match c.name.as_str() {
        "openat" if writes_flags(&flags(2)) => vec![at(0, 1)],
        "openat2" if writes_flags(&flags(2)) => vec![at(0, 1)],
        "open" if writes_flags(&flags(1)) => vec![path(0)],
        "creat" | "mkdir" | "mknod" | "unlink" | "rmdir" | "chmod" | "chown" | "lchown"
        | "utime" | "utimes" | "truncate" | "setxattr" | "lsetxattr" | "removexattr"
        | "lremovexattr" => vec![path(0)],
        "mkdirat" | "mknodat" | "unlinkat" | "fchmodat" | "fchmodat2" | "fchownat"
        | "futimesat" | "setxattrat" | "removexattrat" => vec![at(0, 1)],
        // utimensat(fd, NULL, ...) is the descriptor form (futimens).
        "utimensat" if a.get(1) != Some(&Arg::Null) => vec![at(0, 1)],
        "rename" => vec![path(0), path(1)],
        "renameat" | "renameat2" => vec![at(0, 1), at(2, 3)],
        "link" => vec![path(1)],
        "linkat" => vec![at(2, 3)],
        "symlink" => vec![path(1)],
        "symlinkat" => vec![at(1, 2)],
        _ => vec![],
    };
    v.into_iter().flatten().collect()
}

/// The verdict on one write: fine, or why not.
pub enum Verdict {
    /// Not inside the destination at all.
    Outside,
    /// Inside, through a folder descriptor and a single-component name.
    Relative,
    /// Inside, through `/proc/self/fd/N/name` (the xattr calls, which had no `*at` form before
    /// Linux 6.13): still resolved from a held descriptor.
    ProcFd,
    /// Inside, through a full or multi-component path.
    Violation(String),
}

fn single_component(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'/') && name != b"." && name != b".."
}

/// The folder descriptor itself: `"."` (an `O_TMPFILE` open, which creates an unnamed file in
/// that folder) or `""` (`AT_EMPTY_PATH`).
fn the_folder_itself(name: &[u8]) -> bool {
    name.is_empty() || name == b"."
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True when `p` is strictly below `root`.
fn strictly_inside(p: &Path, root: &Path) -> bool {
    p != root && p.starts_with(root)
}

/// Judges one write target. `cwd` resolves relative paths; `dst` is the destination root (its own
/// creation and metadata are not "inside" it).
pub fn judge(t: &Target, dst: &Path, cwd: &Path) -> Verdict {
    use std::os::unix::ffi::OsStrExt;
    match t {
        Target::At { dir, name } => {
            let dir_path = PathBuf::from(dir);
            let inside_dir = dir_path == dst || strictly_inside(&dir_path, dst);
            if dir.starts_with("<fd") {
                return Verdict::Violation(format!(
                    "descriptor without a known folder: {dir} {:?}",
                    lossy(name)
                ));
            }
            if !inside_dir {
                // A name relative to a folder outside DST can still reach inside with slashes.
                let full = dir_path.join(std::ffi::OsStr::from_bytes(name));
                return if strictly_inside(&full, dst) {
                    Verdict::Violation(format!("multi-component name {:?} from {dir}", lossy(name)))
                } else {
                    Verdict::Outside
                };
            }
            if single_component(name) || the_folder_itself(name) {
                Verdict::Relative
            } else {
                Verdict::Violation(format!(
                    "name {:?} relative to {dir} is not one component",
                    lossy(name)
                ))
            }
        }
        Target::Path(p) => {
            if let Some(rest) = p.strip_prefix(b"/proc/self/fd/".as_slice()) {
                let mut parts = rest.splitn(2, |&b| b == b'/');
                let fd = parts.next().unwrap_or_default();
                let name = parts.next().unwrap_or_default();
                return if !fd.is_empty()
                    && fd.iter().all(u8::is_ascii_digit)
                    && single_component(name)
                {
                    Verdict::ProcFd
                } else {
                    Verdict::Violation(format!("/proc path {:?}", lossy(p)))
                };
            }
            let path = Path::new(std::ffi::OsStr::from_bytes(p));
            let full = if path.is_absolute() {
                path.to_path_buf()
            } else {
                cwd.join(path)
            };
            if strictly_inside(&full, dst) {
                Verdict::Violation(format!("full path {:?}", lossy(p)))
            } else {
                Verdict::Outside
            }
        }
    }
}

/// Every call in every per-thread log `LOG.<tid>` next to `prefix`.
pub fn read_logs(prefix: &Path) -> Vec<Vec<Call>> {
    let dir = prefix.parent().unwrap();
    let stem = prefix.file_name().unwrap().to_string_lossy().into_owned() + ".";
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&stem) {
            let text = std::fs::read(e.path()).unwrap();
            let text = String::from_utf8_lossy(&text);
            out.push(text.lines().filter_map(parse_line).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decorated_descriptors_and_strings() {
        let c = parse_line(
            r#"renameat(11</tmp/d/a b>, ".~blit-3c40-1.tmp", 11</tmp/d/a b>, "f\351\n") = 0"#,
        )
        .unwrap();
        assert_eq!(c.name, "renameat");
        assert_eq!(c.args[0], Arg::Fd(11, Some("/tmp/d/a b".into())));
        assert_eq!(c.args[3], Arg::Str(b"f\xe9\n".to_vec()));
        let t = write_targets(&c);
        assert_eq!(t.len(), 2);
        let dst = Path::new("/tmp/d");
        assert!(matches!(
            judge(&t[1], dst, Path::new("/")),
            Verdict::Relative
        ));
    }

    #[test]
    fn flags_full_paths_and_cwd_relative_calls() {
        let dst = Path::new("/tmp/d");
        let c = parse_line(r#"mkdir("/tmp/d/x", 0700) = 0"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::Violation(_)
        ));
        let c = parse_line(r#"unlinkat(AT_FDCWD, "d/x", 0) = 0"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/tmp")),
            Verdict::Violation(_)
        ));
        let c = parse_line(r#"fchmodat(5</tmp/d>, "a/b", 0755) = 0"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::Violation(_)
        ));
        // The root itself, by path, is not inside.
        let c = parse_line(r#"mkdir("/tmp/d", 0777) = 0"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::Outside
        ));
        // Descriptor forms name no entry.
        let c = parse_line(r#"utimensat(14</tmp/d/.~blit-1-1.tmp>, NULL, [UTIME_OMIT, {tv_sec=1, tv_nsec=2}], 0) = 0"#).unwrap();
        assert!(write_targets(&c).is_empty());
        // Reads are not writes.
        let c =
            parse_line(r#"openat(5</tmp/d>, "a", O_RDONLY|O_NOFOLLOW|O_CLOEXEC) = 6</tmp/d/a>"#)
                .unwrap();
        assert!(write_targets(&c).is_empty());
        // An unnamed file made in the folder, then linked in by descriptor.
        let c = parse_line(r#"openat(7</tmp/d/a>, ".", O_WRONLY|O_CLOEXEC|O_TMPFILE, 0644) = 9</tmp/d/a/#123 (deleted)>"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::Relative
        ));
        let c = parse_line(
            r#"linkat(9</tmp/d/a/#123 (deleted)>, "", 7</tmp/d/a>, "f", AT_EMPTY_PATH) = 0"#,
        )
        .unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::Relative
        ));
        let c = parse_line(r#"lsetxattr("/proc/self/fd/7/f", "user.k", "v", 1, 0) = 0"#).unwrap();
        assert!(matches!(
            judge(&write_targets(&c)[0], dst, Path::new("/")),
            Verdict::ProcFd
        ));
    }
}
