//! The row a request becomes.

pub use logstore::access_logs::AccessRow;

/// Longer paths are cut (a path is not a place for data; the cap bounds a row's size).
pub const MAX_PATH_BYTES: usize = 2048;
const MAX_FIELD_BYTES: usize = 256;

/// What the request path knows about a finished request (borrowed: the row is built from it).
#[derive(Debug, Clone, Default)]
pub struct AccessEntry<'a> {
    pub ts_ns: i64,
    pub organization_id: &'a str,
    pub project_id: &'a str,
    pub environment_id: &'a str,
    pub service_id: &'a str,
    pub deployment_id: &'a str,
    pub route_id: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query as received.
    pub path_and_query: &'a str,
    pub status: u16,
    pub duration_us: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub upstream: String,
    pub client_ip: String,
    pub request_id: &'a str,
}

impl AccessEntry<'_> {
    /// The stored row: host without port and lower case, query kept only when asked, long
    /// fields cut at a character boundary.
    pub fn into_row(self, row_id: u64, retention_days: u16, include_query: bool) -> AccessRow {
        let host = without_port(self.host);
        let path = if include_query {
            self.path_and_query
        } else {
            self.path_and_query
                .split_once('?')
                .map_or(self.path_and_query, |(p, _)| p)
        };
        AccessRow {
            date: u16::try_from(self.ts_ns.max(0) / 86_400_000_000_000).unwrap_or(u16::MAX),
            ts_ns: self.ts_ns,
            row_id,
            organization_id: self.organization_id.to_owned(),
            project_id: self.project_id.to_owned(),
            environment_id: self.environment_id.to_owned(),
            service_id: self.service_id.to_owned(),
            deployment_id: self.deployment_id.to_owned(),
            route_id: self.route_id.to_owned(),
            method: cut(self.method, MAX_FIELD_BYTES),
            host: cut(host, MAX_FIELD_BYTES).to_ascii_lowercase(),
            path: cut(path, MAX_PATH_BYTES),
            status: self.status,
            duration_us: self.duration_us,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            upstream: self.upstream,
            client_ip: self.client_ip,
            request_id: cut(self.request_id, MAX_FIELD_BYTES),
            retention_days,
        }
    }
}

/// `name:80` -> `name`, `[::1]:80` -> `[::1]`.
fn without_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_drop_the_query_and_port_and_cut_long_fields() {
        let entry = AccessEntry {
            ts_ns: 86_400_000_000_000 * 3 + 5,
            host: "App.Example.test:8080",
            path_and_query: "/login?token=secret",
            method: "GET",
            ..Default::default()
        };
        let row = entry.clone().into_row(1, 7, false);
        assert_eq!((row.date, row.ts_ns), (3, 86_400_000_000_000 * 3 + 5));
        assert_eq!(row.host, "app.example.test");
        assert_eq!(row.path, "/login");
        assert_eq!(row.retention_days, 7);
        assert_eq!(entry.into_row(1, 7, true).path, "/login?token=secret");
        let v6 = AccessEntry {
            host: "[::1]:80",
            ..Default::default()
        };
        assert_eq!(v6.into_row(1, 1, false).host, "[::1]");
        let long = "é".repeat(MAX_PATH_BYTES);
        let row = AccessEntry {
            path_and_query: &long,
            ..Default::default()
        }
        .into_row(1, 1, false);
        assert!(row.path.len() <= MAX_PATH_BYTES && row.path.len() >= MAX_PATH_BYTES - 1);
    }
}
