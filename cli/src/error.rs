//! What can go wrong in a command, and the exit code each class gets (`exit`).

/// Exit codes: one per class of failure, stated in `stackpad --help`.
pub mod exit {
    /// The command did what it was asked.
    pub const OK: i32 = 0;
    /// Anything not below: the network, the API's own failures (5xx), local files.
    pub const OTHER: i32 = 1;
    /// The command line (clap's own code) or what it names is incomplete: no target, an
    /// ambiguous name, not logged in.
    pub const USAGE: i32 = 2;
    /// The API refused the request (a 4xx answer other than 404).
    pub const REFUSED: i32 = 3;
    /// What was named does not exist (a 404 answer, or no such name).
    pub const NOT_FOUND: i32 = 4;
    /// A followed deployment ended other than ready (failed, cancelled, superseded), or a
    /// followed backup or restore failed.
    pub const DEPLOYMENT_FAILED: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("not logged in: run `stackpad login --url URL --token TOKEN` first ({0})")]
    NotLoggedIn(String),
    #[error("{0}")]
    Usage(String),
    #[error("request failed: {0}")]
    Http(String),
    #[error("the API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no {what} named {name:?}{}", suggest(suggestions, *listed))]
    NotFound {
        what: &'static str,
        name: String,
        suggestions: Vec<String>,
        /// `suggestions` is every name there is (none was close).
        listed: bool,
    },
    #[error("{what} {name:?} is ambiguous: it could be {}; name one of them", candidates.join(", "))]
    Ambiguous {
        what: &'static str,
        name: String,
        candidates: Vec<String>,
    },
    #[error(
        "which {what}? pass {flag}, or run `stackpad link` in the app's directory to make it \
         the default there"
    )]
    NoTarget {
        what: &'static str,
        flag: &'static str,
    },
    #[error("{path}: not a link file ({message}); run `stackpad link` again")]
    BadLink { path: String, message: String },
}

fn suggest(names: &[String], listed: bool) -> String {
    match (names, listed) {
        ([], _) => "; there are none".into(),
        (names, true) => format!("; there are: {}", names.join(", ")),
        ([one], false) => format!("; did you mean {one}?"),
        (names, false) => format!("; did you mean one of {}?", names.join(", ")),
    }
}

impl CliError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NotLoggedIn(_) | Self::Usage(_) | Self::Ambiguous { .. } => exit::USAGE,
            Self::NoTarget { .. } => exit::USAGE,
            Self::NotFound { .. } | Self::Api { status: 404, .. } => exit::NOT_FOUND,
            Self::Api { status, .. } if (400..500).contains(status) => exit::REFUSED,
            Self::Api { .. } | Self::Http(_) | Self::Io { .. } | Self::BadLink { .. } => {
                exit::OTHER
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api {
            status,
            message: "m".into(),
        }
    }

    #[test]
    fn each_class_has_its_exit_code() {
        assert_eq!(api(404).exit_code(), exit::NOT_FOUND);
        assert_eq!(api(400).exit_code(), exit::REFUSED);
        assert_eq!(api(403).exit_code(), exit::REFUSED);
        assert_eq!(api(409).exit_code(), exit::REFUSED);
        assert_eq!(api(500).exit_code(), exit::OTHER);
        assert_eq!(api(503).exit_code(), exit::OTHER);
        assert_eq!(CliError::Http("x".into()).exit_code(), exit::OTHER);
        assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(CliError::NotLoggedIn("x".into()).exit_code(), exit::USAGE);
        let none = CliError::NoTarget {
            what: "service",
            flag: "--service",
        };
        assert_eq!(none.exit_code(), exit::USAGE);
    }

    #[test]
    fn suggestions_read_as_a_sentence() {
        let e = CliError::NotFound {
            what: "service",
            name: "wbe".into(),
            suggestions: vec!["web".into(), "webhooks".into()],
            listed: false,
        };
        assert_eq!(
            e.to_string(),
            "no service named \"wbe\"; did you mean one of web, webhooks?"
        );
    }
}
