//! Conditions and phase of a Rollout's status, in upstream's order and words
//! (Argo CD's health check and the kubectl plugin read them).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::rollout::{RolloutCondition, RolloutPhase, RolloutSpec, RolloutStatus};

pub const INVALID_SPEC: &str = "InvalidSpec";
pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const COMPLETED: &str = "Completed";
pub const HEALTHY: &str = "Healthy";
pub const PAUSED: &str = "Paused";

pub const REASON_NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_DEADLINE: &str = "ProgressDeadlineExceeded";
pub const REASON_ABORTED: &str = "RolloutAborted";
pub const REASON_PAUSED: &str = "RolloutPaused";
pub const REASON_RESUMED: &str = "RolloutResumed";

pub fn condition(type_: &str, status: &str, reason: &str, message: String) -> RolloutCondition {
    RolloutCondition {
        r#type: type_.into(),
        status: status.into(),
        last_update_time: None,
        last_transition_time: None,
        reason: Some(reason.into()),
        message: Some(message),
    }
}

pub fn find<'a>(conds: &'a [RolloutCondition], type_: &str) -> Option<&'a RolloutCondition> {
    conds.iter().find(|c| c.r#type == type_)
}

/// Sets a condition. Like upstream's SetRolloutCondition, nothing changes
/// when status and reason are the same, and lastTransitionTime is kept while
/// the status stays the same.
pub fn set(conds: &mut Vec<RolloutCondition>, mut new: RolloutCondition, now: &Time) {
    if let Some(cur) = find(conds, &new.r#type) {
        if cur.status == new.status && cur.reason == new.reason && cur.message == new.message {
            return;
        }
        new.last_transition_time = if cur.status == new.status {
            cur.last_transition_time.clone()
        } else {
            Some(now.clone())
        };
    } else {
        new.last_transition_time = Some(now.clone());
    }
    new.last_update_time = Some(now.clone());
    remove(conds, &new.r#type);
    conds.push(new);
}

/// Replaces the condition and refreshes lastUpdateTime even when nothing else
/// changed: a Progressing condition that is re-set on progress is what the
/// progress deadline measures from.
pub fn refresh(conds: &mut Vec<RolloutCondition>, mut new: RolloutCondition, now: &Time) {
    let keep_transition = find(conds, &new.r#type)
        .filter(|c| c.status == new.status)
        .and_then(|c| c.last_transition_time.clone());
    new.last_transition_time = keep_transition.or_else(|| Some(now.clone()));
    new.last_update_time = Some(now.clone());
    remove(conds, &new.r#type);
    conds.push(new);
}

pub fn remove(conds: &mut Vec<RolloutCondition>, type_: &str) {
    conds.retain(|c| c.r#type != type_);
}

/// Whether the rollout advanced between two statuses (upstream's
/// RolloutProgressing): more pods updated, ready or available, fewer old
/// pods, or a new stable / step / steps hash.
pub fn made_progress(old: &RolloutStatus, new: &RolloutStatus) -> bool {
    old.updated_replicas != new.updated_replicas
        || (new.replicas - new.updated_replicas) < (old.replicas - old.updated_replicas)
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
        || old.stable_rs != new.stable_rs
        || (old.current_step_index.is_some()
            && new.current_step_index.is_some()
            && old.current_step_index != new.current_step_index)
        || old.current_step_hash != new.current_step_hash
}

/// When the Progressing condition says the rollout has made no progress for
/// progressDeadlineSeconds. None while there is no deadline running.
pub fn deadline(conds: &[RolloutCondition], spec: &RolloutSpec) -> Option<Timestamp> {
    let c = find(conds, PROGRESSING)?;
    if c.status != "True" || c.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE) {
        return None;
    }
    let since = c.last_update_time.as_ref()?.0;
    let secs = i64::from(spec.progress_deadline_seconds_or_default());
    since
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// The phase and message, first match wins (upstream's CalculateRolloutPhase).
/// Clears what belongs to one update (pauses, abort, full promotion): on a
/// new template, and once an update is promoted to stable.
pub fn end_update(status: &mut RolloutStatus) {
    status.pause_conditions.clear();
    status.controller_pause = false;
    status.abort = false;
    status.aborted_at = None;
    status.promote_full = false;
}

pub fn phase(spec: &RolloutSpec, status: &RolloutStatus) -> (RolloutPhase, String) {
    for c in &status.conditions {
        let reason = c.reason.as_deref().unwrap_or_default();
        let message = c.message.as_deref().unwrap_or_default();
        if c.r#type == INVALID_SPEC {
            return (RolloutPhase::Degraded, format!("{INVALID_SPEC}: {message}"));
        }
        if reason == REASON_ABORTED || reason == REASON_DEADLINE {
            return (RolloutPhase::Degraded, format!("{reason}: {message}"));
        }
    }
    if spec.paused {
        return (RolloutPhase::Paused, "manually paused".into());
    }
    if let Some(p) = status.pause_conditions.first() {
        return (RolloutPhase::Paused, p.reason.clone());
    }
    if spec.restart_at.is_some() && status.restarted_at != spec.restart_at {
        return (RolloutPhase::Progressing, "rollout is restarting".into());
    }
    let replicas = spec.replicas_or_default();
    if status.updated_replicas < replicas {
        return (
            RolloutPhase::Progressing,
            "more replicas need to be updated".into(),
        );
    }
    if status.available_replicas < status.updated_replicas {
        return (
            RolloutPhase::Progressing,
            "updated replicas are still becoming available".into(),
        );
    }
    if spec.strategy.blue_green.is_some() {
        let active = status.blue_green.active_selector.as_deref();
        if active.is_none() || active != status.current_pod_hash.as_deref() {
            return (
                RolloutPhase::Progressing,
                "active service cutover pending".into(),
            );
        }
        if status.stable_rs.is_none() || status.stable_rs != status.current_pod_hash {
            let post = spec
                .strategy
                .blue_green
                .as_ref()
                .is_some_and(|b| b.post_promotion_analysis.is_some());
            let post_done = status
                .blue_green
                .post_promotion_analysis_run_status
                .as_ref()
                .is_some_and(|r| {
                    matches!(
                        r.status.as_str(),
                        "Successful" | "Failed" | "Error" | "Inconclusive"
                    )
                });
            let message = if post && !post_done {
                "waiting for analysis to complete"
            } else {
                "waiting for post-promotion verification to complete"
            };
            return (RolloutPhase::Progressing, message.into());
        }
    } else if let Some(canary) = &spec.strategy.canary {
        if canary.traffic_routing.is_none() && status.replicas > status.updated_replicas {
            return (
                RolloutPhase::Progressing,
                "old replicas are pending termination".into(),
            );
        }
        if status.stable_rs.is_none() || status.stable_rs != status.current_pod_hash {
            return (
                RolloutPhase::Progressing,
                "waiting for all steps to complete".into(),
            );
        }
    }
    (RolloutPhase::Healthy, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{CanaryStrategy, PauseCondition, RolloutStrategy};

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn canary_spec(replicas: i32) -> RolloutSpec {
        RolloutSpec {
            replicas: Some(replicas),
            strategy: RolloutStrategy {
                canary: Some(CanaryStrategy::default()),
                blue_green: None,
            },
            ..Default::default()
        }
    }

    fn settled(replicas: i32) -> RolloutStatus {
        RolloutStatus {
            replicas,
            updated_replicas: replicas,
            available_replicas: replicas,
            ready_replicas: replicas,
            stable_rs: Some("abc".into()),
            current_pod_hash: Some("abc".into()),
            ..Default::default()
        }
    }

    #[test]
    fn set_keeps_transition_time_and_skips_no_ops() {
        let mut conds = vec![];
        set(
            &mut conds,
            condition(AVAILABLE, "True", "AvailableReason", "m".into()),
            &t(10),
        );
        set(
            &mut conds,
            condition(AVAILABLE, "True", "AvailableReason", "m".into()),
            &t(20),
        );
        assert_eq!(
            conds[0].last_update_time,
            Some(t(10)),
            "unchanged condition is not rewritten"
        );
        set(
            &mut conds,
            condition(AVAILABLE, "False", "AvailableReason", "n".into()),
            &t(30),
        );
        assert_eq!(conds[0].last_transition_time, Some(t(30)));
        refresh(
            &mut conds,
            condition(AVAILABLE, "False", "AvailableReason", "n".into()),
            &t(40),
        );
        assert_eq!(conds[0].last_transition_time, Some(t(30)));
        assert_eq!(conds[0].last_update_time, Some(t(40)));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn phases_in_upstream_order() {
        let spec = canary_spec(3);
        assert_eq!(
            phase(&spec, &settled(3)),
            (RolloutPhase::Healthy, String::new())
        );

        let mut s = settled(3);
        s.updated_replicas = 1;
        assert_eq!(phase(&spec, &s).1, "more replicas need to be updated");
        let mut s = settled(3);
        s.available_replicas = 2;
        assert_eq!(
            phase(&spec, &s).1,
            "updated replicas are still becoming available"
        );
        let mut s = settled(3);
        s.replicas = 4;
        assert_eq!(phase(&spec, &s).1, "old replicas are pending termination");
        let mut s = settled(3);
        s.stable_rs = Some("old".into());
        assert_eq!(phase(&spec, &s).1, "waiting for all steps to complete");

        let mut s = settled(3);
        s.pause_conditions.push(PauseCondition {
            reason: "CanaryPauseStep".into(),
            start_time: t(1),
        });
        assert_eq!(
            phase(&spec, &s),
            (RolloutPhase::Paused, "CanaryPauseStep".into())
        );
        let mut paused = canary_spec(3);
        paused.paused = true;
        assert_eq!(
            phase(&paused, &s),
            (RolloutPhase::Paused, "manually paused".into())
        );

        let mut s = settled(3);
        s.conditions
            .push(condition(INVALID_SPEC, "True", INVALID_SPEC, "bad".into()));
        assert_eq!(
            phase(&paused, &s),
            (RolloutPhase::Degraded, "InvalidSpec: bad".into())
        );
        let mut s = settled(3);
        s.conditions.push(condition(
            PROGRESSING,
            "False",
            REASON_DEADLINE,
            "slow".into(),
        ));
        assert_eq!(
            phase(&spec, &s),
            (
                RolloutPhase::Degraded,
                "ProgressDeadlineExceeded: slow".into()
            )
        );
    }

    #[test]
    fn progress_is_detected() {
        let a = settled(3);
        assert!(!made_progress(&a, &a));
        let mut b = a.clone();
        b.available_replicas += 1;
        assert!(made_progress(&a, &b));
        let mut b = a.clone();
        b.available_replicas -= 1;
        assert!(!made_progress(&a, &b), "losing pods is not progress");
        let mut b = a.clone();
        b.stable_rs = Some("new".into());
        assert!(made_progress(&a, &b));
    }

    #[test]
    fn deadline_runs_from_last_progress() {
        let mut spec = canary_spec(1);
        spec.progress_deadline_seconds = Some(60);
        let mut conds = vec![];
        assert_eq!(deadline(&conds, &spec), None);
        refresh(
            &mut conds,
            condition(PROGRESSING, "True", REASON_RS_UPDATED, "m".into()),
            &t(100),
        );
        assert_eq!(deadline(&conds, &spec), Some(t(160).0));
        refresh(
            &mut conds,
            condition(PROGRESSING, "True", REASON_NEW_RS_AVAILABLE, "m".into()),
            &t(100),
        );
        assert_eq!(
            deadline(&conds, &spec),
            None,
            "a finished rollout has no deadline"
        );
    }
}
