//! Switching between upstream Argo Rollouts (v1.10.2's own controller and
//! plugin, built from its Go module by hack/build-argo-rollouts.sh) and this
//! controller, both ways, on the same objects and our CRDs, with no pod
//! restarted.
//!
//! The first controller deploys Rollouts and takes them to the states a
//! real switch meets: a canary paused at step 1 of 4, a blue-green waiting
//! for promotion, a Healthy canary and a Healthy Rollout with a workloadRef
//! in one namespace (one test each way), a canary in the middle of an
//! analysis step in another (one test each way, so that one scenario
//! failing hides nothing of the others). It is stopped, the other started. Once the new one has reconciled every
//! Rollout and the AnalysisRun, nothing it took over may have changed: the
//! ReplicaSets (names, sizes, labels, annotations), the pods (UIDs), the
//! Services (selectors, annotations), each Rollout's generation,
//! annotations, step, phase, pause and hashes. The AnalysisRun is then
//! finished by the new controller, and the new side's plugin promotes every
//! Rollout to Healthy without any ReplicaSet beyond those the first one made.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use rollouts::api::Rollout;
use rollouts::api::analysis::{AnalysisPhase, AnalysisRun, AnalysisRunStatus};
use rollouts::api::rollout::RolloutPhase;
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::process::{ControllerProcess, sample, upstream_bin_dir};
use support::{TestEnv, healthy, kubeconfig, wait_for, wait_rollout};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Upstream,
    Ours,
}

impl Side {
    fn start(self, env: &TestEnv) -> Result<ControllerProcess> {
        match self {
            Side::Upstream => ControllerProcess::start_upstream("upstream", kubeconfig(), &env.ns),
            Side::Ours => ControllerProcess::start(
                "ours",
                kubeconfig(),
                &["--namespace", &env.ns, "--leader-elect=false"],
            ),
        }
    }

    /// `promote NAME` with this side's plugin, as a user would after the
    /// switch.
    async fn promote(self, env: &TestEnv, name: &str) -> Result<()> {
        let mut cmd = match self {
            Side::Upstream => Command::new(upstream_bin_dir().join("kubectl-argo-rollouts")),
            Side::Ours => Command::new(env!("CARGO_BIN_EXE_kubectl-rollouts")),
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["-n", &env.ns, "promote", name]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        ensure!(
            out.status.success(),
            "{self:?} plugin: promote {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// The web check of the analysis step: enough measurements, far enough
/// apart, that it is still running when the controllers are switched.
const MEASUREMENTS: usize = 15;

/// The Rollouts a test switches, in one namespace.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenarios {
    /// (a) a canary paused at step 1 of 4 after an update, (b) a blue-green
    /// waiting for promotion after an update, (c) a canary Healthy after an
    /// update (its older ReplicaSet at 0), (d) a Healthy Rollout with a
    /// workloadRef.
    Deploys,
    /// (e) a canary in the middle of an analysis step.
    Analysis,
}

impl Scenarios {
    fn rollouts(self) -> &'static [&'static str] {
        match self {
            Scenarios::Deploys => &["paused", "bluegreen", "healthy", "workload"],
            Scenarios::Analysis => &["analysis"],
        }
    }

    /// The Rollouts the test updates after the first deploy.
    fn updated(self) -> &'static [&'static str] {
        match self {
            Scenarios::Deploys => &["paused", "bluegreen", "healthy"],
            Scenarios::Analysis => &["analysis"],
        }
    }

    /// The Rollouts a promote carries on to Healthy after the switch.
    fn promoted(self) -> &'static [&'static str] {
        match self {
            Scenarios::Deploys => &["paused", "bluegreen"],
            Scenarios::Analysis => &["analysis"],
        }
    }

