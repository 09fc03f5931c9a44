//! The controller binary as it runs in production, on a real control plane:
//! two replicas with leader election (the leader SIGKILLed mid-rollout, the
//! standby finishes it), and `/metrics`, `/healthz`, `/readyz` scraped.

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use rollouts::api::Rollout;
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::process::{ControllerProcess, sample};
use support::{
    TestEnv, healthy, kubeconfig, patch_status, paused, set_image, wait_for, wait_rollout,
};

const LEASE: &str = "rollouts-lock";

fn canary(steps: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: "nginx:1"}}]}}
  strategy:
    canary:
{steps}"#
    )
}

/// Starts a controller replica scoped to the test namespace, electing its
/// leader on a Lease in that namespace.
fn replica(env: &TestEnv, name: &str) -> Result<ControllerProcess> {
    ControllerProcess::start(
        name,
        kubeconfig(),
        &[
            "--namespace",
            &env.ns,
            "--leader-election-namespace",
            &env.ns,
            "--leader-election-lease-name",
            LEASE,
        ],
    )
}

async fn holder(env: &TestEnv) -> Result<(String, i32)> {
    let lease = env.api::<Lease>().get_opt(LEASE).await?;
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    Ok((
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
    ))
}

#[tokio::test]
async fn the_standby_finishes_the_rollout_when_the_leader_is_killed() -> Result<()> {
    let env = TestEnv::without_controller("ha").await?;
    let mut replicas = [replica(&env, "ctl-a")?, replica(&env, "ctl-b")?];
    let (leader_id, _) = wait_for("a leader", Duration::from_secs(30), || async {
        let h = holder(&env).await?;
        Ok(if h.0.is_empty() {
            Err("no holder yet".to_string())
        } else {
            Ok(h)
        })
    })
    .await?;
    let leader = replicas
        .iter()
        .position(|r| leader_id.starts_with(&format!("{}_", r.name)))
        .with_context(|| format!("holder {leader_id} is none of the replicas"))?;
    let standby = 1 - leader;

    env.apply_yaml(&canary(
        "      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 75\n      - pause: {duration: 1}\n",
    ))
    .await?;
    let first = wait_rollout(&env, "web", "the first deploy", healthy).await?;
    set_image(&env, "nginx:2").await?;
    wait_rollout(&env, "web", "the pause at step 1", |s| {
        paused(s) && s.current_step_index == Some(1)
    })
    .await?;

    // Only the leader reconciles: the standby has not timed a single one.
    let page = replicas[standby].metrics().await?;
    assert_eq!(
        sample(&page, "leader_election_master_status", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&page, "rollout_reconcile_count", &[("name", "web")]),
        None,
        "the standby reconciled:\n{page}"
    );
    let page = replicas[leader].metrics().await?;
    assert_eq!(
        sample(&page, "leader_election_master_status", &[]),
        Some(1.0)
    );
    assert!(sample(&page, "rollout_reconcile_count", &[("name", "web")]).unwrap_or(0.0) > 0.0);

    // The leader dies without releasing anything; the rollout is promoted
    // while nobody leads.
    replicas[leader].kill().await?;
    patch_status(&env, "web", json!({"pauseConditions": null})).await?;
    let done = wait_rollout(&env, "web", "completion under the new leader", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    assert_eq!(done.current_step_index, Some(4));
    let (now, transitions) = holder(&env).await?;
    assert!(
        now.starts_with(&format!("{}_", replicas[standby].name)),
        "lease held by {now}"
    );
    assert!(transitions >= 1, "leaseTransitions {transitions}");
    let page = replicas[standby].metrics().await?;
    assert_eq!(
        sample(&page, "leader_election_master_status", &[]),
        Some(1.0)
    );

    // A graceful stop releases the lease at once.
    let status = replicas[standby].terminate().await?;
    assert!(status.success(), "exit status {status}");
    let (after, _) = holder(&env).await?;
    assert_eq!(after, "", "released on shutdown");
    env.cleanup().await
}

#[tokio::test]
async fn metrics_use_upstreams_names_and_health_endpoints_answer() -> Result<()> {
    let env = TestEnv::without_controller("metrics").await?;
    let ctl = replica(&env, "ctl")?;
    let web = TestServer::start(vec![Reply::json(200, json!({"ok": true}))]).await?;
    env.apply_yaml(&format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: check}}
spec:
  metrics:
  - name: up
    interval: 1s
    successCondition: result == true
    provider:
      web: {{url: "{}/", jsonPath: "{{$.ok}}"}}
"#,
        web.url()
    ))
    .await?;
    env.apply_yaml(&canary(
        "      analysis: {templates: [{templateName: check}]}\n      steps:\n      - setWeight: 50\n      - pause: {}\n",
    ))
    .await?;
    wait_rollout(&env, "web", "the first deploy", healthy).await?;
    set_image(&env, "nginx:2").await?;
    let status = wait_rollout(&env, "web", "the pause", |s| {
        paused(s) && s.current_step_index == Some(1)
    })
    .await?;

    let ns = env.ns.as_str();
    let ro = [("namespace", ns), ("name", "web")];
    let page = wait_for("a run measured", Duration::from_secs(30), || async {
        let page = ctl.metrics().await?;
        Ok(
            if sample(&page, "analysis_run_metric_phase", &[("phase", "Running")]) == Some(1.0) {
                Ok(page)
            } else {
                Err(page)
            },
        )
    })
    .await?;
    let info = [
        ("namespace", ns),
        ("name", "web"),
        ("strategy", "canary"),
        ("traffic_router", ""),
        ("phase", "Paused"),
    ];
    assert_eq!(sample(&page, "rollout_info", &info), Some(1.0), "{page}");
    assert_eq!(
        sample(&page, "rollout_info_replicas_desired", &ro),
        Some(4.0)
    );
    // The paused rollout's status no longer changes: the figures are its.
    let n = |v: i32| Some(f64::from(v));
    assert_eq!(
        sample(&page, "rollout_info_replicas_available", &ro),
        n(status.available_replicas)
    );
    assert_eq!(
        sample(&page, "rollout_info_replicas_unavailable", &ro),
        n(status.replicas - status.available_replicas)
    );
    assert_eq!(
        sample(&page, "rollout_info_replicas_updated", &ro),
        n(status.updated_replicas)
    );
    assert_eq!(status.updated_replicas, 2, "50% of 4");
    let phase = |p| [("namespace", ns), ("name", "web"), ("phase", p)];
    assert_eq!(sample(&page, "rollout_phase", &phase("Paused")), Some(1.0));
    assert_eq!(
        sample(&page, "rollout_phase", &phase("Progressing")),
        Some(0.0)
    );
    assert!(sample(&page, "rollout_reconcile_count", &ro).unwrap_or(0.0) > 0.0);
    assert!(
        sample(
            &page,
            "rollout_reconcile_bucket",
            &[("name", "web"), ("le", "1")]
        )
        .is_some()
    );
    assert!(
        sample(
            &page,
            "rollout_events_total",
            &[("name", "web"), ("reason", "RolloutPaused")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Upstream's template metrics: one series per template and per metric.
    assert_eq!(
        sample(
            &page,
            "analysis_template_info",
            &[("namespace", ns), ("name", "check")]
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "analysis_template_metric_info",
            &[
                ("namespace", ns),
                ("name", "check"),
                ("type", "Web"),
                ("metric", "up")
            ]
        ),
        Some(1.0)
    );

    // The background run, named <rollout>-<hash>-<revision>.
    let run_name = page
        .lines()
        .find(|l| l.starts_with("analysis_run_info{"))
        .and_then(|l| l.split("name=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .context("an analysis_run_info sample")?
        .to_string();
    let run = [("namespace", ns), ("name", run_name.as_str())];
    assert_eq!(
        sample(
            &page,
            "analysis_run_info",
            &[run[0], run[1], ("phase", "Running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "analysis_run_phase",
            &[run[0], run[1], ("phase", "Running")]
        ),
        Some(1.0)
    );
    let metric = [run[0], run[1], ("metric", "up"), ("type", "Web")];
    assert_eq!(
        sample(&page, "analysis_run_metric_type", &metric),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "analysis_run_metric_phase",
            &[
                metric[0],
                metric[1],
                metric[2],
                metric[3],
                ("dry_run", "false"),
                ("phase", "Running")
            ]
        ),
        Some(1.0)
    );
    assert!(sample(&page, "analysis_run_reconcile_count", &run).unwrap_or(0.0) > 0.0);

    // Process-wide figures.
    assert_eq!(
        sample(
            &page,
            "build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "leader_election_master_status", &[]),
        Some(1.0)
    );
    for queue in ["Rollouts", "AnalysisRuns"] {
        assert!(sample(&page, "workqueue_adds_total", &[("name", queue)]).unwrap_or(0.0) > 0.0);
        for histogram in [
            "workqueue_work_duration_seconds_count",
            "workqueue_queue_duration_seconds_count",
        ] {
            assert!(sample(&page, histogram, &[("name", queue)]).unwrap_or(0.0) > 0.0);
        }
    }
    assert!(
        sample(
            &page,
            "controller_clientset_k8s_request_duration_seconds_count",
            &[("kind", "rollouts"), ("verb", "Patch")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        sample(
            &page,
            "controller_clientset_k8s_request_total",
            &[
                ("kind", "rollouts"),
                ("verb", "Patch"),
                ("status_code", "200")
            ]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(sample(&page, "process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);

    assert_eq!(ctl.get(ctl.healthz_port, "/healthz").await?.0, 200);
    assert_eq!(ctl.get(ctl.healthz_port, "/readyz").await?.0, 200);

    // Gone objects leave the per-object series (bounded cardinality).
    env.api::<Rollout>()
        .delete("web", &Default::default())
        .await?;
    wait_for(
        "the rollout's series to go",
        Duration::from_secs(30),
        || async {
            let page = ctl.metrics().await?;
            let left: Vec<&str> = page
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains("name=\"web\""))
                .collect();
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            })
        },
    )
    .await?;
    env.cleanup().await
}

/// A shutdown that comes before the caches have listed anything (a pod
/// deleted right after it started, or a test that is over quickly) must
/// still stop the controller: kube-runtime's runner would otherwise wait
/// forever for a cache whose watch has already stopped.
#[tokio::test]
async fn the_controller_stops_at_once_even_right_after_it_started() -> Result<()> {
    let mut env = TestEnv::without_controller("early-stop").await?;
    env.apply_yaml(&canary("      steps: [{setWeight: 50}, {pause: {}}]"))
        .await?;
    env.start_controller();
    wait_rollout(&env, "web", "the first deploy", healthy).await?;
    env.stop_controller().await?;
    // Stopped mid-update too: the update starts while it stands stopped.
    set_image(&env, "nginx:2").await?;
    for delay_ms in [0, 0, 1, 5, 20, 50, 100, 300] {
        env.start_controller();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let started = std::time::Instant::now();
        env.stop_controller()
            .await
            .with_context(|| format!("stopping {delay_ms} ms after the start"))?;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "stopping {delay_ms} ms after the start took {:?}",
            started.elapsed()
        );
    }
    // Stopped that often, it still takes the update to its pause.
    env.start_controller();
    wait_rollout(&env, "web", "paused at the step", paused).await?;
    env.cleanup().await
}
