//! A checker of Prometheus naming conventions for every daemon's `/metrics` text, shared by
//! their unit tests and by `deploy/check-dashboard`: HELP and TYPE before the samples, counters
//! end in `_total`, durations are `_seconds`, sizes are `_bytes`, base units only, one TYPE per
//! family, a `stackpad_` prefix; and the metric names a text defines (for the dashboard check).

use std::collections::{BTreeMap, BTreeSet};

/// Units Prometheus says not to use: a base unit instead (seconds, bytes).
const NON_BASE_UNITS: [&str; 12] = [
    "ms",
    "msec",
    "millis",
    "milliseconds",
    "us",
    "micros",
    "microseconds",
    "ns",
    "nanoseconds",
    "minutes",
    "kb",
    "mb",
];

/// Words that say a value is a duration: the name must then carry `seconds`.
const DURATION_WORDS: [&str; 4] = ["duration", "latency", "elapsed", "uptime"];

/// Words that say a value is a size: the name must then carry `bytes`.
const SIZE_WORDS: [&str; 2] = ["size", "memory"];

/// Every convention the text breaks, one message per break (empty when it follows them all).
pub fn convention_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            if doc.trim().is_empty() {
                problems.push(format!("{at}: HELP of {name} is empty"));
            }
            help.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                problems.push(format!("{at}: TYPE of {name} given twice"));
            }
            problems.extend(
                name_problems(name, kind)
                    .into_iter()
                    .map(|p| format!("{at}: {p}")),
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            problems.push(format!("{at}: not a sample: {line:?}"));
            continue;
        };
        if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
            problems.push(format!("{at}: value {value:?} is not a number"));
        }
        let name = series.split('{').next().unwrap_or(series);
        let family = family_of(name, &types);
        match types.get(family) {
            None => problems.push(format!("{at}: {name} has no TYPE before it")),
            Some(kind) if kind == "histogram" && name == family => {
                problems.push(format!(
                    "{at}: histogram {family} sampled without _bucket/_sum/_count"
                ));
            }
            Some(kind) if kind == "histogram" && name.ends_with("_bucket") => {
                if !series.contains("le=\"") {
                    problems.push(format!("{at}: {name} has no le label"));
                }
            }
            Some(_) => {}
        }
        if !help.contains(family) {
            problems.push(format!("{at}: {family} has no HELP"));
        }
    }
    problems
}

/// The family a sample belongs to: itself, or a histogram/summary's base name.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|k| k == "histogram" || k == "summary")
        {
            return base;
        }
    }
    name
}

/// What a metric's name and type break.
fn name_problems(name: &str, kind: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let valid = name.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if !valid || name.is_empty() {
        problems.push(format!("{name}: not a valid metric name"));
    }
    if !name.starts_with("stackpad_") {
        problems.push(format!("{name}: no stackpad_ prefix"));
    }
    let words: Vec<&str> = name.split('_').collect();
    match kind {
        "counter" if !name.ends_with("_total") => {
            problems.push(format!("{name}: a counter must end in _total"));
        }
        "gauge" | "histogram" | "summary" if name.ends_with("_total") => {
            problems.push(format!("{name}: only counters end in _total"));
        }
        "counter" | "gauge" | "histogram" | "summary" | "untyped" => {}
        other => problems.push(format!("{name}: unknown type {other:?}")),
    }
    for w in &words {
        if NON_BASE_UNITS.contains(w) {
            problems.push(format!("{name}: {w} is not a base unit (seconds, bytes)"));
        }
    }
    if words.iter().any(|w| DURATION_WORDS.contains(w)) && !words.contains(&"seconds") {
        problems.push(format!("{name}: a duration must be in _seconds"));
    }
    if words.iter().any(|w| SIZE_WORDS.contains(w)) && !words.contains(&"bytes") {
        problems.push(format!("{name}: a size must be in _bytes"));
    }
    // The unit comes last (before _total): `x_seconds`, `x_bytes_total`, not `x_seconds_count`.
    let base = name.strip_suffix("_total").unwrap_or(name);
    for unit in ["seconds", "bytes"] {
        if words.contains(&unit) && !base.ends_with(unit) && !base.ends_with("_ratio") {
            problems.push(format!("{name}: the unit {unit} must end the name"));
        }
    }
    problems
}

/// The metric names a text defines (TYPE lines), with a histogram's `_bucket`, `_sum` and
/// `_count`, as queries reference them.
pub fn defined_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

/// What a scraper takes from an exposition text: each family's type and help, and each
/// sample's value by name and (sorted, unescaped) labels. Sample order, label order, number
/// spelling (`7` and `7.0`) and `# EOF` do not count, so two renderers can be compared.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrape {
    /// Family name -> (type, help).
    pub families: BTreeMap<String, (String, String)>,
    /// `name{labels}` (labels sorted) -> value.
    pub samples: BTreeMap<String, f64>,
}

/// Parses an exposition text into what a scraper keeps; a line it cannot read is an error.
pub fn scrape(text: &str) -> Result<Scrape, String> {
    let mut out = Scrape::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            out.families.entry(name.to_owned()).or_default().1 = doc.to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.families.entry(name.to_owned()).or_default().0 = kind.to_owned();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("not a sample"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("value is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| at("labels not closed"))?;
                (name, parse_labels(body).map_err(|e| at(&e))?)
            }
        };
        let mut labels = labels;
        labels.sort();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let key = format!("{name}{{{}}}", labels.join(","));
        if out.samples.insert(key.clone(), value).is_some() {
            return Err(at(&format!("{key} sampled twice")));
        }
    }
    Ok(out)
}

