//! The AnalysisRun state machine, pure: which metrics to measure now, how a
//! finished measurement changes a metric's counters, what phase the metrics
//! and the run are in, and when to look again. Upstream's rules and wording
//! (argo-rollouts analysis/analysis.go); the shell runs the providers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::analysis::{
    AnalysisPhase, AnalysisRunStatus, Measurement, Metric, MetricResult, RunSummary,
};
use crate::api::common::{DryRun, MeasurementRetention, parse_duration_str};

/// After an Error measurement the metric is measured again this soon,
/// whatever its interval.
pub const ERROR_RETRY: Duration = Duration::from_secs(10);
/// Measurements kept per metric unless measurementRetention says otherwise.
pub const DEFAULT_MEASUREMENT_HISTORY: usize = 10;
const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;

impl AnalysisPhase {
    pub fn completed(self) -> bool {
        matches!(
            self,
            AnalysisPhase::Successful
                | AnalysisPhase::Failed
                | AnalysisPhase::Error
                | AnalysisPhase::Inconclusive
        )
    }

    /// Upstream's order, best to worst.
    fn rank(self) -> u8 {
        match self {
            AnalysisPhase::Successful => 0,
            AnalysisPhase::Running => 1,
            AnalysisPhase::Pending => 2,
            AnalysisPhase::Inconclusive => 3,
            AnalysisPhase::Error => 4,
            AnalysisPhase::Failed => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisPhase::Pending => "Pending",
            AnalysisPhase::Running => "Running",
            AnalysisPhase::Successful => "Successful",
            AnalysisPhase::Failed => "Failed",
            AnalysisPhase::Error => "Error",
            AnalysisPhase::Inconclusive => "Inconclusive",
        }
    }
}

/// Go's `IntOrString.IntValue()`: a string that is not a number is 0.
pub fn int_value(v: &IntOrString) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => s.trim().parse().unwrap_or(0),
    }
}

fn limit(v: Option<&IntOrString>, default: i32) -> i32 {
    v.map_or(default, int_value)
}

/// Measurements the metric wants in all: `count`, or one when it has neither
/// count nor interval; None means "until the run is terminated".
pub fn effective_count(m: &Metric) -> Option<i32> {
    match m.count.as_ref().map(int_value) {
        Some(c) if c != 0 => Some(c),
        _ if m.interval.as_deref().unwrap_or_default().is_empty() => Some(1),
        _ => None,
    }
}

fn duration(s: Option<&str>) -> Option<Duration> {
    s.filter(|s| !s.is_empty())
        .and_then(|s| parse_duration_str(s).ok())
}

fn plus(t: &Time, d: Duration) -> Timestamp {
    t.0.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Upstream's spec checks, with its messages.
pub fn validate_metrics(metrics: &[Metric]) -> Result<(), String> {
    if metrics.is_empty() {
        return Err("no metrics specified".into());
    }
    let mut names = BTreeSet::new();
    for (i, m) in metrics.iter().enumerate() {
        if !names.insert(m.name.as_str()) {
            return Err(format!("metrics[{i}]: duplicate name '{}'", m.name));
        }
        validate_metric(m).map_err(|e| format!("metrics[{i}]: {e}"))?;
    }
    Ok(())
}

fn validate_metric(m: &Metric) -> Result<(), String> {
    let count = limit(m.count.as_ref(), 0);
    let failure = limit(m.failure_limit.as_ref(), 0);
    let success = limit(m.consecutive_success_limit.as_ref(), 0);
    let inconclusive = limit(m.inconclusive_limit.as_ref(), 0);
    if success < 0 {
        return Err("consecutiveSuccessLimit must be >= 0".into());
    }
    if failure < -1 {
        return Err("failureLimit must be >= 0, or -1 to be disabled".into());
    }
    if success == 0 && failure == -1 {
        return Err("failureLimit and consecutiveSuccessLimit cannot both be disabled".into());
    }
    if inconclusive < 0 {
        return Err("inconclusiveLimit must be >= 0".into());
    }
    if m.consecutive_error_limit
        .as_ref()
        .is_some_and(|l| int_value(l) < 0)
    {
        return Err("consecutiveErrorLimit must be >= 0".into());
    }
    if count > 0 {
        if failure >= 0 && count < failure + success {
            return Err(format!(
                "count ({count}) must be >= failureLimit + consecutiveSuccessLimit ({failure} + {success}) if both >= 0"
            ));
        }
        if failure < 0 && count < success {
            return Err("count must be >= consecutiveSuccessLimit".into());
        }
        if count < inconclusive {
            return Err("count must be >= inconclusiveLimit".into());
        }
    }
    let interval = m.interval.as_deref().unwrap_or_default();
    if count > 1 && interval.is_empty() {
        return Err("interval must be specified when count > 1".into());
    }
    if !interval.is_empty()
        && let Err(e) = parse_duration_str(interval)
    {
        return Err(format!("invalid interval string: {e}"));
    }
    if let Some(d) = m.initial_delay.as_deref().filter(|d| !d.is_empty())
        && let Err(e) = parse_duration_str(d)
    {
        return Err(format!("invalid startDelay string: {e}"));
    }
    let providers = crate::analysis::providers::set(&m.provider).len();
    match providers {
        0 => Err("no provider specified".into()),
        1 => Ok(()),
        _ => Err("multiple providers specified".into()),
    }
}

/// For each rule (a regular expression over metric names), the metrics it
/// matches; a rule that matches none is an error, as upstream.
fn match_rules<'a>(
    kind: &str,
    patterns: impl Iterator<Item = &'a str>,
    metrics: &'a [Metric],
) -> Result<Vec<Vec<&'a Metric>>, String> {
    patterns
        .enumerate()
        .map(|(i, pattern)| {
            let re = regex::Regex::new(pattern)
                .map_err(|e| format!("{kind}[{i}]: invalid metric name pattern: {e}"))?;
            let matched: Vec<&Metric> = metrics.iter().filter(|m| re.is_match(&m.name)).collect();
            if matched.is_empty() {
                return Err(format!("{kind}[{i}]: Rule didn't match any metric name(s)"));
            }
            Ok(matched)
        })
        .collect()
}

