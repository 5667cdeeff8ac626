//! The admin listener: the `ProxyAdmin` gRPC service (bearer token) and `/metrics`.

pub mod convert;
mod service;

pub use service::{AdminService, admin_tls, serve};
