//! Where a tree lives: a local path, or a module of a `blit-daemon` (`blit://HOST[:PORT]/MODULE/PATH`).
//! The job dispatches on the pair, so the walk/plan/report stages stay shared by all.

use std::path::PathBuf;

pub use crate::remote::url::RemoteUrl;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine (file or folder).
    Local(PathBuf),
    Remote(RemoteUrl),
}

impl Endpoint {
    /// Parses a command-line argument: a `blit://` URL, or a local path. Any other
    /// `SCHEME://` is refused: taken as a path, `s3://bucket/x` would quietly become a local
    /// folder `s3:/bucket/x`.
    pub fn parse(arg: &str) -> Result<Self, String> {
        if let Some(url) = RemoteUrl::parse(arg) {
            return url.map(Endpoint::Remote);
        }
        if let Some(scheme) = url_scheme(arg) {
            return Err(format!(
                "{arg}: unknown scheme {scheme}:// (Blit reaches blit:// daemons; a local path that \
                 contains :// can be written ./{arg})"
            ));
        }
        Ok(Endpoint::Local(PathBuf::from(arg)))
    }
}

/// The scheme of an argument written as a URL (`SCHEME://...`, the scheme a letter followed by
/// letters, digits, `+`, `-` or `.`, as RFC 3986 has it), if it is written as one. One letter is
/// a Windows drive (`C://data`), not a scheme.
fn url_scheme(arg: &str) -> Option<&str> {
    let (scheme, _) = arg.split_once("://")?;
    if scheme.len() < 2 {
        return None;
    }
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first.is_ascii_alphabetic() && rest_ok).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_scheme_is_refused_and_a_path_stays_a_path() {
        for arg in [
            "s3://bucket/x",
            "ssh://host/p",
            "HTTP://h/p",
            "gs+x.y-z://b",
        ] {
            let e = Endpoint::parse(arg).unwrap_err();
            assert!(e.contains("unknown scheme") && e.contains(arg), "{e}");
        }
        for arg in [
            "./s3://bucket/x",
            "/data/a://b",
            "dir/x",
            "a:b",
            "1x://y",
            "://z",
            "C://data",
            "",
        ] {
            assert_eq!(
                Endpoint::parse(arg),
                Ok(Endpoint::Local(PathBuf::from(arg))),
                "{arg}"
            );
        }
        assert!(matches!(
            Endpoint::parse("blit://h/m/p"),
            Ok(Endpoint::Remote(_))
        ));
    }
}
