//! The canary strategy. With no steps it is a rolling update: the new
//! ReplicaSet grows to full size and older ones shrink, within maxSurge and
//! maxUnavailable, and the new one becomes stable once fully available.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::analysis as gates;
use super::conditions::{conditions, requeue};
use super::events::{self, Event};
use super::replica_set::{self, history_cleanup, scale_to};
use super::replicas::{
    CanaryInput, Limits, OldRs, RsCounts, approximate_weighted_counts, basic_canary_counts,
    canary_limits, scale_down_old,
};
use super::status as st;
use super::steps::{self, PAUSE_REASON_CANARY, Pause, set_weight};
use super::traffic::{self, Routing};
use super::{Action, Plan, restart};
use crate::api::Rollout;
use crate::api::rollout::{CanaryStep, PauseCondition, RolloutStatus, TrafficWeights};
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, steps_hash, steps_hash_matches};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, ReplicaSetExt, Snapshot,
};

pub fn plan(snap: &Snapshot, mut status: RolloutStatus, now: &Time) -> Plan {
    let ro = &snap.rollout;
    let all = snap.replica_sets.as_slice();
    let old_status = ro.status.clone().unwrap_or_default();
    let spec = &ro.spec;
    // Validation guarantees a canary strategy and a template here.
    let canary = spec.strategy.canary.clone().unwrap_or_default();
    let steps = canary.steps.as_slice();
    let step_count = steps.len() as i32;
    let template = spec.template.clone().unwrap_or_default();
    let replicas = spec.replicas_or_default();
    // Validation has checked that both parse; the fallback is the most
    // cautious setting (no extra pods, one unavailable).
    let limits = canary_limits(
        canary.max_surge.as_ref(),
        canary.max_unavailable.as_ref(),
        replicas,
    )
    .unwrap_or(Limits {
        max_surge: 0,
        max_unavailable: 1,
    });
    let hash = snap.pod_hash(&template, old_status.collision_count);
    let routing = traffic::routing(ro);
    let observed_weights = old_status.canary.weights.as_ref();
    status.current_pod_hash = Some(hash.clone());
    let step_hash = steps_hash(&canary.steps);
    let same_steps = old_status
        .current_step_hash
        .as_deref()
        .is_some_and(|old| steps_hash_matches(old, &canary.steps, &step_hash));
    status.current_step_hash = Some(step_hash);

    // A new template or new steps start the steps over; going back to the
    // stable template skips them (fast rollback).
    let mut skipped_steps = false;
    if old_status.current_pod_hash != status.current_pod_hash || !same_steps {
        st::end_update(&mut status);
        // Every pod of a new template is new: a pending restart is done.
        status.restarted_at = spec.restart_at.clone();
        status.current_step_index = (!steps.is_empty()).then_some(0);
        if !steps.is_empty() && old_status.stable_rs.as_deref() == Some(hash.as_str()) {
            status.current_step_index = Some(step_count);
            skipped_steps = true;
        }
    }
    // A full promotion skips what is left of the update, and ends an abort
    // and any pause (upstream's promote --full, which also works after an abort).
    if status.promote_full {
        status.abort = false;
        status.pause_conditions.clear();
        if !steps.is_empty() {
            status.current_step_index = Some(step_count);
        }
    }

    let new_rs = snap.replica_set(Some(&hash));
    let stable_rs = snap.replica_set(old_status.stable_rs.as_deref());
    let max_revision = all.iter().map(|rs| rs.revision()).max().unwrap_or(0);
    let mut actions = Vec::new();
    let mut events = Vec::new();
    if skipped_steps {
        events.push(Event::normal(
            events::SKIP_STEPS,
            "Rollback to stable ReplicaSets".into(),
        ));
    }

    // A restart goes first; a plan that evicts pods does nothing else.
    let restart_wait = match restart::gate(
        snap,
        &mut status,
        new_rs,
        stable_rs,
        limits.max_unavailable,
        now.0,
    ) {
        restart::Gate::Evict(pods) => return restart::evict_plan(pods, old_status),
        restart::Gate::Continue(wait) => wait,
    };

    // Observed counts: updated pods are those of the new ReplicaSet.
    status.replicas = all.iter().map(|rs| rs.status_replicas()).sum();
    status.hpa_replicas = status.replicas;
    status.ready_replicas = all.iter().map(|rs| rs.ready()).sum();
    status.available_replicas = all.iter().map(|rs| rs.available()).sum();
    status.updated_replicas = new_rs.map_or(0, |rs| rs.status_replicas());

    // The new ReplicaSet becomes stable on the initial deploy, or once it is
    // fully available after the last step (or a full promotion).
    let steps_done = steps.is_empty() || status.current_step_index >= Some(step_count);
    // With traffic routing, all traffic goes to the canary first; the
    // stable Service switches (and the weight returns to 0) afterwards.
    let traffic_ready = match routing {
        None => true,
        Some(r) => {
            old_status.stable_rs.as_deref() == Some(hash.as_str())
                || observed_weights.is_some_and(|w| {
                    w.canary.weight >= r.max_weight
                        && w.canary.pod_template_hash.as_deref() == Some(hash.as_str())
                })
        }
    };
    // Fully available, or as far as replicaProgressThreshold asks.
    let threshold = canary.replica_progress_threshold.as_ref();
    let promote = stable_rs.is_none()
        || (!status.abort
            && new_rs.is_some_and(|rs| {
                rs.available() >= replicas || replica_set::progress_met(threshold, rs, replicas)
            })
            && (status.promote_full || steps_done)
            && traffic_ready);
    if promote {
        if old_status.stable_rs.as_deref() != Some(hash.as_str()) {
            let why = if stable_rs.is_none() {
                "Initial deploy".to_string()
            } else if status.promote_full {
                "Full promotion requested".to_string()
            } else {
                format!("Completed all {step_count} canary steps")
            };
            let revision = new_rs.map_or(max_revision + 1, |rs| rs.revision());
            events.push(Event::normal(
                events::COMPLETED,
                format!("Rollout completed update to revision {revision} ({hash}): {why}"),
            ));
        }
        status.stable_rs = Some(hash.clone());
        st::end_update(&mut status);
        status.current_step_index = (!steps.is_empty()).then_some(step_count);
    }
    // Analysis gates: a failed run aborts, an inconclusive one pauses.
    let mut abort_message = None;
    let mut analysis_actions = Vec::new();
    if let Some(new_rs) = new_rs {
        let position = gates::Position {
            hash: &hash,
            revision: new_rs.revision(),
            promoted: status.stable_rs.as_deref() == Some(hash.as_str()),
            blue_green: None,
        };
        let g = gates::plan(snap, &mut status, position, now);
        if let Some(message) = g.abort
            && !status.abort
        {
            status.abort = true;
            abort_message = Some(message);
        }
        analysis_actions = g.actions;
        events.extend(g.events);
    }
    let mut timers: Vec<Timestamp> = Vec::new();
    // What decides whether the pods are where a step wants them.
    let desired = Desired {
        new_rs,
        stable_rs,
        limits,
        routing,
        observed: observed_weights,
    };
    if !status.abort {
        status.aborted_at = None; // retried
    }
    if status.abort {
        // Back to step 0: weight 0, stable to full size (unless the new
        // ReplicaSet already is the stable one: nothing left to undo).
        let done = status.stable_rs.as_deref() == Some(hash.as_str());
        status.current_step_index =
            (!steps.is_empty()).then_some(if done { step_count } else { 0 });
        status.aborted_at.get_or_insert_with(|| now.clone());
        status.pause_conditions.clear();
        status.controller_pause = false;
    } else if !spec.paused && !promote {
        timers.extend(advance_step(snap, &mut status, &desired, now, &mut events));
    }
    let weight = if status.stable_rs.as_deref() == Some(hash.as_str()) {
        100
    } else if status.abort {
        0
    } else {
        set_weight(steps, status.current_step_index, 100)
    };
    // The canary Ingresses: the weight (and header route) in force.
    let traffic_actions = match routing {
        Some(r) => {
            let w = routed_weight(r, snap, &status, &desired);
            let serving = new_rs.is_some_and(|rs| rs.available() > 0);
            let header = r.header_route(&status).filter(|_| serving);
            let canary_hash = new_rs.and_then(|rs| rs.pod_hash());
            status.canary.weights = Some(r.weights(w, canary_hash, status.stable_rs.as_deref()));
            r.ingress_actions(snap, w, header.as_ref())
        }
        None => {
            status.canary.weights = None;
            traffic::leftover_ingresses(snap)
        }
    };

    let Some(new_rs) = new_rs else {
        actions.extend(services(snap, &status, false));
        actions.extend(traffic_actions);
        let so_far = Plan {
            actions,
            status,
            events,
            ..Plan::default()
        };
        let wait = (timers.as_slice(), restart_wait);
        return replica_set::create_plan(snap, &old_status, so_far, wait, now);
    };
    let new_name = new_rs.metadata.name.clone().unwrap_or_default();

    let revision = replica_set::sync_revision(ro, new_rs, max_revision, &mut actions);

    // Traffic moves before pods: the Service changes are applied before the
    // scaling, and decided knowing it, so the canary Service never selects a
    // canary that this plan shrinks to nothing.
    // A manual pause freezes the rollout, but not a change of `replicas`
    // (by hand or by an HPA): as upstream, that is still applied.
    let scaling_event = [Some(new_rs), stable_rs].into_iter().flatten().any(|rs| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION))
            .and_then(|d| d.parse::<i32>().ok())
            .is_some_and(|d| d != replicas)
    });
    // An Inconclusive analysis halts the update as a manual pause does
    // (upstream's haltProgress): the pods stay where they are until someone
    // promotes, whatever the steps say meanwhile.
    let halted = spec.paused || gates::has_pause(&status, gates::PAUSE_REASON_INCONCLUSIVE);
    let scaling = if halted && !scaling_event {
        vec![]
    } else if let Some(r) = routing {
        scale_routed(r, all, &status, &desired, replicas, now.0, &mut timers)
    } else {
        scale(all, new_rs, stable_rs, replicas, weight, limits)
    };
    let new_target = scaling
        .iter()
        .find_map(|a| match a {
            Action::ScaleReplicaSet { name, to, .. } if *name == new_name => Some(*to),
            _ => None,
        })
        .unwrap_or_else(|| new_rs.spec_replicas());
    let serving = new_rs.available().min(new_target) > 0;
    actions.extend(services(snap, &status, serving));
    actions.extend(traffic_actions);
    actions.extend(scaling);
    actions.extend(history_cleanup(ro, all, new_rs, stable_rs));

    actions.extend(analysis_actions);
    actions.extend(replica_set::ephemeral_actions(
        new_rs,
        stable_rs,
        canary.canary_metadata.as_ref(),
        canary.stable_metadata.as_ref(),
    ));

    conditions(
        ro,
        &old_status,
        &mut status,
        Some(&new_name),
        revision,
        abort_message.as_deref(),
        now,
    );
    let requeue_after = requeue(ro, &status, now, &timers, restart_wait);
    Plan {
        actions,
        status,
        requeue_after,
        events,
    }
}

