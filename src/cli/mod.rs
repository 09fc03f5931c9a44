//! `kubectl rollouts`: the pure parts of the CLI (what each verb patches,
//! how `get`, `list` and `plan` render, what `lint` reports), tested without
//! a cluster. The binary `src/bin/kubectl-rollouts.rs` reads the cluster and
//! sends the patches.

pub mod lint;
pub mod patches;
pub mod plan_table;
pub mod render;
