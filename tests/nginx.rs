//! Canary with nginx traffic routing on a real control plane: the canary
//! Ingress the controller writes next to each stable Ingress, its weight
//! after every step, abort, several stable Ingresses, setCanaryScale and
//! dynamicStableScale pod counts, header routes, a canary that never becomes
//! ready, and clean-up. No ingress-nginx runs: the tests check the objects
//! ingress-nginx would read.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use serde_json::json;
use support::{TestEnv, healthy, patch_status, paused, repo_root, wait_for, wait_rollout};

const RO: &str = "rollouts-demo";
const STABLE_SVC: &str = "rollouts-demo-stable";
const CANARY_SVC: &str = "rollouts-demo-canary";
const CANARY_INGRESS: &str = "rollouts-demo-rollouts-demo-stable-canary";
const PREFIX: &str = "nginx.ingress.kubernetes.io";

/// The getting-started fixture, with each (from, to) replacement applied
/// (each must match, so an edited fixture fails loudly).
fn fixture(replacements: &[(&str, &str)]) -> Result<String> {
    let path = repo_root().join("tests/fixtures/nginx-getting-started.yaml");
    let mut text = std::fs::read_to_string(&path)?;
    for (from, to) in replacements {
        anyhow::ensure!(text.contains(from), "fixture no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    Ok(text)
}

/// Applies the fixture and waits for the first deploy.
async fn deploy(env: &TestEnv, replacements: &[(&str, &str)]) -> Result<RolloutStatus> {
    env.apply_yaml(&fixture(replacements)?).await?;
    wait_rollout(env, RO, "the first deploy", healthy).await
}

async fn set_image(env: &TestEnv, image: &str) -> Result<()> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "rollouts-demo", "image": image}]}}}});
    env.api::<Rollout>()
        .patch(RO, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn annotations(env: &TestEnv, ingress: &str) -> Result<BTreeMap<String, String>> {
    let i = env.api::<Ingress>().get(ingress).await?;
    Ok(i.metadata.annotations.unwrap_or_default())
}

async fn weight(env: &TestEnv, ingress: &str) -> Result<Option<String>> {
    Ok(annotations(env, ingress)
        .await?
        .get(&format!("{PREFIX}/canary-weight"))
        .cloned())
}

async fn selector(env: &TestEnv, service: &str) -> Result<Option<String>> {
    let svc = env.api::<Service>().get(service).await?;
    Ok(svc
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("rollouts-pod-template-hash").cloned()))
}

