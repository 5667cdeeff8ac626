//! The deploy pipeline: the pure state machine ([`machine`]), the driver that performs its
//! actions through the client seams ([`driver`]) on the durable queue ([`queue`], PostgreSQL's
//! `Store` behind the `DeploymentQueue` trait), the workers that claim deployments from it
//! ([`worker`]); the removal of a deleted service ([`teardown`]); what follows the loss of a
//! node ([`reschedule`]) and the node monitor that marks one down ([`monitor`]); the periodic jobs one control instance runs at a time ([`jobs`]).

pub mod driver;
#[cfg(test)]
mod fakes;
pub mod jobs;
pub mod machine;
pub mod monitor;
pub mod queue;
pub mod reschedule;
pub mod teardown;
pub mod worker;
