//! Upstream's own `kubectl-argo-rollouts` (v1.10.2, built by
//! hack/build-argo-rollouts.sh) against Rollouts managed by this controller
//! (issue 27: "upstream's plugin works on a fresh install of ours"). A
//! canary and a blue-green are driven with upstream's plugin only; each verb
//! is checked by its exit code, a stable part of its output (upstream's own
//! wording, from pkg/kubectl-argo-rollouts/cmd) and the objects it leaves,
//! read through kube.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use rollouts::api::Rollout;
use rollouts::api::analysis::{AnalysisPhase, AnalysisRun};
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::{TestEnv, healthy, kubeconfig, paused, repo_root, wait_for, wait_rollout};

/// Upstream's plugin, built once per machine and cached by version.
fn upstream_plugin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(
        || match support::hack_script("build-argo-rollouts.sh", &[]) {
            Ok(dir) => dir.join("kubectl-argo-rollouts"),
            Err(e) => panic!("{e}"),
        },
    )
}

/// No invocation may take longer than this: a hang is a failure, not a
/// stuck test run.
const PLUGIN_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs upstream's plugin with `args` (nothing else added), killed if it
/// has not returned within `deadline`.
async fn run(args: &[&str], deadline: Duration) -> Result<Out> {
    let start = Instant::now();
    let child = tokio::process::Command::new(upstream_plugin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting upstream's kubectl-argo-rollouts")?;
    let out = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!("upstream's plugin {args:?} did not return within {deadline:?}"),
    };
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    })
}

/// `kubectl-argo-rollouts --kubeconfig K -n NS ARGS...`
async fn argo_within(env: &TestEnv, args: &[&str], deadline: Duration) -> Result<Out> {
    let kubeconfig = kubeconfig().to_str().context("kubeconfig path")?;
    let mut full = vec!["--kubeconfig", kubeconfig, "-n", env.ns.as_str()];
    full.extend_from_slice(args);
    run(&full, deadline).await
}

/// Asserts exit 0 and an empty stderr; returns stdout.
async fn ok(env: &TestEnv, args: &[&str]) -> Result<String> {
    let out = argo_within(env, args, PLUGIN_DEADLINE).await?;
    ensure!(
        out.code == 0,
        "{args:?} exited {}: stdout {:?}, stderr {:?}",
        out.code,
        out.stdout,
        out.stderr
    );
    // Nothing on stderr either: no API server warning (an unknown or
    // pruned field), no client-side complaint.
    ensure!(out.stderr.is_empty(), "{args:?}: stderr {:?}", out.stderr);
    Ok(out.stdout)
}

/// Asserts exit 1 (cobra's error exit) and `message` on stderr; returns
/// the output.
async fn fails(env: &TestEnv, args: &[&str], message: &str) -> Result<Out> {
    let out = argo_within(env, args, PLUGIN_DEADLINE).await?;
    ensure!(out.code == 1, "{args:?} should exit 1: {out:?}");
    ensure!(
        out.stderr.contains(message),
        "{args:?}: stderr {:?} lacks {message:?}",
        out.stderr
    );
    Ok(out)
}

/// Runs a `--watch` command for `time`, kills it and returns its stdout.
async fn watch_for(env: &TestEnv, args: &[&str], time: Duration) -> Result<String> {
    let mut child = tokio::process::Command::new(upstream_plugin())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["-n", &env.ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(time).await;
    if let Some(status) = child.try_wait()? {
        bail!("{args:?} ended by itself ({status}) instead of watching");
    }
    child.start_kill()?;
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("the killed watch did not end")??;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `get rollout`'s header field `label` ("Status:", ...).
fn field<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
}

/// The line of the `get rollout` tree (or a table) naming `name`.
fn line_of<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
}

async fn rollout(env: &TestEnv, name: &str) -> Result<Rollout> {
    Ok(env.api::<Rollout>().get(name).await?)
}

fn image(ro: &Rollout) -> Option<String> {
    ro.spec.template.as_ref()?.spec.as_ref()?.containers[0]
        .image
        .clone()
}

fn status(ro: &Rollout) -> RolloutStatus {
    ro.status.clone().unwrap_or_default()
}