/// spec.replicas of the ReplicaSet of `hash`.
async fn pods(env: &TestEnv, hash: &Option<String>) -> Result<i32> {
    let hash = hash.as_deref().context("no hash")?;
    let rs = env.api::<ReplicaSet>().get(&format!("{RO}-{hash}")).await?;
    Ok(rs.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// Waits for the pause at step `index` (0-based) and returns the status.
async fn pause_at(env: &TestEnv, index: i32) -> Result<RolloutStatus> {
    wait_rollout(env, RO, &format!("the pause at step {index}"), |s| {
        paused(s) && s.current_step_index == Some(index)
    })
    .await
}

async fn promote(env: &TestEnv) -> Result<()> {
    patch_status(env, RO, json!({"pauseConditions": null})).await
}

#[tokio::test]
async fn weights_follow_every_step_and_return_to_zero_at_completion() -> Result<()> {
    let env = TestEnv::new("nginx-steps").await?;
    let first = deploy(&env, &[]).await?;
    let stable = first.stable_rs.clone();

    // The canary Ingress exists from the first deploy, at weight 0, owned
    // by the Rollout, with the stable rule pointed at the canary Service.
    let canary = env.api::<Ingress>().get(CANARY_INGRESS).await?;
    let a = canary.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        a.get(&format!("{PREFIX}/canary")).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        a.get(&format!("{PREFIX}/canary-weight"))
            .map(String::as_str),
        Some("0")
    );
    assert_eq!(
        a.get("kubernetes.io/ingress.class").map(String::as_str),
        Some("nginx")
    );
    let owner = &canary.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Rollout", RO, Some(true))
    );
    let rules = canary.spec.and_then(|s| s.rules).unwrap_or_default();
    let backend = rules[0].http.as_ref().unwrap().paths[0]
        .backend
        .service
        .clone()
        .unwrap();
    assert_eq!(backend.name, CANARY_SVC);
    assert_eq!(rules[0].host.as_deref(), Some("rollouts-demo.local"));

    set_image(&env, "argoproj/rollouts-demo:yellow").await?;
    for (index, want) in [(1, 20), (3, 40), (5, 60), (7, 80)] {
        let s = pause_at(&env, index).await?;
        assert_eq!(
            weight(&env, CANARY_INGRESS).await?,
            Some(want.to_string()),
            "step {index}"
        );
        let w = s.canary.weights.clone().context("status.canary.weights")?;
        assert_eq!((w.canary.weight, w.stable.weight), (want, 100 - want));
        assert_eq!(w.canary.pod_template_hash, s.current_pod_hash);
        assert_eq!(w.stable.pod_template_hash, stable);
        assert_eq!(w.canary.service_name.as_deref(), Some(CANARY_SVC));
        // ceil(weight x 5) canary pods; the stable stays at full size and
        // keeps the stable Service.
        assert_eq!(
            pods(&env, &s.current_pod_hash).await?,
            (want * 5 + 99) / 100
        );
        assert_eq!(pods(&env, &stable).await?, 5);
        assert_eq!(selector(&env, STABLE_SVC).await?, stable);
        assert_eq!(selector(&env, CANARY_SVC).await?, s.current_pod_hash);
        promote(&env).await?;
    }
    let done = wait_rollout(&env, RO, "completion", healthy).await?;
    assert_ne!(done.stable_rs, stable);
    assert_eq!(
        weight(&env, CANARY_INGRESS).await?,
        Some("0".into()),
        "back to 0"
    );
    assert_eq!(selector(&env, STABLE_SVC).await?, done.stable_rs);
    let w = done.canary.weights.context("weights")?;
    assert_eq!((w.canary.weight, w.stable.weight), (0, 100));
    // The previous stable keeps its pods for scaleDownDelaySeconds (30). The
    // deadline is written by the reconcile after the one that reports Healthy
    // (the old ReplicaSet only counts as "previous stable" once the status
    // names the new one), so wait for it.
    let old_name = format!("{RO}-{}", stable.clone().context("stable hash")?);
    wait_for(
        "the previous stable to get its scale-down deadline",
        Duration::from_secs(20),
        || async {
            let old = env.api::<ReplicaSet>().get(&old_name).await?;
            let annotations = old.metadata.annotations.unwrap_or_default();
            Ok(if annotations.contains_key("scale-down-deadline") {
                Ok(())
            } else {
                Err(format!("{annotations:?}"))
            })
        },
    )
    .await?;
    let old = env.api::<ReplicaSet>().get(&old_name).await?;
    assert_eq!(old.spec.and_then(|s| s.replicas), Some(5));

    let events: Vec<String> = env.events(RO).await?.into_iter().map(|e| e.2).collect();
    for m in [
        "Traffic weight updated from 0 to 20",
        "Traffic weight updated from 80 to 100",
        "Traffic weight updated from 100 to 0",
    ] {
        assert!(events.iter().any(|e| e == m), "event {m:?} in {events:?}");
    }

    // Deleting the Rollout deletes its canary Ingress (not the stable one).
    env.api::<Rollout>()
        .delete(RO, &DeleteParams::default())
        .await?;
    wait_for(
        "the canary Ingress to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let left = env.api::<Ingress>().get_opt(CANARY_INGRESS).await?;
            Ok(if left.is_none() {
                Ok(())
            } else {
                Err("still there".to_string())
            })
        },
    )
    .await?;
    assert!(env.api::<Ingress>().get_opt(STABLE_SVC).await?.is_some());
    env.cleanup().await
}

#[tokio::test]
async fn abort_sends_all_traffic_back_to_stable_at_once() -> Result<()> {
    let env = TestEnv::new("nginx-abort").await?;
    let first = deploy(
        &env,
        &[(
            "          stableIngress: rollouts-demo-stable\n",
            "          stableIngress: rollouts-demo-stable\n      abortScaleDownDelaySeconds: 3\n",
        )],
    )
    .await?;
    let stable = first.stable_rs.clone();
    set_image(&env, "argoproj/rollouts-demo:yellow").await?;
    let s = pause_at(&env, 1).await?;
    let canary = s.current_pod_hash.clone();
    assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("20".into()));

    patch_status(&env, RO, json!({"abort": true})).await?;
    let aborted = wait_rollout(&env, RO, "the abort", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    // The Ingress is written before the status, so it is at 0 already.
    assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("0".into()));
    assert_eq!(aborted.canary.weights.map(|w| w.canary.weight), Some(0));
    assert_eq!(
        selector(&env, STABLE_SVC).await?,
        stable,
        "stable Service untouched"
    );
    assert_eq!(
        selector(&env, CANARY_SVC).await?,
        stable,
        "canary Service back on stable"
    );
    assert_eq!(pods(&env, &stable).await?, 5);
    // The canary keeps its pod for abortScaleDownDelaySeconds, then goes.
    wait_for(
        "the canary to scale down",
        Duration::from_secs(30),
        || async {
            let n = pods(&env, &canary).await?;
            Ok(if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            })
        },
    )
    .await?;
    env.cleanup().await
}

