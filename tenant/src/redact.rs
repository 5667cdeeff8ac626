//! Tenant secrets kept out of logs: [`Redactor`] replaces known secret values in a line of text.
//! Control redacts every build log line before it stores it, and buildd every line and failure
//! it reports, each with the secrets it knows.

use std::borrow::Cow;

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secret values (or lines of multi-line ones) shorter than this are not redacted: a secret of
/// one to three characters would blank out every word that contains it.
pub const MIN_REDACTED_LEN: usize = 4;

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// Redacts each of `secrets`, and each line of a multi-line one (logs are split into lines),
    /// of at least [`MIN_REDACTED_LEN`] characters.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<String> = secrets
            .into_iter()
            .flat_map(|s| std::iter::once(s).chain(s.lines()))
            .map(|s| s.trim_end_matches(['\r', '\n']))
            .filter(|s| s.chars().count() >= MIN_REDACTED_LEN)
            .map(str::to_owned)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_are_redacted_longest_first_and_line_by_line() {
        let r = Redactor::new([
            "hunter2-token",
            "hunter2-token-long",
            "abc",
            "line one\nline two",
        ]);
        assert_eq!(
            r.redact("got hunter2-token-long and hunter2-token"),
            "got [redacted] and [redacted]"
        );
        // Too short to redact without blanking out words.
        assert_eq!(r.redact("abcdef"), "abcdef");
        // Each line of a multi-line secret, as build output splits it.
        assert_eq!(r.redact("x line two y"), "x [redacted] y");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(Redactor::new(["", "ab"]).is_empty());
    }

    proptest! {
        #[test]
        fn a_secret_never_survives_whatever_surrounds_it(
            secret in "[ -~]{4,40}",
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
        ) {
            let r = Redactor::new([secret.as_str()]);
            let line = format!("{before}{secret}{after}");
            // Outside the markers (a secret may be a piece of the marker's own text, `dact`).
            let left = r.redact(&line).replace(REDACTED, "\u{0}");
            prop_assert!(!left.contains(secret.as_str()));
        }
    }
}
