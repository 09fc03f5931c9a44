//! Memory and time of one /metrics scrape (written in chunks, as the server
//! sends it) with N Rollouts cached, without a cluster: the controller's
//! allocator, a cache filled with N Rollouts shaped like the scale
//! benchmark's, and the per-object series an update leaves behind
//! (reconcile histogram, Event counters). Prints plain numbers.
//!
//! Usage: cargo run --release --example metrics-scrape -- [N] (default 10000)

use std::time::{Duration, Instant};

use kube::runtime::watcher::Event;
use rollouts::api::Rollout;
use rollouts::metrics::{Metrics, Queue};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The reasons of the Events one canary update emits.
const REASONS: [&str; 7] = [
    "RolloutUpdated",
    "NewReplicaSetCreated",
    "ScalingReplicaSet",
    "RolloutStepCompleted",
    "RolloutPaused",
    "RolloutResumed",
    "RolloutCompleted",
];

fn rollout(i: usize) -> Rollout {
    let name = format!("r-{i:05}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": "bench-0", "uid": format!("uid-{i}")},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.com/app:v2"}]}
            },
            "strategy": {"canary": {"steps": [
                {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}
            ]}}
        },
        "status": {
            "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "phase": "Healthy", "stableRS": "5d8f7b6c9", "currentPodHash": "5d8f7b6c9",
            "currentStepIndex": 3,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "AvailableReason",
                 "message": "Rollout has minimum availability",
                 "lastUpdateTime": "2026-11-22T10:00:00Z", "lastTransitionTime": "2026-11-22T10:00:00Z"},
                {"type": "Completed", "status": "True", "reason": "RolloutCompleted",
                 "message": "Rollout completed update to revision 2 (5d8f7b6c9): Rollout is Completed",
                 "lastUpdateTime": "2026-11-22T10:00:00Z", "lastTransitionTime": "2026-11-22T10:00:00Z"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": "Rollout \"r\" has successfully progressed.",
                 "lastUpdateTime": "2026-11-22T10:00:00Z", "lastTransitionTime": "2026-11-22T10:00:00Z"},
                {"type": "Healthy", "status": "True", "reason": "RolloutHealthy",
                 "message": "Rollout is healthy",
                 "lastUpdateTime": "2026-11-22T10:00:00Z", "lastTransitionTime": "2026-11-22T10:00:00Z"}
            ]
        }
    }))
    .unwrap_or_else(|e| panic!("the bench's own Rollout does not parse: {e}"))
}

/// (VmRSS, VmHWM) in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_default()
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let metrics = Metrics::new();
    let (store, mut writer) = kube::runtime::reflector::store::<Rollout>();
    writer.apply_watcher_event(&Event::Init);
    for i in 0..n {
        writer.apply_watcher_event(&Event::InitApply(rollout(i)));
    }
    writer.apply_watcher_event(&Event::InitDone);
    metrics.watch_rollouts(store);
    let (cache_rss, _) = memory();

    for i in 0..n {
        let name = format!("r-{i:05}");
        for _ in 0..20 {
            metrics.reconciled(
                Queue::Rollouts,
                "bench-0",
                &name,
                Duration::from_millis(40),
                true,
            );
        }
        for reason in REASONS {
            metrics.rollout_event("bench-0", &name, false, reason);
        }
    }
    let (series_rss, before_hwm) = memory();

    let mut times = vec![];
    let mut size = 0;
    let mut peak = before_hwm;
    for _ in 0..3 {
        // As the server sends it: chunk by chunk, each gone once written.
        let started = Instant::now();
        let mut bytes = 0;
        metrics.render_chunks(&mut |chunk| {
            bytes += chunk.len();
            true
        });
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        size = bytes;
        peak = peak.max(memory().1);
    }
    println!("rollouts                         {n}");
    println!("RSS with the cache (MB)          {cache_rss:.1}");
    println!(
        "RSS with per-object series (MB)  {series_rss:.1}  (+{:.1})",
        series_rss - cache_rss
    );
    println!(
        "peak during scrapes (MB)         {peak:.1}  (+{:.1})",
        peak - series_rss
    );
    println!("page size (MB)                   {:.1}", size as f64 / 1e6);
    println!(
        "scrape time (ms)                 {}",
        times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
}
