//! Two control instances against one PostgreSQL (#15 item 9): instance A claims a deployment
//! (SKIP LOCKED, a lease renewed while it works) and starts its container on a compute node of
//! the cluster; A is killed with SIGKILL while the deployment is `starting` (the container's
//! server is not up yet); instance B, running beside it on the same database, takes the
//! deployment over once A's lease expired, asks the node for the same container again (the
//! agent's container id comes from the deployment and replica: no second container), and
//! finishes it: ready, serving through the proxy. B also takes A's periodic jobs (their job
//! leases) once they expire. The takeover time is reported.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use stackpad_tests::rest::Rest;

use crate::harness::{Cluster, HostPlatform, Tenant};

/// Short leases, so the takeover is quick (production default: 10 s).
const LEASE_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_survives_the_kill_of_its_control_instance() -> anyhow::Result<()> {
    let mut platform =
        HostPlatform::start_with("cluster-failover", &format!("lease_ms = {LEASE_MS}")).await?;
    let cluster = Cluster::up(1, &platform)?;
    let outcome = scenario(&mut platform, &cluster).await;
    if outcome.is_err() {
        eprintln!("{}", platform.logs());
        eprintln!(
            "---- compute-1 agent\n{}",
            cluster.agent_log("compute-1", 30)
        );
    }
    outcome
}

/// The deployment's phase and lease owner, and who holds each job lease, from the database.
async fn lease_of(
    db: &sqlx::PgPool,
    deployment: &str,
) -> anyhow::Result<(String, Option<uuid::Uuid>, i32)> {
    let id: uuid::Uuid = deployment.parse()?;
    Ok(
        sqlx::query_as("SELECT phase, lease_owner, attempts FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await?,
    )
}

async fn job_owners(db: &sqlx::PgPool) -> anyhow::Result<Vec<(String, uuid::Uuid, bool)>> {
    Ok(
        sqlx::query_as("SELECT job, owner, expires_at > now() FROM job_leases ORDER BY job")
            .fetch_all(db)
            .await?,
    )
}

async fn scenario(platform: &mut HostPlatform, cluster: &Cluster) -> anyhow::Result<()> {
    let db = sqlx::PgPool::connect(platform.database_url()).await?;
    let tenant: Tenant = platform.organization("failover").await?;
    let image = platform.busybox_image(&tenant).await?;
    let (service, host) = platform.web_service(&tenant, "failover", &image, 1).await?;
    // The server comes up 8 s after its container starts: the deployment stays `starting`
    // long enough to kill its instance there.
    platform
        .expect(
            200,
            "PATCH",
            &format!("/services/{service}"),
            &tenant.token,
            Some(json!({
                "command": ["sh", "-c", "sleep 8; exec httpd -f -p 8080 -h /www"],
            })),
        )
        .await?;

    // 1. Only A runs: it claims the deployment and starts the container.
    let created = platform
        .expect(
            201,
            "POST",
            &format!("/services/{service}/deployments"),
            &tenant.token,
            Some(json!({})),
        )
        .await?;
    let id = created["id"].as_str().context("deployment id")?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let a_owner = loop {
        let (phase, owner, _) = lease_of(&db, &id).await?;
        if phase == "starting" && !cluster.containers("compute-1")?.is_empty() {
            break owner.context("a starting deployment without a lease owner")?;
        }
        ensure!(
            Instant::now() < deadline,
            "the deployment is {phase}, no container yet, after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_jobs = job_owners(&db).await?;
    ensure!(
        a_jobs
            .iter()
            .any(|(job, _, live)| job == "node-monitor" && *live),
        "instance A holds no live node-monitor lease: {a_jobs:?}"
    );

    // 2. B starts beside it on the same database; it must not take what A holds.
    let (_b, b_url) = platform.second_control().await?;
    tokio::time::sleep(Duration::from_millis(LEASE_MS / 2)).await;
    let (phase, owner, _) = lease_of(&db, &id).await?;
    ensure!(
        phase == "starting" && owner == Some(a_owner),
        "B took the deployment while A held it (or it moved on too early): {phase}, {owner:?}"
    );
    ensure!(
        job_owners(&db).await?
            == a_jobs
                .iter()
                .map(|(j, o, _)| (j.clone(), *o, true))
                .collect::<Vec<_>>(),
        "B took a job lease A held"
    );

    // 3. SIGKILL to A mid-deploy; B takes over once the lease expired, and finishes.
    platform.kill_control()?;
    let killed = Instant::now();
    platform.rest = Rest::with_client(
        &b_url,
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    );
    let took_over = loop {
        let (phase, owner, _) = lease_of(&db, &id).await?;
        if owner.is_some_and(|o| o != a_owner) {
            break killed.elapsed();
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(20),
            "nobody took the deployment over within 20 s of the kill: {phase}, {owner:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ready = platform
        .wait_ready(&tenant, &id, Duration::from_secs(40))
        .await?;
    let finished = killed.elapsed();
    let containers = cluster.containers("compute-1")?;
    ensure!(
        containers.len() == 1,
        "the takeover left {containers:?} on the node, not the one container"
    );
    let (status, body) = platform.get(&host, "/").await?;
    ensure!(
        status == 200,
        "the proxy answered {status} after the takeover: {body}"
    );
    ensure!(ready["state"] == "ready");

    // 4. A's periodic jobs moved to B once their leases expired.
    let deadline = Instant::now() + Duration::from_millis(3 * LEASE_MS);
    loop {
        let now = job_owners(&db).await?;
        let moved = a_jobs
            .iter()
            .all(|(job, a, _)| now.iter().any(|(j, o, live)| j == job && o != a && *live));
        if moved {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "A's job leases did not move to B: before {a_jobs:?}, now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "kill -9 of the instance driving the deployment: taken over by the other in {took_over:?} \
         (lease {LEASE_MS} ms), ready {finished:?} after the kill (the server starts 8 s after \
         its container); jobs moved: {:?}",
        a_jobs
            .iter()
            .map(|(j, _, _)| j.as_str())
            .collect::<Vec<_>>()
    );
    Ok(())
}
