//! `.dockerignore` patterns as BuildKit hands them to the file sync (`exclude-patterns`), with
//! Docker's semantics: `*`/`?`/`[..]` within a path segment, `**` across segments, a match also
//! excludes everything below, `!` re-includes, and the last matching pattern wins.

/// Compiled exclude patterns.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Excludes {
    pub fn new(raw: &[String]) -> Self {
        let patterns = raw
            .iter()
            .filter_map(|p| {
                let p = p.trim();
                let (negate, p) = match p.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, p),
                };
                let p = p
                    .trim_start_matches("./")
                    .trim_start_matches('/')
                    .trim_end_matches('/');
                (!p.is_empty()).then(|| (negate, p.split('/').map(str::to_owned).collect()))
            })
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative, `/`-separated) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (negate, pattern) in &self.patterns {
            // A pattern matching the path or one of its parents.
            let hit = (1..=segments.len()).any(|n| matches(pattern, &segments[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            (0..=path.len()).any(|skip| matches(&pattern[1..], &path[skip..]))
        }
        (Some(p), Some(s)) => {
            segment(p.as_bytes(), s.as_bytes()) && matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Glob match of one segment: `*`, `?`, `[...]` (with `^`/`!` negation and ranges), `\` escapes.
fn segment(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| segment(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && segment(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().position(|c| *c == b']') else {
                return !s.is_empty() && s[0] == b'[' && segment(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut class = &p[1..end];
            let negate = matches!(class.first(), Some(b'^' | b'!'));
            if negate {
                class = &class[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && segment(&p[end + 1..], &s[1..])
        }
        Some(b'\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && segment(&p[2..], &s[1..]),
        Some(c) => !s.is_empty() && s[0] == *c && segment(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str]) -> Excludes {
        Excludes::new(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn docker_semantics() {
        let e = ex(&[
            "node_modules",
            "*.log",
            "docs/**/*.md",
            "!docs/keep.md",
            ".env*",
            "tmp/",
        ]);
        assert!(e.excludes("node_modules"));
        assert!(
            e.excludes("node_modules/x/index.js"),
            "below an excluded folder"
        );
        assert!(e.excludes("debug.log"));
        assert!(!e.excludes("src/debug.log"), "* stays within one segment");
        assert!(e.excludes("docs/a/b/c.md"));
        assert!(e.excludes("docs/x.md"), "** matches zero segments");
        assert!(!e.excludes("docs/keep.md"), "! re-includes");
        assert!(e.excludes(".env.production"));
        assert!(e.excludes("tmp/a"));
        assert!(!e.excludes("server.js"));
        assert!(ex(&["[a-c]?.txt"]).excludes("b1.txt"));
        assert!(!ex(&["[!a-c]?.txt"]).excludes("b1.txt"));
        assert!(!ex(&[]).excludes("anything"));
    }
}
