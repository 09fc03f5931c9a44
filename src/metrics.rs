//! Prometheus metrics under upstream's names, so existing Argo Rollouts
//! dashboards and alerts keep working.
//!
//! Object-state metrics (`rollout_info`, `analysis_run_info`, ...) are
//! computed at scrape time from the controllers' caches, as upstream does:
//! no per-object state is kept beyond what the caches already hold. The
//! per-object reconcile histograms and error counters are pruned at scrape
//! time for objects that no longer exist, so label cardinality is bounded
//! by the number of live objects. Every other label takes a small fixed set
//! of values (phases, strategies, verbs, resource kinds, status codes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate, Metric,
};
use crate::api::rollout::Rollout;

/// Upstream's reconcile histogram buckets (seconds).
const RECONCILE_BUCKETS: [f64; 5] = [0.01, 0.15, 0.25, 0.5, 1.0];

/// The two work queues, named as upstream's.
#[derive(Clone, Copy, Debug)]
pub enum Queue {
    Rollouts,
    AnalysisRuns,
}

impl Queue {
    fn as_str(self) -> &'static str {
        match self {
            Queue::Rollouts => "Rollouts",
            Queue::AnalysisRuns => "AnalysisRuns",
        }
    }
}

/// The workers' reports of one queue, into the metrics.
struct QueueObserver(Metrics, Queue);

impl crate::controller::workers::Observer for QueueObserver {
    fn waited(&self, took: Duration) {
        self.0.waited(self.1, took);
    }
    fn reconciled(&self, namespace: &str, name: &str, took: Duration, ok: bool) {
        self.0.reconciled(self.1, namespace, name, took, ok);
    }
}

impl crate::controller::client::Observer for Metrics {
    fn request(&self, kind: &str, verb: &str, status: &str, took: Duration) {
        Metrics::request(self, kind, verb, status, took);
    }
}

/// All metrics of one controller process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queue_adds: IntCounterVec,
    queue_wait: HistogramVec,
    queue_retries: IntCounterVec,
    queue_work: HistogramVec,
    leader: IntGauge,
    state: Arc<State>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"))
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"))
}

const NAMESPACE_NAME: [&str; 2] = ["namespace", "name"];

