//! Where a tenant's code comes from: an `https://` git URL on a public host, an SSH one
//! (`ssh://user@host[:port]/path` or scp-style `user@host:path`, fetched with the project's
//! deploy key), or (operator setting only) a repository on the build node's disk.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use crate::address::AddressPolicy;
use crate::{Invalid, echo, has_control};

/// The longest source URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A parsed git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    /// A repository served over HTTPS.
    Https(HttpsUrl),
    /// A repository served over SSH (the project's deploy key authenticates).
    Ssh(SshUrl),
    /// A repository on the build node's disk (`file:///path` or `/path`). Not a tenant feature:
    /// the caller accepts it only where the operator allowed local sources.
    Local(PathBuf),
}

/// The host part of an HTTPS URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A lower-case DNS name of at least two labels.
    Name(String),
    /// An address literal, already checked against the default [`AddressPolicy`].
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// `https://host[:port]/path`, without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    url: String,
    host: Host,
    port: u16,
}

impl HttpsUrl {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// `ssh://user@host[:port]/path` or `user@host:path`: a repository over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    url: String,
    user: String,
    host: Host,
    port: u16,
    path: String,
}

/// The SSH port a URL without one means.
pub const SSH_PORT: u16 = 22;

impl SshUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The repository path as the server gets it (scp-style paths are relative to the login's
    /// home; `ssh://` paths start with `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The name the server's host key is recorded under in `known_hosts`: `host`, or
    /// `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        if self.port == SSH_PORT {
            host
        } else {
            format!("[{host}]:{}", self.port)
        }
    }

    /// The same repository with its port left out (`user@host:path`, or `ssh://user@host/path`):
    /// what git is given when the connection itself is made to a relay that knows the port.
    pub fn without_port(&self) -> String {
        if self.path.starts_with('/') {
            format!("ssh://{}@{}{}", self.user, self.host, self.path)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.path)
        }
    }
}

impl SourceUrl {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| {
            Err(Invalid(format!(
                "{} is not a usable git source: {why}",
                echo(value)
            )))
        };
        if value.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if value.len() > MAX_URL_LEN {
            return bad(&format!("longer than {MAX_URL_LEN} bytes"));
        }
        if has_control(value) || value.contains(char::is_whitespace) {
            return bad("holds a space or a control character");
        }
        if let Some(path) = value.strip_prefix("file://") {
            return local(path).map(SourceUrl::Local).or_else(|e| bad(&e));
        }
        if value.starts_with('/') {
            return local(value).map(SourceUrl::Local).or_else(|e| bad(&e));
        }
        if let Some(rest) = value.strip_prefix("ssh://") {
            return ssh_url(value, rest, true)
                .map(SourceUrl::Ssh)
                .or_else(|e| bad(&e));
        }
        if !value.contains("://") && scp_like(value) {
            return ssh_url(value, value, false)
                .map(SourceUrl::Ssh)
                .or_else(|e| bad(&e));
        }
        let Some(rest) = value.strip_prefix("https://") else {
            return bad(
                "use an https:// URL, or ssh://user@host/path or user@host:path with a deploy key \
                 (other schemes and relative paths are not accepted)",
            );
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return bad(
                "credentials do not belong in the URL: give them as the source's username and password",
            );
        }
        if path.contains(['?', '#']) {
            return bad("a query or fragment has no place in a git URL");
        }
        if path.split('/').any(|s| s == ".." || s == ".") {
            return bad("the path holds \"..\" or \".\"");
        }
        if path.trim_matches('/').is_empty() {
            return bad("the URL names no repository path");
        }
        let (host, port) = split_port(authority)
            .map_err(|e| Invalid(format!("{} is not a usable git source: {e}", echo(value))))?;
        let host = parse_host(host)
            .map_err(|e| Invalid(format!("{} is not a usable git source: {e}", echo(value))))?;
        if let Host::Ip(ip) = host
            && let Err(refused) = AddressPolicy::default().check(ip)
        {
            return bad(&format!("{refused}, and only public hosts may be fetched"));
        }
        Ok(SourceUrl::Https(HttpsUrl {
            url: value.to_owned(),
            host,
            port,
        }))
    }
}

/// `user@host:path` (git's scp-like syntax: a colon before any slash).
fn scp_like(value: &str) -> bool {
    match (value.find(':'), value.find('/')) {
        (Some(colon), Some(slash)) => colon < slash || value[..slash].contains(']'),
        (Some(_), None) => true,
        _ => false,
    }
}

