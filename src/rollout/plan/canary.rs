//! The canary strategy. With no steps it is a rolling update: the new
//! ReplicaSet grows to full size and older ones shrink, within maxSurge and
//! maxUnavailable, and the new one becomes stable once fully available.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::analysis as gates;
use super::events::{self, Event};
use super::replicas::{
    CanaryInput, Limits, OldRs, RsCounts, approximate_weighted_counts, basic_canary_counts,
    canary_limits, scale_down_old,
};
use super::status::{self as st, condition};
use super::steps::{self, PAUSE_REASON_CANARY, Pause, set_weight};
use super::{Action, Plan, restart};
use crate::api::Rollout;
use crate::api::rollout::{CanaryStep, PauseCondition, RolloutStatus};
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, pod_template_hash, steps_hash};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, REVISION_ANNOTATION, ReplicaSetExt,
    Snapshot,
};

/// Rollout annotations not copied to its ReplicaSets (as upstream).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "rollout.argoproj.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
];

/// How soon to look again while pods still wait to be restarted (a watch
/// event usually comes first: the replacement becoming available).
const RESTART_CHECK: Duration = Duration::from_secs(10);

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
    let hash = pod_template_hash(&template, old_status.collision_count);
    status.current_pod_hash = Some(hash.clone());
    status.current_step_hash = Some(steps_hash(&canary.steps));

    // A new template or new steps start the steps over; going back to the
    // stable template skips them (fast rollback).
    if old_status.current_pod_hash != status.current_pod_hash
        || old_status.current_step_hash != status.current_step_hash
    {
        status.pause_conditions.clear();
        status.controller_pause = false;
        status.abort = false;
        status.aborted_at = None;
        status.promote_full = false;
        // Every pod of a new template is new: a pending restart is done.
        status.restarted_at = spec.restart_at.clone();
        status.current_step_index = (!steps.is_empty()).then_some(0);
        if !steps.is_empty() && old_status.stable_rs.as_deref() == Some(hash.as_str()) {
            status.current_step_index = Some(step_count);
        }
    }
    if status.promote_full && !steps.is_empty() {
        status.current_step_index = Some(step_count);
    }

    let new_rs = all.iter().find(|rs| rs.pod_hash() == Some(hash.as_str()));
    let stable_rs = old_status
        .stable_rs
        .as_deref()
        .and_then(|s| all.iter().find(|rs| rs.pod_hash() == Some(s)));
    let max_revision = all.iter().map(|rs| rs.revision()).max().unwrap_or(0);
    let mut actions = Vec::new();
    let mut events = Vec::new();

    // A restart goes first, as upstream; a plan that evicts pods does
    // nothing else, because the availability it observed is already stale.
    let mut restart_wait = None;
    if restart::pending(spec, status.restarted_at.as_ref(), now.0) && new_rs.is_some() {
        let r = restart::plan(
            ro,
            all,
            new_rs,
            stable_rs,
            &snap.pods,
            limits.max_unavailable,
            now.0,
        );
        if !r.evict.is_empty() {
            return Plan {
                actions: r
                    .evict
                    .into_iter()
                    .map(|name| Action::EvictPod { name })
                    .collect(),
                status: old_status,
                requeue_after: Some(RESTART_CHECK),
                events,
            };
        }
        if r.remaining == 0 {
            status.restarted_at = spec.restart_at.clone();
        } else {
            restart_wait = Some(RESTART_CHECK);
        }
    }

    // Observed counts: updated pods are those of the new ReplicaSet.
    status.replicas = all.iter().map(|rs| rs.status_replicas()).sum();
    status.hpa_replicas = status.replicas;
    status.ready_replicas = all.iter().map(|rs| rs.ready()).sum();
    status.available_replicas = all.iter().map(|rs| rs.available()).sum();
    status.updated_replicas = new_rs.map_or(0, |rs| rs.status_replicas());

    // The new ReplicaSet becomes stable on the initial deploy, or once it is
    // fully available after the last step (or a full promotion).
    let steps_done = steps.is_empty() || status.current_step_index >= Some(step_count);
    let promote = stable_rs.is_none()
        || (!status.abort
            && new_rs.is_some_and(|rs| rs.available() == replicas)
            && (status.promote_full || steps_done));
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
        status.pause_conditions.clear();
        status.controller_pause = false;
        status.abort = false;
        status.aborted_at = None;
        status.promote_full = false;
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
    let mut pause_until = None;
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
        pause_until = advance_step(
            snap,
            &mut status,
            new_rs,
            stable_rs,
            limits,
            now,
            &mut events,
        );
    }
    let weight = if status.stable_rs.as_deref() == Some(hash.as_str()) {
        100
    } else if status.abort {
        0
    } else {
        set_weight(steps, status.current_step_index)
    };

    let Some(new_rs) = new_rs else {
        let rs = new_replica_set(ro, &template, &hash, max_revision + 1);
        let rs_name = rs.metadata.name.clone().unwrap_or_default();
        actions.extend(services(snap, &status, false));
        actions.push(Action::CreateReplicaSet(Box::new(rs)));
        actions.push(Action::SetRolloutRevision {
            revision: max_revision + 1,
        });
        conditions(
            ro,
            &old_status,
            &mut status,
            None,
            max_revision + 1,
            None,
            now,
        );
        st::refresh(
            &mut status.conditions,
            condition(
                st::PROGRESSING,
                "True",
                st::REASON_NEW_RS_CREATED,
                format!("Created new replica set {rs_name:?}"),
            ),
            now,
        );
        let requeue_after = requeue(ro, &status, now, pause_until, restart_wait);
        return Plan {
            actions,
            status,
            requeue_after,
            events,
        };
    };
    let new_name = new_rs.metadata.name.clone().unwrap_or_default();

    // A template seen before (a rollback) becomes the newest revision again.
    let revision = if new_rs.revision() < max_revision {
        actions.push(Action::SetReplicaSetRevision {
            name: new_name.clone(),
            revision: max_revision + 1,
        });
        max_revision + 1
    } else {
        new_rs.revision()
    };
    if new_rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
        != spec.min_ready_seconds
    {
        actions.push(Action::SetMinReadySeconds {
            name: new_name.clone(),
            seconds: spec.min_ready_seconds,
        });
    }
    let rollout_revision = ro
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse::<i64>().ok());
    if rollout_revision != Some(revision) {
        actions.push(Action::SetRolloutRevision { revision });
    }

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
    let scaling = if spec.paused && !scaling_event {
        vec![]
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
    actions.extend(scaling);
    actions.extend(history_cleanup(ro, all, new_rs, stable_rs));

    actions.extend(analysis_actions);

    conditions(
        ro,
        &old_status,
        &mut status,
        Some(&new_name),
        revision,
        abort_message.as_deref(),
        now,
    );
    let requeue_after = requeue(ro, &status, now, pause_until, restart_wait);
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
    new_rs: Option<&ReplicaSet>,
    stable_rs: Option<&ReplicaSet>,
    limits: Limits,
    now: &Time,
    events: &mut Vec<Event>,
) -> Option<Timestamp> {
    let ro = &snap.rollout;
    let canary = ro.spec.strategy.canary.as_ref()?;
    let step = steps::current(&canary.steps, status.current_step_index)?;
    let done = if let Some(w) = step.set_weight {
        at_desired_counts(
            ro,
            snap.replica_sets.as_slice(),
            new_rs?,
            stable_rs,
            w,
            limits,
        )
    } else if step.pause.is_some() {
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
    } else if step.analysis.is_some() {
        // The gates keep the current step's run in the status.
        status
            .canary
            .current_step_analysis_run_status
            .as_ref()
            .is_some_and(|r| r.status == "Successful")
    } else {
        false // other step kinds are refused before planning (unsupported)
    };
    if done {
        status
            .pause_conditions
            .retain(|c| c.reason != PAUSE_REASON_CANARY);
        status.controller_pause = false;
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

/// A step as upstream names it in events ("setWeight: 20", "pause: 30s").
fn step_string(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight: {w}");
    }
    match step.pause.as_ref().and_then(|p| p.duration.as_ref()) {
        Some(IntOrString::Int(d)) => format!("pause: {d}"),
        Some(IntOrString::String(d)) => format!("pause: {d}"),
        None if step.pause.is_some() => "pause".into(),
        None if step.analysis.is_some() => "analysis".into(),
        None => "invalid".into(),
    }
}

/// A setWeight step is complete when both ReplicaSets have exactly the pods
/// the weight asks for, all available, and older ReplicaSets none.
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
    new_rs.spec_replicas() == want_new
        && new_rs.available() == want_new
        && stable_ok
        && others_available == 0
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
    let scale_to = |rs: &ReplicaSet, to: i32| Action::ScaleReplicaSet {
        name: rs.metadata.name.clone().unwrap_or_default(),
        from: rs.spec_replicas(),
        to,
        desired_replicas: replicas,
        resource_version: rs.metadata.resource_version.clone(),
    };
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

/// Old ReplicaSets beyond revisionHistoryLimit that are empty, oldest first.
fn history_cleanup(
    ro: &Rollout,
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
    stable_rs: Option<&ReplicaSet>,
) -> Vec<Action> {
    let keep = usize::try_from(ro.spec.revision_history_limit_or_default()).unwrap_or(0);
    let mut old: Vec<&ReplicaSet> = all
        .iter()
        .filter(|rs| rs.metadata.name != new_rs.metadata.name)
        .filter(|rs| stable_rs.is_none_or(|s| s.metadata.name != rs.metadata.name))
        .collect();
    if old.len() <= keep {
        return vec![];
    }
    old.sort_by_key(|rs| (rs.revision(), rs.metadata.creation_timestamp.clone()));
    let excess = old.len() - keep;
    old.into_iter()
        .take(excess)
        .filter(|rs| {
            rs.spec_replicas() == 0
                && rs.status_replicas() == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .map(|rs| Action::DeleteReplicaSet {
            name: rs.metadata.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// Healthy, Progressing, Available, Completed and Paused conditions.
fn conditions(
    ro: &Rollout,
    old: &RolloutStatus,
    status: &mut RolloutStatus,
    new_rs: Option<&str>,
    revision: i64,
    abort_message: Option<&str>,
    now: &Time,
) {
    let spec = &ro.spec;
    let replicas = spec.replicas_or_default();
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    let observed = old.observed_generation == ro.metadata.generation.map(|g| g.to_string());
    let completed = status.stable_rs.is_some() && status.stable_rs == status.current_pod_hash;
    let paused = spec.paused || !status.pause_conditions.is_empty();
    let healthy = status.updated_replicas == replicas
        && status.available_replicas == replicas
        && status.replicas == replicas
        && observed
        && completed;
    let subject = match new_rs {
        Some(rs) => format!("ReplicaSet {rs:?}"),
        None => format!("Rollout {name:?}"),
    };

    if !paused && healthy {
        st::set(
            &mut status.conditions,
            condition(
                st::HEALTHY,
                "True",
                "RolloutHealthy",
                "Rollout is healthy".into(),
            ),
            now,
        );
    } else if st::find(&status.conditions, st::HEALTHY).is_some() {
        st::set(
            &mut status.conditions,
            condition(
                st::HEALTHY,
                "False",
                "RolloutHealthy",
                "Rollout is not healthy".into(),
            ),
            now,
        );
    }

    let progressing = st::find(&status.conditions, st::PROGRESSING).cloned();
    let timed_out = progressing
        .as_ref()
        .is_some_and(|c| c.reason.as_deref() == Some(st::REASON_DEADLINE));
    if status.abort {
        // The reason for an abort (a failed analysis) is told once, when it
        // happens, and kept as long as the abort lasts.
        let message = match abort_message {
            Some(m) => format!("Rollout aborted update to revision {revision}: {m}"),
            None => progressing
                .as_ref()
                .filter(|c| c.reason.as_deref() == Some(st::REASON_ABORTED))
                .and_then(|c| c.message.clone())
                .unwrap_or_else(|| format!("Rollout aborted update to revision {revision}")),
        };
        st::set(
            &mut status.conditions,
            condition(st::PROGRESSING, "False", st::REASON_ABORTED, message),
            now,
        );
    } else if spec.paused {
        st::set(
            &mut status.conditions,
            condition(
                st::PROGRESSING,
                "Unknown",
                st::REASON_PAUSED,
                "Rollout is paused".into(),
            ),
            now,
        );
    } else if healthy {
        st::set(
            &mut status.conditions,
            condition(
                st::PROGRESSING,
                "True",
                st::REASON_NEW_RS_AVAILABLE,
                format!("{subject} has successfully progressed."),
            ),
            now,
        );
    } else if st::made_progress(old, status)
        || progressing
            .as_ref()
            .is_none_or(|c| c.reason.as_deref() == Some(st::REASON_PAUSED))
        || progressing.as_ref().is_some_and(|c| {
            // a new update after a completed one, or a retry after an abort
            c.reason.as_deref() == Some(st::REASON_NEW_RS_AVAILABLE)
                || c.reason.as_deref() == Some(st::REASON_ABORTED)
        })
    {
        // Progress (or a fresh start) restarts the deadline.
        st::refresh(
            &mut status.conditions,
            condition(
                st::PROGRESSING,
                "True",
                st::REASON_RS_UPDATED,
                format!("{subject} is progressing."),
            ),
            now,
        );
    } else if !timed_out
        && !paused
        && st::deadline(&status.conditions, spec).is_some_and(|d| d <= now.0)
    {
        // A pause step is not a lack of progress.
        st::set(
            &mut status.conditions,
            condition(
                st::PROGRESSING,
                "False",
                st::REASON_DEADLINE,
                format!("{subject} has timed out progressing."),
            ),
            now,
        );
        if spec.progress_deadline_abort {
            // Picked up by the next plan, which aborts.
            status.abort = true;
        }
    }

    let (avail_status, avail_msg) = if status.available_replicas >= replicas {
        ("True", "Rollout has minimum availability")
    } else {
        ("False", "Rollout does not have minimum availability")
    };
    st::set(
        &mut status.conditions,
        condition(
            st::AVAILABLE,
            avail_status,
            "AvailableReason",
            avail_msg.into(),
        ),
        now,
    );
    st::set(
        &mut status.conditions,
        condition(
            st::COMPLETED,
            if completed { "True" } else { "False" },
            "RolloutCompleted",
            "RolloutCompleted".into(),
        ),
        now,
    );
    if spec.paused {
        st::set(
            &mut status.conditions,
            condition(
                st::PAUSED,
                "True",
                st::REASON_PAUSED,
                "Rollout is paused".into(),
            ),
            now,
        );
    } else if st::find(&status.conditions, st::PAUSED).is_some() {
        st::set(
            &mut status.conditions,
            condition(
                st::PAUSED,
                "False",
                st::REASON_RESUMED,
                "Rollout is resumed".into(),
            ),
            now,
        );
    }
}

/// Look again when a timed pause ends, the progress deadline would pass, a
/// future restartAt comes, or pods still wait to be restarted.
fn requeue(
    ro: &Rollout,
    status: &RolloutStatus,
    now: &Time,
    pause_until: Option<Timestamp>,
    restart_wait: Option<Duration>,
) -> Option<Duration> {
    let paused = ro.spec.paused || !status.pause_conditions.is_empty();
    let deadline = st::deadline(&status.conditions, &ro.spec).filter(|_| !paused);
    let restart_at = ro
        .spec
        .restart_at
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > now.0 && status.restarted_at.as_ref() != ro.spec.restart_at.as_ref());
    let at = [deadline, pause_until, restart_at]
        .into_iter()
        .flatten()
        .min();
    let until =
        at.map(|at| Duration::from_secs((at.as_second() - now.0.as_second()).max(1) as u64));
    [until, restart_wait].into_iter().flatten().min()
}

/// The ReplicaSet for the current template: `<rollout>-<hash>`, labelled
/// with the hash, owned by the Rollout, created at 0 replicas.
fn new_replica_set(
    ro: &Rollout,
    template: &PodTemplateSpec,
    hash: &str,
    revision: i64,
) -> ReplicaSet {
    let name = ro.metadata.name.clone().unwrap_or_default();
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let labels = labels.clone();

    let mut selector: LabelSelector = ro.spec.selector.clone().unwrap_or_default();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());

    let mut annotations: BTreeMap<String, String> = ro
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
    annotations.insert(
        DESIRED_REPLICAS_ANNOTATION.into(),
        ro.spec.replicas_or_default().to_string(),
    );

    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: ro.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "argoproj.io/v1alpha1".into(),
                kind: "Rollout".into(),
                name,
                uid: ro.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(ro.spec.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    }
}