/// Completes the current step if it is done, at most one step per plan (the
/// status write triggers the next plan). Returns when a timed pause ends.
fn advance_step(
    snap: &Snapshot,
    status: &mut RolloutStatus,
    desired: &Desired<'_>,
    now: &Time,
    events: &mut Vec<Event>,
) -> Option<Timestamp> {
    let ro = &snap.rollout;
    let canary = ro.spec.strategy.canary.as_ref()?;
    let step = steps::current(&canary.steps, status.current_step_index)?;
    // A step may combine keys (setCanaryScale with setHeaderRoute, ...): it
    // is done when the first of them, in upstream's order, is.
    let done = if step.pause.is_some() {
        match steps::pause(step, status, now) {
            Pause::Start { until } => {
                status.pause_conditions.push(PauseCondition {
                    reason: PAUSE_REASON_CANARY.into(),
                    start_time: now.clone(),
                });
                status.controller_pause = true;
                return until;
            }
            Pause::Waiting { until } => return until,
            Pause::Done => true,
        }
    } else if step.set_canary_scale.is_some() || step.set_weight.is_some() {
        desired.reached(snap, status)
    } else if step.analysis.is_some() {
        // The gates keep the current step's run in the status.
        status
            .canary
            .current_step_analysis_run_status
            .as_ref()
            .is_some_and(|r| r.status == "Successful")
    } else {
        // setHeaderRoute alone: the Ingress patch goes with the step's
        // completion. Other kinds are refused before planning (unsupported).
        step.set_header_route.is_some()
    };
    if done {
        // controllerPause stays while another pause (an Inconclusive run)
        // holds the rollout; `plan` clears it once no pause is left.
        status
            .pause_conditions
            .retain(|c| c.reason != PAUSE_REASON_CANARY);
        let index = status.current_step_index.unwrap_or(0) + 1;
        status.current_step_index = Some(index);
        events.push(Event::normal(
            events::STEP_COMPLETED,
            format!(
                "Rollout step {index}/{} completed ({})",
                canary.steps.len(),
                step_string(step)
            ),
        ));
    }
    None
}

