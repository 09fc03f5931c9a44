//! The Rollout controller: snapshot -> pure plan -> idempotent apply.

pub mod apply;
pub mod controller;
pub mod hash;
pub mod plan;
pub mod references;
pub mod simulate;
pub mod snapshot;
pub mod template_match;
pub mod validate;
