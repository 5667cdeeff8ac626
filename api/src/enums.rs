//! The closed sets the API and the database share. Each enum has one spelling per value, used
//! by serde, `Display`/`FromStr`, `as_str` and (feature `sqlx`) the database column (text).
//! An unknown spelling is an [`UnknownValue`] naming the set and the value.

use std::fmt;
use std::str::FromStr;

/// A spelling that is not one of a closed set's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {set} {value:?} (expected one of: {expected})")]
pub struct UnknownValue {
    /// Which set, e.g. "service kind".
    pub set: &'static str,
    /// The spelling that was given.
    pub value: String,
    /// The valid spellings, comma separated.
    pub expected: String,
}

macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $name:ident, $set:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one spelling of this value (API JSON, database text, CLI output).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling),+
                }
            }

            /// The value spelled `name`, if any.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($spelling => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                Self::parse(s).ok_or_else(|| UnknownValue {
                    set: $set,
                    value: s.to_owned(),
                    expected: [$($spelling),+].join(", "),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $set)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).ok_or_else(|| {
                            E::unknown_variant(v, &[$($spelling),+])
                        })
                    }
                }
                d.deserialize_str(V)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}

closed_set! {
    /// What a service runs (`services.kind`, API `kind`).
    ServiceKind, "service kind" {
        Web = "web",
        Database = "database",
        Cache = "cache",
        Worker = "worker",
    }
}

impl Default for ServiceKind {
    /// A service created without a `kind` is a web service.
    fn default() -> Self {
        ServiceKind::Web
    }
}

closed_set! {
    /// The engine of a managed service (`services.engine`, API `engine`): Stackpad picks its
    /// image, generates its credentials and probes it with the engine's own check. The version
    /// is fixed per engine ([`Engine::version`]).
    Engine, "engine" {
        /// PostgreSQL 15, a `database`.
        Postgres = "postgres",
        /// MariaDB 10.11, a `database`.
        Mariadb = "mariadb",
        /// Redis 7, a `cache`.
        Redis = "redis",
    }
}

impl Engine {
    /// The service kind this engine is managed as.
    pub const fn kind(self) -> ServiceKind {
        match self {
            Engine::Postgres | Engine::Mariadb => ServiceKind::Database,
            Engine::Redis => ServiceKind::Cache,
        }
    }

    /// The engine version its image carries (also the image tag).
    pub const fn version(self) -> &'static str {
        match self {
            Engine::Postgres => "15",
            Engine::Mariadb => "10.11",
            Engine::Redis => "7",
        }
    }

    /// The engines a kind can be managed with (none for `web` and `worker`).
    pub fn for_kind(kind: ServiceKind) -> Vec<Engine> {
        Engine::ALL
            .iter()
            .copied()
            .filter(|e| e.kind() == kind)
            .collect()
    }
}

closed_set! {
    /// Where a backup of a managed service stands (`backups.state`, API `state`, #14). Only a
    /// `completed` backup is whole: its object is written and its checksum recorded.
    BackupState, "backup state" {
        Running = "running",
        Completed = "completed",
        Failed = "failed",
    }
}

closed_set! {
    /// What a backup's verification restore found (`backups.verification`, #14).
    BackupVerification, "backup verification" {
        /// Not checked yet (or the backup did not complete).
        Pending = "pending",
        /// Restored into a throwaway container of the engine and checked.
        Verified = "verified",
        /// The object did not match its checksum, did not decrypt, or did not restore.
        Failed = "failed",
    }
}

closed_set! {
    /// Why a backup was taken (`backups.trigger`, #14).
    BackupTrigger, "backup trigger" {
        Manual = "manual",
        Scheduled = "scheduled",
        /// The data a restore into the same service replaced, kept first.
        PreRestore = "pre_restore",
    }
}

closed_set! {
    /// What a backup holds (`backups.kind`, #14).
    BackupKind, "backup kind" {
        /// The engine's logical dump (`pg_dump -Fc`, `mariadb-dump`, a Redis RDB).
        Dump = "dump",
        /// A PostgreSQL physical base backup (`pg_basebackup`): with the archived WAL after
        /// it, the start of a point-in-time recovery.
        Base = "base",
    }
}

