//! The product end to end, as shipped: every scenario starts its own whole platform
//! (`harness::Platform`: the real control, proxy, node agent and buildd binaries), and the
//! scenarios of this one test binary run in parallel, beside the rest of the suite.

mod harness;

mod backups;
mod build_logs;
mod dashboard;
mod deploy;
mod faults;
mod isolation;
mod managed;
mod previews;
