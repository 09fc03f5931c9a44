//! Upstream's analysis_test.go cases, as tables.

use super::*;
use crate::api::analysis::{MetricProvider, WebMetric};
use AnalysisPhase::*;

fn t(s: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + s).unwrap())
}

fn metric(name: &str) -> Metric {
    Metric {
        name: name.into(),
        provider: MetricProvider {
            web: Some(WebMetric {
                url: "http://x".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn int(i: i32) -> Option<IntOrString> {
    Some(IntOrString::Int(i))
}

fn measured(phase: AnalysisPhase, finished: Option<i64>) -> Measurement {
    Measurement {
        phase,
        message: None,
        started_at: Some(t(finished.unwrap_or(0))),
        finished_at: finished.map(t),
        value: None,
        metadata: None,
        resume_at: None,
    }
}

/// A result with the given (failed, successful, inconclusive, consecutive
/// success, count) and one finished Failed measurement.
fn counts(
    failed: i32,
    successful: i32,
    inconclusive: i32,
    cons_success: i32,
    count: i32,
) -> MetricResult {
    MetricResult {
        name: "m".into(),
        phase: Running,
        measurements: vec![measured(Failed, Some(0))],
        message: None,
        count,
        successful,
        failed,
        inconclusive,
        error: 0,
        consecutive_error: 0,
        consecutive_success: cons_success,
        dry_run: false,
        metadata: None,
    }
}

#[test]
fn metric_phase_follows_upstream_limits() {
    // (failureLimit, consecutiveSuccessLimit, inconclusiveLimit, count,
    //  (failed, successful, inconclusive, consecutiveSuccess, count),
    //  phase not terminating, phase terminating)
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let rows: &[(Option<i32>, Option<i32>, Option<i32>, Option<i32>, (i32, i32, i32, i32, i32), AnalysisPhase, AnalysisPhase)] = &[
        // TestAssessMetricStatusFailureLimit
        (Some(2), None, None, None, (3, 0, 0, 0, 3), Failed, Failed),
        (Some(3), None, None, None, (3, 0, 0, 0, 3), Running, Successful),
        // TestAssessMetricStatusConsecutiveSuccessLimit
        (Some(-1), Some(3), None, None, (3, 4, 0, 3, 7), Successful, Successful),
        (Some(-1), Some(5), None, None, (3, 4, 0, 3, 7), Running, Successful),
        (Some(-1), Some(5), None, Some(7), (3, 4, 0, 3, 7), Failed, Failed),
        (Some(-1), Some(3), None, Some(7), (3, 4, 0, 3, 7), Successful, Successful),
        (Some(-1), Some(3), None, Some(9), (3, 4, 0, 3, 7), Successful, Successful),
        (Some(-1), Some(5), None, Some(9), (3, 4, 0, 3, 7), Running, Successful),
        // TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit
        (Some(4), Some(4), None, None, (3, 4, 0, 3, 7), Running, Successful),
        (Some(4), Some(4), None, None, (5, 9, 0, 0, 9), Failed, Failed),
        (Some(4), Some(4), None, None, (3, 5, 0, 4, 8), Successful, Successful),
        (Some(4), Some(4), None, None, (5, 5, 0, 4, 10), Failed, Failed),
        (Some(4), Some(4), None, Some(10), (4, 6, 0, 3, 10), Inconclusive, Inconclusive),
        (Some(4), Some(4), None, Some(10), (5, 5, 0, 3, 10), Failed, Failed),
        (Some(4), Some(4), None, Some(10), (4, 6, 0, 4, 10), Successful, Successful),
        (Some(4), Some(4), None, Some(10), (5, 5, 0, 4, 10), Failed, Failed),
        (Some(4), Some(4), None, Some(10), (3, 5, 0, 3, 8), Running, Successful),
        (Some(4), Some(4), None, Some(10), (5, 3, 0, 3, 8), Failed, Failed),
        (Some(4), Some(4), None, Some(10), (3, 5, 0, 4, 8), Successful, Successful),
        (Some(4), Some(4), None, Some(10), (5, 4, 0, 4, 9), Failed, Failed),
        // TestAssessMetricStatusInconclusiveLimit
        (None, None, Some(2), None, (0, 0, 3, 0, 3), Inconclusive, Inconclusive),
        (None, None, Some(3), None, (0, 0, 3, 0, 3), Running, Successful),
    ];
    for (i, (fl, csl, il, count, (f, s, inc, cs, c), live, term)) in rows.iter().enumerate() {
        let mut m = metric("m");
        m.interval = Some("60s".into());
        m.failure_limit = fl.and_then(int);
        m.consecutive_success_limit = csl.and_then(int);
        m.inconclusive_limit = il.and_then(int);
        m.count = count.and_then(int);
        let r = counts(*f, *s, *inc, *cs, *c);
        assert_eq!(metric_phase(&m, &r, false), *live, "row {i}");
        assert_eq!(metric_phase(&m, &r, true), *term, "row {i} terminating");
    }
}

#[test]
fn metric_phase_edge_cases() {
    let m = metric("m");
    let mut r = counts(0, 0, 0, 0, 0);
    r.measurements.clear();
    assert_eq!(metric_phase(&m, &r, false), Pending);
    assert_eq!(metric_phase(&m, &r, true), Successful);
    r.measurements.push(measured(Running, None));
    assert_eq!(metric_phase(&m, &r, false), Running, "in flight");
    // five consecutive errors > default limit 4
    let mut r = counts(0, 0, 0, 0, 0);
    r.measurements = vec![measured(Error, Some(0))];
    r.consecutive_error = 5;
    assert_eq!(metric_phase(&m, &r, false), Error);
    r.consecutive_error = 4;
    assert_eq!(metric_phase(&m, &r, false), Running);
    // count reached (one measurement without interval)
    let mut r = counts(0, 1, 0, 1, 1);
    r.measurements = vec![measured(Successful, Some(0))];
    assert_eq!(metric_phase(&m, &r, false), Successful);
}

fn status_with(results: Vec<MetricResult>) -> AnalysisRunStatus {
    AnalysisRunStatus {
        metric_results: results,
        started_at: Some(t(0)),
        ..Default::default()
    }
}

fn result_with(name: &str, ms: Vec<Measurement>) -> MetricResult {
    let mut r = counts(0, 0, 0, 0, 0);
    r.name = name.into();
    r.measurements = ms;
    r
}

#[test]
fn tasks_follow_interval_count_delay_and_errors() {
    let mut m = metric("m");
    // first measurement at once
    assert_eq!(
        tasks(&[m.clone()], &status_with(vec![]), false, t(0).0).len(),
        1
    );
    // initialDelay holds the first one
    m.initial_delay = Some("30s".into());
    assert!(tasks(&[m.clone()], &status_with(vec![]), false, t(10).0).is_empty());
    assert_eq!(
        tasks(&[m.clone()], &status_with(vec![]), false, t(31).0).len(),
        1
    );
    m.initial_delay = None;
    // no interval, no count: one measurement only
    let mut r = result_with("m", vec![measured(Successful, Some(0))]);
    r.count = 1;
    assert!(tasks(&[m.clone()], &status_with(vec![r.clone()]), false, t(100).0).is_empty());
    // an interval: due strictly after finishedAt + interval
    m.interval = Some("60s".into());
    assert!(tasks(&[m.clone()], &status_with(vec![r.clone()]), false, t(60).0).is_empty());
    assert_eq!(
        tasks(&[m.clone()], &status_with(vec![r.clone()]), false, t(61).0).len(),
        1
    );
    // count reached
    m.count = int(1);
    assert!(tasks(&[m.clone()], &status_with(vec![r.clone()]), false, t(100).0).is_empty());
    m.count = None;
    // after an Error: 10s whatever the interval
    let err = result_with("m", vec![measured(Error, Some(0))]);
    assert_eq!(
        tasks(
            &[m.clone()],
            &status_with(vec![err.clone()]),
            false,
            t(11).0
        )
        .len(),
        1
    );
    // terminating: nothing new starts
    assert!(tasks(&[m.clone()], &status_with(vec![err]), true, t(11).0).is_empty());
    // an in-flight measurement resumes at resumeAt, or at once when terminating
    let mut inflight = measured(Running, None);
    inflight.resume_at = Some(t(50));
    let st = status_with(vec![result_with("m", vec![inflight])]);
    assert!(tasks(&[m.clone()], &st, false, t(10).0).is_empty());
    let due = tasks(&[m.clone()], &st, false, t(50).0);
    assert!(due[0].resume.is_some());
    assert_eq!(tasks(&[m.clone()], &st, true, t(10).0).len(), 1);
    // a completed metric is never measured again
    let mut done = result_with("m", vec![measured(Failed, Some(0))]);
    done.phase = Failed;
    assert!(tasks(&[m], &status_with(vec![done]), false, t(1000).0).is_empty());
}

#[test]
fn record_updates_counters_and_replaces_in_flight_measurements() {
    let m = metric("m");
    let mut st = status_with(vec![]);
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Error, None),
        false,
        t(1).0,
    );
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Error, None),
        false,
        t(2).0,
    );
    let r = result(&st, "m").unwrap();
    assert_eq!((r.error, r.consecutive_error, r.count), (2, 2, 0));
    assert_eq!(r.measurements[1].finished_at, Some(t(2)));
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Successful, None),
        false,
        t(3).0,
    );
    let r = result(&st, "m").unwrap();
    assert_eq!(
        (
            r.consecutive_error,
            r.successful,
            r.count,
            r.consecutive_success
        ),
        (0, 1, 1, 1)
    );
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Running, None),
        false,
        t(4).0,
    );
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Failed, None),
        true,
        t(5).0,
    );
    let r = result(&st, "m").unwrap();
    assert_eq!(
        r.measurements.len(),
        4,
        "the resumed measurement was replaced"
    );
    assert_eq!((r.failed, r.consecutive_success), (1, 0));
}

