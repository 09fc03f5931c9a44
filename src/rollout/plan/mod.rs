//! The functional core of a reconcile: `plan(snapshot, now)` decides every
//! change (ReplicaSets to create, scale or delete; the status to write; when
//! to look again) without touching the API. The shell applies the plan.

pub mod analysis;
pub mod bluegreen;
pub mod canary;
pub mod conditions;
pub mod events;
pub mod replica_set;
pub mod replicas;
pub mod restart;
pub mod status;
pub mod steps;
pub mod traffic;
pub mod workload;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, format_selector};
use crate::rollout::snapshot::MANAGED_BY_ANNOTATION;
use crate::rollout::snapshot::Snapshot;
use crate::rollout::validate::invalid_spec_message;

/// Everything one reconcile intends to change, in the order to apply it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The complete status to write (written last, only if it changed).
    pub status: RolloutStatus,
    /// Look again after this long even if nothing changes (timed events such
    /// as the progress deadline). None: only on changes.
    pub requeue_after: Option<Duration>,
    /// Kubernetes Events to publish once the plan is applied.
    pub events: Vec<events::Event>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet (at 0 replicas; a later plan scales it).
    CreateReplicaSet(Box<ReplicaSet>),
    /// Set spec.replicas (and the desired-replicas annotation), only if the
    /// ReplicaSet is still at `resource_version`: a scale decided on a stale
    /// view is refused by the API server (409) and decided again.
    /// `clear_deadline`: also take off its `scale-down-deadline` (a
    /// ReplicaSet scaled down to nothing has no deadline left to wait for).
    ScaleReplicaSet {
        name: String,
        from: i32,
        to: i32,
        desired_replicas: i32,
        resource_version: Option<String>,
        clear_deadline: bool,
    },
    /// Evict a pod older than spec.restartAt (its ReplicaSet replaces it).
    EvictPod { name: String },
    /// Raise a ReplicaSet's revision annotation (a template seen before
    /// becomes the newest revision again).
    SetReplicaSetRevision { name: String, revision: i64 },
    /// Carry the Rollout's annotations to the new ReplicaSet when they
    /// changed after it was made (as upstream does on every reconcile).
    SetReplicaSetAnnotations {
        name: String,
        annotations: std::collections::BTreeMap<String, String>,
    },
    /// Carry a changed spec.minReadySeconds to the new ReplicaSet (it is
    /// not part of the pod template, so no new ReplicaSet is made for it).
    SetMinReadySeconds { name: String, seconds: i32 },
    /// Delete an old, empty ReplicaSet beyond revisionHistoryLimit.
    DeleteReplicaSet { name: String },
    /// Set the Rollout's `rollout.argoproj.io/revision` annotation.
    SetRolloutRevision { revision: i64 },
    /// Point a Service at the pods of one ReplicaSet (by the hash label);
    /// `adopt` also marks the Service as managed by this Rollout. Only if
    /// the Service is still at `resource_version`, the one the plan saw:
    /// a Service handed back meanwhile (its Rollout deleted) stays so.
    SetServiceSelector {
        name: String,
        hash: String,
        adopt: bool,
        resource_version: Option<String>,
    },
    /// Hand a Service back: take off the hash selector and the managed-by
    /// annotation of a Service this Rollout adopted and no longer names.
    ReleaseService { name: String },
    /// Put (Some, RFC 3339) or take off (None) a ReplicaSet's
    /// `scale-down-deadline` annotation.
    SetScaleDownDeadline {
        name: String,
        deadline: Option<String>,
    },
    /// Give the ReplicaSet's pod template, and its running pods (those with
    /// `hash`), the `wanted` ephemeral labels and annotations, taking off
    /// those of `previous` no longer wanted.
    SetPodMetadata {
        replica_set: String,
        hash: String,
        wanted: Option<crate::api::common::PodTemplateMetadata>,
        previous: Option<crate::api::common::PodTemplateMetadata>,
    },
    /// Create a canary Ingress (owned by the Rollout).
    CreateIngress(Box<k8s_openapi::api::networking::v1::Ingress>),
    /// JSON merge patch of a canary Ingress (its weight, header route,
    /// rules). Annotations other than ours are left alone.
    PatchIngress {
        name: String,
        patch: serde_json::Value,
    },
    /// Delete a canary Ingress the Rollout owns and no longer uses.
    DeleteIngress { name: String },
    /// Start an analysis (a step's or the background one).
    CreateAnalysisRun(Box<crate::api::analysis::AnalysisRun>),
    /// Stop a run that is no longer current (`spec.terminate: true`).
    TerminateAnalysisRun { name: String },
    /// Delete a run beyond the history limits.
    DeleteAnalysisRun { name: String },
    /// Set spec.replicas of the Deployment `spec.workloadRef` names
    /// (`scaleDown`), only if it is still at `resource_version`.
    ScaleDeployment {
        name: String,
        from: i32,
        to: i32,
        resource_version: Option<String>,
    },
    /// Put (Some) or take off (None) the Rollout's
    /// `rollout.argoproj.io/workload-generation` annotation: the generation
    /// of the referenced Deployment the plan was made from.
    SetWorkloadGeneration { generation: Option<String> },
}

