//! The controller process: the Rollout and AnalysisRun controllers run side
//! by side, over the same namespaces, until one shutdown signal.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use kube::{Api, Client, Resource};

use crate::{analysis, rollout};

/// Where the controllers look.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch one namespace only; all namespaces when None.
    pub namespace: Option<String>,
}

impl Scope {
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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rollout(#[from] rollout::controller::Error),
    #[error(transparent)]
    Analysis(#[from] analysis::controller::Error),
}

/// Runs both controllers until `shutdown` resolves; the first one that cannot
/// start stops the other.
pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown = shutdown.shared();
    let rollouts = rollout::controller::run(client.clone(), scope.clone(), shutdown.clone());
    let analysis = analysis::controller::run(client, scope, shutdown);
    futures::try_join!(async { rollouts.await.map_err(Error::from) }, async {
        analysis.await.map_err(Error::from)
    },)?;
    Ok(())
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
    fn backoff_doubles_up_to_five_minutes_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..11).map(|_| b.failed("a").1.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.failed("b"), (1, RETRY), "per object");
        b.succeeded(&"a");
        assert_eq!(b.failed("a"), (1, RETRY));
    }
}