#[test]
fn run_phase_is_the_worst_metric_with_upstream_messages() {
    let mut fail = metric("fail");
    fail.interval = Some("10s".into());
    let ok = metric("ok");
    let metrics = [fail.clone(), ok.clone()];
    let mut st = status_with(vec![]);
    record(
        &mut st,
        &ok,
        false,
        None,
        measured(Successful, None),
        false,
        t(1).0,
    );
    let mut f = measured(Failed, None);
    f.message = None;
    record(&mut st, &fail, false, None, f, false, t(1).0);
    let (phase, message) = assess(&metrics, &mut st, &BTreeSet::new(), false, t(1).0);
    assert_eq!(phase, Failed);
    assert_eq!(
        message,
        "Metric \"fail\" assessed Failed due to failed (1) > failureLimit (0)"
    );
    let summary = st.run_summary.clone().unwrap();
    assert_eq!(
        (summary.count, summary.successful, summary.failed),
        (2, 1, 1)
    );
    assert!(is_terminating(false, &st), "fail fast");

    // The same failure in a dry-run metric does not count.
    let mut st = status_with(vec![]);
    record(
        &mut st,
        &ok,
        false,
        None,
        measured(Successful, None),
        false,
        t(1).0,
    );
    record(
        &mut st,
        &fail,
        true,
        None,
        measured(Failed, None),
        false,
        t(1).0,
    );
    let dry: BTreeSet<String> = ["fail".to_string()].into();
    let (phase, message) = assess(&metrics, &mut st, &dry, false, t(1).0);
    assert_eq!((phase, message.as_str()), (Successful, ""));
    assert_eq!(
        result(&st, "fail").unwrap().message.as_deref(),
        Some("Metric assessed Failed due to failed (1) > failureLimit (0)")
    );
    assert_eq!(st.dry_run_summary.clone().unwrap().failed, 1);
}