/// What decides whether the pods are where the current step wants them.
struct Desired<'a> {
    new_rs: Option<&'a ReplicaSet>,
    stable_rs: Option<&'a ReplicaSet>,
    limits: Limits,
    routing: Option<Routing<'a>>,
    /// status.canary.weights as last written.
    observed: Option<&'a TrafficWeights>,
}

impl Desired<'_> {
    /// Are the canary and stable ReplicaSets at the counts the current step
    /// asks for, the canary's all available?
    fn reached(&self, snap: &Snapshot, status: &RolloutStatus) -> bool {
        let Some(new_rs) = self.new_rs else {
            return false;
        };
        let ro = &snap.rollout;
        match self.routing {
            None => {
                let canary = ro.spec.strategy.canary.as_ref();
                let steps = canary.map(|c| c.steps.as_slice()).unwrap_or_default();
                let w = set_weight(steps, status.current_step_index, 100);
                at_desired_counts(
                    ro,
                    snap.replica_sets.as_slice(),
                    new_rs,
                    self.stable_rs,
                    w,
                    self.limits,
                )
            }
            Some(r) => {
                let replicas = ro.spec.replicas_or_default();
                let (want_new, want_stable) = r.counts(replicas, status, self.observed);
                // With dynamicStableScale the stable follows the weight
                // afterwards; otherwise it must be at full size.
                let stable_ok = r.canary.dynamic_stable_scale
                    || self.stable_rs.is_none_or(|s| {
                        s.spec_replicas() == want_stable && s.status_replicas() == want_stable
                    });
                let threshold = r.canary.replica_progress_threshold.as_ref();
                replica_set::progress_met(threshold, new_rs, want_new) && stable_ok
            }
        }
    }
}

