//! The first reconcile on a real control plane: a canary Rollout without
//! steps creates its ReplicaSet, the pods become Ready through the real
//! controller-manager, scheduler and kwok, and an image change rolls the
//! pods over within maxSurge/maxUnavailable.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use serde_json::json;
use support::{TestEnv, wait_for, wait_rollout};

const TIMEOUT: Duration = Duration::from_secs(90);

fn rollout_yaml(name: &str, replicas: i32, image: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
{extra_spec}
"#
    )
}

fn strategy(surge: &str, unavailable: &str) -> String {
    format!(
        "  strategy:\n    canary:\n      maxSurge: {surge}\n      maxUnavailable: {unavailable}\n"
    )
}

async fn status(env: &TestEnv, name: &str) -> Result<RolloutStatus> {
    Ok(env
        .api::<Rollout>()
        .get(name)
        .await?
        .status
        .unwrap_or_default())
}

/// Waits for phase Healthy on the current generation and returns the status.
async fn wait_healthy(env: &TestEnv, name: &str) -> Result<RolloutStatus> {
    wait_rollout(env, name, "Healthy", |s| {
        s.phase == Some(RolloutPhase::Healthy)
    })
    .await
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pods(env: &TestEnv, app: &str) -> Result<i32> {
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(pods.items.iter().filter(|p| is_ready(p)).count() as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_deploy_creates_replica_set_and_reaches_healthy() -> Result<()> {
    let env = TestEnv::new("first").await?;
    env.apply_yaml(&rollout_yaml("web", 3, "nginx:1.0", &strategy("1", "0")))
        .await?;
    let s = wait_healthy(&env, "web").await?;

    let hash = s.current_pod_hash.clone().expect("currentPodHash");
    assert_eq!(s.stable_rs.as_deref(), Some(hash.as_str()));
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas
        ),
        (3, 3, 3, 3)
    );
    assert_eq!(s.hpa_replicas, 3);
    assert_eq!(s.selector.as_deref(), Some("app=web"));
    assert_eq!(s.observed_generation.as_deref(), Some("1"));
    let cond = |t: &str| {
        s.conditions
            .iter()
            .find(|c| c.r#type == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        cond("Available"),
        Some(("True".into(), Some("AvailableReason".into())))
    );
    assert_eq!(
        cond("Progressing"),
        Some(("True".into(), Some("NewReplicaSetAvailable".into())))
    );
    assert_eq!(
        cond("Healthy"),
        Some(("True".into(), Some("RolloutHealthy".into())))
    );
    assert_eq!(
        cond("Completed"),
        Some(("True".into(), Some("RolloutCompleted".into())))
    );

    let rs = env.api::<ReplicaSet>().get(&format!("web-{hash}")).await?;
    let labels = rs.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("rollouts-pod-template-hash"), Some(&hash));
    let annotations = rs.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("rollout.argoproj.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        annotations
            .get("rollout.argoproj.io/desired-replicas")
            .map(String::as_str),
        Some("3")
    );
    let owner = &rs.metadata.owner_references.clone().unwrap_or_default()[0];
    let ro = env.api::<Rollout>().get("web").await?;
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid), owner.controller),
        ("Rollout", ro.metadata.uid.as_ref(), Some(true))
    );
    assert_eq!(
        rs.status.and_then(|s| s.ready_replicas),
        Some(3),
        "pods made Ready by kwok"
    );
    assert_eq!(ready_pods(&env, "web").await?, 3);
    assert_eq!(
        ro.metadata
            .annotations
            .unwrap_or_default()
            .get("rollout.argoproj.io/revision")
            .map(String::as_str),
        Some("1")
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_replaces_pods_within_surge_and_unavailability() -> Result<()> {
    let env = TestEnv::new("update").await?;
    let (replicas, surge, unavailable) = (5, 1, 1);
    env.apply_yaml(&rollout_yaml(
        "api",
        replicas,
        "nginx:1.0",
        &strategy("1", "1"),
    ))
    .await?;
    let first = wait_healthy(&env, "api").await?;

    // Sample the cluster during the update: ready pods and ReplicaSet sizes.
    let stop = Arc::new(AtomicBool::new(false));
    let min_ready = Arc::new(AtomicI32::new(i32::MAX));
    let max_pods = Arc::new(AtomicI32::new(0));
    let sampler = {
        let (env_client, ns) = (env.client.clone(), env.ns.clone());
        let (stop, min_ready, max_pods) = (stop.clone(), min_ready.clone(), max_pods.clone());
        tokio::spawn(async move {
            let pods: kube::Api<Pod> = kube::Api::namespaced(env_client.clone(), &ns);
            let rss: kube::Api<ReplicaSet> = kube::Api::namespaced(env_client, &ns);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&ListParams::default().labels("app=api")).await {
                    let ready = list.items.iter().filter(|p| is_ready(p)).count() as i32;
                    min_ready.fetch_min(ready, Ordering::Relaxed);
                }
                if let Ok(list) = rss.list(&ListParams::default()).await {
                    let total: i32 = list
                        .items
                        .iter()
                        .filter_map(|r| r.spec.as_ref()?.replicas)
                        .sum();
                    max_pods.fetch_max(total, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2.0"}]}}}});
    env.api::<Rollout>()
        .patch("api", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let second = wait_healthy(&env, "api").await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;

    assert_ne!(second.current_pod_hash, first.current_pod_hash);
    assert_eq!(
        second.stable_rs, second.current_pod_hash,
        "new ReplicaSet became stable"
    );
    assert_eq!(second.observed_generation.as_deref(), Some("2"));
    let old = env
        .api::<ReplicaSet>()
        .get(&format!(
            "api-{}",
            first.current_pod_hash.unwrap_or_default()
        ))
        .await?;
    assert_eq!(
        old.spec.and_then(|s| s.replicas),
        Some(0),
        "old ReplicaSet scaled to zero"
    );
    let new = env
        .api::<ReplicaSet>()
        .get(&format!(
            "api-{}",
            second.current_pod_hash.unwrap_or_default()
        ))
        .await?;
    let rev = new
        .metadata
        .annotations
        .unwrap_or_default()
        .get("rollout.argoproj.io/revision")
        .cloned();
    assert_eq!(rev.as_deref(), Some("2"));
    assert_eq!(ready_pods(&env, "api").await?, replicas);

    let (min_ready, max_pods) = (
        min_ready.load(Ordering::Relaxed),
        max_pods.load(Ordering::Relaxed),
    );
    assert!(
        min_ready >= replicas - unavailable,
        "ready pods fell to {min_ready} (< {replicas} - {unavailable})"
    );
    assert!(
        max_pods <= replicas + surge,
        "{max_pods} pods requested (> {replicas} + {surge})"
    );
    assert!(
        max_pods > replicas,
        "the update used its surge (saw at most {max_pods} pods)"
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_that_never_becomes_ready_hits_the_progress_deadline() -> Result<()> {
    let env = TestEnv::new("deadline").await?;
    let spec = format!("  progressDeadlineSeconds: 5\n{}", strategy("1", "0"));
    env.apply_yaml(&rollout_yaml("slow", 2, "nginx:1.0", &spec))
        .await?;
    let first = wait_healthy(&env, "slow").await?;

    // kwok keeps pods labelled fail-readiness=true Running but never Ready.
    let patch = json!({"spec": {"template": {
        "metadata": {"labels": {"app": "slow", "fail-readiness": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:bad"}]}}}});
    env.api::<Rollout>()
        .patch("slow", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let api = env.api::<Rollout>();
    let s = wait_for("ProgressDeadlineExceeded", TIMEOUT, || async {
        let s = api.get("slow").await?.status.unwrap_or_default();
        match s.phase {
            Some(RolloutPhase::Degraded) => Ok(Ok(s)),
            p => Ok(Err(format!("phase {p:?}: {:?}", s.message))),
        }
    })
    .await?;
    let msg = s.message.clone().unwrap_or_default();
    assert!(
        msg.starts_with("ProgressDeadlineExceeded: ReplicaSet \"slow-"),
        "{msg}"
    );
    assert!(msg.ends_with("has timed out progressing."), "{msg}");
    assert_eq!(
        s.stable_rs, first.stable_rs,
        "the stable ReplicaSet is unchanged"
    );
    assert_eq!(
        ready_pods(&env, "slow").await?,
        2,
        "maxUnavailable 0 kept both stable pods"
    );
    env.cleanup().await
}

/// Condition message for the InvalidSpec condition, once it appears.
async fn invalid_spec(env: &TestEnv, name: &str) -> Result<String> {
    let api = env.api::<Rollout>();
    wait_for(&format!("InvalidSpec on {name}"), TIMEOUT, || async {
        let s = api.get(name).await?.status.unwrap_or_default();
        let cond = s.conditions.iter().find(|c| c.r#type == "InvalidSpec");
        match (cond, s.phase) {
            (Some(c), Some(RolloutPhase::Degraded)) => {
                Ok(Ok(c.message.clone().unwrap_or_default()))
            }
            _ => Ok(Err(format!(
                "phase {:?}, conditions {:?}",
                s.phase, s.conditions
            ))),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rollouts_get_invalid_spec_and_the_controller_keeps_going() -> Result<()> {
    let env = TestEnv::new("invalid").await?;
    env.apply_yaml(&rollout_yaml("no-strategy", 1, "nginx", ""))
        .await?;
    let both = "  strategy:\n    canary: {}\n    blueGreen: {activeService: svc}\n";
    env.apply_yaml(&rollout_yaml("both", 1, "nginx", both))
        .await?;
    let mismatch = rollout_yaml("mismatch", 1, "nginx", &strategy("1", "0")).replace(
        "    matchLabels: {app: mismatch}",
        "    matchLabels: {app: something-else}",
    );
    env.apply_yaml(&mismatch).await?;

    assert_eq!(
        invalid_spec(&env, "no-strategy").await?,
        "The Rollout \"no-strategy\" is invalid: spec.strategy.strategy: Required value: Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'"
    );
    assert_eq!(
        invalid_spec(&env, "both").await?,
        "The Rollout \"both\" is invalid: spec.strategy.strategy: Invalid value: \"blueGreen: true canary: true\": Multiple Strategies can not be listed"
    );
    assert_eq!(
        invalid_spec(&env, "mismatch").await?,
        "The Rollout \"mismatch\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"mismatch\"}: `selector` does not match template `labels`"
    );
    let s = status(&env, "both").await?;
    assert!(
        s.message
            .unwrap_or_default()
            .starts_with("InvalidSpec: The Rollout \"both\" is invalid")
    );
    let rss = env.api::<ReplicaSet>().list(&ListParams::default()).await?;
    assert!(rss.items.is_empty(), "no ReplicaSet for invalid Rollouts");

    // The controller still serves valid Rollouts next to them...
    env.apply_yaml(&rollout_yaml("fine", 2, "nginx", &strategy("1", "0")))
        .await?;
    wait_healthy(&env, "fine").await?;
    // ...and a fixed Rollout recovers.
    env.apply_yaml(&rollout_yaml(
        "no-strategy",
        1,
        "nginx",
        &strategy("1", "0"),
    ))
    .await?;
    let s = wait_healthy(&env, "no-strategy").await?;
    assert!(s.conditions.iter().all(|c| c.r#type != "InvalidSpec"));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_abort_aborts_a_canary_that_never_becomes_ready() -> Result<()> {
    let env = TestEnv::new("deadline-abort").await?;
    let spec = format!(
        "  progressDeadlineSeconds: 5\n  progressDeadlineAbort: true\n{}",
        strategy("1", "0")
    );
    env.apply_yaml(&rollout_yaml("bad", 3, "nginx:1.0", &spec))
        .await?;
    let first = wait_healthy(&env, "bad").await?;
    let patch = json!({"spec": {"template": {
        "metadata": {"labels": {"app": "bad", "fail-readiness": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:bad"}]}}}});
    env.api::<Rollout>()
        .patch("bad", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    // The deadline sets abort; the next reconcile carries it out (and says
    // so): wait for that, not for the intermediate status.
    let s = wait_rollout(&env, "bad", "aborted", |s| {
        s.abort && s.aborted_at.is_some()
    })
    .await?;
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert!(
        s.message
            .clone()
            .unwrap_or_default()
            .starts_with("RolloutAborted: Rollout aborted update to revision 2"),
        "{:?}",
        s.message
    );
    assert_eq!(s.stable_rs, first.stable_rs, "stable untouched");
    let new_rs = format!("bad-{}", s.current_pod_hash.clone().unwrap_or_default());
    wait_for("the bad canary scaled to zero", TIMEOUT, || async {
        let rs = env.api::<ReplicaSet>().get(&new_rs).await?;
        match rs.spec.and_then(|s| s.replicas) {
            Some(0) => Ok(Ok(())),
            n => Ok(Err(format!("{new_rs} at {n:?}"))),
        }
    })
    .await?;
    assert_eq!(
        ready_pods(&env, "bad").await?,
        3,
        "all stable pods still serve"
    );
    env.cleanup().await
}
