//! Malformed Rollouts on a real control plane, next to valid ones.
//!
//! Each file in tests/fixtures/malformed/ is one malformed Rollout (with
//! the AnalysisTemplate it needs, if any), adapted from upstream's
//! expected-failure examples and validation rules. Its header says what
//! the controller must answer:
//! - `# expect: MESSAGE`: the InvalidSpec condition (status True) with
//!   exactly this message, phase Degraded, and no ReplicaSet;
//! - `# expect-prefix: TEXT`: the same, with a message starting so (the
//!   rest is the API server's wording);
//! - `# admission: TEXT`: the API server itself refuses the Rollout (the
//!   CRD's schema), with an error containing TEXT.
//!
//! Meanwhile three valid Rollouts (a canary with steps, a rolling canary
//! and a blue-green) in the same namespace go through a first deploy and an
//! image update to Healthy: the controller neither crashes nor stalls on
//! the malformed ones. Then malformed Rollouts are fixed and recover, and a
//! healthy Rollout updated to a template the API server refuses keeps its
//! running ReplicaSet untouched.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::api::rollout::{RolloutPhase, RolloutStatus};
use serde_json::json;
use support::{TestEnv, healthy, wait_rollout};

/// What a fixture's header says the controller must answer.
#[derive(Debug)]
enum Expect {
    Exactly(String),
    Prefix(String),
    Admission(String),
}

struct Fixture {
    name: String,
    yaml: String,
    expect: Expect,
}

fn fixtures() -> Result<Vec<Fixture>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let yaml = std::fs::read_to_string(&path)?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("fixture name")?
            .to_string();
        let header = |key: &str| {
            yaml.lines()
                .take_while(|l| l.starts_with('#'))
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .map(str::to_string)
        };
        let expect = match (
            header("expect"),
            header("expect-prefix"),
            header("admission"),
        ) {
            (Some(m), None, None) => Expect::Exactly(m),
            (None, Some(p), None) => Expect::Prefix(p),
            (None, None, Some(a)) => Expect::Admission(a),
            _ => bail!(
                "{}: needs exactly one expect/expect-prefix/admission line",
                path.display()
            ),
        };
        ensure!(
            yaml.contains(&format!("metadata: {{name: {name}}}")),
            "{}: the Rollout must be named after the file",
            path.display()
        );
        out.push(Fixture { name, yaml, expect });
    }
    ensure!(out.len() >= 20, "only {} fixtures", out.len());
    Ok(out)
}

fn valid(name: &str, strategy: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{{name: app, image: "nginx:1"}}]
  strategy:
{strategy}
"#
    )
}

fn service(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{port: 80}}]\n"
    )
}

/// The three valid Rollouts, by name.
const VALID: [&str; 3] = ["good-steps", "good-rolling", "good-bluegreen"];

async fn apply_valid(env: &TestEnv) -> Result<()> {
    let docs = [
        service("good-steps-stable", "good-steps"),
        service("good-steps-canary", "good-steps"),
        service("good-bluegreen-active", "good-bluegreen"),
        service("good-bluegreen-preview", "good-bluegreen"),
        valid(
            "good-steps",
            "    canary:\n      stableService: good-steps-stable\n      canaryService: good-steps-canary\n      steps: [{setWeight: 50}, {pause: {duration: 1}}]",
        ),
        valid(
            "good-rolling",
            "    canary: {maxSurge: 1, maxUnavailable: 0}",
        ),
        valid(
            "good-bluegreen",
            "    blueGreen: {activeService: good-bluegreen-active, previewService: good-bluegreen-preview}",
        ),
    ];
    env.apply_yaml(&docs.join("---\n")).await
}