/// The weight on the canary Ingresses: 0 until the canary has available
/// pods, after an abort and once it is stable; otherwise the current step's
/// weight once its pods are there (the previous step's until then), all of
/// it once the steps are done. Traffic moves back to stable only as far as
/// the stable pods can take it (dynamicStableScale), except on abort.
fn routed_weight(r: Routing<'_>, snap: &Snapshot, status: &RolloutStatus, d: &Desired<'_>) -> i32 {
    let replicas = snap.rollout.spec.replicas_or_default();
    let promoted = status.stable_rs.is_none() || status.stable_rs == status.current_pod_hash;
    let available = d.new_rs.map_or(0, |rs| rs.available());
    if promoted || status.abort || available == 0 {
        return 0;
    }
    let observed = d.observed.map_or(0, |w| w.canary.weight);
    let steps = r.canary.steps.as_slice();
    let w = if status.promote_full {
        if available >= replicas {
            r.max_weight
        } else {
            observed
        }
    } else if d.reached(snap, status) {
        set_weight(steps, status.current_step_index, r.max_weight)
    } else {
        steps::previous_set_weight(steps, status.current_step_index)
    };
    let stable_available = d.stable_rs.map_or(0, |s| s.available());
    let stable_needs = i64::from(r.max_weight - w) * i64::from(replicas) / i64::from(r.max_weight);
    if w < observed && i64::from(stable_available) < stable_needs {
        return observed;
    }
    w
}