/// Parses `rest` (after `ssh://`, or the whole scp-like value) of `value`.
fn ssh_url(value: &str, rest: &str, scheme: bool) -> Result<SshUrl, String> {
    let (user, rest) = rest
        .split_once('@')
        .ok_or("name the login user (git@host:owner/repo.git or ssh://git@host/owner/repo.git)")?;
    let user_ok = (1..=64).contains(&user.len())
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !user_ok {
        return Err(format!(
            "{} is not a login user (letters, digits, '.', '_', '-'; credentials do not belong in the URL)",
            echo(user)
        ));
    }
    let (host, port, path) = if scheme {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = split_port(authority)?;
        let port = if authority.ends_with(']') || !authority.contains(':') {
            SSH_PORT
        } else {
            port
        };
        (host, port, path)
    } else {
        let (host, path) = if let Some(inside) = rest.strip_prefix('[') {
            let (host, after) = inside
                .split_once(']')
                .ok_or("an IPv6 address misses its ']'")?;
            (
                host,
                after.strip_prefix(':').ok_or("no ':' after the host")?,
            )
        } else {
            rest.split_once(':').ok_or("no ':' after the host")?
        };
        (host, SSH_PORT, path)
    };
    if path.contains(['?', '#']) {
        return Err("a query or fragment has no place in a git URL".into());
    }
    if path.starts_with('-') {
        return Err("the path starts with '-'".into());
    }
    if let Some(c) = path.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '~' | '+' | '@'))
    }) {
        return Err(format!("the path holds {c:?}"));
    }
    if path.split('/').any(|s| s == ".." || s == ".") {
        return Err("the path holds \"..\" or \".\"".into());
    }
    if path.trim_matches('/').is_empty() {
        return Err("the URL names no repository path".into());
    }
    let host = parse_host(host)?;
    if let Host::Ip(ip) = host
        && let Err(refused) = AddressPolicy::default().check(ip)
    {
        return Err(format!("{refused}, and only public hosts may be fetched"));
    }
    Ok(SshUrl {
        url: value.to_owned(),
        user: user.to_owned(),
        host,
        port,
        path: path.to_owned(),
    })
}

fn local(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("a local repository needs an absolute path".into());
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("the path holds \"..\"".into());
    }
    Ok(p.to_path_buf())
}