/// The names of the ReplicaSets in the namespace, and each one's revision.
/// Metadata only: a full ReplicaSet list overflows a test thread's stack in
/// a debug build.
async fn replica_sets(env: &TestEnv) -> Result<Vec<(String, String)>> {
    let list = env
        .api::<ReplicaSet>()
        .list_metadata(&ListParams::default())
        .await?;
    let mut out: Vec<_> = list
        .items
        .into_iter()
        .map(|rs| {
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("rollout.argoproj.io/revision"))
                .cloned()
                .unwrap_or_default();
            (rs.metadata.name.unwrap_or_default(), revision)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn names(rss: &[(String, String)]) -> Vec<&str> {
    rss.iter().map(|(n, _)| n.as_str()).collect()
}

/// The hash of the ReplicaSet at `revision`.
fn hash_at(rollout: &str, rss: &[(String, String)], revision: &str) -> Result<String> {
    rss.iter()
        .find(|(_, r)| r == revision)
        .and_then(|(n, _)| n.strip_prefix(&format!("{rollout}-")))
        .map(str::to_string)
        .with_context(|| format!("no ReplicaSet of revision {revision}: {rss:?}"))
}

/// The UIDs of the running pods labelled app=`app` (not being deleted).
async fn pod_uids(env: &TestEnv, app: &str) -> Result<BTreeSet<String>> {
    let list = env
        .api::<Pod>()
        .list_metadata(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid)
        .collect())
}

async fn analysis_runs(env: &TestEnv) -> Result<Vec<AnalysisRun>> {
    Ok(env
        .api::<AnalysisRun>()
        .list(&ListParams::default())
        .await?
        .items)
}

/// A canary whose last step is an analysis that measures every second, a
/// thousand times: it runs until terminated.
fn canary(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: endless}}
spec:
  metrics:
  - name: ok
    interval: 1s
    count: 1000
    successCondition: result == true
    provider:
      web: {{url: "{url}/ok", jsonPath: "{{$.ok}}"}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
    canary:
      steps:
      - setWeight: 50
      - pause: {{}}
      - analysis: {{templates: [{{templateName: endless}}]}}
"#
    )
}

const STEPS: i32 = 3;

