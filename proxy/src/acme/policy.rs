//! When to order a certificate for a domain, and when not to: the pure part of ACME.
//!
//! [`decide`] looks at a domain's allowance, its current certificate, its failure history and the
//! account's recent ACME activity and says what to do now. It performs nothing: the
//! [`manager`](super::manager) executes the decision. Times are plain [`SystemTime`]s passed in,
//! so every rule is unit-tested without a clock or a CA.
//!
//! The rate limits model Let's Encrypt's published limits so that one bad domain cannot burn the
//! account's quota: orders per account per 3 hours, certificates per registered domain per
//! week, failed validations per hostname per hour, duplicate certificates per week.

use std::time::{Duration, SystemTime};

/// Let's Encrypt's limits, or a stricter/looser set for another CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// New orders per account in [`RateLimits::orders_window`] (LE: 300 per 3 h).
    pub orders_per_account: u32,
    pub orders_window: Duration,
    /// Certificates issued per registered domain (eTLD+1) per week (LE: 50).
    pub certificates_per_registered_domain: u32,
    /// The same name issued again per week (LE: 5 duplicate certificates).
    pub duplicates_per_name: u32,
    pub certificates_window: Duration,
    /// Failed validations per hostname per hour (LE: 5).
    pub failed_validations_per_host: u32,
    pub failures_window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            orders_per_account: 300,
            orders_window: Duration::from_secs(3 * 3600),
            certificates_per_registered_domain: 50,
            duplicates_per_name: 5,
            certificates_window: Duration::from_secs(7 * 24 * 3600),
            failed_validations_per_host: 5,
            failures_window: Duration::from_secs(3600),
        }
    }
}

/// How failures back off and when certificates renew.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuancePolicy {
    pub limits: RateLimits,
    /// Renew once this fraction of the certificate's lifetime has passed (2/3, as LE advises).
    pub renew_after_fraction: f64,
    /// First wait after a failure; doubles with each consecutive failure up to the cap.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            limits: RateLimits::default(),
            renew_after_fraction: 2.0 / 3.0,
            backoff_base: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(6 * 3600),
        }
    }
}

/// The validity of the certificate a domain has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateValidity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What happened to ACME orders lately, as recorded in the shared store (every proxy instance
/// sees the same history, so the limits hold for the account, not per instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeEvent {
    /// An order was created for `domain`.
    Ordered { domain: String, at: SystemTime },
    /// A certificate was issued for `domain`.
    Issued { domain: String, at: SystemTime },
    /// Validation (or the order) failed for `domain`.
    Failed { domain: String, at: SystemTime },
}

impl AcmeEvent {
    fn at(&self) -> SystemTime {
        match self {
            Self::Ordered { at, .. } | Self::Issued { at, .. } | Self::Failed { at, .. } => *at,
        }
    }
}

/// Which limit held an order back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    OrdersPerAccount,
    CertificatesPerRegisteredDomain,
    DuplicateCertificates,
    FailedValidationsPerHost,
}

/// Why a domain needs a certificate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderReason {
    /// It has none (or only an expired one).
    Missing,
    /// Its certificate passed the renewal point.
    Renewal,
}

/// What to do about one domain at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Never order: the control plane did not allow this domain.
    NotAllowed,
    /// The certificate is good; look again at `recheck_at` (its renewal point).
    Keep { recheck_at: SystemTime },
    /// Order a certificate now.
    Order(OrderReason),
    /// Backing off after `failures` consecutive failures.
    BackOff { until: SystemTime, failures: u32 },
    /// A rate limit holds the order back until `until`.
    RateLimited { limit: Limit, until: SystemTime },
}

/// Decides what to do about `domain` at `now`.
pub fn decide(
    policy: &IssuancePolicy,
    domain: &str,
    allowed: bool,
    current: Option<CertificateValidity>,
    history: &[AcmeEvent],
    now: SystemTime,
) -> Decision {
    if !allowed {
        return Decision::NotAllowed;
    }
    let reason = match current {
        Some(validity) if validity.not_after > now => {
            let renew_at = renewal_point(policy, validity);
            if now < renew_at {
                return Decision::Keep {
                    recheck_at: renew_at,
                };
            }
            OrderReason::Renewal
        }
        _ => OrderReason::Missing,
    };
    let failures = consecutive_failures(domain, history);
    if failures > 0 {
        let last = history
            .iter()
            .filter_map(|e| match e {
                AcmeEvent::Failed { domain: d, at } if d == domain => Some(*at),
                _ => None,
            })
            .max()
            .unwrap_or(now);
        let until = last + backoff(policy, failures);
        if now < until {
            return Decision::BackOff { until, failures };
        }
    }
    if let Some((limit, until)) = rate_limited(&policy.limits, domain, history, now) {
        return Decision::RateLimited { limit, until };
    }
    Decision::Order(reason)
}