fn split_port(authority: &str) -> Result<(&str, u16), String> {
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address misses its ']'")?;
        match after {
            "" => (inside, None),
            p => (
                inside,
                Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n != 0 && p.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| format!("{} is not a port", echo(p)))?,
    };
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<Host, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let ok = name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // A last label of digits only would be read as a (partial) IPv4 address by some resolvers.
        && !labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if !ok {
        return Err(format!(
            "{} is not a DNS name of two labels or more",
            echo(host)
        ));
    }
    let last = labels.last().copied().unwrap_or_default();
    if name == "localhost"
        || [
            "localhost",
            "local",
            "internal",
            "localdomain",
            "home",
            "lan",
            "arpa",
        ]
        .contains(&last)
    {
        return Err(format!("{} names a local or internal host", echo(host)));
    }
    Ok(Host::Name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn https(value: &str) -> HttpsUrl {
        match SourceUrl::parse(value) {
            Ok(SourceUrl::Https(u)) => u,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn https_urls() {
        let u = https("https://github.com/acme/shop.git");
        assert_eq!(u.host(), &Host::Name("github.com".into()));
        assert_eq!(u.port(), 443);
        let u = https("https://Git.Example.com:8443/a/b");
        assert_eq!(u.host(), &Host::Name("git.example.com".into()));
        assert_eq!(u.port(), 8443);
        let u = https("https://[2a01:4f8::1]/x");
        assert_eq!(u.host().to_string(), "[2a01:4f8::1]");
        assert_eq!(https("https://140.82.121.3/x").port(), 443);
    }

    fn ssh(value: &str) -> SshUrl {
        match SourceUrl::parse(value) {
            Ok(SourceUrl::Ssh(u)) => u,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn ssh_urls() {
        let u = ssh("git@github.com:acme/shop.git");
        assert_eq!(
            (u.user(), u.host(), u.port(), u.path()),
            ("git", &Host::Name("github.com".into()), 22, "acme/shop.git")
        );
        assert_eq!(u.known_hosts_name(), "github.com");
        assert_eq!(u.without_port(), "git@github.com:acme/shop.git");
        let u = ssh("ssh://git@Git.Example.com:2222/srv/repos/app.git");
        assert_eq!(u.host(), &Host::Name("git.example.com".into()));
        assert_eq!((u.port(), u.path()), (2222, "/srv/repos/app.git"));
        assert_eq!(u.known_hosts_name(), "[git.example.com]:2222");
        assert_eq!(
            u.without_port(),
            "ssh://git@git.example.com/srv/repos/app.git"
        );
        let u = ssh("ssh://deploy@[2a01:4f8::1]/x/y");
        assert_eq!((u.user(), u.port()), ("deploy", 22));
        assert_eq!(u.host().to_string(), "[2a01:4f8::1]");
        let u = ssh("git@[2a01:4f8::1]:x/y.git");
        assert_eq!(u.path(), "x/y.git");
        assert_eq!(ssh("git@140.82.121.3:a/b").port(), 22);
        assert_eq!(ssh("ssh://git@gitlab.com/~user/repo").path(), "/~user/repo");
    }

    #[test]
    fn malformed_ssh_urls_say_what_is_wrong() {
        for (bad, why) in [
            ("github.com:acme/shop.git", "login user"),
            ("ssh://github.com/acme/shop.git", "login user"),
            ("ssh://git:pw@github.com/a/b", "login user"),
            ("-oProxyCommand=x@github.com:a/b", "login user"),
            ("git@github.com:-oProxyCommand=x", "starts with '-'"),
            ("git@github.com:", "no repository path"),
            ("ssh://git@github.com", "no repository path"),
            ("ssh://git@github.com:0/a", "not a port"),
            ("ssh://git@github.com:x/a", "not a port"),
            ("git@github.com:a/../b", "\"..\""),
            ("git@github.com:a/b?x", "query"),
            ("git@github.com:a/b;rm", "holds ';'"),
            ("git@github.com:a/$(id)", "holds '$'"),
            ("git@127.0.0.1:a/b", "only public hosts"),
            ("ssh://git@[::1]/a", "only public hosts"),
            ("git@git.localhost:a/b", "local or internal"),
            ("git@intranet:a/b", "two labels"),
            ("git@[::1:a/b", "misses its ']'"),
        ] {
            let err = SourceUrl::parse(bad).unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn local_sources_are_recognised() {
        assert_eq!(
            SourceUrl::parse("file:///srv/repos/app").unwrap(),
            SourceUrl::Local("/srv/repos/app".into())
        );
        assert_eq!(
            SourceUrl::parse("/srv/repos/app").unwrap(),
            SourceUrl::Local("/srv/repos/app".into())
        );
        assert!(SourceUrl::parse("file://../etc").is_err());
        assert!(SourceUrl::parse("/srv/../etc").is_err());
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "http://github.com/a/b",
            "git://github.com/a/b",
            "ext::sh -c touch% /tmp/pwned",
            "--upload-pack=x",
            "-u",
            "relative/path",
            "https://user:pw@github.com/a/b",
            "https://127.0.0.1/a",
            "https://[::1]/a",
            "https://10.0.0.1/a",
            "https://169.254.169.254/latest",
            "https://[::ffff:127.0.0.1]/a",
            "https://localhost/a",
            "https://x.localhost/a",
            "https://metadata.google.internal/a",
            "https://printer.local/a",
            "https://intranet/a",
            "https://github.com",
            "https://github.com/",
            "https://github.com/a/../b",
            "https://github.com/a b",
            "https://github.com/a\nb",
            "https://github.com/a\0",
            "https://github.com:0/a",
            "https://github.com:99999/a",
            "https://github.com:x/a",
            "https://github.com/a?x=1",
            "https://-bad.com/a",
            "https://1.2.3/a",
            "https://0x7f.1/a",
        ] {
            assert!(SourceUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("https://github.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(SourceUrl::parse(&long).unwrap_err().0.len() < 300);
    }

    proptest! {
        #[test]
        fn accepted_https_urls_never_name_a_non_public_literal(
            value in "https://(\\[[0-9a-f:]{2,20}\\]|[0-9.]{7,15}|[a-z0-9.-]{1,20})(:[0-9]{1,5})?/[a-z]{1,5}"
        ) {
            if let Ok(SourceUrl::Https(u)) = SourceUrl::parse(&value) {
                if let Host::Ip(ip) = u.host() {
                    prop_assert!(AddressPolicy::default().check(*ip).is_ok());
                }
                prop_assert!(u.port() != 0);
            }
        }
    }
}
