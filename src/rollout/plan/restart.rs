//! spec.restartAt: replace every pod created before that time, a few at a
//! time, never taking availability below what maxUnavailable allows. Pods are
//! evicted (not deleted) so PodDisruptionBudgets still apply; their
//! ReplicaSets create the replacements.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use std::time::Duration;

use crate::api::Rollout;
use crate::api::rollout::{RolloutSpec, RolloutStatus};
use crate::rollout::snapshot::ReplicaSetExt;
use crate::rollout::snapshot::Snapshot;

/// Whether the Rollout asks for a restart that has not been done yet, as
/// upstream: restartAt is set, differs from status.restartedAt and has passed.
/// The shell lists the Rollout's pods only when this holds.
pub fn needs_restart(ro: &Rollout, now: Timestamp) -> bool {
    let restarted_at = ro.status.as_ref().and_then(|s| s.restarted_at.as_ref());
    pending(&ro.spec, restarted_at, now)
}

/// [`needs_restart`] against the restartedAt of a status being planned.
pub fn pending(spec: &RolloutSpec, restarted_at: Option<&Time>, now: Timestamp) -> bool {
    let Some(at) = spec.restart_at.as_ref() else {
        return false;
    };
    restarted_at != Some(at) && at.0 <= now
}

/// How soon to look again while pods still wait to be restarted (a watch
/// event usually comes first: the replacement becoming available).
const RESTART_CHECK: Duration = Duration::from_secs(10);

/// A pending restart's effect on a reconcile.
pub enum Gate {
    /// Evict these pods and do nothing else: the availability the plan
    /// observed is stale once they go.
    Evict(Vec<String>),
    /// Carry on; look again after this long if pods still wait.
    Continue(Option<Duration>),
}

/// The restart goes first in a reconcile, as upstream. Marks the restart
/// done in `status` once no pod older than restartAt is left.
pub fn gate(
    snap: &Snapshot,
    status: &mut RolloutStatus,
    new_rs: Option<&ReplicaSet>,
    stable_rs: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: Timestamp,
) -> Gate {
    let ro = &snap.rollout;
    if !pending(&ro.spec, status.restarted_at.as_ref(), now) || new_rs.is_none() {
        return Gate::Continue(None);
    }
    let all = snap.replica_sets.as_slice();
    let r = plan(ro, all, new_rs, stable_rs, &snap.pods, max_unavailable, now);
    if !r.evict.is_empty() {
        return Gate::Evict(r.evict);
    }
    if r.remaining == 0 {
        status.restarted_at = ro.spec.restart_at.clone();
        Gate::Continue(None)
    } else {
        Gate::Continue(Some(RESTART_CHECK))
    }
}

/// The plan that only evicts: the status is left as observed.
pub fn evict_plan(pods: Vec<String>, observed: RolloutStatus) -> super::Plan {
    super::Plan {
        actions: pods
            .into_iter()
            .map(|name| super::Action::EvictPod { name })
            .collect(),
        status: observed,
        requeue_after: Some(RESTART_CHECK),
        events: vec![],
    }
}

/// What the restart needs in this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restart {
    /// Pods to evict now, in order.
    pub evict: Vec<String>,
    /// Pods still older than restartAt (including those evicted now).
    pub remaining: usize,
}

