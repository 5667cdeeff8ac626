//! Build args and build secrets through the daemon against the real BuildKit and registry: a
//! build arg reaches `ARG`; a secret reaches `RUN --mount=type=secret` through buildd's session
//! and is nowhere else: not in the build's log (a step that prints it reads `[redacted]`), not
//! in the pushed image's config and history, not in its layers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// `curl` of the registry's HTTP API (the registry is on loopback).
/// A read racing the background push of the cache tag can get a 500 from the registry
/// (distribution 2.8 writes its link files in place): it is retried a few times, as
/// `common::apps::pushed_size` and `Container::run` do.
fn registry_get(path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut attempt = 1;
    let out = loop {
        let mut cmd = Command::new("curl");
        cmd.args(["-sSf", &format!("http://{}{path}", registry())]);
        if let Some(accept) = accept {
            cmd.args(["-H", &format!("Accept: {accept}")]);
        }
        let out = cmd.output().expect("curl is needed to read the registry");
        if out.status.success() || attempt == 5 {
            break out;
        }
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is needed to read image layers");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_its_mount_and_nothing_else() {
    let mut d = daemon(4).await;
    let secret = unique("s3cret-value");
    let dockerfile = format!(
        "FROM {}/stackpad/busybox:1\n\
         ARG GREETING\n\
         RUN echo \"greeting is $GREETING\"\n\
         RUN --mount=type=secret,id=API_TOKEN,required=true echo \"token is $(cat /run/secrets/API_TOKEN)\" \
             && test \"$(wc -c < /run/secrets/API_TOKEN)\" -eq {len}\n\
         RUN test ! -e /run/secrets/API_TOKEN && echo mount-gone\n",
        registry(),
        len = secret.len(),
    );
    let (repo, sha) = repo_with(&[("Dockerfile", &dockerfile)]);
    let id = unique("secrets");
    let mut req = d.start_request(&id, repo.path(), &sha);
    // Unique, so no step comes from the cache of an earlier run (a cached step prints nothing).
    let greeting = unique("hello-arg");
    req.build_args.insert("GREETING".into(), greeting.clone());
    req.secrets.insert("API_TOKEN".into(), secret.clone());
    let image = req.image.clone();
    let events = run_to_end(&mut d, req).await;
    let status = succeeded(&events);

    // The log: the arg's value, the secret's line redacted, the mount gone afterwards.
    let lines: Vec<String> = log_lines(&events).into_iter().map(|l| l.line).collect();
    let all = lines.join("\n");
    assert!(all.contains(&format!("greeting is {greeting}")), "{all}");
    assert!(all.contains("token is [redacted]"), "{all}");
    assert!(all.contains("mount-gone"), "{all}");
    assert!(!all.contains(&secret), "the log holds the secret: {all}");
    let events_text = format!("{events:?}");
    assert!(!events_text.contains(&secret), "an event holds the secret");

    // The image in the registry: config (with its history) and every layer.
    let repository = image
        .strip_prefix(&format!("{}/", registry()))
        .expect("image in the test registry");
    let manifest: serde_json::Value = serde_json::from_slice(&registry_get(
        &format!("/v2/{repository}/manifests/{}", status.image_digest),
        Some(
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        ),
    ))
    .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = registry_get(&format!("/v2/{repository}/blobs/{config_digest}"), None);
    let config_text = String::from_utf8_lossy(&config);
    assert!(
        config_text.contains("GREETING"),
        "the history shows no build step: {config_text}"
    );
    assert!(
        !contains(&config, secret.as_bytes()),
        "the image config or history holds the secret: {config_text}"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        let blob = gunzip(&registry_get(
            &format!("/v2/{repository}/blobs/{digest}"),
            None,
        ));
        assert!(
            !contains(&blob, secret.as_bytes()),
            "layer {digest} holds the secret"
        );
    }
}
