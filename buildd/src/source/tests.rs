//! What is decided before git runs: every tenant field parsed, local roots, the proxy's request
//! parsing and address checks, the messages tenants see. (git itself, the sandbox and the proxy
//! on the network are tested in `tests/fetch_sandbox.rs` against the real kernel and git.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::egress::{Egress, EgressEvent, Resolver, decide, parse_connect};
use super::*;
use tenant::address::AddressPolicy;

/// Settings for unit tests that run real checkouts: the helper is the `stackpad-buildd` that
/// `cargo test -p stackpad-buildd` builds beside the test binaries.
pub(crate) fn test_settings(local_roots: &[&Path]) -> Arc<FetchSettings> {
    let exe = std::env::current_exe().unwrap();
    let helper = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("stackpad-buildd"))
        .unwrap();
    assert!(
        helper.exists(),
        "the fetch sandbox's helper {} is missing: run `cargo test -p stackpad-buildd` (it builds the binary) or `cargo build -p stackpad-buildd`",
        helper.display()
    );
    Arc::new(FetchSettings {
        helper,
        uid: 65532,
        gid: 65532,
        timeout: Duration::from_secs(60),
        max_bytes: 256 << 20,
        max_files: 20_000,
        ca_file: None,
        ssh_known_hosts: None,
        local_roots: local_roots.iter().map(|p| p.to_path_buf()).collect(),
        egress: Egress {
            policy: AddressPolicy::default(),
            resolver: Resolver::System,
        },
    })
}

fn source(url: &str, reference: &str, commit: &str) -> GitSource {
    GitSource {
        url: url.into(),
        reference: reference.into(),
        commit: commit.into(),
        ..GitSource::default()
    }
}

