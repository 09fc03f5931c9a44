//! The blue-green strategy, as upstream. The preview Service points at the
//! new ReplicaSet as soon as it exists (at previewReplicaCount pods, or full
//! size); once all its pods are available, prePromotionAnalysis runs; then
//! the rollout pauses (BlueGreenPause) when autoPromotionEnabled is false,
//! or waits autoPromotionSeconds. Promotion switches the active Service to
//! the new pods, postPromotionAnalysis runs, and the new ReplicaSet becomes
//! stable. The previous one keeps its pods for scaleDownDelaySeconds (a
//! `scale-down-deadline` annotation) in case of a quick rollback.
//!
//! Abort (by hand, or a failed analysis) points the active Service back at
//! the stable pods at once, and scales the preview ReplicaSet down after
//! abortScaleDownDelaySeconds (0: never).

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::analysis::{self as gates, BlueGreenDue, Due, PAUSE_REASON_INCONCLUSIVE};
use super::conditions::{conditions, requeue};
use super::events::{self, Event};
use super::replica_set::{self, has_scale_down_deadline, history_cleanup, scale_to};
use super::status as st;
use super::steps::PAUSE_REASON_BLUE_GREEN;
use super::{Action, Plan, restart};
use crate::api::analysis::AnalysisPhase;
use crate::api::rollout::{
    BlueGreenStrategy, PauseCondition, RolloutAnalysisRunStatus, RolloutStatus,
};
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, format_selector};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, ReplicaSetExt, Snapshot,
};

/// Upstream's defaults.
const DEFAULT_SCALE_DOWN_DELAY: i32 = 30;
const DEFAULT_ABORT_SCALE_DOWN_DELAY: i32 = 30;

