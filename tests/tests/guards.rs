//! The shared test guards clean up what they own when they go: a PostgreSQL database, a
//! ClickHouse database, and the images a test pushed to the registry (every tag of each tracked
//! repository, and every repository under a tracked prefix).

use anyhow::ensure;
use stackpad_tests::db::{ClickHouseDb, PostgresDb};
use stackpad_tests::registry::{PushedImages, Registry};
use stackpad_tests::{Services, unique_name};

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
        registry
            .copy("stackpad/busybox", "1", &tracked, "v1")
            .await?;
        registry
            .copy("stackpad/busybox", "1", &tracked, "v2")
            .await?;
        pushed.track(&format!("{address}/{tracked}:v1"));
        for repository in &under_prefix {
            registry
                .copy("stackpad/busybox", "1", repository, "1")
                .await?;
        }
        pushed.track_prefix(&prefix);
        registry
            .copy("stackpad/busybox", "1", &untouched, "1")
            .await?;
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
