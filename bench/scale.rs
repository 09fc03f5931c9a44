//! Scale benchmark (run it with `hack/bench.sh`, which starts a cluster and
//! builds the controller): N canary Rollouts of 2 replicas on the local kwok
//! cluster, then an image change on all of them. Prints plain numbers and
//! appends them to a results file.
//!
//! What is measured, and how:
//! - RSS and CPU of the controller process, from /proc (sampled every 250 ms;
//!   the peak is the kernel's high-water mark, VmHWM).
//! - API requests, from the controller's own
//!   `controller_clientset_k8s_request_total`.
//! - Step latency: a watcher on Rollouts and ReplicaSets stamps every event
//!   with the wall clock. A step becomes due when the ReplicaSet states that
//!   complete it are first seen (setWeight), when its pause ends
//!   (`pauseConditions[].startTime` + 1s) or when the image patch returns
//!   (the update itself); the controller's write for it is the first Rollout
//!   event that shows the next step (or the new ReplicaSet). Both ends are
//!   seen by the same watcher, so the watch delay mostly cancels out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use rollouts::api::Rollout;
use rollouts::api::rollout::RolloutPhase;

const INSTANCE: &str = "bench";
const POD_LABEL: &str = "rollouts-bench";

#[derive(Parser)]
#[command(about = "Scale benchmark of the rollouts controller (see hack/bench.sh)")]
struct Args {
    /// How many Rollouts.
    #[arg(long)]
    rollouts: usize,
    /// Spread them over this many namespaces (bench-0, bench-1, ...).
    #[arg(long, default_value_t = 1)]
    namespaces: usize,
    /// The controller binary (a release build).
    #[arg(long)]
    controller: PathBuf,
    /// The controller's --qps and --burst.
    #[arg(long, default_value_t = 500.0)]
    qps: f64,
    #[arg(long, default_value_t = 1000)]
    burst: u32,
    /// The controller's --rollout-threads.
    #[arg(long, default_value_t = 10)]
    threads: u32,
    /// The controller's --log-level.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Directory for the controller log and the results file.
    #[arg(long)]
    out: PathBuf,
    /// Image changes per second (0: all at once, the default). A steady
    /// stream of updates shows the controller's own step latency; one wave
    /// of N shows how long N updates queue behind each other.
    #[arg(long, default_value_t = 0.0)]
    update_rate: f64,
    /// Give up after this long in one phase.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    /// Each Rollout names a stable and a canary Service (created with it),
    /// whose selectors the controller switches.
    #[arg(long)]
    services: bool,
    /// How long to wait after each phase before reading the steady RSS.
    #[arg(long, default_value_t = 20)]
    settle_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let client = Client::try_default()
        .await
        .context("no kubeconfig (hack/bench.sh sets KUBECONFIG)")?;
    let namespaces: Vec<String> = (0..args.namespaces.max(1))
        .map(|i| format!("bench-{i}"))
        .collect();
    let names: Vec<(String, String)> = (0..args.rollouts)
        .map(|i| {
            (
                namespaces[i % namespaces.len()].clone(),
                format!("r-{i:05}"),
            )
        })
        .collect();

    eprintln!("bench: fresh namespaces {namespaces:?}");
    recreate_namespaces(&client, &namespaces).await?;
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let watchers = spawn_watchers(&client, tracker.clone());

