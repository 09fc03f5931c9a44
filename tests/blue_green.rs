//! The blue-green strategy on a real control plane: the preview and active
//! Services, the pause, promotion, the scale-down delay, abort, and pre- and
//! post-promotion analysis (a Job that kwok completes or fails, a web check
//! against a server the test runs).

mod support;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::{TestEnv, example, healthy, patch_status, paused, set_image, wait_for, wait_rollout};

/// Rollout `web` with Services `web-active` and `web-preview`, deployed
/// once, then updated to nginx:2. Returns the first deploy's status.
async fn deploy(env: &TestEnv, replicas: i32, blue_green: &str) -> Result<RolloutStatus> {
    let yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web-active}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-preview}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
    blueGreen:
      activeService: web-active
      previewService: web-preview
{blue_green}"#
    );
    env.apply_yaml(&yaml).await?;
    let first = wait_rollout(env, "web", "the first deploy", healthy).await?;
    // The first deploy switches both Services at once.
    assert_eq!(selector(env, "web-active").await?, first.stable_rs);
    assert_eq!(selector(env, "web-preview").await?, first.stable_rs);
    set_image(env, "nginx:2").await?;
    Ok(first)
}

async fn selector(env: &TestEnv, service: &str) -> Result<Option<String>> {
    let svc = env.api::<Service>().get(service).await?;
    Ok(svc
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("rollouts-pod-template-hash").cloned()))
}

/// The ReplicaSet of `hash`: (spec.replicas, available, annotations).
async fn replica_set(env: &TestEnv, hash: &str) -> Result<(i32, i32, Vec<String>)> {
    let rs = env.api::<ReplicaSet>().get(&format!("web-{hash}")).await?;
    let spec = rs.spec.and_then(|s| s.replicas).unwrap_or(0);
    let available = rs.status.and_then(|s| s.available_replicas).unwrap_or(0);
    let annotations = rs
        .metadata
        .annotations
        .unwrap_or_default()
        .into_keys()
        .collect();
    Ok((spec, available, annotations))
}

/// Waits until the ReplicaSet of `hash` is scaled to 0.
async fn wait_scaled_down(env: &TestEnv, hash: &str, what: &str) -> Result<()> {
    wait_for(&format!("{what} at 0"), Duration::from_secs(30), || async {
        let (spec, _, _) = replica_set(env, hash).await?;
        Ok(if spec == 0 {
            Ok(())
        } else {
            Err(format!("spec {spec}"))
        })
    })
    .await
}

fn hashes(first: &RolloutStatus, now: &RolloutStatus) -> (String, String) {
    (
        first.stable_rs.clone().unwrap_or_default(),
        now.current_pod_hash.clone().unwrap_or_default(),
    )
}

fn progressing_message(s: &RolloutStatus) -> String {
    s.conditions
        .iter()
        .find(|c| c.r#type == "Progressing")
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn manual_promotion_switches_active_then_scales_old_down_after_delay() -> Result<()> {
    let env = TestEnv::new("bg-manual").await?;
    let first = deploy(
        &env,
        2,
        r#"      autoPromotionEnabled: false
      scaleDownDelaySeconds: 3
      previewMetadata: {labels: {role: preview}}
      activeMetadata: {labels: {role: active}, annotations: {tier: live}}
"#,
    )
    .await?;
    let s = wait_rollout(&env, "web", "BlueGreenPause", |s| {
        paused(s)
            && s.pause_conditions
                .iter()
                .any(|c| c.reason == "BlueGreenPause")
    })
    .await?;
    let (old, new) = hashes(&first, &s);
    assert_ne!(old, new);
    assert_eq!(s.message.as_deref(), Some("BlueGreenPause"));
    // Four pods: the preview has the new ones, the active the old ones.
    assert_eq!(replica_set(&env, &new).await?.0, 2);
    assert_eq!(replica_set(&env, &old).await?.0, 2);
    assert_eq!(
        selector(&env, "web-preview").await?.as_deref(),
        Some(new.as_str())
    );
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(s.blue_green.active_selector.as_deref(), Some(old.as_str()));
    assert_eq!(s.blue_green.preview_selector.as_deref(), Some(new.as_str()));
    // Pods carry the metadata of their role.
    assert_eq!(pod_roles(&env, &new).await?, vec!["preview"; 2]);
    assert_eq!(pod_roles(&env, &old).await?, vec!["active"; 2]);

    // Promote as `kubectl argo rollouts promote` does.
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let s = wait_rollout(&env, "web", "Healthy on the new pods", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(new.as_str())
    })
    .await?;
    assert_eq!(s.blue_green.active_selector.as_deref(), Some(new.as_str()));
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(new.as_str())
    );
    // The old pods stay for scaleDownDelaySeconds, marked with the deadline.
    wait_for(
        "the old ReplicaSet's deadline",
        Duration::from_secs(10),
        || async {
            let (spec, _, annotations) = replica_set(&env, &old).await?;
            Ok(
                if annotations.iter().any(|a| a == "scale-down-deadline") && spec == 2 {
                    Ok(())
                } else {
                    Err(format!("spec {spec}, annotations {annotations:?}"))
                },
            )
        },
    )
    .await?;
    wait_scaled_down(&env, &old, "the old ReplicaSet").await?;
    let s = wait_rollout(&env, "web", "Healthy", healthy).await?;
    assert_eq!(s.available_replicas, 2);
    // The running new pods were relabelled when they became active.
    wait_for(
        "the new pods relabelled active",
        Duration::from_secs(10),
        || async {
            let roles = pod_roles(&env, &new).await?;
            Ok(if roles == vec!["active"; 2] {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            })
        },
    )
    .await?;
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("rollouts-pod-template-hash={new}")))
        .await?;
    for pod in pods.items {
        let annotations = pod.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.get("tier").map(String::as_str), Some("live"));
    }
    env.cleanup().await
}

