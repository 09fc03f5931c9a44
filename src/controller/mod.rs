//! Generic controller plumbing, shared by the Rollout, AnalysisRun and
//! Experiment controllers and knowing nothing of them: where they look
//! (`Scope`), how they run (`Settings`), and the parts each is built from.

pub mod backoff;
pub mod client;
#[cfg(test)]
pub(crate) mod fake_api;
pub mod freshness;
pub mod index;
pub mod leader;
pub mod listed;
pub mod patch;
pub mod recorder;
pub mod workers;

use std::hash::Hash;
use std::time::{Duration, Instant};

use futures::FutureExt;
use kube::runtime::controller::Action as Requeue;
use tracing::info;

pub use backoff::Backoff;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