async fn set_image(env: &TestEnv, name: &str, image: &str) -> Result<()> {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    env.api::<Rollout>()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// The InvalidSpec condition's message once it is True on the current
/// generation with phase Degraded.
async fn invalid_spec(env: &TestEnv, name: &str) -> Result<String> {
    let s = wait_rollout(env, name, "InvalidSpec and Degraded", |s| {
        s.phase == Some(RolloutPhase::Degraded) && invalid_condition(s).is_some()
    })
    .await?;
    Ok(invalid_condition(&s).unwrap_or_default())
}

fn invalid_condition(s: &RolloutStatus) -> Option<String> {
    s.conditions
        .iter()
        .find(|c| c.r#type == "InvalidSpec" && c.status == "True")
        .map(|c| c.message.clone().unwrap_or_default())
}

/// The ReplicaSets controlled by each Rollout, by Rollout name.
async fn replica_sets(env: &TestEnv) -> Result<BTreeMap<String, Vec<ReplicaSet>>> {
    let mut out: BTreeMap<String, Vec<ReplicaSet>> = BTreeMap::new();
    for rs in env
        .api::<ReplicaSet>()
        .list(&Default::default())
        .await?
        .items
    {
        let owner = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone());
        if let Some(owner) = owner {
            out.entry(owner).or_default().push(rs);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rollouts_are_invalid_specs_and_valid_ones_keep_going() -> Result<()> {
    let started = Instant::now();
    let env = TestEnv::new("malformed").await?;
    let fixtures = fixtures()?;

    // The malformed ones first, so the valid ones are planned among them.
    let mut refused = Vec::new();
    for f in &fixtures {
        let applied = env.apply_yaml(&f.yaml).await;
        match (&f.expect, applied) {
            (Expect::Admission(want), Err(e)) => {
                let e = format!("{e:#}");
                ensure!(e.contains(want.as_str()), "{}: refused with {e}", f.name);
                refused.push(f.name.clone());
            }
            (Expect::Admission(_), Ok(())) => bail!("{}: the API server accepted it", f.name),
            (_, Err(e)) => return Err(e.context(format!("applying {}", f.name))),
            (_, Ok(())) => {}
        }
    }
    apply_valid(&env).await?;

    for name in VALID {
        wait_rollout(&env, name, "the first deploy", healthy).await?;
        set_image(&env, name, "nginx:2").await?;
    }
    for name in VALID {
        let s = wait_rollout(&env, name, "Healthy on nginx:2", |s| {
            healthy(s) && s.stable_rs.is_some() && s.stable_rs == s.current_pod_hash
        })
        .await?;
        ensure!(
            invalid_condition(&s).is_none(),
            "{name}: {:?}",
            s.conditions
        );
    }
    let valid_done = started.elapsed();

    let mut messages = Vec::new();
    for f in &fixtures {
        let message = match &f.expect {
            Expect::Admission(_) => continue,
            Expect::Exactly(want) => {
                let got = invalid_spec(&env, &f.name).await?;
                ensure!(&got == want, "{}:\n got  {got}\n want {want}", f.name);
                got
            }
            Expect::Prefix(want) => {
                let got = invalid_spec(&env, &f.name).await?;
                ensure!(
                    got.starts_with(want.as_str()),
                    "{}:\n got  {got}\n want {want}...",
                    f.name
                );
                ensure!(
                    got.len() > want.len() && !got.contains('\n'),
                    "{}: {got:?}",
                    f.name
                );
                got
            }
        };
        let ro = env.api::<Rollout>().get(&f.name).await?;
        let s = ro.status.unwrap_or_default();
        ensure!(
            s.message.as_deref() == Some(format!("InvalidSpec: {message}").as_str()),
            "{}: status.message {:?}",
            f.name,
            s.message
        );
        messages.push((f.name.clone(), message));
    }
    let rss = replica_sets(&env).await?;
    for f in &fixtures {
        ensure!(
            !rss.contains_key(&f.name),
            "{} has ReplicaSets: {:?}",
            f.name,
            rss[&f.name]
                .iter()
                .map(|r| r.metadata.name.clone())
                .collect::<Vec<_>>()
        );
    }
    for (name, message) in &messages {
        eprintln!("{name}: {message}");
    }
    eprintln!(
        "{} malformed ({} refused at admission), valid ones updated in {valid_done:?}",
        fixtures.len(),
        refused.len()
    );

    // Fixed, a malformed Rollout recovers and the condition goes.
    let fixed = fixtures
        .iter()
        .find(|f| f.name == "set-weight-over-100")
        .context("fixture set-weight-over-100")?;
    env.apply_yaml(&fixed.yaml.replace("setWeight: 120", "setWeight: 20"))
        .await?;
    let s = wait_rollout(&env, "set-weight-over-100", "Healthy once fixed", healthy).await?;
    ensure!(
        invalid_condition(&s).is_none() && !s.conditions.iter().any(|c| c.r#type == "InvalidSpec"),
        "{:?}",
        s.conditions
    );
    // So does one the API server refused, once its template is valid.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1", "resources": null}]}}}});
    env.api::<Rollout>()
        .patch(
            "invalid-quantity",
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    let s = wait_rollout(&env, "invalid-quantity", "Healthy once fixed", healthy).await?;
    ensure!(
        !s.conditions.iter().any(|c| c.r#type == "InvalidSpec"),
        "{:?}",
        s.conditions
    );

    env.cleanup().await
}

/// A healthy Rollout updated to a pod template the API server refuses:
/// InvalidSpec with the API server's reason, the running ReplicaSet left
/// as it was (same size, still the stable one), and a good template
/// afterwards rolls out as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_to_a_refused_template_leaves_the_running_pods_alone() -> Result<()> {
    let env = TestEnv::new("refused-update").await?;
    env.apply_yaml(&valid(
        "web",
        "    canary: {steps: [{setWeight: 50}, {pause: {duration: 1}}]}",
    ))
    .await?;
    let first = wait_rollout(&env, "web", "the first deploy", healthy).await?;
    let before = replica_sets(&env).await?.remove("web").unwrap_or_default();
    ensure!(before.len() == 1, "one ReplicaSet: {}", before.len());

    // Pods of a ReplicaSet must restart: the API server says so (422).
    let patch = json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}});
    env.api::<Rollout>()
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let message = invalid_spec(&env, "web").await?;
    ensure!(
        message.starts_with("The Rollout \"web\" is invalid: ")
            && message.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\""),
        "{message}"
    );
    // It stays so (no create is retried into a different answer), and the
    // running ReplicaSet is untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = replica_sets(&env).await?.remove("web").unwrap_or_default();
    let sizes = |rss: &[ReplicaSet]| -> Vec<(Option<String>, Option<i32>, Option<String>)> {
        rss.iter()
            .map(|r| {
                (
                    r.metadata.name.clone(),
                    r.spec.as_ref().and_then(|s| s.replicas),
                    r.metadata.resource_version.clone(),
                )
            })
            .collect()
    };
    ensure!(
        sizes(&after) == sizes(&before),
        "{:?} -> {:?}",
        sizes(&before),
        sizes(&after)
    );
    let s = env
        .api::<Rollout>()
        .get("web")
        .await?
        .status
        .unwrap_or_default();
    ensure!(s.stable_rs == first.stable_rs, "{:?}", s.stable_rs);
    ensure!(invalid_condition(&s).as_deref() == Some(message.as_str()));

    // A good template again: a normal update to Healthy.
    let patch = json!({"spec": {"template": {"spec": {"restartPolicy": null, "containers": [{"name": "app", "image": "nginx:2"}]}}}});
    env.api::<Rollout>()
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    let s = wait_rollout(&env, "web", "Healthy on nginx:2", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    ensure!(
        !s.conditions.iter().any(|c| c.r#type == "InvalidSpec"),
        "{:?}",
        s.conditions
    );
    env.cleanup().await
}
