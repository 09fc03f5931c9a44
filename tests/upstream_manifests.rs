//! Upstream Argo Rollouts v1.10.2's own YAML against our CRDs: every
//! Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun and
//! Experiment in its `examples/` and in the YAML blocks of its `docs/`
//! (vendored in tests/fixtures/upstream-v1.10.2 by hack/upstream-examples.py)
//! is created with a server-side dry run, and every field of the input must
//! be in what the API server returns. A field missing there is one our
//! schema prunes, which a user switching from Argo Rollouts would silently
//! lose.

mod support;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::Value;
use support::{TestEnv, repo_root};

const FIXTURES: &str = "tests/fixtures/upstream-v1.10.2";

/// Documents that are not YAML at all (kubectl refuses them too), as
/// (file, index of the document in the file).
const NOT_YAML: &[(&str, usize)] = &[
    // `linkerd.io/inject: {{args.linkerd-enabled}}` unquoted: a mapping
    // used as a key.
    ("examples/traffic-management/rollout-linkerd.yaml", 4),
];

/// Fields upstream's own CRD prunes as well (checked against
/// manifests/crds of v1.10.2): mistakes in its docs, not fields it serves.
const UPSTREAM_PRUNES_TOO: &[(&str, &str)] = &[
    // replicaProgressThreshold is a field of the canary strategy; the
    // reference page shows it as a step.
    (
        "docs/features/specification/L5.yaml",
        "spec.strategy.canary.steps[6].replicaProgressThreshold",
    ),
];

/// Objects upstream's own API server refuses as well, as (file, the field
/// the refusal names): `args[].value` is a string in both schemas, and these
/// docs give it a number.
const UPSTREAM_REFUSES_TOO: &[(&str, &str)] = &[
    ("docs/features/analysis/L136.yaml", "spec.args[1].value"),
    ("docs/features/analysis/L217.yaml", "spec.args[1].value"),
];

const KINDS: [&str; 5] = [
    "Rollout",
    "AnalysisTemplate",
    "ClusterAnalysisTemplate",
    "AnalysisRun",
    "Experiment",
];

/// The fixture files, sorted, relative to FIXTURES.
fn fixture_files() -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let root = repo_root().join(FIXTURES);
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    let mut files: Vec<PathBuf> = files
        .into_iter()
        .map(|p| p.strip_prefix(&root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;
    files.sort();
    Ok(files)
}

/// The documents of a YAML stream, split at `---` lines as kubectl does,
/// each parsed on its own (None for an empty one).
fn documents(text: &str) -> Vec<Result<Option<Value>, serde_yaml::Error>> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.iter()
        .map(|d| serde_yaml::from_str::<Option<Value>>(d))
        .collect()
}

