//! A Rollout applied before the objects it names (Services, the nginx
//! stable Ingress, analysis templates, nested ones, a ClusterAnalysisTemplate,
//! the workloadRef Deployment) reports InvalidSpec, then becomes Healthy
//! soon after the object appears: the object's watch event reconciles it,
//! rather than the 20 s retry of an invalid spec. Also the
//! `RolloutAddedToInformer` event, once per Rollout per controller start.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use kube::api::{Api, DeleteParams};
use rollouts::api::INSTANCE_ID_LABEL;
use rollouts::api::Rollout;
use rollouts::api::analysis::ClusterAnalysisTemplate;
use rollouts::settings::Scope;
use support::{TestEnv, healthy, wait_for};

/// How soon after the missing object appears the Rollout must be Healthy.
const QUICK: Duration = Duration::from_secs(5);

/// A one-replica canary Rollout `name` with `canary` as its canary strategy
/// (indented six spaces) and `extra` lines in its spec (two spaces).
fn rollout(name: &str, labels: &str, extra: &str, canary: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  replicas: 1
{extra}  strategy:
    canary:
{canary}"#
    )
}

const TEMPLATE: &str = r#"  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
"#;

fn service(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
  selector: {{app: web}}
"#
    )
}

/// An AnalysisTemplate (or ClusterAnalysisTemplate) with one web metric and
/// the nested templates `nested` names. The metric never runs: a first
/// deploy starts no analysis.
fn analysis_template(kind: &str, name: &str, nested: &[&str]) -> String {
    let nested = if nested.is_empty() {
        String::new()
    } else {
        let refs: Vec<String> = nested
            .iter()
            .map(|n| format!("{{templateName: {n}}}"))
            .collect();
        format!("  templates: [{}]\n", refs.join(", "))
    };
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: {kind}
metadata: {{name: {name}}}
spec:
{nested}  metrics:
  - name: {name}-up
    provider: {{web: {{url: "http://127.0.0.1:1/healthz"}}}}
"#
    )
}