/// Scaling with traffic routing, one kind per plan as without: the stable
/// (full size, or what its traffic needs with dynamicStableScale), then the
/// canary (from the weight or setCanaryScale; after an abort it keeps its
/// pods for abortScaleDownDelaySeconds), then older ReplicaSets (those that
/// served traffic keep their pods for scaleDownDelaySeconds).
fn scale_routed(
    r: Routing<'_>,
    all: &[ReplicaSet],
    status: &RolloutStatus,
    d: &Desired<'_>,
    replicas: i32,
    now: Timestamp,
    timers: &mut Vec<Timestamp>,
) -> Vec<Action> {
    let Some(new_rs) = d.new_rs else {
        return vec![];
    };
    let (want_new, want_stable) = r.counts(replicas, status, d.observed);
    let separate_stable = d
        .stable_rs
        .filter(|s| s.metadata.name != new_rs.metadata.name);
    let mut out = Vec::new();
    if let Some(stable) = separate_stable {
        out.extend(replica_set::clear_deadline(stable));
        if stable.spec_replicas() != want_stable {
            out.push(scale_to(stable, want_stable, replicas));
            return out;
        }
    }
    let aborted = status.abort && separate_stable.is_some();
    let delayed = aborted && r.delays_abort_scale_down();
    let new_to = match r.abort_delay() {
        Some(delay) if delayed => {
            let stable_ready = separate_stable.is_some_and(|s| s.available() >= replicas);
            replica_set::abort_scale_down(new_rs, stable_ready, delay, now, &mut out, timers)
        }
        None if aborted => None, // abortScaleDownDelaySeconds: 0 keeps the canary
        _ => {
            out.extend(replica_set::clear_deadline(new_rs));
            Some(want_new)
        }
    };
    if let Some(to) = new_to
        && new_rs.spec_replicas() != to
    {
        out.push(if delayed {
            replica_set::scale_to_keeping_deadline(new_rs, to, replicas)
        } else {
            scale_to(new_rs, to, replicas)
        });
        return out;
    }
    let promoted = status.stable_rs.as_deref() == new_rs.pod_hash();
    let others: Vec<&ReplicaSet> = all
        .iter()
        .filter(|rs| rs.metadata.name != new_rs.metadata.name)
        .filter(|rs| separate_stable.is_none_or(|s| s.metadata.name != rs.metadata.name))
        .collect();
    let total_available: i32 = all.iter().map(|rs| rs.available()).sum();
    out.extend(traffic::scale_down_old(
        r,
        others,
        promoted,
        total_available - (replicas - d.limits.max_unavailable),
        replicas,
        now,
        timers,
    ));
    out
}

/// A step as upstream names it in events ("setWeight: 20", "pause: 30s"),
/// by its first key in upstream's order.
fn step_string(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight: {w}");
    }
    if let Some(p) = &step.pause {
        return match &p.duration {
            Some(IntOrString::Int(d)) => format!("pause: {d}"),
            Some(IntOrString::String(d)) => format!("pause: {d}"),
            None => "pause".into(),
        };
    }
    if step.experiment.is_some() {
        return "experiment".into();
    }
    if step.analysis.is_some() {
        return "analysis".into();
    }
    if let Some(scale) = &step.set_canary_scale {
        if let Some(w) = scale.weight {
            return format!("setCanaryScale{{weight: {w}}}");
        } else if scale.match_traffic_weight {
            return "setCanaryScale{matchTrafficWeight: true}".into();
        } else if let Some(r) = scale.replicas {
            return format!("setCanaryScale{{replicas: {r}}}");
        }
    }
    if let Some(p) = &step.plugin {
        let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        return format!("plugin: {name}");
    }
    if let Some(h) = &step.set_header_route {
        return format!("setHeaderRoute: {}", h.name);
    }
    if let Some(m) = &step.set_mirror_route {
        return format!("setMirrorRoute: {}", m.name);
    }
    "invalid".into()
}

/// A setWeight step is complete when both ReplicaSets have exactly the pods
/// the weight asks for, the canary's all available (or as many as
/// replicaProgressThreshold asks), and older ReplicaSets none.
fn at_desired_counts(
    ro: &Rollout,
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
    stable_rs: Option<&ReplicaSet>,
    weight: i32,
    limits: Limits,
) -> bool {
    let replicas = ro.spec.replicas_or_default();
    let (want_new, want_stable) = approximate_weighted_counts(replicas, weight, limits.max_surge);
    let stable_ok = stable_rs
        .is_some_and(|s| s.spec_replicas() == want_stable && s.status_replicas() == want_stable);
    let others_available: i32 = all
        .iter()
        .filter(|rs| rs.metadata.name != new_rs.metadata.name)
        .filter(|rs| stable_rs.is_none_or(|s| s.metadata.name != rs.metadata.name))
        .map(|rs| rs.available())
        .sum();
    let threshold = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.replica_progress_threshold.as_ref());
    replica_set::progress_met(threshold, new_rs, want_new) && stable_ok && others_available == 0
}

