//! The REST API's vocabulary, shared by control (server, database) and the `stackpad` CLI.
//!
//! This crate links serde (and, behind the `sqlx` feature, sqlx's traits): no axum, no
//! pipeline, no containerd code, so the CLI can depend on it without pulling the server in.

#![forbid(unsafe_code)]

pub mod enums;

pub use enums::{
    BackupKind, BackupState, BackupTrigger, BackupVerification, DeploymentState, DomainStatus,
    Engine, GitHubDeploymentState, MemberRole, NodeRole, NodeStatus, Phase, PreviewStatus,
    RestoreState, ServiceKind, TokenRole, UnknownValue, WebhookOutcome,
};