    eprintln!("bench: creating {} Rollouts", args.rollouts);
    let t = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|(ns, name)| {
            let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            let with_services = args.services;
            async move {
                if with_services {
                    for role in ["stable", "canary"] {
                        let svc: Service = serde_json::from_value(service(&name, role))?;
                        services
                            .create(&PostParams::default(), &svc)
                            .await
                            .with_context(|| format!("creating {ns}/{name}-{role}"))?;
                    }
                }
                let ro: Rollout = serde_json::from_value(rollout(&name, "v1", with_services))?;
                api.create(&PostParams::default(), &ro)
                    .await
                    .with_context(|| format!("creating {ns}/{name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("bench: created in {:.1}s", t.elapsed().as_secs_f64());

    let metrics_port = free_port()?;
    let health_port = free_port()?;
    std::fs::create_dir_all(&args.out)?;
    let log = std::fs::File::create(args.out.join(format!("controller-{}.log", args.rollouts)))?;
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut controller = tokio::process::Command::new(&args.controller)
        .args([
            "--instance-id",
            INSTANCE,
            "--qps",
            &args.qps.to_string(),
            "--burst",
            &args.burst.to_string(),
            "--rollout-threads",
            &args.threads.to_string(),
            "--metricsport",
            &metrics_port.to_string(),
            "--healthzPort",
            &health_port.to_string(),
            "--log-level",
            &args.log_level,
            "--leader-elect=false",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the controller")?;
    let pid = controller.id().context("controller has no pid")?;
    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = tokio::spawn(sample_rss(pid, samples.clone()));
    let timeout = Duration::from_secs(args.timeout_secs);

    // Phase 1: every Rollout Healthy on v1.
    wait_all(
        &mut controller,
        &tracker,
        args.rollouts,
        timeout,
        "Healthy",
        |r| r.healthy && r.stable.is_some(),
    )
    .await?;
    let to_healthy = t0.elapsed();
    eprintln!("bench: all Healthy after {:.1}s", to_healthy.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let steady_initial = steady(&samples, Duration::from_secs(args.settle_secs / 2));
    let cpu_initial = cpu_seconds(pid)?;
    let initial = counters(metrics_port).await?;

    // Phase 2: the image change on all of them.
    eprintln!("bench: changing the image of all Rollouts");
    {
        let mut tr = lock(&tracker);
        for r in tr.rollouts.values_mut() {
            r.old_hash = r.stable.clone();
        }
    }
    let t1 = Instant::now();
    let pace = (args.update_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.update_rate));
    stream::iter(names.iter().cloned().enumerate())
        .map(|(i, (ns, name))| {
            let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
            let tracker = tracker.clone();
            async move {
                if let Some(pace) = pace {
                    tokio::time::sleep_until((t1 + pace * i as u32).into()).await;
                }
                let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "example.com/app:v2"}]}}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("patching {ns}/{name}"))?;
                let now = SystemTime::now();
                lock(&tracker)
                    .rollouts
                    .entry((ns, name))
                    .or_default()
                    .patched = Some(now);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let patch_secs = t1.elapsed().as_secs_f64();
    wait_all(
        &mut controller,
        &tracker,
        args.rollouts,
        timeout,
        "updated",
        |r| r.healthy && r.stable.is_some() && r.stable != r.old_hash && r.stable == r.current,
    )
    .await?;
    let to_updated = t1.elapsed();
    eprintln!("bench: all updated after {:.1}s", to_updated.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let steady_updated = steady(&samples, Duration::from_secs(args.settle_secs / 2));
    let cpu_total = cpu_seconds(pid)?;
    let total = counters(metrics_port).await?;
    let peak = peak_rss(pid)?;
    sampler.abort();
    watchers.into_iter().for_each(|w| w.abort());
    // SIGTERM: a clean stop, so the log ends with its shutdown lines.
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(10), controller.wait()).await;

    let lat = latencies(&lock(&tracker));
    let n = args.rollouts as f64;
    let report = Report {
        rollouts: args.rollouts,
        namespaces: namespaces.len(),
        started: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        peak_rss_mb: mb(peak),
        steady_rss_mb_initial: mb(steady_initial),
        steady_rss_mb_updated: mb(steady_updated),
        cpu_seconds_initial: cpu_initial,
        cpu_seconds_total: cpu_total,
        seconds_to_all_healthy: to_healthy.as_secs_f64(),
        seconds_patching: patch_secs,
        seconds_to_all_updated: to_updated.as_secs_f64(),
        step_latency_ms_p50: percentile(&lat.steps, 50.0),
        step_latency_ms_p99: percentile(&lat.steps, 99.0),
        step_latency_ms_max: percentile(&lat.steps, 100.0),
        step_samples: lat.steps.len(),
        pause_latency_ms_p50: percentile(&lat.pauses, 50.0),
        pause_latency_ms_p99: percentile(&lat.pauses, 99.0),
        set_weight_latency_ms_p50: percentile(&lat.weights, 50.0),
        set_weight_latency_ms_p99: percentile(&lat.weights, 99.0),
        update_latency_ms_p50: percentile(&lat.updates, 50.0),
        update_latency_ms_p99: percentile(&lat.updates, 99.0),
        api_requests_per_rollout_initial: initial.requests / n,
        api_requests_per_completed_rollout: (total.requests - initial.requests) / n,
        reconciles_per_completed_rollout: (total.reconciles - initial.reconciles) / n,
        reconcile_ms_mean: 1000.0 * total.reconcile_seconds / total.reconciles.max(1.0),
        worker_wait_ms_mean_update: 1000.0 * (total.worker_wait.0 - initial.worker_wait.0)
            / (total.worker_wait.1 - initial.worker_wait.1).max(1.0),
        rollout_patch_ms_p50_update: histogram_percentile(
            &initial.rollout_patch_buckets,
            &total.rollout_patch_buckets,
            50.0,
        ),
        rollout_patch_ms_p99_update: histogram_percentile(
            &initial.rollout_patch_buckets,
            &total.rollout_patch_buckets,
            99.0,
        ),
        controller_qps: args.qps,
        controller_threads: args.threads,
        update_rate: args.update_rate,
        services: args.services,
        machine: machine(),
        commit: std::env::var("BENCH_COMMIT").unwrap_or_default(),
    };
    let json = serde_json::to_string(&report)?;
    println!("{}", report.text());
    let mut kinds: Vec<(String, f64)> = total
        .by_kind
        .iter()
        .map(|(k, v)| (k.clone(), (v - initial.by_kind.get(k).unwrap_or(&0.0)) / n))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("API requests per completed update, by kind and verb (mean answer time):");
    for (k, v) in kinds {
        // The latency series has no status_code label.
        let key = k
            .split(',')
            .filter(|l| !l.starts_with("status_code="))
            .collect::<Vec<_>>()
            .join(",");
        let (secs, count) = total.latency_by_kind.get(&key).copied().unwrap_or_default();
        let (secs0, count0) = initial
            .latency_by_kind
            .get(&key)
            .copied()
            .unwrap_or_default();
        let ms = 1000.0 * (secs - secs0) / (count - count0).max(1.0);
        println!("  {v:6.2}  {k}  ({ms:.1} ms)");
    }
    let file = args.out.join("results.jsonl");
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)?
        .write_all(format!("{json}\n").as_bytes())?;
    eprintln!("bench: results appended to {}", file.display());

    // Leave the cluster empty for the next run (no wait).
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let _ = ns_api.delete(ns, &DeleteParams::background()).await;
    }
    Ok(())
}

/// The Service `{name}-{role}` a bench Rollout names with `--services`.
fn service(name: &str, role: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": format!("{name}-{role}")},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
    })
}

