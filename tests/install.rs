//! The install manifests on a real control plane, and the real
//! `rollouts-controller` binary running with nothing but the ServiceAccount
//! they create: a canary with Services, nginx traffic routing, ephemeral
//! metadata, a job analysis with a secret argument and a restart goes from
//! the first deploy through an update to Healthy, and a workloadRef Rollout
//! takes over its Deployment. A permission missing from
//! the ClusterRole (or the namespace install's Role) shows as a rollout that
//! never gets there, and the controller's log, printed on failure, names
//! the forbidden call.
//!
//! kwok fakes the pods of the installed Deployment: its image never runs.
//! The controller under test is this repository's binary, out of cluster.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::api::analysis::ClusterAnalysisTemplate;
use serde_json::json;
use support::{
    TestEnv, healthy, kubeconfig, patch_status, paused, repo_root, set_image, wait_for,
    wait_rollout,
};

const INSTANCE_LABEL: &str = "argo-rollouts.argoproj.io/controller-instance-id";

/// The cluster's kubectl, as hack/cluster.sh records it next to the
/// kubeconfig.
fn kubectl() -> Result<Command> {
    let state = kubeconfig()
        .parent()
        .context("kubeconfig has no directory")?;
    let bin = std::fs::read_to_string(state.join("bin")).context("reading the cluster's bin")?;
    let mut cmd = Command::new(Path::new(bin.trim()).join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig());
    Ok(cmd)
}