/// The instant `renew_after_fraction` of the certificate's lifetime has passed.
pub fn renewal_point(policy: &IssuancePolicy, validity: CertificateValidity) -> SystemTime {
    let lifetime = validity
        .not_after
        .duration_since(validity.not_before)
        .unwrap_or_default();
    validity.not_before + lifetime.mul_f64(policy.renew_after_fraction.clamp(0.0, 1.0))
}

/// The wait after `failures` consecutive failures: base * 2^(failures-1), capped.
pub fn backoff(policy: &IssuancePolicy, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    policy
        .backoff_base
        .saturating_mul(1 << exponent)
        .min(policy.backoff_cap)
}

/// Failures of `domain` since its last issuance.
fn consecutive_failures(domain: &str, history: &[AcmeEvent]) -> u32 {
    let mut events: Vec<&AcmeEvent> = history
        .iter()
        .filter(|e| match e {
            AcmeEvent::Failed { domain: d, .. } | AcmeEvent::Issued { domain: d, .. } => {
                d == domain
            }
            AcmeEvent::Ordered { .. } => false,
        })
        .collect();
    events.sort_by_key(|e| e.at());
    events
        .iter()
        .rev()
        .take_while(|e| matches!(e, AcmeEvent::Failed { .. }))
        .count() as u32
}

/// The first limit a new order for `domain` would exceed, and when it frees up.
fn rate_limited(
    limits: &RateLimits,
    domain: &str,
    history: &[AcmeEvent],
    now: SystemTime,
) -> Option<(Limit, SystemTime)> {
    let registered = registered_domain(domain);
    let orders = history
        .iter()
        .filter(|e| matches!(e, AcmeEvent::Ordered { .. }));
    let issued_here = history.iter().filter(
        |e| matches!(e, AcmeEvent::Issued { domain: d, .. } if registered_domain(d) == registered),
    );
    let duplicates = history
        .iter()
        .filter(|e| matches!(e, AcmeEvent::Issued { domain: d, .. } if d == domain));
    let failures = history
        .iter()
        .filter(|e| matches!(e, AcmeEvent::Failed { domain: d, .. } if d == domain));
    let checks = [
        (
            Limit::OrdersPerAccount,
            limits.orders_per_account,
            limits.orders_window,
            orders.collect(),
        ),
        (
            Limit::CertificatesPerRegisteredDomain,
            limits.certificates_per_registered_domain,
            limits.certificates_window,
            issued_here.collect(),
        ),
        (
            Limit::DuplicateCertificates,
            limits.duplicates_per_name,
            limits.certificates_window,
            duplicates.collect(),
        ),
        (
            Limit::FailedValidationsPerHost,
            limits.failed_validations_per_host,
            limits.failures_window,
            failures.collect(),
        ),
    ];
    checks
        .into_iter()
        .find_map(|(limit, max, window, events): (_, _, _, Vec<&AcmeEvent>)| {
            window_full(max, window, &events, now).map(|until| (limit, until))
        })
}

/// When `max` events already fall inside the sliding `window` ending at `now`, the instant the
/// oldest of them leaves it.
fn window_full(
    max: u32,
    window: Duration,
    events: &[&AcmeEvent],
    now: SystemTime,
) -> Option<SystemTime> {
    let start = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut inside: Vec<SystemTime> = events
        .iter()
        .map(|e| e.at())
        .filter(|at| *at > start && *at <= now)
        .collect();
    if (inside.len() as u64) < u64::from(max) {
        return None;
    }
    inside.sort();
    // The window frees a slot when the event `len - max` (0-based) leaves it.
    let oldest_blocking = inside[inside.len() - max as usize];
    Some(oldest_blocking + window)
}

/// The registered domain (eTLD+1) a name counts against, for the per-domain limit.
///
/// Uses the last two labels, or three under the common two-label public suffixes listed here;
/// a full Public Suffix List lookup is future work (a wrong guess only makes the limiter count a
/// name under a broader or narrower bucket, never orders for a name that is not allowed).
pub fn registered_domain(name: &str) -> String {
    const TWO_LABEL_SUFFIXES: [&str; 12] = [
        "co.uk", "org.uk", "ac.uk", "gov.uk", "co.jp", "com.au", "net.au", "org.au", "co.nz",
        "com.br", "com.cn", "co.za",
    ];
    let name = name
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let take = if labels.len() >= 3
        && TWO_LABEL_SUFFIXES.contains(&labels[labels.len() - 2..].join(".").as_str())
    {
        3
    } else {
        2
    };
    labels[labels.len().saturating_sub(take)..].join(".")
}

#[cfg(test)]
mod tests;
