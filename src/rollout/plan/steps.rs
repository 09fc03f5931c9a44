//! Canary steps: which step is current, the weight it puts in force, and
//! whether a pause step is over.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::common::parse_duration;
use crate::api::rollout::{CanaryStep, RolloutStatus};

pub const PAUSE_REASON_CANARY: &str = "CanaryPauseStep";
pub const PAUSE_REASON_BLUE_GREEN: &str = "BlueGreenPause";

/// The step at `index`, or None past the last step.
pub fn current(steps: &[CanaryStep], index: Option<i32>) -> Option<&CanaryStep> {
    let i = usize::try_from(index.unwrap_or(0)).ok()?;
    steps.get(i)
}

/// Weight the steps put in force at `index`: the last setWeight at or before
/// it, 0 before any setWeight, `max` (100, or maxTrafficWeight) once past the
/// last step (or with no steps).
pub fn set_weight(steps: &[CanaryStep], index: Option<i32>, max: i32) -> i32 {
    let i = index.unwrap_or(0).max(0) as usize;
    if i >= steps.len() {
        return max;
    }
    steps[..=i]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
}

/// The weight of the last setWeight before `index` (0 if none): what stays
/// in force while the current step's pods are not there yet.
pub fn previous_set_weight(steps: &[CanaryStep], index: Option<i32>) -> i32 {
    let i = (index.unwrap_or(0).max(0) as usize).min(steps.len());
    steps[..i]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
}

/// What a pause step decides this time round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Enter the pause now: add the CanaryPauseStep condition.
    Start { until: Option<Timestamp> },
    /// Still paused; look again at `until` when the pause is timed.
    Waiting { until: Option<Timestamp> },
    /// Over: its time passed, or the user cleared the condition (promote).
    Done,
}

/// Upstream's rule: the controller marks a pause with a pause condition and
/// `controllerPause: true`; a condition that is gone while controllerPause
/// is still set means the user promoted.
pub fn pause(step: &CanaryStep, status: &RolloutStatus, now: &Time) -> Pause {
    // Validation has checked the duration; an unreadable one waits for a promote.
    let duration = step
        .pause
        .as_ref()
        .and_then(|p| p.duration.as_ref())
        .and_then(|d| parse_duration(d).ok());
    let end = |start: Timestamp| duration.and_then(|d| start.checked_add(to_signed(d)).ok());
    let cond = status
        .pause_conditions
        .iter()
        .find(|c| c.reason == PAUSE_REASON_CANARY);
    match cond {
        None if status.controller_pause => Pause::Done,
        None => match end(now.0) {
            Some(until) if until <= now.0 => Pause::Done,
            until => Pause::Start { until },
        },
        Some(c) => match end(c.start_time.0) {
            Some(until) if until <= now.0 => Pause::Done,
            until => Pause::Waiting { until },
        },
    }
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{PauseCondition, RolloutPause};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn weight(w: i32) -> CanaryStep {
        CanaryStep {
            set_weight: Some(w),
            ..Default::default()
        }
    }
    fn pause_step(d: Option<i32>) -> CanaryStep {
        CanaryStep {
            pause: Some(RolloutPause {
                duration: d.map(IntOrString::Int),
            }),
            ..Default::default()
        }
    }
    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn weight_in_force() {
        let steps = vec![pause_step(None), weight(20), pause_step(None), weight(40)];
        assert_eq!(set_weight(&steps, Some(0), 100), 0, "no setWeight yet");
        assert_eq!(set_weight(&steps, Some(1), 100), 20);
        assert_eq!(set_weight(&steps, Some(2), 100), 20);
        assert_eq!(set_weight(&steps, Some(3), 100), 40);
        assert_eq!(set_weight(&steps, Some(4), 100), 100, "past the last step");
        assert_eq!(set_weight(&[], None, 100), 100);
        assert_eq!(set_weight(&steps, Some(4), 1000), 1000, "maxTrafficWeight");
        assert_eq!(previous_set_weight(&steps, Some(0)), 0);
        assert_eq!(
            previous_set_weight(&steps, Some(1)),
            0,
            "not the current step's"
        );
        assert_eq!(previous_set_weight(&steps, Some(3)), 20);
        assert_eq!(previous_set_weight(&steps, Some(9)), 40, "past the end");
        assert!(current(&steps, Some(4)).is_none());
    }

    #[test]
    fn indefinite_pause_waits_for_promote() {
        let step = pause_step(None);
        let mut status = RolloutStatus::default();
        assert_eq!(pause(&step, &status, &t(10)), Pause::Start { until: None });
        status.pause_conditions.push(PauseCondition {
            reason: PAUSE_REASON_CANARY.into(),
            start_time: t(10),
        });
        status.controller_pause = true;
        assert_eq!(
            pause(&step, &status, &t(1000)),
            Pause::Waiting { until: None }
        );
        status.pause_conditions.clear(); // kubectl rollouts promote
        assert_eq!(pause(&step, &status, &t(1001)), Pause::Done);
    }

    #[test]
    fn timed_pause_ends_on_time() {
        let step = pause_step(Some(30));
        let mut status = RolloutStatus::default();
        assert_eq!(
            pause(&step, &status, &t(10)),
            Pause::Start {
                until: Some(t(40).0)
            }
        );
        status.pause_conditions.push(PauseCondition {
            reason: PAUSE_REASON_CANARY.into(),
            start_time: t(10),
        });
        status.controller_pause = true;
        assert_eq!(
            pause(&step, &status, &t(39)),
            Pause::Waiting {
                until: Some(t(40).0)
            }
        );
        assert_eq!(pause(&step, &status, &t(40)), Pause::Done);
        let zero = pause_step(Some(0));
        assert_eq!(pause(&zero, &RolloutStatus::default(), &t(5)), Pause::Done);
    }
}
