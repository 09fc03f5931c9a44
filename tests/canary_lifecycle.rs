//! A canary's life beyond the happy path, on a real control plane: scaling
//! mid-rollout, restarting pods with spec.restartAt, and a controller that
//! dies and comes back during a timed pause.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::rollout::plan::replicas::approximate_weighted_counts;
use serde_json::json;
use support::{TestEnv, healthy, paused, set_image, wait_rollout};

fn rollout(replicas: i32, strategy: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
{strategy}"#
    )
}

/// (spec.replicas, availableReplicas) of each ReplicaSet, by pod-template hash.
async fn replica_sets(env: &TestEnv) -> Result<BTreeMap<String, (i32, i32)>> {
    let rss = env.api::<ReplicaSet>().list(&Default::default()).await?;
    Ok(rss
        .items
        .iter()
        .filter_map(|rs| {
            let hash = rs
                .metadata
                .labels
                .as_ref()?
                .get("rollouts-pod-template-hash")?;
            let spec = rs.spec.as_ref()?.replicas.unwrap_or(0);
            let avail = rs.status.as_ref()?.available_replicas.unwrap_or(0);
            Some((hash.clone(), (spec, avail)))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_while_paused_keeps_the_weight() -> Result<()> {
    let env = TestEnv::new("scale").await?;
    let strategy = "    canary:\n      maxSurge: 1\n      maxUnavailable: 0\n      steps:\n      - setWeight: 40\n      - pause: {}\n";
    env.apply_yaml(&rollout(5, strategy)).await?;
    let first = wait_rollout(&env, "web", "Healthy", healthy).await?;
    let stable = first.stable_rs.clone().unwrap_or_default();
    set_image(&env, "nginx:2").await?;
    let s = wait_rollout(&env, "web", "paused at 40%", paused).await?;
    let canary = s.current_pod_hash.clone().unwrap_or_default();

    for replicas in [5, 8] {
        if replicas != 5 {
            env.api::<Rollout>()
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await?;
        }
        let (want_canary, want_stable) = approximate_weighted_counts(replicas, 40, 1);
        ensure!(want_canary + want_stable == replicas);
        support::wait_for(
            &format!("{want_canary} canary + {want_stable} stable pods at {replicas} replicas"),
            Duration::from_secs(60),
            || async {
                let rss = replica_sets(&env).await?;
                let ok = rss.get(&canary) == Some(&(want_canary, want_canary))
                    && rss.get(&stable) == Some(&(want_stable, want_stable));
                Ok(if ok { Ok(()) } else { Err(format!("{rss:?}")) })
            },
        )
        .await?;
        let s = wait_rollout(&env, "web", "still paused", paused).await?;
        assert_eq!(s.current_step_index, Some(1), "still at the pause step");
    }
    // Promote: the new size carries on to the end.
    support::patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let s = wait_rollout(&env, "web", "Healthy at 8", |s| {
        healthy(s) && s.available_replicas == 8
    })
    .await?;
    assert_eq!(s.stable_rs.as_deref(), Some(canary.as_str()));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_at_replaces_every_pod_within_max_unavailable() -> Result<()> {
    let env = TestEnv::new("restart").await?;
    let strategy = "    canary:\n      maxSurge: 1\n      maxUnavailable: 1\n";
    env.apply_yaml(&rollout(5, strategy)).await?;
    wait_rollout(&env, "web", "Healthy", healthy).await?;
    let pods_api = env.api::<Pod>();
    let labels = ListParams::default().labels("app=web");
    let before: BTreeSet<String> = pods_api
        .list(&labels)
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before.len(), 5);

    // Watch availability the whole time: Ready pods not being deleted.
    let min_ready = Arc::new(AtomicI32::new(i32::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (api, labels) = (pods_api.clone(), labels.clone());
        let (min_ready, stop) = (min_ready.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(list) = api.list(&labels).await {
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count() as i32;
                    min_ready.fetch_min(ready, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Pods are stamped to the second: let the current ones be strictly older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let restart_at = Timestamp::from_second(Timestamp::now().as_second())?;
    env.api::<Rollout>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartAt": restart_at.to_string()}})),
        )
        .await?;
    let s = wait_rollout(&env, "web", "restartedAt set and Healthy", |s| {
        s.restarted_at.as_ref().map(|t| t.0) == Some(restart_at) && healthy(s)
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;

    let after = pods_api.list(&labels).await?.items;
    let live: Vec<&Pod> = after
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 5);
    for pod in &live {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(!before.contains(&name), "{name} was not restarted");
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        assert!(created >= Some(restart_at), "{name} created {created:?}");
    }
    let min = min_ready.load(Ordering::Relaxed);
    assert!(
        min >= 4,
        "availability fell to {min} Ready pods, below replicas - maxUnavailable = 4"
    );
    assert_eq!(s.available_replicas, 5);
    let events = env.events("web").await?;
    let restarted = events
        .iter()
        .filter(|(_, r, _)| r == "PodRestarted")
        .count();
    assert_eq!(restarted, 5, "{events:?}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_during_a_timed_pause() -> Result<()> {
    let mut env = TestEnv::new("crash").await?;
    let strategy = "    canary:\n      maxSurge: 1\n      maxUnavailable: 0\n      steps:\n      - setWeight: 50\n      - pause: {duration: 12s}\n      - setWeight: 100\n";
    env.apply_yaml(&rollout(2, strategy)).await?;
    wait_rollout(&env, "web", "Healthy", healthy).await?;
    set_image(&env, "nginx:2").await?;
    let s = wait_rollout(&env, "web", "in the timed pause", paused).await?;
    let started = s
        .pause_conditions
        .first()
        .map(|c| c.start_time.0)
        .ok_or_else(|| anyhow::anyhow!("no pause condition: {s:?}"))?;
    let canary = s.current_pod_hash.clone().unwrap_or_default();

    // The controller goes away a moment into the pause and comes back
    // before it ends: only the status tells the new one when to go on.
    env.stop_controller().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = env
        .api::<Rollout>()
        .get("web")
        .await?
        .status
        .unwrap_or_default();
    assert_eq!(
        s.current_step_index,
        Some(1),
        "nothing moves without a controller"
    );
    env.start_controller();

    let s = wait_rollout(&env, "web", "Healthy after the pause", healthy).await?;
    let done = Timestamp::now();
    assert_eq!(s.stable_rs.as_deref(), Some(canary.as_str()));
    let waited = done.duration_since(started).as_secs_f64();
    assert!(
        waited >= 12.0,
        "the 12s pause ended after only {waited:.1}s"
    );
    assert!(
        waited < 12.0 + 15.0,
        "the pause ended {waited:.1}s after it started: the new controller did not requeue for its end"
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_based_on_a_stale_read_are_refused() -> Result<()> {
    use rollouts::rollout::apply::{Applied, ApplyError, apply};
    use rollouts::rollout::plan::{Action, Plan};

    let mut env = TestEnv::new("stale").await?;
    env.apply_yaml(&rollout(2, "    canary: {}\n")).await?;
    wait_rollout(&env, "web", "Healthy", healthy).await?;
    env.stop_controller().await?;
    let stale = env.api::<Rollout>().get("web").await?;
    let rs = env
        .api::<ReplicaSet>()
        .list(&Default::default())
        .await?
        .items;
    let rs_name = rs[0].metadata.name.clone().unwrap_or_default();

    // Someone else writes after our read: a user aborts, a label is added.
    support::patch_status(&env, "web", json!({"abort": true})).await?;
    env.api::<ReplicaSet>()
        .patch(
            &rs_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await?;

    let mut status = stale.status.clone().unwrap_or_default();
    status.message = Some("a decision made on the stale read".into());
    let status_only = Plan {
        status,
        ..Default::default()
    };
    let mut applied = Applied::default();
    let err = apply(&env.client, &stale, &status_only, &mut applied)
        .await
        .err();
    assert!(
        matches!(err, Some(ApplyError::Conflict { .. })),
        "status write on a stale read: {err:?}"
    );
    // A scale of the ReplicaSet (from 2), decided on the version given.
    let scale_to = |to, resource_version| Action::ScaleReplicaSet {
        name: rs_name.clone(),
        from: 2,
        to,
        desired_replicas: 2,
        clear_deadline: false,
        resource_version,
    };
    let scale = Plan {
        actions: vec![scale_to(0, rs[0].metadata.resource_version.clone())],
        status: stale.status.clone().unwrap_or_default(),
        ..Default::default()
    };
    let err = apply(&env.client, &stale, &scale, &mut applied).await.err();
    assert!(
        matches!(err, Some(ApplyError::Conflict { .. })),
        "scale on a stale read: {err:?}"
    );
    assert_eq!(applied.done, 0, "nothing was applied");
    // An action based on a fresh read is applied even though the status
    // write after it is refused: it counts as done, so its event is
    // still published.
    let fresh = env.api::<ReplicaSet>().get(&rs_name).await?;
    let partial = Plan {
        actions: vec![scale_to(2, fresh.metadata.resource_version.clone())],
        status: status_only.status.clone(),
        ..Default::default()
    };
    let err = apply(&env.client, &stale, &partial, &mut applied)
        .await
        .err();
    assert!(
        matches!(err, Some(ApplyError::Conflict { .. })),
        "status write after a fresh action: {err:?}"
    );
    assert_eq!(
        applied.done, 1,
        "the scale was applied before the refused status"
    );
    let now = env
        .api::<Rollout>()
        .get("web")
        .await?
        .status
        .unwrap_or_default();
    assert!(now.abort, "the user's abort survives");
    let rs = env.api::<ReplicaSet>().get(&rs_name).await?;
    assert_eq!(
        rs.spec.and_then(|s| s.replicas),
        Some(2),
        "nothing scaled on a guess"
    );
    env.cleanup().await
}
