//! Per-container traffic counters as the programs keep them, summed over CPUs, and their
//! Prometheus text form (the node agent serves it on `/metrics`).

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::maps::{CountersValue, DROP_REASONS};

/// Why a packet was dropped (the index the programs use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Source address (or ARP sender) is not the container's own.
    Spoof = 1,
    /// Destination in the deny list (cloud metadata, host addresses).
    DenyCidr = 2,
    /// The two identities may not talk.
    Policy = 3,
    /// Reserved: an attached interface without entry drops its packets uncounted (it has no
    /// counter slot); only possible between a failed attach and its retry.
    Unknown = 4,
    /// Not IPv4 nor ARP.
    NotIpv4 = 5,
    /// Truncated headers.
    Malformed = 6,
}

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS - 1] = [
        DropReason::Spoof,
        DropReason::DenyCidr,
        DropReason::Policy,
        DropReason::Unknown,
        DropReason::NotIpv4,
        DropReason::Malformed,
    ];

    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Spoof => "spoof",
            DropReason::DenyCidr => "deny_cidr",
            DropReason::Policy => "policy",
            DropReason::Unknown => "unknown_endpoint",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Traffic of one container. "out" leaves the container, "in" enters it; bytes count whole
/// Ethernet frames, as the interface statistics do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub out_bytes: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub in_packets: u64,
    drops_out: [u64; DROP_REASONS],
    drops_in: [u64; DROP_REASONS],
}

impl Counters {
    /// Packets leaving the container dropped for `reason`.
    pub fn drops_out(&self, reason: DropReason) -> u64 {
        self.drops_out[reason as usize]
    }

    /// Packets towards the container dropped for `reason`.
    pub fn drops_in(&self, reason: DropReason) -> u64 {
        self.drops_in[reason as usize]
    }

    pub(crate) fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a CountersValue>) -> Self {
        let mut c = Counters::default();
        for v in per_cpu {
            c.out_bytes += v.out_bytes;
            c.out_packets += v.out_packets;
            c.in_bytes += v.in_bytes;
            c.in_packets += v.in_packets;
            for i in 0..DROP_REASONS {
                c.drops_out[i] += v.drops_out[i];
                c.drops_in[i] += v.drops_in[i];
            }
        }
        c
    }
}

/// Renders counters in the Prometheus text format (0.0.4, through `prometheus-client`, which
/// escapes label values). `labels` are the caller's (for example `project`, `environment`,
/// `service`, `container`); `direction` and `reason` follow them.
pub fn render_prometheus(rows: &[(Vec<(&str, String)>, Counters)]) -> String {
    type Labels = Vec<(String, String)>;
    let with = |labels: &[(&str, String)], extra: &[(&str, &str)]| -> Labels {
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .chain(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect()
    };
    let bytes = Family::<Labels, Counter>::default();
    let packets = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    for (labels, c) in rows {
        for (direction, b, p) in [
            ("out", c.out_bytes, c.out_packets),
            ("in", c.in_bytes, c.in_packets),
        ] {
            let labels = with(labels, &[("direction", direction)]);
            bytes.get_or_create(&labels).inc_by(b);
            packets.get_or_create(&labels).inc_by(p);
        }
        for r in DropReason::ALL {
            let reason = r.as_str();
            for (direction, v) in [("out", c.drops_out(r)), ("in", c.drops_in(r))] {
                drops
                    .get_or_create(&with(
                        labels,
                        &[("direction", direction), ("reason", reason)],
                    ))
                    .inc_by(v);
            }
        }
    }
    let mut registry = Registry::default();
    registry.register(
        "stackpad_container_bytes",
        "Bytes of frames passed, by direction",
        bytes,
    );
    registry.register(
        "stackpad_container_packets",
        "Packets passed, by direction",
        packets,
    );
    registry.register(
        "stackpad_container_drops",
        "Packets dropped, by direction and reason",
        drops,
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_cpus() {
        let mut a = CountersValue {
            out_bytes: 10,
            in_packets: 1,
            ..Default::default()
        };
        a.drops_out[DropReason::Spoof as usize] = 2;
        let b = CountersValue {
            out_bytes: 5,
            in_packets: 3,
            ..Default::default()
        };
        let c = Counters::sum([&a, &b]);
        assert_eq!(
            (c.out_bytes, c.in_packets, c.drops_out(DropReason::Spoof)),
            (15, 4, 2)
        );
        assert_eq!(c.drops_in(DropReason::Spoof), 0);
    }

    #[test]
    fn renders_prometheus_with_escaped_labels() {
        let c = Counters {
            out_bytes: 7,
            ..Default::default()
        };
        let text = render_prometheus(&[(vec![("project", "a\"b".to_owned())], c)]);
        assert!(
            text.contains("stackpad_container_bytes_total{project=\"a\\\"b\",direction=\"out\"} 7"),
            "{text}"
        );
        assert!(text.contains("reason=\"deny_cidr\"} 0"), "{text}");
        assert!(text.contains("# TYPE stackpad_container_drops_total counter"));
    }
}