#[test]
fn errors_carry_the_provider_message_and_terminate_ends_the_run() {
    let m = metric("web");
    let mut st = status_with(vec![]);
    for i in 0..5 {
        let mut e = measured(Error, None);
        e.message = Some("connection refused".into());
        record(&mut st, &m, false, None, e, false, t(i).0);
    }
    let (phase, message) = assess(
        std::slice::from_ref(&m),
        &mut st,
        &BTreeSet::new(),
        false,
        t(5).0,
    );
    assert_eq!(phase, Error);
    assert_eq!(
        message,
        "Metric \"web\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): \"Error Message: connection refused\""
    );

    // terminate: metrics without a verdict count as Successful
    let mut m = metric("forever");
    m.interval = Some("10s".into());
    let mut st = status_with(vec![]);
    record(
        &mut st,
        &m,
        false,
        None,
        measured(Successful, None),
        false,
        t(1).0,
    );
    let (phase, _) = assess(
        std::slice::from_ref(&m),
        &mut st,
        &BTreeSet::new(),
        false,
        t(1).0,
    );
    assert_eq!(phase, Running);
    let (phase, message) = assess(
        std::slice::from_ref(&m),
        &mut st,
        &BTreeSet::new(),
        true,
        t(2).0,
    );
    assert_eq!((phase, message.as_str()), (Successful, "Run Terminated"));
}

