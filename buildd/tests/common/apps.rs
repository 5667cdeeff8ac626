//! Helpers for builds of the generator-made apps in `examples/`.

use std::path::Path;

use buildd::config::Config;

use super::git;

/// The registry's addresses, opened in the egress policy as an operator would (here they are
/// in a documentation range the policy refuses by default).
pub fn allow_npm_registry(config: &mut Config) {
    use std::net::ToSocketAddrs as _;
    let addrs: Vec<_> = ("registry.npmjs.org", 443)
        .to_socket_addrs()
        .expect("registry.npmjs.org resolves (the npm registry must be reachable)")
        .collect();
    for addr in addrs {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        config.egress_allow.push(format!("{}/{bits}", addr.ip()));
    }
}

/// A git repository holding a copy of `examples/<name>`, committed; returns (dir, sha).
pub fn example_repo(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "example"]);
    let sha = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, sha)
}

/// The compressed size in bytes of the image `repo@digest` in the registry (its layers and
/// config, what a node pulls).
pub fn pushed_size(repo: &str, digest: &str) -> u64 {
    let (host, name) = repo.split_once('/').unwrap();
    // A read racing the background push of the cache tag can get a 500 from the registry
    // (distribution 2.8 writes its link files in place): retry a few times, as Container::run.
    let mut attempt = 1;
    let out = loop {
        let out = std::process::Command::new("curl")
            .args(["-fsS", "-H"])
            .arg(
                "Accept: application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json",
            )
            .arg(format!("http://{host}/v2/{name}/manifests/{digest}"))
            .output()
            .unwrap();
        if out.status.success() || attempt == 5 {
            break out;
        }
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(out.status.success(), "{out:?}");
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    layers + manifest["config"]["size"].as_u64().unwrap()
}