pub fn plan(snap: &Snapshot, mut status: RolloutStatus, now: &Time) -> Plan {
    let ro = &snap.rollout;
    let all = snap.replica_sets.as_slice();
    let old_status = ro.status.clone().unwrap_or_default();
    let spec = &ro.spec;
    // Validation guarantees a blueGreen strategy and a template here.
    let bg = spec.strategy.blue_green.clone().unwrap_or_default();
    let template = spec.template.clone().unwrap_or_default();
    let replicas = spec.replicas_or_default();
    let hash = snap.pod_hash(&template, old_status.collision_count);
    status.current_pod_hash = Some(hash.clone());
    status.current_step_hash = None;
    status.current_step_index = None;

    // A new template starts over.
    if old_status.current_pod_hash != status.current_pod_hash {
        st::end_update(&mut status);
        status.blue_green.pre_promotion_analysis_run_status = None;
        status.blue_green.post_promotion_analysis_run_status = None;
        status.blue_green.scale_up_preview_check_point = false;
        status.restarted_at = spec.restart_at.clone();
    }
    if status.promote_full {
        status.pause_conditions.clear();
        status.abort = false;
    }

    let new_rs = snap.replica_set(Some(&hash));
    let stable_rs = snap.replica_set(old_status.stable_rs.as_deref());
    let max_revision = all.iter().map(|rs| rs.revision()).max().unwrap_or(0);
    let mut actions = Vec::new();
    let mut events = Vec::new();
    let mut timers: Vec<Timestamp> = Vec::new();

    let max_unavailable = max_unavailable(&bg, replicas);
    let restart_wait =
        match restart::gate(snap, &mut status, new_rs, stable_rs, max_unavailable, now.0) {
            restart::Gate::Evict(pods) => return restart::evict_plan(pods, old_status),
            restart::Gate::Continue(wait) => wait,
        };

    status.replicas = all.iter().map(|rs| rs.status_replicas()).sum();
    status.updated_replicas = new_rs.map_or(0, |rs| rs.status_replicas());
    status.ready_replicas = all.iter().map(|rs| rs.ready()).sum();

    let Some(new_rs) = new_rs else {
        status.hpa_replicas = status.replicas;
        status.available_replicas = all.iter().map(|rs| rs.available()).sum();
        let so_far = Plan {
            actions,
            status,
            events,
            ..Plan::default()
        };
        let wait = (timers.as_slice(), restart_wait);
        return replica_set::create_plan(snap, &old_status, so_far, wait, now);
    };
    let stable_is_new = old_status.stable_rs.as_deref() == Some(hash.as_str());
    // Going back to an older ReplicaSet still within its scale-down delay
    // (it carries a scale-down deadline, as upstream checks), or to the
    // stable one, skips the pause and the analyses. The deadline stays on
    // it until it is stable again, so the rollback cannot turn into a full
    // update half-way. (A retried update's own ReplicaSet may carry an
    // abort deadline: it is newer than the stable one, not a rollback.)
    let rollback = stable_rs.is_some_and(|s| stable_is_new || older(new_rs, s));
    let fast_rollback = rollback && (stable_is_new || has_scale_down_deadline(new_rs));
    let mut revision_actions = Vec::new();
    let revision = replica_set::sync_revision(ro, new_rs, max_revision, &mut revision_actions);
    // A fast rollback's ReplicaSet becomes the newest revision once it is
    // stable: until then its lower revision is what tells it from a newer
    // ReplicaSet made in the same second (see `older`).
    revision_actions.retain(|a| {
        !(fast_rollback && !stable_is_new && matches!(a, Action::SetReplicaSetRevision { .. }))
    });
    actions.extend(revision_actions);

    let active_svc = snap.services.get(&bg.active_service);
    let preview_svc = bg
        .preview_service
        .as_ref()
        .and_then(|n| snap.services.get(n));
    let observed_active = selector_hash(active_svc);
    let observed_preview = selector_hash(preview_svc);
    let halted = spec.paused || has_pause(&status, PAUSE_REASON_INCONCLUSIVE);
    let fast_tracked = fast_rollback
        || status.promote_full
        || observed_active.is_none()
        || observed_active.as_deref() == Some(hash.as_str());

    // Pods: stable at full size, the new ReplicaSet at its target (full
    // size at once for a fast rollback), older ones down once their delay
    // is over.
    let new_target = if fast_rollback {
        replicas
    } else {
        new_rs_replicas(&bg, &old_status, new_rs, &hash, replicas, snap)
    };
    let separate_stable = stable_rs.filter(|s| s.metadata.name != new_rs.metadata.name);
    let mut scaling = Vec::new();
    if let Some(stable) = separate_stable {
        if stable.spec_replicas() != replicas || desired_annotation(stable) != Some(replicas) {
            scaling.push(scale_to(stable, replicas, replicas));
        }
        scaling.extend(replica_set::clear_deadline(stable));
    }
    let abort_delay = bg
        .abort_scale_down_delay_seconds
        .unwrap_or(DEFAULT_ABORT_SCALE_DOWN_DELAY);
    let delay_on_abort = status.abort && separate_stable.is_some() && abort_delay > 0;
    let new_scale = if delay_on_abort {
        let stable_ready = separate_stable.is_some_and(|s| s.available() >= replicas);
        replica_set::abort_scale_down(
            new_rs,
            stable_ready,
            abort_delay,
            now.0,
            &mut scaling,
            &mut timers,
        )
    } else {
        if !fast_rollback || stable_is_new {
            scaling.extend(replica_set::clear_deadline(new_rs));
        }
        Some(new_target)
    };
    if let Some(to) = new_scale
        && (new_rs.spec_replicas() != to || desired_annotation(new_rs) != Some(replicas))
    {
        scaling.push(if delay_on_abort {
            replica_set::scale_to_keeping_deadline(new_rs, to, replicas)
        } else {
            scale_to(new_rs, to, replicas)
        });
    }

    let ready_for_pause = replica_set::all_available(new_rs, new_target);
    let saturated = new_rs.spec_replicas() == replicas
        && desired_annotation(new_rs) == Some(replicas)
        && new_rs.available() == replicas;

    // The pause before promotion.
    // From the status as reset above: a new template's update never counts
    // the previous revision's run.
    let pre_run_phase = run_phase(snap, &status.blue_green.pre_promotion_analysis_run_status);
    let completed_pre =
        bg.pre_promotion_analysis.is_none() || pre_run_phase == Some(AnalysisPhase::Successful);
    let mut added_pause = false;
    if !status.abort && ready_for_pause && !halted {
        if fast_tracked
            || old_status.blue_green.scale_up_preview_check_point
            || !needs_controller_pause(&bg)
        {
            remove_pause(&mut status);
        } else if completed_pre {
            if let Some(start) = pause_start(&status) {
                if completed_pause(&bg, &old_status, false, now.0) {
                    remove_pause(&mut status);
                } else if bg.auto_promotion_seconds > 0 {
                    timers.push(after(start, bg.auto_promotion_seconds));
                }
            } else if !status.controller_pause {
                status.pause_conditions.push(PauseCondition {
                    reason: PAUSE_REASON_BLUE_GREEN.into(),
                    start_time: now.clone(),
                });
                status.controller_pause = true;
                added_pause = true;
            }
        }
    }

    // The active Service: the new pods once promoted, back to stable on an
    // abort (at once, whatever the state of the new pods: an abort always
    // returns all traffic to stable).
    let stable_hash = old_status.stable_rs.clone();
    let active_target = if status.abort && stable_hash.is_some() {
        stable_hash.clone()
    } else if !status.abort
        && !halted
        && ready_for_pause
        && saturated
        && (fast_tracked
            || (completed_pause(&bg, &old_status, added_pause, now.0) && completed_pre))
    {
        Some(hash.clone())
    } else {
        observed_active.clone()
    };
    let preview_target = if halted {
        observed_preview.clone()
    } else {
        Some(hash.clone())
    };
    let mut service_actions = Vec::new();
    if let Some(svc) = preview_svc {
        service_actions.extend(switch(svc, preview_target.as_deref()));
    }
    if let Some(svc) = active_svc {
        service_actions.extend(switch(svc, active_target.as_deref()));
    }
    // Upstream records no preview selector when there is no preview Service.
    status.blue_green.preview_selector = preview_svc.and(preview_target.clone());
    status.blue_green.active_selector = active_target.clone();

    // Analyses: whether each is due is judged on the observed status, as
    // upstream, so a switch is seen by the next plan.
    let old_active = old_status.blue_green.active_selector.as_deref();
    let pre_ready = match bg.preview_replica_count {
        Some(n) => replica_set::all_available(new_rs, n),
        None => saturated,
    };
    let due = BlueGreenDue {
        pre: Due {
            skip: stable_is_new || old_active.is_none() || old_active == Some(hash.as_str()),
            ready: pre_ready,
        },
        post: Due {
            skip: stable_is_new || old_active != Some(hash.as_str()),
            ready: saturated,
        },
    };
    let position = gates::Position {
        hash: &hash,
        revision,
        // A fast rollback runs no analysis, as upstream (which skips them
        // when the new ReplicaSet has a scale-down deadline).
        promoted: stable_is_new || fast_rollback,
        blue_green: Some(due),
    };
    let g = gates::plan(snap, &mut status, position, now);
    let mut abort_message = None;
    if let Some(message) = g.abort
        && !status.abort
    {
        status.abort = true;
        abort_message = Some(message);
    }
    events.extend(g.events);

    // Old ReplicaSets down once their delay is over, unless a
    // postPromotionAnalysis without a delay still needs them.
    let post_successful = status
        .blue_green
        .post_promotion_analysis_run_status
        .as_ref()
        .is_some_and(|r| r.status == AnalysisPhase::Successful.as_str());
    let post_blocks = bg.post_promotion_analysis.is_some()
        && bg.scale_down_delay_seconds.is_none()
        && !due.post.skip
        && !post_successful;
    if !has_pause(&status, PAUSE_REASON_INCONCLUSIVE) && !post_blocks {
        let referenced = [
            old_status.stable_rs.as_deref(),
            Some(hash.as_str()),
            old_active,
            old_status.blue_green.preview_selector.as_deref(),
            observed_active.as_deref(),
            observed_preview.as_deref(),
            active_target.as_deref(),
            preview_target.as_deref(),
        ];
        let others: Vec<&ReplicaSet> = all
            .iter()
            .filter(|rs| !referenced.contains(&rs.pod_hash()))
            .collect();
        scaling.extend(scale_down_old(&bg, others, replicas, now.0, &mut timers));
    }

    // Promotion: the new ReplicaSet becomes stable.
    let promote_reason = if stable_rs.is_none() || active_target.is_none() {
        // The first deploy (the active Service switches to it once ready).
        Some("Initial deploy")
    } else if active_target.as_deref() != Some(hash.as_str()) {
        None
    } else if status.promote_full {
        Some("Full promotion requested")
    } else if fast_rollback {
        Some("Fast rollback")
    } else if status.abort || (bg.post_promotion_analysis.is_some() && !post_successful) {
        None
    } else {
        Some("Completed blue-green update")
    };
    if let Some(why) = promote_reason {
        if old_status.stable_rs.as_deref() != Some(hash.as_str()) {
            events.push(Event::normal(
                events::COMPLETED,
                format!("Rollout completed update to revision {revision} ({hash}): {why}"),
            ));
        }
        status.stable_rs = Some(hash.clone());
        st::end_update(&mut status);
        status.blue_green.scale_up_preview_check_point = false;
    } else {
        status.blue_green.scale_up_preview_check_point =
            check_point(&bg, &old_status, new_rs, completed_pre, added_pause, now.0);
    }
    if status.abort {
        status.aborted_at.get_or_insert_with(|| now.clone());
        status.pause_conditions.clear();
        status.controller_pause = false;
    } else {
        status.aborted_at = None; // retried
    }

    // Counts: what the active Service serves.
    let active_rs = snap.replica_set(active_target.as_deref());
    match active_rs {
        Some(rs) => {
            status.hpa_replicas = rs.status_replicas();
            status.available_replicas = rs.available();
            status.ready_replicas = rs.ready();
            status.selector = rs.spec.as_ref().map(|s| format_selector(Some(&s.selector)));
        }
        None => {
            status.hpa_replicas = status.replicas;
            status.available_replicas = all.iter().map(|rs| rs.available()).sum();
        }
    }

    // Traffic first: the preview Service before the scaling (it only ever
    // points at the ReplicaSet being scaled up), the active one only at
    // pods already available.
    actions.extend(service_actions);
    actions.extend(scaling);
    actions.extend(history_cleanup(ro, all, new_rs, stable_rs));
    actions.extend(g.actions);
    // Roles as they are after this plan (a promotion makes new stable).
    let stable_after = snap.replica_set(status.stable_rs.as_deref());
    actions.extend(replica_set::ephemeral_actions(
        new_rs,
        stable_after,
        bg.preview_metadata.as_ref(),
        bg.active_metadata.as_ref(),
    ));

    let new_name = new_rs.metadata.name.clone().unwrap_or_default();
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

/// blueGreen.maxUnavailable (default 0), for restarts.
fn max_unavailable(bg: &BlueGreenStrategy, replicas: i32) -> i32 {
    let value = match &bg.max_unavailable {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s
            .trim_end_matches('%')
            .parse::<i64>()
            .map(|p| (p * i64::from(replicas) / 100) as i32)
            .unwrap_or(0),
    };
    value.clamp(0, replicas)
}

/// Upstream's size of the new ReplicaSet: previewReplicaCount until the
/// preview checkpoint is passed (or a full promotion), then full size.
fn new_rs_replicas(
    bg: &BlueGreenStrategy,
    old: &RolloutStatus,
    new_rs: &ReplicaSet,
    hash: &str,
    replicas: i32,
    snap: &Snapshot,
) -> i32 {
    let Some(preview) = bg.preview_replica_count else {
        return replicas;
    };
    let active = snap.replica_set(old.blue_green.active_selector.as_deref());
    if active.is_none_or(|a| a.metadata.name == new_rs.metadata.name) || old.promote_full {
        return replicas;
    }
    if old.current_pod_hash.as_deref() != Some(hash) {
        return preview;
    }
    let running = old.pause_conditions.is_empty();
    if running && old.blue_green.scale_up_preview_check_point {
        return replicas;
    }
    preview
}

/// Upstream's one-way checkpoint for previewReplicaCount: set once the
/// preview pods are available, the pre-promotion analysis passed and the
/// pause is over, so the new ReplicaSet grows to full size before the switch.
fn check_point(
    bg: &BlueGreenStrategy,
    old: &RolloutStatus,
    new_rs: &ReplicaSet,
    completed_pre: bool,
    added_pause: bool,
    now: Timestamp,
) -> bool {
    let Some(preview) = bg.preview_replica_count else {
        return false;
    };
    if old.blue_green.scale_up_preview_check_point {
        return true;
    }
    completed_pre && completed_pause(bg, old, added_pause, now) && new_rs.available() == preview
}

/// The controller pauses before promotion only when asked to.
fn needs_controller_pause(bg: &BlueGreenStrategy) -> bool {
    bg.auto_promotion_enabled == Some(false) || bg.auto_promotion_seconds > 0
}

/// Upstream's CompletedBlueGreenPause, judged on the observed status: a
/// person promoted (the condition is gone, the controller's pause still
/// set), or autoPromotionSeconds passed.
fn completed_pause(
    bg: &BlueGreenStrategy,
    observed: &RolloutStatus,
    added_now: bool,
    now: Timestamp,
) -> bool {
    if added_now {
        return false;
    }
    if observed.blue_green.scale_up_preview_check_point {
        return true;
    }
    if bg.auto_promotion_enabled != Some(false) && bg.auto_promotion_seconds == 0 {
        return true;
    }
    match pause_start(observed) {
        Some(start) => {
            bg.auto_promotion_enabled != Some(false)
                && now > after(start, bg.auto_promotion_seconds)
        }
        // The pause was there and is gone: promoted, or its time was up.
        None => observed.controller_pause,
    }
}

fn pause_start(status: &RolloutStatus) -> Option<Timestamp> {
    status
        .pause_conditions
        .iter()
        .find(|c| c.reason == PAUSE_REASON_BLUE_GREEN)
        .map(|c| c.start_time.0)
}

fn remove_pause(status: &mut RolloutStatus) {
    status
        .pause_conditions
        .retain(|c| c.reason != PAUSE_REASON_BLUE_GREEN);
}

fn has_pause(status: &RolloutStatus, reason: &str) -> bool {
    status.pause_conditions.iter().any(|c| c.reason == reason)
}

fn after(t: Timestamp, seconds: i32) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(t)
}