/// Picks the pods to evict now. `pods` are the pods matching the Rollout's
/// selector; only those owned by one of `all` count. Stable pods go first,
/// then the new ReplicaSet's, then older ones, so a restart in the middle of
/// an update replaces the pods serving most traffic first.
pub fn plan(
    ro: &Rollout,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    stable_rs: Option<&ReplicaSet>,
    pods: &[Pod],
    max_unavailable: i32,
    now: Timestamp,
) -> Restart {
    let Some(restart_at) = ro.spec.restart_at.as_ref() else {
        return Restart::default();
    };
    let replicas = ro.spec.replicas_or_default();
    let min_ready = ro.spec.min_ready_seconds;
    let priority = |rs: &ReplicaSet| {
        let is = |other: Option<&ReplicaSet>| {
            other.is_some_and(|o| o.metadata.uid.is_some() && o.metadata.uid == rs.metadata.uid)
        };
        let rank = if is(stable_rs) {
            0
        } else if is(new_rs) {
            1
        } else {
            2
        };
        (rank, rs.metadata.creation_timestamp.clone())
    };
    // Each pod with the priority of its ReplicaSet; pods of other owners are
    // not this Rollout's.
    let mut owned: Vec<(_, &Pod)> = pods
        .iter()
        .filter_map(|pod| {
            let rs = all.iter().find(|rs| {
                pod.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(&o.uid) == rs.metadata.uid.as_ref())
            })?;
            Some((priority(rs), pod))
        })
        .collect();
    owned.sort_by(|(a, p), (b, q)| a.cmp(b).then(p.metadata.name.cmp(&q.metadata.name)));

    let total: i32 = all.iter().map(|rs| rs.spec_replicas()).sum();
    let available = owned
        .iter()
        .filter(|(_, p)| pod_available(p, min_ready, now))
        .count() as i32;
    let concurrent = max_unavailable.max(1);
    let mut can_restart = available - (replicas.max(total) - concurrent);

    let mut out = Restart::default();
    for (_, pod) in owned {
        let created = pod.metadata.creation_timestamp.as_ref();
        if created.is_none_or(|c| c.0 >= restart_at.0) {
            continue;
        }
        out.remaining += 1;
        if can_restart <= 0 || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        out.evict
            .push(pod.metadata.name.clone().unwrap_or_default());
        can_restart -= 1;
    }
    out
}