impl Metrics {
    pub fn new() -> Self {
        let inner = Inner {
            registry: Registry::new(),
            requests: counter(
                "controller_clientset_k8s_request_total",
                "Number of kubernetes requests executed during application reconciliation.",
                &["kind", "verb", "status_code"],
            ),
            request_duration: histogram(
                "controller_clientset_k8s_request_duration_seconds",
                "How long the API server took to answer a request (after the client-side rate limit).",
                &["kind", "verb"],
                prometheus::exponential_buckets(1e-3, 2.0, 14).unwrap_or_default(),
            ),
            queue_wait: histogram(
                "workqueue_queue_duration_seconds",
                "How long a reconcile waited for a free worker, by queue.",
                &["name"],
                prometheus::exponential_buckets(1e-4, 4.0, 10).unwrap_or_default(),
            ),
            queue_adds: counter(
                "workqueue_adds_total",
                "Total number of reconciles started, by queue.",
                &["name"],
            ),
            queue_retries: counter(
                "workqueue_retries_total",
                "Total number of failed reconciles retried, by queue.",
                &["name"],
            ),
            queue_work: histogram(
                "workqueue_work_duration_seconds",
                "How long a reconcile takes, by queue.",
                &["name"],
                prometheus::exponential_buckets(1e-4, 4.0, 10).unwrap_or_default(),
            ),
            leader: IntGauge::new(
                "leader_election_master_status",
                "1 while this process is the leader (or runs without leader election).",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            state: Arc::new(State::default()),
        };
        let build_info = gauge(
            "build_info",
            "A metric with a constant '1' value labeled by version from which the controller was built.",
            &["version", "arch", "commit"],
        );
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
                option_env!("ROLLOUTS_GIT_COMMIT").unwrap_or("unknown"),
            ])
            .set(1.0);
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(inner.requests.clone()),
            Box::new(inner.request_duration.clone()),
            Box::new(inner.queue_adds.clone()),
            Box::new(inner.queue_wait.clone()),
            Box::new(inner.queue_retries.clone()),
            Box::new(inner.queue_work.clone()),
            Box::new(inner.leader.clone()),
            Box::new(build_info),
            #[cfg(target_os = "linux")]
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            if let Err(e) = inner.registry.register(c) {
                unreachable!("metric registered twice: {e}");
            }
        }
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The controllers hand over their caches once they run.
    /// What the workers of `queue` report, counted here.
    pub fn queue(&self, queue: Queue) -> std::sync::Arc<dyn crate::controller::workers::Observer> {
        std::sync::Arc::new(QueueObserver(self.clone(), queue))
    }

    pub fn watch_rollouts(&self, store: Store<Rollout>) {
        if let Ok(mut s) = self.inner.state.rollouts.lock() {
            *s = Some(store);
        }
    }

    /// The template caches (the cluster one only when every namespace is
    /// watched), for `analysis_template_info` and
    /// `analysis_template_metric_info`.
    pub fn watch_templates(
        &self,
        templates: Store<AnalysisTemplate>,
        cluster_templates: Option<Store<ClusterAnalysisTemplate>>,
    ) {
        *lock(&self.inner.state.templates) = Some((templates, cluster_templates));
    }

    pub fn watch_analysis_runs(&self, store: Store<AnalysisRun>) {
        if let Ok(mut s) = self.inner.state.runs.lock() {
            *s = Some(store);
        }
    }

    /// One reconcile of `namespace/name` finished.
    pub fn reconciled(&self, queue: Queue, namespace: &str, name: &str, took: Duration, ok: bool) {
        let i = &self.inner;
        let objects = match queue {
            Queue::Rollouts => &i.state.rollout_figures,
            Queue::AnalysisRuns => &i.state.run_figures,
        };
        objects.update(namespace, name, |f| f.reconciled(took, ok));
        i.queue_adds.with_label_values(&[queue.as_str()]).inc();
        i.queue_work
            .with_label_values(&[queue.as_str()])
            .observe(took.as_secs_f64());
    }

    /// A reconcile of `queue` waited `took` for a worker.
    pub fn waited(&self, queue: Queue, took: Duration) {
        self.inner
            .queue_wait
            .with_label_values(&[queue.as_str()])
            .observe(took.as_secs_f64());
    }

    pub fn retried(&self, queue: Queue) {
        self.inner
            .queue_retries
            .with_label_values(&[queue.as_str()])
            .inc();
    }

    pub fn rollout_event(&self, namespace: &str, name: &str, warning: bool, reason: &'static str) {
        let kind = if warning { "Warning" } else { "Normal" };
        self.inner
            .state
            .rollout_figures
            .update(namespace, name, |f| f.event(kind, reason));
    }

    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// Counts one API request (see [`crate::controller::client`]).
    pub fn request(&self, kind: &str, verb: &str, status: &str, took: Duration) {
        let i = &self.inner;
        i.requests.with_label_values(&[kind, verb, status]).inc();
        // A watch lasts as long as it is open: not an answer time.
        if verb != "Watch" {
            i.request_duration
                .with_label_values(&[kind, verb])
                .observe(took.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of everything, as one string.
    pub fn render(&self) -> String {
        let mut page = String::new();
        self.render_chunks(&mut |chunk| {
            page.push_str(&chunk);
            true
        });
        page
    }

    /// The Prometheus text exposition, handed to `sink` in chunks of about
    /// 64 KB as it is written; `sink` returns false to stop (the client went
    /// away). With 10,000 Rollouts the page is some 20 MB that need never be
    /// held whole.
    pub fn render_chunks(&self, sink: &mut dyn FnMut(String) -> bool) {
        let mut page = Page::new(sink);
        let families = self.inner.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        page.text.push_str(&String::from_utf8_lossy(&out));
        page.flush();
        self.inner.state.render(&mut page);
        page.flush();
    }
}

/// The text of one scrape, handed on in chunks as it is written.
struct Page<'a> {
    text: String,
    sink: &'a mut dyn FnMut(String) -> bool,
    /// False once the sink refused a chunk: the rest is not written.
    open: bool,
}

const CHUNK: usize = 64 * 1024;

impl<'a> Page<'a> {
    fn new(sink: &'a mut dyn FnMut(String) -> bool) -> Self {
        Page {
            text: String::with_capacity(CHUNK + 1024),
            sink,
            open: true,
        }
    }

    fn flush(&mut self) {
        if self.open && !self.text.is_empty() {
            let chunk = std::mem::replace(&mut self.text, String::with_capacity(CHUNK + 1024));
            self.open = (self.sink)(chunk);
        }
        if !self.open {
            self.text.clear();
        }
    }

    /// Hands on what is written once it fills a chunk.
    fn flush_if_full(&mut self) {
        if self.text.len() >= CHUNK {
            self.flush();
        }
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Each of these gauge families that has samples in `series`: its
    /// header, then its samples.
    fn gauge_families(&mut self, series: &[Series], families: impl IntoIterator<Item = usize>) {
        for family in families {
            let (name, help, _) = FAMILIES[family];
            let mut samples = series.iter().filter(|s| s.0 == family).peekable();
            if samples.peek().is_some() {
                self.header(name, help, "gauge");
            }
            for (_, labels, value) in samples {
                write_sample(&mut self.text, family, labels, *value);
                self.flush_if_full();
            }
        }
    }
}

/// Scrape-time metrics from the caches, and the per-object figures. Written
/// straight as text: with 10,000 Rollouts they are some 300,000 samples,
/// and building them as prometheus metric objects first cost about 140 MB
/// at every scrape.
#[derive(Default)]
struct State {
    rollouts: Mutex<Option<Store<Rollout>>>,
    runs: Mutex<Option<Store<AnalysisRun>>>,
    templates: Mutex<Option<TemplateStores>>,
    rollout_figures: PerObject,
    run_figures: PerObject,
}

type TemplateStores = (
    Store<AnalysisTemplate>,
    Option<Store<ClusterAnalysisTemplate>>,
);

/// Per-object reconcile and Event figures, kept compactly: the prometheus
/// crate's vectors held about 5.6 KB per Rollout (a series per Event
/// reason, each with its own copies of the labels) and built every series
/// again at each scrape (bench/metrics_scrape.rs).
#[derive(Default)]
struct PerObject(Mutex<HashMap<(String, String), Figures>>);

#[derive(Default)]
struct Figures {
    /// Reconciles per bucket of RECONCILE_BUCKETS (not cumulative).
    buckets: [u64; RECONCILE_BUCKETS.len()],
    reconciles: u64,
    seconds: f64,
    errors: u64,
    /// Events by type (Normal, Warning) and reason.
    events: Vec<(&'static str, &'static str, u64)>,
}

impl Figures {
    fn reconciled(&mut self, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        if let Some(b) = RECONCILE_BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[b] += 1;
        }
        self.reconciles += 1;
        self.seconds += secs;
        self.errors += u64::from(!ok);
    }

    fn event(&mut self, kind: &'static str, reason: &'static str) {
        match self
            .events
            .iter_mut()
            .find(|(k, r, _)| *k == kind && *r == reason)
        {
            Some((_, _, n)) => *n += 1,
            None => self.events.push((kind, reason, 1)),
        }
    }
}

impl PerObject {
    fn update(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Figures)) {
        let key = (namespace.to_string(), name.to_string());
        f(lock(&self.0).entry(key).or_default());
    }

    /// Drops the figures of objects that are gone (bounded cardinality).
    fn retain(&self, live: &HashSet<(&str, &str)>) {
        lock(&self.0).retain(|(ns, name), _| live.contains(&(ns.as_str(), name.as_str())));
    }

    /// Writes `families` (what, name, help) of every object. Written a
    /// block of objects at a time, the lock released between blocks:
    /// reconciles record into the map meanwhile, and the page goes out as
    /// it is written.
    fn render(&self, page: &mut Page, families: &[(Figure, &str, &str)]) {
        let keys: Vec<(String, String)> = lock(&self.0).keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        for &(figure, name, help) in families {
            page.header(name, help, figure.metric_type());
            let names = SeriesNames::new(name);
            for block in keys.chunks(64) {
                {
                    let objects = lock(&self.0);
                    for key in block {
                        if let Some(f) = objects.get(key) {
                            f.write(&mut page.text, figure, &names, &key.0, &key.1);
                        }
                    }
                }
                page.flush_if_full();
                if !page.open {
                    return;
                }
            }
        }
    }
}

