//! The row a request becomes (the proxy builds it from what the request path knows).

use serde::{Deserialize, Serialize};

/// One row of `access_logs` (column order matters: RowBinary follows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct AccessRow {
    /// Days since 1970-01-01 (ClickHouse `Date`) of the request's start.
    pub date: u16,
    /// When the request started, nanoseconds since the epoch.
    pub ts_ns: i64,
    /// Assigned once when the row is made; equal ids are the same request.
    pub row_id: u64,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    pub route_id: String,
    pub method: String,
    /// Lower case, without the port.
    pub host: String,
    /// Without the query string unless the proxy's settings ask for it.
    pub path: String,
    /// 0 when no response was sent (the client went away first).
    pub status: u16,
    pub duration_us: u64,
    /// Body bytes read from the client and sent to it (headers not counted).
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// `ip:port` of the upstream that served it; empty when none did.
    pub upstream: String,
    pub client_ip: String,
    /// The request's `x-request-id` header, when it had one.
    pub request_id: String,
    pub retention_days: u16,
}