/// Decides the next changes for one Rollout. Pure: the same snapshot and
/// time always give the same plan, and applying a plan then planning again
/// on the result gives no further actions once the rollout has settled.
pub fn plan(snapshot: &Snapshot, now: Timestamp) -> Plan {
    // Kubernetes stores times to the second; planning with finer times would
    // make every status look changed and write it again forever.
    let whole = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let mut plan = settle(snapshot, &whole);
    // Timers fall on whole seconds, counted from `whole`: wait from the exact
    // time instead, so a pause ends when it is due and not up to a second late.
    let fraction = Duration::from_nanos(now.subsec_nanosecond().max(0) as u64);
    plan.requeue_after = plan
        .requeue_after
        .map(|d| d.saturating_sub(fraction).max(MIN_REQUEUE));
    plan
}

/// How many status-only plans `settle` chains at most (a setWeight step
/// done, then its pause started, then ...); a bound in case two statuses
/// ever led to each other.
const MAX_SETTLE: usize = 4;

/// Plans, and while the plan changes nothing but the status, plans again
/// as if that status were written, keeping the last plan and every event.
///
/// Many transitions are a status change the next plan acts on at once: a
/// setWeight step done makes the pause after it current, and the pause
/// starts then; the last step done makes the rollout complete. Planned one
/// reconcile at a time, each is its own status write and its own trip
/// through the watch and the queue; chained here, they are one write. The
/// outcome is the one consecutive reconciles would reach, since a plan
/// without actions changes nothing a snapshot shows but the status.
///
/// A pass with actions ends the chain without being kept: its actions
/// would run before the status they follow from is written, and an action
/// that fails (or a status write that conflicts) would leave its effects
/// with the older status (a run deleted while the stored step still waits
/// for it). The next reconcile does them, as before.
fn settle(snapshot: &Snapshot, now: &Time) -> Plan {
    let mut plan = plan_at(snapshot, now.clone());
    let mut earlier_events = Vec::new();
    let mut current = std::borrow::Cow::Borrowed(snapshot);
    for _ in 0..MAX_SETTLE {
        if !chains(&current.rollout, &plan) {
            break;
        }
        current.to_mut().rollout.status = Some(plan.status.clone());
        let next = plan_at(&current, now.clone());
        if !next.actions.is_empty() {
            break;
        }
        if next.status == plan.status {
            // Settled; a timer the settled status starts still counts.
            plan.requeue_after = match (plan.requeue_after, next.requeue_after) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            break;
        }
        earlier_events.append(&mut plan.events);
        plan = next;
    }
    earlier_events.append(&mut plan.events);
    plan.events = earlier_events;
    plan
}

/// Whether the plan after `plan` may share its status write: `plan` changes
/// only the status, and does not turn on `abort` (a progress deadline with
/// progressDeadlineAbort does, and its reason is written once before the
/// abort replaces it, as in separate reconciles).
fn chains(ro: &Rollout, plan: &Plan) -> bool {
    let old = ro.status.as_ref();
    let starts_abort = plan.status.abort && !old.is_some_and(|s| s.abort);
    plan.actions.is_empty() && old != Some(&plan.status) && !starts_abort
}

