//! Canary steps on a real control plane: setWeight and pause steps, promote,
//! promote --full, abort and retry through the status subresource, and the
//! stable/canary Services following the right ReplicaSets.

mod support;

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use rollouts::api::Rollout;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use serde_json::json;
use support::{TestEnv, patch_status, paused, set_image, wait_rollout};

const STEPS: &str = r#"
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      maxSurge: 1
      maxUnavailable: 0
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 40
      - pause: {duration: 2s}
      - setWeight: 60
      - setWeight: 80
"#;

async fn setup(name: &str) -> Result<(TestEnv, RolloutStatus)> {
    let env = TestEnv::new(name).await?;
    let services = ["web-stable", "web-canary"].map(|svc| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        )
    });
    env.apply_yaml(&services.join("---\n")).await?;
    let rollout = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 5
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
{STEPS}"#
    );
    env.apply_yaml(&rollout).await?;
    let s = wait_rollout(&env, "web", "Healthy", |s| {
        s.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    Ok((env, s))
}

/// spec.replicas of each ReplicaSet, by pod-template hash.
async fn pods_by_hash(env: &TestEnv) -> Result<BTreeMap<String, i32>> {
    let rss = env.api::<ReplicaSet>().list(&Default::default()).await?;
    Ok(rss
        .items
        .iter()
        .filter_map(|rs| {
            let hash = rs
                .metadata
                .labels
                .as_ref()?
                .get("rollouts-pod-template-hash")?
                .clone();
            Some((hash, rs.spec.as_ref()?.replicas.unwrap_or(0)))
        })
        .collect())
}

async fn selector(env: &TestEnv, svc: &str) -> Result<Option<String>> {
    let s = env.api::<Service>().get(svc).await?;
    Ok(s.spec
        .and_then(|s| s.selector)
        .and_then(|m| m.get("rollouts-pod-template-hash").cloned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_pause_then_promote_walks_to_healthy() -> Result<()> {
    let (env, first) = setup("steps").await?;
    let stable = first.stable_rs.clone().expect("stableRS");
    assert_eq!(
        selector(&env, "web-stable").await?.as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(
        selector(&env, "web-canary").await?.as_deref(),
        Some(stable.as_str())
    );
    let svc = env.api::<Service>().get("web-stable").await?;
    let managed = svc.metadata.annotations.unwrap_or_default();
    assert_eq!(
        managed
            .get("argo-rollouts.argoproj.io/managed-by-rollouts")
            .map(String::as_str),
        Some("web")
    );

    set_image(&env, "nginx:2").await?;
    let s = wait_rollout(&env, "web", "paused at the first pause", paused).await?;
    let canary = s.current_pod_hash.clone().expect("currentPodHash");
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(s.message.as_deref(), Some("CanaryPauseStep"));
    assert_eq!(
        s.pause_conditions.first().map(|p| p.reason.as_str()),
        Some("CanaryPauseStep")
    );
    let pods = pods_by_hash(&env).await?;
    assert_eq!(
        pods.get(&canary),
        Some(&1),
        "20% of 5 is one canary pod: {pods:?}"
    );
    assert_eq!(
        pods.get(&stable),
        Some(&4),
        "upstream splits 5 pods at 20% with maxSurge 1 as 1+4"
    );
    assert_eq!(
        selector(&env, "web-stable").await?.as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(
        selector(&env, "web-canary").await?.as_deref(),
        Some(canary.as_str())
    );

    // promote: clear the pause condition, as `kubectl rollouts promote` does
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let s = wait_rollout(&env, "web", "Healthy", |s| {
        s.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    assert_eq!(s.stable_rs.as_deref(), Some(canary.as_str()));
    assert_eq!(s.current_step_index, Some(6));
    let pods = pods_by_hash(&env).await?;
    assert_eq!(
        (pods.get(&canary), pods.get(&stable)),
        (Some(&5), Some(&0)),
        "{pods:?}"
    );
    assert_eq!(
        selector(&env, "web-stable").await?.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        selector(&env, "web-canary").await?.as_deref(),
        Some(canary.as_str())
    );

    // Each transition was reported once, with upstream's reasons.
    let events = support::wait_for(
        "the RolloutCompleted event of revision 2",
        std::time::Duration::from_secs(20),
        || async {
            let events = env.events("web").await?;
            let done = events
                .iter()
                .any(|(_, r, m)| r == "RolloutCompleted" && m.contains("revision 2"));
            Ok(if done {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            })
        },
    )
    .await?;
    let notes = |reason: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(_, r, _)| r == reason)
            .map(|(_, _, m)| m.clone())
            .collect()
    };
    assert_eq!(
        notes("RolloutStepCompleted"),
        vec![
            "Rollout step 1/6 completed (setWeight: 20)",
            "Rollout step 2/6 completed (pause)",
            "Rollout step 3/6 completed (setWeight: 40)",
            "Rollout step 4/6 completed (pause: 2s)",
            "Rollout step 5/6 completed (setWeight: 60)",
            "Rollout step 6/6 completed (setWeight: 80)",
        ]
    );
    assert_eq!(
        notes("RolloutPaused"),
        vec![
            "Rollout is paused (CanaryPauseStep)",
            "Rollout is paused (CanaryPauseStep)"
        ]
    );
    // As upstream, only the controller's own resume (the timed pause ending)
    // is an event; a promote clears the pause itself.
    assert_eq!(notes("RolloutResumed"), vec!["Rollout is resumed"]);
    assert_eq!(
        notes("RolloutCompleted"),
        vec![
            format!("Rollout completed update to revision 1 ({stable}): Initial deploy"),
            format!(
                "Rollout completed update to revision 2 ({canary}): Completed all 6 canary steps"
            ),
        ]
    );
    assert_eq!(
        notes("NewReplicaSetCreated"),
        vec![
            format!("Created ReplicaSet web-{stable} (revision 1)"),
            format!("Created ReplicaSet web-{canary} (revision 2)"),
        ]
    );
    assert!(
        notes("ScalingReplicaSet").contains(&format!(
            "Scaled up ReplicaSet web-{canary} (revision 2) from 0 to 1"
        )),
        "{events:?}"
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_while_paused_then_retry() -> Result<()> {
    let (env, first) = setup("abort").await?;
    let stable = first.stable_rs.clone().expect("stableRS");
    set_image(&env, "nginx:2").await?;
    let s = wait_rollout(&env, "web", "paused at the first pause", paused).await?;
    let canary = s.current_pod_hash.clone().expect("currentPodHash");

    patch_status(&env, "web", json!({"abort": true})).await?;
    let s = wait_rollout(&env, "web", "Degraded", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    assert_eq!(
        s.message.as_deref(),
        Some("RolloutAborted: Rollout aborted update to revision 2")
    );
    let aborted = support::wait_for(
        "a RolloutAborted event",
        std::time::Duration::from_secs(20),
        || async {
            let events = env.events("web").await?;
            let aborted: Vec<_> = events
                .iter()
                .filter(|(_, r, _)| r == "RolloutAborted")
                .cloned()
                .collect();
            Ok(if aborted.is_empty() {
                Err(format!("{events:?}"))
            } else {
                Ok(aborted)
            })
        },
    )
    .await?;
    assert_eq!(
        aborted,
        vec![(
            "Warning".to_string(),
            "RolloutAborted".to_string(),
            "Rollout aborted update to revision 2".to_string()
        )]
    );
    assert_eq!(
        selector(&env, "web-canary").await?.as_deref(),
        Some(stable.as_str()),
        "canary Service back on stable"
    );
    support::wait_for(
        "canary at 0 and stable at 5",
        std::time::Duration::from_secs(60),
        || async {
            let pods = pods_by_hash(&env).await?;
            match (pods.get(&canary), pods.get(&stable)) {
                (Some(0), Some(5)) => Ok(Ok(())),
                _ => Ok(Err(format!("{pods:?}"))),
            }
        },
    )
    .await?;
    let ro = env.api::<Rollout>().get("web").await?;
    let image = ro
        .spec
        .template
        .and_then(|t| t.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(
        image,
        Some(Some("nginx:2".to_string())),
        "abort leaves spec.template alone"
    );

    // retry: back to step 0, on to the first pause again
    patch_status(&env, "web", json!({"abort": false})).await?;
    let s = wait_rollout(&env, "web", "paused again", paused).await?;
    assert_eq!(s.current_step_index, Some(1));
    assert!(s.aborted_at.is_none());
    assert_eq!(pods_by_hash(&env).await?.get(&canary), Some(&1));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_from_the_first_pause() -> Result<()> {
    let (env, _) = setup("full").await?;
    set_image(&env, "nginx:2").await?;
    let s = wait_rollout(&env, "web", "paused at the first pause", paused).await?;
    let canary = s.current_pod_hash.clone().expect("currentPodHash");
    // `kubectl rollouts promote --full`
    patch_status(&env, "web", json!({"promoteFull": true})).await?;
    let s = wait_rollout(&env, "web", "Healthy", |s| {
        s.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    assert_eq!(s.stable_rs.as_deref(), Some(canary.as_str()));
    assert!(!s.promote_full, "promoteFull is reset once done");
    env.cleanup().await
}