    fn manifests(self, web_url: &str) -> String {
        let canary = |name: &str, steps: &str| {
            format!(
                r#"---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
    canary:
      canaryService: {name}-canary
      stableService: {name}-stable
      steps:
{steps}"#
            )
        };
        let service = |name: &str, app: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {app}}}, ports: [{{port: 80}}]}}\n"
            )
        };
        let services = |rollout: &str, kinds: [&str; 2]| {
            kinds
                .iter()
                .map(|kind| service(&format!("{rollout}-{kind}"), rollout))
                .collect::<String>()
        };
        let mut yaml = String::new();
        match self {
            Scenarios::Deploys => {
                yaml += &services("paused", ["stable", "canary"]);
                yaml += &canary(
                    "paused",
                    "      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {}\n",
                );
                yaml += &services("bluegreen", ["active", "preview"]);
                yaml += r#"---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: bluegreen}
spec:
  replicas: 2
  selector: {matchLabels: {app: bluegreen}}
  template:
    metadata: {labels: {app: bluegreen}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
  strategy:
    blueGreen:
      activeService: bluegreen-active
      previewService: bluegreen-preview
      autoPromotionEnabled: false
"#;
                yaml += &services("healthy", ["stable", "canary"]);
                yaml += &canary(
                    "healthy",
                    "      - setWeight: 50\n      - pause: {duration: 1s}\n",
                );
                // The Deployment has 0 replicas, so every pod is the Rollout's.
                yaml += &services("workload", ["stable", "canary"]);
                yaml += r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {name: workload}
spec:
  replicas: 0
  selector: {matchLabels: {app: workload}}
  template:
    metadata: {labels: {app: workload}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: workload}
spec:
  replicas: 2
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: workload}
  strategy:
    canary:
      stableService: workload-stable
      canaryService: workload-canary
      steps:
      - setWeight: 50
      - pause: {}
"#;
            }
            Scenarios::Analysis => {
                yaml += &format!(
                    r#"---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: slow-check}}
spec:
  args: [{{name: query}}]
  metrics:
  - name: success-rate
    interval: 3s
    count: {MEASUREMENTS}
    successCondition: result.successRate >= 0.95
    provider:
      web:
        url: "{web_url}/metrics/summary?{{{{args.query}}}}"
        jsonPath: "{{$.data}}"
"#
                );
                yaml += &services("analysis", ["stable", "canary"]);
                // The `&` of the step's argument is one Go's JSON escapes:
                // the steps hash must still be upstream's.
                yaml += &canary(
                    "analysis",
                    "      - setWeight: 25\n      - analysis:\n          templates: [{templateName: slow-check}]\n          args: [{name: query, value: \"window=5m&service=analysis\"}]\n      - setWeight: 50\n      - pause: {}\n",
                );
            }
        }
        yaml
    }
}

/// What a switch must leave as it was.
#[derive(Debug, Clone, PartialEq)]
struct RolloutState {
    generation: Option<i64>,
    annotations: BTreeMap<String, String>,
    phase: Option<RolloutPhase>,
    message: Option<String>,
    current_step_index: Option<i32>,
    pause_conditions: Vec<(String, String)>,
    controller_pause: bool,
    abort: bool,
    stable_rs: Option<String>,
    current_pod_hash: Option<String>,
    current_step_hash: Option<String>,
    step_run: Option<(String, String)>,
    active_selector: Option<String>,
    preview_selector: Option<String>,
}