/// Paths of the fields (and list items) of `input` that `output` lacks.
/// A null in the input is no field: the API server drops nulls where the
/// schema does not allow them, upstream's as ours.
fn missing(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (key, value) in i {
                if value.is_null() {
                    continue;
                }
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match o.get(key) {
                    Some(v) => missing(value, v, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, value) in i.iter().enumerate() {
                let here = format!("{path}[{n}]");
                match o.get(n) {
                    Some(v) => missing(value, v, &here, out),
                    None => out.push(here),
                }
            }
        }
        // A value of another shape (an int-or-string read as a string, a
        // default filled in) is not a pruned field.
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_examples_and_docs_apply_without_losing_a_field() -> Result<()> {
    // No controller: this checks what the API server keeps.
    let env = TestEnv::without_controller("upstream-yaml").await?;
    let resources = [
        ApiResource::erase::<rollouts::api::Rollout>(&()),
        ApiResource::erase::<rollouts::api::AnalysisTemplate>(&()),
        ApiResource::erase::<rollouts::api::ClusterAnalysisTemplate>(&()),
        ApiResource::erase::<rollouts::api::AnalysisRun>(&()),
        ApiResource::erase::<rollouts::api::experiment::Experiment>(&()),
    ];
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some("upstream-manifests-test".into()),
    };

    let mut failures = Vec::new();
    let mut applied = std::collections::BTreeMap::<String, usize>::new();
    let mut expected_pruned_seen = Vec::new();
    let mut expected_refusals_seen = 0;
    for file in fixture_files()? {
        let name = file.to_string_lossy().to_string();
        let text = std::fs::read_to_string(repo_root().join(FIXTURES).join(&file))?;
        for (index, doc) in documents(&text).into_iter().enumerate() {
            let doc = match doc {
                Ok(Some(doc)) => doc,
                Ok(None) => continue,
                Err(e) => {
                    if !NOT_YAML.contains(&(name.as_str(), index)) {
                        failures.push(format!("{name}: document {index} is not YAML: {e}"));
                    }
                    continue;
                }
            };
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            if !KINDS.contains(&kind.as_str()) || !api_version.starts_with("argoproj.io/") {
                continue;
            }
            let Some(resource) = resources.iter().find(|r| r.kind == kind) else {
                continue;
            };
            let object_name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let what = format!("{name}: {kind}/{object_name}");
            let mut obj: DynamicObject = serde_json::from_value(doc.clone())
                .with_context(|| format!("{what}: not an object"))?;
            // Two of upstream's docs name runs with capitals, which no API
            // server takes; the name is not what this test is about.
            obj.metadata.name = Some(object_name.to_lowercase());
            let api: Api<DynamicObject> = if kind == "ClusterAnalysisTemplate" {
                Api::all_with(env.client.clone(), resource)
            } else {
                obj.metadata.namespace = Some(env.ns.clone());
                Api::namespaced_with(env.client.clone(), &env.ns, resource)
            };
            let stored = match api.create(&dry_run, &obj).await {
                Ok(stored) => serde_json::to_value(&stored)?,
                Err(kube::Error::Api(e))
                    if UPSTREAM_REFUSES_TOO.iter().any(|(f, field)| {
                        *f == name
                            && e.details
                                .as_ref()
                                .is_some_and(|d| d.causes.len() == 1 && d.causes[0].field == *field)
                    }) =>
                {
                    expected_refusals_seen += 1;
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{what}: refused: {e}"));
                    continue;
                }
            };
            *applied.entry(kind.clone()).or_default() += 1;
            let mut lost = Vec::new();
            missing(&doc, &stored, "", &mut lost);
            // The status subresource ignores a status sent with a create,
            // upstream's as ours (Rollout is the only kind with one
            // upstream; ours serves Experiments without one, as upstream).
            lost.retain(|p| !(kind == "Rollout" && (p == "status" || p.starts_with("status."))));
            lost.retain(|p| p != "metadata.namespace");
            for path in lost {
                if UPSTREAM_PRUNES_TOO.contains(&(name.as_str(), path.as_str())) {
                    expected_pruned_seen.push((name.clone(), path));
                } else {
                    failures.push(format!("{what}: {path} was pruned"));
                }
            }
        }
    }

    let total: usize = applied.values().sum();
    assert!(
        failures.is_empty(),
        "{} problem(s) with upstream's YAML ({total} objects applied: {applied:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // So that the test cannot pass by applying nothing.
    assert!(total >= 75, "only {total} objects applied: {applied:?}");
    for kind in KINDS {
        assert!(applied.contains_key(kind), "no {kind} applied: {applied:?}");
    }
    // The entries above are still what they say (a stale one is a defect).
    assert_eq!(
        expected_pruned_seen.len(),
        UPSTREAM_PRUNES_TOO.len(),
        "{expected_pruned_seen:?}"
    );
    assert_eq!(expected_refusals_seen, UPSTREAM_REFUSES_TOO.len());
    env.cleanup().await
}

/// Status fields upstream writes for what this controller does not run (the
/// ALB router, step plugins) are kept as they are: by the API server, and by
/// the controller when it writes the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fields_of_upstream_features_survive_our_controller() -> Result<()> {
    let mut env = TestEnv::without_controller("upstream-status").await?;
    let yaml = std::fs::read_to_string(
        repo_root()
            .join(FIXTURES)
            .join("examples/rollout-canary.yaml"),
    )?;
    env.apply_yaml(&yaml).await?;
    // Shaped as upstream's ALBStatus and StepPluginStatus (types.go).
    let aws = |kind: &str| {
        serde_json::json!({
            "name": format!("{kind}-name"),
            "arn": format!("arn:aws:elasticloadbalancing:eu-west-1:123456789012:{kind}"),
            "fullName": format!("{kind}/full"),
        })
    };
    let alb = |ingress: &str| {
        serde_json::json!({
            "loadBalancer": aws("loadbalancer"),
            "canaryTargetGroup": aws("targetgroup-canary"),
            "stableTargetGroup": aws("targetgroup-stable"),
            "ingress": ingress,
        })
    };
    let extras = serde_json::json!({
        "alb": alb("ingress-a"),
        "albs": [alb("ingress-a"), alb("ingress-b")],
        "canary": {"stepPluginStatuses": [{
            "index": 1,
            "name": "example/plugin",
            "operation": "Run",
            "phase": "Running",
            "message": "working",
            "startedAt": "2025-01-02T03:04:05Z",
            "updatedAt": "2025-01-02T03:04:06Z",
            "finishedAt": "2025-01-02T03:04:07Z",
            "backoff": "5s",
            "executions": 2,
            "disabled": true,
            "status": {"any": {"thing": ["the", "plugin", "keeps"]}},
        }]},
    });
    support::patch_status(&env, "rollout-canary", extras.clone()).await?;
    let raw = |env: &TestEnv| {
        let resource = ApiResource::erase::<rollouts::api::Rollout>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &resource);
        async move { anyhow::Ok(api.get("rollout-canary").await?.data["status"].clone()) }
    };
    let mut lost = Vec::new();
    missing(&extras, &raw(&env).await?, "status", &mut lost);
    assert!(lost.is_empty(), "the API server pruned {lost:?}");

    // The controller deploys it and writes its status: the rest stays.
    env.start_controller();
    support::wait_rollout(&env, "rollout-canary", "Healthy", support::healthy).await?;
    let status = raw(&env).await?;
    missing(&extras, &status, "status", &mut lost);
    assert!(lost.is_empty(), "lost {lost:?} from {status}");
    assert_eq!(status["alb"], extras["alb"]);
    assert_eq!(
        status["canary"]["stepPluginStatuses"],
        extras["canary"]["stepPluginStatuses"]
    );
    env.cleanup().await
}
