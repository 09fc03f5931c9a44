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
//! Two lines, each first come, first served. A reconcile that moves an
//! update under way forward (its next step is due, a ReplicaSet is to be
//! scaled) waits in the first; everything else waits in the other: updates
//! not begun yet, and reconciles of updates under way that would only
//! mirror replica counts into the status. In a wave of 1,000 image
//! changes, a canary's next step otherwise waited behind every update not
//! yet begun, and then behind every count to mirror. The other line is
//! never starved: it gets at least one turn in [`PROGRESS_TURNS`] + 1
//! while both have reconciles waiting.
//!
//! A reconcile of a change not acted on yet ([`Place::Fresh`]: an update to
//! begin, a first deploy) waits in neither line: it takes a worker of a pool
//! of its own, [`FRESH_PER_WORKER`] times as large. In a wave of 1,000 image
//! changes the lines served the updates under way first, and an update to
//! begin waited 20 s (p50) for a worker, against 11 s for upstream's single
//! queue; giving it turns in the lines took them from the steps. Taking an
//! update in is a few writes, each waiting on the API server, so a pool of
//! its own takes the wave in without slowing the steps. A second pool of the
//! same size opens to a change that finds more than
//! [`SURGE_BACKLOG_PER_WORKER`] per worker waiting before it (a wave of
//! hundreds). One pool twice as large, always open, took the wave of 1,000
//! in as fast too, but cost a wave of 100 a tenth more memory.
//!
//! Where a reconcile waits is decided from the cache before the wait
//! ([`Place`]). While it waits, its step may come due: a watch event about
//! its object ([`Workers::nudge`]) or the time its plan named makes it look
//! again, and move to the first line if it now belongs there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

/// Which line a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// It moves an update under way forward: served first.
    Progress,
    /// Everything else (an update to start, counts to mirror, a settled
    /// object to check).
    Other,
}

/// Where a reconcile waits, as decided from the cached object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the first line.
    Progress,
    /// Not in a line: a change not acted on yet (an update to begin) takes
    /// a worker of the pool kept for those.
    Fresh,
    /// In the other line, for the whole wait.
    Other,
    /// In the other line for now. Placed again when nudged, or after
    /// `recheck` (when its plan would change by itself, a pause ending):
    /// an update under way whose next step is not due yet.
    OtherForNow { recheck: Option<Duration> },
}

impl Place {
    fn line(self) -> Line {
        match self {
            Place::Progress => Line::Progress,
            Place::Fresh | Place::Other | Place::OtherForNow { .. } => Line::Other,
        }
    }
}

/// How many reconciles of the first line may take a worker in a row while
/// the other line waits.
pub const PROGRESS_TURNS: u32 = 4;

/// Workers kept for changes not acted on yet, per worker of the lines.
pub const FRESH_PER_WORKER: usize = 1;

/// A change to take in that finds more than this many per worker waiting
/// before it may also take a worker of a second pool, as large as the
/// first (`FRESH_PER_WORKER`).
pub const SURGE_BACKLOG_PER_WORKER: usize = 10;

/// What a running reconcile holds until it ends (given back when dropped):
/// a worker of the lines, or one of the pool for changes to take in.
enum Held {
    Line(Permit),
    Fresh(OwnedSemaphorePermit),
}

impl Held {
    /// Gives the worker back now.
    fn release(self) {
        match self {
            Held::Line(permit) => drop(permit),
            Held::Fresh(permit) => drop(permit),
        }
    }
}

/// Who waits for a worker, and how many are free.
#[derive(Default)]
struct Lines {
    /// Workers nobody holds. Above 0 only while nobody waits: a worker
    /// given back goes to a waiter first (`hand_on`).
    free: usize,
    progress: VecDeque<oneshot::Sender<()>>,
    other: VecDeque<oneshot::Sender<()>>,
    /// Turns the first line took in a row while the other one waited.
    streak: u32,
}