fn rollout(name: &str, tag: &str, services: bool) -> serde_json::Value {
    let mut canary = serde_json::json!({"steps": [
        {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}
    ]});
    if services {
        canary["stableService"] = format!("{name}-stable").into();
        canary["canaryService"] = format!("{name}-canary").into();
    }
    serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "labels": {rollouts::api::INSTANCE_ID_LABEL: INSTANCE}},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, POD_LABEL: "true"}},
                "spec": {"containers": [{"name": "app", "image": format!("example.com/app:{tag}")}]}
            },
            "strategy": {"canary": canary}
        }
    })
}

async fn recreate_namespaces(client: &Client, namespaces: &[String]) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let _ = api.delete(ns, &DeleteParams::background()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    for ns in namespaces {
        while api.get_opt(ns).await?.is_some() {
            if Instant::now() > deadline {
                bail!("namespace {ns} from an earlier run is still terminating after 15 min");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    Ok(())
}

/// What the watcher saw of one Rollout (wall-clock times).
#[derive(Default)]
struct Seen {
    healthy: bool,
    stable: Option<String>,
    current: Option<String>,
    old_hash: Option<String>,
    patched: Option<SystemTime>,
    /// The first sight of the new ReplicaSet or of the new pod hash.
    first_write: Option<SystemTime>,
    /// The first sight of currentStepIndex >= i, for the new revision.
    step_seen: [Option<SystemTime>; 4],
    /// The pause's startTime as written (whole seconds).
    pause_start: Option<SystemTime>,
    /// ReplicaSets of this Rollout by pod hash: (spec, status, available).
    sets: HashMap<String, (i32, i32, i32)>,
    /// When the ReplicaSet states completing step 0 and step 2 were first seen.
    step_due: [Option<SystemTime>; 3],
}

#[derive(Default)]
struct Tracker {
    rollouts: HashMap<(String, String), Seen>,
}

impl Tracker {
    fn rollout_event(&mut self, ro: &Rollout, at: SystemTime) {
        let key = (ro.namespace().unwrap_or_default(), ro.name_any());
        let seen = self.rollouts.entry(key).or_default();
        let Some(status) = &ro.status else { return };
        seen.healthy = status.phase == Some(RolloutPhase::Healthy);
        seen.stable = status.stable_rs.clone();
        seen.current = status.current_pod_hash.clone();
        if seen.patched.is_none() || seen.current == seen.old_hash {
            return;
        }
        seen.first_write.get_or_insert(at);
        let index = status.current_step_index.unwrap_or(0).clamp(0, 3) as usize;
        for i in 1..=index {
            seen.step_seen[i].get_or_insert(at);
        }
        if let Some(p) = status.pause_conditions.first() {
            let start = SystemTime::UNIX_EPOCH
                + Duration::from_secs(p.start_time.0.as_second().max(0) as u64);
            seen.pause_start.get_or_insert(start);
        }
    }

    fn replica_set_event(&mut self, rs: &ReplicaSet, at: SystemTime) {
        let Some(owner) = rs
            .owner_references()
            .iter()
            .find(|o| o.kind == "Rollout")
            .map(|o| o.name.clone())
        else {
            return;
        };
        let hash = rs
            .labels()
            .get("rollouts-pod-template-hash")
            .cloned()
            .unwrap_or_default();
        let seen = self
            .rollouts
            .entry((rs.namespace().unwrap_or_default(), owner))
            .or_default();
        let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (replicas, available) = rs
            .status
            .as_ref()
            .map(|s| (s.replicas, s.available_replicas.unwrap_or(0)))
            .unwrap_or_default();
        seen.sets.insert(hash.clone(), (spec, replicas, available));
        let (Some(_), Some(old)) = (seen.patched, seen.old_hash.clone()) else {
            return;
        };
        if hash != old {
            seen.first_write.get_or_insert(at);
        }
        // The counts the planner waits for: setWeight 50 of 2 replicas is
        // 1 new + 1 stable, setWeight 100 is 2 new + 0 stable.
        let new = seen.sets.iter().find(|(h, _)| **h != old).map(|(_, s)| *s);
        let stable = seen.sets.get(&old).copied();
        if let (Some(new), Some(stable)) = (new, stable) {
            for (step, want_new, want_stable) in [(0, 1, 1), (2, 2, 0)] {
                let done = new.0 == want_new
                    && new.2 == want_new
                    && stable.0 == want_stable
                    && stable.1 == want_stable;
                if done {
                    seen.step_due[step].get_or_insert(at);
                }
            }
        }
    }
}

fn spawn_watchers(
    client: &Client,
    tracker: Arc<Mutex<Tracker>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ro_cfg = watcher::Config::default()
        .labels(&format!("{}={INSTANCE}", rollouts::api::INSTANCE_ID_LABEL));
    let rs_cfg = watcher::Config::default().labels(&format!("{POD_LABEL}=true"));
    vec![
        spawn_watcher(client, ro_cfg, tracker.clone(), Tracker::rollout_event),
        spawn_watcher(client, rs_cfg, tracker, Tracker::replica_set_event),
    ]
}

/// Feeds every object the watch shows, stamped with the time it arrived.
fn spawn_watcher<K>(
    client: &Client,
    config: watcher::Config,
    tracker: Arc<Mutex<Tracker>>,
    record: fn(&mut Tracker, &K, SystemTime),
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(ev) = events.next().await {
            let at = SystemTime::now();
            match ev {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    record(&mut lock(&tracker), &obj, at)
                }
                Ok(_) => {}
                Err(e) => eprintln!("bench: {} watch: {e}", K::kind(&())),
            }
        }
    })
}

