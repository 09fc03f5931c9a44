//! The controller process: the Rollout and AnalysisRun controllers run side
//! by side, over the same namespaces, until one shutdown signal; with leader
//! election, only while this process holds the lease.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Client, Resource};
use tracing::info;

use crate::api::INSTANCE_ID_LABEL;
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::{analysis, rollout};

/// Where the controllers look.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch one namespace only; all namespaces when None.
    pub namespace: Option<String>,
    /// Reconcile only Rollouts and AnalysisRuns labelled with this id; when
    /// None, only those without the label (as upstream's `--instance-id`).
    pub instance_id: Option<String>,
}

impl Scope {
    pub fn namespace(ns: impl Into<String>) -> Self {
        Scope {
            namespace: Some(ns.into()),
            instance_id: None,
        }
    }

    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// The label selector for the Rollouts and AnalysisRuns this controller
    /// instance owns.
    pub fn instance_selector(&self) -> String {
        match &self.instance_id {
            Some(id) => format!("{INSTANCE_ID_LABEL}={id}"),
            None => format!("!{INSTANCE_ID_LABEL}"),
        }
    }
}

/// How the controllers run.
#[derive(Clone)]
pub struct Settings {
    pub scope: Scope,
    /// Rollouts reconciled at once (`--rollout-threads`).
    pub rollout_workers: u16,
    /// AnalysisRuns reconciled at once (`--analysis-threads`).
    pub analysis_workers: u16,
    pub metrics: Metrics,
}

impl Settings {
    /// Upstream's defaults: 10 rollout and 30 analysis workers.
    pub fn new(scope: Scope) -> Self {
        Settings {
            scope,
            rollout_workers: 10,
            analysis_workers: 30,
            metrics: Metrics::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rollout(#[from] rollout::controller::Error),
    #[error(transparent)]
    Analysis(#[from] analysis::controller::Error),
    #[error(transparent)]
    Leader(#[from] leader::Error),
}

/// Stack size for the runtime threads that run reconciles. A reconcile is a
/// deep chain of async calls (read, plan, apply, the API client, serde);
/// in a debug build its frames come close to tokio's default 2 MiB and a
/// large object overflows it. Only the pages used are resident.
pub const THREAD_STACK_SIZE: usize = 16 << 20;

/// Runs both controllers until `shutdown` resolves; the first one that cannot
/// start stops the other.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown = shutdown.shared();
    let rollouts = rollout::controller::run(client.clone(), settings.clone(), shutdown.clone());
    let analysis = analysis::controller::run(client.clone(), settings.clone(), shutdown.clone());
    let experiments = crate::experiment::run(client, settings, shutdown);
    futures::try_join!(
        async { rollouts.await.map_err(Error::from) },
        async { analysis.await.map_err(Error::from) },
        async {
            experiments.await;
            Ok(())
        },
    )?;
    Ok(())
}

/// What `/readyz` reports: the process can talk to the API server (it
/// leads, or it stands by after reading the lease).
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Runs the controllers, behind leader election when `election` is set:
/// stands by until this process holds the lease, reconciles while it does,
/// and releases it on shutdown. Losing the lease stops reconciling at once
/// and returns an error: the process should exit and be restarted, as
/// upstream's controller does.
pub async fn run_elected(
    client: Client,
    settings: Settings,
    election: Option<leader::Settings>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown = shutdown.shared();
    let Some(election) = election else {
        settings.metrics.set_leader(true);
        health.set(true);
        return run(client, settings, shutdown).await;
    };
    election.validate()?;
    // The elector's attempts are what /readyz reports.
    let mut elector = Elector::new(client.clone(), election, health.ready.clone());
    let outcome = async {
        match elector.acquire(shutdown.clone()).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(e)),
        }
        settings.metrics.set_leader(true);
        let work = run(client, settings.clone(), shutdown.clone());
        Some(tokio::select! {
            result = work => Ok(result),
            lost = elector.hold() => Err(lost),
        })
    }
    .await;
    settings.metrics.set_leader(false);
    match outcome {
        None => {
            info!("stopped while standing by");
            Ok(())
        }
        Some(Ok(result)) => {
            elector.release().await;
            result
        }
        // Dropping the controllers' future stopped every reconcile.
        Some(Err(lost)) => Err(lost.into()),
    }
}

/// Looks again `after` the moment a plan was made. kube-runtime counts a
/// requeue from when the reconcile returns, so the time spent writing the
/// plan would otherwise make every timer (a pause, an interval) that late.
pub fn requeue_since(planned: Instant, after: Duration) -> Requeue {
    Requeue::requeue(remaining(planned, Instant::now(), after))
}

/// What is left at `now` of a wait of `after` from `planned`; at least a
/// millisecond, so an overdue timer still goes through the queue.
fn remaining(planned: Instant, now: Instant, after: Duration) -> Duration {
    after
        .saturating_sub(now.saturating_duration_since(planned))
        .max(Duration::from_millis(1))
}

/// How long reconciles still running at shutdown may go on before they are
/// dropped. Dropping one is safe (the status on the API server is the only
/// state), and a pod being deleted must not hang on a slow request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Drives a controller's result stream until it ends after `shutdown`, or
/// until [`SHUTDOWN_GRACE`] after it. `synced` says whether the caches a
/// reconcile waits for have listed once. When shutdown comes before they
/// have, no reconcile has got past that wait, and their watches stop with
/// the controller's trigger stream: kube-runtime's runner (and a reconcile
/// waiting for a cache) would wait forever, so the stream is dropped at once.
pub(crate) async fn drive<T, E>(
    name: &'static str,
    results: impl futures::Stream<Item = Result<T, E>>,
    shutdown: impl Future<Output = ()>,
    synced: impl Fn() -> bool,
) where
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let finished = results.for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(controller = name, error = %e, "reconcile trigger failed");
        }
    });
    let deadline = async {
        shutdown.await;
        let grace = if synced() {
            SHUTDOWN_GRACE
        } else {
            Duration::ZERO
        };
        tokio::time::sleep(grace).await;
        grace
    };
    tokio::select! {
        () = finished => info!(controller = name, "controller stopped"),
        grace = deadline => {
            if grace.is_zero() {
                info!(controller = name, "controller stopped before its cache synced");
            } else {
                tracing::warn!(
                    controller = name,
                    grace_secs = grace.as_secs(),
                    "controller stopped; reconciles still running after the grace period were dropped"
                );
            }
        }
    }
}