/// Waits until the Rollout reports InvalidSpec, and returns the message.
async fn invalid_spec(env: &TestEnv, name: &str) -> Result<String> {
    let api = env.api::<Rollout>();
    wait_for(
        &format!("InvalidSpec on {name}"),
        Duration::from_secs(30),
        || async {
            let s = api.get(name).await?.status.unwrap_or_default();
            Ok(s.conditions
                .iter()
                .find(|c| c.r#type == "InvalidSpec")
                .map(|c| c.message.clone().unwrap_or_default())
                .ok_or_else(|| format!("phase {:?} ({:?})", s.phase, s.message)))
        },
    )
    .await
}

/// Applies `yaml` (what the InvalidSpec message names as missing), then
/// waits until the Rollout is Healthy on its current generation, and
/// checks that this took at most [`QUICK`] from the object's creation.
/// The wait itself allows a minute, so a failure shows how long it took.
async fn healthy_soon_after(env: &TestEnv, name: &str, what: &str, yaml: &str) -> Result<()> {
    env.apply_yaml(yaml).await?;
    let created = Instant::now();
    let api = env.api::<Rollout>();
    wait_for(
        &format!("Rollout {name} Healthy after {what}"),
        Duration::from_secs(60),
        || async {
            let ro = api.get(name).await?;
            let generation = ro.metadata.generation.map(|g| g.to_string());
            let s = ro.status.unwrap_or_default();
            Ok(if s.observed_generation == generation && healthy(&s) {
                Ok(())
            } else {
                Err(format!("phase {:?} ({:?})", s.phase, s.message))
            })
        },
    )
    .await?;
    let took = created.elapsed();
    eprintln!("{name}: Healthy {took:.1?} after {what} was created");
    ensure!(
        took <= QUICK,
        "{name} became Healthy {took:.1?} after {what} was created (at most {QUICK:?} expected)"
    );
    Ok(())
}

#[tokio::test]
async fn services_created_after_the_rollout() -> Result<()> {
    let env = TestEnv::new("refs-svc").await?;
    env.apply_yaml(&rollout(
        "web",
        "",
        TEMPLATE,
        "      stableService: web-stable\n      canaryService: web-canary\n",
    ))
    .await?;
    let message = invalid_spec(&env, "web").await?;
    ensure!(message.contains("web-stable"), "{message}");
    let services = format!("{}---\n{}", service("web-stable"), service("web-canary"));
    healthy_soon_after(&env, "web", "the Services", &services).await?;
    env.cleanup().await
}

#[tokio::test]
async fn an_analysis_template_created_after_the_rollout() -> Result<()> {
    let env = TestEnv::new("refs-tpl").await?;
    // A background analysis and a step analysis, each naming its template.
    env.apply_yaml(&rollout(
        "web",
        "",
        TEMPLATE,
        r#"      analysis: {templates: [{templateName: background}]}
      steps:
      - setWeight: 50
      - analysis: {templates: [{templateName: step}]}
"#,
    ))
    .await?;
    // The steps' templates are checked first, as upstream.
    let message = invalid_spec(&env, "web").await?;
    ensure!(message.contains("'step'"), "{message}");
    env.apply_yaml(&analysis_template("AnalysisTemplate", "step", &[]))
        .await?;
    // Still missing the background template (and now saying so).
    wait_for(
        "InvalidSpec about the background template",
        Duration::from_secs(30),
        || async {
            let message = invalid_spec(&env, "web").await?;
            Ok(if message.contains("'background'") {
                Ok(())
            } else {
                Err(message)
            })
        },
    )
    .await?;
    let background = analysis_template("AnalysisTemplate", "background", &[]);
    healthy_soon_after(&env, "web", "the background AnalysisTemplate", &background).await?;
    env.cleanup().await
}

#[tokio::test]
async fn a_nested_analysis_template_created_after_the_rollout() -> Result<()> {
    let env = TestEnv::new("refs-nested").await?;
    env.apply_yaml(&analysis_template("AnalysisTemplate", "outer", &["inner"]))
        .await?;
    env.apply_yaml(&rollout(
        "web",
        "",
        TEMPLATE,
        "      analysis: {templates: [{templateName: outer}]}\n",
    ))
    .await?;
    let message = invalid_spec(&env, "web").await?;
    ensure!(message.contains("inner"), "{message}");
    let inner = analysis_template("AnalysisTemplate", "inner", &[]);
    healthy_soon_after(&env, "web", "the nested AnalysisTemplate", &inner).await?;
    env.cleanup().await
}

#[tokio::test]
async fn an_nginx_stable_ingress_created_after_the_rollout() -> Result<()> {
    let env = TestEnv::new("refs-ingress").await?;
    let services = format!("{}---\n{}", service("web-stable"), service("web-canary"));
    env.apply_yaml(&services).await?;
    env.apply_yaml(&rollout(
        "web",
        "",
        TEMPLATE,
        r#"      stableService: web-stable
      canaryService: web-canary
      trafficRouting: {nginx: {stableIngress: web}}
      steps: [{setWeight: 20}, {pause: {}}]
"#,
    ))
    .await?;
    let message = invalid_spec(&env, "web").await?;
    ensure!(message.contains("web"), "{message}");
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {kubernetes.io/ingress.class: nginx}
spec:
  rules:
  - host: web.local
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web-stable, port: {number: 80}}}
"#;
    healthy_soon_after(&env, "web", "the stable Ingress", ingress).await?;
    // The canary Ingress, from the same reconcile.
    let canary = env
        .api::<k8s_openapi::api::networking::v1::Ingress>()
        .get_opt("web-web-canary")
        .await?;
    ensure!(canary.is_some(), "no canary Ingress");
    env.cleanup().await
}

