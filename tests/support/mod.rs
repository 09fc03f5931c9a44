//! Integration-test support: one real local cluster per test run
//! (hack/cluster.sh up, reused when it already runs), the CRDs installed
//! once, a namespace per test, a controller per test scoped to that
//! namespace, and wait helpers that fail with what they last saw.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod crds;
pub mod process;
pub mod prometheus;
pub mod rig;
pub mod scripts;

pub use scripts::{hack_script, repo_root};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::oneshot;

/// Starts the cluster (or finds it running) and installs the CRDs, once per
/// test binary. Returns the kubeconfig path.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| match hack_script("cluster.sh", &["up"]) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    })
}

pub async fn client() -> Result<Client> {
    // The controller's logs, shown with a failing test's output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rollouts=info"));
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
    let path = kubeconfig();
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    install_crds(&client).await?;
    Ok(client)
}

/// Server-side applies crds/*.yaml and waits until they are Established.
async fn install_crds(client: &Client) -> Result<()> {
    let files: Vec<PathBuf> = rollouts::api::crds()
        .into_iter()
        .map(|(file, _)| repo_root().join("crds").join(file))
        .collect();
    crds::apply(client, &files, "rollouts-tests").await
}

/// A namespace of its own for one test, with a controller scoped to it.
pub struct TestEnv {
    pub client: Client,
    pub ns: String,
    stop: Option<oneshot::Sender<()>>,
    /// Says how the controller's thread ended (see `start_controller_in`).
    controller: Option<oneshot::Receiver<std::result::Result<(), String>>>,
}

impl TestEnv {
    /// Creates namespace `t-<name>-<suffix>` and starts the controller on it.
    pub async fn new(name: &str) -> Result<Self> {
        let mut env = Self::without_controller(name).await?;
        env.start_controller();
        Ok(env)
    }

    pub async fn without_controller(name: &str) -> Result<Self> {
        let client = client().await?;
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let ns = format!("t-{name}-{:x}{n}", nanos % 0xfffff);
        let nss: Api<Namespace> = Api::all(client.clone());
        let mut obj = Namespace::default();
        obj.metadata.name = Some(ns.clone());
        nss.create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        Ok(TestEnv {
            client,
            ns,
            stop: None,
            controller: None,
        })
    }

    pub fn start_controller(&mut self) {
        self.start_controller_in(rollouts::settings::Scope::namespace(&self.ns));
    }

