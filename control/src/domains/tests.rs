use super::*;

fn expect(ips: &[&str]) -> Expectation {
    Expectation {
        domain: "shop.example.com".into(),
        cname_target: "web-shop.apps.example.net".into(),
        ingress_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
    }
}

fn mismatch(v: Verdict) -> String {
    match v {
        Verdict::Mismatch { message } => message,
        Verdict::Matches => panic!("expected a mismatch"),
    }
}

#[test]
fn a_cname_to_the_platform_host_matches_in_any_case_with_or_without_the_dot() {
    for target in [
        "web-shop.apps.example.net",
        "web-shop.apps.example.net.",
        "Web-Shop.Apps.Example.Net.",
    ] {
        let answer = Answer::Cname(vec![target.into()]);
        assert_eq!(check(&expect(&[]), &answer), Verdict::Matches, "{target}");
    }
}

#[test]
fn a_cname_elsewhere_names_the_record_seen_and_the_one_expected() {
    let message = mismatch(check(
        &expect(&[]),
        &Answer::Cname(vec!["other.example.org.".into()]),
    ));
    assert_eq!(
        message,
        "shop.example.com does not point at this service: expected \
         `shop.example.com CNAME web-shop.apps.example.net`, found \
         `shop.example.com CNAME other.example.org`"
    );
}

#[test]
fn no_record_says_so_and_names_the_expected_record() {
    let message = mismatch(check(&expect(&[]), &Answer::Nothing));
    assert!(
        message.contains("found no CNAME, A or AAAA record for shop.example.com"),
        "{message}"
    );
    assert!(
        message.contains("expected `shop.example.com CNAME web-shop.apps.example.net`"),
        "{message}"
    );
    assert_eq!(Answer::Nothing.describe("shop.example.com"), "none");
}

#[test]
fn addresses_match_only_when_all_are_ingress_addresses() {
    let e = expect(&["192.0.2.10", "2001:db8::10"]);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    assert_eq!(
        check(&e, &Answer::Addresses(vec![ip("192.0.2.10")])),
        Verdict::Matches
    );
    assert_eq!(
        check(
            &e,
            &Answer::Addresses(vec![ip("192.0.2.10"), ip("2001:db8::10")])
        ),
        Verdict::Matches
    );
    let message = mismatch(check(
        &e,
        &Answer::Addresses(vec![ip("192.0.2.10"), ip("198.51.100.7")]),
    ));
    assert!(
        message.contains("found `shop.example.com A 192.0.2.10, shop.example.com A 198.51.100.7`"),
        "{message}"
    );
    assert!(
        message.contains("(or A/AAAA records to 192.0.2.10, 2001:db8::10)"),
        "{message}"
    );
    // Without configured ingress addresses only the CNAME counts.
    let message = mismatch(check(
        &expect(&[]),
        &Answer::Addresses(vec![ip("127.0.0.1")]),
    ));
    assert!(
        message.contains("found `shop.example.com A 127.0.0.1`"),
        "{message}"
    );
}

#[test]
fn records_to_create_list_the_cname_then_the_addresses() {
    let records = expect(&["192.0.2.10", "2001:db8::10"]).records();
    let shown: Vec<String> = records.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "shop.example.com CNAME web-shop.apps.example.net",
            "shop.example.com A 192.0.2.10",
            "shop.example.com AAAA 2001:db8::10",
        ]
    );
    assert_eq!(
        serde_json::to_value(&records[0]).unwrap(),
        serde_json::json!({ "type": "CNAME", "name": "shop.example.com", "value": "web-shop.apps.example.net" })
    );
}

#[test]
fn status_moves_and_routing_follows() {
    let m = Verdict::Mismatch {
        message: "x".into(),
    };
    let ok = Verdict::Matches;
    use DomainStatus::*;
    use RouteChange::*;
    assert_eq!(next(Pending, &ok), (Verified, Add));
    assert_eq!(next(Pending, &m), (Pending, Keep));
    assert_eq!(next(Verified, &ok), (Verified, Keep));
    assert_eq!(next(Verified, &m), (Failed, Revoke));
    assert_eq!(next(Failed, &m), (Failed, Keep));
    assert_eq!(next(Failed, &ok), (Verified, Add));
    for s in [Pending, Verified, Failed] {
        assert_eq!(DomainStatus::parse(s.as_str()), Some(s));
    }
}