#[test]
fn next_reconcile_is_the_earliest_due_measurement() {
    let mut a = metric("a");
    a.interval = Some("30s".into());
    let mut b = metric("b");
    b.initial_delay = Some("20s".into());
    let st = status_with(vec![result_with("a", vec![measured(Successful, Some(0))])]);
    assert_eq!(
        next_reconcile(&[a.clone(), b.clone()], &st, t(0).0),
        Some(t(20).0)
    );
    assert_eq!(next_reconcile(&[a.clone()], &st, t(0).0), Some(t(31).0));
    let st = status_with(vec![result_with("a", vec![measured(Error, Some(0))])]);
    assert_eq!(next_reconcile(&[a], &st, t(0).0), Some(t(11).0));
    let one = metric("one");
    let mut r = result_with("one", vec![measured(Successful, Some(0))]);
    r.count = 1;
    assert_eq!(next_reconcile(&[one], &status_with(vec![r]), t(0).0), None);
}

#[test]
fn validation_and_rules_use_upstream_messages() {
    let mut m = metric("m");
    m.count = int(3);
    assert_eq!(
        validate_metrics(std::slice::from_ref(&m)),
        Err("metrics[0]: interval must be specified when count > 1".into())
    );
    m.interval = Some("1s".into());
    m.failure_limit = int(-1);
    assert_eq!(
        validate_metrics(std::slice::from_ref(&m)),
        Err("metrics[0]: failureLimit and consecutiveSuccessLimit cannot both be disabled".into())
    );
    assert_eq!(validate_metrics(&[]), Err("no metrics specified".into()));
    let dup = [metric("x"), metric("x")];
    assert_eq!(
        validate_metrics(&dup),
        Err("metrics[1]: duplicate name 'x'".into())
    );
    let rules = [DryRun {
        metric_name: "nomatch".into(),
    }];
    assert_eq!(
        dry_run_metrics(&rules, &[metric("m")]),
        Err("dryRun[0]: Rule didn't match any metric name(s)".into())
    );
    let rules = [DryRun {
        metric_name: "^total-.*".into(),
    }];
    let names = dry_run_metrics(&rules, &[metric("total-5xx"), metric("latency")]).unwrap();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["total-5xx".to_string()]
    );
}

#[test]
fn measurements_are_trimmed_to_the_retention_limit() {
    let many: Vec<Measurement> = (0..15).map(|i| measured(Successful, Some(i))).collect();
    let mut st = status_with(vec![result_with("a", many.clone()), result_with("b", many)]);
    let keep: BTreeMap<String, usize> = [("b".to_string(), 3)].into();
    let dropped = trim_measurements(&mut st, &keep);
    assert_eq!(result(&st, "a").unwrap().measurements.len(), 10);
    assert_eq!(result(&st, "b").unwrap().measurements.len(), 3);
    assert_eq!(
        result(&st, "b").unwrap().measurements[0].finished_at,
        Some(t(12))
    );
    assert_eq!(dropped["a"].len(), 5);
}
