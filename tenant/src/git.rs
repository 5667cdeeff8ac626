//! Git revisions a tenant names: refs (branches, tags) and commits.
//!
//! A ref follows `git check-ref-format` (with one-level names allowed, as branch names are) and
//! more: no component may start with `-` (so it can never be read as an option), only printable
//! ASCII, at most [`MAX_REF_LEN`] bytes. Commits are full object names, never abbreviations.

use crate::{Invalid, echo};

/// The longest ref accepted, in bytes.
pub const MAX_REF_LEN: usize = 255;

/// A branch or tag name that git accepts and that cannot be read as an option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| {
            Err(Invalid(format!(
                "{} is not a valid git ref: {why}",
                echo(value)
            )))
        };
        if value.is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        if value.len() > MAX_REF_LEN {
            return bad(&format!("longer than {MAX_REF_LEN} bytes"));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control())
        {
            return bad(&format!("holds the character {c:?}"));
        }
        if let Some(c) = value.chars().find(|c| " ~^:?*[\\".contains(*c)) {
            return bad(&format!("holds {c:?}"));
        }
        if value.contains("..") {
            return bad("holds \"..\"");
        }
        if value.contains("@{") || value == "@" {
            return bad("holds \"@{\" or is \"@\"");
        }
        if value.ends_with('.') {
            return bad("ends with \".\"");
        }
        if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
            return bad("has an empty path component");
        }
        for part in value.split('/') {
            if part.starts_with('-') {
                return bad("a component starts with \"-\"");
            }
            if part.starts_with('.') {
                return bad("a component starts with \".\"");
            }
            if part.ends_with(".lock") {
                return bad("a component ends with \".lock\"");
            }
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full commit object name: 40 hex characters (SHA-1) or 64 (SHA-256), kept lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let hex = value.chars().all(|c| c.is_ascii_hexdigit());
        if hex && (value.len() == 40 || value.len() == 64) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(Invalid(format!(
                "{} is not a full commit id: expected 40 (or 64) hex characters",
                echo(value)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CommitSha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_branches_and_tags() {
        for ok in [
            "main",
            "feature/login-page",
            "refs/heads/main",
            "refs/tags/v1.2.3",
            "v1.2.3",
            "release_2026.12",
            "HEAD",
            "a-",
            "user@host",
        ] {
            assert_eq!(GitRef::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_options_and_what_git_refuses() {
        for bad in [
            "",
            "-x",
            "--upload-pack=touch /tmp/pwned",
            "refs/heads/--upload-pack=x",
            "feature/-x",
            "a..b",
            "a b",
            "a\nb",
            "a\rb",
            "a\0b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a@{1}",
            "@",
            "a.",
            "/a",
            "a/",
            "a//b",
            ".hidden",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "caf\u{e9}",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(GitRef::parse(&"a".repeat(MAX_REF_LEN)).is_ok());
        assert!(GitRef::parse(&"a".repeat(MAX_REF_LEN + 1)).is_err());
    }

    #[test]
    fn long_values_are_not_echoed_whole() {
        let err = GitRef::parse(&format!("-{}", "x".repeat(100_000))).unwrap_err();
        assert!(err.0.len() < 200, "{}", err.0.len());
    }

    #[test]
    fn commits_are_full_hex() {
        let sha1 = "0123456789abcdefABCDEF0123456789abcdef01";
        assert_eq!(
            CommitSha::parse(sha1).unwrap().as_str(),
            sha1.to_ascii_lowercase()
        );
        assert!(CommitSha::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "abc1234",
            &"g".repeat(40),
            &"a".repeat(41),
            "--all",
            &"a".repeat(39),
        ] {
            assert!(CommitSha::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn no_accepted_ref_is_an_option_or_climbs(value in "\\PC{0,40}|[-./a-z@{}~^:]{0,20}") {
            if let Ok(r) = GitRef::parse(&value) {
                prop_assert!(!r.as_str().starts_with('-'));
                prop_assert!(!r.as_str().contains(".."));
                prop_assert!(!r.as_str().contains("/-"));
                prop_assert!(!has_control_or_space(r.as_str()));
                prop_assert!(r.as_str().len() <= MAX_REF_LEN);
            }
        }

        #[test]
        fn accepted_commits_are_hex_of_full_length(value in "[0-9a-fA-F]{0,70}|\\PC{0,70}") {
            if let Ok(c) = CommitSha::parse(&value) {
                prop_assert!(c.as_str().len() == 40 || c.as_str().len() == 64);
                prop_assert!(c.as_str().chars().all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()));
            }
        }
    }

    fn has_control_or_space(s: &str) -> bool {
        s.chars().any(|c| c.is_control() || c == ' ')
    }
}
