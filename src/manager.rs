//! The controller process: the Rollout, AnalysisRun and Experiment
//! controllers run side by side, over the same namespaces, until one
//! shutdown signal; with leader election, only while this process holds
//! the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use kube::Client;
use tracing::info;

use crate::controller::leader::{self, Elector};
use crate::settings::Settings;
use crate::{analysis, rollout};

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
