//! The CRDs in crds/ match the Rust types, the real API server accepts them,
//! and Argo Rollouts manifests apply unchanged and round-trip.

mod support;

use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use rollouts::api::rollout::BlueGreenStrategy;
use rollouts::api::{AnalysisTemplate, ClusterAnalysisTemplate, Rollout};
use support::{TestEnv, repo_root};

#[test]
fn committed_crds_match_the_types() {
    for (file, crd) in rollouts::api::crds() {
        let path = repo_root().join("crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = rollouts::api::render_crd(&crd).expect("render CRD");
        assert!(
            committed == generated,
            "{} is out of date with src/api: run `cargo run --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_serves_the_kinds_with_upstream_names_and_columns() -> Result<()> {
    let client = support::client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let ro = crds.get("rollouts.argoproj.io").await?;
    assert_eq!(ro.spec.names.short_names, Some(vec!["ro".to_string()]));
    let v = &ro.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let sub = v.subresources.clone().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.HPAReplicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<String> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        ["Desired", "Current", "Up-to-date", "Available", "Age"]
    );

    for (name, short, scope) in [
        ("analysistemplates.argoproj.io", "at", "Namespaced"),
        ("clusteranalysistemplates.argoproj.io", "cat", "Cluster"),
        ("analysisruns.argoproj.io", "ar", "Namespaced"),
    ] {
        let crd = crds.get(name).await?;
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec![short.to_string()]),
            "{name}"
        );
        assert_eq!(crd.spec.scope, scope, "{name}");
    }
    let ar = crds.get("analysisruns.argoproj.io").await?;
    let columns: Vec<String> = ar.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(columns, ["Status", "Age"]);
    // As upstream's: no status subresource, the status is written through
    // the main resource (upstream's controller does so; so does ours).
    assert!(
        ar.spec.versions[0].subresources.is_none(),
        "{:?}",
        ar.spec.versions[0].subresources
    );
    let env = TestEnv::without_controller("crd-ar-status").await?;
    env.apply_yaml(
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisRun\nmetadata: {name: r}\nspec:\n  metrics: [{name: m, provider: {web: {url: 'http://127.0.0.1:1'}}}]\n",
    )
    .await?;
    let runs = env.api::<rollouts::api::AnalysisRun>();
    runs.patch(
        "r",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "Successful"}})),
    )
    .await?;
    let phase = runs.get("r").await?.status.and_then(|s| s.phase);
    assert_eq!(
        phase,
        Some(rollouts::api::analysis::AnalysisPhase::Successful)
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_example_rollouts_apply_and_round_trip() -> Result<()> {
    // No controller: this checks what the API server stores.
    let env = TestEnv::without_controller("examples").await?;
    for file in ["rollout-canary.yaml", "rollout-bluegreen.yaml"] {
        let yaml = std::fs::read_to_string(repo_root().join("tests/fixtures").join(file))?;
        env.apply_yaml(&yaml).await?;
    }
    let canary = env.api::<Rollout>().get("rollout-canary").await?;
    let steps = &canary.spec.strategy.canary.as_ref().expect("canary").steps;
    assert_eq!(steps.len(), 8);
    assert_eq!(steps[0].set_weight, Some(20));
    assert!(
        steps[1]
            .pause
            .as_ref()
            .is_some_and(|p| p.duration.is_none()),
        "pause {{}} kept as indefinite"
    );
    assert_eq!(
        steps[3].pause.as_ref().and_then(|p| p.duration.clone()),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(40))
    );
    assert_eq!(canary.spec.replicas, Some(5));

    let bg = env.api::<Rollout>().get("rollout-bluegreen").await?;
    let BlueGreenStrategy {
        active_service,
        preview_service,
        auto_promotion_enabled,
        ..
    } = bg.spec.strategy.blue_green.clone().expect("blueGreen");
    assert_eq!(active_service, "rollout-bluegreen-active");
    assert_eq!(
        preview_service.as_deref(),
        Some("rollout-bluegreen-preview")
    );
    assert_eq!(auto_promotion_enabled, Some(false));

    for file in ["web-success-rate.yaml", "job-smoke-test.yaml"] {
        let yaml = std::fs::read_to_string(repo_root().join("analysis-examples").join(file))?;
        env.apply_yaml(&yaml).await?;
    }
    let web = env
        .api::<AnalysisTemplate>()
        .get("web-success-rate")
        .await?;
    assert_eq!(
        web.spec.metrics[0]
            .provider
            .web
            .as_ref()
            .map(|w| w.url.as_str()),
        Some("{{args.service-url}}/metrics/summary")
    );
    let job = env.api::<AnalysisTemplate>().get("job-smoke-test").await?;
    assert!(job.spec.metrics[0].provider.job.is_some());

    // Cluster-scoped: applied and removed here, not in the namespace.
    let yaml =
        std::fs::read_to_string(repo_root().join("analysis-examples/prometheus-error-rate.yaml"))?;
    let cat: ClusterAnalysisTemplate = serde_yaml::from_str(&yaml)?;
    let cats: Api<ClusterAnalysisTemplate> = Api::all(env.client.clone());
    let name = format!(
        "{}-{}",
        cat.metadata.name.clone().unwrap_or_default(),
        env.ns
    );
    let mut cat = cat;
    cat.metadata.name = Some(name.clone());
    cats.create(&Default::default(), &cat).await?;
    let stored = cats.get(&name).await?;
    assert_eq!(stored.spec.template.metrics[0].name, "error-rate");
    cats.delete(&name, &Default::default()).await?;
    env.cleanup().await
}