/// Names of the dry-run metrics.
pub fn dry_run_metrics(rules: &[DryRun], metrics: &[Metric]) -> Result<BTreeSet<String>, String> {
    let matched = match_rules(
        "dryRun",
        rules.iter().map(|r| r.metric_name.as_str()),
        metrics,
    )?;
    Ok(matched
        .into_iter()
        .flatten()
        .map(|m| m.name.clone())
        .collect())
}

/// How many measurements to keep, per metric name.
pub fn retention(
    rules: &[MeasurementRetention],
    metrics: &[Metric],
) -> Result<BTreeMap<String, usize>, String> {
    let patterns = rules.iter().map(|r| r.metric_name.as_str());
    let matched = match_rules("measurementRetention", patterns, metrics)?;
    let mut out = BTreeMap::new();
    for (rule, matched) in rules.iter().zip(matched) {
        let keep = usize::try_from(rule.limit).unwrap_or(0);
        if keep > 0 {
            out.extend(matched.into_iter().map(|m| (m.name.clone(), keep)));
        }
    }
    Ok(out)
}

pub fn result<'a>(status: &'a AnalysisRunStatus, name: &str) -> Option<&'a MetricResult> {
    status.metric_results.iter().find(|r| r.name == name)
}

fn last_measurement<'a>(status: &'a AnalysisRunStatus, name: &str) -> Option<&'a Measurement> {
    result(status, name).and_then(|r| r.measurements.last())
}

/// Terminate was asked for, or a metric that counts already went wrong
/// (fail fast): in-flight measurements are stopped, no new ones start.
pub fn is_terminating(terminate: bool, status: &AnalysisRunStatus) -> bool {
    terminate
        || status.metric_results.iter().any(|r| {
            !r.dry_run
                && matches!(
                    r.phase,
                    AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
                )
        })
}

/// One measurement to take (or resume, or terminate) now.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Index into the run's metrics.
    pub metric: usize,
    /// The in-flight measurement to resume (or terminate), if any.
    pub resume: Option<Measurement>,
}

/// The measurements due at `now`.
pub fn tasks(
    metrics: &[Metric],
    status: &AnalysisRunStatus,
    terminating: bool,
    now: Timestamp,
) -> Vec<Task> {
    let mut out = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        if result(status, &m.name).is_some_and(|r| r.phase.completed()) {
            continue;
        }
        let last = last_measurement(status, &m.name);
        if let Some(last) = last
            && last.finished_at.is_none()
        {
            let waiting = last.resume_at.as_ref().is_some_and(|t| t.0 > now);
            if terminating || !waiting {
                out.push(Task {
                    metric: i,
                    resume: Some(last.clone()),
                });
            }
            continue;
        }
        if terminating {
            continue;
        }
        let Some(last) = last else {
            if let Some(delay) = duration(m.initial_delay.as_deref()) {
                match status.started_at.as_ref() {
                    Some(start) if plus(start, delay) <= now => {}
                    _ => continue,
                }
            }
            out.push(Task {
                metric: i,
                resume: None,
            });
            continue;
        };
        let count = result(status, &m.name).map_or(0, |r| r.count);
        if effective_count(m).is_some_and(|c| count >= c) {
            continue;
        }
        let interval = if last.phase == AnalysisPhase::Error {
            ERROR_RETRY
        } else {
            match m.interval.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => match parse_duration_str(s) {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                None => ERROR_RETRY,
            }
        };
        if let Some(finished) = last.finished_at.as_ref()
            && plus(finished, interval) < now
        {
            out.push(Task {
                metric: i,
                resume: None,
            });
        }
    }
    out
}

