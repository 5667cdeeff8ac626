//! Row counts of a MariaDB dump (#14 item 7): counted from the dump itself while it is
//! stored, so they are the rows of the dump's own consistent snapshot (`--single-transaction`),
//! and compared after the verification restore with what the restored engine holds (its check
//! answers `table <name> <rows>` per base table).
//!
//! The counter reads `mariadb-dump`'s output as it streams, in any pieces: after a
//! `-- Dumping data for table `t`` comment, every `INSERT INTO `t` VALUES (...),(...);`
//! statement adds its row tuples (outside quoted strings, whose `\` escapes and `''` are
//! followed) to `t`. A table whose section has no INSERT has 0 rows. An INSERT elsewhere (in a
//! routine's or a trigger's body) counts nothing.

use std::collections::BTreeMap;

/// The longest line start kept to recognise a section comment or an INSERT (names are at
/// most 64 characters, doubled backticks 128).
const LINE_PREFIX: usize = 512;

/// How an INSERT statement starts, up to its table name's opening backtick.
const INSERT: &[u8] = b"INSERT INTO `";

/// The line that ends a table's data.
const UNLOCK: &[u8] = b"UNLOCK TABLES;";

/// Rows per table.
pub type RowCounts = BTreeMap<String, u64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a line's start or in a line not yet recognised (its first bytes in `line`).
    Line,
    /// Skipping to the end of the line.
    Skip,
    /// Inside the VALUES of an INSERT into the current table.
    Values { depth: u32 },
    /// Inside a quoted string of the VALUES.
    Quoted { depth: u32, escaped: bool },
}

/// Counts the rows of a MariaDB dump fed in pieces.
#[derive(Debug, Clone)]
pub struct MariadbRowCounter {
    state: State,
    line: Vec<u8>,
    /// The table of the data section we are in.
    table: Option<String>,
    counts: RowCounts,
}

impl Default for MariadbRowCounter {
    fn default() -> Self {
        Self {
            state: State::Line,
            line: Vec::new(),
            table: None,
            counts: RowCounts::new(),
        }
    }
}

/// The name in backticks that starts `s` (doubled backticks are one), and the rest after it.
fn quoted_name(s: &[u8]) -> Option<(String, &[u8])> {
    let mut rest = s.strip_prefix(b"`")?;
    let mut name = Vec::new();
    loop {
        let at = rest.iter().position(|&b| b == b'`')?;
        name.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix(b"`") {
            name.push(b'`');
            rest = r;
        } else {
            return Some((String::from_utf8_lossy(&name).into_owned(), rest));
        }
    }
}

impl MariadbRowCounter {
    pub fn push(&mut self, piece: &[u8]) {
        for &b in piece {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Line => {
                if b == b'\n' {
                    if self.values_follow_on_next_line() {
                        // mariadb-dump 10.11 writes `INSERT INTO `t` VALUES` and then one row
                        // tuple per line.
                        self.line.clear();
                        self.state = State::Values { depth: 0 };
                    } else {
                        self.line_ended();
                    }
                    return;
                }
                self.line.push(b);
                self.recognise();
            }
            State::Skip => {
                if b == b'\n' {
                    self.state = State::Line;
                }
            }
            State::Values { depth } => match b {
                b'\'' => {
                    self.state = State::Quoted {
                        depth,
                        escaped: false,
                    }
                }
                b'(' => {
                    if depth == 0
                        && let Some(t) = &self.table
                    {
                        *self.counts.entry(t.clone()).or_default() += 1;
                    }
                    self.state = State::Values { depth: depth + 1 };
                }
                b')' => {
                    self.state = State::Values {
                        depth: depth.saturating_sub(1),
                    }
                }
                b';' if depth == 0 => self.state = State::Skip,
                _ => {}
            },
            State::Quoted { depth, escaped } => {
                self.state = match (escaped, b) {
                    (true, _) => State::Quoted {
                        depth,
                        escaped: false,
                    },
                    (false, b'\\') => State::Quoted {
                        depth,
                        escaped: true,
                    },
                    (false, b'\'') => State::Values { depth },
                    _ => State::Quoted { depth, escaped },
                };
            }
        }
    }

