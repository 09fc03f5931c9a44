//! Traffic routers: the objects a routed canary writes to move a share of
//! the requests to the canary Service. Pure builders; the rollout planner
//! decides the weight and the shell applies the changes.

pub mod nginx;