/// The phase of the run a status entry names, as observed.
fn run_phase(snap: &Snapshot, entry: &Option<RolloutAnalysisRunStatus>) -> Option<AnalysisPhase> {
    let name = entry.as_ref()?.name.as_str();
    snap.analysis_runs
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))?
        .status
        .as_ref()?
        .phase
}

fn selector_hash(svc: Option<&Service>) -> Option<String> {
    svc?.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(POD_TEMPLATE_HASH_LABEL)
        .cloned()
}

fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(DESIRED_REPLICAS_ANNOTATION)?
        .parse()
        .ok()
}

/// Point a Service at `hash` (and mark it ours) unless it already is.
fn switch(svc: &Service, hash: Option<&str>) -> Option<Action> {
    let hash = hash?;
    let current = selector_hash(Some(svc));
    let managed = svc
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MANAGED_BY_ANNOTATION));
    (current.as_deref() != Some(hash) || !managed).then(|| Action::SetServiceSelector {
        name: svc.metadata.name.clone().unwrap_or_default(),
        hash: hash.to_string(),
        adopt: !managed,
        resource_version: svc.metadata.resource_version.clone(),
    })
}

/// Whether `rs` is older than `other`: made before it or, as creation
/// times have one-second resolution, in the same second with a lower
/// revision.
fn older(rs: &ReplicaSet, other: &ReplicaSet) -> bool {
    let (a, b) = (
        &rs.metadata.creation_timestamp,
        &other.metadata.creation_timestamp,
    );
    a < b || (a == b && rs.revision() < other.revision())
}

/// Upstream's scale-down of old ReplicaSets, newest first: each still up
/// gets a deadline scaleDownDelaySeconds ahead and goes to 0 when it passes;
/// beyond scaleDownDelayRevisionLimit they go to 0 at once.
fn scale_down_old(
    bg: &BlueGreenStrategy,
    mut others: Vec<&ReplicaSet>,
    replicas: i32,
    now: Timestamp,
    timers: &mut Vec<Timestamp>,
) -> Vec<Action> {
    others.sort_by_key(|rs| std::cmp::Reverse(rs.revision()));
    let mut delay = replica_set::Delay::new(
        bg.scale_down_delay_seconds
            .unwrap_or(DEFAULT_SCALE_DOWN_DELAY),
        bg.scale_down_delay_revision_limit,
    );
    let mut out = Vec::new();
    for rs in others.into_iter().filter(|rs| rs.spec_replicas() > 0) {
        if !delay.keep(rs, now, &mut out, timers) {
            out.push(scale_to(rs, 0, replicas));
        }
    }
    out
}