async fn wait_all(
    controller: &mut tokio::process::Child,
    tracker: &Mutex<Tracker>,
    n: usize,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let count = lock(tracker).rollouts.values().filter(|r| done(r)).count();
        if count >= n {
            return Ok(());
        }
        if let Some(status) = controller.try_wait()? {
            bail!(
                "the controller exited ({status}) with {count} of {n} Rollouts {what}; see its log"
            );
        }
        if Instant::now() > deadline {
            bail!("only {count} of {n} Rollouts {what} after {timeout:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("bench: {count}/{n} {what}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Latencies {
    steps: Vec<f64>,
    pauses: Vec<f64>,
    weights: Vec<f64>,
    updates: Vec<f64>,
}

fn latencies(tr: &Tracker) -> Latencies {
    let ms = |due: SystemTime, write: SystemTime| {
        write
            .duration_since(due)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let mut out = Latencies {
        steps: vec![],
        pauses: vec![],
        weights: vec![],
        updates: vec![],
    };
    for seen in tr.rollouts.values() {
        if let (Some(due), Some(write)) = (seen.patched, seen.first_write) {
            out.updates.push(ms(due, write));
        }
        // setWeight 50 done -> step 1; setWeight 100 done -> step 3.
        for (due, write) in [(0, 1), (2, 3)] {
            if let (Some(d), Some(w)) = (seen.step_due[due], seen.step_seen[write]) {
                out.weights.push(ms(d, w));
            }
        }
        if let (Some(start), Some(w)) = (seen.pause_start, seen.step_seen[2]) {
            out.pauses.push(ms(start + Duration::from_secs(1), w));
        }
    }
    out.steps = out.weights.iter().chain(&out.pauses).copied().collect();
    out
}

/// The p-th percentile (in ms) of what a cumulative histogram counted between
/// two scrapes, interpolated linearly inside its bucket: as close as the
/// bucket bounds allow. A percentile in the last, unbounded bucket is given
/// as that bucket's lower bound.
fn histogram_percentile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> f64 {
    let counted = |le: f64| {
        let at = |b: &[(f64, f64)]| b.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
        at(after) - at(before)
    };
    let total = after.last().map_or(0.0, |(le, _)| counted(*le));
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = p / 100.0 * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, _) in after {
        let count = counted(*le);
        if count >= rank {
            if le.is_infinite() {
                return 1000.0 * lower;
            }
            let share = (rank - below) / (count - below).max(f64::MIN_POSITIVE);
            return 1000.0 * (lower + (le - lower) * share);
        }
        (lower, below) = (*le, count);
    }
    1000.0 * lower
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

async fn sample_rss(pid: u32, samples: Arc<Mutex<Vec<(Instant, u64)>>>) {
    loop {
        if let Ok(kb) = proc_status_kb(pid, "VmRSS:") {
            lock(&samples).push((Instant::now(), kb * 1024));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The median RSS over the last `window`.
fn steady(samples: &Mutex<Vec<(Instant, u64)>>, window: Duration) -> u64 {
    let s = lock(samples);
    let mut recent: Vec<u64> = s
        .iter()
        .filter(|(t, _)| t.elapsed() <= window)
        .map(|(_, b)| *b)
        .collect();
    recent.sort();
    recent.get(recent.len() / 2).copied().unwrap_or_default()
}

fn peak_rss(pid: u32) -> Result<u64> {
    Ok(proc_status_kb(pid, "VmHWM:")? * 1024)
}

fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// User + system CPU seconds of the process (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Sums of some of the controller's own metrics.
struct Counters {
    requests: f64,
    /// Requests by their labels (kind, verb, status code).
    by_kind: HashMap<String, f64>,
    /// API server answer time by labels (kind, verb): (seconds, requests).
    latency_by_kind: HashMap<String, (f64, f64)>,
    reconciles: f64,
    reconcile_seconds: f64,
    /// Rollout reconciles' wait for a free worker: (seconds, reconciles).
    worker_wait: (f64, f64),
    /// The answer time of Rollout (status) patches: cumulative histogram
    /// buckets (upper bound in seconds, requests), by bound.
    rollout_patch_buckets: Vec<(f64, f64)>,
}

async fn counters(port: u16) -> Result<Counters> {
    let client = rollouts::analysis::providers::http_client(Duration::from_secs(30), false)?;
    let page = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let sum = |prefix: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    // The samples of one family, by their labels.
    let family = |prefix: &str| -> HashMap<String, f64> {
        page.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once(' ')?;
                Some((
                    labels.trim_end_matches('}').to_string(),
                    value.parse().ok()?,
                ))
            })
            .collect()
    };
    let latency_sums = family("controller_clientset_k8s_request_duration_seconds_sum{");
    let latency_counts = family("controller_clientset_k8s_request_duration_seconds_count{");
    let latency_by_kind = latency_sums
        .into_iter()
        .map(|(k, s)| {
            let c = latency_counts.get(&k).copied().unwrap_or_default();
            (k, (s, c))
        })
        .collect();
    let mut rollout_patch_buckets: Vec<(f64, f64)> = page
        .lines()
        .filter_map(|l| l.strip_prefix("controller_clientset_k8s_request_duration_seconds_bucket{"))
        .filter(|l| l.contains("kind=\"rollouts\"") && l.contains("verb=\"Patch\""))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.parse().ok()?))
        })
        .collect();
    rollout_patch_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wait = "{name=\"Rollouts\"}";
    Ok(Counters {
        rollout_patch_buckets,
        by_kind: family("controller_clientset_k8s_request_total{"),
        latency_by_kind,
        requests: sum("controller_clientset_k8s_request_total{"),
        reconciles: sum("rollout_reconcile_count{"),
        reconcile_seconds: sum("rollout_reconcile_sum{"),
        worker_wait: (
            sum(&format!("workqueue_queue_duration_seconds_sum{wait}")),
            sum(&format!("workqueue_queue_duration_seconds_count{wait}")),
        ),
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(serde::Serialize)]
struct Report {
    rollouts: usize,
    namespaces: usize,
    started: u64,
    peak_rss_mb: f64,
    steady_rss_mb_initial: f64,
    steady_rss_mb_updated: f64,
    cpu_seconds_initial: f64,
    cpu_seconds_total: f64,
    seconds_to_all_healthy: f64,
    seconds_patching: f64,
    seconds_to_all_updated: f64,
    step_latency_ms_p50: f64,
    step_latency_ms_p99: f64,
    step_latency_ms_max: f64,
    step_samples: usize,
    pause_latency_ms_p50: f64,
    pause_latency_ms_p99: f64,
    set_weight_latency_ms_p50: f64,
    set_weight_latency_ms_p99: f64,
    update_latency_ms_p50: f64,
    update_latency_ms_p99: f64,
    api_requests_per_rollout_initial: f64,
    api_requests_per_completed_rollout: f64,
    reconciles_per_completed_rollout: f64,
    reconcile_ms_mean: f64,
    /// During the update: how long a Rollout reconcile waited for a worker.
    worker_wait_ms_mean_update: f64,
    /// During the update: the API server's answer time to a Rollout patch,
    /// from the controller's histogram (interpolated inside its buckets).
    rollout_patch_ms_p50_update: f64,
    rollout_patch_ms_p99_update: f64,
    controller_qps: f64,
    controller_threads: u32,
    /// Image changes per second; 0: all at once.
    update_rate: f64,
    /// Whether each Rollout named a stable and a canary Service.
    services: bool,
    machine: String,
    commit: String,
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{cores} cores ({model}), {:.0} GB RAM, Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

impl Report {
    fn text(&self) -> String {
        format!(
            "machine                           {}\n\
             commit                            {}\n\
             rollouts                          {}\n\
             namespaces                        {}\n\
             image changes per second          {}\n\
             stable and canary Services        {}\n\
             peak RSS (MB)                     {:.1}\n\
             steady RSS after start (MB)       {:.1}\n\
             steady RSS after update (MB)      {:.1}\n\
             CPU seconds (start / total)       {:.1} / {:.1}\n\
             time to all Healthy (s)           {:.1}\n\
             time to all updated (s)           {:.1}  (patching took {:.1})\n\
             step latency p50 / p99 / max (ms) {:.0} / {:.0} / {:.0}  ({} steps)\n\
             - pause ended -> next step        {:.0} / {:.0}\n\
             - setWeight done -> next step     {:.0} / {:.0}\n\
             image change -> first write (ms)  {:.0} / {:.0}\n\
             API requests per rollout (start)  {:.1}\n\
             API requests per completed update {:.1}\n\
             reconciles per completed update   {:.1}  (mean {:.1} ms)\n\
             wait for a worker, update (ms)    {:.1}\n\
             Rollout patch answer p50 / p99 (ms) {:.0} / {:.0}  (update; histogram)",
            self.machine,
            self.commit,
            self.rollouts,
            self.namespaces,
            if self.update_rate > 0.0 {
                format!("{}", self.update_rate)
            } else {
                "all at once".to_string()
            },
            if self.services { "yes" } else { "no" },
            self.peak_rss_mb,
            self.steady_rss_mb_initial,
            self.steady_rss_mb_updated,
            self.cpu_seconds_initial,
            self.cpu_seconds_total,
            self.seconds_to_all_healthy,
            self.seconds_to_all_updated,
            self.seconds_patching,
            self.step_latency_ms_p50,
            self.step_latency_ms_p99,
            self.step_latency_ms_max,
            self.step_samples,
            self.pause_latency_ms_p50,
            self.pause_latency_ms_p99,
            self.set_weight_latency_ms_p50,
            self.set_weight_latency_ms_p99,
            self.update_latency_ms_p50,
            self.update_latency_ms_p99,
            self.api_requests_per_rollout_initial,
            self.api_requests_per_completed_rollout,
            self.reconciles_per_completed_rollout,
            self.reconcile_ms_mean,
            self.worker_wait_ms_mean_update,
            self.rollout_patch_ms_p50_update,
            self.rollout_patch_ms_p99_update,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::histogram_percentile;

    #[test]
    fn a_histogram_percentile_counts_only_what_came_between_the_scrapes() {
        // Bounds 1 ms, 2 ms, 4 ms, +Inf; 10 requests before, 100 after them.
        let buckets = |counts: [f64; 4]| {
            let bounds = [0.001, 0.002, 0.004, f64::INFINITY];
            std::array::from_fn::<_, 4, _>(|i| (bounds[i], counts[i]))
        };
        let before = buckets([10.0, 10.0, 10.0, 10.0]);
        let after = buckets([10.0, 60.0, 110.0, 110.0]);
        // Half of the 100 new ones fell in (1, 2] ms, half in (2, 4] ms.
        assert!((histogram_percentile(&before, &after, 50.0) - 2.0).abs() < 1e-9);
        assert!((histogram_percentile(&before, &after, 25.0) - 1.5).abs() < 1e-9);
        assert!((histogram_percentile(&before, &after, 99.0) - 3.96).abs() < 1e-9);
        // In the unbounded bucket: its lower bound.
        let slow = buckets([10.0, 60.0, 110.0, 120.0]);
        assert!((histogram_percentile(&before, &slow, 99.0) - 4.0).abs() < 1e-9);
        assert!(histogram_percentile(&before, &before, 50.0).is_nan());
    }
}
