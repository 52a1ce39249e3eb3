//! `blit://HOST[:PORT]/MODULE/PATH`, as the command line names a remote tree.

use std::fmt;

pub const DEFAULT_PORT: u16 = 9031;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    pub host: String,
    pub port: u16,
    /// Empty only for `blit list-modules blit://HOST`.
    pub module: String,
    /// Inside the module, `/`-separated, without leading or trailing slashes.
    pub path: String,
    /// The URL ended with `/` (a file copied there goes inside it).
    pub trailing_slash: bool,
}

impl RemoteUrl {
    /// `None` when `arg` is not a `blit://` URL at all; `Some(Err)` when it is one but malformed.
    pub fn parse(arg: &str) -> Option<Result<RemoteUrl, String>> {
        let rest = arg.strip_prefix("blit://")?;
        Some(Self::parse_rest(arg, rest))
    }

    fn parse_rest(arg: &str, rest: &str) -> Result<RemoteUrl, String> {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{arg}: expected blit://HOST[:PORT]/MODULE/PATH"))?;
        if host.is_empty() {
            return Err(format!("{arg}: the host is missing"));
        }
        let trailing_slash = path.ends_with('/');
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
        let module = parts.next().unwrap_or("").to_string();
        let rest: Vec<&str> = parts.collect();
        if rest.contains(&"..") || module == ".." {
            return Err(format!("{arg}: `..` is not allowed in a remote path"));
        }
        Ok(RemoteUrl {
            host: host.to_string(),
            port,
            module,
            path: rest.join("/"),
            trailing_slash,
        })
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((authority, DEFAULT_PORT)),
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blit://{}/{}", self.address(), self.module)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts() {
        let u = RemoteUrl::parse("blit://nas:7000/backup/photos/2024/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.module.as_str(), u.path.as_str()),
            ("nas", 7000, "backup", "photos/2024")
        );
        assert!(u.trailing_slash);
        let u = RemoteUrl::parse("blit://[::1]/m").unwrap().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", DEFAULT_PORT));
        assert_eq!(u.to_string(), "blit://[::1]:9031/m");
        assert!(RemoteUrl::parse("/local/path").is_none());
    }

    #[test]
    fn refuses_dot_dot_and_bad_ports() {
        assert!(RemoteUrl::parse("blit://h/m/../x").unwrap().is_err());
        assert!(RemoteUrl::parse("blit://h:port/m").unwrap().is_err());
        assert!(RemoteUrl::parse("blit:///m").unwrap().is_err());
    }
}