/// `k="v",k2="v2"` with the format's escapes (`\\`, `\"`, `\n`) undone.
fn parse_labels(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("label {key}'s value is not closed")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => return Err(format!("label {key}: bad escape {other:?}")),
                },
                Some(c) => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Ok(labels)
}

/// Panics naming every difference a scraper would see between `before` and `after`: a family
/// added, dropped or retyped, a help text changed, a sample added, dropped or of another value
/// (relative tolerance 1e-9, for sums kept in another unit).
pub fn assert_same_scrape(before: &str, after: &str) {
    let (b, a) = match (scrape(before), scrape(after)) {
        (Ok(b), Ok(a)) => (b, a),
        (b, a) => panic!(
            "unreadable exposition: before {:?}, after {:?}\n{after}",
            b.err(),
            a.err()
        ),
    };
    let mut diffs = Vec::new();
    for name in b
        .families
        .keys()
        .chain(a.families.keys())
        .collect::<BTreeSet<_>>()
    {
        if b.families.get(name) != a.families.get(name) {
            diffs.push(format!(
                "family {name}: {:?} -> {:?}",
                b.families.get(name),
                a.families.get(name)
            ));
        }
    }
    for key in b
        .samples
        .keys()
        .chain(a.samples.keys())
        .collect::<BTreeSet<_>>()
    {
        let same = match (b.samples.get(key), a.samples.get(key)) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => false,
        };
        if !same {
            diffs.push(format!(
                "sample {key}: {:?} -> {:?}",
                b.samples.get(key),
                a.samples.get(key)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "a scraper would see {} differences:\n  {}\n--- after ---\n{after}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// Panics with every problem when `text` breaks a convention (for unit tests).
pub fn assert_conventions(text: &str) {
    let problems = convention_problems(text);
    assert!(
        problems.is_empty(),
        "/metrics breaks Prometheus conventions:\n  {}\n--- text ---\n{text}",
        problems.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conforming_text_passes() {
        let text = "# HELP stackpad_x_requests_total Requests.\n# TYPE stackpad_x_requests_total counter\n\
                    stackpad_x_requests_total{class=\"2xx\"} 3\n\
                    # HELP stackpad_x_request_duration_seconds Time.\n# TYPE stackpad_x_request_duration_seconds histogram\n\
                    stackpad_x_request_duration_seconds_bucket{le=\"0.1\"} 1\n\
                    stackpad_x_request_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                    stackpad_x_request_duration_seconds_sum 0.05\nstackpad_x_request_duration_seconds_count 1\n\
                    # HELP stackpad_x_spool_bytes Size.\n# TYPE stackpad_x_spool_bytes gauge\nstackpad_x_spool_bytes 10\n";
        assert_eq!(convention_problems(text), Vec::<String>::new());
        assert!(defined_names(text).contains("stackpad_x_request_duration_seconds_bucket"));
    }

    #[test]
    fn a_scrape_ignores_order_spelling_and_eof_and_unescapes_labels() {
        let before = "# HELP stackpad_x_total X.\n# TYPE stackpad_x_total counter\n\
                      stackpad_x_total{b=\"2\",a=\"q\\\"\\\\\\n\"} 7\nstackpad_x_total{a=\"1\",b=\"2\"} 0.5\n";
        let after = "# TYPE stackpad_x_total counter\n# HELP stackpad_x_total X.\n\
                     stackpad_x_total{a=\"1\",b=\"2\"} 0.5\nstackpad_x_total{a=\"q\\\"\\\\\\n\",b=\"2\"} 7.0\n# EOF\n";
        assert_same_scrape(before, after);
        let s = scrape(before).unwrap();
        assert!(
            s.samples
                .contains_key("stackpad_x_total{a=\"q\\\"\\\\\\n\",b=\"2\"}"),
            "{s:?}"
        );
        let changed = after.replace("0.5", "0.6");
        assert!(std::panic::catch_unwind(|| assert_same_scrape(before, &changed)).is_err());
    }

    #[test]
    fn each_broken_convention_is_named() {
        let text = "# TYPE stackpad_x_requests counter\nstackpad_x_requests 1\n\
                    # HELP stackpad_x_latency_ms Time.\n# TYPE stackpad_x_latency_ms gauge\nstackpad_x_latency_ms 3\n\
                    # HELP stackpad_x_queue_total Waiting.\n# TYPE stackpad_x_queue_total gauge\nstackpad_x_queue_total 3\n\
                    # HELP stackpad_x_memory Memory.\n# TYPE stackpad_x_memory gauge\nstackpad_x_memory 3\n\
                    stackpad_x_orphan 1\n";
        let all = convention_problems(text).join("\n");
        for expected in [
            "stackpad_x_requests: a counter must end in _total",
            "stackpad_x_requests has no HELP",
            "ms is not a base unit",
            "stackpad_x_latency_ms: a duration must be in _seconds",
            "stackpad_x_queue_total: only counters end in _total",
            "stackpad_x_memory: a size must be in _bytes",
            "stackpad_x_orphan has no TYPE before it",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }
}
