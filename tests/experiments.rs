//! Experiments are served (upstream's tools list them) but not run: an
//! Experiment that has not finished gets phase Error with a message that
//! says so, and a Warning event; one that finished is left alone.

mod support;

use std::time::Duration;

use anyhow::{Result, ensure};
use rollouts::api::experiment::Experiment;
use rollouts::experiment::{NOT_IMPLEMENTED, NOT_IMPLEMENTED_REASON};
use support::{TestEnv, wait_for};

/// An Experiment shaped like upstream's examples.
const EXPERIMENT: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Experiment
metadata: {name: canary-check}
spec:
  duration: 1m
  progressDeadlineSeconds: 30
  templates:
  - name: baseline
    replicas: 1
    selector: {matchLabels: {app: web, role: baseline}}
    template:
      metadata: {labels: {app: web, role: baseline}}
      spec: {containers: [{name: app, image: "nginx:1"}]}
  analyses:
  - name: smoke
    templateName: smoke
"#;

#[tokio::test]
async fn an_experiment_is_reported_as_not_run() -> Result<()> {
    let env = TestEnv::new("experiments").await?;
    env.apply_yaml(EXPERIMENT).await?;
    let api = env.api::<Experiment>();
    let exp = wait_for(
        "Experiment canary-check marked as not run",
        Duration::from_secs(30),
        || async {
            let exp = api.get("canary-check").await?;
            let status = exp.status.clone().unwrap_or_default();
            Ok(if status.phase.as_deref() == Some("Error") {
                Ok(exp)
            } else {
                Err(format!("status {status:?}"))
            })
        },
    )
    .await?;
    let status = exp.status.clone().unwrap_or_default();
    ensure!(
        status.message.as_deref() == Some(NOT_IMPLEMENTED),
        "{status:?}"
    );
    // The spec is kept as written (upstream's fields are not pruned).
    ensure!(
        exp.spec.fields.get("duration").and_then(|d| d.as_str()) == Some("1m"),
        "{:?}",
        exp.spec
    );
    ensure!(
        exp.spec
            .fields
            .get("templates")
            .is_some_and(|t| t.is_array())
    );
    let events = env.events("canary-check").await?;
    ensure!(
        events
            .iter()
            .any(|(kind, reason, _)| kind == "Warning" && reason == NOT_IMPLEMENTED_REASON),
        "{events:?}"
    );

    // One that finished under upstream's controller keeps its status: once
    // Successful (whether or not ours marked it first), it stays so.
    env.apply_yaml(&EXPERIMENT.replace("canary-check", "done"))
        .await?;
    api.patch(
        "done",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "Successful"}})),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let phase = api.get("done").await?.status.and_then(|s| s.phase);
    ensure!(phase.as_deref() == Some("Successful"), "phase {phase:?}");
    env.cleanup().await
}