/// Runs kubectl with the admin kubeconfig; fails with its stderr.
async fn run_kubectl(args: &[&str]) -> Result<String> {
    let mut cmd = kubectl()?;
    cmd.args(args).stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    ensure!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubeconfig that authenticates as ServiceAccount `sa` in `ns` and
/// nothing else: a token from the TokenRequest API, with the admin
/// kubeconfig's server and CA.
async fn service_account_kubeconfig(ns: &str, sa: &str, dir: &Path) -> Result<PathBuf> {
    let token = run_kubectl(&["create", "token", sa, "-n", ns, "--duration", "1h"]).await?;
    let admin = kube::config::Kubeconfig::read_from(kubeconfig())?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("admin kubeconfig has no cluster")?;
    let server = cluster.server.context("no server")?;
    let ca = cluster
        .certificate_authority
        .context("no certificate-authority")?;
    let path = dir.join(format!("{ns}-{sa}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}
users:
- name: {sa}
  user: {{token: \"{}\"}}
contexts:
- name: {sa}
  context: {{cluster: local, user: {sa}, namespace: {ns}}}
current-context: {sa}
",
            token.trim()
        ),
    )?;
    Ok(path)
}

/// A scratch directory for this test under the target directory.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

/// The real controller binary as a child process, killed when dropped (on
/// every exit path, panics included), its log kept in a file.
struct ControllerProcess {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
    healthz_port: u16,
}

impl ControllerProcess {
    fn start(kubeconfig: &Path, pod: (&str, &str), args: &[&str], log: PathBuf) -> Result<Self> {
        let [metrics_port, healthz_port] = support::process::free_ports()?;
        let out = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_rollouts-controller"))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("ROLLOUTS_NAMESPACE")
            .env("POD_NAMESPACE", pod.0)
            .env("POD_NAME", pod.1)
            .args(args)
            .arg(format!("--metricsport={metrics_port}"))
            .arg(format!("--healthzPort={healthz_port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting rollouts-controller")?;
        Ok(ControllerProcess {
            child,
            log,
            metrics_port,
            healthz_port,
        })
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("rollouts-controller exited ({status})");
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet stops a pod: the controller must exit 0.
    async fn terminate(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        run(Command::new("kill").args(["-TERM", &pid]))?;
        let status = wait_for(
            "the controller to exit after SIGTERM",
            Duration::from_secs(15),
            || {
                let exited = self.child.try_wait();
                async move {
                    Ok(match exited? {
                        Some(status) => Ok(status),
                        None => Err("still running".to_string()),
                    })
                }
            },
        )
        .await?;
        ensure!(status.success(), "exit status {status} after SIGTERM");
        Ok(())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- rollouts-controller log ---\n{}", self.logs());
        }
    }
}

/// Waits until Lease `name` has a holder.
async fn wait_lease(leases: &Api<Lease>, name: &str) -> Result<()> {
    wait_for(
        &format!("Lease {name} held"),
        Duration::from_secs(30),
        || async {
            let lease = leases.get_opt(name).await?;
            let holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_ref());
            Ok(match holder {
                Some(_) => Ok(()),
                None => Err(format!("{lease:?}")),
            })
        },
    )
    .await
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status()?;
    ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}

/// GET http://127.0.0.1:port/path over a plain socket: (status code, body).
async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The objects of the rollout under test. `template` is the analysis
/// template's kind and name; `labels` go on the Rollout.
fn workload(template_kind: &str, template: &str, labels: &str) -> String {
    let cluster_scope = template_kind == "ClusterAnalysisTemplate";
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: smoke-creds}}
stringData: {{token: s3cret}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-stable}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
  selector: {{app: web}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-canary}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
  selector: {{app: web}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {{kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: web.local
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: web-stable, port: {{number: 80}}}}}}
---
apiVersion: argoproj.io/v1alpha1
kind: {template_kind}
metadata: {{name: {template}}}
spec:
  args:
  - name: canary-hash
  - name: token
    valueFrom: {{secretKeyRef: {{name: smoke-creds, key: token}}}}
  metrics:
  - name: smoke
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: smoke
                image: curlimages/curl:8.10.1
                args: ["-fsS", "http://web-canary/healthz?hash={{{{args.canary-hash}}}}&token={{{{args.token}}}}"]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
  labels: {{{labels}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      canaryMetadata: {{labels: {{role: canary}}}}
      stableMetadata: {{labels: {{role: stable}}}}
      trafficRouting:
        nginx: {{stableIngress: web}}
      steps:
      - setWeight: 50
      - pause: {{}}
      - analysis:
          templates: [{{templateName: {template}, clusterScope: {cluster_scope}}}]
          args:
          - name: canary-hash
            valueFrom: {{podTemplateHashValue: Latest}}
"#
    )
}

/// First deploy, an update paused at step 1, promoted, through the job
/// analysis to Healthy, then a restart: each exercises a group of the
/// granted permissions.
async fn roll_out(env: &TestEnv) -> Result<()> {
    let first = wait_rollout(env, "web", "the first deploy", healthy).await?;
    // The canary Ingress (ingresses create) and the Services' selectors
    // (services patch).
    let canary = env
        .api::<k8s_openapi::api::networking::v1::Ingress>()
        .get("web-web-canary")
        .await?;
    assert!(canary.metadata.owner_references.is_some());

    set_image(env, "nginx:2").await?;
    wait_rollout(env, "web", "the pause at step 1", |s| {
        paused(s) && s.current_step_index == Some(1)
    })
    .await?;
    // Ephemeral metadata on running pods (pods list + patch).
    wait_for(
        "canary pods labelled role=canary",
        Duration::from_secs(60),
        || async {
            let pods = env
                .api::<Pod>()
                .list(&ListParams::default().labels("app=web,role=canary"))
                .await?;
            Ok(if pods.items.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(())
            })
        },
    )
    .await?;
    patch_status(env, "web", json!({"pauseConditions": null})).await?;
    // The analysis step: an AnalysisRun, its Job, the secret argument.
    let done = wait_rollout(env, "web", "Healthy after the analysis", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    let runs = env
        .api::<rollouts::api::analysis::AnalysisRun>()
        .list(&Default::default())
        .await?
        .items;
    let phases: Vec<_> = runs
        .iter()
        .map(|r| r.status.as_ref().and_then(|s| s.phase))
        .collect();
    assert_eq!(
        phases,
        [Some(rollouts::api::analysis::AnalysisPhase::Successful)]
    );
    assert_eq!(
        done.canary.weights.as_ref().map(|w| w.canary.weight),
        Some(0),
        "all traffic back on stable: {:?}",
        done.canary.weights
    );

    // restartAt: pods evicted (pods/eviction create).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let restart_at = Timestamp::from_second(Timestamp::now().as_second())?;
    env.api::<Rollout>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartAt": restart_at.to_string()}})),
        )
        .await?;
    wait_rollout(env, "web", "restartedAt set and Healthy", |s| {
        s.restarted_at.as_ref().map(|t| t.0) == Some(restart_at) && healthy(s)
    })
    .await?;

    // trafficRouting removed: the namespace's Ingresses listed, the canary
    // one deleted (ingresses list + delete).
    env.api::<Rollout>()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"strategy": {"canary": {"trafficRouting": null}}}})),
        )
        .await?;
    wait_for(
        "the canary Ingress deleted",
        Duration::from_secs(60),
        || async {
            let ingresses = env
                .api::<k8s_openapi::api::networking::v1::Ingress>()
                .list(&Default::default())
                .await?;
            let names: Vec<_> = ingresses
                .items
                .iter()
                .filter_map(|i| i.metadata.name.clone())
                .collect();
            Ok(if names == ["web"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            })
        },
    )
    .await?;
    wait_rollout(env, "web", "Healthy without trafficRouting", healthy).await?;

    // Events (events.k8s.io create).
    let events = env.events("web").await?;
    for reason in ["RolloutStepCompleted", "RolloutCompleted", "PodRestarted"] {
        assert!(
            events.iter().any(|(_, r, _)| r == reason),
            "no {reason} event: {events:?}"
        );
    }
    Ok(())
}

