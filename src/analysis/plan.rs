//! One reconcile of an AnalysisRun, pure on both sides of the measuring:
//! `prepare` decides what to measure (or that the spec is unusable),
//! the shell takes the measurements, `conclude` computes the new status and
//! when to look again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::args::resolve_all;
use super::run::{self, Task};
use crate::api::analysis::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, Metric};

/// The status to write and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    pub status: AnalysisRunStatus,
    pub requeue_after: Option<Duration>,
    /// Set when this plan completes the run (for the completion event).
    pub completed: Option<AnalysisPhase>,
    /// Measurements no longer kept in the status (their Jobs can go).
    pub dropped: Vec<Measurement>,
}

/// What `prepare` found to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The run's metrics with arguments resolved (secrets as placeholders).
    pub metrics: Vec<Metric>,
    pub dry_run: BTreeSet<String>,
    pub keep: BTreeMap<String, usize>,
    pub terminating: bool,
    pub tasks: Vec<Task>,
}

/// What a reconcile of a run starts with.
#[derive(Clone, Debug, PartialEq)]
pub enum Prepare {
    /// The run is complete: nothing to do.
    Finished,
    /// The spec cannot be used: the run ends in Error with this status.
    Invalid(Box<RunPlan>),
    /// Take these measurements, then `conclude`.
    Measure(Prepared),
}

/// A finished run needs nothing; a run whose spec cannot be used ends in
/// Error with upstream's message; otherwise the measurements due now.
pub fn prepare(run: &AnalysisRun, now: Timestamp) -> Prepare {
    match try_prepare(run, now) {
        Ok(p) => p,
        Err(plan) => Prepare::Invalid(plan),
    }
}

fn try_prepare(run: &AnalysisRun, now: Timestamp) -> Result<Prepare, Box<RunPlan>> {
    let status = run.status.clone().unwrap_or_default();
    if status.phase.is_some_and(|p| p.completed()) {
        return Ok(Prepare::Finished);
    }
    let fail = |message: String| Box::new(error_plan(run, message, now));
    let metrics = resolve_all(&run.spec.metrics, &run.spec.args)
        .map_err(|e| fail(format!("Unable to resolve metric arguments: {e}")))?;
    run::validate_metrics(&metrics).map_err(|e| fail(format!("Analysis spec invalid: {e}")))?;
    let dry_run = run::dry_run_metrics(&run.spec.dry_run, &metrics)
        .map_err(|e| fail(format!("Analysis spec invalid: {e}")))?;
    let keep = run::retention(&run.spec.measurement_retention, &metrics)
        .map_err(|e| fail(format!("Analysis spec invalid: {e}")))?;
    let terminating = run::is_terminating(run.spec.terminate, &status);
    let tasks = run::tasks(&metrics, &status, terminating, now);
    Ok(Prepare::Measure(Prepared {
        metrics,
        dry_run,
        keep,
        terminating,
        tasks,
    }))
}

/// The run ends in Error with `message` (an unusable spec, arguments that
/// cannot be resolved).
pub fn error_plan(run: &AnalysisRun, message: String, now: Timestamp) -> RunPlan {
    let mut status = run.status.clone().unwrap_or_default();
    status.phase = Some(AnalysisPhase::Error);
    status.message = Some(message);
    status.started_at.get_or_insert(Time(now));
    status.completed_at.get_or_insert(Time(now));
    RunPlan {
        status,
        requeue_after: None,
        completed: Some(AnalysisPhase::Error),
        dropped: vec![],
    }
}

/// When a completed run is to be deleted, from its `ttlStrategy` (the
/// phase-specific TTL first, then secondsAfterCompletion); None keeps it.
pub fn expires_at(run: &AnalysisRun) -> Option<Timestamp> {
    let ttl = run.spec.ttl_strategy.as_ref()?;
    let status = run.status.as_ref()?;
    let phase = status.phase.filter(|p| p.completed())?;
    let completed = status.completed_at.as_ref()?;
    let seconds = match phase {
        AnalysisPhase::Successful => ttl.seconds_after_success,
        AnalysisPhase::Failed => ttl.seconds_after_failure,
        _ => None,
    }
    .or(ttl.seconds_after_completion)?;
    completed
        .0
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
            seconds,
        )))
        .ok()
}