/// The `role` label of each pod of `hash` (empty when missing).
async fn pod_roles(env: &TestEnv, hash: &str) -> Result<Vec<String>> {
    let selector = format!("rollouts-pod-template-hash={hash}");
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("role"))
                .cloned()
                .unwrap_or_default()
        })
        .collect())
}

#[tokio::test]
async fn preview_replica_count_runs_one_pod_until_promotion() -> Result<()> {
    let env = TestEnv::new("bg-preview-count").await?;
    let first = deploy(
        &env,
        3,
        "      autoPromotionEnabled: false\n      previewReplicaCount: 1\n      scaleDownDelaySeconds: 1\n",
    )
    .await?;
    let s = wait_rollout(&env, "web", "BlueGreenPause", paused).await?;
    let (old, new) = hashes(&first, &s);
    let (spec, available, _) = replica_set(&env, &new).await?;
    assert_eq!((spec, available), (1, 1), "one preview pod");
    assert_eq!(replica_set(&env, &old).await?.0, 3);
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(old.as_str())
    );

    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let s = wait_rollout(&env, "web", "Healthy on the new pods", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(new.as_str())
    })
    .await?;
    let (spec, available, _) = replica_set(&env, &new).await?;
    assert_eq!((spec, available), (3, 3), "full size before the switch");
    assert_eq!(s.blue_green.active_selector.as_deref(), Some(new.as_str()));
    env.cleanup().await
}