    /// Starts the controller on `scope` (a cluster-wide one should carry an
    /// instance id of its own, so it leaves the other tests' Rollouts alone).
    ///
    /// The controller gets a runtime of its own, as in its binary, whose
    /// threads have the binary's stack size: a debug build's reconcile
    /// needs more than the 2 MiB of a test thread or a default tokio worker.
    /// Dropping the TestEnv stops it.
    pub fn start_controller_in(&mut self, scope: rollouts::settings::Scope) {
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let settings = rollouts::settings::Settings::new(scope);
        let ns = self.ns.clone();
        let run = move || -> std::result::Result<(), String> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(rollouts::manager::THREAD_STACK_SIZE)
                .enable_all()
                .build()
                .map_err(|e| format!("controller runtime: {e}"))?;
            runtime.block_on(async move {
                let client = client().await.map_err(|e| format!("{e:#}"))?;
                let shutdown = async move {
                    let _ = rx.await;
                };
                rollouts::manager::run(client, settings, shutdown)
                    .await
                    .map_err(|e| format!("controller for namespace {ns} failed: {e}"))
            })
        };
        let spawned = std::thread::Builder::new()
            .name("controller".into())
            .spawn(move || {
                let _ = done_tx.send(run());
            });
        if let Err(e) = spawned {
            panic!("cannot start the controller's thread: {e}");
        }
        self.controller = Some(done_rx);
        self.stop = Some(tx);
    }

    /// Stops the controller as a crash would leave things: whatever it was
    /// doing is dropped, and only what it wrote to the API server remains.
    pub async fn stop_controller(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.controller.take() {
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .context("controller did not stop within 10s")?
                .context("the controller's thread ended without a word")?
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// The Events about object `name` in the namespace, oldest first, as
    /// (type, reason, message).
    pub async fn events(&self, name: &str) -> Result<Vec<(String, String, String)>> {
        let api = self.api::<k8s_openapi::api::events::v1::Event>();
        let mut items = api.list(&Default::default()).await?.items;
        items.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        Ok(items
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Applies a multi-document YAML manifest into the namespace (cluster-
    /// scoped objects to the cluster), server-side as `kubectl apply
    /// --server-side` would.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<()> {
        let discovery = kube::discovery::Discovery::new(self.client.clone())
            .run()
            .await?;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let obj: kube::api::DynamicObject = serde::Deserialize::deserialize(doc)?;
            let types = obj
                .types
                .clone()
                .context("object without apiVersion/kind")?;
            let gvk = kube::core::GroupVersionKind::try_from(&types)?;
            let (ar, caps) = discovery
                .resolve_gvk(&gvk)
                .with_context(|| format!("unknown kind {gvk:?}"))?;
            let api: Api<kube::api::DynamicObject> = match caps.scope {
                kube::discovery::Scope::Cluster => Api::all_with(self.client.clone(), &ar),
                kube::discovery::Scope::Namespaced => {
                    Api::namespaced_with(self.client.clone(), &self.ns, &ar)
                }
            };
            let name = obj.metadata.name.clone().context("object without a name")?;
            api.patch(
                &name,
                &PatchParams::apply("rollouts-tests").force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
        }
        Ok(())
    }

    /// Stops the controller and deletes the namespace.
    pub async fn cleanup(mut self) -> Result<()> {
        self.stop_controller().await?;
        let nss: Api<Namespace> = Api::all(self.client.clone());
        nss.delete(&self.ns, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// Polls `check` every 200ms until it returns Ok(Ok(value)). Ok(Err(why))
/// means "not yet" and `why` is reported if the time runs out; Err aborts.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(why)) => why,
            Err(e) => format!("error: {e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the Rollout satisfies `done` on its current generation and
/// returns its status.
pub async fn wait_rollout(
    env: &TestEnv,
    name: &str,
    what: &str,
    done: impl Fn(&rollouts::api::rollout::RolloutStatus) -> bool,
) -> Result<rollouts::api::rollout::RolloutStatus> {
    let api = env.api::<rollouts::api::Rollout>();
    wait_for(
        &format!("Rollout {name}: {what}"),
        Duration::from_secs(90),
        || async {
            let ro = api.get(name).await?;
            let generation = ro.metadata.generation.map(|g| g.to_string());
            let s = ro.status.unwrap_or_default();
            if s.observed_generation == generation && done(&s) {
                Ok(Ok(s))
            } else {
                Ok(Err(format!(
                    "phase {:?} ({:?}), step {:?}, observedGeneration {:?} of {generation:?}",
                    s.phase, s.message, s.current_step_index, s.observed_generation
                )))
            }
        },
    )
    .await
}

/// Merge-patches the Rollout's status subresource, as `kubectl rollouts`
/// promote/abort/retry do.
pub async fn patch_status(env: &TestEnv, name: &str, patch: serde_json::Value) -> Result<()> {
    env.api::<rollouts::api::Rollout>()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": patch })),
        )
        .await?;
    Ok(())
}

pub fn healthy(s: &rollouts::api::rollout::RolloutStatus) -> bool {
    s.phase == Some(rollouts::api::rollout::RolloutPhase::Healthy)
}

pub fn paused(s: &rollouts::api::rollout::RolloutStatus) -> bool {
    s.phase == Some(rollouts::api::rollout::RolloutPhase::Paused)
}

/// Changes the image of the Rollout `web`'s container `app` (an update).
pub async fn set_image(env: &TestEnv, image: &str) -> Result<()> {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    env.api::<rollouts::api::Rollout>()
        .patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Waits until the AnalysisRun `name` has completed and returns it.
pub async fn wait_run_completed(
    env: &TestEnv,
    name: &str,
) -> Result<rollouts::api::analysis::AnalysisRun> {
    let api = env.api::<rollouts::api::analysis::AnalysisRun>();
    wait_for(
        &format!("AnalysisRun {name} to complete"),
        Duration::from_secs(60),
        || async {
            let run = api.get(name).await?;
            let phase = run.status.as_ref().and_then(|s| s.phase);
            Ok(match phase {
                Some(p) if p.completed() => Ok(run),
                _ => Err(format!("{:?}", run.status)),
            })
        },
    )
    .await
}

/// An example from analysis-examples/ with test-sized settings: each
/// (from, to) replacement must match, so an edited example fails loudly.
pub fn example(file: &str, replacements: &[(&str, &str)]) -> Result<String> {
    let path = repo_root().join("analysis-examples").join(file);
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (from, to) in replacements {
        anyhow::ensure!(text.contains(from), "{file} no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    Ok(text)
}