#[tokio::test]
async fn two_stable_ingresses_and_only_the_stable_rules_are_copied() -> Result<()> {
    let env = TestEnv::new("nginx-two").await?;
    let second = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rollouts-demo-api
spec:
  ingressClassName: nginx
  tls:
  - hosts: [api.rollouts-demo.local]
    secretName: api-tls
  rules:
  - host: admin.rollouts-demo.local
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: admin, port: {number: 80}}
  - host: api.rollouts-demo.local
    http:
      paths:
      - path: /v1
        pathType: Prefix
        backend:
          service: {name: rollouts-demo-stable, port: {number: 80}}
---
apiVersion: argoproj.io/v1alpha1"#;
    deploy(
        &env,
        &[
            ("---\napiVersion: argoproj.io/v1alpha1", second),
            (
                "          stableIngress: rollouts-demo-stable\n",
                "          stableIngresses: [rollouts-demo-stable, rollouts-demo-api]\n",
            ),
        ],
    )
    .await?;
    let api_canary = env
        .api::<Ingress>()
        .get("rollouts-demo-rollouts-demo-api-canary")
        .await?;
    let spec = api_canary.spec.context("spec")?;
    let rules = spec.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1, "only the rule for the stable Service");
    assert_eq!(rules[0].host.as_deref(), Some("api.rollouts-demo.local"));
    let path = &rules[0].http.as_ref().unwrap().paths[0];
    assert_eq!(
        (
            path.path.as_deref(),
            path.backend.service.as_ref().map(|s| s.name.as_str())
        ),
        (Some("/v1"), Some(CANARY_SVC))
    );
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        spec.tls.unwrap_or_default()[0].secret_name.as_deref(),
        Some("api-tls")
    );

    set_image(&env, "argoproj/rollouts-demo:yellow").await?;
    pause_at(&env, 1).await?;
    for ingress in [CANARY_INGRESS, "rollouts-demo-rollouts-demo-api-canary"] {
        assert_eq!(weight(&env, ingress).await?, Some("20".into()), "{ingress}");
    }
    env.cleanup().await
}

#[tokio::test]
async fn set_canary_scale_and_dynamic_stable_scale_pod_counts() -> Result<()> {
    let env = TestEnv::new("nginx-scale").await?;
    let steps = "      steps:
      - setCanaryScale: {replicas: 2}
      - setWeight: 20
      - pause: {}
      - setCanaryScale: {matchTrafficWeight: true}
      - setWeight: 60
      - pause: {}
";
    let first = deploy(
        &env,
        &[
            ("          stableIngress: rollouts-demo-stable\n", "          stableIngress: rollouts-demo-stable\n      dynamicStableScale: true\n"),
            ("      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 40\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n      - setWeight: 80\n      - pause: {}\n", steps),
        ],
    )
    .await?;
    let stable = first.stable_rs.clone();
    set_image(&env, "argoproj/rollouts-demo:yellow").await?;
    // setCanaryScale replicas 2 at weight 20. An explicit canary size says
    // nothing about the traffic, so the stable stays at full size (as
    // upstream).
    let s = pause_at(&env, 2).await?;
    let canary = s.current_pod_hash.clone();
    assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("20".into()));
    assert_eq!(pods(&env, &canary).await?, 2);
    assert_eq!(pods(&env, &stable).await?, 5);
    promote(&env).await?;
    pause_at(&env, 5).await?;
    assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("60".into()));
    assert_eq!(
        pods(&env, &canary).await?,
        3,
        "matchTrafficWeight: ceil(60% of 5)"
    );
    wait_for("stable at 2", Duration::from_secs(30), || async {
        let n = pods(&env, &stable).await?;
        Ok(if n == 2 { Ok(()) } else { Err(format!("{n}")) })
    })
    .await?;
    promote(&env).await?;
    wait_rollout(&env, RO, "completion", healthy).await?;
    // With dynamicStableScale the old stable goes at once, without delay.
    wait_for("old stable at 0", Duration::from_secs(30), || async {
        let n = pods(&env, &stable).await?;
        Ok(if n == 0 { Ok(()) } else { Err(format!("{n}")) })
    })
    .await?;
    assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("0".into()));
    env.cleanup().await
}