/// The per-object figures, each written as one family.
#[derive(Clone, Copy)]
enum Figure {
    /// The reconcile histogram.
    Reconcile,
    /// The failed reconciles.
    Errors,
    /// The Events, by type and reason.
    Events,
}

impl Figure {
    fn metric_type(self) -> &'static str {
        match self {
            Figure::Reconcile => "histogram",
            Figure::Errors | Figure::Events => "counter",
        }
    }
}

/// A family's series names and histogram bounds, built once per scrape.
struct SeriesNames {
    name: String,
    bucket: String,
    sum: String,
    count: String,
    les: Vec<String>,
}

impl SeriesNames {
    fn new(name: &str) -> Self {
        SeriesNames {
            name: name.to_string(),
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
            les: RECONCILE_BUCKETS.iter().map(f64::to_string).collect(),
        }
    }
}

impl Figures {
    /// The samples of `figure` for object `ns/obj`.
    fn write(&self, out: &mut String, figure: Figure, names: &SeriesNames, ns: &str, obj: &str) {
        let object = [("namespace", ns), ("name", obj)];
        match figure {
            Figure::Reconcile => {
                let mut cumulative = 0;
                for (le, n) in names.les.iter().zip(self.buckets) {
                    cumulative += n;
                    let labels = [object[0], object[1], ("le", le)];
                    write_line(out, &names.bucket, &labels, cumulative as f64);
                }
                let labels = [object[0], object[1], ("le", "+Inf")];
                write_line(out, &names.bucket, &labels, self.reconciles as f64);
                write_line(out, &names.sum, &object, self.seconds);
                write_line(out, &names.count, &object, self.reconciles as f64);
            }
            Figure::Errors if self.errors > 0 => {
                write_line(out, &names.name, &object, self.errors as f64);
            }
            Figure::Errors => {}
            Figure::Events => {
                for (kind, reason, n) in &self.events {
                    let labels = [object[0], object[1], ("type", kind), ("reason", reason)];
                    write_line(out, &names.name, &labels, *n as f64);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const ROLLOUT_INFO: usize = 0;
const AVAILABLE: usize = 1;
const UNAVAILABLE: usize = 2;
const DESIRED: usize = 3;
const UPDATED: usize = 4;
const ROLLOUT_PHASE: usize = 5;
const RUN_INFO: usize = 6;
const RUN_PHASE: usize = 7;
const METRIC_TYPE: usize = 8;
const METRIC_PHASE: usize = 9;
const TEMPLATE_INFO: usize = 10;
const TEMPLATE_METRIC: usize = 11;

/// The scrape-time gauge families (indexed by the constants above): name,
/// help and label names, as upstream.
const FAMILIES: [(&str, &str, &[&str]); 12] = [
    (
        "rollout_info",
        "Information about rollout.",
        &["namespace", "name", "strategy", "traffic_router", "phase"],
    ),
    (
        "rollout_info_replicas_available",
        "The number of available replicas per rollout.",
        &NAMESPACE_NAME,
    ),
    (
        "rollout_info_replicas_unavailable",
        "The number of unavailable replicas per rollout.",
        &NAMESPACE_NAME,
    ),
    (
        "rollout_info_replicas_desired",
        "The number of desired replicas per rollout.",
        &NAMESPACE_NAME,
    ),
    (
        "rollout_info_replicas_updated",
        "The number of updated replicas per rollout.",
        &NAMESPACE_NAME,
    ),
    (
        "rollout_phase",
        "Information on the state of the rollout (DEPRECATED - use rollout_info)",
        &["namespace", "name", "strategy", "phase"],
    ),
    (
        "analysis_run_info",
        "Information about analysis run.",
        &["namespace", "name", "phase"],
    ),
    (
        "analysis_run_phase",
        "Information on the state of the Analysis Run (DEPRECATED - use analysis_run_info)",
        &["namespace", "name", "phase"],
    ),
    (
        "analysis_run_metric_type",
        "Information on the type of a specific metric in the Analysis Runs",
        &["namespace", "name", "metric", "type"],
    ),
    (
        "analysis_run_metric_phase",
        "Information on the duration of a specific metric in the Analysis Run",
        &["namespace", "name", "metric", "type", "dry_run", "phase"],
    ),
    (
        "analysis_template_info",
        "Information about analysis templates.",
        &["namespace", "name"],
    ),
    (
        "analysis_template_metric_info",
        "Information on metrics in analysis templates.",
        &["namespace", "name", "type", "metric"],
    ),
];

/// One sample line of family `family` in the text exposition format.
fn write_sample(out: &mut String, family: usize, labels: &[impl AsRef<str>], value: f64) {
    let (name, _, names) = FAMILIES[family];
    let pairs = names.iter().copied().zip(labels.iter().map(AsRef::as_ref));
    write_series(out, name, pairs, value);
}

fn write_line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    write_series(out, name, labels.iter().copied(), value);
}

/// One sample line in the text exposition format, label values escaped.
fn write_series<'a>(
    out: &mut String,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    use std::fmt::Write;
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                ch => out.push(ch),
            }
        }
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

impl State {
    /// Writes the scrape-time families, one family at a time as the text
    /// format wants, each handed on in chunks as it grows.
    fn render(&self, page: &mut Page) {
        // None until the controllers run (a standby has no caches): then
        // there is nothing to report and nothing to prune.
        let rollouts = self
            .rollouts
            .lock()
            .ok()
            .and_then(|s| s.as_ref().filter(|s| ready(s)).map(Store::state));
        let runs = self
            .runs
            .lock()
            .ok()
            .and_then(|s| s.as_ref().filter(|s| ready(s)).map(Store::state));
        if let Some(rollouts) = &rollouts {
            let facts: Vec<RolloutFacts> = rollouts.iter().map(|ro| rollout_facts(ro)).collect();
            let families = FAMILIES.iter().enumerate().take(ROLLOUT_PHASE + 1);
            for (family, (name, help, _)) in families.filter(|_| !facts.is_empty()) {
                page.header(name, help, "gauge");
                for f in &facts {
                    write_rollout(&mut page.text, family, f);
                    page.flush_if_full();
                }
            }
            self.rollout_figures.retain(&live(rollouts));
        }
        if let Some(runs) = &runs {
            // Few beside the Rollouts: their series are built once, then
            // written family by family.
            let series: Vec<Series> = runs.iter().flat_map(|r| run_series(r)).collect();
            page.gauge_families(&series, RUN_INFO..=METRIC_PHASE);
            self.run_figures.retain(&live(runs));
        }
        let templates = lock(&self.templates).clone();
        if let Some((templates, cluster)) = templates.filter(|(t, _)| ready(t)) {
            let namespaced = templates.state().into_iter().map(|t| {
                let ns = t.namespace().unwrap_or_default();
                (ns, t.name_any(), t.spec.metrics.clone())
            });
            let cluster = cluster.filter(ready).map(|c| c.state()).unwrap_or_default();
            let cluster = cluster
                .into_iter()
                .map(|t| (String::new(), t.name_any(), t.spec.template.metrics.clone()));
            let series: Vec<Series> = namespaced
                .chain(cluster)
                .flat_map(template_series)
                .collect();
            page.gauge_families(&series, [TEMPLATE_INFO, TEMPLATE_METRIC]);
        }
        if !page.open {
            return;
        }
        self.rollout_figures.render(
            page,
            &[
                (
                    Figure::Reconcile,
                    "rollout_reconcile",
                    "Rollout reconciliation performance.",
                ),
                (
                    Figure::Errors,
                    "rollout_reconcile_error",
                    "Error occurring during the rollout",
                ),
                (
                    Figure::Events,
                    "rollout_events_total",
                    "Count of rollout events",
                ),
            ],
        );
        self.run_figures.render(
            page,
            &[
                (
                    Figure::Reconcile,
                    "analysis_run_reconcile",
                    "Analysis Run reconciliation performance.",
                ),
                (
                    Figure::Errors,
                    "analysis_run_reconcile_error",
                    "Error occurring during the analysis run",
                ),
            ],
        );
    }
}

/// A cache that has listed its objects once (before that, an empty cache
/// would prune every series).
fn ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

fn key<K: ResourceExt>(k: &K) -> (String, String) {
    (k.namespace().unwrap_or_default(), k.name_any())
}

/// The (namespace, name) of the cached objects, borrowed.
fn live<K: kube::Resource>(objects: &[Arc<K>]) -> HashSet<(&str, &str)> {
    objects
        .iter()
        .map(|o| {
            let meta = o.meta();
            (
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

/// Upstream's rollout phase for metrics, from the Progressing condition.
fn metrics_phase(ro: &Rollout) -> &'static str {
    let conditions = ro
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if conditions.iter().any(|c| c.r#type == "InvalidSpec") {
        return "InvalidSpec";
    }
    let progressing = conditions.iter().find(|c| c.r#type == "Progressing");
    match progressing.and_then(|c| c.reason.as_deref()) {
        Some("NewReplicaSetAvailable") => "Completed",
        Some("RolloutPaused") => "Paused",
        Some("ReplicaSetCreateError") => "Error",
        Some("ProgressDeadlineExceeded") => "Timeout",
        Some("RolloutAborted") => "Abort",
        _ => "Progressing",
    }
}

type Series = (usize, Vec<String>, f64);

/// What the rollout gauges say of one Rollout, borrowed from it.
struct RolloutFacts<'a> {
    namespace: &'a str,
    name: &'a str,
    strategy: &'static str,
    router: &'static str,
    phase: &'static str,
    available: i32,
    unavailable: i32,
    desired: i32,
    updated: i32,
}

fn rollout_facts(ro: &Rollout) -> RolloutFacts<'_> {
    let (strategy, router) = if ro.spec.strategy.blue_green.is_some() {
        ("blueGreen", "")
    } else if let Some(c) = &ro.spec.strategy.canary {
        let routing = c.traffic_routing.as_ref();
        let router = match routing {
            Some(t) if t.nginx.is_some() => "Nginx",
            Some(t) if t.istio.is_some() => "Istio",
            Some(t) if t.smi.is_some() => "SMI",
            Some(t) if t.alb.is_some() => "ALB",
            Some(t) if t.ambassador.is_some() => "Ambassador",
            Some(t) if t.app_mesh.is_some() => "AppMesh",
            _ => "",
        };
        ("canary", router)
    } else {
        ("none", "")
    };
    let status = ro.status.as_ref();
    let count = |f: fn(&crate::api::rollout::RolloutStatus) -> i32| status.map(f).unwrap_or(0);
    let meta = &ro.metadata;
    RolloutFacts {
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        name: meta.name.as_deref().unwrap_or_default(),
        strategy,
        router,
        phase: metrics_phase(ro),
        available: count(|s| s.available_replicas),
        unavailable: count(|s| s.replicas - s.available_replicas),
        desired: ro.spec.replicas.unwrap_or(1),
        updated: count(|s| s.updated_replicas),
    }
}

/// Upstream's phases of `rollout_phase`, one series each.
const ROLLOUT_PHASES: [&str; 6] = [
    "Completed",
    "Progressing",
    "Paused",
    "Timeout",
    "Error",
    "Abort",
];

/// The samples of the rollout gauge `family` for one Rollout.
fn write_rollout(out: &mut String, family: usize, r: &RolloutFacts) {
    let nn = [r.namespace, r.name];
    let mut count = |n: i32| write_sample(out, family, &nn, f64::from(n));
    match family {
        AVAILABLE => count(r.available),
        UNAVAILABLE => count(r.unavailable),
        DESIRED => count(r.desired),
        UPDATED => count(r.updated),
        ROLLOUT_INFO => {
            let labels = [r.namespace, r.name, r.strategy, r.router, r.phase];
            write_sample(out, family, &labels, 1.0);
        }
        ROLLOUT_PHASE => {
            for p in ROLLOUT_PHASES {
                let labels = [r.namespace, r.name, r.strategy, p];
                write_sample(out, family, &labels, f64::from(u8::from(p == r.phase)));
            }
        }
        _ => {}
    }
}

const RUN_PHASES: [AnalysisPhase; 6] = [
    AnalysisPhase::Pending,
    AnalysisPhase::Error,
    AnalysisPhase::Failed,
    AnalysisPhase::Successful,
    AnalysisPhase::Running,
    AnalysisPhase::Inconclusive,
];

/// Upstream's provider type names.
fn metric_type(m: &Metric) -> &'static str {
    let p = &m.provider;
    if p.prometheus.is_some() {
        "Prometheus"
    } else if p.web.is_some() {
        "Web"
    } else if p.job.is_some() {
        "Job"
    } else {
        "Unknown"
    }
}

/// Upstream's template series: one per template, one per metric (the
/// cluster templates' namespace is "").
fn template_series((ns, name, metrics): (String, String, Vec<Metric>)) -> Vec<Series> {
    let mut out = vec![(TEMPLATE_INFO, vec![ns.clone(), name.clone()], 1.0)];
    for m in &metrics {
        out.push((
            TEMPLATE_METRIC,
            vec![
                ns.clone(),
                name.clone(),
                metric_type(m).into(),
                m.name.clone(),
            ],
            1.0,
        ));
    }
    out
}

fn run_series(run: &AnalysisRun) -> Vec<Series> {
    let (ns, name) = key(run);
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(AnalysisPhase::Pending);
    let mut out = vec![(
        RUN_INFO,
        vec![ns.clone(), name.clone(), phase.as_str().into()],
        1.0,
    )];
    for p in RUN_PHASES {
        out.push((
            RUN_PHASE,
            vec![ns.clone(), name.clone(), p.as_str().into()],
            f64::from(u8::from(p == phase)),
        ));
    }
    let dry_run = |metric: &str| {
        run.spec
            .dry_run
            .iter()
            .any(|d| d.metric_name == "*" || d.metric_name == metric)
    };
    for m in &run.spec.metrics {
        let kind = metric_type(m);
        out.push((
            METRIC_TYPE,
            vec![ns.clone(), name.clone(), m.name.clone(), kind.into()],
            1.0,
        ));
        let current = status
            .metric_results
            .iter()
            .find(|r| r.name == m.name)
            .map(|r| r.phase)
            .unwrap_or(AnalysisPhase::Pending);
        for p in RUN_PHASES {
            out.push((
                METRIC_PHASE,
                vec![
                    ns.clone(),
                    name.clone(),
                    m.name.clone(),
                    kind.into(),
                    dry_run(&m.name).to_string(),
                    p.as_str().into(),
                ],
                f64::from(u8::from(p == current)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{RolloutCondition, RolloutStatus};

    fn rollout(conditions: &[(&str, &str)]) -> Rollout {
        let mut ro: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"replicas": 3, "strategy": {"canary": {"trafficRouting": {"nginx": {"stableIngress": "web"}}}},
                     "template": {"spec": {"containers": []}}}
        }))
        .unwrap();
        ro.status = Some(RolloutStatus {
            replicas: 4,
            available_replicas: 3,
            updated_replicas: 1,
            conditions: conditions
                .iter()
                .map(|(t, r)| RolloutCondition {
                    r#type: t.to_string(),
                    status: "True".into(),
                    reason: Some(r.to_string()),
                    message: None,
                    last_update_time: None,
                    last_transition_time: None,
                })
                .collect(),
            ..Default::default()
        });
        ro
    }

    #[test]
    fn rollout_series_follow_upstreams_phases_and_counts() {
        let phase = |c: &[(&str, &str)]| metrics_phase(&rollout(c));
        assert_eq!(
            phase(&[("Progressing", "NewReplicaSetAvailable")]),
            "Completed"
        );
        assert_eq!(phase(&[("Progressing", "RolloutPaused")]), "Paused");
        assert_eq!(phase(&[("Progressing", "RolloutAborted")]), "Abort");
        assert_eq!(
            phase(&[("Progressing", "ProgressDeadlineExceeded")]),
            "Timeout"
        );
        assert_eq!(
            phase(&[("Progressing", "ReplicaSetUpdated")]),
            "Progressing"
        );
        assert_eq!(
            phase(&[("Progressing", "RolloutPaused"), ("InvalidSpec", "x")]),
            "InvalidSpec"
        );
        let ro = rollout(&[("Progressing", "RolloutPaused")]);
        let facts = rollout_facts(&ro);
        let family = |f: usize| {
            let mut out = String::new();
            write_rollout(&mut out, f, &facts);
            out
        };
        assert_eq!(
            family(ROLLOUT_INFO),
            "rollout_info{namespace=\"prod\",name=\"web\",strategy=\"canary\",traffic_router=\"Nginx\",phase=\"Paused\"} 1\n"
        );
        let nn = "{namespace=\"prod\",name=\"web\"}";
        assert_eq!(
            family(AVAILABLE),
            format!("rollout_info_replicas_available{nn} 3\n")
        );
        assert_eq!(
            family(UNAVAILABLE),
            format!("rollout_info_replicas_unavailable{nn} 1\n")
        );
        assert_eq!(
            family(DESIRED),
            format!("rollout_info_replicas_desired{nn} 3\n")
        );
        assert_eq!(
            family(UPDATED),
            format!("rollout_info_replicas_updated{nn} 1\n")
        );
        let phases = family(ROLLOUT_PHASE);
        assert_eq!(phases.lines().count(), 6);
        assert!(phases.contains("strategy=\"canary\",phase=\"Paused\"} 1\n"));
        assert_eq!(phases.lines().filter(|l| l.ends_with(" 1")).count(), 1);
    }

    #[test]
    fn cached_objects_are_written_as_upstreams_gauges() {
        use kube::runtime::watcher::Event;
        let m = Metrics::new();
        let (store, mut writer) = kube::runtime::reflector::store::<Rollout>();
        let mut quoted = rollout(&[("Progressing", "RolloutPaused")]);
        quoted.metadata.name = Some("we\"b\\".into());
        for ev in [
            Event::Init,
            Event::InitApply(rollout(&[("Progressing", "RolloutPaused")])),
            Event::InitApply(quoted),
            Event::InitDone,
        ] {
            writer.apply_watcher_event(&ev);
        }
        m.watch_rollouts(store);
        let page = m.render();
        assert!(page.contains(
            "rollout_info{namespace=\"prod\",name=\"web\",strategy=\"canary\",traffic_router=\"Nginx\",phase=\"Paused\"} 1\n"
        ), "{page}");
        assert!(
            page.contains("rollout_info_replicas_unavailable{namespace=\"prod\",name=\"web\"} 1\n")
        );
        assert!(page.contains(
            "rollout_phase{namespace=\"prod\",name=\"web\",strategy=\"canary\",phase=\"Completed\"} 0\n"
        ));
        assert!(
            page.contains(r#"rollout_info_replicas_desired{namespace="prod",name="we\"b\\"} 3"#),
            "{page}"
        );
        // Each family once, its samples together, after its HELP and TYPE.
        for (name, _, _) in &FAMILIES[..=ROLLOUT_PHASE] {
            assert_eq!(
                page.matches(&format!("# TYPE {name} gauge\n")).count(),
                1,
                "{name}"
            );
            let lines: Vec<usize> = page
                .lines()
                .enumerate()
                .filter(|(_, l)| l.starts_with(&format!("{name}{{")))
                .map(|(i, _)| i)
                .collect();
            assert!(
                !lines.is_empty() && lines.windows(2).all(|w| w[1] == w[0] + 1),
                "{name}"
            );
        }
        assert!(
            !page.contains("analysis_run_info"),
            "no runs cached, no family"
        );
    }

    #[test]
    fn per_object_series_of_gone_objects_are_pruned() {
        let m = Metrics::new();
        for name in ["a", "b"] {
            m.reconciled(Queue::Rollouts, "ns", name, Duration::from_millis(3), false);
            m.rollout_event("ns", name, false, "RolloutPaused");
        }
        let page = m.render();
        assert!(page.contains(r#"rollout_reconcile_error{namespace="ns",name="a"} 1"#));
        assert!(page.contains(
            r#"rollout_events_total{namespace="ns",name="a",type="Normal",reason="RolloutPaused"} 1"#
        ));
        assert!(page.contains(r#"rollout_reconcile_bucket{namespace="ns",name="a",le="0.01"} 1"#));
        assert!(page.contains(r#"rollout_reconcile_bucket{namespace="ns",name="a",le="+Inf"} 1"#));
        assert!(page.contains("# TYPE rollout_reconcile histogram\n"));
        assert!(page.contains("workqueue_adds_total{name=\"Rollouts\"} 2"));
        // Only "b" is still cached.
        let live = HashSet::from([("ns", "b")]);
        m.inner.state.rollout_figures.retain(&live);
        let page = m.render();
        assert!(!page.contains(r#"name="a""#), "{page}");
        assert!(page.contains(r#"rollout_reconcile_count{namespace="ns",name="b"} 1"#));
    }

    #[test]
    fn a_large_page_goes_out_in_whole_lines_one_family_at_a_time() {
        let m = Metrics::new();
        for i in 0..3000 {
            let name = format!("rollout-{i:04}");
            m.reconciled(Queue::Rollouts, "ns", &name, Duration::from_millis(3), true);
            m.rollout_event("ns", &name, false, "RolloutPaused");
        }
        let mut chunks = vec![];
        m.render_chunks(&mut |chunk| {
            chunks.push(chunk);
            true
        });
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(
            chunks
                .iter()
                .all(|c| c.ends_with('\n') && c.len() < 2 * CHUNK)
        );
        let page = chunks.concat();
        // The same page as a whole, but for the process's own figures.
        let stable = |p: &str| {
            p.lines()
                .filter(|l| !l.contains("process_"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(stable(&page), stable(&m.render()));
        // The text format wants each family's samples together.
        let mut seen = vec![];
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            if seen.last() != Some(&family) {
                assert!(!seen.contains(&family), "{family} split in two");
                seen.push(family);
            }
        }
        assert!(seen.contains(&"rollout_events_total"));

        // A client gone: nothing more is written after the refused chunk.
        let mut calls = 0;
        m.render_chunks(&mut |_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 1);
    }
}
