//! The tenant boundary: every value an organization chooses (API bodies, path and query values,
//! webhook payloads) that reaches a command line, a host path or a network address is parsed here
//! into a domain type first. Control parses at the API edge; buildd parses again before it acts
//! (defence in depth). Nothing here does I/O: resolving a name and connecting belong to the
//! callers, which check every address they resolved with [`address::AddressPolicy`] and connect to
//! the address they checked.
//!
//! Every error is an [`Invalid`] whose message says what is wrong without naming the field: the
//! caller knows the field and names it. Messages quote at most [`ECHO_LIMIT`] characters of the
//! value they refuse.

#![forbid(unsafe_code)]

pub mod address;
pub mod git;
pub mod image;
pub mod path;
pub mod redact;
pub mod source;

/// A tenant value that was refused, with a lower-case message saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// How many characters of a refused value an error message quotes.
pub const ECHO_LIMIT: usize = 64;

/// `value` quoted for an error message: at most [`ECHO_LIMIT`] characters, control characters
/// escaped, `...` when cut.
pub fn echo(value: &str) -> String {
    let mut cut: String = value.chars().take(ECHO_LIMIT).collect();
    if cut.len() < value.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// True when `value` holds an ASCII control character (NUL, CR, LF, TAB, DEL, ...).
pub fn has_control(value: &str) -> bool {
    value.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_bounded_and_escaped() {
        let long = "a".repeat(1_000_000);
        let shown = echo(&long);
        assert!(shown.len() < ECHO_LIMIT + 8, "{}", shown.len());
        assert!(shown.ends_with("...\""));
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
        assert!(has_control("x\0y") && has_control("x\ry") && !has_control("x y"));
    }
}