closed_set! {
    /// Where a restore stands (`backup_restores.state`, #14).
    RestoreState, "restore state" {
        Running = "running",
        Completed = "completed",
        Failed = "failed",
    }
}

closed_set! {
    /// Where a deployment is in the pipeline (`deployments.phase`, `deployment_steps.phase`).
    Phase, "deployment phase" {
        Queued = "queued",
        Building = "building",
        /// The container is being started beside the old one and waited on for health.
        Starting = "starting",
        /// The proxy moves the service's traffic to the new container.
        Switching = "switching",
        /// The new version serves; the old container is stopped after its drain.
        StoppingOld = "stopping_old",
        /// The new container is removed, then the deployment is `failed`.
        CleanupThenFailed = "cleanup_then_failed",
        /// The new container is removed, then the deployment is `cancelled`.
        CleanupThenCancelled = "cleanup_then_cancelled",
        Ready = "ready",
        Failed = "failed",
        Superseded = "superseded",
        Cancelled = "cancelled",
    }
}

closed_set! {
    /// The deployment state users see (`deployments.state`, API `state`).
    DeploymentState, "deployment state" {
        Queued = "queued",
        Building = "building",
        Deploying = "deploying",
        Ready = "ready",
        Failed = "failed",
        Superseded = "superseded",
        Cancelled = "cancelled",
    }
}

impl Phase {
    /// The state users see for this phase.
    pub const fn state(self) -> DeploymentState {
        match self {
            Phase::Queued => DeploymentState::Queued,
            Phase::Building => DeploymentState::Building,
            Phase::Starting
            | Phase::Switching
            | Phase::StoppingOld
            | Phase::CleanupThenFailed
            | Phase::CleanupThenCancelled => DeploymentState::Deploying,
            Phase::Ready => DeploymentState::Ready,
            Phase::Failed => DeploymentState::Failed,
            Phase::Superseded => DeploymentState::Superseded,
            Phase::Cancelled => DeploymentState::Cancelled,
        }
    }

    /// Whether the deployment has ended.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Ready | Phase::Failed | Phase::Superseded | Phase::Cancelled
        )
    }
}

closed_set! {
    /// What a node does (`nodes.role`, API `role`).
    NodeRole, "node role" {
        Build = "build",
        Compute = "compute",
        Proxy = "proxy",
    }
}

closed_set! {
    /// Whether a node answers (`nodes.status`).
    NodeStatus, "node status" {
        Up = "up",
        Down = "down",
    }
}

closed_set! {
    /// A custom domain's verification state (`custom_domains.status`).
    DomainStatus, "domain status" {
        /// Added, never matched yet: not routed.
        Pending = "pending",
        /// The record matched at the last check: routed, certificate allowed.
        Verified = "verified",
        /// It matched once and stopped: routing and the certificate were revoked.
        Failed = "failed",
    }
}

closed_set! {
    /// What an API token may do (`api_tokens.role`; PostgreSQL type `token_role`, so the
    /// `sqlx` impl binds text: cast with `$1::token_role` / `role::text` in queries). Declared
    /// from least to most: the order (`Ord`) is the rights order, `Owner > Deployer > ReadOnly`.
    TokenRole, "token role" {
        /// Reads everything of its organization, changes nothing.
        ReadOnly = "read_only",
        /// Deploys, rolls back, cancels, manages custom domains; changes no configuration.
        Deployer = "deployer",
        /// Everything in its organization: configuration, secrets, tokens, members, webhooks.
        Owner = "owner",
    }
}

closed_set! {
    /// An organization member's role (`members.role`).
    MemberRole, "member role" {
        Owner = "owner",
        Admin = "admin",
        Developer = "developer",
        Viewer = "viewer",
    }
}

closed_set! {
    /// What became of a webhook delivery (`webhook_delivery_log.outcome`, API `outcome`).
    WebhookOutcome, "webhook outcome" {
        /// A deployment was queued.
        Deployed = "deployed",
        /// Understood and nothing to do (another branch, another event, a duplicate).
        Ignored = "ignored",
        /// Not processed: bad signature, a replay, a payload that could not be read.
        Refused = "refused",
        /// A closed pull request's preview was torn down and deleted.
        Removed = "removed",
    }
}

