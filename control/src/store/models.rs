//! Rows as the API shows them.

use std::collections::BTreeMap;

use ::api::{DeploymentState, MemberRole, NodeRole, NodeStatus, Phase, ServiceKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub email: String,
    pub role: MemberRole,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub role: super::Role,
    /// `None` = never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Environment {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub branch: String,
    /// The environment this one was copied from.
    pub created_from: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSettings {
    pub build_args: BTreeMap<String, String>,
    /// Names of the service's secrets the build gets as BuildKit secrets
    /// (`RUN --mount=type=secret,id=NAME`); never build arguments.
    pub secrets: Vec<String>,
    pub timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Thousandths of a core; 0 = no limit.
    pub cpu_millis: u32,
    /// 0 = the node's default.
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// HTTP GET path; absent = TCP connect.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval_ms: Option<u32>,
    /// How long the new version may take to become healthy.
    #[serde(default)]
    pub deadline_ms: Option<u32>,
    /// A command run inside the container instead of an HTTP/TCP probe (managed engines:
    /// `pg_isready`, `mariadb-admin ping`, `redis-cli ping`); exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
}

/// A persistent volume of a service (#14), as the API validated it: the node holding it
/// mounts it at `mount_path` and enforces `size_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub mount_path: String,
    pub size_bytes: u64,
}

/// An env var as shown: secrets never leave the store in clear.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvVar {
    pub value: Option<String>,
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub id: Uuid,
    pub project_id: Uuid,
    pub environment_id: Uuid,
    pub name: String,
    pub kind: ServiceKind,
    pub image: Option<String>,
    pub git_url: Option<String>,
    pub git_subdirectory: String,
    pub build: BuildSettings,
    pub resources: Resources,
    pub health_check: Option<HealthCheck>,
    pub port: i32,
    /// Whether the user gave `port` (create or update): a built deployment then runs on it;
    /// otherwise on the port its build detected, `port` being the fallback.
    pub port_explicit: bool,
    pub replicas: i32,
    pub domains: Vec<String>,
    /// Replace the image's entrypoint / cmd when non-empty.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, EnvVar>,
    /// Persistent volumes: the service runs on the node holding them, one container at a
    /// time (stop the old, then start the new).
    pub volumes: Vec<Volume>,
    pub has_webhook_secret: bool,
    pub current_deployment_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Deployment {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub service_id: Uuid,
    pub state: DeploymentState,
    pub phase: Phase,
    pub git_ref: Option<String>,
    pub git_commit: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    pub rollback_of: Option<Uuid>,
    pub previous_deployment_id: Option<Uuid>,
    pub build_node_id: Option<Uuid>,
    pub node_id: Option<Uuid>,
    pub container_id: Option<String>,
    pub upstream_address: Option<String>,
    /// The port its build detected the app listens on (`None`: not built, or nothing detected).
    pub container_port: Option<i32>,
    pub failure_reason: Option<String>,
    pub cancel_requested: bool,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
}

/// One step of a deployment's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeploymentEvent {
    pub phase: Phase,
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Node {
    pub id: Uuid,
    pub name: String,
    pub role: NodeRole,
    pub address: String,
    pub cpu_millis: i32,
    pub memory_bytes: i64,
    pub build_slots: i32,
    pub status: NodeStatus,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the operator drained it: nothing new is placed there since (#15).
    pub drained_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub method: String,
    pub path: String,
    pub status: i32,
    pub at: DateTime<Utc>,
}