impl From<&Rollout> for RolloutState {
    fn from(ro: &Rollout) -> Self {
        let s = ro.status.clone().unwrap_or_default();
        RolloutState {
            generation: ro.metadata.generation,
            annotations: ro.metadata.annotations.clone().unwrap_or_default(),
            phase: s.phase,
            message: s.message.clone(),
            current_step_index: s.current_step_index,
            pause_conditions: s
                .pause_conditions
                .iter()
                .map(|p| (p.reason.clone(), p.start_time.0.to_string()))
                .collect(),
            controller_pause: s.controller_pause,
            abort: s.abort,
            stable_rs: s.stable_rs.clone(),
            current_pod_hash: s.current_pod_hash.clone(),
            current_step_hash: s.current_step_hash.clone(),
            step_run: s
                .canary
                .current_step_analysis_run_status
                .as_ref()
                .map(|r| (r.name.clone(), format!("{:?}", r.status))),
            active_selector: s.blue_green.active_selector.clone(),
            preview_selector: s.blue_green.preview_selector.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ReplicaSetState {
    replicas: i32,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ServiceState {
    selector: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    /// ReplicaSet name -> spec.replicas, labels and annotations.
    replica_sets: BTreeMap<String, ReplicaSetState>,
    /// Pod name -> UID.
    pods: BTreeMap<String, String>,
    /// Service name -> selector and annotations.
    services: BTreeMap<String, ServiceState>,
    rollouts: BTreeMap<String, RolloutState>,
    /// AnalysisRun name -> (phase, measurements taken).
    runs: BTreeMap<String, (Option<AnalysisPhase>, usize)>,
}

async fn snapshot(env: &TestEnv, names: &[&str]) -> Result<Snapshot> {
    let lp = Default::default();
    let replica_sets = env
        .api::<ReplicaSet>()
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|rs| {
            let state = ReplicaSetState {
                replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                labels: rs.metadata.labels.unwrap_or_default(),
                annotations: rs.metadata.annotations.unwrap_or_default(),
            };
            (rs.metadata.name.unwrap_or_default(), state)
        })
        .collect();
    let pods = env
        .api::<Pod>()
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|p| {
            let name = p.metadata.name.unwrap_or_default();
            let uid = p.metadata.uid.unwrap_or_default();
            let deleting = if p.metadata.deletion_timestamp.is_some() {
                " (terminating)"
            } else {
                ""
            };
            (name, format!("{uid}{deleting}"))
        })
        .collect();
    let services = env
        .api::<Service>()
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|s| {
            let state = ServiceState {
                selector: s.spec.and_then(|s| s.selector).unwrap_or_default(),
                annotations: s.metadata.annotations.unwrap_or_default(),
            };
            (s.metadata.name.unwrap_or_default(), state)
        })
        .collect();
    let mut rollouts = BTreeMap::new();
    for name in names {
        let ro = env.api::<Rollout>().get(name).await?;
        rollouts.insert(name.to_string(), RolloutState::from(&ro));
    }
    let runs = env
        .api::<AnalysisRun>()
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|r| {
            let status = r.status.unwrap_or_default();
            (
                r.metadata.name.unwrap_or_default(),
                (status.phase, measured(&status)),
            )
        })
        .collect();
    Ok(Snapshot {
        replica_sets,
        pods,
        services,
        rollouts,
        runs,
    })
}

/// The measurements a run has taken (`count`: both controllers keep only
/// the last 10 in `measurements`).
fn measured(status: &AnalysisRunStatus) -> usize {
    status
        .metric_results
        .iter()
        .map(|m| usize::try_from(m.count).unwrap_or(0))
        .sum()
}

/// Every difference between two maps, one line each.
fn diff<V: std::fmt::Debug + PartialEq>(
    what: &str,
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "{what} {k}: before {:?}, after {:?}",
                before.get(k),
                after.get(k)
            )
        })
        .collect()
}

/// Waits until every ReplicaSet has all its pods ready and no pod is
/// terminating: nothing left in flight from the controller just stopped.
async fn settled(env: &TestEnv) -> Result<()> {
    wait_for("ReplicaSets settled", Duration::from_secs(60), || async {
        let rss = env.api::<ReplicaSet>().list(&Default::default()).await?;
        for rs in rss.items {
            let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = rs.status.unwrap_or_default();
            if status.replicas != want || status.ready_replicas.unwrap_or(0) != want {
                return Ok(Err(format!(
                    "{}: {} of {want} ready",
                    rs.metadata.name.unwrap_or_default(),
                    status.ready_replicas.unwrap_or(0)
                )));
            }
        }
        let pods = env.api::<Pod>().list(&Default::default()).await?;
        if let Some(p) = pods
            .items
            .iter()
            .find(|p| p.metadata.deletion_timestamp.is_some())
        {
            return Ok(Err(format!("pod {:?} terminating", p.metadata.name)));
        }
        Ok(Ok(()))
    })
    .await
}

/// Changes the image of Rollout `name`'s container (an update).
async fn update(env: &TestEnv, name: &str, image: &str) -> Result<()> {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    env.api::<Rollout>()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

/// The name of the step AnalysisRun of Rollout `analysis` once it has
/// measured at least once.
async fn running_step_run(env: &TestEnv) -> Result<String> {
    wait_for(
        "the analysis step's AnalysisRun running with a measurement",
        Duration::from_secs(90),
        || async {
            let runs = env.api::<AnalysisRun>().list(&Default::default()).await?;
            let run = runs.items.into_iter().find(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("rollout-type"))
                    .map(String::as_str)
                    == Some("Step")
            });
            let Some(run) = run else {
                return Ok(Err("no step AnalysisRun yet".to_string()));
            };
            let status = run.status.clone().unwrap_or_default();
            let taken = measured(&status);
            Ok(
                if status.phase == Some(AnalysisPhase::Running) && taken >= 1 {
                    Ok(run.metadata.name.unwrap_or_default())
                } else {
                    Err(format!("{:?} with {taken} measurements", status.phase))
                },
            )
        },
    )
    .await
}

