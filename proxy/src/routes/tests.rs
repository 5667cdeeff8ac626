use super::*;

fn route(id: &str, hosts: &[&str], prefix: &str, service: &str) -> RouteSpec {
    RouteSpec {
        route_id: id.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path_prefix: prefix.into(),
        service_id: service.into(),
        max_body_bytes: 0,
        allow_plain_http: true,
        ..RouteSpec::default()
    }
}

fn table() -> RouteTable {
    RouteTable::build(vec![
        route("app", &["app.example.com"], "", "svc-app"),
        route("api", &["app.example.com"], "/api", "svc-api"),
        route("api-v2", &["app.example.com"], "/api/v2", "svc-api-v2"),
        route("wild", &["*.example.com"], "", "svc-wild"),
        route("deep", &["*.eu.example.com"], "", "svc-deep"),
    ])
    .unwrap()
}

fn service<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
    t.lookup(host, path).map(|r| r.service_id.as_str())
}

#[test]
fn exact_host_and_longest_prefix() {
    let t = table();
    assert_eq!(service(&t, "app.example.com", "/"), Some("svc-app"));
    assert_eq!(service(&t, "app.example.com", "/api"), Some("svc-api"));
    assert_eq!(
        service(&t, "app.example.com", "/api/users"),
        Some("svc-api")
    );
    assert_eq!(
        service(&t, "app.example.com", "/api/v2/x"),
        Some("svc-api-v2")
    );
    assert_eq!(service(&t, "app.example.com", "/apix"), Some("svc-app"));
    assert_eq!(service(&t, "app.example.com", "/api?x=1"), Some("svc-api"));
}

#[test]
fn host_is_normalised() {
    let t = table();
    assert_eq!(service(&t, "APP.Example.com:8443", "/"), Some("svc-app"));
    assert_eq!(service(&t, "app.example.com.", "/"), Some("svc-app"));
}

#[test]
fn wildcards_match_subdomains_and_the_longest_suffix_wins() {
    let t = table();
    assert_eq!(service(&t, "x.example.com", "/"), Some("svc-wild"));
    assert_eq!(service(&t, "a.b.example.com", "/"), Some("svc-wild"));
    assert_eq!(service(&t, "x.eu.example.com", "/"), Some("svc-deep"));
    assert_eq!(service(&t, "example.com", "/"), None);
    assert_eq!(service(&t, "other.org", "/"), None);
}

#[test]
fn invalid_routes_are_refused_with_their_id() {
    let bad = [
        (route("", &["a.com"], "", "s"), "route id is empty"),
        (route("r", &[], "", "s"), "route r: no hosts"),
        (route("r", &["A.com"], "", "s"), "must be lower case"),
        (route("r", &["a.*.com"], "", "s"), "wildcard"),
        (route("r", &["a.com:80"], "", "s"), "port"),
        (route("r", &["a.com"], "api", "s"), "must start with '/'"),
        (route("r", &["a.com"], "", ""), "service id is empty"),
    ];
    for (spec, want) in bad {
        let err = RouteTable::build(vec![spec]).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn conflicts_and_duplicate_ids_are_refused() {
    let err = RouteTable::build(vec![
        route("a", &["x.com"], "/p", "s1"),
        route("b", &["x.com"], "/p", "s2"),
    ])
    .unwrap_err();
    assert!(matches!(err, RouteError::Conflict { .. }), "{err}");
    let err = RouteTable::build(vec![
        route("a", &["x.com"], "", "s1"),
        route("a", &["y.com"], "", "s2"),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        RouteError::DuplicateId {
            route_id: "a".into()
        }
    );
}

#[test]
fn defaults_are_filled_in() {
    let t = RouteTable::build(vec![route("a", &["x.com"], "/", "s")]).unwrap();
    let r = &t.routes()[0];
    assert_eq!(r.path_prefix, "");
    assert_eq!(r.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
}