impl Lines {
    /// The next waiter, by the rule in the module docs.
    fn next(&mut self) -> Option<oneshot::Sender<()>> {
        let other_waits = !self.other.is_empty();
        if !self.progress.is_empty() && (!other_waits || self.streak < PROGRESS_TURNS) {
            self.streak = if other_waits { self.streak + 1 } else { 0 };
            return self.progress.pop_front();
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the queues or the
    // nudges half-changed (every change is one push, pop, insert or
    // remove), so a poisoned lock is still good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A reconcile waiting for a worker. If it is dropped (the controller
/// stops, or it moves to the other line) after a worker was handed to it,
/// the worker is handed on.
struct Waiting {
    lines: Arc<Mutex<Lines>>,
    turn: oneshot::Receiver<()>,
    served: bool,
}

impl Waiting {
    async fn turn(mut self) -> Permit {
        // The sender is dropped only after sending: `next` pops it and
        // `hand_on` sends or, if this receiver were gone, moves on.
        let _ = (&mut self.turn).await;
        self.served = true;
        Permit(self.lines.clone())
    }
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

/// The reconciles that may move to the first line while they wait, by
/// object ("namespace/name"), each with what wakes it.
type Nudges = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// A waiter's entry in `Nudges`, taken out when it stops waiting.
struct Listening {
    nudges: Nudges,
    id: String,
    nudged: Arc<Notify>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut nudges = lock(&self.nudges);
        // Only our own entry: another reconcile of the same object may
        // have registered since (kube-runtime runs one at a time, but this
        // drop and the next registration can interleave).
        if nudges
            .get(&self.id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.nudged))
        {
            nudges.remove(&self.id);
        }
    }
}

/// One more in a count for as long as it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the workers report of each reconcile (the metrics implement it).
pub trait Observer: Send + Sync {
    /// How long a reconcile waited for a worker.
    fn waited(&self, took: Duration);
    /// How long a reconcile of `namespace/name` took, and whether it failed.
    fn reconciled(&self, namespace: &str, name: &str, took: Duration, ok: bool);
}

/// Reports nothing.
pub struct Unobserved;

impl Observer for Unobserved {
    fn waited(&self, _: Duration) {}
    fn reconciled(&self, _: &str, _: &str, _: Duration, _: bool) {}
}

#[derive(Clone)]
pub struct Workers {
    /// The pool of reconciles of changes not acted on yet ([`Place::Fresh`]).
    fresh: Arc<Semaphore>,
    /// The second pool, for those that found more than `surge_backlog`
    /// waiting before them.
    surge: Arc<Semaphore>,
    surge_backlog: usize,
    /// Changes waiting for a worker of the pools.
    fresh_waiting: Arc<AtomicUsize>,
    lines: Arc<Mutex<Lines>>,
    nudges: Nudges,
    observer: Arc<dyn Observer>,
}

impl Workers {
    pub fn new(workers: u16, observer: Arc<dyn Observer>) -> Self {
        let backlog = usize::from(workers).max(1) * SURGE_BACKLOG_PER_WORKER;
        Self::with_surge_backlog(workers, backlog, observer)
    }

    fn with_surge_backlog(workers: u16, surge_backlog: usize, observer: Arc<dyn Observer>) -> Self {
        let workers = usize::from(workers).max(1);
        let lines = Lines {
            free: workers,
            ..Lines::default()
        };
        Workers {
            fresh: Arc::new(Semaphore::new(workers * FRESH_PER_WORKER)),
            surge: Arc::new(Semaphore::new(workers * FRESH_PER_WORKER)),
            surge_backlog,
            fresh_waiting: Arc::default(),
            lines: Arc::new(Mutex::new(lines)),
            nudges: Arc::default(),
            observer,
        }
    }

    /// A worker, if one is free.
    fn take_free(&self) -> Option<Permit> {
        let mut lines = lock(&self.lines);
        (lines.free > 0).then(|| {
            lines.free -= 1;
            Permit(self.lines.clone())
        })
    }

    /// A worker now if one is free, or a place at the end of `line`.
    fn enqueue(&self, line: Line) -> Result<Permit, Waiting> {
        let mut lines = lock(&self.lines);
        if lines.free > 0 {
            lines.free -= 1;
            return Ok(Permit(self.lines.clone()));
        }
        let (tx, rx) = oneshot::channel();
        match line {
            Line::Progress => lines.progress.push_back(tx),
            Line::Other => lines.other.push_back(tx),
        }
        Err(Waiting {
            lines: self.lines.clone(),
            turn: rx,
            served: false,
        })
    }

    /// Waits in `line` until a worker is free.
    async fn acquire(&self, line: Line) -> Permit {
        match self.enqueue(line) {
            Ok(permit) => permit,
            Err(waiting) => waiting.turn().await,
        }
    }

    /// Waits where `place` says until a worker is free. A reconcile placed
    /// in the other line for now looks at its place again when nudged or
    /// at its recheck time, and moves to the end of the first line once it
    /// belongs there.
    async fn acquire_placed(&self, id: impl FnOnce() -> String, place: impl Fn() -> Place) -> Held {
        // Placing may cost a plan: only a reconcile that has to wait is placed.
        if let Some(permit) = self.take_free() {
            return Held::Line(permit);
        }
        let placed = place();
        if placed == Place::Fresh {
            // The pools are never closed; were they, the lines still serve.
            if let Some(permit) = self.take_fresh().await {
                return Held::Fresh(permit);
            }
        }
        let waiting = match self.enqueue(placed.line()) {
            Ok(permit) => return Held::Line(permit),
            Err(waiting) => waiting,
        };
        let Place::OtherForNow { mut recheck } = placed else {
            return Held::Line(waiting.turn().await);
        };
        let listening = self.listen(id());
        // An event between `place()` above and `listen` is missed: the
        // reconcile then moves only at its recheck time or its turn.
        // Boxed, not pinned on the stack: moving up must drop the old place
        // before waiting in the new line, not when this function returns.
        let mut turn = Box::pin(waiting.turn());
        loop {
            let timer = async {
                match recheck {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                permit = &mut turn => return Held::Line(permit),
                () = listening.nudged.notified() => {}
                () = timer => {}
            }
            match place() {
                Place::OtherForNow { recheck: next } => recheck = next,
                Place::Fresh | Place::Other => recheck = None,
                Place::Progress => break,
            }
        }
        drop(listening);
        // Leaving the other line: a worker handed to it meanwhile is
        // handed on when `turn` is dropped here.
        drop(turn);
        Held::Line(self.acquire(Line::Progress).await)
    }

    /// A worker of the pool for changes to take in; for one that finds
    /// more than `surge_backlog` waiting before it, of the second pool too,
    /// whichever frees one first.
    async fn take_fresh(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.fresh.clone().try_acquire_owned() {
            return Some(permit);
        }
        let _counted = Counted::new(&self.fresh_waiting);
        let before = self.fresh_waiting.load(Ordering::Relaxed).saturating_sub(1);
        if before > self.surge_backlog {
            tokio::select! {
                permit = self.fresh.clone().acquire_owned() => permit.ok(),
                permit = self.surge.clone().acquire_owned() => permit.ok(),
            }
        } else {
            self.fresh.clone().acquire_owned().await.ok()
        }
    }

    fn listen(&self, id: String) -> Listening {
        let nudged = Arc::new(Notify::new());
        lock(&self.nudges).insert(id.clone(), nudged.clone());
        Listening {
            nudges: self.nudges.clone(),
            id,
            nudged,
        }
    }

    /// Something about the object `namespace/name` changed (a watch event):
    /// if its reconcile waits in the other line for now, it looks at its
    /// place again.
    pub fn nudge(&self, namespace: &str, name: &str) {
        let nudges = lock(&self.nudges);
        if nudges.is_empty() {
            return;
        }
        if let Some(nudged) = nudges.get(&format!("{namespace}/{name}")) {
            nudged.notify_one();
        }
    }

    /// One reconcile of the object `key` names: waits for a worker where
    /// `place` puts the cached copy, then runs `work` on the latest cached
    /// copy (the wait can be long, and the copy kube-runtime dequeued may
    /// be stale by then) and records how long it took. An object gone from
    /// the cache meanwhile is left alone.
    pub async fn reconcile<K, E, F>(
        &self,
        cache: &Store<K>,
        key: ObjectRef<K>,
        place: impl Fn(&K) -> Place,
        work: impl FnOnce(Arc<K>) -> F,
    ) -> Result<Requeue, E>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
        F: Future<Output = Result<Requeue, E>>,
    {
        let asked = Instant::now();
        let id = || {
            let ns = key.namespace.as_deref().unwrap_or_default();
            format!("{ns}/{}", key.name)
        };
        let placed = || cache.get(&key).map_or(Place::Other, |k| place(&k));
        let held = self.acquire_placed(id, placed).await;
        self.observer.waited(asked.elapsed());
        let Some(latest) = cache.get(&key) else {
            return Ok(Requeue::await_change());
        };
        let (ns, name) = (latest.namespace().unwrap_or_default(), latest.name_any());
        let started = Instant::now();
        // The future is built, on the heap, only now: the many reconciles
        // still waiting stay small.
        let result = Box::pin(work(latest)).await;
        held.release();
        let ok = result.is_ok();
        self.observer.reconciled(&ns, &name, started.elapsed(), ok);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Queues `lines` in order while every worker is taken, then lets them
    /// run; returns the order they started in and the most that ran at once.
    async fn started_order(workers: u16, lines: &[Line]) -> (Vec<usize>, usize) {
        let pool = Workers::new(workers, Arc::new(Unobserved));
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
                let _permit = pool.acquire(line).await;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                lock_log(&log).push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
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

    /// Spawns a reconcile of "ns/r{i}" that waits where `place` says and
    /// logs `i` when its turn comes; returns once it waits.
    async fn queue_placed(
        pool: &Workers,
        log: &Arc<Mutex<Vec<usize>>>,
        i: usize,
        place: impl Fn() -> Place + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (pool, log) = (pool.clone(), log.clone());
        let task = tokio::spawn(async move {
            let _permit = pool.acquire_placed(|| format!("ns/r{i}"), place).await;
            lock_log(&log).push(i);
        });
        // A current-thread runtime: the task runs up to its wait now.
        tokio::task::yield_now().await;
        task
    }

    fn lock_log(log: &Mutex<Vec<usize>>) -> MutexGuard<'_, Vec<usize>> {
        log.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[tokio::test]
    async fn one_line_is_served_in_the_order_it_came_and_no_more_at_once() {
        let (order, most) = started_order(2, &[Line::Other; 12]).await;
        assert_eq!(order, (0..12).collect::<Vec<_>>());
        assert_eq!(most, 2);
        let (order, most) = started_order(3, &[Line::Progress; 7]).await;
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        assert_eq!(most, 3);
    }

    #[tokio::test]
    async fn the_first_line_goes_first_but_the_other_line_keeps_a_turn_in_five() {
        use Line::{Other as O, Progress as P};
        // 0-3 wait in the other line, 4-13 in the first.
        let lines = [O, O, O, O, P, P, P, P, P, P, P, P, P, P];
        let (order, most) = started_order(1, &lines).await;
        assert_eq!(order, [4, 5, 6, 7, 0, 8, 9, 10, 11, 1, 12, 13, 2, 3]);
        assert_eq!(most, 1);
    }

    #[tokio::test]
    async fn a_change_to_act_on_takes_a_worker_of_its_own_pool() {
        let pool = Workers::new(1, Arc::new(Unobserved));
        let _busy = pool.acquire(Line::Other).await; // the only worker of the lines
        let fresh = || pool.acquire_placed(|| "ns/f".into(), || Place::Fresh);
        let mut held = Vec::new();
        for _ in 0..FRESH_PER_WORKER {
            let started = tokio::time::timeout(Duration::from_secs(1), fresh()).await;
            assert!(started.is_ok(), "does not wait for the busy worker");
            held.extend(started.ok());
        }
        let over = tokio::time::timeout(Duration::from_millis(100), fresh()).await;
        assert!(over.is_err(), "the pool is bounded");
        held.pop();
        let freed = tokio::time::timeout(Duration::from_secs(1), fresh()).await;
        assert!(freed.is_ok(), "a place freed in the pool is taken");
    }

    #[tokio::test]
    async fn a_wave_of_changes_to_act_on_opens_the_second_pool() {
        let pool = Workers::with_surge_backlog(1, 1, Arc::new(Unobserved));
        let _busy = pool.acquire(Line::Other).await;
        let fresh = || pool.acquire_placed(|| "ns/f".into(), || Place::Fresh);
        let first = tokio::time::timeout(Duration::from_secs(1), fresh()).await;
        assert!(first.is_ok(), "the first pool's worker");
        // Two wait, finding 0 and 1 before them: not more than the backlog,
        // so only for the first pool.
        let mut a = Box::pin(fresh());
        let mut b = Box::pin(fresh());
        assert!(futures::poll!(&mut a).is_pending());
        assert!(futures::poll!(&mut b).is_pending());
        let third = tokio::time::timeout(Duration::from_secs(1), fresh()).await;
        assert!(third.is_ok(), "2 waiting before it open the second pool");
        let fourth = tokio::time::timeout(Duration::from_millis(100), fresh()).await;
        assert!(fourth.is_err(), "the second pool is bounded too");
        drop((a, b));
        assert_eq!(pool.fresh_waiting.load(Ordering::Relaxed), 0);
        // With nobody waiting, a change finds no backlog: the first pool only.
        drop(first);
        drop(third);
        let alone = tokio::time::timeout(Duration::from_secs(1), fresh()).await;
        assert!(alone.is_ok());
        assert_eq!(pool.fresh.available_permits(), 0);
        assert_eq!(pool.surge.available_permits(), 1);
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
            push(&mut lines.progress);
        }
        // Which line each turn went to.
        let turn = |lines: &mut Lines| {
            let before = lines.progress.len();
            assert!(lines.next().is_some());
            if lines.progress.len() < before {
                'P'
            } else {
                'O'
            }
        };
        let alone: String = (0..3).map(|_| turn(&mut lines)).collect();
        assert_eq!(alone, "PPP");
        push(&mut lines.other);
        let after: String = (0..6).map(|_| turn(&mut lines)).collect();
        assert_eq!(after, "PPPPOP");
    }

    #[tokio::test]
    async fn a_reconcile_that_stops_waiting_does_not_keep_a_worker() {
        let pool = Workers::new(1, Arc::new(Unobserved));
        let held = pool.acquire(Line::Other).await;
        // Gives up while waiting; then one that gives up after its turn came
        // but before it ran.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), pool.acquire(Line::Other));
        assert!(gave_up.await.is_err());
        let mut late = Box::pin(pool.acquire(Line::Progress));
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

    /// A reconcile placed in the other line for now moves to the first when
    /// a nudge or its recheck time finds it belongs there; nudged while it
    /// still belongs in the other line, it keeps its place.
    #[tokio::test]
    async fn a_waiter_moves_to_the_first_line_when_its_step_comes_due() {
        use std::sync::atomic::AtomicBool;
        let pool = Workers::new(1, Arc::new(Unobserved));
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = pool.acquire(Line::Other).await;
        let due = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        let mut tasks = Vec::new();
        // 0: other line for good; 1: for now, moved by a nudge; 2: for now,
        // moved by its recheck time; 3: other line for good.
        for i in 0..4usize {
            let due = due.clone();
            let place = move || match i {
                1 if due[0].load(Ordering::SeqCst) => Place::Progress,
                1 => Place::OtherForNow { recheck: None },
                2 if due[1].load(Ordering::SeqCst) => Place::Progress,
                2 => Place::OtherForNow {
                    recheck: Some(Duration::from_millis(20)),
                },
                _ => Place::Other,
            };
            tasks.push(queue_placed(&pool, &log, i, place).await);
        }
        // Nudged while it is not due: nothing moves.
        pool.nudge("ns", "r1");
        tokio::task::yield_now().await;
        assert_eq!(lock(&pool.lines).progress.len(), 0);
        due[0].store(true, Ordering::SeqCst);
        pool.nudge("ns", "r1");
        due[1].store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lock(&pool.lines).progress.len(), 2);
        drop(gate);
        for task in tasks {
            assert!(task.await.is_ok());
        }
        assert_eq!(*lock_log(&log), [1, 2, 0, 3]);
        // Nobody waits: nobody is listening for nudges either.
        assert!(lock(&pool.nudges).is_empty());
        assert_eq!(lock(&pool.lines).free, 1);
    }

    /// The place a moved waiter left in the other line is empty: when the
    /// other line's turn reaches it, the worker goes on to the next waiter
    /// (held by the moved waiter's old place instead, a lone worker would
    /// never come back).
    #[tokio::test]
    async fn the_place_a_moved_waiter_left_does_not_keep_a_worker() {
        use std::sync::atomic::AtomicBool;
        let pool = Workers::new(1, Arc::new(Unobserved));
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = pool.acquire(Line::Other).await;
        let due = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // 0 waits in the other line for now; 1-4 in the first line, so the
        // other line's turn comes after them.
        for i in 0..5usize {
            let due = due.clone();
            let place = move || match i {
                0 if due.load(Ordering::SeqCst) => Place::Progress,
                0 => Place::OtherForNow { recheck: None },
                _ => Place::Progress,
            };
            tasks.push(queue_placed(&pool, &log, i, place).await);
        }
        due.store(true, Ordering::SeqCst);
        pool.nudge("ns", "r0");
        tokio::task::yield_now().await;
        drop(gate);
        let all = async {
            for task in tasks {
                assert!(task.await.is_ok());
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), all)
                .await
                .is_ok(),
            "a worker was lost; started: {:?}",
            lock_log(&log)
        );
        assert_eq!(*lock_log(&log), [1, 2, 3, 4, 0]);
        assert_eq!(lock(&pool.lines).free, 1);
    }

    /// Placing plans the Rollout: a reconcile that finds a worker free is
    /// not placed at all.
    #[tokio::test]
    async fn only_a_reconcile_that_waits_is_placed() {
        let pool = Workers::new(1, Arc::new(Unobserved));
        let placed = AtomicUsize::new(0);
        let place = || {
            placed.fetch_add(1, Ordering::SeqCst);
            Place::Progress
        };
        let first = pool.acquire_placed(|| "ns/a".into(), place).await;
        assert_eq!(placed.load(Ordering::SeqCst), 0);
        let mut second = Box::pin(pool.acquire_placed(|| "ns/b".into(), place));
        assert!(futures::poll!(&mut second).is_pending());
        assert_eq!(placed.load(Ordering::SeqCst), 1);
        drop(first);
        let _second = second.await;
    }
}