#[tokio::test]
async fn upstream_plugin_drives_a_canary() -> Result<()> {
    let started = Instant::now();
    let env = TestEnv::new("upstream-plugin-canary").await?;
    let server = TestServer::start(vec![Reply::json(200, json!({"ok": true}))]).await?;
    env.apply_yaml(&canary(&server.url())).await?;
    wait_rollout(&env, "web", "the first deploy", healthy).await?;

    // get rollout / status / list on a Healthy canary.
    let get = ok(&env, &["get", "rollout", "web", "--no-color"]).await?;
    assert_eq!(field(&get, "Name:"), Some("web"), "{get}");
    assert_eq!(field(&get, "Namespace:"), Some(env.ns.as_str()), "{get}");
    assert_eq!(field(&get, "Status:"), Some("✔ Healthy"), "{get}");
    assert_eq!(field(&get, "Strategy:"), Some("Canary"), "{get}");
    assert_eq!(field(&get, "Step:"), Some("3/3"), "{get}");
    assert_eq!(field(&get, "Images:"), Some("nginx:1 (stable)"), "{get}");
    assert!(get.contains("# revision:1"), "{get}");
    // Colored by default, and still the same tree.
    let colored = ok(&env, &["get", "rollout", "web"]).await?;
    assert!(
        colored.contains('\x1b') && colored.contains("Healthy"),
        "{colored}"
    );
    let out = ok(&env, &["status", "web", "--timeout", "30s"]).await?;
    assert_eq!(out, "Healthy\n");
    let out = ok(&env, &["status", "web", "--watch=false"]).await?;
    assert_eq!(out, "Healthy\n");
    let list = ok(&env, &["list", "rollouts"]).await?;
    let row: Vec<_> = line_of(&list, "web")
        .with_context(|| format!("no row for web: {list}"))?
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "web", "Canary", "Healthy", "3/3", "100", "2/2", "2", "2", "2"
        ],
        "{list}"
    );
    assert!(list.starts_with("NAME"), "{list}");

    // set image: a spec update, which pauses at step 1.
    let before = replica_sets(&env).await?;
    let out = ok(&env, &["set", "image", "web", "app=nginx:2"]).await?;
    assert_eq!(out, "rollout \"web\" image updated\n");
    assert_eq!(
        image(&rollout(&env, "web").await?).as_deref(),
        Some("nginx:2")
    );
    fails(
        &env,
        &["set", "image", "web", "nope=x"],
        "Error: unable to find container named \"nope\"",
    )
    .await?;
    let s = wait_rollout(&env, "web", "the pause of step 1", paused).await?;
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(s.message.as_deref(), Some("CanaryPauseStep"));
    let rss = replica_sets(&env).await?;
    assert_eq!(rss.len(), before.len() + 1, "one new ReplicaSet: {rss:?}");
    let stable = hash_at("web", &rss, "1")?;
    let two = hash_at("web", &rss, "2")?;

    let get = ok(&env, &["get", "rollout", "web", "--no-color"]).await?;
    assert_eq!(field(&get, "Status:"), Some("॥ Paused"), "{get}");
    assert_eq!(field(&get, "Message:"), Some("CanaryPauseStep"), "{get}");
    assert_eq!(field(&get, "Step:"), Some("1/3"), "{get}");
    assert_eq!(field(&get, "SetWeight:"), Some("50"), "{get}");
    let canary_line = line_of(&get, &format!("web-{two}"))
        .with_context(|| format!("no line for the canary: {get}"))?;
    assert!(
        canary_line.contains("ReplicaSet") && canary_line.trim_end().ends_with("canary"),
        "{canary_line}"
    );
    let stable_line = line_of(&get, &format!("web-{stable}"))
        .with_context(|| format!("no line for the stable: {get}"))?;
    assert!(stable_line.trim_end().ends_with("stable"), "{stable_line}");
    let list = ok(&env, &["list", "rollouts"]).await?;
    let row: Vec<_> = line_of(&list, "web")
        .with_context(|| format!("no row for web: {list}"))?
        .split_whitespace()
        .collect();
    assert_eq!(row[..5], ["web", "Canary", "Paused", "1/3", "50"], "{list}");
    assert_eq!(row[6..8], ["2", "1"], "desired 2, up to date 1: {list}");

    // get --watch prints the tree until interrupted.
    let out = watch_for(
        &env,
        &["get", "rollout", "web", "--watch", "--no-color"],
        Duration::from_secs(3),
    )
    .await?;
    assert!(
        out.contains("Name:") && out.contains("# revision:2"),
        "{out}"
    );

    // status on a paused rollout: gives up after --timeout, exit 1.
    let out = argo_within(
        &env,
        &["status", "web", "--timeout", "5s"],
        Duration::from_secs(30),
    )
    .await
    .context("status --timeout 5s must return (it hung without an Experiment CRD)")?;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "Paused - CanaryPauseStep\n");
    assert!(
        out.stderr
            .contains("Error: Rollout status watch exceeded timeout"),
        "{out:?}"
    );
    assert!(
        out.took >= Duration::from_secs(5) && out.took < Duration::from_secs(20),
        "status --timeout 5s took {:?}",
        out.took
    );
    let out = ok(&env, &["status", "web", "--watch=false"]).await?;
    assert_eq!(out, "Paused - CanaryPauseStep\n");

    // pause: spec.paused; the phase says so.
    let out = ok(&env, &["pause", "web"]).await?;
    assert_eq!(out, "rollout 'web' paused\n");
    assert!(rollout(&env, "web").await?.spec.paused);
    wait_rollout(&env, "web", "manually paused", |s| {
        paused(s) && s.message.as_deref() == Some("manually paused")
    })
    .await?;

    // promote: unpauses and clears the pause conditions; the canary moves
    // on to its analysis step, whose run keeps measuring.
    let out = ok(&env, &["promote", "web"]).await?;
    assert_eq!(out, "rollout 'web' promoted\n");
    let ro = rollout(&env, "web").await?;
    assert!(!ro.spec.paused);
    assert!(status(&ro).pause_conditions.is_empty(), "{:?}", ro.status);
    wait_rollout(&env, "web", "the analysis step", |s| {
        s.current_step_index == Some(2)
    })
    .await?;
    let run_name = wait_for(
        "a running AnalysisRun with measurements",
        Duration::from_secs(60),
        || async {
            let runs = analysis_runs(&env).await?;
            let running: Vec<_> = runs
                .iter()
                .filter(|r| {
                    let s = r.status.clone().unwrap_or_default();
                    s.phase == Some(AnalysisPhase::Running)
                        && s.metric_results.first().map(|m| m.successful).unwrap_or(0) >= 2
                })
                .collect();
            Ok(match running.as_slice() {
                [run] if runs.len() == 1 => Ok(run.metadata.name.clone().unwrap_or_default()),
                _ => Err(format!("{} runs, {} running", runs.len(), running.len())),
            })
        },
    )
    .await?;
    let get = ok(&env, &["get", "rollout", "web", "--no-color"]).await?;
    let run_line =
        line_of(&get, &run_name).with_context(|| format!("no line for {run_name}: {get}"))?;
    assert!(
        run_line.contains("AnalysisRun") && run_line.contains("Running"),
        "{run_line}"
    );

    // terminate analysisrun: spec.terminate; the run ends Successful
    // ("Run Terminated") and the canary completes.
    let out = ok(&env, &["terminate", "analysisrun", &run_name]).await?;
    assert_eq!(out, format!("analysisRun '{run_name}' terminated\n"));
    let run = env.api::<AnalysisRun>().get(&run_name).await?;
    assert!(run.spec.terminate);
    let run = support::wait_run_completed(&env, &run_name).await?;
    let run_status = run.status.unwrap_or_default();
    assert_eq!(run_status.phase, Some(AnalysisPhase::Successful));
    assert_eq!(run_status.message.as_deref(), Some("Run Terminated"));
    let s = wait_rollout(&env, "web", "Healthy on nginx:2", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(two.as_str())
    })
    .await?;
    assert_eq!(s.current_step_index, Some(STEPS));
    fails(
        &env,
        &["terminate", "analysisrun", "nope"],
        "Error: analysisruns.argoproj.io \"nope\" not found",
    )
    .await?;
    let out = ok(&env, &["status", "web", "--timeout", "30s"]).await?;
    assert_eq!(out, "Healthy\n");

    // abort: status.abort; Degraded; status exits 1 with the message.
    ok(&env, &["set", "image", "web", "app=nginx:3"]).await?;
    wait_rollout(&env, "web", "the pause of nginx:3", |s| {
        paused(s) && s.current_step_index == Some(1)
    })
    .await?;
    let rss = replica_sets(&env).await?;
    let three = hash_at("web", &rss, "3")?;
    let out = ok(&env, &["abort", "web"]).await?;
    assert_eq!(out, "rollout 'web' aborted\n");
    assert!(status(&rollout(&env, "web").await?).abort);
    let s = wait_rollout(&env, "web", "the abort", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    assert_eq!(s.stable_rs.as_deref(), Some(two.as_str()));
    let message = "RolloutAborted: Rollout aborted update to revision 3";
    assert_eq!(s.message.as_deref(), Some(message));
    let get = ok(&env, &["get", "rollout", "web", "--no-color"]).await?;
    assert_eq!(field(&get, "Status:"), Some("✖ Degraded"), "{get}");
    assert_eq!(field(&get, "Message:"), Some(message), "{get}");
    let out = fails(
        &env,
        &["status", "web", "--timeout", "30s"],
        &format!("Error: The rollout is in a degraded state with message: {message}"),
    )
    .await?;
    assert_eq!(out.stdout, format!("Degraded - {message}\n"));
    assert!(out.took < Duration::from_secs(20), "{:?}", out.took);
    let out = fails(
        &env,
        &["status", "web", "--watch=false"],
        &format!("Error: The rollout is in a degraded state with message: {message}"),
    )
    .await?;
    assert_eq!(out.stdout, "Degraded\n");

    // retry rollout: abort cleared; back to the pause of step 1.
    let out = ok(&env, &["retry", "rollout", "web"]).await?;
    assert_eq!(out, "rollout 'web' retried\n");
    assert!(!status(&rollout(&env, "web").await?).abort);
    wait_rollout(&env, "web", "the pause after retry", |s| {
        paused(s) && s.current_step_index == Some(1) && !s.abort
    })
    .await?;

    // undo of the paused canary to the stable revision: a fast rollback
    // (the stable ReplicaSet again, Healthy, no steps, no new ReplicaSet,
    // no new AnalysisRun).
    let before = replica_sets(&env).await?;
    let runs_before = analysis_runs(&env).await?.len();
    let out = ok(&env, &["undo", "web"]).await?;
    assert_eq!(out, "rollout 'web' undo\n");
    assert_eq!(
        image(&rollout(&env, "web").await?).as_deref(),
        Some("nginx:2")
    );
    let s = wait_rollout(&env, "web", "the fast rollback", healthy).await?;
    assert_eq!(s.stable_rs.as_deref(), Some(two.as_str()));
    assert_eq!(s.current_pod_hash.as_deref(), Some(two.as_str()));
    assert_eq!(s.current_step_index, Some(STEPS), "no steps walked");
    let after = replica_sets(&env).await?;
    assert_eq!(names(&after), names(&before), "no new ReplicaSet");
    assert_eq!(analysis_runs(&env).await?.len(), runs_before, "no new run");

    // undo --to-revision 3: nginx:3's ReplicaSet again, and its steps
    // again (it is not the stable).
    fails(
        &env,
        &["undo", "web", "--to-revision", "99"],
        "Error: unable to find specified revision 99 in history",
    )
    .await?;
    let out = ok(&env, &["undo", "web", "--to-revision", "3"]).await?;
    assert_eq!(out, "rollout 'web' undo\n");
    assert_eq!(
        image(&rollout(&env, "web").await?).as_deref(),
        Some("nginx:3")
    );
    let s = wait_rollout(&env, "web", "the pause of revision 3 again", |s| {
        paused(s) && s.current_pod_hash.as_deref() == Some(three.as_str())
    })
    .await?;
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(
        names(&replica_sets(&env).await?),
        names(&before),
        "no new ReplicaSet"
    );

    // promote --full: straight to the end, past the analysis step.
    let out = ok(&env, &["promote", "web", "--full"]).await?;
    assert_eq!(out, "rollout 'web' fully promoted\n");
    let s = wait_rollout(&env, "web", "fully promoted to nginx:3", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(three.as_str())
    })
    .await?;
    assert_eq!(s.current_step_index, Some(STEPS));
    assert!(!s.promote_full, "promoteFull is cleared once promoted");
    assert_eq!(
        analysis_runs(&env).await?.len(),
        runs_before,
        "analysis skipped"
    );
    let rss = replica_sets(&env).await?;
    let latest = rss
        .iter()
        .filter_map(|(_, r)| r.parse::<u32>().ok())
        .max()
        .unwrap_or_default();
    let out = ok(&env, &["undo", "web", "--to-revision", &latest.to_string()]).await?;
    assert_eq!(
        out,
        format!("skipped rollback (current template already matches revision {latest})")
    );

    // restart: spec.restartAt; every pod is replaced, then restartedAt.
    let pods = wait_for(
        "the 2 pods of nginx:3 alone",
        Duration::from_secs(30),
        || async {
            let pods = pod_uids(&env, "web").await?;
            Ok(if pods.len() == 2 {
                Ok(pods)
            } else {
                Err(format!("{pods:?}"))
            })
        },
    )
    .await?;
    // restartAt is a whole second, and a pod is restarted only if it was
    // made before it (as upstream): one made in the same second as the
    // restart is not. Let the pods' second pass first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = ok(&env, &["restart", "web"]).await?;
    assert_eq!(out, "rollout 'web' restarts in 0s\n");
    let restart_at = rollout(&env, "web")
        .await?
        .spec
        .restart_at
        .context("restart sets spec.restartAt")?;
    wait_rollout(&env, "web", "restarted", |s| {
        healthy(s) && s.restarted_at.as_ref() == Some(&restart_at)
    })
    .await?;
    let now = pod_uids(&env, "web").await?;
    assert!(
        now.is_disjoint(&pods),
        "every pod replaced: {pods:?} -> {now:?}"
    );
    assert_eq!(
        names(&replica_sets(&env).await?),
        names(&rss),
        "no new ReplicaSet"
    );

    // Errors name the object, as upstream's client does.
    fails(
        &env,
        &["promote", "nope"],
        "Error: rollouts.argoproj.io \"nope\" not found",
    )
    .await?;
    fails(
        &env,
        &["status", "nope", "--timeout", "5s"],
        "Error: rollout.argoproj.io \"nope\" not found",
    )
    .await?;
    eprintln!("canary with upstream's plugin: {:?}", started.elapsed());
    drop(server);
    env.cleanup().await
}