/// Records a measurement a provider returned for `metric`: replaces the
/// in-flight one when `resumed`, updates the counters once it is complete.
pub fn record(
    status: &mut AnalysisRunStatus,
    metric: &Metric,
    dry_run: bool,
    metadata: Option<BTreeMap<String, String>>,
    mut m: Measurement,
    resumed: bool,
    now: Timestamp,
) {
    let idx = match status
        .metric_results
        .iter()
        .position(|r| r.name == metric.name)
    {
        Some(i) => i,
        None => {
            status.metric_results.push(MetricResult {
                name: metric.name.clone(),
                phase: AnalysisPhase::Running,
                measurements: vec![],
                message: None,
                count: 0,
                successful: 0,
                failed: 0,
                inconclusive: 0,
                error: 0,
                consecutive_error: 0,
                consecutive_success: 0,
                dry_run,
                metadata,
            });
            status.metric_results.len() - 1
        }
    };
    let r = &mut status.metric_results[idx];
    if m.phase.completed() {
        m.finished_at.get_or_insert(Time(now));
        match m.phase {
            AnalysisPhase::Successful => {
                r.successful += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success += 1;
            }
            AnalysisPhase::Failed => {
                r.failed += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success = 0;
            }
            AnalysisPhase::Inconclusive => {
                r.inconclusive += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success = 0;
            }
            _ => {
                r.error += 1;
                r.consecutive_error += 1;
                r.consecutive_success = 0;
            }
        }
    }
    match r.measurements.last_mut() {
        Some(last) if resumed => *last = m,
        _ => r.measurements.push(m),
    }
}

/// Failed, Inconclusive or Error from the counters, with upstream's reason.
fn limits_phase(m: &Metric, r: &MetricResult) -> Option<(AnalysisPhase, String)> {
    let mut out = None;
    let failure = limit(m.failure_limit.as_ref(), 0);
    if failure >= 0 && r.failed > failure {
        out = Some((
            AnalysisPhase::Failed,
            format!("failed ({}) > failureLimit ({failure})", r.failed),
        ));
    }
    let inconclusive = limit(m.inconclusive_limit.as_ref(), 0);
    if r.inconclusive > inconclusive {
        out = Some((
            AnalysisPhase::Inconclusive,
            format!(
                "inconclusive ({}) > inconclusiveLimit ({inconclusive})",
                r.inconclusive
            ),
        ));
    }
    let errors = limit(
        m.consecutive_error_limit.as_ref(),
        DEFAULT_CONSECUTIVE_ERROR_LIMIT,
    );
    if r.consecutive_error > errors {
        out = Some((
            AnalysisPhase::Error,
            format!(
                "consecutiveErrors ({}) > consecutiveErrorLimit ({errors})",
                r.consecutive_error
            ),
        ));
    }
    out
}

/// A metric's phase from its measurements and counters.
pub fn metric_phase(m: &Metric, r: &MetricResult, terminating: bool) -> AnalysisPhase {
    if r.phase.completed() {
        return r.phase;
    }
    let Some(last) = r.measurements.last() else {
        return if terminating {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Pending
        };
    };
    if !last.phase.completed() {
        return AnalysisPhase::Running;
    }
    if let Some((phase, _)) = limits_phase(m, r) {
        return phase;
    }
    let success_limit = limit(m.consecutive_success_limit.as_ref(), 0);
    if success_limit > 0 && r.consecutive_success >= success_limit {
        return AnalysisPhase::Successful;
    }
    if let Some(count) = effective_count(m)
        && r.count >= count
    {
        let failure_applies = limit(m.failure_limit.as_ref(), 0) >= 0;
        return match (failure_applies, success_limit > 0) {
            (true, true) => AnalysisPhase::Inconclusive,
            (false, true) => AnalysisPhase::Failed,
            _ => AnalysisPhase::Successful,
        };
    }
    if terminating {
        return AnalysisPhase::Successful;
    }
    AnalysisPhase::Running
}

