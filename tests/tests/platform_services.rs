//! Every platform service answers the project's own clients: containerd, PostgreSQL, ClickHouse,
//! the registry, Pebble, BuildKit through dockerd, and bpffs.
//!
//! A service that is down fails its test with the service's name and how to start it.

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};
use stackpad_tests::db::{ClickHouseDb, PostgresDb};
use stackpad_tests::registry::PushedImages;
use stackpad_tests::{Services, service_down, unique_name};

#[tokio::test]
async fn containerd_answers_version_and_namespaces() -> anyhow::Result<()> {
    let services = Services::from_env();
    let socket = &services.containerd_socket;
    let client = containerd_client::Client::from_path(socket)
        .await
        .map_err(|e| service_down("containerd", socket, e))?;
    let version = client
        .version()
        .version(())
        .await
        .map_err(|e| service_down("containerd", socket, e))?
        .into_inner();
    ensure!(
        version.version.starts_with("1.") || version.version.starts_with("2."),
        "unexpected containerd version {:?}",
        version.version
    );
    // Listing namespaces needs no namespace of our own; it must simply answer.
    client
        .namespaces()
        .list(containerd_client::services::v1::ListNamespacesRequest::default())
        .await
        .context("containerd Namespaces.List")?;
    Ok(())
}

#[tokio::test]
async fn postgres_runs_queries_in_a_database_of_our_own() -> anyhow::Result<()> {
    use sqlx::{Connection, Executor, Row};
    let db = PostgresDb::create("test_services").await?;
    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text NOT NULL)")
        .await?;
    sqlx::query("INSERT INTO t VALUES ($1, $2), ($3, $4)")
        .bind(1_i64)
        .bind("one")
        .bind(2_i64)
        .bind("two")
        .execute(&mut conn)
        .await?;
    let row =
        sqlx::query("SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) AS names FROM t")
            .fetch_one(&mut conn)
            .await?;
    ensure!(row.get::<i64, _>("n") == 2);
    ensure!(row.get::<String, _>("names") == "one,two");
    conn.close().await?;
    Ok(())
}

