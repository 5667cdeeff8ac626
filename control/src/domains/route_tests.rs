use super::*;

fn names<'a>(org: &'a str, project: &'a str, env: &'a str, service: &'a str) -> HostNames<'a> {
    HostNames {
        organization: org,
        project,
        environment: env,
        service,
    }
}

#[test]
fn production_has_no_environment_part_others_do_and_previews_come_first() {
    let prod = names("acme", "shop", "production", "web");
    assert_eq!(primary_label(&prod), "web-shop-acme");
    assert_eq!(
        primary_label(&names("acme", "shop", "staging", "web")),
        "web-staging-shop-acme"
    );
    assert_eq!(
        primary_label(&names("acme", "shop", "pr-12", "web")),
        "pr-12-web-shop-acme"
    );
    // Not a preview: `pr-` without a number is a name like any other.
    assert_eq!(
        primary_label(&names("acme", "shop", "pr-x", "web")),
        "web-pr-x-shop-acme"
    );
    assert_eq!(
        host("web-shop-acme", "Apps.Example.NET"),
        "web-shop-acme.apps.example.net"
    );
}

#[test]
fn the_same_names_in_two_organizations_or_two_environments_get_distinct_labels() {
    let labels = [
        primary_label(&names("acme", "shop", "production", "web")),
        primary_label(&names("globex", "shop", "production", "web")),
        primary_label(&names("acme", "shop", "staging", "web")),
        primary_label(&names("globex", "shop", "staging", "web")),
    ];
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn a_long_label_is_cut_to_63_bytes_with_a_stable_hash_of_the_whole() {
    let forty = "a".repeat(40);
    let n = names(&forty, &forty, "staging", &forty);
    let label = primary_label(&n);
    assert_eq!(label.len(), MAX_LABEL, "{label}");
    assert_eq!(label, primary_label(&n), "the same every time");
    assert!(label.starts_with(&"a".repeat(40)), "{label}");
    // Two long names that differ only after the cut differ in the hash.
    let other_org = format!("{}b", "a".repeat(39));
    let other = names(&other_org, &forty, "staging", &forty);
    let cut = |l: &str| l[..MAX_LABEL - 9].to_owned();
    assert_eq!(cut(&label), cut(&primary_label(&other)));
    assert_ne!(label, primary_label(&other));
    // The cut never leaves a `--` before the hash: a label ends with a letter or digit.
    let long = format!("{}-{}", "s".repeat(53), "t".repeat(20));
    let dashes = names("o", "p", "production", &long);
    let label = primary_label(&dashes);
    assert!(!label.contains("--"), "{label}");
    assert!(label.len() <= MAX_LABEL, "{label}");
}

#[test]
fn the_fallback_of_a_taken_label_depends_on_the_service_id() {
    // `web-staging` in production and `web` in staging read the same.
    let a = names("acme", "shop", "production", "web-staging");
    let b = names("acme", "shop", "staging", "web");
    assert_eq!(primary_label(&a), primary_label(&b));
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let fx = fallback_label(&b, x);
    assert!(fx.starts_with("web-staging-shop-acme-"), "{fx}");
    assert_eq!(fx, fallback_label(&b, x));
    assert_ne!(fx, fallback_label(&b, y));
    assert!(fx.len() <= MAX_LABEL);
}

#[test]
fn a_service_lists_its_platform_hosts_first_then_each_verified_domain_once() {
    let platform = vec![
        "web-shop-acme.apps.example.net".to_owned(),
        "web-shop.apps.example.net".to_owned(),
    ];
    let verified = vec![
        "shop.example.com".to_owned(),
        platform[0].clone(),
        "shop.example.com".to_owned(),
        "www.example.com".to_owned(),
    ];
    assert_eq!(
        service_hosts(&platform, &verified),
        [
            "web-shop-acme.apps.example.net",
            "web-shop.apps.example.net",
            "shop.example.com",
            "www.example.com"
        ]
    );
}

#[test]
fn a_legacy_label_longer_than_a_dns_label_is_not_routed() {
    let long = "a".repeat(64);
    let labels = vec![
        ("web-shop-acme".to_owned(), false),
        ("web-shop".to_owned(), true),
        (long, true),
    ];
    assert_eq!(routable(labels), ["web-shop-acme", "web-shop"]);
}
