//! Analysis gates of a canary on a real control plane, with the templates
//! of analysis-examples/: a real HTTP server for web checks, Debian's
//! Prometheus scraping an endpoint the test serves, and Jobs that kwok
//! completes or fails.

mod support;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use rollouts::api::analysis::{AnalysisPhase, AnalysisRun};
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::prometheus::Prometheus;
use support::{TestEnv, example, healthy, patch_status, set_image, wait_rollout};

/// Deploys Rollout `web` (3 replicas) with `strategy`, waits for the first
/// deploy, then updates the image so the canary starts.
async fn rollout(env: &TestEnv, strategy: &str) -> Result<RolloutStatus> {
    let ro = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
{strategy}"#
    );
    env.apply_yaml(&ro).await?;
    let first = wait_rollout(env, "web", "Healthy", healthy).await?;
    set_image(env, "nginx:2").await?;
    Ok(first)
}

fn run_names(runs: &[AnalysisRun]) -> Vec<(String, Option<AnalysisPhase>)> {
    runs.iter()
        .map(|r| {
            (
                r.metadata.name.clone().unwrap_or_default(),
                r.status.as_ref().and_then(|s| s.phase),
            )
        })
        .collect()
}

fn progressing_message(s: &RolloutStatus) -> String {
    s.conditions
        .iter()
        .find(|c| c.r#type == "Progressing")
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn passing_web_and_prometheus_checks_promote_the_canary() -> Result<()> {
    let env = TestEnv::new("canary-analysis-pass").await?;
    let web = TestServer::start(vec![Reply::json(
        200,
        json!({"data": {"successRate": 0.99}}),
    )])
    .await?;
    let app = TestServer::start(vec![Reply::text(
        200,
        "http_requests_total{service=\"web\",code=\"200\"} 100\n",
    )])
    .await?;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", app.port())).await?;
    env.apply_yaml(&example(
        "web-success-rate.yaml",
        &[("interval: 10s", "interval: 1s")],
    )?)
    .await?;
    env.apply_yaml(&example(
        "prometheus-error-rate.yaml",
        &[("interval: 1m", "interval: 1s"), ("count: 5", "count: 2")],
    )?)
    .await?;
    let strategy = format!(
        r#"    canary:
      analysis:
        templates: [{{templateName: prometheus-error-rate, clusterScope: true}}]
        args:
        - {{name: service-name, value: web}}
        - {{name: prometheus-address, value: "{}"}}
      steps:
      - setWeight: 34
      - analysis:
          templates: [{{templateName: web-success-rate}}]
          args: [{{name: service-url, value: "{}"}}]
      - setWeight: 67
"#,
        prometheus.url(),
        web.url()
    );
    let first = rollout(&env, &strategy).await?;
    let s = wait_rollout(&env, "web", "Healthy on the new template", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    assert_eq!(s.current_step_index, Some(3));
    let hash = s.stable_rs.clone().unwrap_or_default();
    let runs = env
        .api::<AnalysisRun>()
        .list(&Default::default())
        .await?
        .items;
    let names = run_names(&runs);
    let step = format!("web-{hash}-2-1");
    let background = format!("web-{hash}-2");
    assert!(
        names.contains(&(step.clone(), Some(AnalysisPhase::Successful))),
        "{names:?}"
    );
    let step_run = runs
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&step))
        .unwrap();
    let labels = step_run.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("rollout-type").map(String::as_str), Some("Step"));
    assert_eq!(labels.get("step-index").map(String::as_str), Some("1"));
    assert_eq!(labels.get("rollouts-pod-template-hash"), Some(&hash));
    assert!(
        web.requests().len() >= 3,
        "the web check ran its 3 measurements"
    );
    // The background run measured Prometheus (empty error series: passes)
    // and ended with the rollout.
    let bg = runs
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&background))
        .unwrap();
    let bg_status = bg.status.clone().unwrap_or_default();
    assert!(
        bg.spec.terminate || bg_status.phase == Some(AnalysisPhase::Successful),
        "{bg_status:?}"
    );
    assert!(
        bg_status.metric_results[0]
            .measurements
            .iter()
            .all(|m| m.phase == AnalysisPhase::Successful && m.value.as_deref() == Some("[]")),
        "{bg_status:?}"
    );
    assert_eq!(s.canary.current_step_analysis_run_status, None);
    let events = env.events("web").await?;
    assert!(
        events.iter().any(|(_, r, m)| r == "AnalysisRunSuccessful"
            && m == &format!(
                "Step Analysis Run '{step}' Status New: 'Successful' Previous: 'Running'"
            )),
        "{events:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn a_failing_job_aborts_and_rolls_back() -> Result<()> {
    let env = TestEnv::new("canary-analysis-job").await?;
    env.apply_yaml(&example(
        "job-smoke-test.yaml",
        &[(
            "          template:\n            spec:",
            "          template:\n            metadata: {labels: {kwok-fail: \"true\"}}\n            spec:",
        )],
    )?)
    .await?;
    let strategy = r#"    canary:
      steps:
      - setWeight: 34
      - analysis:
          templates: [{templateName: job-smoke-test}]
          args:
          - name: canary-hash
            valueFrom: {podTemplateHashValue: Latest}
      - setWeight: 67
"#;
    let first = rollout(&env, strategy).await?;
    let s = wait_rollout(&env, "web", "aborted", |s| {
        s.abort && s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    let message = progressing_message(&s);
    assert!(
        message.contains(
            r#"Step-based analysis phase error/failed: Metric "smoke-test" assessed Failed due to failed (1) > failureLimit (0)"#
        ),
        "{message}"
    );
    // Rolled back: the canary has no pods, stable is at full size.
    let stable = first.stable_rs.clone().unwrap_or_default();
    let canary = s.current_pod_hash.clone().unwrap_or_default();
    support::wait_for(
        "canary scaled to 0",
        std::time::Duration::from_secs(60),
        || async {
            let rss = env
                .api::<ReplicaSet>()
                .list(&Default::default())
                .await?
                .items;
            let replicas = |h: &str| {
                rss.iter()
                    .find(|r| r.metadata.name.as_deref() == Some(&format!("web-{h}")))
                    .and_then(|r| r.spec.as_ref()?.replicas)
            };
            Ok(match (replicas(&canary), replicas(&stable)) {
                (Some(0), Some(3)) => Ok(()),
                other => Err(format!("canary/stable replicas {other:?}")),
            })
        },
    )
    .await?;
    // The run's Job ran the template with the new pod hash as its argument.
    let runs = env
        .api::<AnalysisRun>()
        .list(&Default::default())
        .await?
        .items;
    let run = &runs[0];
    assert_eq!(run.spec.args[0].value.as_deref(), Some(canary.as_str()));
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(AnalysisPhase::Failed)
    );
    let events = env.events("web").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "RolloutAborted" && m.contains("smoke-test")),
        "{events:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn an_inconclusive_result_pauses_until_promoted() -> Result<()> {
    let env = TestEnv::new("canary-analysis-inconclusive").await?;
    let web = TestServer::start(vec![Reply::json(
        200,
        json!({"data": {"successRate": 0.9}}),
    )])
    .await?;
    // Neither condition holds for 0.9: the measurement is Inconclusive.
    env.apply_yaml(&example(
        "web-success-rate.yaml",
        &[(
            "    successCondition: result.successRate >= 0.95\n",
            "    successCondition: result.successRate >= 0.95\n    failureCondition: result.successRate < 0.5\n",
        )],
    )?)
    .await?;
    let strategy = format!(
        r#"    canary:
      steps:
      - setWeight: 34
      - analysis:
          templates: [{{templateName: web-success-rate}}]
          args: [{{name: service-url, value: "{}"}}]
      - setWeight: 67
"#,
        web.url()
    );
    let first = rollout(&env, &strategy).await?;
    let s = wait_rollout(&env, "web", "paused on the inconclusive run", |s| {
        s.pause_conditions
            .iter()
            .any(|c| c.reason == "InconclusiveAnalysisRun")
    })
    .await?;
    assert_eq!(s.phase, Some(RolloutPhase::Paused));
    assert!(s.controller_pause);
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(
        s.canary
            .current_step_analysis_run_status
            .as_ref()
            .map(|r| r.status.as_str()),
        Some("Inconclusive")
    );
    // kubectl rollouts promote, as upstream's CLI patches it.
    patch_status(
        &env,
        "web",
        json!({"pauseConditions": null, "controllerPause": false, "currentStepIndex": 2}),
    )
    .await?;
    wait_rollout(&env, "web", "Healthy after promote", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    env.cleanup().await
}

#[tokio::test]
async fn prometheus_down_errors_abort_after_the_consecutive_error_limit() -> Result<()> {
    let env = TestEnv::new("canary-analysis-prom-down").await?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    env.apply_yaml(&example(
        "prometheus-success-rate.yaml",
        &[(
            "    failureLimit: 1\n",
            "    failureLimit: 1\n    consecutiveErrorLimit: 1\n",
        )],
    )?)
    .await?;
    let strategy = format!(
        r#"    canary:
      analysis:
        templates: [{{templateName: prometheus-success-rate}}]
        args:
        - {{name: service-name, value: web}}
        - {{name: prometheus-address, value: "http://127.0.0.1:{closed}"}}
      steps:
      - setWeight: 34
      - pause: {{}}
"#
    );
    rollout(&env, &strategy).await?;
    let s = wait_rollout(&env, "web", "aborted", |s| s.abort).await?;
    let message = progressing_message(&s);
    assert!(
        message.contains(
            r#"Background analysis phase error/failed: Metric "success-rate" assessed Error due to consecutiveErrors (2) > consecutiveErrorLimit (1)"#
        ),
        "{message}"
    );
    let runs = env
        .api::<AnalysisRun>()
        .list(&Default::default())
        .await?
        .items;
    let result = &runs[0].status.as_ref().unwrap().metric_results[0];
    assert_eq!((result.error, result.consecutive_error), (2, 2));
    assert!(
        result.measurements[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("Connection refused"),
        "{:?}",
        result.measurements[0]
    );
    env.cleanup().await
}

/// Issue 26: background analysis turning Inconclusive during a
/// `pause: {duration}` step pauses the rollout, and it stays paused after
/// the pause's time (upstream's behaviour) until someone promotes. Argo
/// CD's resume, which clears only `pauseConditions`, then starts one new
/// run: when that one is Inconclusive too the rollout pauses again, and
/// the controller never starts runs in a loop.
#[tokio::test]
async fn an_inconclusive_run_holds_a_timed_pause_and_a_resume_starts_one_run() -> Result<()> {
    let env = TestEnv::new("canary-analysis-inconclusive-timed").await?;
    let reply = |rate: f64| Reply::json(200, json!({"data": {"successRate": rate}}));
    // 0.9: neither condition holds, the measurement is Inconclusive.
    let web = TestServer::start(vec![reply(0.9)]).await?;
    env.apply_yaml(&example(
        "web-success-rate.yaml",
        &[
            (
                "    successCondition: result.successRate >= 0.95\n",
                "    successCondition: result.successRate >= 0.95\n    failureCondition: result.successRate < 0.5\n",
            ),
            ("interval: 10s", "interval: 1s"),
            ("count: 3", "count: 1"),
        ],
    )?)
    .await?;
    // The background run starts with the timed pause (step 1).
    let strategy = format!(
        r#"    canary:
      analysis:
        templates: [{{templateName: web-success-rate}}]
        args: [{{name: service-url, value: "{}"}}]
        startingStep: 1
      steps:
      - setWeight: 34
      - pause: {{duration: 8s}}
      - setWeight: 67
      - pause: {{}}
"#,
        web.url()
    );
    let first = rollout(&env, &strategy).await?;
    let s = wait_rollout(&env, "web", "paused on the inconclusive run", |s| {
        s.pause_conditions
            .iter()
            .any(|c| c.reason == "InconclusiveAnalysisRun")
    })
    .await?;
    assert_eq!(s.phase, Some(RolloutPhase::Paused));
    // Well past the pause's 8 s: still paused, not promoted.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let s = wait_rollout(&env, "web", "still paused", |_| true).await?;
    assert_eq!(s.phase, Some(RolloutPhase::Paused), "{s:?}");
    assert_eq!(s.message.as_deref(), Some("InconclusiveAnalysisRun"));
    assert_eq!(s.stable_rs, first.stable_rs, "not promoted");
    let runs_api = env.api::<AnalysisRun>();
    let before = runs_api.list(&Default::default()).await?.items.len();
    assert_eq!(before, 1);

    // Argo CD's resume: pauseConditions cleared, nothing else.
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let s = wait_rollout(&env, "web", "paused again by a new run", |s| {
        s.pause_conditions
            .iter()
            .any(|c| c.reason == "InconclusiveAnalysisRun")
            && s.canary
                .current_background_analysis_run_status
                .as_ref()
                .is_some_and(|r| r.status == "Inconclusive")
            && s.controller_pause
    })
    .await?;
    assert_eq!(s.phase, Some(RolloutPhase::Paused));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let after = runs_api.list(&Default::default()).await?.items;
    assert_eq!(
        after.len(),
        2,
        "one run per resume: {:?}",
        run_names(&after)
    );
    // A healthy check and another resume take it on to the last step, an
    // indefinite pause; a promotion there finishes the update.
    web.set_replies(vec![reply(0.99)]);
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    wait_rollout(&env, "web", "the last pause", |s| {
        s.current_step_index == Some(3)
            && s.pause_conditions
                .iter()
                .any(|c| c.reason == "CanaryPauseStep")
    })
    .await?;
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    wait_rollout(&env, "web", "Healthy on the new template", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    let after = runs_api.list(&Default::default()).await?.items;
    assert_eq!(after.len(), 3, "{:?}", run_names(&after));
    env.cleanup().await
}