/// Whether `plan` moves the rollout on from the status `before`: it acts
/// (creates, scales, routes, starts a run...) or changes the status in more
/// than what mirrors the ReplicaSets (replica counts, the conditions, phase
/// and message that follow from them). The workers serve such reconciles
/// of an update under way first; a plan that only mirrors can wait.
pub fn moves_on(before: Option<&RolloutStatus>, plan: &Plan) -> bool {
    if !plan.actions.is_empty() {
        return true;
    }
    let Some(before) = before else {
        return true;
    };
    let beyond_mirror = |s: &RolloutStatus| RolloutStatus {
        replicas: 0,
        updated_replicas: 0,
        ready_replicas: 0,
        available_replicas: 0,
        hpa_replicas: 0,
        conditions: Vec::new(),
        phase: None,
        message: None,
        ..s.clone()
    };
    beyond_mirror(before) != beyond_mirror(&plan.status)
}

/// The snapshot a plan leaves behind when it did no more than create the
/// new ReplicaSet and write the Rollout, with `rollout` and `created` as the
/// API server returned them. Planning from it is what the next reconcile
/// would do once the caches caught up, so the controller does it at once:
/// the new ReplicaSet is scaled in the same reconcile, as upstream does,
/// and not one trip through the queue later (minutes in a wave of 10,000).
/// None for any other plan (the snapshot would not show what its other
/// actions changed: a Service's selector, an Ingress), and when the Rollout
/// came back with a spec changed meanwhile (the Services, templates and
/// Ingresses read were for the old one).
pub fn after_create(
    snapshot: &Snapshot,
    plan: &Plan,
    rollout: Rollout,
    mut created: ReplicaSet,
) -> Option<Snapshot> {
    if rollout.metadata.generation != snapshot.rollout.metadata.generation {
        return None;
    }
    let only_creates = plan.actions.iter().all(|a| {
        matches!(
            a,
            Action::CreateReplicaSet(_)
                | Action::SetRolloutRevision { .. }
                | Action::SetWorkloadGeneration { .. }
        )
    });
    if !only_creates {
        return None;
    }
    // The ReplicaSet controller writes the new ReplicaSet's status at once,
    // so a scale conditional on the version created would mostly meet a
    // conflict. Nobody else scales a ReplicaSet created an instant ago.
    created.metadata.resource_version = None;
    let mut replica_sets: Vec<ReplicaSet> = snapshot
        .replica_sets
        .iter()
        .filter(|rs| rs.metadata.name != created.metadata.name)
        .cloned()
        .collect();
    replica_sets.push(created);
    Some(Snapshot {
        rollout,
        replica_sets,
        ..snapshot.clone()
    })
}

/// Never ask to be woken sooner than this (a timer due this very instant).
const MIN_REQUEUE: Duration = Duration::from_millis(1);

fn plan_at(snapshot: &Snapshot, now: Time) -> Plan {
    // A workloadRef is resolved first, as upstream: every later check and
    // decision sees the Deployment's template as if it were inline.
    if let Some(message) = workload::problem(snapshot) {
        return invalid(&snapshot.rollout, message, &now);
    }
    let read = snapshot;
    let resolved = workload::resolve(snapshot).map(|rollout| Snapshot {
        rollout,
        ..snapshot.clone()
    });
    let snapshot = resolved.as_ref().unwrap_or(snapshot);
    let ro = &snapshot.rollout;
    // What this version does not implement is said first: the rest of the
    // spec is validated as the feature it names would need, which is not
    // always how the features implemented need it.
    let message = unsupported(ro)
        .or_else(|| invalid_spec_message(ro))
        .or_else(|| service_problem(snapshot))
        .or_else(|| traffic::problem(snapshot))
        .or_else(|| analysis_problem(snapshot))
        .or_else(|| rejected_problem(snapshot));
    if let Some(message) = message {
        return invalid(ro, message, &now);
    }
    let mut status = base_status(ro);
    status::remove(&mut status.conditions, status::INVALID_SPEC);

    let mut plan = if ro.spec.strategy.blue_green.is_some() {
        bluegreen::plan(snapshot, status, &now)
    } else {
        canary::plan(snapshot, status, &now)
    };
    // As upstream, the controller's pause lasts exactly as long as a pause
    // condition does. A client that resumed by clearing the conditions only
    // (Argo CD, upstream's plugin) left controllerPause set: the plan that
    // reacts to the resume (a step done, a fresh analysis run) clears it, so
    // the next plan does not take the same resume again. While the spec is
    // paused, steps and the blue-green switch wait, so only a fresh run can
    // take the resume; otherwise it is kept. The plugin's promote of a manual
    // pause clears the conditions before it unpauses the spec, and a plan
    // between the two writes must not restart the pause step (upstream's
    // does).
    let resume_taken = !ro.spec.paused
        || plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateAnalysisRun(_)));
    if plan.status.pause_conditions.is_empty() && resume_taken {
        plan.status.controller_pause = false;
    }
    let released = released_services(snapshot);
    plan.actions.splice(0..0, released);
    finish(ro, &mut plan.status);
    events::derive(snapshot, &mut plan);
    // After the phase is known: `scaleDown: onsuccess` waits for Healthy.
    // The Rollout as read: the resolved one already has the annotation.
    let workload_actions = workload::actions(read, &mut plan.status);
    plan.actions.extend(workload_actions);
    plan
}

