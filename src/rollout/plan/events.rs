//! Kubernetes Events for a plan's transitions, with upstream's reasons and
//! messages. Derived from the plan itself (its actions and the status change)
//! so that each transition is reported once: the status write that records
//! it also stops the next plan from reporting it again.

use crate::api::rollout::RolloutStatus;
use crate::rollout::plan::status as st;
use crate::rollout::plan::{Action, Plan};
use kube::ResourceExt;

use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::snapshot::{REVISION_ANNOTATION, ReplicaSetExt, Snapshot};

/// The planner's events are published as they are.
pub use crate::controller::recorder::Event;

pub const ROLLOUT_UPDATED: &str = "RolloutUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const SCALING_RS: &str = "ScalingReplicaSet";
pub const STEP_COMPLETED: &str = "RolloutStepCompleted";
pub const PAUSED: &str = "RolloutPaused";
pub const RESUMED: &str = "RolloutResumed";
pub const ABORTED: &str = "RolloutAborted";
pub const COMPLETED: &str = "RolloutCompleted";
pub const POD_RESTARTED: &str = "PodRestarted";
pub const TRAFFIC_WEIGHT_UPDATED: &str = "TrafficWeightUpdated";
pub const SWITCH_SERVICE: &str = "SwitchService";
pub const NOT_COMPLETED: &str = "RolloutNotCompleted";
pub const SKIP_STEPS: &str = "SkipSteps";
pub const CREATING_CANARY_INGRESS: &str = "CreatingCanaryIngress";
pub const PATCHING_CANARY_INGRESS: &str = "PatchingCanaryIngress";
pub const ADDED_TO_INFORMER: &str = "RolloutAddedToInformer";

/// Events for the actions of `plan` and for its status transitions,
/// appended after those the strategy recorded while deciding (step
/// completed, rollout completed).
pub fn derive(snap: &Snapshot, plan: &mut Plan) {
    let old = snap.rollout.status.clone().unwrap_or_default();
    let mut out = for_actions(snap, &plan.actions);
    out.extend(transitions(&old, &plan.status));
    out.extend(not_completed(snap, plan));
    out.extend(weight_change(&old, &plan.status));
    plan.events.extend(out);
}

/// Upstream's RolloutNotCompleted, when the Completed condition turns (or
/// first is) False: an update starts.
fn not_completed(snap: &Snapshot, plan: &Plan) -> Option<Event> {
    let old = snap.rollout.status.as_ref();
    let completed =
        |c: Option<&crate::api::rollout::RolloutCondition>| c.map(|c| c.status == "True");
    let before = completed(old.and_then(|s| st::find(&s.conditions, st::COMPLETED)));
    let after = completed(st::find(&plan.status.conditions, st::COMPLETED));
    if after != Some(false) || before == Some(false) {
        return None;
    }
    // The Rollout's revision as this plan leaves it.
    let revision = plan
        .actions
        .iter()
        .find_map(|a| match a {
            Action::SetRolloutRevision { revision } => Some(revision.to_string()),
            _ => None,
        })
        .or_else(|| snap.rollout.annotations().get(REVISION_ANNOTATION).cloned())
        .unwrap_or_else(|| "0".into());
    let hash = plan.status.current_pod_hash.as_deref().unwrap_or_default();
    Some(Event::normal(
        NOT_COMPLETED,
        format!("Rollout not completed, started update to revision {revision} ({hash})"),
    ))
}

/// The events reporting these actions (done by applying a plan), in order.
/// Also what a plan that failed part-way reports for the actions it did:
/// the next plan finds them done and would not report them.
pub fn for_actions(snap: &Snapshot, actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|action| for_action(snap, action))
        .collect()
}