#[tokio::test]
async fn a_workload_deployment_created_after_the_rollout() -> Result<()> {
    let env = TestEnv::new("refs-deploy").await?;
    env.apply_yaml(&rollout(
        "web",
        "",
        "  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n",
        "      steps: [{setWeight: 20}, {pause: {}}]\n",
    ))
    .await?;
    let message = invalid_spec(&env, "web").await?;
    ensure!(message.contains("web"), "{message}");
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "nginx:1"}]}
"#;
    healthy_soon_after(&env, "web", "the Deployment", deployment).await?;
    env.cleanup().await
}

/// ClusterAnalysisTemplates are watched only by a controller that watches
/// every namespace (a namespaced install cannot read them): this one runs
/// cluster-wide with an instance id of its own, so it sees only this
/// test's Rollout and the other tests' controllers leave it alone.
#[tokio::test]
async fn a_cluster_analysis_template_created_after_the_rollout() -> Result<()> {
    let mut env = TestEnv::without_controller("refs-cat").await?;
    let id = env.ns.clone();
    env.start_controller_in(Scope {
        namespace: None,
        instance_id: Some(id.clone()),
    });
    let template = format!("cat-{id}");
    let result = async {
        env.apply_yaml(&rollout(
            "web",
            &format!("{INSTANCE_ID_LABEL}: {id}"),
            TEMPLATE,
            &format!(
                "      analysis: {{templates: [{{templateName: {template}, clusterScope: true}}]}}\n"
            ),
        ))
        .await?;
        let message = invalid_spec(&env, "web").await?;
        ensure!(message.contains(&template), "{message}");
        let cat = analysis_template("ClusterAnalysisTemplate", &template, &[]);
        healthy_soon_after(&env, "web", "the ClusterAnalysisTemplate", &cat).await
    }
    .await;
    let _ = Api::<ClusterAnalysisTemplate>::all(env.client.clone())
        .delete(&template, &DeleteParams::default())
        .await;
    result?;
    env.cleanup().await
}

/// Upstream's `RolloutAddedToInformer`: one Normal event when the
/// controller's watch first shows a Rollout, and one more per controller
/// start, whatever else happens to the Rollout.
#[tokio::test]
async fn a_new_rollout_is_announced_once_per_controller_start() -> Result<()> {
    let mut env = TestEnv::new("refs-added").await?;
    env.apply_yaml(&rollout(
        "web",
        "",
        TEMPLATE,
        "      steps: [{setWeight: 50}]\n",
    ))
    .await?;
    support::wait_rollout(&env, "web", "Healthy", healthy).await?;
    let want = format!("Rollout resource added to informer: {}/web", env.ns);
    ensure!(
        announced(&env, 1, &want).await?,
        "type or message: {:?}",
        env.events("web").await?
    );
    // Many watch events later (the first deploy wrote the status several
    // times), still one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        announced(&env, 1, &want).await?,
        "{:?}",
        env.events("web").await?
    );
    env.stop_controller().await?;
    env.start_controller();
    ensure!(
        announced(&env, 2, &want).await?,
        "{:?}",
        env.events("web").await?
    );
    env.cleanup().await
}

/// Waits until `web` has `n` RolloutAddedToInformer events; true when all of
/// them are Normal and say `want`.
async fn announced(env: &TestEnv, n: usize, want: &str) -> Result<bool> {
    wait_for(
        &format!("{n} RolloutAddedToInformer event(s)"),
        Duration::from_secs(30),
        || async {
            let events = env.events("web").await?;
            let added: Vec<_> = events
                .iter()
                .filter(|(_, reason, _)| reason == "RolloutAddedToInformer")
                .collect();
            Ok(if added.len() == n {
                Ok(added
                    .iter()
                    .all(|(kind, _, message)| kind == "Normal" && message == want))
            } else {
                Err(format!("{events:?}"))
            })
        },
    )
    .await
}
