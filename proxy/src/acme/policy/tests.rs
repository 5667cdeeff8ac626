use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn ordered(domain: &str, at: SystemTime) -> AcmeEvent {
    AcmeEvent::Ordered {
        domain: domain.into(),
        at,
    }
}
fn issued(domain: &str, at: SystemTime) -> AcmeEvent {
    AcmeEvent::Issued {
        domain: domain.into(),
        at,
    }
}
fn failed(domain: &str, at: SystemTime) -> AcmeEvent {
    AcmeEvent::Failed {
        domain: domain.into(),
        at,
    }
}

fn decide_now(history: &[AcmeEvent], now: SystemTime) -> Decision {
    decide(
        &IssuancePolicy::default(),
        "app.example.com",
        true,
        None,
        history,
        now,
    )
}

#[test]
fn a_domain_the_control_plane_did_not_allow_is_never_ordered() {
    let decision = decide(
        &IssuancePolicy::default(),
        "random.attacker.test",
        false,
        None,
        &[],
        t(0),
    );
    assert_eq!(decision, Decision::NotAllowed);
}

#[test]
fn a_missing_certificate_is_ordered() {
    assert_eq!(decide_now(&[], t(0)), Decision::Order(OrderReason::Missing));
}

#[test]
fn an_expired_certificate_counts_as_missing() {
    let validity = CertificateValidity {
        not_before: t(0),
        not_after: t(10),
    };
    let decision = decide(
        &IssuancePolicy::default(),
        "a.example.com",
        true,
        Some(validity),
        &[],
        t(11),
    );
    assert_eq!(decision, Decision::Order(OrderReason::Missing));
}

#[test]
fn renewal_starts_at_two_thirds_of_the_lifetime() {
    let policy = IssuancePolicy::default();
    let validity = CertificateValidity {
        not_before: t(0),
        not_after: t(0) + 90 * DAY,
    };
    let renew_at = t(0) + 60 * DAY;
    assert_eq!(renewal_point(&policy, validity), renew_at);
    let before = decide(
        &policy,
        "a.example.com",
        true,
        Some(validity),
        &[],
        renew_at - HOUR,
    );
    assert_eq!(
        before,
        Decision::Keep {
            recheck_at: renew_at
        }
    );
    let after = decide(
        &policy,
        "a.example.com",
        true,
        Some(validity),
        &[],
        renew_at,
    );
    assert_eq!(after, Decision::Order(OrderReason::Renewal));
}

#[test]
fn failures_back_off_exponentially_up_to_the_cap() {
    let policy = IssuancePolicy::default();
    assert_eq!(backoff(&policy, 1), Duration::from_secs(60));
    assert_eq!(backoff(&policy, 2), Duration::from_secs(120));
    assert_eq!(backoff(&policy, 4), Duration::from_secs(480));
    assert_eq!(backoff(&policy, 20), policy.backoff_cap);
    assert_eq!(backoff(&policy, u32::MAX), policy.backoff_cap);

    let history = [
        failed("app.example.com", t(0)),
        failed("app.example.com", t(100)),
    ];
    assert_eq!(
        decide_now(&history, t(150)),
        Decision::BackOff {
            until: t(100) + Duration::from_secs(120),
            failures: 2
        }
    );
    assert_eq!(
        decide_now(&history, t(220)),
        Decision::Order(OrderReason::Missing)
    );
}

#[test]
fn an_issuance_resets_the_backoff_and_other_domains_do_not_count() {
    let history = [
        failed("app.example.com", t(0)),
        issued("app.example.com", t(10)),
        failed("other.example.com", t(20)),
    ];
    assert_eq!(
        decide_now(&history, t(21)),
        Decision::Order(OrderReason::Missing)
    );
}

#[test]
fn orders_per_account_are_limited_over_three_hours() {
    let limits = RateLimits::default();
    let history: Vec<_> = (0..300)
        .map(|i| ordered(&format!("d{i}.other.test"), t(i * 10)))
        .collect();
    let now = t(3000);
    assert_eq!(
        decide_now(&history, now),
        Decision::RateLimited {
            limit: Limit::OrdersPerAccount,
            until: t(0) + limits.orders_window
        }
    );
    // The oldest order leaves the window: one slot frees up.
    assert_eq!(
        decide_now(
            &history,
            t(0) + limits.orders_window + Duration::from_secs(1)
        ),
        Decision::Order(OrderReason::Missing)
    );
}

#[test]
fn certificates_per_registered_domain_are_limited_per_week() {
    let history: Vec<_> = (0..50)
        .map(|i| issued(&format!("svc{i}.example.com"), t(i * 60)))
        .collect();
    assert_eq!(
        decide_now(&history, t(4000)),
        Decision::RateLimited {
            limit: Limit::CertificatesPerRegisteredDomain,
            until: t(0) + 7 * DAY
        }
    );
    // Another registered domain is not affected.
    let other = decide(
        &IssuancePolicy::default(),
        "app.example.org",
        true,
        None,
        &history,
        t(4000),
    );
    assert_eq!(other, Decision::Order(OrderReason::Missing));
}

#[test]
fn duplicate_certificates_for_one_name_are_limited_per_week() {
    let history: Vec<_> = (0..5)
        .map(|i| issued("app.example.com", t(i * 60)))
        .collect();
    assert_eq!(
        decide_now(&history, t(400)),
        Decision::RateLimited {
            limit: Limit::DuplicateCertificates,
            until: t(0) + 7 * DAY
        }
    );
}

#[test]
fn failed_validations_per_host_are_limited_per_hour() {
    // Five failures, each after its backoff expired: the hourly limit still holds the sixth.
    let policy = IssuancePolicy {
        backoff_base: Duration::from_secs(1),
        ..Default::default()
    };
    let history: Vec<_> = (0..5)
        .map(|i| failed("app.example.com", t(i * 60)))
        .collect();
    let decision = decide(&policy, "app.example.com", true, None, &history, t(1000));
    assert_eq!(
        decision,
        Decision::RateLimited {
            limit: Limit::FailedValidationsPerHost,
            until: t(0) + HOUR
        }
    );
}

#[test]
fn registered_domains() {
    assert_eq!(registered_domain("a.b.example.com"), "example.com");
    assert_eq!(registered_domain("*.example.com"), "example.com");
    assert_eq!(registered_domain("shop.example.co.uk"), "example.co.uk");
    assert_eq!(registered_domain("localhost"), "localhost");
    assert_eq!(registered_domain("App.Example.COM."), "example.com");
}
