//! Paths a tenant names: the app's folder inside its repository and its health check path.

use std::path::{Component, Path};

use crate::{Invalid, echo, has_control};

/// A folder inside the repository: relative, never leaving it; empty = the repository's root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Subdirectory(String);

impl Subdirectory {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| {
            Err(Invalid(format!(
                "{} is not a folder inside the repository: {why}",
                echo(value)
            )))
        };
        if value.len() > 255 {
            return bad("longer than 255 bytes");
        }
        if has_control(value) {
            return bad("holds a control character");
        }
        let path = Path::new(value);
        if path.is_absolute() {
            return bad("it must be relative");
        }
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return bad("it must not hold \"..\"");
        }
        if value.split('/').any(|part| part.starts_with('-')) {
            return bad("a component starts with \"-\"");
        }
        Ok(Self(value.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty() || self.0 == "."
    }
}

/// An HTTP path for health checks: starts with `/`, printable ASCII without spaces, so it can be
/// written into a request line as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthPath(String);

impl HealthPath {
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let ok = value.starts_with('/')
            && value.len() <= 1024
            && value.chars().all(|c| c.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(Invalid(format!(
                "{} is not a health check path: it must start with '/' and hold only printable ASCII without spaces (at most 1024 bytes)",
                echo(value)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subdirectories() {
        for ok in ["", ".", "app", "apps/web", "apps/web/"] {
            assert!(Subdirectory::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Subdirectory::parse("apps/web/").unwrap().as_str(),
            "apps/web"
        );
        for bad in [
            "../../etc",
            "a/../../b",
            "/etc",
            "a\0",
            "a\nb",
            "-x",
            &"a".repeat(256),
        ] {
            assert!(Subdirectory::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn health_paths() {
        for ok in ["/", "/healthz", "/api/health?full=1"] {
            assert!(HealthPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "healthz",
            "/a b",
            "/x\r\nHost: evil",
            "/x\0",
            "/caf\u{e9}",
        ] {
            assert!(HealthPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn accepted_subdirectories_stay_inside(value in "[a-z./-]{0,30}|\\PC{0,30}") {
            if let Ok(s) = Subdirectory::parse(&value) {
                prop_assert!(!s.as_str().starts_with('/'));
                prop_assert!(!s.as_str().split('/').any(|p| p == ".."));
            }
        }

        #[test]
        fn accepted_health_paths_cannot_split_a_request(value in "\\PC{0,30}|/[\\x00-\\x7f]{0,30}") {
            if let Ok(p) = HealthPath::parse(&value) {
                prop_assert!(!p.as_str().contains(['\r', '\n', ' ', '\0']));
            }
        }
    }
}