    /// Decides what the line holding `self.line` is as soon as it can.
    fn recognise(&mut self) {
        let line = &self.line[..];
        if line.len() >= INSERT.len() && line.starts_with(INSERT) {
            // Wait for the name and " VALUES " to come whole.
            if let Some((name, rest)) = quoted_name(&line[INSERT.len() - 1..]) {
                const VALUES: &[u8] = b" VALUES ";
                if rest.len() >= VALUES.len() {
                    if rest.starts_with(VALUES) && self.table.as_deref() == Some(name.as_str()) {
                        // Whatever followed " VALUES " is re-read as values.
                        let after = rest[VALUES.len()..].to_vec();
                        self.line.clear();
                        self.state = State::Values { depth: 0 };
                        for b in after {
                            self.byte(b);
                        }
                    } else {
                        self.line.clear();
                        self.state = State::Skip;
                    }
                    return;
                }
            }
            if self.line.len() > LINE_PREFIX {
                self.line.clear();
                self.state = State::Skip;
            }
            return;
        }
        let could_be = |p: &[u8]| {
            let n = line.len().min(p.len());
            line[..n] == p[..n]
        };
        if !could_be(INSERT) && !could_be(b"-- ") && !could_be(UNLOCK)
            || self.line.len() > LINE_PREFIX
        {
            self.line.clear();
            self.state = State::Skip;
        }
    }

    /// Whether the whole line in `self.line` is `INSERT INTO `<current table>` VALUES`, its
    /// tuples on the lines after it.
    fn values_follow_on_next_line(&self) -> bool {
        let Some(name_on) = self.line.strip_prefix(&INSERT[..INSERT.len() - 1]) else {
            return false;
        };
        match quoted_name(name_on) {
            Some((name, rest)) => {
                rest.trim_ascii_end() == b" VALUES" && self.table.as_deref() == Some(name.as_str())
            }
            None => false,
        }
    }

    /// A whole line that was not an INSERT: a comment that opens or closes a section.
    fn line_ended(&mut self) {
        let line = std::mem::take(&mut self.line);
        if let Some(rest) = line.strip_prefix(b"-- Dumping data for table ") {
            self.table = quoted_name(rest).map(|(n, _)| n);
            if let Some(t) = &self.table {
                self.counts.entry(t.clone()).or_default();
            }
        } else if line == UNLOCK || line.starts_with(b"-- ") && !line.starts_with(b"-- WARNING") {
            // The data's end (the table's triggers follow), or another section (a table's
            // structure, routines, the dump's end).
            self.table = None;
        }
    }

    /// The rows per table of the whole dump.
    pub fn finish(self) -> RowCounts {
        self.counts
    }
}

/// The `table <name> <rows>` lines of a check's answer.
pub fn parse_check(check: &str) -> RowCounts {
    check
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("table ")?;
            let (name, rows) = rest.rsplit_once(' ')?;
            Some((name.to_owned(), rows.trim().parse().ok()?))
        })
        .collect()
}

/// How the restored counts differ from the dump's (empty when they agree): a table of the
/// dump with another count, or with rows and missing. Tables the dump has no rows of may be
/// missing (a sequence's section).
pub fn compare(dumped: &RowCounts, restored: &RowCounts) -> Vec<String> {
    let mut out = Vec::new();
    for (table, &rows) in dumped {
        match restored.get(table) {
            Some(&r) if r == rows => {}
            None if rows == 0 => {}
            Some(&r) => out.push(format!(
                "table `{table}`: {rows} rows in the dump, {r} restored"
            )),
            None => out.push(format!(
                "table `{table}`: {rows} rows in the dump, not restored"
            )),
        }
    }
    out
}

impl super::Backups {
    /// Records the rows per table `counter` found in backup `id`'s dump.
    pub(crate) async fn record_row_counts(
        &self,
        id: uuid::Uuid,
        counter: &std::sync::Mutex<MariadbRowCounter>,
    ) -> Result<RowCounts, super::BackupError> {
        let counts = counter.lock().expect("row counter lock").clone().finish();
        sqlx::query("UPDATE backups SET row_counts = $2 WHERE id = $1")
            .bind(id)
            .bind(sqlx::types::Json(&counts))
            .execute(&self.store().pool)
            .await
            .map_err(crate::store::StoreError::from)?;
        Ok(counts)
    }

