//! The real `kubectl-rollouts` binary against the local control plane: every
//! verb, checked by the object state it leaves, its exit code and stderr.

mod support;

use std::process::Command;

use anyhow::Result;
use rollouts::api::Rollout;
use rollouts::api::analysis::AnalysisRun;
use rollouts::api::rollout::RolloutPhase;
use support::{TestEnv, healthy, kubeconfig, paused, repo_root, wait_rollout};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the plugin with the test cluster's kubeconfig in the test's namespace.
async fn cli(env: &TestEnv, args: &[&str]) -> Result<Out> {
    let bin = env!("CARGO_BIN_EXE_kubectl-rollouts");
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .arg("-n")
        .arg(&env.ns)
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn offline(args: &[&str]) -> Result<Out> {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-rollouts"))
        .args(args)
        .output()?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a --watch command for `time`, interrupts it and returns its stdout.
async fn watch_for(env: &TestEnv, args: &[&str], time: std::time::Duration) -> Result<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-rollouts"))
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .arg("-n")
        .arg(&env.ns)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(time).await;
    child.kill()?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asserts success and returns stdout.
async fn ok(env: &TestEnv, args: &[&str]) -> Result<String> {
    let out = cli(env, args).await?;
    assert_eq!(out.code, 0, "{args:?} failed: {}{}", out.stdout, out.stderr);
    Ok(out.stdout)
}

/// Asserts failure with `message` on stderr.
async fn fails(env: &TestEnv, args: &[&str], message: &str) -> Result<()> {
    let out = cli(env, args).await?;
    assert_ne!(out.code, 0, "{args:?} should fail: {}", out.stdout);
    assert!(
        out.stderr.contains(message),
        "{args:?}: stderr {:?} lacks {message:?}",
        out.stderr
    );
    Ok(())
}

const ROLLOUT: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
  strategy:
    canary:
      steps:
      - setWeight: 50
      - pause: {}
"#;

async fn rollout(env: &TestEnv) -> Result<Rollout> {
    Ok(env.api::<Rollout>().get("web").await?)
}

fn image(ro: &Rollout) -> Option<String> {
    ro.spec.template.as_ref()?.spec.as_ref()?.containers[0]
        .image
        .clone()
}

#[tokio::test]
async fn every_verb_changes_what_upstream_changes() -> Result<()> {
    let env = TestEnv::new("cli-verbs").await?;
    env.apply_yaml(ROLLOUT).await?;
    wait_rollout(&env, "web", "the first deploy", healthy).await?;

    // status on a healthy rollout: exit 0.
    let out = ok(&env, &["status", "web", "--timeout", "30s"]).await?;
    assert_eq!(out.trim(), "Healthy");
    fails(
        &env,
        &["promote", "web"],
        "rollout 'web' has nothing to promote",
    )
    .await?;

    // set image starts an update that pauses at step 1.
    ok(&env, &["set", "image", "web", "app=nginx:2"]).await?;
    assert_eq!(image(&rollout(&env).await?).as_deref(), Some("nginx:2"));
    fails(
        &env,
        &["set", "image", "web", "nope=x"],
        "unable to find container named \"nope\"",
    )
    .await?;
    wait_rollout(&env, "web", "the pause", paused).await?;

    // get and list show it (full output is checked by render's unit tests).
    let get = ok(&env, &["get", "rollout", "web", "--no-color"]).await?;
    assert!(
        get.contains("web") && get.contains("Paused") && get.contains("nginx:2"),
        "{get}"
    );
    assert!(!get.contains('\x1b'), "--no-color");
    let list = ok(&env, &["list", "rollouts"]).await?;
    assert!(
        list.lines()
            .any(|l| l.starts_with("web") && l.contains("Canary") && l.contains("Paused")),
        "{list}"
    );

    // get --watch redraws until interrupted; list --watch prints the table.
    for (args, marker, at_least) in [
        (
            vec!["get", "rollout", "web", "--watch", "--no-color"],
            "Name:",
            2,
        ),
        (vec!["list", "rollouts", "--watch"], "NAME", 1),
    ] {
        let out = watch_for(&env, &args, std::time::Duration::from_millis(2500)).await?;
        assert!(out.matches(marker).count() >= at_least, "{args:?}: {out}");
        assert!(out.contains("web"), "{out}");
    }

    // status --watch on a paused rollout: times out (exit 1), or exits 0
    // with --exit-on-pause.
    fails(
        &env,
        &["status", "web", "--timeout", "2s"],
        "exceeded timeout",
    )
    .await?;
    let out = ok(&env, &["status", "web", "--exit-on-pause"]).await?;
    assert!(out.contains("Paused"), "{out}");

    // pause sets spec.paused; promote undoes it and clears the pause step
    // in one go (as upstream: a spec and a status patch); then it completes.
    ok(&env, &["pause", "web"]).await?;
    assert!(rollout(&env).await?.spec.paused);
    ok(&env, &["promote", "web"]).await?;
    let ro = rollout(&env).await?;
    assert!(!ro.spec.paused);
    ok(&env, &["status", "web", "--timeout", "60s"]).await?;

    // restart sets spec.restartAt.
    ok(&env, &["restart", "web"]).await?;
    assert!(rollout(&env).await?.spec.restart_at.is_some());

    // undo: back to the previous revision's template (nginx:1): its
    // ReplicaSet again, and the steps again (it is not the stable).
    fails(
        &env,
        &["undo", "web", "--to-revision", "99"],
        "unable to find specified revision 99",
    )
    .await?;
    ok(&env, &["undo", "web"]).await?;
    assert_eq!(image(&rollout(&env).await?).as_deref(), Some("nginx:1"));
    wait_rollout(&env, "web", "the pause of the rollback", paused).await?;

    // abort: status.abort, Degraded; status exits non-zero; retry clears it.
    ok(&env, &["abort", "web"]).await?;
    assert!(rollout(&env).await?.status.unwrap_or_default().abort);
    wait_rollout(&env, "web", "the abort", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    fails(
        &env,
        &["status", "web", "--timeout", "10s"],
        "degraded state",
    )
    .await?;
    ok(&env, &["retry", "rollout", "web"]).await?;
    assert!(!rollout(&env).await?.status.unwrap_or_default().abort);
    wait_rollout(&env, "web", "the pause after retry", paused).await?;

    // promote --full: straight to the end.
    ok(&env, &["promote", "web", "--full"]).await?;
    wait_rollout(&env, "web", "fully promoted", healthy).await?;

    // `*` sets every container.
    ok(&env, &["set", "image", "web", "*=nginx:3"]).await?;
    assert_eq!(image(&rollout(&env).await?).as_deref(), Some("nginx:3"));

    // Errors name the object.
    fails(
        &env,
        &["get", "rollout", "nope"],
        &format!("rollout 'nope' not found in namespace '{}'", env.ns),
    )
    .await?;
    fails(&env, &["abort", "nope"], "rollout 'nope' not found").await?;
    env.cleanup().await
}

/// The Rollout's ReplicaSets: name -> (pod-template hash, revision).
async fn replica_sets(
    env: &TestEnv,
) -> Result<std::collections::BTreeMap<String, (String, String)>> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    // Names, labels and annotations are all this needs.
    let list = env
        .api::<ReplicaSet>()
        .list_metadata(&kube::api::ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|rs| {
            let label = |m: &Option<std::collections::BTreeMap<String, String>>, k: &str| {
                m.as_ref()
                    .and_then(|m| m.get(k))
                    .cloned()
                    .unwrap_or_default()
            };
            (
                rs.metadata.name.clone().unwrap_or_default(),
                (
                    label(&rs.metadata.labels, "rollouts-pod-template-hash"),
                    label(&rs.metadata.annotations, "rollout.argoproj.io/revision"),
                ),
            )
        })
        .collect())
}

/// `undo` copies a ReplicaSet's template, with every default the API server
/// gave it, back into the Rollout. As upstream, the Rollout goes back to
/// that ReplicaSet instead of making a new one: undo of a paused canary to
/// the stable revision is a fast rollback (Healthy, no steps), and
/// `--to-revision N` reuses revision N's ReplicaSet.
#[tokio::test]
async fn undo_goes_back_to_the_replica_set_it_copies() -> Result<()> {
    let env = TestEnv::new("cli-undo").await?;
    undo_scenario(&env).await?;
    env.cleanup().await
}

async fn undo_scenario(env: &TestEnv) -> Result<()> {
    env.apply_yaml(ROLLOUT).await?;
    wait_rollout(env, "web", "the first deploy", healthy).await?;
    ok(env, &["set", "image", "web", "app=nginx:2"]).await?;
    wait_rollout(env, "web", "the pause", paused).await?;
    let before = replica_sets(env).await?;
    assert_eq!(before.len(), 2, "{before:?}");
    let stable = rollout(env).await?.status.unwrap_or_default().stable_rs;

    ok(env, &["undo", "web"]).await?;
    let status = wait_rollout(env, "web", "the fast rollback", healthy).await?;
    assert_eq!(status.stable_rs, stable, "the stable did not change");
    assert_eq!(
        status.current_pod_hash, stable,
        "back on the stable ReplicaSet"
    );
    assert_eq!(status.current_step_index, Some(2), "no steps walked");
    let after = replica_sets(env).await?;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no new ReplicaSet"
    );

    // nginx:3, then back to revision 2 (nginx:2): its ReplicaSet again, and
    // the steps again, since it is not the stable.
    ok(env, &["set", "image", "web", "app=nginx:3"]).await?;
    wait_rollout(env, "web", "the pause of nginx:3", paused).await?;
    let three = replica_sets(env).await?;
    assert_eq!(three.len(), 3, "{three:?}");
    let (two_name, (two_hash, _)) = before
        .iter()
        .find(|(_, (_, revision))| revision == "2")
        .map(|(n, v)| (n.clone(), v.clone()))
        .expect("revision 2");
    ok(env, &["undo", "web", "--to-revision", "2"]).await?;
    wait_rollout(env, "web", "the update back to revision 2", |s| {
        s.current_pod_hash.as_deref() == Some(two_hash.as_str())
            && s.phase == Some(RolloutPhase::Paused)
    })
    .await?;
    assert_eq!(image(&rollout(env).await?).as_deref(), Some("nginx:2"));
    let now = replica_sets(env).await?;
    assert_eq!(now.len(), 3, "no new ReplicaSet: {now:?}");
    assert!(now.contains_key(&two_name));
    Ok(())
}

