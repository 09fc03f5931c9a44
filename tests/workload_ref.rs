//! spec.workloadRef on a real control plane: a Rollout that takes its pod
//! template from a Deployment, migrates it (scaleDown progressively,
//! onsuccess, never), follows changes of the Deployment's template (through
//! the real `kubectl-rollouts set image` and `undo`), and reports a missing
//! Deployment.

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use rollouts::api::Rollout;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use support::{TestEnv, healthy, kubeconfig, paused, wait_for, wait_rollout};

/// A Deployment `web` of `replicas` pods (app: web, container app).
fn deployment(replicas: i32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "{image}"}}]}}
"#
    )
}

/// A 3-replica canary Rollout `web` on the Deployment `web`, with no
/// template and no selector of its own.
fn rollout(scale_down: Option<&str>) -> String {
    let scale_down = scale_down
        .map(|s| format!("\n    scaleDown: {s}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 3
  workloadRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web{scale_down}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      steps:
      - setWeight: 50
      - pause: {{}}
"#
    )
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web-stable}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-canary}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// Creates the Services and the Deployment and waits until the Deployment
/// serves with all its pods: the state a migration starts from.
async fn serving_deployment(env: &TestEnv, replicas: i32) -> Result<()> {
    env.apply_yaml(SERVICES).await?;
    env.apply_yaml(&deployment(replicas, "nginx:1")).await?;
    wait_for(
        "the Deployment to have its pods available",
        Duration::from_secs(60),
        || async {
            let d = env.api::<Deployment>().get("web").await?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            Ok(if available == replicas {
                Ok(())
            } else {
                Err(format!("{available} of {replicas} available"))
            })
        },
    )
    .await
}

async fn deploy(env: &TestEnv) -> Result<Deployment> {
    Ok(env.api::<Deployment>().get("web").await?)
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn deployment_image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// Waits until the Deployment runs `want` replicas (spec).
async fn wait_deployment_replicas(env: &TestEnv, want: i32) -> Result<()> {
    wait_for(
        &format!("the Deployment scaled to {want}"),
        Duration::from_secs(60),
        || async {
            let n = replicas(&deploy(env).await?);
            Ok(if n == want {
                Ok(())
            } else {
                Err(format!("{n} replicas"))
            })
        },
    )
    .await
}

/// The Rollout's available pods, from its ReplicaSets (not its status, which
/// is written after a reconcile's scaling).
async fn rollout_available(env: &TestEnv) -> Result<i32> {
    let rss = env.api::<ReplicaSet>().list(&Default::default()).await?;
    Ok(rss
        .items
        .iter()
        .filter(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("rollouts-pod-template-hash"))
        })
        .map(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
        })
        .sum())
}

/// The image of the Rollout's ReplicaSet for a pod-template hash.
async fn replica_set_image(env: &TestEnv, hash: &str) -> Result<Option<String>> {
    let rss = env.api::<ReplicaSet>().list(&Default::default()).await?;
    Ok(rss
        .items
        .into_iter()
        .find(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("rollouts-pod-template-hash"))
                .is_some_and(|h| h == hash)
        })
        .and_then(|rs| rs.spec?.template?.spec?.containers.first()?.image.clone()))
}

/// Waits until status.workloadObservedGeneration and the
/// workload-generation annotation both name the Deployment's generation.
async fn wait_workload_observed(env: &TestEnv) -> Result<()> {
    wait_for(
        "the Deployment's generation recorded on the Rollout",
        Duration::from_secs(30),
        || async {
            let generation = deploy(env).await?.metadata.generation.map(|g| g.to_string());
            let ro = env.api::<Rollout>().get("web").await?;
            let annotation = ro
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("rollout.argoproj.io/workload-generation"))
                .cloned();
            let status = ro.status.and_then(|s| s.workload_observed_generation);
            Ok(
                if generation.is_some() && annotation == generation && status == generation {
                    Ok(())
                } else {
                    Err(format!(
                        "Deployment generation {generation:?}, annotation {annotation:?}, status {status:?}"
                    ))
                },
            )
        },
    )
    .await
}

