//! The deploy pipeline: the pure state machine ([`machine`]), the driver that performs its
//! actions through the client seams ([`driver`]) and the workers that claim deployments from
//! the durable queue ([`worker`]); and the removal of a deleted service ([`teardown`]).

pub mod driver;
pub mod machine;
pub mod teardown;
pub mod worker;
