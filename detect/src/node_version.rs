//! Which Node.js an app asks for (`.nvmrc`, `.node-version`, `engines.node`), and whether a
//! major the platform's base image offers satisfies it. Pure.
//!
//! The ranges understood are the ones these files hold in practice: `20`, `v20.11.1`, `20.x`,
//! `lts/*`, `node`, `>=18`, `>18.2`, `<=22`, `<21`, `^20.3`, `~20.1`, `18 || 20`, and
//! space-separated conjunctions (`>=18 <23`). Anything else is "cannot tell", and the build goes
//! on with the offered Node rather than failing on a range it misread.

/// A Node version request and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    /// `.nvmrc`, `.node-version` or `engines.node`.
    pub source: String,
    pub spec: String,
}

/// The first request found, in the order nvm and most hosts read them.
pub fn requested(
    nvmrc: Option<&str>,
    node_version: Option<&str>,
    engines: Option<&str>,
) -> Option<NodeRequest> {
    [
        (".nvmrc", nvmrc),
        (".node-version", node_version),
        ("engines.node", engines),
    ]
    .into_iter()
    .find_map(|(source, text)| {
        let spec = text?.lines().next()?.trim();
        (!spec.is_empty()).then(|| NodeRequest {
            source: source.to_owned(),
            spec: spec.to_owned(),
        })
    })
}

/// The `engines.node` of each of `names` (the app's direct dependencies) in an npm lock file
/// (`packages["node_modules/<name>"]`, lockfileVersion 2 and 3), as requests naming the package
/// and its version. A lock file that does not parse gives none: the install says what is wrong.
pub fn of_dependencies<'a>(
    lock: &str,
    names: impl Iterator<Item = &'a String>,
) -> Vec<NodeRequest> {
    let Ok(lock) = serde_json::from_str::<serde_json::Value>(lock) else {
        return Vec::new();
    };
    let Some(packages) = lock.get("packages").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let Some(entry) = packages.get(&format!("node_modules/{name}")) else {
            continue;
        };
        let Some(spec) = entry
            .get("engines")
            .and_then(|e| e.get("node"))
            .and_then(|n| n.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        else {
            continue;
        };
        let version = entry.get("version").and_then(|v| v.as_str()).unwrap_or("");
        out.push(NodeRequest {
            source: format!("{name}@{version} (its engines.node in package-lock.json)"),
            spec: spec.to_owned(),
        });
    }
    out
}

/// Whether Node `major` (any minor) satisfies `spec`; `None` when the spec is not understood.
pub fn satisfies(spec: &str, major: u64) -> Option<bool> {
    let mut any = false;
    for alternative in spec.split("||") {
        let mut all = true;
        let mut words = 0;
        for word in alternative.split_whitespace() {
            words += 1;
            all &= term(word, major)?;
        }
        if words == 0 {
            return None;
        }
        any |= all;
    }
    Some(any)
}

/// One comparator, judged on majors.
fn term(word: &str, major: u64) -> Option<bool> {
    let word = word.trim_start_matches('=');
    match word {
        "*" | "x" | "node" | "latest" | "current" | "stable" => return Some(true),
        // The active LTS lines are the even majors this platform builds.
        "lts/*" | "lts" => return Some(major.is_multiple_of(2)),
        _ => {}
    }
    let (op, rest) = ["<=", ">=", "<", ">", "^", "~"]
        .iter()
        .find_map(|op| word.strip_prefix(op).map(|r| (*op, r)))
        .unwrap_or(("", word));
    let rest = rest.trim_start_matches('v');
    let mut parts = rest.split('.');
    let want: u64 = parts.next()?.parse().ok()?;
    let minor_given = parts
        .next()
        .is_some_and(|p| p != "x" && p != "*" && p != "0");
    Some(match op {
        ">=" => major >= want,
        // `>20.2` is met by a later 20.x; `>20` is not.
        ">" => major > want || (major == want && minor_given),
        "<=" => major <= want,
        "<" => major < want || (major == want && minor_given),
        _ => major == want,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_specs_are_judged_on_the_major() {
        for (spec, ok) in [
            ("20", true),
            ("v20.11.1", true),
            ("20.x", true),
            ("18", false),
            ("v22", false),
            (">=18", true),
            (">=22.0.0", false),
            (">18", true),
            (">20", false),
            (">20.2", true),
            ("<21", true),
            ("<20", false),
            ("^20.3.0", true),
            ("^18.17", false),
            ("~20.1", true),
            ("18 || 20", true),
            ("16 || 18", false),
            (">=18 <21", true),
            (">=18 <20", false),
            ("lts/*", true),
            ("^22.22.3||^24.15.0||>=26.0.0", false),
            ("node", true),
            ("*", true),
        ] {
            assert_eq!(satisfies(spec, 20), Some(ok), "{spec}");
        }
        assert_eq!(satisfies("lts/hydrogen", 20), None);
        assert_eq!(satisfies("", 20), None);
    }

    #[test]
    fn the_direct_dependencies_engines_are_read_from_the_lock_file() {
        let lock = r#"{"lockfileVersion": 3, "packages": {
            "": {"dependencies": {"astro": "^7.4.8", "left": "1"}},
            "node_modules/astro": {"version": "7.4.8", "engines": {"node": ">=22.23.4", "npm": ">=9"}},
            "node_modules/left": {"version": "1.0.0"},
            "node_modules/deep": {"version": "2.0.0", "engines": {"node": ">=26"}}
        }}"#;
        let names = ["astro".to_owned(), "left".to_owned(), "missing".to_owned()];
        let found = of_dependencies(lock, names.iter());
        assert_eq!(
            found,
            [NodeRequest {
                source: "astro@7.4.8 (its engines.node in package-lock.json)".into(),
                spec: ">=22.23.4".into(),
            }]
        );
        assert!(of_dependencies("{not json", names.iter()).is_empty());
    }

    #[test]
    fn nvmrc_wins_then_node_version_then_engines() {
        let r = requested(Some("v18\n"), Some("20"), Some(">=18")).unwrap();
        assert_eq!((r.source.as_str(), r.spec.as_str()), (".nvmrc", "v18"));
        let r = requested(None, Some(" 20.11 \n"), Some(">=18")).unwrap();
        assert_eq!(
            (r.source.as_str(), r.spec.as_str()),
            (".node-version", "20.11")
        );
        let r = requested(Some("\n"), None, Some(">=18")).unwrap();
        assert_eq!(r.source, "engines.node");
        assert_eq!(requested(None, None, None), None);
    }
}