/// A measurement the shell took for a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    pub task: Task,
    pub measurement: Measurement,
}

pub fn conclude(
    run: &AnalysisRun,
    prepared: &Prepared,
    taken: Vec<Taken>,
    now: Timestamp,
) -> RunPlan {
    let mut status = run.status.clone().unwrap_or_default();
    for mut t in taken {
        let Some(metric) = prepared.metrics.get(t.task.metric) else {
            continue;
        };
        let terminated = prepared.terminating && t.task.resume.is_some();
        if terminated
            && matches!(
                t.measurement.phase,
                AnalysisPhase::Successful | AnalysisPhase::Inconclusive
            )
        {
            t.measurement.message = Some("Metric Terminated".into());
        }
        run::record(
            &mut status,
            metric,
            prepared.dry_run.contains(&metric.name),
            None,
            t.measurement,
            t.task.resume.is_some(),
            now,
        );
    }
    let (phase, message) = run::assess(
        &prepared.metrics,
        &mut status,
        &prepared.dry_run,
        run.spec.terminate,
        now,
    );
    let mut completed = None;
    if status.phase != Some(phase) {
        status.phase = Some(phase);
        status.message = (!message.is_empty()).then_some(message);
        if phase.completed() {
            completed = Some(phase);
            status.completed_at.get_or_insert(Time(now));
        }
    }
    let dropped = run::trim_measurements(&mut status, &prepared.keep)
        .into_values()
        .flatten()
        .collect();
    let requeue_after = if phase.completed() {
        None
    } else {
        run::next_reconcile(&prepared.metrics, &status, now)
            .map(|at| Duration::from_secs((at.as_second() - now.as_second()).max(1) as u64))
    };
    RunPlan {
        status,
        requeue_after,
        completed,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::run::ERROR_RETRY;
    use crate::api::analysis::{AnalysisRunSpec, Argument, MetricProvider, WebMetric};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn web_run(interval: Option<&str>, count: Option<i32>) -> AnalysisRun {
        let metric = Metric {
            name: "web".into(),
            interval: interval.map(Into::into),
            count: count.map(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int),
            success_condition: Some("result == true".into()),
            provider: MetricProvider {
                web: Some(WebMetric {
                    url: "http://svc/{{args.path}}".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        AnalysisRun::new(
            "run",
            AnalysisRunSpec {
                metrics: vec![metric],
                args: vec![Argument {
                    name: "path".into(),
                    value: Some("health".into()),
                    value_from: None,
                }],
                ..Default::default()
            },
        )
    }

    fn measure(run: &AnalysisRun, now: Timestamp) -> Prepared {
        match prepare(run, now) {
            Prepare::Measure(p) => p,
            other => panic!("expected measurements, got {other:?}"),
        }
    }

    fn invalid(run: &AnalysisRun) -> RunPlan {
        match prepare(run, t(0)) {
            Prepare::Invalid(plan) => *plan,
            other => panic!("expected an invalid run, got {other:?}"),
        }
    }

    fn taken(p: &Prepared, phase: AnalysisPhase) -> Vec<Taken> {
        p.tasks
            .iter()
            .map(|task| Taken {
                task: task.clone(),
                measurement: Measurement {
                    phase,
                    message: None,
                    started_at: None,
                    finished_at: None,
                    value: Some("true".into()),
                    metadata: None,
                    resume_at: None,
                },
            })
            .collect()
    }

    #[test]
    fn a_run_measures_on_its_interval_until_its_count() {
        let mut run = web_run(Some("5s"), Some(2));
        let p = measure(&run, t(0));
        assert_eq!(p.tasks.len(), 1);
        assert_eq!(
            p.metrics[0].provider.web.as_ref().unwrap().url,
            "http://svc/health"
        );
        let plan = conclude(&run, &p, taken(&p, AnalysisPhase::Successful), t(0));
        assert_eq!(plan.status.phase, Some(AnalysisPhase::Running));
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(6)));
        run.status = Some(plan.status);
        assert!(measure(&run, t(3)).tasks.is_empty(), "not due yet");
        let p = measure(&run, t(6));
        let plan = conclude(&run, &p, taken(&p, AnalysisPhase::Successful), t(6));
        assert_eq!(plan.status.phase, Some(AnalysisPhase::Successful));
        assert_eq!(plan.completed, Some(AnalysisPhase::Successful));
        assert_eq!(plan.requeue_after, None);
        assert!(plan.status.completed_at.is_some());
        run.status = Some(plan.status);
        assert_eq!(
            prepare(&run, t(60)),
            Prepare::Finished,
            "a finished run is left alone"
        );
    }

    #[test]
    fn errors_retry_after_ten_seconds() {
        let run = web_run(Some("60s"), None);
        let p = measure(&run, t(0));
        let plan = conclude(&run, &p, taken(&p, AnalysisPhase::Error), t(0));
        assert_eq!(plan.status.phase, Some(AnalysisPhase::Running));
        assert_eq!(
            plan.requeue_after,
            Some(ERROR_RETRY + Duration::from_secs(1))
        );
    }

    #[test]
    fn an_unusable_spec_ends_the_run_in_error() {
        let mut run = web_run(None, None);
        run.spec.args[0].value = None;
        let plan = invalid(&run);
        assert_eq!(plan.status.phase, Some(AnalysisPhase::Error));
        assert_eq!(
            plan.status.message.as_deref(),
            Some("Unable to resolve metric arguments: argument \"path\" was not supplied")
        );
        let mut run = web_run(None, Some(3));
        run.spec.metrics[0].interval = None;
        let plan = invalid(&run);
        assert_eq!(
            plan.status.message.as_deref(),
            Some("Analysis spec invalid: metrics[0]: interval must be specified when count > 1")
        );
    }

    #[test]
    fn ttl_picks_the_phase_specific_seconds_first() {
        use crate::api::analysis::TtlStrategy;
        let mut run = web_run(None, None);
        assert_eq!(expires_at(&run), None, "no ttlStrategy: kept");
        run.spec.ttl_strategy = Some(TtlStrategy {
            seconds_after_completion: Some(60),
            seconds_after_failure: Some(5),
            seconds_after_success: None,
        });
        assert_eq!(expires_at(&run), None, "not completed yet");
        let mut done = |phase| {
            run.status = Some(AnalysisRunStatus {
                phase: Some(phase),
                completed_at: Some(Time(t(100))),
                ..Default::default()
            });
            expires_at(&run)
        };
        assert_eq!(done(AnalysisPhase::Failed), Some(t(105)));
        assert_eq!(done(AnalysisPhase::Successful), Some(t(160)));
        assert_eq!(done(AnalysisPhase::Running), None);
    }

    #[test]
    fn a_terminated_in_flight_measurement_says_so_and_counts_as_upstream() {
        let mut run = web_run(Some("5s"), None);
        let p = measure(&run, t(0));
        let mut first = taken(&p, AnalysisPhase::Running);
        first[0].measurement.finished_at = None;
        let plan = conclude(&run, &p, first, t(0));
        run.status = Some(plan.status);
        run.spec.terminate = true;
        let p = measure(&run, t(1));
        assert!(p.terminating && p.tasks[0].resume.is_some());
        let mut ended = taken(&p, AnalysisPhase::Inconclusive);
        ended[0].measurement.finished_at = Some(Time(t(1)));
        let plan = conclude(&run, &p, ended, t(1));
        let m = &plan.status.metric_results[0].measurements[0];
        assert_eq!(m.message.as_deref(), Some("Metric Terminated"));
        // Upstream (v1.10.2) ends a Job early as Inconclusive, and that
        // counts against inconclusiveLimit even while terminating.
        assert_eq!(
            plan.status.message.as_deref(),
            Some(
                "Metric \"web\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0): \"Error Message: Metric Terminated\""
            )
        );
        assert_eq!(plan.completed, Some(AnalysisPhase::Inconclusive));
    }
}
