//! Placement: where a Rollout's reconcile waits for a worker (see
//! `crate::controller::workers`, which takes it as a function).
//!
//! Two kinds of reconcile go first:
//! - one whose spec the status has not observed yet (a new update, a new
//!   Rollout, a spec change mid-update): taking it in is one write, and it
//!   should not wait behind the steps of updates already under way, or a
//!   wave of updates is taken in later than a single queue would;
//! - one of an update under way (its status names a new pod template hash
//!   beside the stable one) whose plan moves it on (a step due, a
//!   ReplicaSet to scale: `plan::moves_on`).
//!
//! One whose plan would only mirror replica counts, and any reconcile of a
//! settled Rollout, waits in the other line until its next step comes due.
//! The plan is made from the caches alone; a Rollout whose snapshot needs
//! reads (a workloadRef's Deployment, the pods of a restart) is not told
//! apart: under way, it goes first.

use k8s_openapi::jiff::Timestamp;

use super::Context;
use super::dereference;
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use crate::controller::workers::Place;
use crate::rollout::plan::{moves_on, plan};
use crate::rollout::snapshot::Snapshot;

pub(super) fn place(ctx: &Context, ro: &Rollout) -> Place {
    if spec_unobserved(ro) {
        return Place::Progress;
    }
    if !underway(ro.status.as_ref()) {
        return Place::Other;
    }
    let now = Timestamp::now();
    if dereference::needs_reads(&ctx.caches, ro, now) {
        return Place::Progress;
    }
    let snapshot = dereference::cached(&ctx.caches, &ctx.memos, ro);
    place_of(&snapshot, now)
}

/// Whether the status has not observed the Rollout's current spec.
fn spec_unobserved(ro: &Rollout) -> bool {
    let observed = ro
        .status
        .as_ref()
        .and_then(|s| s.observed_generation.as_deref());
    let generation = ro.metadata.generation.map(|g| g.to_string());
    observed != generation.as_deref()
}

pub(super) fn underway(status: Option<&RolloutStatus>) -> bool {
    let current = status.and_then(|s| s.current_pod_hash.as_deref());
    let stable = status.and_then(|s| s.stable_rs.as_deref());
    matches!((current, stable), (Some(current), Some(stable)) if current != stable)
}

/// The place of an update under way whose snapshot is `snapshot`.
fn place_of(snapshot: &Snapshot, now: Timestamp) -> Place {
    let plan = plan(snapshot, now);
    if moves_on(snapshot.rollout.status.as_ref(), &plan) {
        Place::Progress
    } else {
        Place::OtherForNow {
            recheck: plan.requeue_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rollout_whose_update_has_begun_may_go_first() {
        let with = |current: Option<&str>, stable: Option<&str>| {
            let mut ro = Rollout::new("r", Default::default());
            ro.status = Some(RolloutStatus {
                current_pod_hash: current.map(Into::into),
                stable_rs: stable.map(Into::into),
                ..Default::default()
            });
            underway(ro.status.as_ref())
        };
        assert!(!underway(None));
        assert!(!with(Some("a"), None), "first deploy");
        assert!(!with(Some("a"), Some("a")), "settled");
        assert!(with(Some("b"), Some("a")));
    }

    #[test]
    fn a_spec_the_status_has_not_observed_is_taken_in_first() {
        let with = |generation: Option<i64>, observed: Option<&str>| {
            let mut ro = Rollout::new("r", Default::default());
            ro.metadata.generation = generation;
            ro.status = observed.map(|o| RolloutStatus {
                observed_generation: Some(o.into()),
                ..Default::default()
            });
            spec_unobserved(&ro)
        };
        assert!(with(Some(1), None), "a new Rollout");
        assert!(with(Some(3), Some("2")), "a new update, or a spec change");
        assert!(!with(Some(3), Some("3")), "observed: placed by its plan");
    }
}