/// A Rollout `api` on the Deployment `api` (spec.workloadRef, scaleDown
/// onsuccess): the Deployment read (get), scaled to 0 (patch), and a new
/// template in it noticed (list + watch) and rolled out.
async fn workload_ref(env: &TestEnv, labels: &str) -> Result<()> {
    env.apply_yaml(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec: {{containers: [{{name: app, image: "nginx:1"}}]}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: api
  labels: {{{labels}}}
spec:
  replicas: 2
  workloadRef: {{apiVersion: apps/v1, kind: Deployment, name: api, scaleDown: onsuccess}}
  strategy: {{canary: {{}}}}
"#
    ))
    .await?;
    let first = wait_rollout(env, "api", "Healthy on the Deployment's template", healthy).await?;
    let deployments = env.api::<Deployment>();
    wait_for(
        "the Deployment scaled to 0",
        Duration::from_secs(60),
        || async {
            let replicas = deployments.get("api").await?.spec.and_then(|s| s.replicas);
            Ok(if replicas == Some(0) {
                Ok(())
            } else {
                Err(format!("{replicas:?}"))
            })
        },
    )
    .await?;
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}})),
        )
        .await?;
    wait_rollout(env, "api", "Healthy on the new template", |s| {
        healthy(s) && s.stable_rs != first.stable_rs
    })
    .await?;
    Ok(())
}

/// No forbidden call in the log; /healthz, /readyz and /metrics served.
async fn check_process(ctl: &mut ControllerProcess) -> Result<()> {
    ctl.ensure_running()?;
    let logs = ctl.logs();
    ensure!(
        !logs.to_lowercase().contains("forbidden"),
        "the controller was refused a call"
    );
    for (port, path) in [
        (ctl.healthz_port, "/healthz"),
        (ctl.healthz_port, "/readyz"),
        (ctl.metrics_port, "/metrics"),
    ] {
        let (code, _) = http_get(port, path).await?;
        ensure!(code == 200, "GET {path}: {code}");
    }
    // Upstream's metric names, this process as the leader.
    let (_, metrics) = http_get(ctl.metrics_port, "/metrics").await?;
    for line in ["rollout_info{", "leader_election_master_status 1"] {
        ensure!(
            metrics.contains(line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }
    Ok(())
}

fn wildcard(rule: &PolicyRule) -> bool {
    let star = |v: &Option<Vec<String>>| v.iter().flatten().any(|s| s.contains('*'));
    rule.verbs.iter().any(|v| v.contains('*'))
        || star(&rule.resources)
        || star(&rule.api_groups)
        || star(&rule.resource_names)
        || star(&rule.non_resource_urls)
}

/// `kubectl apply -k manifests/` as an admin would, then the controller
/// binary cluster-wide with only the installed ServiceAccount's rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_install_grants_what_a_rollout_needs() -> Result<()> {
    let env = TestEnv::without_controller("install-cluster").await?;
    let manifests = repo_root().join("manifests");
    run_kubectl(&["apply", "-k", &manifests.to_string_lossy()]).await?;

    let role = Api::<ClusterRole>::all(env.client.clone())
        .get("rollouts-controller")
        .await?;
    let rules = role.rules.unwrap_or_default();
    assert!(!rules.is_empty());
    for rule in &rules {
        assert!(!wildcard(rule), "wildcard in the ClusterRole: {rule:?}");
    }
    aggregated_roles_reach_rollouts(&env).await?;
    let deploy = Api::<Deployment>::namespaced(env.client.clone(), "rollouts")
        .get("rollouts-controller")
        .await?;
    let spec = deploy.spec.context("Deployment without spec")?;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.context("no pod spec")?;
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("rollouts-controller")
    );
    assert_eq!(
        pod.containers[0].args.as_deref(),
        Some(&["--leader-elect=true".to_string()][..])
    );

    // A unique instance id: this controller sees only this test's Rollout,
    // and the per-namespace controllers of the other tests leave it alone.
    let id = env.ns.clone();
    let lease = format!("rollouts-controller-lock-{id}");
    let dir = scratch(&env.ns)?;
    let sa_kubeconfig = service_account_kubeconfig("rollouts", "rollouts-controller", &dir).await?;
    let mut ctl = ControllerProcess::start(
        &sa_kubeconfig,
        ("rollouts", &format!("rollouts-controller-{id}")),
        &[
            "--instance-id",
            &id,
            "--leader-elect=true",
            "--leader-election-namespace=rollouts",
            &format!("--leader-election-lease-name={lease}"),
        ],
        dir.join("controller.log"),
    )?;
    let template = format!("smoke-{id}");
    let labels = &format!("{INSTANCE_LABEL}: {id}");
    env.apply_yaml(&workload("ClusterAnalysisTemplate", &template, labels))
        .await?;

    let result = async {
        // Leader election took the Lease (leases get + create).
        wait_lease(
            &Api::<Lease>::namespaced(env.client.clone(), "rollouts"),
            &lease,
        )
        .await?;
        roll_out(&env).await?;
        workload_ref(&env, labels).await?;
        check_process(&mut ctl).await
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:#}\n--- rollouts-controller log ---\n{}", ctl.logs());
    }
    let result = match result {
        Ok(()) => ctl.terminate().await,
        Err(e) => Err(e),
    };
    // The cluster-scoped leftovers go in any case; the namespace only on
    // success (kept to look at otherwise, as the other tests do). The
    // install itself stays: the CRDs other tests use are part of it.
    let _ = Api::<ClusterAnalysisTemplate>::all(env.client.clone())
        .delete(&template, &DeleteParams::default())
        .await;
    let _ = Api::<Lease>::namespaced(env.client.clone(), "rollouts")
        .delete(&lease, &DeleteParams::default())
        .await;
    result?;
    env.cleanup().await
}