/// Waits until `ctl` has reconciled every Rollout and the AnalysisRun
/// `run` at least once (its `rollout_reconcile` and
/// `analysis_run_reconcile` histograms, upstream's names on both sides).
async fn reconciled(
    env: &TestEnv,
    ctl: &ControllerProcess,
    rollouts: &[&str],
    run: Option<&str>,
) -> Result<()> {
    wait_for(
        &format!("{} to reconcile {rollouts:?} and {run:?}", ctl.name),
        Duration::from_secs(60),
        || async {
            let page = match ctl.metrics().await {
                Ok(page) => page,
                Err(e) => return Ok(Err(format!("metrics: {e:#}"))),
            };
            let done = |metric: &str, name: &str| {
                let labels = [("namespace", env.ns.as_str()), ("name", name)];
                sample(&page, metric, &labels).unwrap_or(0.0) >= 1.0
            };
            let mut missing: Vec<&str> = rollouts
                .iter()
                .copied()
                .filter(|name| !done("rollout_reconcile_count", name))
                .collect();
            if let Some(run) = run.filter(|run| !done("analysis_run_reconcile_count", run)) {
                missing.push(run);
            }
            Ok(if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not reconciled yet: {missing:?}"))
            })
        },
    )
    .await
}

/// The whole switch from `first` to `second`; see the module comment. The
/// controllers' logs are shown when it fails.
async fn switch(first: Side, second: Side, scenarios: Scenarios, name: &str) -> Result<()> {
    let mut ctls = Vec::new();
    let result = run_switch(first, second, scenarios, name, &mut ctls).await;
    if result.is_err() {
        for ctl in &ctls {
            eprintln!("--- log of controller {} ---\n{}", ctl.name, ctl.log());
        }
    }
    result
}

