//! Placement: where a Rollout's reconcile waits for a worker (see
//! `crate::controller::workers`, which takes it as a function).
//!
//! A Rollout whose spec is newer than its status (`observedGeneration`) and
//! whose update has not begun is a change to take in ([`Place::Fresh`]).
//! Only an update under way can go first: its status names a new pod
//! template hash beside the stable one, which the update's first write does.
//! It goes first when its plan moves it on (a step due, a ReplicaSet to
//! scale: `plan::moves_on`); one whose plan would only mirror replica counts
//! waits in the other line until its next step comes due. That plan is made
//! from the caches alone; a Rollout whose snapshot needs reads (a
//! workloadRef's Deployment, the pods of a restart) is not told apart:
//! under way, it goes first.

use k8s_openapi::jiff::Timestamp;

use super::Context;
use super::dereference;
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use crate::controller::workers::Place;
use crate::rollout::plan::{moves_on, plan};
use crate::rollout::snapshot::Snapshot;

pub(super) fn place(ctx: &Context, ro: &Rollout) -> Place {
    if !underway(ro.status.as_ref()) {
        return if spec_observed(ro) {
            Place::Other
        } else {
            Place::Fresh
        };
    }
    let now = Timestamp::now();
    if dereference::needs_reads(&ctx.caches, ro, now) {
        return Place::Progress;
    }
    let snapshot = dereference::cached(&ctx.caches, &ctx.memos, ro);
    place_of(&snapshot, now)
}

pub(super) fn underway(status: Option<&RolloutStatus>) -> bool {
    let current = status.and_then(|s| s.current_pod_hash.as_deref());
    let stable = status.and_then(|s| s.stable_rs.as_deref());
    matches!((current, stable), (Some(current), Some(stable)) if current != stable)
}

/// Whether the status was written for the current spec. Upstream's
/// `observedGeneration` is a string; one that does not read as the
/// generation counts as not observed.
fn spec_observed(ro: &Rollout) -> bool {
    let observed = ro
        .status
        .as_ref()
        .and_then(|s| s.observed_generation.as_deref());
    match (ro.metadata.generation, observed) {
        (Some(generation), Some(observed)) => observed == generation.to_string(),
        _ => false,
    }
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
    fn a_spec_newer_than_its_status_is_a_change_to_take_in() {
        let with = |generation: Option<i64>, observed: Option<&str>| {
            let mut ro = Rollout::new("r", Default::default());
            ro.metadata.generation = generation;
            ro.status = observed.map(|o| RolloutStatus {
                observed_generation: Some(o.into()),
                ..Default::default()
            });
            spec_observed(&ro)
        };
        assert!(with(Some(3), Some("3")));
        assert!(!with(Some(4), Some("3")), "an image change");
        assert!(!with(Some(1), None), "no status yet");
        assert!(!with(Some(3), Some("abc")), "unreadable");
        assert!(!with(None, Some("3")));
    }
}