/// Runs the real plugin in the test's namespace; Err with its output when
/// it fails.
async fn cli(env: &TestEnv, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-rollouts"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .arg("-n")
        .arg(&env.ns)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressively_migrates_a_deployment_then_updates_through_it() -> Result<()> {
    let env = TestEnv::new("wl-progressive").await?;
    serving_deployment(&env, 3).await?;
    env.apply_yaml(&rollout(Some("progressively"))).await?;

    // Until Healthy, the two together never have fewer than 3 pods: the
    // Deployment gives up one pod per Rollout pod available.
    let first = wait_for(
        "the migration to finish (Healthy)",
        Duration::from_secs(90),
        || async {
            let deployment = replicas(&deploy(&env).await?);
            let available = rollout_available(&env).await?;
            ensure!(
                deployment + available >= 3,
                "capacity lost: Deployment at {deployment}, Rollout pods available {available}"
            );
            let s = env
                .api::<Rollout>()
                .get("web")
                .await?
                .status
                .unwrap_or_default();
            Ok(if healthy(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "phase {:?}, Deployment at {deployment}, Rollout available {available}",
                    s.phase
                ))
            })
        },
    )
    .await?;
    assert_eq!(first.available_replicas, 3);
    assert_eq!(
        first.selector.as_deref(),
        Some("app=web"),
        "the Deployment's selector"
    );
    let stable = first.stable_rs.clone().expect("stableRS");
    assert_eq!(
        replica_set_image(&env, &stable).await?.as_deref(),
        Some("nginx:1")
    );
    wait_deployment_replicas(&env, 0).await?;
    wait_workload_observed(&env).await?;

    // `kubectl rollouts set image` on the Rollout changes the Deployment,
    // and that starts a canary update of the Rollout.
    let out = cli(&env, &["set", "image", "web", "app=nginx:2"]).await?;
    assert!(out.contains("image updated"), "{out}");
    assert_eq!(
        deployment_image(&deploy(&env).await?).as_deref(),
        Some("nginx:2")
    );
    let s = wait_rollout(&env, "web", "paused at the first pause", paused).await?;
    let canary = s.current_pod_hash.clone().expect("currentPodHash");
    assert_ne!(canary, stable);
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(
        replica_set_image(&env, &canary).await?.as_deref(),
        Some("nginx:2")
    );
    wait_workload_observed(&env).await?;

    cli(&env, &["promote", "web"]).await?;
    let s = wait_rollout(&env, "web", "Healthy on nginx:2", |s: &RolloutStatus| {
        healthy(s) && s.stable_rs.as_deref() == Some(canary.as_str())
    })
    .await?;
    assert_eq!(s.available_replicas, 3);
    // The migration is over: the update did not bring Deployment pods back.
    assert_eq!(replicas(&deploy(&env).await?), 0);

    // `undo` puts revision 1's template back into the Deployment.
    cli(&env, &["undo", "web"]).await?;
    assert_eq!(
        deployment_image(&deploy(&env).await?).as_deref(),
        Some("nginx:1")
    );
    wait_rollout(
        &env,
        "web",
        "the rollback to revision 1",
        |s: &RolloutStatus| s.current_pod_hash.as_deref() == Some(stable.as_str()),
    )
    .await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onsuccess_scales_the_deployment_down_once_healthy() -> Result<()> {
    let env = TestEnv::new("wl-onsuccess").await?;
    serving_deployment(&env, 2).await?;
    env.apply_yaml(&rollout(Some("onsuccess"))).await?;
    // Until the Rollout is Healthy the Deployment keeps its pods.
    wait_for("the Rollout Healthy", Duration::from_secs(90), || async {
        let ro = env.api::<Rollout>().get("web").await?;
        let s = ro.status.unwrap_or_default();
        if !healthy(&s) {
            ensure!(
                replicas(&deploy(&env).await?) == 2,
                "Deployment scaled down before the Rollout was Healthy ({:?})",
                s.phase
            );
        }
        Ok(healthy(&s)
            .then_some(())
            .ok_or_else(|| format!("{:?}", s.phase)))
    })
    .await?;
    wait_deployment_replicas(&env, 0).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_scale_down_the_deployment_is_left_alone() -> Result<()> {
    let env = TestEnv::new("wl-never").await?;
    serving_deployment(&env, 2).await?;
    env.apply_yaml(&rollout(None)).await?;
    wait_rollout(&env, "web", "Healthy", healthy).await?;
    wait_workload_observed(&env).await?;
    // A few more reconciles (the Deployment's own status changes trigger
    // some): still untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = deploy(&env).await?;
    assert_eq!(replicas(&d), 2);
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "the Deployment was not written"
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_deployment_is_an_invalid_spec_until_it_is_created() -> Result<()> {
    let env = TestEnv::new("wl-missing").await?;
    env.apply_yaml(SERVICES).await?;
    env.apply_yaml(&rollout(Some("progressively"))).await?;
    let want = format!(
        "The Rollout \"web\" is invalid: deployments.apps \"{}/web\" not found",
        env.ns
    );
    let s = wait_rollout(&env, "web", "InvalidSpec", |s: &RolloutStatus| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "InvalidSpec" && c.message.as_deref() == Some(want.as_str()))
    })
    .await?;
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert_eq!(
        s.message.as_deref(),
        Some(format!("InvalidSpec: {want}").as_str())
    );

    // Created: the Deployment watch brings the Rollout back at once.
    env.apply_yaml(&deployment(0, "nginx:1")).await?;
    let s = wait_rollout(&env, "web", "Healthy", healthy).await?;
    assert!(!s.conditions.iter().any(|c| c.r#type == "InvalidSpec"));
    env.cleanup().await
}