/// The plan of a Rollout whose spec cannot be acted on: the InvalidSpec
/// condition with `message`, and nothing else.
fn invalid(ro: &Rollout, message: String, now: &Time) -> Plan {
    let mut status = base_status(ro);
    status::set(
        &mut status.conditions,
        status::condition(status::INVALID_SPEC, "True", status::INVALID_SPEC, message),
        now,
    );
    finish(ro, &mut status);
    // As upstream: look again later, since what is missing (a Service)
    // may appear without the Rollout changing.
    Plan {
        actions: vec![],
        status,
        requeue_after: Some(Duration::from_secs(20)),
        events: vec![],
    }
}

/// Fields carried over from the observed status or derived from the spec.
fn base_status(ro: &Rollout) -> RolloutStatus {
    let mut s = ro.status.clone().unwrap_or_default();
    s.observed_generation = ro.metadata.generation.map(|g| g.to_string());
    s.selector = Some(format_selector(ro.spec.selector.as_ref()));
    s
}

fn finish(ro: &Rollout, status: &mut RolloutStatus) {
    let (phase, message) = status::phase(&ro.spec, status);
    status.phase = Some(phase);
    // Upstream omits an empty message (Healthy).
    status.message = (!message.is_empty()).then_some(message);
}

/// Parts of the Argo Rollouts API this version accepts but does not act on.
/// Reported as InvalidSpec so the rollout shows Degraded with the reason,
/// instead of silently doing nothing.
pub(crate) fn unsupported(ro: &Rollout) -> Option<String> {
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    let spec = &ro.spec;
    let canary = spec.strategy.canary.as_ref();
    let step_kind = canary.and_then(|c| {
        c.steps.iter().find_map(|s| {
            if s.experiment.is_some() {
                Some("experiment steps")
            } else if s.set_mirror_route.is_some() {
                Some("setMirrorRoute steps")
            } else if s.plugin.is_some() {
                Some("plugin steps")
            } else {
                None
            }
        })
    });
    let workload = match workload::target(ro) {
        Some(workload::Target::NotImplemented(what)) => Some(what),
        _ => None,
    };
    let what = if let Some(what) = workload.as_deref() {
        what
    } else if spec.rollback_window.is_some() {
        "spec.rollbackWindow"
    } else if canary.is_some_and(|c| c.ping_pong.is_some()) {
        // Upstream only has it for ALB, Istio and plugins, none implemented.
        "canary pingPong"
    } else if let Some(kind) = step_kind {
        kind
    } else {
        canary
            .and_then(|c| c.traffic_routing.as_ref())
            .and_then(other_router)?
    };
    Some(not_implemented(name, what))
}

/// The message for a part of the API this version does not implement yet.
pub(crate) fn not_implemented(name: &str, what: &str) -> String {
    format!(
        "The Rollout {name:?} uses {what}, which this version of the controller does not implement yet"
    )
}

/// A traffic router other than nginx (the only one implemented).
fn other_router(tr: &crate::api::rollout::RolloutTrafficRouting) -> Option<&'static str> {
    [
        (tr.istio.is_some(), "trafficRouting.istio"),
        (tr.alb.is_some(), "trafficRouting.alb"),
        (tr.smi.is_some(), "trafficRouting.smi"),
        (tr.ambassador.is_some(), "trafficRouting.ambassador"),
        (tr.app_mesh.is_some(), "trafficRouting.appMesh"),
        (tr.traefik.is_some(), "trafficRouting.traefik"),
        (tr.apisix.is_some(), "trafficRouting.apisix"),
        (tr.plugins.is_some(), "trafficRouting.plugins"),
    ]
    .into_iter()
    .find_map(|(set, what)| set.then_some(what))
}

