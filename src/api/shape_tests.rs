//! The JSON we write has upstream's shape: Go leaves out a field tagged
//! `omitempty` when it holds its zero value (0, false, "", an empty slice or
//! map, a nil pointer) and always writes the others. The expected JSON below
//! is written by hand from the tags of upstream's Go types at v1.9.1
//! (pkg/apis/rollouts/v1alpha1/types.go and analysis_types.go).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::analysis::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, Argument, Measurement, Metric,
    MetricProvider, MetricResult, OAuth2Config, PrometheusAuth, PrometheusMetric, RunSummary,
    Sigv4Config, WebMetric,
};
use super::common::MeasurementRetention;
use super::rollout::{
    BlueGreenStatus, CanaryStatus, PauseCondition, RolloutAnalysisRunStatus, RolloutCondition,
    RolloutStatus, TrafficWeights, WeightDestination,
};
use crate::controller::patch::merge_diff;

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serializes")
}

fn empty() -> Option<String> {
    Some(String::new())
}

fn time() -> Time {
    Time(Timestamp::from_second(1_700_000_000).expect("valid"))
}

/// Every field of the status at its zero value; strings upstream holds as
/// plain `string` are set to "" (we hold them as Option).
fn zero_rollout_status() -> RolloutStatus {
    RolloutStatus {
        current_pod_hash: empty(),
        current_step_hash: empty(),
        observed_generation: empty(),
        selector: empty(),
        stable_rs: empty(),
        message: empty(),
        workload_observed_generation: empty(),
        canary: CanaryStatus {
            current_experiment: empty(),
            stable_ping_pong: empty(),
            ..Default::default()
        },
        blue_green: BlueGreenStatus {
            preview_selector: empty(),
            active_selector: empty(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn rollout_status_leaves_out_what_upstream_omits() {
    // Only the two struct-valued fields remain: Go's omitempty never omits
    // a struct (`canary`, `blueGreen`); every other field is omitempty.
    assert_eq!(
        to_json(&zero_rollout_status()),
        json!({"canary": {}, "blueGreen": {}})
    );
}

#[test]
fn rollout_status_nested_types_have_upstreams_shape() {
    let mut s = zero_rollout_status();
    s.pause_conditions = vec![PauseCondition {
        reason: String::new(),
        start_time: time(),
    }];
    // RolloutCondition: type, status, both times, reason and message have
    // no omitempty: written even when empty.
    s.conditions = vec![RolloutCondition {
        r#type: "Available".into(),
        status: "True".into(),
        last_update_time: Some(time()),
        last_transition_time: Some(time()),
        reason: empty(),
        message: empty(),
    }];
    let run = RolloutAnalysisRunStatus {
        name: String::new(),
        status: String::new(),
        message: empty(),
    };
    s.canary.current_step_analysis_run_status = Some(run.clone());
    s.canary.current_background_analysis_run_status = Some(run.clone());
    let zero_dest = WeightDestination {
        weight: 0,
        service_name: empty(),
        pod_template_hash: empty(),
    };
    s.canary.weights = Some(TrafficWeights {
        canary: zero_dest.clone(),
        stable: zero_dest.clone(),
        additional: vec![],
        verified: None,
    });
    s.blue_green.pre_promotion_analysis_run_status = Some(run.clone());
    s.blue_green.post_promotion_analysis_run_status = Some(run);
    s.current_step_index = Some(0);
    s.collision_count = Some(0);
    let t = "2023-11-14T22:13:20Z";
    let run = json!({"name": "", "status": ""});
    assert_eq!(
        to_json(&s),
        json!({
            "pauseConditions": [{"reason": "", "startTime": t}],
            // *int32: written when set, even to 0
            "currentStepIndex": 0,
            "collisionCount": 0,
            "conditions": [{
                "type": "Available",
                "status": "True",
                "lastUpdateTime": t,
                "lastTransitionTime": t,
                "reason": "",
                "message": "",
            }],
            "canary": {
                "currentStepAnalysisRunStatus": run,
                "currentBackgroundAnalysisRunStatus": run,
                // weight has no omitempty
                "weights": {"canary": {"weight": 0}, "stable": {"weight": 0}},
            },
            "blueGreen": {
                "prePromotionAnalysisRunStatus": run,
                "postPromotionAnalysisRunStatus": run,
            },
        })
    );
}

#[test]
fn rollout_status_writes_every_field_that_is_set() {
    let s = RolloutStatus {
        abort: true,
        controller_pause: true,
        promote_full: true,
        replicas: 1,
        updated_replicas: 2,
        ready_replicas: 3,
        available_replicas: 4,
        hpa_replicas: 5,
        current_pod_hash: Some("abc".into()),
        stable_rs: Some("def".into()),
        message: Some("m".into()),
        ..Default::default()
    };
    assert_eq!(
        to_json(&s),
        json!({
            "abort": true,
            "controllerPause": true,
            "promoteFull": true,
            "replicas": 1,
            "updatedReplicas": 2,
            "readyReplicas": 3,
            "availableReplicas": 4,
            "HPAReplicas": 5,
            "currentPodHash": "abc",
            "stableRS": "def",
            "message": "m",
            "canary": {},
            "blueGreen": {},
        })
    );
}

fn zero_metric_result() -> MetricResult {
    MetricResult {
        name: "m".into(),
        phase: AnalysisPhase::Successful,
        measurements: vec![Measurement {
            phase: AnalysisPhase::Successful,
            message: empty(),
            started_at: None,
            finished_at: None,
            value: empty(),
            metadata: Some(BTreeMap::new()),
            resume_at: None,
        }],
        message: empty(),
        count: 0,
        successful: 0,
        failed: 0,
        inconclusive: 0,
        error: 0,
        consecutive_error: 0,
        consecutive_success: 0,
        dry_run: false,
        metadata: Some(BTreeMap::new()),
    }
}

#[test]
fn analysis_run_status_leaves_out_zero_counters_as_upstream() {
    let s = AnalysisRunStatus {
        phase: Some(AnalysisPhase::Running),
        message: empty(),
        metric_results: vec![zero_metric_result()],
        started_at: None,
        run_summary: Some(RunSummary::default()),
        dry_run_summary: Some(RunSummary::default()),
        completed_at: None,
    };
    assert_eq!(
        to_json(&s),
        json!({
            "phase": "Running",
            "metricResults": [{
                "name": "m",
                "phase": "Successful",
                "measurements": [{"phase": "Successful"}],
            }],
            "runSummary": {},
            "dryRunSummary": {},
        })
    );
}

#[test]
fn analysis_run_status_writes_counters_that_are_set() {
    let mut r = zero_metric_result();
    (r.count, r.successful, r.failed, r.inconclusive) = (1, 2, 3, 4);
    (r.error, r.consecutive_error, r.consecutive_success) = (5, 6, 7);
    r.dry_run = true;
    r.message = Some("m".into());
    r.metadata = Some(BTreeMap::from([("k".into(), "v".into())]));
    r.measurements[0].value = Some("0.9".into());
    let summary = RunSummary {
        count: 1,
        successful: 2,
        failed: 3,
        inconclusive: 4,
        error: 5,
    };
    let s = AnalysisRunStatus {
        phase: Some(AnalysisPhase::Failed),
        metric_results: vec![r],
        run_summary: Some(summary.clone()),
        ..Default::default()
    };
    let summary = json!({"count": 1, "successful": 2, "failed": 3, "inconclusive": 4, "error": 5});
    assert_eq!(
        to_json(&s),
        json!({
            "phase": "Failed",
            "metricResults": [{
                "name": "m",
                "phase": "Successful",
                "measurements": [{"phase": "Successful", "value": "0.9"}],
                "message": "m",
                "count": 1,
                "successful": 2,
                "failed": 3,
                "inconclusive": 4,
                "error": 5,
                "consecutiveError": 6,
                "consecutiveSuccess": 7,
                "dryRun": true,
                "metadata": {"k": "v"},
            }],
            "runSummary": summary,
        })
    );
}

#[test]
fn analysis_run_spec_we_create_has_upstreams_shape() {
    let spec = AnalysisRunSpec {
        metrics: vec![
            Metric {
                name: "web".into(),
                interval: empty(),
                initial_delay: empty(),
                success_condition: empty(),
                failure_condition: empty(),
                provider: MetricProvider {
                    web: Some(WebMetric {
                        method: empty(),
                        url: "http://x".into(),
                        body: empty(),
                        timeout_seconds: Some(0),
                        json_path: empty(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            Metric {
                name: "prom".into(),
                provider: MetricProvider {
                    prometheus: Some(PrometheusMetric {
                        address: empty(),
                        query: empty(),
                        // *int64: written when set
                        timeout: Some(0),
                        authentication: Some(PrometheusAuth {
                            sigv4: Some(Sigv4Config {
                                region: empty(),
                                profile: empty(),
                                role_arn: empty(),
                            }),
                            oauth2: Some(OAuth2Config {
                                token_url: empty(),
                                client_id: empty(),
                                client_secret: empty(),
                                scopes: vec![],
                            }),
                            basic_auth: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        ],
        // Argument.value is a *string upstream: "" is written.
        args: vec![Argument {
            name: "a".into(),
            value: empty(),
            value_from: None,
        }],
        measurement_retention: vec![MeasurementRetention {
            metric_name: "web".into(),
            limit: 0,
        }],
        ..Default::default()
    };
    assert_eq!(
        to_json(&spec),
        json!({
            "metrics": [
                {"name": "web", "provider": {"web": {"url": "http://x"}}},
                {"name": "prom", "provider": {"prometheus": {
                    "timeout": 0,
                    "authentication": {"sigv4": {}, "oauth2": {}},
                }}},
            ],
            "args": [{"name": "a", "value": ""}],
            "measurementRetention": [{"metricName": "web", "limit": 0}],
        })
    );
}

/// The status is written as a merge diff of the typed statuses: a counter
/// that drops to zero is removed on the server (null), and a status that
/// differs only in what is left out is not written at all.
#[test]
fn status_diffs_remove_fields_that_become_zero() {
    let before = RolloutStatus {
        replicas: 3,
        updated_replicas: 3,
        ready_replicas: 3,
        available_replicas: 3,
        hpa_replicas: 3,
        message: Some("m".into()),
        ..Default::default()
    };
    let after = RolloutStatus {
        message: empty(),
        ..Default::default()
    };
    assert_eq!(
        merge_diff(&to_json(&before), &to_json(&after)),
        Some(json!({
            "replicas": null,
            "updatedReplicas": null,
            "readyReplicas": null,
            "availableReplicas": null,
            "HPAReplicas": null,
            "message": null,
        }))
    );
    // "" read back as absent: nothing to write, so no write loop.
    let stored = RolloutStatus::default();
    assert_eq!(merge_diff(&to_json(&stored), &to_json(&after)), None);

    let mut failed = zero_metric_result();
    (failed.count, failed.failed) = (1, 1);
    let run = |r: MetricResult, s: RunSummary| AnalysisRunStatus {
        phase: Some(AnalysisPhase::Running),
        metric_results: vec![r],
        run_summary: Some(s),
        ..Default::default()
    };
    let before = run(
        failed.clone(),
        RunSummary {
            count: 1,
            failed: 1,
            ..Default::default()
        },
    );
    let mut retried = failed;
    retried.failed = 0;
    let after = run(
        retried,
        RunSummary {
            count: 1,
            ..Default::default()
        },
    );
    assert_eq!(
        merge_diff(&to_json(&before), &to_json(&after)),
        Some(json!({
            // a list is replaced whole, as upstream's merge patch does
            "metricResults": [{
                "name": "m",
                "phase": "Successful",
                "measurements": [{"phase": "Successful"}],
                "count": 1,
            }],
            "runSummary": {"failed": null},
        }))
    );
    assert_eq!(merge_diff(&to_json(&after), &to_json(&after)), None);
}

/// Upstream creates a run with `status.phase: ""` (the field has no
/// omitempty): it reads as Pending, the run not started; a phase no one
/// writes is refused by name.
#[test]
fn an_empty_analysis_phase_reads_as_pending() {
    let status: AnalysisRunStatus = serde_json::from_value(json!({"phase": ""})).expect("reads");
    assert_eq!(status.phase, Some(AnalysisPhase::Pending));
    let status: AnalysisRunStatus =
        serde_json::from_value(json!({"phase": "Running"})).expect("reads");
    assert_eq!(status.phase, Some(AnalysisPhase::Running));
    let err = serde_json::from_value::<AnalysisRunStatus>(json!({"phase": "Sideways"}))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown variant `Sideways`"), "{err}");
}
