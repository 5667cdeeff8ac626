//! The row a log line becomes, and its compact encoding in the node agent's spool.

use serde::{Deserialize, Serialize};

pub const STREAM_STDOUT: u8 = 1;
pub const STREAM_STDERR: u8 = 2;

/// One row of `container_logs` (column order matters: RowBinary follows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct LogRow {
    /// Days since 1970-01-01 (ClickHouse `Date`), the partition key with `retention_days`.
    pub date: u16,
    pub ts_ns: i64,
    /// Assigned once when the line enters the shipper; equal ids are the same line.
    pub line_id: u64,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    pub deployment_id: String,
    pub container_id: String,
    pub node_id: String,
    pub stream: u8,
    pub truncated: u8,
    #[serde(with = "serde_bytes")]
    pub line: Vec<u8>,
    pub retention_days: u16,
}

impl LogRow {
    /// Appends the row to `out` (length-prefixed fields) for the spool.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.date.to_le_bytes());
        out.extend_from_slice(&self.ts_ns.to_le_bytes());
        out.extend_from_slice(&self.line_id.to_le_bytes());
        for text in [
            &self.organization_id,
            &self.project_id,
            &self.environment_id,
            &self.service_id,
            &self.deployment_id,
            &self.container_id,
            &self.node_id,
        ] {
            put_bytes(out, text.as_bytes());
        }
        out.push(self.stream);
        out.push(self.truncated);
        put_bytes(out, &self.line);
        out.extend_from_slice(&self.retention_days.to_le_bytes());
    }

    /// Reads one row written by [`LogRow::encode`]; `None` on a torn or foreign record.
    pub fn decode(input: &mut &[u8]) -> Option<Self> {
        let date = u16::from_le_bytes(take(input, 2)?.try_into().ok()?);
        let ts_ns = i64::from_le_bytes(take(input, 8)?.try_into().ok()?);
        let line_id = u64::from_le_bytes(take(input, 8)?.try_into().ok()?);
        let mut text = || String::from_utf8(get_bytes(input)?.to_vec()).ok();
        let (organization_id, project_id, environment_id, service_id) =
            (text()?, text()?, text()?, text()?);
        let (deployment_id, container_id, node_id) = (text()?, text()?, text()?);
        let stream = take(input, 1)?[0];
        let truncated = take(input, 1)?[0];
        let line = get_bytes(input)?.to_vec();
        let retention_days = u16::from_le_bytes(take(input, 2)?.try_into().ok()?);
        Some(Self {
            date,
            ts_ns,
            line_id,
            organization_id,
            project_id,
            environment_id,
            service_id,
            deployment_id,
            container_id,
            node_id,
            stream,
            truncated,
            line,
            retention_days,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn get_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
    take(input, len)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_the_spool_encoding() {
        let row = LogRow {
            date: 20_000,
            ts_ns: 1_700_000_000_123_456_789,
            line_id: 42,
            organization_id: "org".into(),
            project_id: "p".into(),
            environment_id: "e".into(),
            service_id: "s".into(),
            deployment_id: "d".into(),
            container_id: "c".into(),
            node_id: "n".into(),
            stream: STREAM_STDERR,
            truncated: 1,
            line: vec![0xff, 0xfe, b'x'],
            retention_days: 14,
        };
        let mut buf = Vec::new();
        row.encode(&mut buf);
        row.encode(&mut buf);
        let mut input = buf.as_slice();
        assert_eq!(LogRow::decode(&mut input), Some(row.clone()));
        assert_eq!(LogRow::decode(&mut input), Some(row));
        assert!(input.is_empty());
        // A torn record (crash mid-write) reads as nothing, not garbage.
        let mut torn = &buf[..buf.len() / 2 + 3];
        assert!(LogRow::decode(&mut torn).is_some());
        assert_eq!(LogRow::decode(&mut torn), None);
    }
}
