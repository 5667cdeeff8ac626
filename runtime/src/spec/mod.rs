//! Container specs: the deploy as the agent's own type, its validation, the seccomp profile
//! and the OCI runtime spec built from them.

pub mod deploy;
pub mod oci;
pub mod seccomp;

pub use deploy::{
    DeploySpec, HealthSpec, Limits, Probe, RestartMode, RestartSpec, VolumeSpec, Workload,
    container_id,
};
pub use oci::{SpecInput, build_spec, spec_any};
