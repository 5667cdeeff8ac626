use clap::Parser;

use super::*;

fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("stackpad-proxy").chain(argv.iter().copied()))
}

fn serve(argv: &[&str]) -> ServeArgs {
    let mut all = vec!["serve"];
    all.extend_from_slice(argv);
    match parse(&all).unwrap().command {
        Command::Serve(s) => s,
        other => panic!("expected serve, got {other:?}"),
    }
}

fn routes(argv: &[&str]) -> RoutesArgs {
    let mut all = vec!["routes"];
    all.extend_from_slice(argv);
    match parse(&all).unwrap().command {
        Command::Routes(r) => r,
        other => panic!("expected routes, got {other:?}"),
    }
}

#[test]
fn todays_serve_flags_parse_and_override_the_config() {
    let args = serve(&[
        "--http",
        "127.0.0.1:8080",
        "--https",
        "127.0.0.1:8443",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
        "--admin",
        "127.0.0.1:9180",
        "--token-file",
        "token",
        "--state-file",
        "state.json",
        "--threads",
        "3",
        "--no-access-log",
        "--upgrade-sock",
        "up.sock",
        "--pid-file",
        "pid",
        "--upgrade",
    ]);
    assert!(args.upgrade);
    let c = args.config().unwrap();
    assert_eq!(c.http_listen.as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(c.tls_listen.as_deref(), Some("127.0.0.1:8443"));
    assert_eq!(c.tls_cert_file, Some("c.pem".into()));
    assert_eq!(c.tls_key_file, Some("k.pem".into()));
    assert_eq!(c.admin_listen, "127.0.0.1:9180");
    assert_eq!(c.admin_token_file, Some("token".into()));
    assert_eq!(c.state_file, PathBuf::from("state.json"));
    assert_eq!(c.threads, 3);
    assert!(!c.access_log);
    assert_eq!(c.upgrade_sock, PathBuf::from("up.sock"));
    assert_eq!(c.pid_file, PathBuf::from("pid"));
    // Nothing given: the defaults.
    assert_eq!(serve(&[]).config().unwrap(), ProxyConfig::default());
}

#[test]
fn the_last_of_http_and_no_http_wins_and_a_config_file_is_read_first() {
    let c = serve(&["--http", "127.0.0.1:1", "--no-http"])
        .config()
        .unwrap();
    assert_eq!(c.http_listen, None);
    let c = serve(&["--no-http", "--http", "127.0.0.1:1"])
        .config()
        .unwrap();
    assert_eq!(c.http_listen.as_deref(), Some("127.0.0.1:1"));
    /// Removes the file when the test ends, passed or not.
    struct File(PathBuf);
    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let file = File(std::env::temp_dir().join(format!("proxy-args-{}.json", uuid::Uuid::new_v4())));
    std::fs::write(&file.0, r#"{"threads": 7, "admin_listen": "127.0.0.1:7"}"#).unwrap();
    let file = file.0.display().to_string();
    let c = serve(&["--config", &file, "--threads", "2"])
        .config()
        .unwrap();
    assert_eq!((c.threads, c.admin_listen.as_str()), (2, "127.0.0.1:7"));
    let err = serve(&["--config", "/nonexistent/proxy.json"])
        .config()
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent/proxy.json"),
        "{err:#}"
    );
}

#[test]
fn todays_routes_flags_make_the_same_requests() {
    let r = routes(&[
        "switch",
        "--admin",
        "127.0.0.1:9",
        "--token-file",
        "t",
        "--id",
        "r1",
        "--host",
        "a.test",
        "--host",
        "b.test",
        "--prefix",
        "/api",
        "--service",
        "svc",
        "--max-body",
        "1024",
        "--plain-http",
        "--upstream",
        "127.0.0.1:1",
        "--upstream",
        "127.0.0.1:2=d2=5",
        "--drain-ms",
        "500",
        "--skip-health",
        "--health-timeout-ms",
        "900",
        "--health-path",
        "/up",
        "--health-interval-ms",
        "50",
        "--healthy-threshold",
        "2",
        "--unhealthy-threshold",
        "3",
        "--lb",
        "least-connections",
    ]);
    assert_eq!(r.command, RoutesCommand::Switch);
    assert_eq!(r.admin, "127.0.0.1:9");
    assert_eq!(r.token_file, Some("t".into()));
    let (route, switch) = r.requests();
    assert_eq!(
        route,
        pb::Route {
            route_id: "r1".into(),
            hosts: vec!["a.test".into(), "b.test".into()],
            path_prefix: "/api".into(),
            service_id: "svc".into(),
            max_body_bytes: 1024,
            allow_plain_http: true,
            ..pb::Route::default()
        }
    );
    let mut expected = pb::SwitchRequest {
        service_id: "svc".into(),
        upstreams: vec![
            pb::Upstream {
                address: "127.0.0.1:1".into(),
                deployment_id: String::new(),
                weight: 1,
            },
            pb::Upstream {
                address: "127.0.0.1:2".into(),
                deployment_id: "d2".into(),
                weight: 5,
            },
        ],
        drain_deadline_ms: 500,
        skip_health_wait: true,
        health_timeout_ms: 900,
        health_check: Some(pb::HealthCheck {
            path: "/up".into(),
            interval_ms: 50,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..pb::HealthCheck::default()
        }),
        ..pb::SwitchRequest::default()
    };
    expected.set_load_balancing(pb::LoadBalancing::LeastConnections);
    assert_eq!(switch, expected);
    // Without health flags the switch carries no health check; the admin address defaults.
    let r = routes(&["list"]);
    assert_eq!(r.admin, "127.0.0.1:9180");
    assert_eq!(r.requests().1.health_check, None);
    for command in ["set", "remove"] {
        routes(&[command, "--id", "x"]);
    }
}

#[test]
fn version_succeeds_and_bad_arguments_fail_naming_themselves() {
    let version = parse(&["--version"]).unwrap_err();
    assert!(!version.use_stderr());
    assert_eq!(
        version.to_string(),
        format!("stackpad-proxy {}\n", env!("CARGO_PKG_VERSION"))
    );
    for (argv, named) in [
        (&["serve", "--bogus"][..], "--bogus"),
        (&["serve", "--threads", "many"], "--threads"),
        (&["serve", "--http"], "--http"),
        (&["routes", "move"], "move"),
        (
            &["routes", "switch", "--upstream", "127.0.0.1:1=d=heavy"],
            "--upstream",
        ),
        (&["routes", "switch", "--lb", "random"], "--lb"),
        (&["launch"], "launch"),
    ] {
        let err = parse(argv).unwrap_err();
        assert!(err.use_stderr(), "{argv:?}");
        assert!(err.to_string().contains(named), "{argv:?}: {err}");
    }
    // No arguments: the help, as an error.
    assert!(parse(&[]).unwrap_err().use_stderr());
}
