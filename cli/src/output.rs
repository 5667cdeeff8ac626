//! How results are printed: lines for people (the default; colours only when asked for by
//! `main`, which checks for a terminal and `NO_COLOR`), or with `--json` the API's objects
//! (a list as a JSON array of them), one JSON document per command on stdout.

use std::io::Write;

use api::DeploymentState;
use serde_json::Value;

/// Where and how a command prints.
pub struct Printer<'w, W: Write> {
    w: &'w mut W,
    pub json: bool,
    colour: bool,
}

impl<W: Write> std::fmt::Debug for Printer<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer")
            .field("json", &self.json)
            .field("colour", &self.colour)
            .finish_non_exhaustive()
    }
}

impl<'w, W: Write> Printer<'w, W> {
    pub fn new(w: &'w mut W, json: bool, colour: bool) -> Self {
        Self { w, json, colour }
    }

    /// A line for people; nothing with `--json`.
    pub fn line(&mut self, text: impl AsRef<str>) {
        if !self.json {
            let _ = writeln!(self.w, "{}", text.as_ref());
        }
    }

    /// The command's result for scripts; nothing without `--json`.
    pub fn object(&mut self, v: &Value) {
        if self.json {
            let text = serde_json::to_string_pretty(v).expect("a JSON value serializes");
            let _ = writeln!(self.w, "{text}");
        }
    }

    /// One object on one line (a stream of them, as `logs --follow --json` prints).
    pub fn compact(&mut self, v: &Value) {
        if self.json {
            let _ = writeln!(self.w, "{v}");
        }
    }

    /// A deployment state coloured by outcome (green ready, red failed, yellow otherwise).
    pub fn state(&self, state: &str) -> String {
        if !self.colour {
            return state.to_owned();
        }
        let code = match DeploymentState::parse(state) {
            Some(DeploymentState::Ready) => "32",
            Some(DeploymentState::Failed | DeploymentState::Cancelled) => "31",
            Some(DeploymentState::Superseded) => "2",
            _ => "33",
        };
        format!("\x1b[{code}m{state}\x1b[0m")
    }

    /// Text in bold (names in headings), plain without colours.
    pub fn bold(&self, text: &str) -> String {
        if self.colour {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Rows as aligned columns (two spaces apart; the last column is not padded), one line each.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if c + 1 < r.len() {
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count()));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// Whether colours go to stdout: a terminal, and `NO_COLOR` unset or empty.
pub fn colour_wanted(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some("".as_ref())));
        assert!(!colour_wanted(true, Some("1".as_ref())));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn a_table_aligns_its_columns_and_leaves_the_last_unpadded() {
        let rows = vec![
            vec!["a".to_owned(), "web".to_owned(), "x".to_owned()],
            vec!["bbb".to_owned(), "é".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), ["a    web  x", "bbb  é"]);
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn json_mode_prints_only_objects_and_human_mode_only_lines() {
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, true, true);
        p.line("hidden");
        p.object(&serde_json::json!({ "a": 1 }));
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::json!({ "a": 1 })
        );
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, false, false);
        p.line(p.state("ready"));
        p.object(&serde_json::json!({ "a": 1 }));
        assert_eq!(String::from_utf8(buf).unwrap(), "ready\n");
    }
}