fn refused_field(result: Result<Target, SourceError>) -> &'static str {
    match result {
        Err(SourceError::Refused { field, .. }) => field,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn option_looking_and_malformed_refs_are_refused() {
    let url = "https://git.example.com/a/b.git";
    for reference in [
        "--upload-pack=touch /tmp/canary",
        "-x",
        "feature/-x",
        "a..b",
        "main\r\nx",
        "main\nx",
        "ma\0in",
        "refs/heads/",
        "@{-1}",
    ] {
        let field = refused_field(parse_source(&source(url, reference, ""), &[]));
        assert_eq!(field, "reference", "{reference:?}");
    }
    for commit in [
        "--upload-pack=x",
        "abc",
        "0123456789abcdef0123456789abcdef0123456g",
        "0123456789abcdef0123456789abcdef01234567\n",
    ] {
        let field = refused_field(parse_source(&source(url, "", commit), &[]));
        assert_eq!(field, "commit", "{commit:?}");
    }
    let ok = parse_source(&source(url, "feature/x", ""), &[]).unwrap();
    assert_eq!(ok.want, Want::Ref(GitRef::parse("feature/x").unwrap()));
    let sha = "0123456789ABCDEF0123456789abcdef01234567";
    let ok = parse_source(&source(url, "main", sha), &[]).unwrap();
    assert_eq!(
        ok.want,
        Want::Commit(CommitSha::parse(&sha.to_lowercase()).unwrap()),
        "the commit wins and is lower-cased"
    );
}

#[test]
fn urls_other_than_public_https_and_ssh_are_refused() {
    for url in [
        "http://git.example.com/a.git",
        "git://git.example.com/a.git",
        "ext::sh -c touch% /tmp/canary",
        "--upload-pack=touch /tmp/canary",
        "https://127.0.0.1/a.git",
        "https://[::1]/a.git",
        "https://10.0.0.1/a.git",
        "https://169.254.169.254/latest/meta-data",
        "https://user:pw@git.example.com/a.git",
        "https://localhost/a.git",
    ] {
        let field = refused_field(parse_source(&source(url, "", ""), &[]));
        assert_eq!(field, "url", "{url}");
    }
    // SSH sources are fetched with a deploy key, and refused without one.
    for url in ["ssh://git@git.example.com/a.git", "git@github.com:a/b.git"] {
        let field = refused_field(parse_source(&source(url, "", ""), &[]));
        assert_eq!(field, "ssh_private_key", "{url}");
        let keyed = GitSource {
            ssh_private_key: "k".into(),
            ..source(url, "", "")
        };
        assert!(matches!(
            parse_source(&keyed, &[]).unwrap().remote,
            Remote::Ssh(_)
        ));
    }
    let err = parse_source(&source("https://169.254.169.254/x", "", ""), &[]).unwrap_err();
    assert!(err.to_string().contains("169.254.169.254"), "{err}");
    let ok = parse_source(&source("https://git.example.com/a.git", "", ""), &[]).unwrap();
    assert!(matches!(ok.remote, Remote::Https(_)));
    assert_eq!(ok.want, Want::Head);
    let err = parse_source(
        &GitSource {
            subdirectory: "../etc".into(),
            ..source("https://git.example.com/a.git", "", "")
        },
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Refused {
                field: "subdirectory",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn local_sources_only_under_a_configured_root() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let other = tempfile::tempdir().unwrap();
    let url = repo.display().to_string();
    let file_url = format!("file://{url}");

    // Off by default: no root, no local source.
    for u in [&url, &file_url, &"/etc".to_owned()] {
        let err = parse_source(&source(u, "", ""), &[]).unwrap_err();
        assert!(
            matches!(err, SourceError::LocalNotAllowed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("local source root"), "{err}");
    }
    let roots = [root.path().to_path_buf()];
    for u in [&url, &file_url] {
        let t = parse_source(&source(u, "", ""), &roots).unwrap();
        assert_eq!(t.remote, Remote::Local(repo.clone()));
        assert_eq!(t.remote.git_url(), file_url);
    }
    // Outside every root, by path or through a symlink inside the root.
    let outside = other.path().display().to_string();
    let err = parse_source(&source(&outside, "", ""), &roots).unwrap_err();
    assert!(
        matches!(err, SourceError::LocalNotAllowed { .. }),
        "{err:?}"
    );
    std::os::unix::fs::symlink(other.path(), root.path().join("link")).unwrap();
    let link = root.path().join("link").display().to_string();
    let err = parse_source(&source(&link, "", ""), &roots).unwrap_err();
    assert!(
        matches!(err, SourceError::LocalNotAllowed { .. }),
        "{err:?}"
    );
    // `..` never gets as far as the roots.
    let dotdot = format!("{}/../x", root.path().display());
    assert_eq!(
        refused_field(parse_source(&source(&dotdot, "", ""), &roots)),
        "url"
    );
}

#[test]
fn git_fetch_puts_remote_and_revision_after_end_of_options() {
    let args = fetch_args("--upload-pack=touch /tmp/x", "-x");
    let end = args.iter().position(|a| *a == "--end-of-options").unwrap();
    assert_eq!(&args[end + 1..], ["--upload-pack=touch /tmp/x", "-x"]);
}

#[test]
fn connect_requests_are_parsed_strictly() {
    assert_eq!(
        parse_connect("CONNECT git.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some(("git.example.com".into(), 443))
    );
    assert_eq!(
        parse_connect("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n"),
        Some(("::1".into(), 8443))
    );
    assert_eq!(
        parse_connect("CONNECT Git.Example.com:443 HTTP/1.0\r\n\r\n"),
        Some(("git.example.com".into(), 443))
    );
    for bad in [
        "GET http://x/ HTTP/1.1\r\n\r\n",
        "CONNECT x HTTP/1.1\r\n\r\n",
        "CONNECT x:0 HTTP/1.1\r\n\r\n",
        "CONNECT x:99999 HTTP/1.1\r\n\r\n",
        "CONNECT a b:443 HTTP/1.1\r\n\r\n",
        "CONNECT a/b:443 HTTP/1.1\r\n\r\n",
        "CONNECT x:443 SPDY/3\r\n\r\n",
    ] {
        assert_eq!(parse_connect(bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn the_proxy_refuses_private_addresses_and_honours_allow_and_deny() {
    let egress = |allow: &[&str], deny: &[&str]| Egress {
        policy: AddressPolicy {
            allow: allow
                .iter()
                .map(|c| tenant::address::Cidr::parse(c).unwrap())
                .collect(),
            deny: deny
                .iter()
                .map(|c| tenant::address::Cidr::parse(c).unwrap())
                .collect(),
        },
        resolver: Resolver::System,
    };
    let default = egress(&[], &[]);
    for ip in [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "::ffff:127.0.0.1",
    ] {
        match decide(&default, ip).await {
            Err(EgressEvent::Refused { refused, .. }) => {
                assert_eq!(refused.ip, ip.parse::<IpAddr>().unwrap().to_canonical())
            }
            other => panic!("{ip}: {other:?}"),
        }
    }
    assert_eq!(
        decide(&default, "203.0.114.1").await,
        Ok(vec!["203.0.114.1".parse().unwrap()])
    );
    let opened = egress(&["127.0.0.2/32"], &[]);
    assert!(decide(&opened, "127.0.0.2").await.is_ok());
    assert!(decide(&opened, "127.0.0.1").await.is_err());
    // deny (the platform's own addresses) wins over allow.
    let both = egress(&["127.0.0.0/8"], &["127.0.0.2/32", "203.0.114.0/24"]);
    assert!(decide(&both, "127.0.0.2").await.is_err());
    assert!(decide(&both, "203.0.114.9").await.is_err());
    assert!(decide(&both, "127.0.0.3").await.is_ok());
}

#[test]
fn tenants_are_told_what_was_refused_and_nothing_else() {
    let refused = AddressPolicy::default()
        .check("127.0.0.1".parse().unwrap())
        .unwrap_err();
    let named = EgressEvent::Refused {
        host: "git.example.com".into(),
        refused: refused.clone(),
    };
    assert_eq!(
        named.explain().unwrap(),
        "address 127.0.0.1 of git.example.com is loopback: refused"
    );
    let literal = EgressEvent::Refused {
        host: "127.0.0.1".into(),
        refused,
    };
    assert_eq!(
        literal.explain().unwrap(),
        "address 127.0.0.1 is loopback: refused"
    );
    let connected = EgressEvent::Connected {
        host: "git.example.com".into(),
        addr: "203.0.114.1:443".parse().unwrap(),
    };
    assert_eq!(connected.explain(), None);
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("https://u:p@host/x.git"),
        "https://<redacted>@host/x.git"
    );
    assert_eq!(redact_url("https://host/x.git"), "https://host/x.git");
}

#[test]
fn settings_come_from_the_config() {
    let mut config = crate::config::Config {
        local_sources: vec![PathBuf::from("/var/lib/stackpad/platform/demo")],
        dns_resolver: "127.0.0.1:8053".into(),
        egress_allow: vec!["127.0.0.2/32".into()],
        ..crate::config::Config::default()
    };
    config.fetch_sandbox.helper = "/usr/local/bin/stackpad-buildd".into();
    let s = FetchSettings::from_config(&config).unwrap();
    assert_eq!(s.local_roots, config.local_sources);
    assert_eq!(s.helper, PathBuf::from("/usr/local/bin/stackpad-buildd"));
    assert!(matches!(s.egress.resolver, Resolver::Nameserver(_)));
    assert_eq!(s.egress.policy.allow.len(), 1);
    assert_eq!(s.uid, 65532);
    let default = FetchSettings::from_config(&crate::config::Config::default()).unwrap();
    assert!(
        default.local_roots.is_empty(),
        "local sources are off by default"
    );
    assert_eq!(default.helper, std::env::current_exe().unwrap());
}