/// Whether a store has listed once (its watch's first list is in).
pub(crate) fn is_synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Retry delay after failed reconciles of one object: 1s, doubled on each
/// further failure up to 300s; forgotten after a success.
pub struct Backoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

impl<K: Eq + Hash> Default for Backoff<K> {
    fn default() -> Self {
        Backoff {
            failures: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash> Backoff<K> {
    pub fn succeeded(&self, key: &K) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// Counts a failure; returns how many in a row and the delay to wait.
    pub fn failed(&self, key: K) -> (u32, Duration) {
        let failures = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        let delay = RETRY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(RETRY_MAX);
        (failures, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_owns_its_labelled_objects_and_no_instance_the_unlabelled() {
        let mut scope = Scope::namespace("a");
        assert_eq!(
            scope.instance_selector(),
            "!argo-rollouts.argoproj.io/controller-instance-id"
        );
        scope.instance_id = Some("blue".into());
        assert_eq!(
            scope.instance_selector(),
            "argo-rollouts.argoproj.io/controller-instance-id=blue"
        );
    }

    #[test]
    fn a_timer_counts_from_the_plan_not_from_the_end_of_the_reconcile() {
        let planned = Instant::now();
        let after = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(remaining(planned, planned, after), after);
        assert_eq!(remaining(planned, planned + ms(300), after), ms(700));
        // Overdue: look again at once, not never.
        assert_eq!(remaining(planned, planned + ms(1500), after), ms(1));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..11).map(|_| b.failed("a").1.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.failed("b"), (1, RETRY), "per object");
        b.succeeded(&"a");
        assert_eq!(b.failed("a"), (1, RETRY));
    }
}
