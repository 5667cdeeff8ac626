//! A closed set's column holding a value outside the set is an error naming the column and the
//! value, never a silent default. The rows come from the real PostgreSQL (a `SELECT` of
//! literals, so no table is touched) and decode through the same code as the store's reads.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use stackpad_tests::{Services, service_down};

use super::deployments::Lock;
use super::services::from_row;
use super::{DeploymentEvent, Node, StoreError};

async fn connect() -> PgConnection {
    let url = Services::from_env().database_url;
    PgConnection::connect(&url)
        .await
        .map_err(|e| service_down("PostgreSQL", &url, e))
        .unwrap()
}

/// The error's text, which must name `column` and `value`.
fn assert_names(err: impl std::fmt::Display, column: &str, value: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&format!("\"{column}\"")),
        "no column in: {text}"
    );
    assert!(
        text.contains(&format!("\"{value}\"")),
        "no value in: {text}"
    );
}

#[tokio::test]
async fn an_unknown_phase_in_a_locked_deployment_row_is_an_error() {
    let mut conn = connect().await;
    let err = sqlx::query_as::<_, Lock>(
        "SELECT 'paused' AS phase, NULL::uuid AS lease_owner, gen_random_uuid() AS service_id",
    )
    .fetch_one(&mut conn)
    .await
    .map(|l| l.phase)
    .unwrap_err();
    assert_names(StoreError::from(err), "phase", "paused");
    let ok = sqlx::query_as::<_, Lock>(
        "SELECT 'stopping_old' AS phase, NULL::uuid AS lease_owner, gen_random_uuid() AS service_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(ok.phase, ::api::Phase::StoppingOld);
}

#[tokio::test]
async fn an_unknown_phase_in_the_timeline_is_an_error() {
    let mut conn = connect().await;
    let err =
        sqlx::query_as::<_, DeploymentEvent>("SELECT 'Ready' AS phase, '' AS detail, now() AS at")
            .fetch_one(&mut conn)
            .await
            .map(|e| e.phase)
            .unwrap_err();
    assert_names(err, "phase", "Ready");
}

#[tokio::test]
async fn an_unknown_service_kind_is_an_error() {
    let mut conn = connect().await;
    let row = sqlx::query(
        "SELECT gen_random_uuid() AS id, gen_random_uuid() AS project_id, \
         gen_random_uuid() AS environment_id, 'api' AS name, 'lambda' AS kind, NULL::text AS image, \
         NULL::text AS git_url, '' AS git_subdirectory, '{}'::jsonb AS build, '{}'::jsonb AS resources, \
         NULL::jsonb AS health_check, 8080 AS port, 1 AS replicas, ARRAY[]::text[] AS domains, \
         ARRAY[]::text[] AS command, ARRAY[]::text[] AS args, false AS has_webhook_secret, \
         '[]'::jsonb AS volumes, NULL::uuid AS current_deployment_id, now() AS created_at",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let err = from_row(&row).map(|s| s.kind).unwrap_err();
    assert_names(&err, "kind", "lambda");
    assert!(err.to_string().contains("service kind"), "{err}");
}

#[tokio::test]
async fn an_unknown_node_role_or_status_is_an_error() {
    let mut conn = connect().await;
    let select = |role: &str, status: &str| {
        format!(
            "SELECT gen_random_uuid() AS id, 'n1' AS name, '{role}' AS role, 'http://127.0.0.1:9' AS address, \
             0 AS cpu_millis, 0::bigint AS memory_bytes, 4 AS build_slots, '{status}' AS status, \
             NULL::timestamptz AS last_heartbeat_at, now() AS created_at, NULL::timestamptz AS drained_at"
        )
    };
    let err = sqlx::query_as::<_, Node>(sqlx::AssertSqlSafe(select("storage", "up")))
        .fetch_one(&mut conn)
        .await
        .map(|n| n.role)
        .unwrap_err();
    assert_names(err, "role", "storage");
    let err = sqlx::query_as::<_, Node>(sqlx::AssertSqlSafe(select("compute", "gone")))
        .fetch_one(&mut conn)
        .await
        .map(|n| n.status)
        .unwrap_err();
    assert_names(err, "status", "gone");
}