/// Settles each metric's phase and message, the summaries, and returns the
/// run's phase and message: the worst of the metrics that count, Running
/// until all are complete (or the run is terminating).
pub fn assess(
    metrics: &[Metric],
    status: &mut AnalysisRunStatus,
    dry_run: &BTreeSet<String>,
    terminate: bool,
    now: Timestamp,
) -> (AnalysisPhase, String) {
    let terminating = is_terminating(terminate, status);
    status.started_at.get_or_insert(Time(now));
    let mut worst: Option<AnalysisPhase> = None;
    let mut message = if terminate {
        "Run Terminated".to_string()
    } else {
        String::new()
    };
    let mut all_done = true;
    let mut summary = RunSummary::default();
    let mut dry_summary = RunSummary::default();
    for m in metrics {
        let is_dry = dry_run.contains(&m.name);
        if is_dry {
            dry_summary.count += 1;
        } else {
            summary.count += 1;
        }
        let Some(r) = status.metric_results.iter_mut().find(|r| r.name == m.name) else {
            all_done = false;
            continue;
        };
        let phase = metric_phase(m, r, terminating);
        if r.phase != phase {
            if let Some(last) = r.measurements.last() {
                r.message = last.message.clone();
            }
            r.phase = phase;
        }
        if !phase.completed() {
            all_done = false;
            continue;
        }
        let limits = limits_phase(m, r);
        let (kind, reason) = match &limits {
            Some((p, why)) => (*p, why.clone()),
            None => (AnalysisPhase::Successful, String::new()),
        };
        let tally = if is_dry {
            &mut dry_summary
        } else {
            &mut summary
        };
        match kind {
            AnalysisPhase::Error => tally.error += 1,
            AnalysisPhase::Failed => tally.failed += 1,
            AnalysisPhase::Inconclusive => tally.inconclusive += 1,
            _ => tally.successful += 1,
        }
        if is_dry {
            worst.get_or_insert(AnalysisPhase::Successful);
            if !reason.is_empty() {
                r.message = Some(format!(
                    "Metric assessed {} due to {reason}",
                    phase.as_str()
                ));
            }
        } else if worst.is_none_or(|w| phase.rank() > w.rank()) {
            worst = Some(phase);
            if !reason.is_empty() {
                message = format!(
                    "Metric \"{}\" assessed {} due to {reason}",
                    m.name,
                    phase.as_str()
                );
                if let Some(err) = r.message.as_deref().filter(|s| !s.is_empty()) {
                    message.push_str(&format!(": \"Error Message: {err}\""));
                }
            }
        }
    }
    status.run_summary = Some(summary);
    status.dry_run_summary = Some(dry_summary);
    let message = message.trim().to_string();
    if terminating {
        return (worst.unwrap_or(AnalysisPhase::Successful), message);
    }
    match worst {
        Some(w) if all_done => (w, message),
        _ => (AnalysisPhase::Running, String::new()),
    }
}

/// When the next measurement is due (or an in-flight one resumes).
pub fn next_reconcile(
    metrics: &[Metric],
    status: &AnalysisRunStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut at: Option<Timestamp> = None;
    let mut consider = |t: Timestamp| at = Some(at.map_or(t, |a| a.min(t)));
    for m in metrics {
        let r = result(status, &m.name);
        if r.is_some_and(|r| r.phase.completed()) {
            continue;
        }
        let Some(last) = r.and_then(|r| r.measurements.last()) else {
            if let Some(delay) = duration(m.initial_delay.as_deref()) {
                let start = status.started_at.clone().unwrap_or(Time(now));
                consider(plus(&start, delay));
            }
            continue;
        };
        let Some(finished) = last.finished_at.as_ref() else {
            if let Some(t) = last.resume_at.as_ref() {
                consider(t.0);
            }
            continue;
        };
        let count = r.map_or(0, |r| r.count);
        if effective_count(m).is_some_and(|c| count >= c) {
            continue;
        }
        let interval = if last.phase == AnalysisPhase::Error {
            Some(ERROR_RETRY)
        } else {
            duration(m.interval.as_deref())
        };
        if let Some(interval) = interval {
            // One second past the due time: a measurement is due once
            // strictly after finishedAt + interval.
            consider(plus(finished, interval + Duration::from_secs(1)));
        }
    }
    at
}

/// Keeps the newest measurements of each metric; returns the dropped ones by
/// metric name (a provider may clean up after them, e.g. delete Jobs).
pub fn trim_measurements(
    status: &mut AnalysisRunStatus,
    keep: &BTreeMap<String, usize>,
) -> BTreeMap<String, Vec<Measurement>> {
    let mut dropped = BTreeMap::new();
    for r in &mut status.metric_results {
        let limit = keep
            .get(&r.name)
            .copied()
            .unwrap_or(DEFAULT_MEASUREMENT_HISTORY);
        if r.measurements.len() > limit {
            let excess = r.measurements.len() - limit;
            dropped.insert(r.name.clone(), r.measurements.drain(..excess).collect());
        }
    }
    dropped
}

#[cfg(test)]
mod tests;
