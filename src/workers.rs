//! The limit on reconciles that run at once (`--rollout-threads`,
//! `--analysis-threads`), and the order waiting reconciles get a worker in.
//!
//! Not kube-runtime's own `concurrency`: at that limit, its runner parks
//! due objects in a HashSet and takes them back in hash order, so under a
//! backlog some objects are passed over again and again (with 1,000
//! Rollouts updated at once, the median Rollout waited 50 s for its first
//! reconcile). The runner is left unbounded and every reconcile queues
//! here instead.
//!
//! Two lines, each first come, first served. A Rollout whose update is
//! under way waits in the first: its next step is due, or its traffic is
//! split, while a Rollout whose update has not started yet can wait a
//! little longer to start (in a wave of 1,000 image changes, a canary's
//! next step otherwise waited behind every update not yet begun). The
//! other line is never starved: it gets at least one turn in
//! [`UNDERWAY_TURNS`] + 1 while both have reconciles waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::oneshot;

use crate::metrics::{Metrics, Queue};

/// Which line a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// An update under way: served first.
    Underway,
    /// Everything else (an update to start, a settled object to check).
    Other,
}

/// How many reconciles of the first line may take a worker in a row while
/// the other line waits.
pub const UNDERWAY_TURNS: u32 = 4;

/// Who waits for a worker, and how many are free.
#[derive(Default)]
struct Lines {
    /// Workers nobody holds. Above 0 only while nobody waits: a worker
    /// given back goes to a waiter first (`hand_on`).
    free: usize,
    underway: VecDeque<oneshot::Sender<()>>,
    other: VecDeque<oneshot::Sender<()>>,
    /// Turns the first line took in a row while the other one waited.
    streak: u32,
}

impl Lines {
    /// The next waiter, by the rule in the module docs.
    fn next(&mut self) -> Option<oneshot::Sender<()>> {
        let other_waits = !self.other.is_empty();
        if !self.underway.is_empty() && (!other_waits || self.streak < UNDERWAY_TURNS) {
            self.streak = if other_waits { self.streak + 1 } else { 0 };
            return self.underway.pop_front();
        }
        self.streak = 0;
        self.other.pop_front()
    }
}

/// A worker, given back when dropped.
struct Permit(Arc<Mutex<Lines>>);

impl Drop for Permit {
    fn drop(&mut self) {
        hand_on(&self.0);
    }
}

/// A worker became free: it goes to the next waiter still waiting, or back
/// to the pool.
fn hand_on(lines: &Mutex<Lines>) {
    let mut lines = lock(lines);
    while let Some(waiter) = lines.next() {
        // Fails only when that waiter is gone.
        if waiter.send(()).is_ok() {
            return;
        }
    }
    lines.free += 1;
}

fn lock(lines: &Mutex<Lines>) -> MutexGuard<'_, Lines> {
    // A panic while holding the lock cannot leave the queues half-changed
    // (every change is one push or pop), so a poisoned lock is still good.
    lines.lock().unwrap_or_else(|p| p.into_inner())
}

/// A reconcile waiting for a worker. If it is dropped (the controller
/// stops) after a worker was handed to it, the worker is handed on.
struct Waiting {
    lines: Arc<Mutex<Lines>>,
    turn: oneshot::Receiver<()>,
    served: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.served {
            self.turn.close();
            if self.turn.try_recv().is_ok() {
                hand_on(&self.lines);
            }
        }
    }
}

#[derive(Clone)]
pub struct Workers {
    lines: Arc<Mutex<Lines>>,
    metrics: Metrics,
    queue: Queue,
}

impl Workers {
    pub fn new(workers: u16, metrics: Metrics, queue: Queue) -> Self {
        let lines = Lines {
            free: usize::from(workers).max(1),
            ..Lines::default()
        };
        Workers {
            lines: Arc::new(Mutex::new(lines)),
            metrics,
            queue,
        }
    }

