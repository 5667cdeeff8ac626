//! The deploy pipeline: the pure state machine ([`machine`]), the driver that performs its
//! actions through the client seams ([`driver`]) and the workers that claim deployments from
//! the durable queue ([`worker`]).

pub mod driver;
pub mod machine;
pub mod worker;