#[tokio::test]
async fn header_route_steps_set_and_clear_canary_by_header() -> Result<()> {
    let env = TestEnv::new("nginx-header").await?;
    let steps = "      steps:
      - setWeight: 20
      - setHeaderRoute:
          name: beta
          match:
          - headerName: X-Canary
            headerValue: {exact: always-me}
      - pause: {}
      - setHeaderRoute: {name: beta}
      - pause: {}
";
    deploy(
        &env,
        &[
            ("          stableIngress: rollouts-demo-stable\n", "          stableIngress: rollouts-demo-stable\n        managedRoutes:\n        - name: beta\n"),
            ("      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 40\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n      - setWeight: 80\n      - pause: {}\n", steps),
        ],
    )
    .await?;
    set_image(&env, "argoproj/rollouts-demo:yellow").await?;
    pause_at(&env, 2).await?;
    let a = annotations(&env, CANARY_INGRESS).await?;
    assert_eq!(
        a.get(&format!("{PREFIX}/canary-by-header"))
            .map(String::as_str),
        Some("X-Canary")
    );
    assert_eq!(
        a.get(&format!("{PREFIX}/canary-by-header-value"))
            .map(String::as_str),
        Some("always-me")
    );
    assert_eq!(
        a.get(&format!("{PREFIX}/canary-weight"))
            .map(String::as_str),
        Some("20")
    );
    promote(&env).await?;
    pause_at(&env, 4).await?;
    let a = annotations(&env, CANARY_INGRESS).await?;
    assert!(
        !a.contains_key(&format!("{PREFIX}/canary-by-header")),
        "{a:?}"
    );
    assert!(
        !a.contains_key(&format!("{PREFIX}/canary-by-header-value")),
        "{a:?}"
    );

    // Something nginx cannot express is refused with a clear InvalidSpec.
    let patch = json!({"spec": {"strategy": {"canary": {"steps": [
        {"setWeight": 20},
        {"setHeaderRoute": {"name": "beta", "match": [{"headerName": "X-Canary", "headerValue": {"prefix": "al"}}]}},
        {"pause": {}}
    ]}}}});
    env.api::<Rollout>()
        .patch(RO, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let s = wait_rollout(&env, RO, "InvalidSpec", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    let message = s.message.unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.steps[1].setHeaderRoute.match[0].headerValue.prefix: Invalid value: \"al\": nginx cannot match a header by prefix: use exact or regex"),
        "{message}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn a_canary_that_never_becomes_ready_never_gets_weight() -> Result<()> {
    let env = TestEnv::new("nginx-unready").await?;
    deploy(&env, &[]).await?;
    // kwok keeps pods labelled fail-readiness=true Running but never Ready.
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"app": "rollouts-demo", "fail-readiness": "true"}}}}});
    env.api::<Rollout>()
        .patch(RO, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let s = wait_rollout(&env, RO, "the canary pod created", |s| {
        s.updated_replicas == 1
    })
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(weight(&env, CANARY_INGRESS).await?, Some("0".into()));
        assert_eq!(
            selector(&env, CANARY_SVC).await?,
            s.stable_rs,
            "no traffic through the Service"
        );
        let ro = env.api::<Rollout>().get(RO).await?;
        assert_eq!(ro.status.and_then(|s| s.current_step_index), Some(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.cleanup().await
}

#[tokio::test]
async fn a_missing_or_unusable_stable_ingress_is_an_invalid_spec() -> Result<()> {
    let env = TestEnv::new("nginx-invalid").await?;
    let yaml = fixture(&[])?;
    // Everything but the Ingress.
    let without: Vec<&str> = yaml
        .split("\n---\n")
        .filter(|d| !d.contains("kind: Ingress"))
        .collect();
    env.apply_yaml(&without.join("\n---\n")).await?;
    let s = wait_rollout(&env, RO, "InvalidSpec", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    assert_eq!(
        s.message.as_deref(),
        Some(
            "InvalidSpec: The Rollout \"rollouts-demo\" is invalid: spec.strategy.canary.trafficRouting.nginx.stableIngress: Invalid value: \"rollouts-demo-stable\": ingress.networking.k8s.io \"rollouts-demo-stable\" not found"
        )
    );
    // An Ingress without a rule for the stable Service.
    env.apply_yaml(&yaml.replacen(
        "            name: rollouts-demo-stable\n",
        "            name: something-else\n",
        1,
    ))
    .await?;
    wait_rollout(&env, RO, "no matching rule", |s| {
        s.message.as_deref().is_some_and(|m| m.ends_with("ingress `rollouts-demo-stable` has no rules using service rollouts-demo-stable backend"))
    })
    .await?;
    // Fixed: the rollout proceeds.
    env.apply_yaml(&yaml).await?;
    wait_rollout(&env, RO, "healthy once fixed", healthy).await?;
    let n = env
        .api::<Ingress>()
        .list(&ListParams::default())
        .await?
        .items
        .len();
    assert_eq!(n, 2, "stable and canary Ingress");
    env.cleanup().await
}