fn for_action(snap: &Snapshot, action: &Action) -> Option<Event> {
    Some(match action {
        Action::SetRolloutRevision { revision } => Event::normal(
            ROLLOUT_UPDATED,
            format!("Rollout updated to revision {revision}"),
        ),
        Action::CreateReplicaSet(rs) => {
            let name = rs.metadata.name.as_deref().unwrap_or_default();
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .map_or("0", String::as_str);
            Event::normal(
                NEW_RS_CREATED,
                format!("Created ReplicaSet {name} (revision {revision})"),
            )
        }
        Action::ScaleReplicaSet { name, from, to, .. } => {
            let revision = snap
                .replica_sets
                .iter()
                .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
                .map_or(0, |rs| rs.revision());
            let direction = if to > from { "up" } else { "down" };
            Event::normal(
                SCALING_RS,
                format!(
                    "Scaled {direction} ReplicaSet {name} (revision {revision}) from {from} to {to}"
                ),
            )
        }
        Action::SetServiceSelector { name, hash, .. } => {
            let from = snap
                .services
                .get(name)
                .and_then(|svc| {
                    svc.spec
                        .as_ref()?
                        .selector
                        .as_ref()?
                        .get(POD_TEMPLATE_HASH_LABEL)
                })
                .map_or("", String::as_str);
            Event::normal(
                SWITCH_SERVICE,
                format!("Switched selector for service '{name}' from '{from}' to '{hash}'"),
            )
        }
        Action::CreateIngress(ingress) => Event::normal(
            CREATING_CANARY_INGRESS,
            format!(
                "Creating canary ingress `{}` with weight `{}`",
                ingress.name_any(),
                canary_weight(ingress.metadata.annotations.as_ref()).unwrap_or(0)
            ),
        ),
        Action::PatchIngress { name, patch } => {
            // The weight the patch sets, or the one the Ingress keeps.
            let patched = patch
                .pointer("/metadata/annotations")
                .and_then(|a| serde_json::from_value(a.clone()).ok());
            let current = snap
                .ingresses
                .get(name)
                .and_then(|i| i.metadata.annotations.as_ref());
            let weight = canary_weight(patched.as_ref())
                .or_else(|| canary_weight(current))
                .unwrap_or(0);
            Event::normal(
                PATCHING_CANARY_INGRESS,
                format!("Updating Ingress `{name}` to desiredWeight '{weight}'"),
            )
        }
        Action::EvictPod { name } => Event::normal(
            POD_RESTARTED,
            format!("Restarting pod {name}: it is older than spec.restartAt"),
        ),
        _ => return None,
    })
}

/// The `<prefix>/canary-weight` annotation's value.
fn canary_weight(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<i32> {
    annotations?
        .iter()
        .find(|(k, _)| k.ends_with("/canary-weight"))
        .and_then(|(_, v)| v.parse().ok())
}

/// Upstream's TrafficWeightUpdated: "Traffic weight updated from 0 to 20".
fn weight_change(old: &RolloutStatus, new: &RolloutStatus) -> Option<Event> {
    let to = new.canary.weights.as_ref()?.canary.weight;
    let detail = match old.canary.weights.as_ref() {
        None => format!("to {to}"),
        Some(w) if w.canary.weight != to => format!("from {} to {to}", w.canary.weight),
        Some(_) => return None,
    };
    Some(Event::normal(
        TRAFFIC_WEIGHT_UPDATED,
        format!("Traffic weight updated {detail}"),
    ))
}

/// Paused/resumed and aborted, as upstream: a pause is the presence of
/// pauseConditions; clearing them because of an abort is not a resume.
fn transitions(old: &RolloutStatus, new: &RolloutStatus) -> Vec<Event> {
    let mut out = Vec::new();
    let was_paused = !old.pause_conditions.is_empty();
    match new.pause_conditions.first() {
        Some(c) if !was_paused => out.push(Event::normal(
            PAUSED,
            format!("Rollout is paused ({})", c.reason),
        )),
        None if was_paused && new.aborted_at.is_none() => {
            out.push(Event::normal(RESUMED, "Rollout is resumed".into()))
        }
        _ => {}
    }
    let aborted = |s: &RolloutStatus| {
        st::find(&s.conditions, st::PROGRESSING)
            .filter(|c| c.reason.as_deref() == Some(st::REASON_ABORTED))
            .map(|c| c.message.clone().unwrap_or_default())
    };
    if let (None, Some(message)) = (aborted(old), aborted(new)) {
        out.push(Event {
            warning: true,
            reason: ABORTED,
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::PauseCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn paused() -> RolloutStatus {
        RolloutStatus {
            pause_conditions: vec![PauseCondition {
                reason: "CanaryPauseStep".into(),
                start_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn pause_resume_and_abort_are_reported_once() {
        let none = RolloutStatus::default();
        let reasons = |o: &RolloutStatus, n: &RolloutStatus| {
            transitions(o, n)
                .iter()
                .map(|e| e.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(reasons(&none, &paused()), vec![PAUSED]);
        assert!(reasons(&paused(), &paused()).is_empty());
        assert_eq!(reasons(&paused(), &none), vec![RESUMED]);

        let mut aborted = none.clone();
        aborted.aborted_at = Some(Time(Timestamp::UNIX_EPOCH));
        st::set(
            &mut aborted.conditions,
            st::condition(
                st::PROGRESSING,
                "False",
                st::REASON_ABORTED,
                "Rollout aborted update to revision 2".into(),
            ),
            &Time(Timestamp::UNIX_EPOCH),
        );
        let events = transitions(&paused(), &aborted);
        assert_eq!(events.len(), 1, "an abort is not a resume: {events:?}");
        assert!(events[0].warning);
        assert_eq!(events[0].message, "Rollout aborted update to revision 2");
        assert!(transitions(&aborted, &aborted).is_empty());
    }
}