#[tokio::test]
async fn auto_promotion_seconds_promotes_by_itself() -> Result<()> {
    let env = TestEnv::new("bg-auto").await?;
    let first = deploy(&env, 2, "      autoPromotionSeconds: 3\n").await?;
    wait_rollout(&env, "web", "BlueGreenPause", paused).await?;
    let s = wait_rollout(&env, "web", "promoted without help", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    let (_, new) = hashes(&first, &s);
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(new.as_str())
    );
    let completed = env.events("web").await?;
    assert!(
        completed
            .iter()
            .any(|(_, reason, msg)| reason == "RolloutCompleted"
                && msg.ends_with("Completed blue-green update")),
        "{completed:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn failing_pre_promotion_analysis_keeps_active_then_retry_succeeds() -> Result<()> {
    let env = TestEnv::new("bg-pre").await?;
    let failing = example(
        "job-smoke-test.yaml",
        &[(
            "          template:\n            spec:",
            "          template:\n            metadata: {labels: {kwok-fail: \"true\"}}\n            spec:",
        )],
    )?;
    env.apply_yaml(&failing).await?;
    let first = deploy(
        &env,
        2,
        r#"      prePromotionAnalysis:
        templates: [{templateName: job-smoke-test}]
        args:
        - name: canary-hash
          valueFrom: {podTemplateHashValue: Latest}
"#,
    )
    .await?;
    let s = wait_rollout(&env, "web", "aborted", |s| {
        s.abort && s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    let (old, new) = hashes(&first, &s);
    let message = progressing_message(&s);
    assert!(
        message.contains("Blue/green pre-promotion analysis phase error/failed: Metric \"smoke-test\" assessed Failed"),
        "{message}"
    );
    let run = s
        .blue_green
        .pre_promotion_analysis_run_status
        .clone()
        .unwrap_or_default();
    assert_eq!(run.name, format!("web-{new}-2-pre"));
    assert_eq!(run.status, "Failed");
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(s.stable_rs.as_deref(), Some(old.as_str()));

    // Fix the check (the Job passes now) and retry.
    env.apply_yaml(&example("job-smoke-test.yaml", &[])?)
        .await?;
    patch_status(&env, "web", json!({"abort": false})).await?;
    let s = wait_rollout(&env, "web", "Healthy after the retry", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(new.as_str())
    })
    .await?;
    let run = s
        .blue_green
        .pre_promotion_analysis_run_status
        .clone()
        .unwrap_or_default();
    assert_eq!(run.name, format!("web-{new}-2-pre.1"));
    assert_eq!(run.status, "Successful");
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(new.as_str())
    );
    env.cleanup().await
}

#[tokio::test]
async fn failing_post_promotion_analysis_switches_active_back() -> Result<()> {
    let env = TestEnv::new("bg-post").await?;
    let web = TestServer::start(vec![Reply::json(
        200,
        json!({"data": {"successRate": 0.5}}),
    )])
    .await?;
    env.apply_yaml(&example(
        "web-success-rate.yaml",
        &[("interval: 10s", "interval: 1s")],
    )?)
    .await?;
    let first = deploy(
        &env,
        2,
        &format!(
            r#"      postPromotionAnalysis:
        templates: [{{templateName: web-success-rate}}]
        args: [{{name: service-url, value: "{}"}}]
"#,
            web.url()
        ),
    )
    .await?;
    // Promoted (no pause), the post-promotion analysis starts on the new pods.
    let s = wait_rollout(&env, "web", "post-promotion analysis running", |s| {
        s.blue_green.post_promotion_analysis_run_status.is_some()
    })
    .await?;
    let (old, new) = hashes(&first, &s);
    assert_eq!(s.blue_green.active_selector.as_deref(), Some(new.as_str()));
    let s = wait_rollout(&env, "web", "aborted", |s| {
        s.abort && s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    assert!(
        progressing_message(&s).contains("Blue/green post-promotion analysis phase error/failed"),
        "{}",
        progressing_message(&s)
    );
    let back = wait_for(
        "active back on the old pods",
        Duration::from_secs(20),
        || async {
            let active = selector(&env, "web-active").await?;
            Ok(if active.as_deref() == Some(old.as_str()) {
                Ok(active)
            } else {
                Err(format!("{active:?}"))
            })
        },
    )
    .await?;
    assert_eq!(back.as_deref(), Some(old.as_str()));
    let s = wait_rollout(&env, "web", "status shows the switch back", |s| {
        s.blue_green.active_selector.as_deref() == Some(old.as_str())
    })
    .await?;
    assert_eq!(
        s.stable_rs.as_deref(),
        Some(old.as_str()),
        "never became stable"
    );
    assert_eq!(
        replica_set(&env, &old).await?.0,
        2,
        "old pods kept throughout"
    );
    env.cleanup().await
}

#[tokio::test]
async fn abort_while_paused_scales_preview_down_and_keeps_active() -> Result<()> {
    let env = TestEnv::new("bg-abort").await?;
    let first = deploy(
        &env,
        2,
        "      autoPromotionEnabled: false\n      abortScaleDownDelaySeconds: 2\n",
    )
    .await?;
    let s = wait_rollout(&env, "web", "BlueGreenPause", paused).await?;
    let (old, new) = hashes(&first, &s);
    patch_status(&env, "web", json!({"abort": true})).await?;
    let s = wait_rollout(&env, "web", "Degraded", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.starts_with("RolloutAborted: Rollout aborted update to revision 2")),
        "{:?}",
        s.message
    );
    wait_scaled_down(&env, &new, "the preview ReplicaSet").await?;
    assert_eq!(
        selector(&env, "web-active").await?.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(replica_set(&env, &old).await?.0, 2);
    env.cleanup().await
}

/// Issue 26: switching a Rollout from blueGreen to canary hands back the
/// Services it no longer names (no hash selector, no managed-by
/// annotation), as upstream: the old active Service then selects the
/// app's pods, canary ones included, instead of staying pinned to one
/// ReplicaSet. A fast rollback within scaleDownDelaySeconds runs no
/// pre-promotion analysis.
#[tokio::test]
async fn a_switch_to_canary_hands_the_blue_green_services_back() -> Result<()> {
    let env = TestEnv::new("bg-to-canary").await?;
    let first = deploy(&env, 2, "      autoPromotionEnabled: true\n").await?;
    let second = wait_rollout(&env, "web", "nginx:2 promoted", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    let patch = json!({"spec": {"strategy": {"blueGreen": null, "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}});
    env.api::<rollouts::api::Rollout>()
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await?;
    for name in ["web-active", "web-preview"] {
        handed_back(&env, name).await?;
    }
    let svc = env.api::<Service>().get("web-active").await?;
    assert_eq!(
        svc.spec.and_then(|s| s.selector),
        Some([("app".to_string(), "web".to_string())].into()),
        "the user's own selector is kept"
    );
    let s = wait_rollout(&env, "web", "still Healthy", healthy).await?;
    assert_eq!(s.stable_rs, second.stable_rs);
    env.cleanup().await
}

/// As upstream, deleting a Rollout hands its Services back: they select
/// the app's pods again, not the hash of ReplicaSets about to go.
#[tokio::test]
async fn deleting_a_rollout_hands_its_services_back() -> Result<()> {
    let env = TestEnv::new("bg-delete").await?;
    deploy(&env, 2, "      autoPromotionEnabled: true\n").await?;
    let svc = env.api::<Service>().get("web-active").await?;
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    assert!(
        selector.contains_key("rollouts-pod-template-hash"),
        "{selector:?}"
    );
    env.api::<rollouts::api::Rollout>()
        .delete("web", &kube::api::DeleteParams::default())
        .await?;
    for name in ["web-active", "web-preview"] {
        handed_back(&env, name).await?;
    }
    env.cleanup().await
}

/// Waits until the Service has neither our hash selector nor our
/// managed-by annotation.
async fn handed_back(env: &TestEnv, name: &str) -> Result<()> {
    wait_for(
        &format!("Service {name} handed back"),
        Duration::from_secs(30),
        || async {
            let svc = env.api::<Service>().get(name).await?;
            let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
            let managed = svc
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("argo-rollouts.argoproj.io/managed-by-rollouts");
            Ok(
                (!selector.contains_key("rollouts-pod-template-hash") && !managed)
                    .then_some(())
                    .ok_or(format!("selector {selector:?}, managed {managed}")),
            )
        },
    )
    .await
}

#[tokio::test]
async fn a_fast_rollback_runs_no_pre_promotion_analysis() -> Result<()> {
    let env = TestEnv::new("bg-fast-rollback").await?;
    let web = TestServer::start(vec![Reply::json(
        200,
        json!({"data": {"successRate": 0.99}}),
    )])
    .await?;
    env.apply_yaml(&example(
        "web-success-rate.yaml",
        &[("interval: 10s", "interval: 1s"), ("count: 3", "count: 1")],
    )?)
    .await?;
    let first = deploy(
        &env,
        2,
        &format!(
            "      scaleDownDelaySeconds: 60\n      prePromotionAnalysis:\n        templates: [{{templateName: web-success-rate}}]\n        args: [{{name: service-url, value: \"{}\"}}]\n",
            web.url()
        ),
    )
    .await?;
    let second = wait_rollout(&env, "web", "nginx:2 promoted after its analysis", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    let runs = env.api::<rollouts::api::analysis::AnalysisRun>();
    assert_eq!(runs.list(&Default::default()).await?.items.len(), 1);
    // nginx:1's ReplicaSet keeps running for scaleDownDelaySeconds: it gets
    // its deadline right after the switch (as upstream, one reconcile later).
    let old = first.stable_rs.clone().unwrap_or_default();
    wait_for(
        "the old ReplicaSet's scale-down deadline",
        Duration::from_secs(30),
        || async {
            let (_, _, annotations) = replica_set(&env, &old).await?;
            Ok(annotations
                .iter()
                .any(|a| a == "scale-down-deadline")
                .then_some(())
                .ok_or(format!("annotations {annotations:?}")))
        },
    )
    .await?;
    // Back to nginx:1, whose ReplicaSet still runs.
    set_image(&env, "nginx:1").await?;
    let s = wait_rollout(&env, "web", "back on nginx:1", |s| {
        healthy(s) && s.stable_rs == first.stable_rs
    })
    .await?;
    assert_ne!(s.stable_rs, second.stable_rs);
    assert_eq!(selector(&env, "web-active").await?, first.stable_rs);
    let items = runs.list(&Default::default()).await?.items;
    assert_eq!(items.len(), 1, "no new AnalysisRun for a fast rollback");
    env.cleanup().await
}
