//! OCI image references a tenant names, by the distribution reference grammar:
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ registry "/" ] path
//! registry  := host [ ":" port ]          host: DNS name, IPv4 or [IPv6]
//! path      := component ( "/" component )*
//! component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest    := "sha256:" 64 lower-case hex digits
//! ```
//!
//! The first part of a name is the registry when it holds a `.` or a `:` or is `localhost`, as
//! Docker reads it. The name is at most [`MAX_NAME_LEN`] bytes. Nothing is normalised (no
//! `docker.io/library/` is added), so [`ImageRef`]'s `Display` gives back exactly what was parsed.
//! No accepted reference starts with `-`, holds a space, a control character or `..`.

use std::fmt;
use std::net::Ipv6Addr;

use crate::{Invalid, echo};

/// The longest name (registry and path) accepted, in bytes, as in distribution.
pub const MAX_NAME_LEN: usize = 255;
/// The longest tag accepted, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: Option<String>,
    path: String,
    tag: Option<String>,
    /// The 64 hex digits of a `sha256:` digest.
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| {
            Err(Invalid(format!(
                "{} is not an image reference: {why}",
                echo(value)
            )))
        };
        if value.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        // Bounded before any other work: name + ":" + tag + "@sha256:" + 64.
        if value.len() > MAX_NAME_LEN + 1 + MAX_TAG_LEN + 8 + 64 {
            return bad("too long");
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => match parse_digest(digest) {
                Some(hex) => (rest, Some(hex.to_owned())),
                None => return bad("the digest must be sha256: and 64 lower-case hex digits"),
            },
            None => (value, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return bad(
                "the tag must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
        if name.is_empty() {
            return bad("the name is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return bad(&format!("the name is longer than {MAX_NAME_LEN} bytes"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                if !valid_registry(first) {
                    return bad("the registry must be host[:port]");
                }
                (Some(first.to_owned()), path)
            }
            _ => (None, name),
        };
        if !path.split('/').all(valid_component) {
            return bad(
                "each part of the path must be lower-case letters and digits, joined by '.', '_', '__' or '-'",
            );
        }
        Ok(Self {
            registry,
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `host[:port]`, when the reference names one.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path inside the registry (`library/node`, `acme/app`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The 64 hex digits of the `sha256:` digest, when pinned.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

/// `image` pinned to `digest` (`sha256:<hex>`, as a registry reports it): the tag, if any, is
/// replaced by `@<digest>`. An image already pinned, or no digest (absent or empty), gives
/// `image` back unchanged. Works on the text, so a stored image is pinned the way it was stored.
pub fn pin_to_digest(image: &str, digest: Option<&str>) -> String {
    match digest {
        Some(digest) if !digest.is_empty() && !image.contains('@') => {
            let repo = image
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(image, |(repo, _)| repo);
            format!("{repo}@{digest}")
        }
        _ => image.to_owned(),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@sha256:{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}

fn parse_digest(value: &str) -> Option<&str> {
    let hex = value.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    (1..=MAX_TAG_LEN).contains(&b.len())
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Docker's rule for telling a registry from the first path part.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_registry(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        // [IPv6]:port or [IPv6]
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match value.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(value), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        h.len() <= 253
            && h.split('.').all(|label| {
                let b = label.as_bytes();
                (1..=63).contains(&b.len())
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            })
    });
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    host_ok && port_ok
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn valid_component(part: &str) -> bool {
    let b = part.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run between two alphanumerics.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_usual_forms() {
        for (input, registry, path, tag) in [
            ("nginx", None, "nginx", None),
            ("nginx:1.25-alpine", None, "nginx", Some("1.25-alpine")),
            ("library/node:20", None, "library/node", Some("20")),
            (
                "127.0.0.1:5000/org/app:abc",
                Some("127.0.0.1:5000"),
                "org/app",
                Some("abc"),
            ),
            ("localhost/app", Some("localhost"), "app", None),
            (
                "ghcr.io/a_b/c__d/e---f",
                Some("ghcr.io"),
                "a_b/c__d/e---f",
                None,
            ),
            ("[::1]:5000/app:v1", Some("[::1]:5000"), "app", Some("v1")),
            ("i", None, "i", None),
        ] {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry(), r.path(), r.tag()),
                (registry, path, tag),
                "{input}"
            );
            assert_eq!(r.to_string(), input);
        }
        let pinned = format!("127.0.0.1:5000/o/s@sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!(r.digest(), Some("ab".repeat(32).as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), pinned);
    }

    #[test]
    fn refuses_options_and_junk() {
        for bad in [
            "",
            "--help",
            "-x",
            "nginx:-x",
            "Nginx",
            "a/B",
            "a//b",
            "a/../b",
            "a b",
            "a\nb",
            "a\0b",
            "nginx:",
            ":tag",
            "nginx@sha256:abc",
            "nginx@md5:00",
            "nginx:.x",
            "a..b",
            "a.-b",
            "ex ample.com/a",
            "example.com:0/a",
            "example.com:99999/a",
            "-example.com/a",
            "[zz]:1/a",
            "/abs",
            "a/",
            // A first part with '.' is a registry (as Docker reads it), and this one is no host.
            "0_a.0/0",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad).to_string();
            assert!(
                !err.is_empty() && err.chars().all(|c| !c.is_control()),
                "{err}"
            );
        }
        let long_name = format!("a/{}", "b".repeat(MAX_NAME_LEN));
        assert!(ImageRef::parse(&long_name).is_err());
        let long_tag = format!("a:{}", "t".repeat(MAX_TAG_LEN + 1));
        assert!(ImageRef::parse(&long_tag).is_err());
        let huge = "a".repeat(1 << 20);
        let err = ImageRef::parse(&huge).unwrap_err().to_string();
        assert!(
            err.len() < 200,
            "the message echoes a bounded part: {}",
            err.len()
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}"
    }

    fn reference() -> impl Strategy<Value = String> {
        (
            prop::option::of(prop_oneof![
                "[a-z0-9]{1,8}\\.[a-z]{2,5}(:[1-9][0-9]{0,3})?",
                Just("localhost:5000".to_owned()),
                Just("[::1]:5000".to_owned()),
            ]),
            prop::collection::vec(component(), 1..4),
            prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(registry, path, tag, digest)| {
                // Without a registry a first part holding '.' would be read as one (refused
                // when it is not a host): the grammar's registry-less names start without it.
                let registry = match registry {
                    None if path[0].contains('.') => Some("registry.example".to_owned()),
                    r => r,
                };
                let mut s = registry.map(|r| format!("{r}/")).unwrap_or_default();
                s.push_str(&path.join("/"));
                if let Some(t) = tag {
                    s.push(':');
                    s.push_str(&t);
                }
                if let Some(d) = digest {
                    s.push_str("@sha256:");
                    s.push_str(&d);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn every_grammar_reference_parses_and_round_trips(s in reference()) {
            let r = ImageRef::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(r.to_string(), s);
        }

        #[test]
        fn whatever_is_accepted_round_trips_and_is_never_an_option(s in "\\PC{0,40}|[-a-zA-Z0-9_.:/@\\[\\]]{0,40}") {
            if let Ok(r) = ImageRef::parse(&s) {
                let shown = r.to_string();
                prop_assert_eq!(&shown, &s);
                prop_assert_eq!(ImageRef::parse(&shown).unwrap(), r);
                prop_assert!(!s.starts_with('-'));
                prop_assert!(!s.contains(".."));
                prop_assert!(s.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }

    #[test]
    fn pin_to_digest_replaces_the_tag_keeps_the_port_and_leaves_pinned_images() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            pin_to_digest("127.0.0.1:5000/o/app:v1", Some(&d)),
            format!("127.0.0.1:5000/o/app@{d}")
        );
        assert_eq!(
            pin_to_digest("127.0.0.1:5000/o/app", Some(&d)),
            format!("127.0.0.1:5000/o/app@{d}")
        );
        let pinned = format!("r.io/a:v1@{d}");
        assert_eq!(pin_to_digest(&pinned, Some(&d)), pinned);
        assert_eq!(pin_to_digest("nginx:1", None), "nginx:1");
        assert_eq!(pin_to_digest("nginx:1", Some("")), "nginx:1");
    }
}