/// An analysis of the spec that cannot be run (a template missing, ...).
fn analysis_problem(snapshot: &Snapshot) -> Option<String> {
    let ro = &snapshot.rollout;
    let template = ro.spec.template.as_ref()?;
    let collisions = ro.status.as_ref().and_then(|s| s.collision_count);
    let hash = snapshot.pod_hash(template, collisions);
    analysis::problem(snapshot, &hash)
}

/// The API server refused the ReplicaSet of this very template (and none
/// exists for it): upstream validates the pod template itself before
/// creating anything, with the same Kubernetes rules, so the refusal is
/// reported the same way, and nothing is tried until the template changes.
fn rejected_problem(snapshot: &Snapshot) -> Option<String> {
    let (hash, detail) = snapshot.rejected.as_ref()?;
    let ro = &snapshot.rollout;
    let template = ro.spec.template.as_ref()?;
    let collisions = ro.status.as_ref().and_then(|s| s.collision_count);
    let current = snapshot.pod_hash(template, collisions);
    if &current != hash || snapshot.replica_set(Some(hash)).is_some() {
        return None;
    }
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    Some(format!("The Rollout {name:?} is invalid: {detail}"))
}

/// What the API server's refusal of a ReplicaSet says about the pod
/// template, as a field error: a 422 lists the template's field errors
/// (`ReplicaSet.apps "x" is invalid: spec.template.spec...: ...`), which
/// are the Rollout's own paths; a 400 means it could not even read a value
/// (such as a malformed quantity).
pub fn rejection_detail(code: u16, message: &str) -> String {
    if code == 422
        && let Some((_, errors)) = message.split_once(" is invalid: ")
    {
        return errors.to_string();
    }
    let why = message
        .split_once(" cannot be handled as a ReplicaSet: ")
        .map_or(message, |(_, why)| why);
    format!(
        "spec.template: Invalid value: the API server cannot create a ReplicaSet from it: {why}"
    )
}

/// Services this Rollout adopted (their managed-by annotation names it) that
/// its spec no longer names: after a switch from blueGreen to canary, or a
/// Service renamed in the spec. As upstream's Service controller does, they
/// lose the hash selector (which would pin them to one ReplicaSet's pods,
/// soon none) and the annotation, and select the app's pods again.
fn released_services(snapshot: &Snapshot) -> Vec<Action> {
    let ro = &snapshot.rollout;
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    let named = Snapshot::service_names(ro);
    snapshot
        .services
        .iter()
        .filter(|(svc_name, _)| !named.contains(svc_name))
        .filter(|(_, svc)| {
            svc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MANAGED_BY_ANNOTATION))
                .is_some_and(|m| m == name)
        })
        .map(|(svc_name, _)| Action::ReleaseService {
            name: svc_name.clone(),
        })
        .collect()
}

/// A Service named by the spec that cannot be used, in upstream's wording:
/// it does not exist, its selector wants labels the pods do not have, or
/// another Rollout already manages it.
fn service_problem(snapshot: &Snapshot) -> Option<String> {
    let ro = &snapshot.rollout;
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    let pod_labels = ro
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    Snapshot::service_fields(ro)
        .into_iter()
        .find_map(|(field, svc)| {
            let invalid = |detail: String| {
                format!(
                    "The Rollout {name:?} is invalid: spec.strategy.{field}: Invalid value: {svc:?}: {detail}"
                )
            };
            let Some(service) = snapshot.services.get(&svc) else {
                return Some(invalid(format!("services {svc:?} not found")));
            };
            let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
            let unmatched = selector.into_iter().flatten().find(|(k, v)| {
                k.as_str() != POD_TEMPLATE_HASH_LABEL && pod_labels.get(*k) != Some(*v)
            });
            if let Some((key, _)) = unmatched {
                return Some(invalid(format!(
                    "Service {svc:?} has unmatch label {key:?} in rollout"
                )));
            }
            let manager = service
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MANAGED_BY_ANNOTATION));
            match manager {
                Some(m) if m != name => Some(invalid(format!(
                    "Service {svc:?} is managed by another Rollout"
                ))),
                _ => None,
            }
        })
}

#[cfg(test)]
mod tests;