#[tokio::test]
async fn terminate_analysisrun_sets_spec_terminate() -> Result<()> {
    let env = TestEnv::new("cli-terminate").await?;
    env.apply_yaml(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {name: slow}
spec:
  metrics:
  - name: never
    interval: 1h
    provider:
      web: {url: "http://127.0.0.1:9/"}
"#,
    )
    .await?;
    ok(&env, &["terminate", "analysisrun", "slow"]).await?;
    let run = env.api::<AnalysisRun>().get("slow").await?;
    assert!(run.spec.terminate);
    fails(
        &env,
        &["terminate", "analysisrun", "nope"],
        "analysisrun 'nope' not found",
    )
    .await?;
    env.cleanup().await
}

#[test]
fn offline_verbs_lint_plan_version_completion() -> Result<()> {
    let fixture = repo_root().join("tests/fixtures/rollout-canary.yaml");
    let out = offline(&["lint", fixture.to_str().unwrap_or_default()])?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    let bad = std::env::temp_dir().join("rollouts-cli-bad.yaml");
    std::fs::write(&bad, ROLLOUT.replace("setWeight: 50", "setWeight: 150"))?;
    let out = offline(&["lint", bad.to_str().unwrap_or_default()])?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("SetWeight needs to be between 0 and 100"),
        "{}",
        out.stderr
    );

    let out = offline(&["plan", fixture.to_str().unwrap_or_default()])?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("setWeight: 20"), "{}", out.stdout);

    let out = offline(&["version"])?;
    assert!(out.stdout.starts_with("kubectl-rollouts "));
    let out = offline(&["completion", "bash"])?;
    assert!(out.stdout.contains("kubectl-rollouts"));
    Ok(())
}

/// Issue 26: `promote --full` after an abort clears the abort and promotes
/// the update fully (upstream does, for canary as for blue-green).
#[tokio::test]
async fn promote_full_after_an_abort_promotes_the_canary() -> Result<()> {
    let env = TestEnv::new("cli-promote-full-aborted").await?;
    env.apply_yaml(ROLLOUT).await?;
    let first = wait_rollout(&env, "web", "the first deploy", healthy).await?;
    ok(&env, &["set", "image", "web", "app=nginx:2"]).await?;
    wait_rollout(&env, "web", "the pause", paused).await?;
    ok(&env, &["abort", "web"]).await?;
    wait_rollout(&env, "web", "aborted", |s| {
        s.phase == Some(RolloutPhase::Degraded) && s.abort
    })
    .await?;
    ok(&env, &["promote", "web", "--full"]).await?;
    let s = wait_rollout(&env, "web", "Healthy on nginx:2", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    assert!(
        !s.abort && s.aborted_at.is_none() && !s.promote_full,
        "{s:?}"
    );
    env.cleanup().await
}