/// Ready for at least minReadySeconds and not being deleted (as the
/// ReplicaSet controller counts available pods).
fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => {
            min_ready_seconds <= 0
                || c.last_transition_time.as_ref().is_some_and(|Time(t)| {
                    *t + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    fn rollout(replicas: i32, restart_at: Option<i64>, restarted_at: Option<i64>) -> Rollout {
        let mut ro = Rollout::new("web", Default::default());
        ro.spec.replicas = Some(replicas);
        ro.spec.restart_at = restart_at.map(t);
        ro.status = Some(crate::api::rollout::RolloutStatus {
            restarted_at: restarted_at.map(t),
            ..Default::default()
        });
        ro
    }

    fn rs(uid: &str, replicas: i32, created: i64) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{uid}")),
                uid: Some(uid.into()),
                creation_timestamp: Some(t(created)),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, owner: &str, created: i64, ready_since: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(t(created)),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready_since.is_some() {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    last_transition_time: ready_since.map(t),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn restart_is_needed_once_per_restart_at() {
        assert!(!needs_restart(&rollout(3, None, None), t(100).0));
        assert!(!needs_restart(&rollout(3, Some(200), None), t(100).0));
        assert!(needs_restart(&rollout(3, Some(50), None), t(100).0));
        assert!(needs_restart(&rollout(3, Some(50), Some(40)), t(100).0));
        assert!(!needs_restart(&rollout(3, Some(50), Some(50)), t(100).0));
    }

    #[test]
    fn evicts_one_at_a_time_while_all_are_available() {
        let ro = rollout(3, Some(50), None);
        let all = [rs("a", 3, 0)];
        let pods = [
            pod("p1", "a", 10, Some(11)),
            pod("p2", "a", 10, Some(11)),
            pod("p3", "a", 10, Some(11)),
        ];
        let r = plan(&ro, &all, Some(&all[0]), Some(&all[0]), &pods, 0, t(100).0);
        assert_eq!(r.evict, vec!["p1".to_string()]);
        assert_eq!(r.remaining, 3);
    }

    #[test]
    fn waits_while_a_replacement_is_not_available() {
        let ro = rollout(3, Some(50), None);
        let all = [rs("a", 3, 0)];
        let pods = [
            pod("p2", "a", 10, Some(11)),
            pod("p3", "a", 10, Some(11)),
            pod("p4", "a", 60, None), // the replacement, not ready yet
        ];
        let r = plan(&ro, &all, Some(&all[0]), Some(&all[0]), &pods, 1, t(100).0);
        assert!(r.evict.is_empty(), "{r:?}");
        assert_eq!(r.remaining, 2);
    }

    #[test]
    fn max_unavailable_bounds_concurrent_evictions_and_stable_goes_first() {
        let mut ro = rollout(4, Some(50), None);
        ro.spec.min_ready_seconds = 5;
        let stable = rs("s", 2, 0);
        let canary = rs("c", 2, 20);
        let all = [canary.clone(), stable.clone()];
        let pods = [
            pod("c1", "c", 30, Some(31)),
            pod("c2", "c", 30, Some(31)),
            pod("s1", "s", 10, Some(11)),
            pod("s2", "s", 10, Some(98)), // ready, but not for minReadySeconds
            pod("x1", "someone-else", 10, Some(11)),
        ];
        // available 3 of 4: with maxUnavailable 2 one more may go.
        let r = plan(&ro, &all, Some(&canary), Some(&stable), &pods, 2, t(100).0);
        assert_eq!(r.evict, vec!["s1".to_string()]);
        assert_eq!(r.remaining, 4);
        // Later everything is available: two at a time, stable first.
        let r = plan(&ro, &all, Some(&canary), Some(&stable), &pods, 2, t(200).0);
        assert_eq!(r.evict, vec!["s1".to_string(), "s2".to_string()]);
    }

    #[test]
    fn done_when_no_pod_predates_restart_at() {
        let ro = rollout(2, Some(50), None);
        let all = [rs("a", 2, 0)];
        let pods = [pod("p1", "a", 50, Some(51)), pod("p2", "a", 60, Some(61))];
        let r = plan(&ro, &all, Some(&all[0]), Some(&all[0]), &pods, 1, t(100).0);
        assert_eq!(r, Restart::default());
    }

    /// Pods as the kubelet and ReplicaSet controller would move them: an
    /// evicted pod goes at once and its replacement becomes Ready a tick
    /// later. Whatever the sizes, the restart finishes and availability
    /// never drops below replicas - max(maxUnavailable, 1).
    #[test]
    fn restart_keeps_availability_and_finishes() {
        use proptest::prelude::*;
        let cfg = ProptestConfig::with_cases(200);
        proptest!(cfg, |(replicas in 1i32..12, max_unavailable in 0i32..5, min_ready in 0i32..3)| {
            let mut ro = rollout(replicas, Some(50), None);
            ro.spec.min_ready_seconds = min_ready;
            let all = [rs("a", replicas, 0)];
            // (name, created, ready since)
            let mut pods: Vec<(String, i64, i64)> =
                (0..replicas).map(|i| (format!("old-{i}"), 10, 11)).collect();
            let mut next = 0;
            let floor = replicas - max_unavailable.max(1);
            let mut done = false;
            for now in 100..400 {
                let observed: Vec<Pod> = pods
                    .iter()
                    .map(|(n, c, r)| pod(n, "a", *c, (*r <= now).then_some(*r)))
                    .collect();
                let available = pods
                    .iter()
                    .filter(|(_, _, r)| r + i64::from(min_ready) <= now)
                    .count() as i32;
                prop_assert!(available >= floor, "available {available} < {floor} at {now}");
                let r = plan(&ro, &all, Some(&all[0]), Some(&all[0]), &observed, max_unavailable, t(now).0);
                if r.remaining == 0 {
                    done = true;
                    break;
                }
                for name in r.evict {
                    pods.retain(|(n, _, _)| *n != name);
                    pods.push((format!("new-{next}"), now, now + 1));
                    next += 1;
                }
            }
            prop_assert!(done, "restart did not finish: {pods:?}");
            prop_assert!(pods.iter().all(|(_, c, _)| *c >= 50));
        });
    }
}