    /// Waits in `line` until a worker is free.
    async fn acquire(&self, line: Line) -> Permit {
        let turn = {
            let mut lines = lock(&self.lines);
            if lines.free > 0 {
                lines.free -= 1;
                return Permit(self.lines.clone());
            }
            let (tx, rx) = oneshot::channel();
            match line {
                Line::Underway => lines.underway.push_back(tx),
                Line::Other => lines.other.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            lines: self.lines.clone(),
            turn,
            served: false,
        };
        // The sender is dropped only after sending: `next` pops it and
        // `hand_on` sends or, if this receiver were gone, moves on.
        let _ = (&mut waiting.turn).await;
        waiting.served = true;
        Permit(self.lines.clone())
    }

    /// Runs `work` once a worker is free. Its future is built, on the heap,
    /// only then: the many reconciles still waiting stay small.
    pub async fn run<F: Future>(&self, line: Line, work: impl FnOnce() -> F) -> F::Output {
        let asked = Instant::now();
        let _permit = self.acquire(line).await;
        self.metrics.waited(self.queue, asked.elapsed());
        Box::pin(work()).await
    }

    /// One reconcile of the object `key` names: waits for a worker in the
    /// line `line` picks from the cached copy, then runs `work` on the
    /// latest cached copy (the wait can be long, and the copy kube-runtime
    /// dequeued may be stale by then) and records how long it took. An
    /// object gone from the cache meanwhile is left alone.
    pub async fn reconcile<K, E, F>(
        &self,
        cache: &Store<K>,
        key: ObjectRef<K>,
        line: impl FnOnce(&K) -> Line,
        work: impl FnOnce(Arc<K>) -> F,
    ) -> Result<Requeue, E>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
        F: Future<Output = Result<Requeue, E>>,
    {
        // Picked from the copy cached now: an update that starts while
        // this reconcile waits moves it to the first line only next time.
        let line = cache.get(&key).map_or(Line::Other, |k| line(&k));
        self.run(line, || async move {
            let Some(latest) = cache.get(&key) else {
                return Ok(Requeue::await_change());
            };
            let (ns, name) = (latest.namespace().unwrap_or_default(), latest.name_any());
            let started = Instant::now();
            let result = work(latest).await;
            let ok = result.is_ok();
            self.metrics
                .reconciled(self.queue, &ns, &name, started.elapsed(), ok);
            result
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Queues `lines` in order while every worker is taken, then lets them
    /// run; returns the order they started in and the most that ran at once.
    async fn started_order(workers: u16, lines: &[Line]) -> (Vec<usize>, usize) {
        let pool = Workers::new(workers, Metrics::new(), Queue::Rollouts);
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut gate = Vec::new();
        for _ in 0..workers {
            gate.push(pool.acquire(Line::Other).await);
        }
        let mut tasks = Vec::new();
        for (i, line) in lines.iter().copied().enumerate() {
            let (pool, log) = (pool.clone(), log.clone());
            let (running, most) = (running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(line, || async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    lock_log(&log).push(i);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
            // A current-thread runtime: the task runs up to its wait now.
            tokio::task::yield_now().await;
        }
        drop(gate);
        for task in tasks {
            assert!(task.await.is_ok());
        }
        let order = lock_log(&log).clone();
        (order, most.load(Ordering::SeqCst))
    }

    fn lock_log(log: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
        log.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[tokio::test]
    async fn one_line_is_served_in_the_order_it_came_and_no_more_at_once() {
        let (order, most) = started_order(2, &[Line::Other; 12]).await;
        assert_eq!(order, (0..12).collect::<Vec<_>>());
        assert_eq!(most, 2);
        let (order, most) = started_order(3, &[Line::Underway; 7]).await;
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        assert_eq!(most, 3);
    }

    #[tokio::test]
    async fn updates_under_way_go_first_but_the_other_line_keeps_a_turn_in_five() {
        use Line::{Other as O, Underway as U};
        // 0-3 wait in the other line, 4-13 are under way.
        let lines = [O, O, O, O, U, U, U, U, U, U, U, U, U, U];
        let (order, most) = started_order(1, &lines).await;
        assert_eq!(order, [4, 5, 6, 7, 0, 8, 9, 10, 11, 1, 12, 13, 2, 3]);
        assert_eq!(most, 1);
    }

    #[test]
    fn turns_taken_while_the_other_line_is_empty_do_not_count_against_it() {
        let mut lines = Lines::default();
        let mut keep = Vec::new();
        let mut push = |queue: &mut VecDeque<oneshot::Sender<()>>| {
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            keep.push(rx);
        };
        for _ in 0..10 {
            push(&mut lines.underway);
        }
        // Which line each turn went to.
        let turn = |lines: &mut Lines| {
            let before = lines.underway.len();
            assert!(lines.next().is_some());
            if lines.underway.len() < before {
                'U'
            } else {
                'O'
            }
        };
        let alone: String = (0..3).map(|_| turn(&mut lines)).collect();
        assert_eq!(alone, "UUU");
        push(&mut lines.other);
        let after: String = (0..6).map(|_| turn(&mut lines)).collect();
        assert_eq!(after, "UUUUOU");
    }

    #[tokio::test]
    async fn a_reconcile_that_stops_waiting_does_not_keep_a_worker() {
        let pool = Workers::new(1, Metrics::new(), Queue::Rollouts);
        let held = pool.acquire(Line::Other).await;
        // Gives up while waiting; then one that gives up after its turn came
        // but before it ran.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), pool.acquire(Line::Other));
        assert!(gave_up.await.is_err());
        let mut late = Box::pin(pool.acquire(Line::Underway));
        assert!(futures::poll!(&mut late).is_pending());
        drop(held);
        drop(late);
        // The one worker is free again.
        let next = tokio::time::timeout(Duration::from_secs(1), pool.acquire(Line::Other)).await;
        assert!(next.is_ok());
        assert_eq!(lock(&pool.lines).free, 0);
        drop(next);
        assert_eq!(lock(&pool.lines).free, 1);
    }
}