/// Upstream's aggregate roles: a user bound to the built-in `view` role in
/// a namespace may read Rollouts there but not change them; one bound to
/// `edit` or `admin` may change them (Kubernetes' aggregation controller
/// adds the rules; its answer is awaited).
async fn aggregated_roles_reach_rollouts(env: &TestEnv) -> Result<()> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    let bindings = Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns);
    for role in ["view", "edit", "admin"] {
        let binding = RoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{role}-user")),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: format!("{role}-user"),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            }]),
        };
        bindings.create(&Default::default(), &binding).await?;
    }
    let reviews = Api::<SubjectAccessReview>::all(env.client.clone());
    let allowed = |user: &str, verb: &str, resource: &str| {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(env.ns.clone()),
                    group: Some("argoproj.io".into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move {
            let answer = reviews.create(&Default::default(), &review).await?;
            Ok::<bool, kube::Error>(answer.status.is_some_and(|s| s.allowed))
        }
    };
    for (user, verb, resource, want) in [
        ("view-user", "list", "rollouts", true),
        ("view-user", "get", "analysisruns", true),
        ("view-user", "patch", "rollouts", false),
        ("edit-user", "patch", "rollouts", true),
        ("edit-user", "update", "rollouts/status", true),
        ("admin-user", "delete", "analysisruns", true),
    ] {
        support::wait_for(
            &format!("{user} {verb} {resource}: {want}"),
            Duration::from_secs(30),
            || async {
                let got = allowed(user, verb, resource).await?;
                Ok((got == want).then_some(()).ok_or(format!("allowed: {got}")))
            },
        )
        .await?;
    }
    Ok(())
}

/// The path from directory `from` to `to`, both absolute: kustomize takes
/// only relative paths to bases.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// manifests/namespace-install in the test's namespace, through an overlay
/// as docs/install.md shows, then the controller with `--namespace` and
/// only the Role's rights (no ClusterRole binds this ServiceAccount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_install_grants_what_a_rollout_needs() -> Result<()> {
    let env = TestEnv::without_controller("install-ns").await?;
    let dir = scratch(&env.ns)?;
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay)?;
    let base = relative(
        &overlay,
        &repo_root()
            .join("manifests/namespace-install")
            .canonicalize()?,
    );
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {}\nresources:\n- {}\n",
            env.ns,
            base.display()
        ),
    )?;
    let rendered = run_kubectl(&["kustomize", &overlay.to_string_lossy()]).await?;
    assert!(!rendered.contains("kind: ClusterRole"), "{rendered}");
    assert!(!rendered.contains("clusteranalysistemplates"), "{rendered}");
    assert!(!rendered.contains("namespace: rollouts"), "{rendered}");
    run_kubectl(&["apply", "-k", &overlay.to_string_lossy()]).await?;

    let sa_kubeconfig = service_account_kubeconfig(&env.ns, "rollouts-controller", &dir).await?;
    // As in the Deployment: --namespace=$(POD_NAMESPACE), leader election
    // with the default Lease in the pod's namespace.
    let mut ctl = ControllerProcess::start(
        &sa_kubeconfig,
        (&env.ns, "rollouts-controller-test"),
        &["--leader-elect=true", &format!("--namespace={}", env.ns)],
        dir.join("controller.log"),
    )?;
    let labels = "team: install";
    env.apply_yaml(&workload("AnalysisTemplate", "smoke", labels))
        .await?;
    let result = async {
        // The default Lease, in the pod's namespace (leases get + create).
        wait_lease(&env.api::<Lease>(), "rollouts-controller-lock").await?;
        roll_out(&env).await?;
        workload_ref(&env, labels).await?;
        check_process(&mut ctl).await
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:#}\n--- rollouts-controller log ---\n{}", ctl.logs());
    }
    result?;
    ctl.terminate().await?;
    env.cleanup().await
}
