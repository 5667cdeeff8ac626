//! Custom domains: which DNS record a user must create, whether what DNS answers matches it,
//! and what a check result does to the domain's status and the service's route.
//!
//! The decisions here are pure ([`check`], [`next`]); [`verifier::Verifier`] performs them: it
//! resolves through a [`resolver::DnsLookup`], records the result in the store and re-pushes the
//! service's route (with or without the domain) to the proxy.

pub mod resolver;
pub mod route;
pub mod verifier;

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// A DNS record, as the user should create it or as it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    #[serde(rename = "type")]
    pub kind: RecordKind,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordKind {
    Cname,
    A,
    Aaaa,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Cname => "CNAME",
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
        })
    }
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.kind, self.value)
    }
}

/// What the verifier accepts for a domain: a CNAME to the service's platform host, or (when
/// the platform has fixed ingress addresses) A/AAAA records all pointing at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub domain: String,
    /// The service's platform host, e.g. `web-shop.apps.example.net`.
    pub cname_target: String,
    pub ingress_ips: Vec<IpAddr>,
}

impl Expectation {
    /// The records to create: the CNAME first, then the A/AAAA alternative (for apex domains,
    /// which cannot carry a CNAME).
    pub fn records(&self) -> Vec<DnsRecord> {
        let mut records = vec![DnsRecord {
            kind: RecordKind::Cname,
            name: self.domain.clone(),
            value: self.cname_target.clone(),
        }];
        records.extend(
            self.ingress_ips
                .iter()
                .map(|ip| address_record(&self.domain, *ip)),
        );
        records
    }

    fn describe(&self) -> String {
        let mut text = format!("`{}`", self.records()[0]);
        if !self.ingress_ips.is_empty() {
            let ips: Vec<String> = self.ingress_ips.iter().map(IpAddr::to_string).collect();
            text.push_str(&format!(" (or A/AAAA records to {})", ips.join(", ")));
        }
        text
    }
}

fn address_record(domain: &str, ip: IpAddr) -> DnsRecord {
    DnsRecord {
        kind: if ip.is_ipv4() {
            RecordKind::A
        } else {
            RecordKind::Aaaa
        },
        name: domain.to_owned(),
        value: ip.to_string(),
    }
}

/// What DNS answered for a domain: its CNAME targets if it has any, else its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Cname(Vec<String>),
    Addresses(Vec<IpAddr>),
    Nothing,
}

impl Answer {
    /// The records seen, for messages and the `last_seen` column: `none` when there were none.
    pub fn describe(&self, domain: &str) -> String {
        let records: Vec<String> = match self {
            Answer::Cname(targets) => targets
                .iter()
                .map(|t| {
                    DnsRecord {
                        kind: RecordKind::Cname,
                        name: domain.to_owned(),
                        value: normalize(t),
                    }
                    .to_string()
                })
                .collect(),
            Answer::Addresses(ips) => ips
                .iter()
                .map(|ip| address_record(domain, *ip).to_string())
                .collect(),
            Answer::Nothing => vec![],
        };
        if records.is_empty() {
            "none".into()
        } else {
            records.join(", ")
        }
    }
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Matches,
    /// Names the record seen and the record expected.
    Mismatch {
        message: String,
    },
}

/// Lower case, without the root's trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `answer` is what `expect` asks for.
pub fn check(expect: &Expectation, answer: &Answer) -> Verdict {
    let matches = match answer {
        Answer::Cname(targets) => targets
            .iter()
            .any(|t| normalize(t) == normalize(&expect.cname_target)),
        Answer::Addresses(ips) => {
            !expect.ingress_ips.is_empty() && ips.iter().all(|ip| expect.ingress_ips.contains(ip))
        }
        Answer::Nothing => false,
    };
    if matches {
        return Verdict::Matches;
    }
    let seen = match answer {
        Answer::Nothing => format!("no CNAME, A or AAAA record for {}", expect.domain),
        other => format!("`{}`", other.describe(&expect.domain)),
    };
    Verdict::Mismatch {
        message: format!(
            "{} does not point at this service: expected {}, found {seen}",
            expect.domain,
            expect.describe()
        ),
    }
}

/// A custom domain's verification status (one definition, in the `api` crate).
pub use ::api::DomainStatus;

/// What a check does to the service's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Keep,
    /// Re-push the route with the domain in its hosts and certificate hosts.
    Add,
    /// Re-push the route without the domain and remove it from the proxy's allowed domains.
    Revoke,
}

/// The status after a check with `verdict`, and what it does to routing. A lookup that failed
/// (timeout, SERVFAIL) is not a verdict: the caller keeps the status and records the error.
pub fn next(status: DomainStatus, verdict: &Verdict) -> (DomainStatus, RouteChange) {
    match (status, verdict) {
        (DomainStatus::Verified, Verdict::Matches) => (DomainStatus::Verified, RouteChange::Keep),
        (DomainStatus::Pending | DomainStatus::Failed, Verdict::Matches) => {
            (DomainStatus::Verified, RouteChange::Add)
        }
        (DomainStatus::Verified, Verdict::Mismatch { .. }) => {
            (DomainStatus::Failed, RouteChange::Revoke)
        }
        (other, Verdict::Mismatch { .. }) => (other, RouteChange::Keep),
    }
}

#[cfg(test)]
mod tests;
