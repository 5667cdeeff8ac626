//! `stackpad logs`: a service's latest log lines or requests (`--access`), and with
//! `--follow` new lines as the API streams them.

use std::io::Write;

use serde_json::Value;

use crate::commands::{Context, str_of};
use crate::output::Printer;
use crate::resolve::ServiceArgs;
use crate::{CliError, exit};

/// What `stackpad logs` asks for.
pub struct LogQuery {
    pub grep: Option<String>,
    pub limit: u32,
    pub access: bool,
    /// New lines as they come, after the latest `limit`.
    pub follow: bool,
    pub status: Option<String>,
    pub min_duration_ms: Option<u64>,
}

pub async fn run(
    ctx: &Context<'_>,
    target: ServiceArgs,
    q: LogQuery,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    let s = ctx.names.service(&target).await?;
    let resource = if q.access { "access-logs" } else { "logs" };
    let mut path = format!("/services/{}/{resource}?limit={}", s.service.id, q.limit);
    let grep = q.grep.as_deref().map(|t| format!("&q={}", query_encode(t)));
    if let Some(g) = &grep {
        path.push_str(g);
    }
    if let Some(status) = q.status {
        path.push_str(&format!("&status={}", query_encode(&status)));
    }
    if let Some(ms) = q.min_duration_ms {
        path.push_str(&format!("&min_duration_ms={ms}"));
    }
    let page: Value = ctx.api.get(&path).await?;
    if q.access {
        p.object(&page);
        let requests = page["requests"].as_array().cloned().unwrap_or_default();
        for r in requests.iter().rev() {
            p.line(access_line(r));
        }
        return Ok(exit::OK);
    }
    let lines = page["lines"].as_array().cloned().unwrap_or_default();
    if !q.follow {
        p.object(&page);
    }
    for l in lines.iter().rev() {
        if q.follow {
            log_line(l, p);
        } else {
            p.line(format!("{} {}", str_of(l, "stream"), str_of(l, "line")));
        }
    }
    if !q.follow {
        return Ok(exit::OK);
    }
    // From the newest line shown (nothing between the search and the follow is missed), else
    // from now; the server ends the stream only when it goes away.
    let mut follow = format!(
        "/services/{}/logs/follow?{}",
        s.service.id,
        grep.unwrap_or_default().trim_start_matches('&')
    );
    if let Some(cursor) = page["follow_cursor"].as_str() {
        follow.push_str(&format!("&cursor={}", query_encode(cursor)));
    }
    ctx.api
        .events(&follow, |l| {
            log_line(&l, p);
            true
        })
        .await?;
    Err(CliError::Http(format!(
        "the log stream of {} ended: the API closed it",
        s.path()
    )))
}

/// `<stream> <line>` for people; with `--json` (following) the line's object on one line.
fn log_line(l: &Value, p: &mut Printer<'_, impl Write>) {
    if p.json {
        p.compact(l);
    } else {
        p.line(format!("{} {}", str_of(l, "stream"), str_of(l, "line")));
    }
}

/// Percent-encodes a query parameter's value.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `<time> <status> <method> <host><path> <ms>ms <bytes>B`, one request per line.
fn access_line(r: &Value) -> String {
    let ts = r["timestamp_ns"].as_i64().unwrap_or(0);
    let time = chrono::DateTime::from_timestamp_nanos(ts)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "{time} {} {} {}{} {:.1}ms {}B",
        r["status"].as_u64().unwrap_or(0),
        str_of(r, "method"),
        str_of(r, "host"),
        str_of(r, "path"),
        r["duration_ms"].as_f64().unwrap_or(0.0),
        r["response_bytes"].as_u64().unwrap_or(0),
    )
}