    /// The engine's check of a verification container, compared (MariaDB) with the rows per
    /// table recorded from the dump: the detail of a verified backup, or why it is not.
    pub(crate) async fn check_restored(
        &self,
        b: &crate::store::backups::Backup,
        r: &super::Running,
        container: &str,
    ) -> Result<String, super::BackupError> {
        let engines = &self.inner.engines;
        if r.engine != ::api::Engine::Mariadb {
            return Ok(engines.check(&r.address, container, r.engine).await?);
        }
        let out = engines
            .output(
                &r.address,
                container,
                r.engine,
                proto::node::v1::EngineCommand::Check,
                "",
            )
            .await?;
        let facts: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("table "))
            .collect();
        let dumped: Option<sqlx::types::Json<RowCounts>> =
            sqlx::query_scalar("SELECT row_counts FROM backups WHERE id = $1")
                .bind(b.id)
                .fetch_one(&self.store().pool)
                .await
                .map_err(crate::store::StoreError::from)?;
        let Some(sqlx::types::Json(dumped)) = dumped else {
            return Ok(facts.join(", "));
        };
        // An agent from before the per-table counts answers `tables` only (no `rows` line):
        // nothing to compare with.
        if !out.lines().any(|l| l.starts_with("rows ")) {
            return Ok(format!(
                "{}, row counts not compared (the node agent does not count rows per table)",
                facts.join(", ")
            ));
        }
        let differences = compare(&dumped, &parse_check(&out));
        if !differences.is_empty() {
            return Err(super::BackupError::Mismatch(differences.join("; ")));
        }
        Ok(format!(
            "{}, row counts of {} tables as in the dump",
            facts.join(", "),
            dumped.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `mariadb-dump` 10.11's output (structure, data sections, a trigger).
    const DUMP: &str = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n\
--\n\
-- Host: localhost    Database: app\n\
-- ------------------------------------------------------\n\
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
\n\
--\n\
-- Table structure for table `kept`\n\
--\n\
\n\
DROP TABLE IF EXISTS `kept`;\n\
CREATE TABLE `kept` (\n\
  `x` int(11) DEFAULT NULL,\n\
  `s` text DEFAULT NULL\n\
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n\
\n\
--\n\
-- Dumping data for table `kept`\n\
--\n\
\n\
LOCK TABLES `kept` WRITE;\n\
/*!40000 ALTER TABLE `kept` DISABLE KEYS */;\n\
INSERT INTO `kept` VALUES (1,'a (b), c'),(2,'it\\'s'),(3,'x''y;z)');\n\
INSERT INTO `kept` VALUES (4,NULL);\n\
/*!40000 ALTER TABLE `kept` ENABLE KEYS */;\n\
UNLOCK TABLES;\n\
DELIMITER ;;\n\
/*!50003 CREATE*/ /*!50003 TRIGGER t AFTER INSERT ON `kept` FOR EACH ROW\n\
INSERT INTO `kept` VALUES (9,'no') */;;\n\
DELIMITER ;\n\
\n\
--\n\
-- Table structure for table `we``ird name`\n\
--\n\
\n\
CREATE TABLE `we``ird name` (`y` int(11));\n\
\n\
--\n\
-- Dumping data for table `we``ird name`\n\
--\n\
\n\
LOCK TABLES `we``ird name` WRITE;\n\
UNLOCK TABLES;\n\
\n\
-- Dump completed on 2026-12-07  6:00:00\n";

    fn counted(pieces: usize) -> RowCounts {
        let mut c = MariadbRowCounter::default();
        let bytes = DUMP.as_bytes();
        for piece in bytes.chunks(pieces) {
            c.push(piece);
        }
        c.finish()
    }

    #[test]
    fn counts_rows_per_table_in_any_pieces() {
        let want: RowCounts = [("kept".to_owned(), 4), ("we`ird name".to_owned(), 0)].into();
        for size in [1, 2, 3, 7, 64, DUMP.len()] {
            assert_eq!(counted(size), want, "pieces of {size}");
        }
    }

    /// mariadb-dump 10.11.19 (Debian's today) ends the INSERT's first line after `VALUES` and
    /// writes one row tuple per line.
    #[test]
    fn counts_rows_written_one_per_line_after_values() {
        const ROWS_PER_LINE: &str = "--\n\
-- Dumping data for table `t`\n\
--\n\
\n\
LOCK TABLES `t` WRITE;\n\
/*!40000 ALTER TABLE `t` DISABLE KEYS */;\n\
INSERT INTO `t` VALUES\n\
(1,'a (b), c'),\n\
(2,'it\\'s;'),\n\
(3,'x''y\n(z)');\n\
INSERT INTO `t` VALUES\n\
(4,NULL);\n\
/*!40000 ALTER TABLE `t` ENABLE KEYS */;\n\
UNLOCK TABLES;\n\
INSERT INTO `t` VALUES\n\
(9,'after the data: not counted');\n";
        let want: RowCounts = [("t".to_owned(), 4)].into();
        for size in [1, 2, 5, 23, ROWS_PER_LINE.len()] {
            let mut c = MariadbRowCounter::default();
            for piece in ROWS_PER_LINE.as_bytes().chunks(size) {
                c.push(piece);
            }
            assert_eq!(c.finish(), want, "pieces of {size}");
        }
    }

    #[test]
    fn check_lines_are_parsed_and_compared() {
        let restored = parse_check("tables 2\nrows 4\ntable kept 4\ntable we`ird name 0\n");
        assert_eq!(compare(&counted(4096), &restored), Vec::<String>::new());
        let short = parse_check("table kept 3\n");
        assert_eq!(
            compare(&counted(4096), &short),
            vec!["table `kept`: 4 rows in the dump, 3 restored".to_owned()]
        );
        assert_eq!(
            compare(&counted(4096), &RowCounts::new()),
            vec!["table `kept`: 4 rows in the dump, not restored".to_owned()]
        );
    }
}