closed_set! {
    /// A pull-request preview's status (API `preview.status`), from the newest deployment of
    /// each of its services.
    PreviewStatus, "preview status" {
        /// No deployment yet.
        Pending = "pending",
        /// A deployment is queued, building or deploying.
        Deploying = "deploying",
        /// Every service's newest deployment is ready.
        Ready = "ready",
        /// A service's newest deployment failed.
        Failed = "failed",
    }
}

closed_set! {
    /// A GitHub deployment status (`state` of `POST /repos/{owner}/{repo}/deployments/{id}/statuses`)
    /// as Stackpad sends it for a pull request's preview.
    GitHubDeploymentState, "GitHub deployment state" {
        /// The preview is being built or deployed.
        InProgress = "in_progress",
        /// The preview serves the head at its URL.
        Success = "success",
        /// A deployment of the head failed.
        Failure = "failure",
        /// The pull request was closed: the preview is gone.
        Inactive = "inactive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(all: &[T])
    where
        T: Copy + fmt::Debug + PartialEq + fmt::Display + FromStr<Err = UnknownValue>,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        for &v in all {
            let text = v.to_string();
            assert_eq!(text.parse::<T>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn every_value_round_trips_through_display_fromstr_and_serde() {
        round_trip(ServiceKind::ALL);
        round_trip(Phase::ALL);
        round_trip(DeploymentState::ALL);
        round_trip(NodeRole::ALL);
        round_trip(NodeStatus::ALL);
        round_trip(DomainStatus::ALL);
        round_trip(TokenRole::ALL);
        round_trip(MemberRole::ALL);
        round_trip(WebhookOutcome::ALL);
        round_trip(PreviewStatus::ALL);
        round_trip(GitHubDeploymentState::ALL);
        round_trip(Engine::ALL);
        round_trip(BackupState::ALL);
        round_trip(BackupVerification::ALL);
        round_trip(BackupTrigger::ALL);
        round_trip(BackupKind::ALL);
        round_trip(RestoreState::ALL);
    }

    #[test]
    fn engines_belong_to_one_kind_with_a_fixed_version() {
        assert_eq!(
            Engine::for_kind(ServiceKind::Database),
            [Engine::Postgres, Engine::Mariadb]
        );
        assert_eq!(Engine::for_kind(ServiceKind::Cache), [Engine::Redis]);
        assert!(Engine::for_kind(ServiceKind::Web).is_empty());
        assert_eq!(Engine::Mariadb.version(), "10.11");
        assert_eq!(Engine::Redis.kind(), ServiceKind::Cache);
    }

    #[test]
    fn spellings_are_todays() {
        let kinds: Vec<_> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["web", "database", "cache", "worker"]);
        assert_eq!(ServiceKind::default(), ServiceKind::Web);
        let phases: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            phases,
            [
                "queued",
                "building",
                "starting",
                "switching",
                "stopping_old",
                "cleanup_then_failed",
                "cleanup_then_cancelled",
                "ready",
                "failed",
                "superseded",
                "cancelled"
            ]
        );
        let roles: Vec<_> = NodeRole::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(roles, ["build", "compute", "proxy"]);
        assert_eq!(TokenRole::ReadOnly.as_str(), "read_only");
        assert!(
            TokenRole::Owner > TokenRole::Deployer && TokenRole::Deployer > TokenRole::ReadOnly
        );
        assert_eq!(Phase::StoppingOld.state(), DeploymentState::Deploying);
        assert!(Phase::Cancelled.is_terminal() && !Phase::Switching.is_terminal());
    }

    #[test]
    fn unknown_values_are_errors_naming_the_value() {
        let e = "lambda".parse::<ServiceKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown service kind \"lambda\" (expected one of: web, database, cache, worker)"
        );
        let e = "Up".parse::<NodeStatus>().unwrap_err();
        assert!(e.to_string().contains("\"Up\""), "{e}");
        let e = serde_json::from_str::<NodeRole>("\"storage\"").unwrap_err();
        assert!(e.to_string().contains("storage"), "{e}");
        assert!(e.to_string().contains("build"), "{e}");
        // Spellings are exact: no case folding, no whitespace trimming.
        assert!("Web".parse::<ServiceKind>().is_err());
        assert!(" web".parse::<ServiceKind>().is_err());
    }
}