#[tokio::test]
async fn clickhouse_round_trips_rows() -> anyhow::Result<()> {
    #[derive(Debug, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
    struct Line {
        seq: u64,
        text: String,
    }
    let db = ClickHouseDb::create("test_services").await?;
    let client = db.client().with_database(db.name());
    client
        .query("CREATE TABLE lines (seq UInt64, text String) ENGINE = MergeTree ORDER BY seq")
        .execute()
        .await?;
    let written: Vec<Line> = (0..100)
        .map(|seq| Line {
            seq,
            text: format!("line {seq} \u{e9}"),
        })
        .collect();
    let mut insert = client.insert::<Line>("lines").await?;
    for line in &written {
        insert.write(line).await?;
    }
    insert.end().await?;
    let read = client
        .query("SELECT seq, text FROM lines ORDER BY seq")
        .fetch_all::<Line>()
        .await?;
    ensure!(
        read == written,
        "ClickHouse returned other rows than were inserted"
    );
    Ok(())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn registry_serves_the_base_image_and_takes_a_push() -> anyhow::Result<()> {
    let services = Services::from_env();
    let registry = format!("http://{}", services.registry);
    let http = reqwest::Client::new();
    http.get(format!("{registry}/v2/"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| service_down("the registry", &registry, e))?;

    // The base image made by scripts/base-images.
    let response = http
        .get(format!("{registry}/v2/stackpad/busybox/manifests/1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "the base image stackpad/busybox:1 is not in the registry ({}): run scripts/base-images",
        response.status()
    );
    let digest = header(&response, "docker-content-digest")?;
    let manifest = response.bytes().await?;
    ensure!(
        digest == sha256(&manifest),
        "manifest digest {digest} does not match its bytes"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;

    // Push it under a repository of our own: mount its blobs, then put the manifest.
    let repo = format!("tests/{}", unique_name("push"));
    // Emptied at the end even when a check below fails.
    let pushed = PushedImages::new();
    pushed.track(&repo);
    let mut blobs = vec![
        parsed["config"]["digest"]
            .as_str()
            .context("no config digest")?
            .to_owned(),
    ];
    for layer in parsed["layers"].as_array().context("no layers")? {
        blobs.push(
            layer["digest"]
                .as_str()
                .context("layer without digest")?
                .to_owned(),
        );
    }
    for blob in &blobs {
        let mounted = http
            .post(format!(
                "{registry}/v2/{repo}/blobs/uploads/?mount={blob}&from=stackpad/busybox"
            ))
            .send()
            .await?;
        ensure!(
            mounted.status() == 201,
            "mounting {blob} into {repo}: {}",
            mounted.status()
        );
    }
    let put = http
        .put(format!("{registry}/v2/{repo}/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await?;
    ensure!(
        put.status() == 201,
        "pushing the manifest to {repo}: {}",
        put.status()
    );
    ensure!(header(&put, "docker-content-digest")? == digest);

    // Pull it back by digest, blob by blob.
    let pulled = http
        .get(format!("{registry}/v2/{repo}/manifests/{digest}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(pulled == manifest);
    for blob in &blobs {
        let bytes = http
            .get(format!("{registry}/v2/{repo}/blobs/{blob}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        ensure!(
            &sha256(&bytes) == blob,
            "blob {blob} came back with other bytes"
        );
    }
    http.delete(format!("{registry}/v2/{repo}/manifests/{digest}"))
        .send()
        .await?
        .error_for_status()
        .context("deleting the test manifest")?;
    Ok(())
}

#[tokio::test]
async fn pebble_serves_its_acme_directory_over_tls() -> anyhow::Result<()> {
    let services = Services::from_env();
    let ca = std::fs::read(&services.pebble_listener_ca).map_err(|e| {
        service_down(
            "Pebble",
            &services.pebble_listener_ca,
            format!("no listener CA: {e}"),
        )
    })?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let directory: serde_json::Value = http
        .get(&services.pebble_directory)
        .send()
        .await
        .map_err(|e| service_down("Pebble", &services.pebble_directory, e))?
        .error_for_status()?
        .json()
        .await?;
    for key in ["newNonce", "newAccount", "newOrder"] {
        ensure!(
            directory[key].is_string(),
            "Pebble's directory has no {key}: {directory}"
        );
    }
    let nonce = http
        .head(directory["newNonce"].as_str().unwrap_or_default())
        .send()
        .await?
        .error_for_status()?;
    ensure!(
        nonce.headers().contains_key("replay-nonce"),
        "newNonce gave no Replay-Nonce"
    );
    // The root that signs issued certificates changes at every Pebble start; clients read it here.
    let root = http
        .get(format!("{}/roots/0", services.pebble_management))
        .send()
        .await
        .map_err(|e| service_down("Pebble's management API", &services.pebble_management, e))?
        .error_for_status()?
        .text()
        .await?;
    ensure!(
        root.contains("-----BEGIN CERTIFICATE-----"),
        "roots/0 is not a PEM certificate"
    );
    Ok(())
}

#[tokio::test]
async fn buildkit_answers_through_dockerd() -> anyhow::Result<()> {
    let services = Services::from_env();
    let socket = &services.docker_socket;
    let endpoint = buildd::buildkit::Endpoint::Dockerd(socket.into());
    let mut control = endpoint
        .connect()
        .await
        .map_err(|e| service_down("dockerd (BuildKit)", socket, e))?;
    let workers = control
        .list_workers(buildd::buildkit::control::ListWorkersRequest::default())
        .await
        .map_err(|e| service_down("dockerd (BuildKit)", socket, e))?
        .into_inner()
        .record;
    ensure!(!workers.is_empty(), "BuildKit reports no worker");
    let platforms: Vec<_> = workers
        .iter()
        .flat_map(|w| &w.platforms)
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    ensure!(
        platforms.iter().any(|p| p == "linux/amd64"),
        "no BuildKit worker builds linux/amd64: {platforms:?}"
    );
    Ok(())
}

#[test]
fn bpffs_is_mounted() -> anyhow::Result<()> {
    let services = Services::from_env();
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, fstype) = (fields.next(), fields.next(), fields.next());
        target == Some(services.bpffs.as_str()) && fstype == Some("bpf")
    });
    ensure!(
        mounted,
        "bpffs is not mounted at {}: run `scripts/services up` (mount -t bpf bpf {})",
        services.bpffs,
        services.bpffs
    );
    Ok(())
}

fn header(response: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    Ok(response
        .headers()
        .get(name)
        .with_context(|| format!("response has no {name} header"))?
        .to_str()?
        .to_owned())
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `scripts/base-images` promises deterministic images: built twice, every image has the same
/// digest (the digests it prints, which are what it pushed). The quick suite rebuilds the
/// busybox and node images; `scripts/test --full` (feature `full-tests`) also the three engine
/// images, which take minutes each time (their Debian packages are fetched into a fresh home).
/// Running the images is `scripts/base-images`' own check, done once by `scripts/test` already.
#[test]
fn base_images_rebuild_to_the_same_digests() -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/base-images");
    let engines = if cfg!(feature = "full-tests") {
        "1"
    } else {
        "0"
    };
    let build = || -> anyhow::Result<Vec<String>> {
        let home = tempfile::tempdir()?;
        let out = std::process::Command::new(script)
            .env("STACKPAD_HOME", home.path())
            .env("STACKPAD_ENGINE_IMAGES", engines)
            // The other Node majors' official builds (50 MB each from the npm registry into
            // the fresh home): only in the full run.
            .env(
                "STACKPAD_NODE_MAJORS",
                if engines == "1" { "22 24" } else { "" },
            )
            .env("STACKPAD_SKIP_IMAGE_CHECK", "1")
            .output()
            .context("running scripts/base-images")?;
        ensure!(
            out.status.success(),
            "scripts/base-images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut digests: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("@sha256:"))
            .map(str::to_owned)
            .collect();
        digests.sort();
        Ok(digests)
    };
    let first = build()?;
    let second = build()?;
    ensure!(
        first.len() >= 3,
        "scripts/base-images printed too few digests: {first:?}"
    );
    ensure!(
        first == second,
        "the rebuilt images differ:\n{first:#?}\n{second:#?}"
    );
    Ok(())
}
