//! Waiting until caches have listed once, for any number of reconciles.
//!
//! Reconciles must not each wait on `Store::wait_until_ready`: kube-runtime
//! 5.0 keeps a single waker per store, so of the reconciles waiting at once
//! only the last to wait is woken when the store lists. At start the others
//! (9 of 10 workers) sat until their timeout polled them again, 30 s, with
//! nothing logged. Here one shared future waits on the stores and wakes
//! every waiter. Any other readiness check of a store (`now_or_never`, as
//! `is_synced` and the metrics do) takes that one waker too, so the shared
//! future is also polled again every `RECHECK`.

use std::hash::Hash;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::runtime::reflector::Store;

/// How often a wait polls the stores again, in case their one waker was
/// taken by another readiness check.
const RECHECK: Duration = Duration::from_millis(100);

/// Resolves once each of some caches has listed once (its watch's first
/// list is in).
#[derive(Clone)]
pub struct Listed(Shared<BoxFuture<'static, bool>>);

impl Listed {
    /// Waits for all of `stores` (see [`Listed::store`]).
    pub fn all(stores: Vec<BoxFuture<'static, bool>>) -> Self {
        let all = futures::future::join_all(stores).map(|listed| listed.into_iter().all(|l| l));
        Listed(all.boxed().shared())
    }

    /// One store's wait, for [`Listed::all`]: false if its writer is gone.
    pub fn store<K>(store: &Store<K>) -> BoxFuture<'static, bool>
    where
        K: kube::Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let store = store.clone();
        async move { store.wait_until_ready().await.is_ok() }.boxed()
    }

    /// Whether every store has listed within `timeout`.
    pub async fn within(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left.min(RECHECK), self.0.clone()).await {
                Ok(listed) => return listed,
                Err(_) if left <= RECHECK => return false,
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::runtime::{reflector, watcher};

    /// Ten reconciles wait for the caches to list, as the workers do at
    /// start: all ten go on when they list, not only the last one to wait.
    #[tokio::test]
    async fn every_reconcile_waiting_for_the_caches_goes_on_when_they_list() {
        let (maps, mut maps_writer) = reflector::store::<ConfigMap>();
        let (secrets, mut secrets_writer) = reflector::store::<Secret>();
        let listed = Listed::all(vec![Listed::store(&maps), Listed::store(&secrets)]);
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let listed = listed.clone();
                tokio::spawn(async move { listed.within(Duration::from_secs(30)).await })
            })
            .collect();
        // A current-thread runtime: each waiter runs up to its wait now.
        tokio::task::yield_now().await;
        for ev in [watcher::Event::Init, watcher::Event::InitDone] {
            maps_writer.apply_watcher_event(&ev);
        }
        tokio::task::yield_now().await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "one cache still lists"
        );
        for ev in [watcher::Event::Init, watcher::Event::InitDone] {
            secrets_writer.apply_watcher_event(&ev);
        }
        let all = futures::future::join_all(waiters);
        let Ok(done) = tokio::time::timeout(Duration::from_secs(2), all).await else {
            panic!("a reconcile was not woken when the caches listed");
        };
        assert!(done.into_iter().all(|listed| matches!(listed, Ok(true))));
        // Later reconciles do not wait.
        assert_eq!(listed.within(Duration::ZERO).now_or_never(), Some(true));
    }

    /// Another readiness check of a store (the metrics' `now_or_never`)
    /// takes the store's one waker: the waiters still go on.
    #[tokio::test]
    async fn a_readiness_check_elsewhere_does_not_strand_the_waiters() {
        let (maps, mut writer) = reflector::store::<ConfigMap>();
        let listed = Listed::all(vec![Listed::store(&maps)]);
        let waiter = {
            let listed = listed.clone();
            tokio::spawn(async move { listed.within(Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(maps.wait_until_ready().now_or_never().is_none());
        for ev in [watcher::Event::Init, watcher::Event::InitDone] {
            writer.apply_watcher_event(&ev);
        }
        let Ok(done) = tokio::time::timeout(Duration::from_secs(2), waiter).await else {
            panic!("the waiter was stranded by the other check");
        };
        assert!(matches!(done, Ok(true)));
    }

    #[tokio::test]
    async fn caches_whose_watch_is_gone_never_count_as_listed() {
        let (maps, writer) = reflector::store::<ConfigMap>();
        drop(writer);
        let listed = Listed::all(vec![Listed::store(&maps)]);
        assert!(!listed.within(Duration::from_secs(1)).await);
    }
}