async fn run_switch(
    first: Side,
    second: Side,
    scenarios: Scenarios,
    name: &str,
    ctls: &mut Vec<ControllerProcess>,
) -> Result<()> {
    // Built (or found in the cache) before any timer runs.
    upstream_bin_dir();
    let env = TestEnv::without_controller(name).await?;
    let web = TestServer::start(vec![Reply::json(
        200,
        json!({"data": {"successRate": 0.99}}),
    )])
    .await?;
    let rollouts = scenarios.rollouts();
    ctls.push(first.start(&env)?);

    env.apply_yaml(&scenarios.manifests(&web.url())).await?;
    let mut first_stable = BTreeMap::new();
    for name in rollouts {
        let s = wait_rollout(&env, name, "the first deploy", healthy).await?;
        first_stable.insert(*name, s.stable_rs);
    }
    for name in scenarios.updated() {
        update(&env, name, "nginx:2").await?;
    }
    let mut run = None;
    match scenarios {
        Scenarios::Deploys => {
            wait_rollout(&env, "paused", "paused at step 1", |s| {
                s.phase == Some(RolloutPhase::Paused) && s.current_step_index == Some(1)
            })
            .await?;
            wait_rollout(&env, "bluegreen", "waiting for promotion", |s| {
                s.phase == Some(RolloutPhase::Paused)
            })
            .await?;
            wait_rollout(&env, "healthy", "Healthy on the update", |s| {
                healthy(s) && s.stable_rs != first_stable["healthy"]
            })
            .await?;
        }
        Scenarios::Analysis => {
            run = Some(running_step_run(&env).await?);
            wait_rollout(&env, "analysis", "at the analysis step", |s| {
                s.current_step_index == Some(1)
            })
            .await?;
        }
    }

    // The switch.
    ctls[0]
        .terminate()
        .await
        .with_context(|| format!("stopping {first:?}'s controller"))?;
    settled(&env).await?;
    let before = snapshot(&env, rollouts).await?;
    if let Some(run) = &run {
        let (phase, taken) = before.runs.get(run).cloned().unwrap_or_default();
        ensure!(
            phase == Some(AnalysisPhase::Running) && taken < MEASUREMENTS,
            "the test is too slow for its analysis: {run} was {phase:?} with {taken} of \
             {MEASUREMENTS} measurements when {first:?} stopped"
        );
    }
    ctls.push(second.start(&env)?);
    reconciled(&env, &ctls[1], rollouts, run.as_deref()).await?;
    // Whatever that first reconcile started (a ReplicaSet, a scale, a pod)
    // shows within a few seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = snapshot(&env, rollouts).await?;
    let mut problems = Vec::new();
    problems.extend(diff(
        "ReplicaSet",
        &before.replica_sets,
        &after.replica_sets,
    ));
    problems.extend(diff("pod", &before.pods, &after.pods));
    problems.extend(diff("Service", &before.services, &after.services));
    problems.extend(diff("Rollout", &before.rollouts, &after.rollouts));
    assert!(
        problems.is_empty(),
        "{second:?}'s controller changed what {first:?}'s left:\n{}",
        problems.join("\n")
    );

    // The analysis step's run is finished by the second controller.
    if let Some(run) = &run {
        let finished = support::wait_run_completed(&env, run).await?;
        let status = finished.status.unwrap_or_default();
        assert_eq!(
            (status.phase, measured(&status)),
            (Some(AnalysisPhase::Successful), MEASUREMENTS),
            "{run}: {status:?}"
        );
    }

    // Promote each (with the new side's plugin) until Healthy.
    for name in scenarios.promoted() {
        for promotes in 0.. {
            let s = wait_rollout(&env, name, "paused or Healthy", |s| {
                healthy(s) || s.phase == Some(RolloutPhase::Paused)
            })
            .await?;
            if healthy(&s) {
                break;
            }
            if promotes == 3 {
                bail!("{name} still paused after 3 promotes: {s:?}");
            }
            second.promote(&env, name).await?;
            // The next wait must not see the pause just promoted.
            wait_for(
                &format!("{name} to leave its pause"),
                Duration::from_secs(60),
                || async {
                    let ro = env.api::<Rollout>().get(name).await?;
                    let s = ro.status.unwrap_or_default();
                    Ok(if s.pause_conditions.is_empty() && !s.controller_pause {
                        Ok(())
                    } else {
                        Err(format!("{:?} {:?}", s.phase, s.pause_conditions))
                    })
                },
            )
            .await?;
        }
    }
    let end = snapshot(&env, rollouts).await?;
    for name in rollouts {
        let s = &end.rollouts[*name];
        assert_eq!(s.phase, Some(RolloutPhase::Healthy), "{name}: {s:?}");
        assert_eq!(
            s.stable_rs, before.rollouts[*name].current_pod_hash,
            "{name}: the update {first:?} started is the stable one"
        );
    }
    let rs_before: BTreeSet<_> = before.replica_sets.keys().collect();
    let rs_end: BTreeSet<_> = end.replica_sets.keys().collect();
    assert_eq!(rs_end, rs_before, "ReplicaSets after the promotions");
    assert_eq!(
        end.runs.keys().collect::<Vec<_>>(),
        before.runs.keys().collect::<Vec<_>>(),
        "AnalysisRuns after the promotions"
    );
    assert_eq!(ctls[1].exited()?, None, "{second:?}'s controller exited");
    ctls[1].terminate().await?;
    env.cleanup().await
}

#[tokio::test]
async fn upstream_to_ours_keeps_paused_canary_bluegreen_healthy_and_workload_ref() -> Result<()> {
    switch(
        Side::Upstream,
        Side::Ours,
        Scenarios::Deploys,
        "switch-up-deploys",
    )
    .await
}

#[tokio::test]
async fn upstream_to_ours_finishes_the_running_analysis_step() -> Result<()> {
    switch(
        Side::Upstream,
        Side::Ours,
        Scenarios::Analysis,
        "switch-up-analysis",
    )
    .await
}

#[tokio::test]
async fn ours_to_upstream_keeps_paused_canary_bluegreen_healthy_and_workload_ref() -> Result<()> {
    switch(
        Side::Ours,
        Side::Upstream,
        Scenarios::Deploys,
        "switch-ours-deploys",
    )
    .await
}

#[tokio::test]
async fn ours_to_upstream_finishes_the_running_analysis_step() -> Result<()> {
    switch(
        Side::Ours,
        Side::Upstream,
        Scenarios::Analysis,
        "switch-ours-analysis",
    )
    .await
}