const BLUE_GREEN: &str = r#"apiVersion: v1
kind: Service
metadata: {name: bg-active}
spec: {selector: {app: bg}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bg-preview}
spec: {selector: {app: bg}, ports: [{port: 80}]}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: bg}
spec:
  replicas: 1
  selector: {matchLabels: {app: bg}}
  template:
    metadata: {labels: {app: bg}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
  strategy:
    blueGreen: {activeService: bg-active, previewService: bg-preview, autoPromotionEnabled: false}
"#;

/// The pod-template hash a Service selects.
async fn selected(env: &TestEnv, service: &str) -> Result<Option<String>> {
    let svc = env.api::<Service>().get(service).await?;
    Ok(svc
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("rollouts-pod-template-hash").cloned()))
}

#[tokio::test]
async fn upstream_plugin_drives_a_blue_green() -> Result<()> {
    let started = Instant::now();
    let env = TestEnv::new("upstream-plugin-bg").await?;
    env.apply_yaml(BLUE_GREEN).await?;
    let first = wait_rollout(&env, "bg", "the first deploy", healthy).await?;
    let one = first.stable_rs.clone().context("a stable ReplicaSet")?;

    let get = ok(&env, &["get", "rollout", "bg", "--no-color"]).await?;
    assert_eq!(field(&get, "Status:"), Some("✔ Healthy"), "{get}");
    assert_eq!(field(&get, "Strategy:"), Some("BlueGreen"), "{get}");
    assert_eq!(
        field(&get, "Images:"),
        Some("nginx:1 (stable, active)"),
        "{get}"
    );
    assert_eq!(ok(&env, &["status", "bg"]).await?, "Healthy\n");

    // set image: the new ReplicaSet behind the preview Service, paused.
    let out = ok(&env, &["set", "image", "bg", "app=nginx:2"]).await?;
    assert_eq!(out, "rollout \"bg\" image updated\n");
    let s = wait_rollout(&env, "bg", "the pause before promotion", paused).await?;
    assert_eq!(s.message.as_deref(), Some("BlueGreenPause"));
    let two = s.current_pod_hash.clone().context("currentPodHash")?;
    assert_ne!(two, one);
    assert_eq!(
        selected(&env, "bg-active").await?.as_deref(),
        Some(one.as_str())
    );
    assert_eq!(
        selected(&env, "bg-preview").await?.as_deref(),
        Some(two.as_str())
    );

    let get = ok(&env, &["get", "rollout", "bg", "--no-color"]).await?;
    assert_eq!(field(&get, "Status:"), Some("॥ Paused"), "{get}");
    assert_eq!(field(&get, "Message:"), Some("BlueGreenPause"), "{get}");
    let preview = line_of(&get, &format!("bg-{two}"))
        .with_context(|| format!("no line for the preview: {get}"))?;
    assert!(preview.trim_end().ends_with("preview"), "{preview}");
    let active = line_of(&get, &format!("bg-{one}"))
        .with_context(|| format!("no line for the active: {get}"))?;
    assert!(active.trim_end().ends_with("stable,active"), "{active}");
    let list = ok(&env, &["list", "rollouts"]).await?;
    let row: Vec<_> = line_of(&list, "bg")
        .with_context(|| format!("no row for bg: {list}"))?
        .split_whitespace()
        .collect();
    assert_eq!(row[..5], ["bg", "BlueGreen", "Paused", "-", "-"], "{list}");

    let out = argo_within(
        &env,
        &["status", "bg", "--timeout", "5s"],
        Duration::from_secs(30),
    )
    .await
    .context("status --timeout 5s must return")?;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "Paused - BlueGreenPause\n");
    assert!(
        out.stderr
            .contains("Error: Rollout status watch exceeded timeout"),
        "{out:?}"
    );
    assert!(out.took < Duration::from_secs(20), "took {:?}", out.took);

    // promote: the active Service moves to the new ReplicaSet.
    let out = ok(&env, &["promote", "bg"]).await?;
    assert_eq!(out, "rollout 'bg' promoted\n");
    assert!(
        status(&rollout(&env, "bg").await?)
            .pause_conditions
            .is_empty()
    );
    let s = wait_rollout(&env, "bg", "promoted", |s| {
        healthy(s) && s.stable_rs.as_deref() == Some(two.as_str())
    })
    .await?;
    assert_eq!(s.blue_green.active_selector.as_deref(), Some(two.as_str()));
    assert_eq!(
        selected(&env, "bg-active").await?.as_deref(),
        Some(two.as_str())
    );
    assert_eq!(
        ok(&env, &["status", "bg", "--timeout", "30s"]).await?,
        "Healthy\n"
    );

    // abort of the next update: the active Service stays on nginx:2.
    ok(&env, &["set", "image", "bg", "app=nginx:3"]).await?;
    let s = wait_rollout(&env, "bg", "the pause of nginx:3", paused).await?;
    let three = s.current_pod_hash.clone().context("currentPodHash")?;
    let out = ok(&env, &["abort", "bg"]).await?;
    assert_eq!(out, "rollout 'bg' aborted\n");
    let message = "RolloutAborted: Rollout aborted update to revision 3";
    wait_rollout(&env, "bg", "aborted", |s| {
        s.phase == Some(RolloutPhase::Degraded) && s.message.as_deref() == Some(message)
    })
    .await?;
    assert_eq!(
        selected(&env, "bg-active").await?.as_deref(),
        Some(two.as_str())
    );
    let out = fails(
        &env,
        &["status", "bg"],
        &format!("Error: The rollout is in a degraded state with message: {message}"),
    )
    .await?;
    assert_eq!(out.stdout, format!("Degraded - {message}\n"));

    // undo to the stable (active) revision: fast rollback, no new
    // ReplicaSet.
    let before = replica_sets(&env).await?;
    let out = ok(&env, &["undo", "bg"]).await?;
    assert_eq!(out, "rollout 'bg' undo\n");
    let s = wait_rollout(&env, "bg", "the fast rollback", |s| {
        healthy(s) && s.current_pod_hash.as_deref() == Some(two.as_str())
    })
    .await?;
    assert_eq!(s.stable_rs.as_deref(), Some(two.as_str()));
    assert_eq!(
        selected(&env, "bg-active").await?.as_deref(),
        Some(two.as_str())
    );
    assert_eq!(
        names(&replica_sets(&env).await?),
        names(&before),
        "no new ReplicaSet"
    );
    assert_ne!(three, two);

    // promote --full on the next update: no pause.
    ok(&env, &["set", "image", "bg", "app=nginx:4"]).await?;
    wait_rollout(&env, "bg", "the pause of nginx:4", paused).await?;
    let out = ok(&env, &["promote", "bg", "--full"]).await?;
    assert_eq!(out, "rollout 'bg' fully promoted\n");
    let s = wait_rollout(&env, "bg", "fully promoted to nginx:4", |s| {
        healthy(s) && s.stable_rs != Some(two.clone())
    })
    .await?;
    assert_eq!(
        selected(&env, "bg-active").await?,
        s.stable_rs,
        "the active Service on nginx:4"
    );
    assert_eq!(
        image(&rollout(&env, "bg").await?).as_deref(),
        Some("nginx:4")
    );
    eprintln!("blue-green with upstream's plugin: {:?}", started.elapsed());
    env.cleanup().await
}

