//! What one reconcile observes of a Rollout: the object and the ReplicaSets it
//! controls. Built by the shell from its caches; the planner reads nothing else.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;

use crate::api::Rollout;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub rollout: Rollout,
    /// ReplicaSets whose controller owner reference is this Rollout.
    pub replica_sets: Vec<ReplicaSet>,
}

impl Snapshot {
    /// Keeps only the ReplicaSets controlled by `rollout` (by owner UID).
    pub fn new(rollout: Rollout, candidates: impl IntoIterator<Item = ReplicaSet>) -> Self {
        let uid = rollout.metadata.uid.clone();
        let replica_sets = candidates
            .into_iter()
            .filter(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
            })
            .collect();
        Snapshot {
            rollout,
            replica_sets,
        }
    }
}

/// Accessors for the few ReplicaSet fields the planner reads.
pub trait ReplicaSetExt {
    fn pod_hash(&self) -> Option<&str>;
    fn spec_replicas(&self) -> i32;
    fn status_replicas(&self) -> i32;
    fn ready(&self) -> i32;
    fn available(&self) -> i32;
    fn revision(&self) -> i64;
}

pub const REVISION_ANNOTATION: &str = "rollout.argoproj.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "rollout.argoproj.io/desired-replicas";

impl ReplicaSetExt for ReplicaSet {
    fn pod_hash(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()?
            .get(POD_TEMPLATE_HASH_LABEL)
            .map(String::as_str)
    }
    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn status_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.replicas)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn available(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    }
    fn revision(&self) -> i64 {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }
}
