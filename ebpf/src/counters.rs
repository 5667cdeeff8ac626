//! Per-container traffic counters as the programs keep them, summed over CPUs, and their
//! Prometheus text form (the node agent serves it on `/metrics`).

use std::fmt::Write as _;

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

/// Renders counters in the Prometheus text format. `labels` are the caller's (for example
/// `project`, `environment`, `service`, `container`); values are escaped here.
pub fn render_prometheus(rows: &[(Vec<(&str, String)>, Counters)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, sample: &dyn Fn(&Counters) -> Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, c) in rows {
            let base: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            for (extra, v) in sample(c) {
                let all = base
                    .iter()
                    .cloned()
                    .chain([extra])
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = writeln!(out, "{name}{{{all}}} {v}");
            }
        }
    };
    let dir = |d: &str| format!("direction=\"{d}\"");
    family(
        "stackpad_container_bytes_total",
        "Bytes of frames passed, by direction",
        &|c| vec![(dir("out"), c.out_bytes), (dir("in"), c.in_bytes)],
    );
    family(
        "stackpad_container_packets_total",
        "Packets passed, by direction",
        &|c| vec![(dir("out"), c.out_packets), (dir("in"), c.in_packets)],
    );
    family(
        "stackpad_container_drops_total",
        "Packets dropped, by direction and reason",
        &|c| {
            DropReason::ALL
                .iter()
                .flat_map(|r| {
                    let reason = r.as_str();
                    [
                        (
                            format!("{},reason=\"{reason}\"", dir("out")),
                            c.drops_out(*r),
                        ),
                        (format!("{},reason=\"{reason}\"", dir("in")), c.drops_in(*r)),
                    ]
                })
                .collect()
        },
    );
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
