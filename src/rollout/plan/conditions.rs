//! The Rollout's conditions and when to look again, shared by both strategies.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::status::{self as st, condition};
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;

/// Healthy, Progressing, Available, Completed and Paused conditions.
pub fn conditions(
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
    // Blue-green keeps older pods up on purpose (scaleDownDelaySeconds).
    let old_pods_expected = spec.strategy.blue_green.is_some();
    let healthy = status.updated_replicas == replicas
        && status.available_replicas == replicas
        && (old_pods_expected || status.replicas == replicas)
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
            // An abort at the progress deadline names it, as upstream's
            // (`ReplicaSet "x" has timed out progressing.`).
            None => progressing
                .as_ref()
                .and_then(|c| match c.reason.as_deref() {
                    Some(st::REASON_ABORTED) => c.message.clone(),
                    Some(st::REASON_DEADLINE) => c
                        .message
                        .as_ref()
                        .map(|m| format!("Rollout aborted update to revision {revision}: {m}")),
                    _ => None,
                })
                .unwrap_or_else(|| format!("Rollout aborted update to revision {revision}")),
        };
        st::set(
            &mut status.conditions,
            condition(st::PROGRESSING, "False", st::REASON_ABORTED, message),
            now,
        );
    } else if paused && !completed {
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
    } else if timed_out {
        // progressDeadlineAbort turned on after the deadline passed: the
        // update is aborted now, as upstream does.
        if spec.progress_deadline_abort && !waits_without_deadline(ro, old, status) {
            status.abort = true;
        }
    } else if !waits_without_deadline(ro, old, status)
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
    if paused {
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

/// Whether the rollout waits on something that takes as long as it takes,
/// which is not a lack of progress (upstream's isIndefiniteStep): a pause,
/// or a canary step that is a pause, an analysis or an experiment.
pub fn waits_without_deadline(ro: &Rollout, old: &RolloutStatus, status: &RolloutStatus) -> bool {
    let paused_before = st::find(&old.conditions, st::PAUSED).is_some_and(|c| c.status == "True");
    let on_open_step = ro.spec.strategy.canary.as_ref().is_some_and(|c| {
        super::steps::current(&c.steps, status.current_step_index)
            .is_some_and(|s| s.pause.is_some() || s.analysis.is_some() || s.experiment.is_some())
    });
    ro.spec.paused || !status.pause_conditions.is_empty() || paused_before || on_open_step
}

/// Look again when a timer ends (a timed pause, a scale-down deadline), the
/// progress deadline would pass, a future restartAt comes, or pods still
/// wait to be restarted.
pub fn requeue(
    ro: &Rollout,
    status: &RolloutStatus,
    now: &Time,
    timers: &[Timestamp],
    restart_wait: Option<Duration>,
) -> Option<Duration> {
    let old = ro.status.clone().unwrap_or_default();
    let deadline = st::deadline(&status.conditions, &ro.spec)
        .filter(|_| !waits_without_deadline(ro, &old, status));
    let restart_at = ro
        .spec
        .restart_at
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > now.0 && status.restarted_at.as_ref() != ro.spec.restart_at.as_ref());
    let at = [deadline, restart_at]
        .into_iter()
        .flatten()
        .chain(timers.iter().copied())
        .min();
    let until =
        at.map(|at| Duration::from_secs((at.as_second() - now.0.as_second()).max(1) as u64));
    [until, restart_wait].into_iter().flatten().min()
}
