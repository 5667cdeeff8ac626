//! The build node (`stackpad-buildd`): turns a git commit into an image in the registry.
//!
//! Owns: cloning (in the fetch sandbox: own namespaces, unprivileged uid, egress only through a
//! proxy that checks every address; `source/`), framework detection, Dockerfile generation, BuildKit solves over its gRPC
//! control API, the push and the layer cache, the per-node build queue (at most 4 at once by
//! default), build logs, and the `stackpad.build.v1.Builder` gRPC service.
//! Does not own: which build runs where (the control plane schedules) or running the image.
#![forbid(unsafe_code)]

pub mod build;
pub mod buildkit;
pub mod config;
pub mod context;
pub mod daemon;
/// Framework detection lives in its own small crate (`stackpad-detect`) so the CLI can use it
/// without linking the build node; `buildd::detect` stays its path here.
pub use ::detect;
pub mod dockerfile;
pub mod engine;
pub mod manager;
pub mod metrics;
pub mod queue;
pub mod service;
pub mod source;