/// Selector changes for the stable and canary Services. The canary Service
/// gets the new pods only once some are available, and goes back to stable
/// on abort, so it never points at pods that cannot serve.
fn services(snap: &Snapshot, status: &RolloutStatus, canary_serving: bool) -> Vec<Action> {
    let ro = &snap.rollout;
    let Some(canary) = ro.spec.strategy.canary.as_ref() else {
        return vec![];
    };
    let Some(stable_hash) = status.stable_rs.clone() else {
        return vec![];
    };
    let canary_hash = match status.current_pod_hash.as_ref() {
        Some(hash) if !status.abort && canary_serving => hash.clone(),
        _ => stable_hash.clone(),
    };
    [
        (canary.stable_service.as_ref(), stable_hash),
        (canary.canary_service.as_ref(), canary_hash),
    ]
    .into_iter()
    .filter_map(|(name, hash)| {
        let svc = snap.services.get(name?)?;
        let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
        let current = selector.and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL));
        let managed_by = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MANAGED_BY_ANNOTATION));
        let adopt = managed_by.is_none();
        (current != Some(&hash) || adopt).then(|| Action::SetServiceSelector {
            name: svc.metadata.name.clone().unwrap_or_default(),
            hash,
            adopt,
            resource_version: svc.metadata.resource_version.clone(),
        })
    })
    .collect()
}

/// At most one kind of scaling per plan, as upstream: stable first, then the
/// new ReplicaSet, then older ones. Each change is observed (through the
/// ReplicaSet's status) before the next is decided, which is what keeps
/// availability within maxUnavailable.
fn scale(
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
    stable_rs: Option<&ReplicaSet>,
    replicas: i32,
    weight: i32,
    limits: Limits,
) -> Vec<Action> {
    let counts = |rs: &ReplicaSet| RsCounts {
        spec: rs.spec_replicas(),
        available: rs.available(),
    };
    let new_name = new_rs.metadata.name.as_deref();
    let stable_name = stable_rs.and_then(|s| s.metadata.name.as_deref());
    let stable_is_new = stable_name.is_some() && stable_name == new_name;
    let separate_stable = stable_rs.filter(|_| !stable_is_new);
    let others: Vec<&ReplicaSet> = all
        .iter()
        .filter(|rs| {
            let n = rs.metadata.name.as_deref();
            n != new_name && n != stable_name
        })
        .collect();
    let other_counts: Vec<RsCounts> = others.iter().map(|rs| counts(rs)).collect();
    let new_counts = counts(new_rs);
    let stable_counts = separate_stable.map(counts);
    let (new_target, stable_target) = basic_canary_counts(&CanaryInput {
        replicas,
        weight,
        limits,
        new_rs: Some(&new_counts),
        stable_rs: stable_counts.as_ref(),
        stable_is_new,
        others: &other_counts,
    });
    let scale_to = |rs: &ReplicaSet, to: i32| scale_to(rs, to, replicas);
    if let Some(stable) = separate_stable
        && stable.spec_replicas() != stable_target
    {
        return vec![scale_to(stable, stable_target)];
    }
    if new_rs.spec_replicas() != new_target {
        return vec![scale_to(new_rs, new_target)];
    }
    let old: Vec<OldRs> = others
        .iter()
        .map(|rs| OldRs {
            name: rs.metadata.name.clone().unwrap_or_default(),
            spec: rs.spec_replicas(),
            available: rs.available(),
            revision: rs.revision(),
        })
        .collect();
    let total_available = all.iter().map(|rs| rs.available()).sum();
    scale_down_old(&old, total_available, replicas, limits.max_unavailable)
        .into_iter()
        .filter_map(|(name, to)| {
            others
                .iter()
                .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
                .map(|rs| scale_to(rs, to))
        })
        .collect()
}