/// `lint` needs no cluster: our own example manifests pass upstream's
/// validation, and an invalid one fails with upstream's message (each
/// error on stdout, the first as cobra's error on stderr).
#[tokio::test]
async fn upstream_lint_accepts_our_examples_and_rejects_an_invalid_one() -> Result<()> {
    let root = repo_root();
    for file in [
        "tests/fixtures/rollout-canary.yaml",
        "tests/fixtures/rollout-bluegreen.yaml",
        "examples/demo/canary.yaml",
        "examples/demo/bluegreen.yaml",
    ] {
        let path = root.join(file);
        let out = run(
            &["lint", "-f", path.to_str().unwrap_or_default()],
            PLUGIN_DEADLINE,
        )
        .await?;
        assert_eq!(out.code, 0, "{file}: {out:?}");
        assert_eq!(out.stdout, "", "{file}");
    }
    let bad = std::env::temp_dir().join(format!("upstream-lint-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        canary("http://127.0.0.1:9").replace("setWeight: 50", "setWeight: 150"),
    )?;
    let out = run(
        &["lint", "-f", bad.to_str().unwrap_or_default()],
        PLUGIN_DEADLINE,
    )
    .await?;
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stdout,
        "Invalid value: 150: SetWeight needs to be between 0 and 100\n"
    );
    assert_eq!(
        out.stderr,
        "Error: spec.strategy.steps[0].setWeight: Invalid value: 150: SetWeight needs to be between 0 and 100\n"
    );
    Ok(())
}
