//! The shared test guards clean up what they own when they go: a PostgreSQL database, a
//! ClickHouse database, and the images a test pushed to the registry (every tag of each tracked
//! repository, and every repository under a tracked prefix).

use anyhow::{Context, ensure};
use stackpad_tests::db::{ClickHouseDb, PostgresDb};
use stackpad_tests::registry::{PushedImages, Registry};
use stackpad_tests::{Services, unique_name};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn a_postgres_database_is_gone_after_its_guard() -> anyhow::Result<()> {
    use sqlx::Connection;
    let db = PostgresDb::create("guard_test").await?;
    let name = db.name().to_owned();
    sqlx::PgConnection::connect(db.url()).await?.close().await?;
    // An open connection does not keep it.
    let held = sqlx::PgConnection::connect(db.url()).await?;
    drop(db);
    drop(held);
    let admin_url = Services::from_env().database_url;
    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    ensure!(left == 0, "database {name} is still there");
    Ok(())
}

#[tokio::test]
async fn a_clickhouse_database_is_gone_after_its_guard() -> anyhow::Result<()> {
    let db = ClickHouseDb::create("guard_test").await?;
    let (name, client) = (db.name().to_owned(), db.client());
    let exists = |name: String| {
        let client = client.clone();
        async move {
            client
                .query("SELECT count() FROM system.databases WHERE name = ?")
                .bind(name)
                .fetch_one::<u64>()
                .await
        }
    };
    ensure!(exists(name.clone()).await? == 1, "{name} was not created");
    drop(db);
    ensure!(exists(name.clone()).await? == 0, "{name} is still there");
    Ok(())
}

/// Puts stackpad/busybox:1 under `repository:tag` (its blobs mounted, its manifest copied).
async fn push_busybox(registry: &str, repository: &str, tag: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2");
    let manifest = http
        .get(format!("{base}/stackpad/busybox/manifests/1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await?
        .error_for_status()
        .context("stackpad/busybox:1 (run scripts/base-images)")?
        .bytes()
        .await?;
    let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
    let layers = parsed["layers"].as_array().context("no layers")?;
    let blobs = layers
        .iter()
        .chain([&parsed["config"]])
        .map(|b| b["digest"].as_str().context("a blob without digest"));
    for blob in blobs {
        let blob = blob?;
        let mounted = http
            .post(format!(
                "{base}/{repository}/blobs/uploads/?mount={blob}&from=stackpad/busybox"
            ))
            .send()
            .await?;
        ensure!(mounted.status() == 201, "mounting {blob}: {}", mounted.status());
    }
    http.put(format!("{base}/{repository}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("pushing {repository}:{tag}"))?;
    Ok(())
}

#[tokio::test]
async fn pushed_images_are_deleted_with_their_guard() -> anyhow::Result<()> {
    let address = Services::from_env().registry;
    let registry = Registry::new(&address);
    let tracked = format!("tests/{}", unique_name("guard"));
    let prefix = format!("tests/{}/", unique_name("guard-org"));
    let under_prefix = [format!("{prefix}a"), format!("{prefix}b")];
    let untouched = format!("tests/{}", unique_name("guard-other"));
    {
        let pushed = PushedImages::on(registry.clone());
        // Two tags naming one manifest, tracked by its full image reference.
        push_busybox(&address, &tracked, "v1").await?;
        push_busybox(&address, &tracked, "v2").await?;
        pushed.track(&format!("{address}/{tracked}:v1"));
        for repository in &under_prefix {
            push_busybox(&address, repository, "1").await?;
        }
        pushed.track_prefix(&prefix);
        push_busybox(&address, &untouched, "1").await?;
        ensure!(registry.tags(&tracked).await?.len() == 2);
    }
    for repository in under_prefix.iter().chain([&tracked]) {
        let tags = registry.tags(repository).await?;
        ensure!(tags.is_empty(), "{repository} still has tags {tags:?}");
    }
    ensure!(
        registry.tags(&untouched).await? == ["1"],
        "a repository the guard did not track lost its tag"
    );
    ensure!(registry.delete_repository(&untouched).await? == 1);
    ensure!(registry.tags(&untouched).await?.is_empty());
    Ok(())
}
