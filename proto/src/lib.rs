//! The wire contracts between Stackpad's daemons: every internal API as `.proto` files under
//! `proto/` and the tonic clients and servers generated from them.
//!
//! Owns: message and service definitions, versioned by package (`stackpad.<api>.v1`).
//! Does not own: any domain logic. Each daemon converts these types into its own domain types at
//! its edge, so a wire change never ripples through a crate's core. This crate depends on no
//! other workspace crate.
#![forbid(unsafe_code)]

/// `stackpad.node.v1`: the node agent (`stackpad-node`), which runs containers.
pub mod node {
    /// Version 1 of the node agent API.
    #[allow(missing_debug_implementations, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("stackpad.node.v1");
    }
}

/// `stackpad.build.v1`: the build node (`stackpad-buildd`), which turns commits into images.
pub mod build {
    /// Version 1 of the builder API.
    #[allow(missing_debug_implementations, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("stackpad.build.v1");
    }
}

/// `stackpad.proxy.v1`: the proxy's admin API (`stackpad-proxy`).
pub mod proxy {
    /// Version 1 of the proxy admin API.
    #[allow(missing_debug_implementations, reason = "generated code")]
    pub mod v1 {
        tonic::include_proto!("stackpad.proxy.v1");
    }
}
