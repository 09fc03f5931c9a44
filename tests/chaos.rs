//! Chaos: 20 Rollouts of mixed shapes (canaries with Services, with nginx
//! routing, with dynamicStableScale, a rolling update, a blue-green) are
//! updated at once while the real controller binary is SIGKILLed every 2-4 s
//! and started again, and the kube-apiserver is restarted once. Some are
//! promoted (by their steps, or by `kubectl rollouts promote`), some aborted
//! (`kubectl rollouts abort`, a failing analysis, the progress deadline).
//!
//! Throughout, a Pod watch checks every state of the pods it sees for a
//! Rollout with fewer available pods than `replicas - maxUnavailable`, and
//! a sampler lists the namespace every ~200 ms for a blue-green active
//! Service that selects fewer than `replicas` ready pods, or an abort the
//! controller has recorded that still leaves traffic on the canary (canary
//! Service selector, canary Ingress weight). At the end every Rollout must
//! be at its own end state. The counts it prints (kills, states checked,
//! fewest available pods per Rollout) are asserted to be large enough that
//! the test cannot pass vacuously.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use rollouts::api::Rollout;
use rollouts::api::rollout::RolloutPhase;
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::process::ControllerProcess;
use support::{TestEnv, hack_script, kubeconfig, wait_for};

const HASH: &str = "rollouts-pod-template-hash";
const WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
const V1: &str = "nginx:1";
const V2: &str = "nginx:2";

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// Healthy on v2, older ReplicaSets at 0.
    Promoted,
    /// Degraded and aborted, stable still v1, the canary at 0 pods.
    Aborted,
}

/// What the test does when the rollout waits at its indefinite pause.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cli {
    None,
    Promote,
    Abort,
}

#[derive(Clone, Debug)]
struct Shape {
    name: String,
    replicas: i32,
    /// replicas - maxUnavailable, with upstream's rounding (maxUnavailable
    /// rounds down; a blue-green keeps all of `replicas` in an update).
    min_available: i32,
    nginx: bool,
    blue_green: bool,
    /// The v2 pods never become Ready (kwok's fail-readiness stage).
    bad_canary: bool,
    cli: Cli,
    /// Index of the indefinite pause step `cli` acts at.
    pause_step: i32,
    end: End,
    /// The `strategy:` block and extra `spec:` lines.
    strategy: String,
    spec_extra: String,
}

impl Shape {
    fn stable_service(&self) -> String {
        if self.blue_green {
            format!("{}-active", self.name)
        } else {
            format!("{}-stable", self.name)
        }
    }
    fn canary_service(&self) -> String {
        if self.blue_green {
            format!("{}-preview", self.name)
        } else {
            format!("{}-canary", self.name)
        }
    }
    fn canary_ingress(&self) -> String {
        format!("{0}-{0}-stable-canary", self.name)
    }

    fn yaml(&self) -> String {
        let name = &self.name;
        let service = |svc: String| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec: {{ports: [{{port: 80, targetPort: 8080}}], selector: {{app: {name}}}}}\n---\n"
            )
        };
        let mut out = service(self.stable_service()) + &service(self.canary_service());
        if self.nginx {
            out += &format!(
                r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}-stable
  annotations: {{kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: {name}.local
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {name}-stable, port: {{number: 80}}}}}}
---
"#
            );
        }
        out + &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  revisionHistoryLimit: 2
{extra}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: app, image: "{V1}"}}]}}
  strategy:
{strategy}"#,
            replicas = self.replicas,
            extra = self.spec_extra,
            strategy = self.strategy,
        )
    }
}

/// The twenty Rollouts. Pause durations are short so the whole update takes
/// about a minute, long enough for a dozen or more kills.
fn shapes() -> Vec<Shape> {
    let base = |name: &str, replicas, min_available, end| Shape {
        name: name.to_string(),
        replicas,
        min_available,
        nginx: false,
        blue_green: false,
        bad_canary: false,
        cli: Cli::None,
        pause_step: -1,
        end,
        strategy: String::new(),
        spec_extra: String::new(),
    };
    let canary = |name: &str, body: &str| {
        format!(
            "    canary:\n      stableService: {name}-stable\n      canaryService: {name}-canary\n{body}"
        )
    };
    let nginx = |name: &str, body: &str| {
        canary(
            name,
            &format!("      trafficRouting: {{nginx: {{stableIngress: {name}-stable}}}}\n{body}"),
        )
    };
    let mut out = Vec::new();
    // maxSurge 1, maxUnavailable 1 of 4: at least 3 available.
    for i in 0..5 {
        let name = format!("basic-{i}");
        let mut s = base(&name, 4, 3, End::Promoted);
        s.strategy = canary(
            &name,
            "      maxSurge: 1\n      maxUnavailable: 1\n      steps:\n      - setWeight: 25\n      - pause: {duration: 2s}\n      - setWeight: 50\n      - pause: {duration: 2s}\n      - setWeight: 75\n",
        );
        out.push(s);
    }
    // Upstream's defaults, 25%/25% of 5: maxSurge rounds up to 2,
    // maxUnavailable down to 1.
    for i in 0..3 {
        let name = format!("default-{i}");
        let mut s = base(&name, 5, 4, End::Promoted);
        s.strategy = canary(
            &name,
            "      steps:\n      - setWeight: 40\n      - pause: {duration: 2s}\n      - setWeight: 80\n",
        );
        out.push(s);
    }
    // No steps: a rolling update that may only take pods away.
    let mut s = base("rolling", 5, 3, End::Promoted);
    s.strategy = canary("rolling", "      maxSurge: 0\n      maxUnavailable: 2\n");
    out.push(s);
    // maxUnavailable 0: never below 3; promoted by hand.
    let mut s = base("promote", 3, 3, End::Promoted);
    s.strategy = canary(
        "promote",
        "      maxSurge: 1\n      maxUnavailable: 0\n      steps:\n      - setWeight: 34\n      - pause: {}\n      - setWeight: 67\n",
    );
    s.cli = Cli::Promote;
    s.pause_step = 1;
    out.push(s);
    // nginx: the stable keeps all its pods; default maxUnavailable 1 of 4.
    let nginx_steps = "      steps:\n      - setWeight: 25\n      - pause: {duration: 2s}\n      - setWeight: 50\n      - pause: {duration: 2s}\n      - setWeight: 75\n      - pause: {duration: 2s}\n";
    for i in 0..3 {
        let name = format!("nginx-{i}");
        let mut s = base(&name, 4, 3, End::Promoted);
        s.nginx = true;
        s.strategy = nginx(
            &name,
            &format!("      scaleDownDelaySeconds: 5\n{nginx_steps}"),
        );
        out.push(s);
    }
    // The stable shrinks as traffic leaves it (which excludes
    // scaleDownDelaySeconds).
    let mut s = base("dynamic", 4, 3, End::Promoted);
    s.nginx = true;
    s.strategy = nginx(
        "dynamic",
        &format!("      dynamicStableScale: true\n{nginx_steps}"),
    );
    out.push(s);
    let mut s = base("bluegreen", 3, 3, End::Promoted);
    s.blue_green = true;
    s.strategy = "    blueGreen:\n      activeService: bluegreen-active\n      previewService: bluegreen-preview\n      autoPromotionSeconds: 2\n      scaleDownDelaySeconds: 5\n".into();
    out.push(s);
    // Aborted by hand at the pause.
    let mut s = base("abort-nginx", 4, 3, End::Aborted);
    s.nginx = true;
    s.strategy = nginx(
        "abort-nginx",
        "      abortScaleDownDelaySeconds: 3\n      steps:\n      - setWeight: 50\n      - pause: {}\n",
    );
    s.cli = Cli::Abort;
    s.pause_step = 1;
    out.push(s);
    let mut s = base("abort-basic", 4, 3, End::Aborted);
    s.strategy = canary(
        "abort-basic",
        "      maxSurge: 1\n      maxUnavailable: 1\n      steps:\n      - setWeight: 50\n      - pause: {}\n",
    );
    s.cli = Cli::Abort;
    s.pause_step = 1;
    out.push(s);
    // Aborted by a failing analysis step.
    let analysis = "      - setWeight: 25\n      - analysis: {templates: [{templateName: always-fails}]}\n      - setWeight: 50\n";
    let mut s = base("analysis-nginx", 4, 3, End::Aborted);
    s.nginx = true;
    s.strategy = nginx(
        "analysis-nginx",
        &format!("      abortScaleDownDelaySeconds: 3\n      steps:\n{analysis}"),
    );
    out.push(s);
    let mut s = base("analysis-basic", 4, 3, End::Aborted);
    s.strategy = canary(
        "analysis-basic",
        &format!("      maxSurge: 1\n      maxUnavailable: 1\n      steps:\n{analysis}"),
    );
    out.push(s);
    // Canary pods that never become Ready: the progress deadline aborts.
    // The deadline outlasts the API server outage (8 s after the update,
    // up to 15 s with the kills around it): a shorter one can pass before
    // the canary's first pod exists, an abort that is right but leaves the
    // watcher nothing mid-update to check.
    let mut s = base("deadline", 4, 3, End::Aborted);
    s.bad_canary = true;
    s.spec_extra = "  progressDeadlineSeconds: 25\n  progressDeadlineAbort: true\n".into();
    s.strategy = canary(
        "deadline",
        "      maxSurge: 1\n      maxUnavailable: 1\n      steps:\n      - setWeight: 50\n      - pause: {duration: 2s}\n",
    );
    out.push(s);
    assert_eq!(out.len(), 20);
    out
}

fn analysis_template(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: always-fails}}
spec:
  metrics:
  - name: ok
    interval: 1s
    count: 5
    failureLimit: 0
    successCondition: result == true
    provider:
      web: {{url: "{url}/", jsonPath: "{{$.ok}}"}}
"#
    )
}

/// Every object of one kind in the namespace.
async fn list<K>(client: &Client, ns: &str) -> Result<Vec<K>>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Retries `f` for up to 60 s: the API server may be restarting.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                return Err(e.context(format!("{what}: still failing after 60s")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A small xorshift generator: the kill intervals vary, and the seed is
/// printed so a failing schedule can be read back.
struct Rng(u64);

impl Rng {
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// The controllers' logs, gathered into one file (kept on failure).
struct Logs {
    path: PathBuf,
}

impl Logs {
    fn collect(&self, ctl: &ControllerProcess, how: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "===== {} ({how}) =====\n{}", ctl.name, ctl.log());
        }
        let _ = std::fs::remove_file(ctl.log_path());
    }
}

/// The controller binary on the test namespace. One replica, so no leader
/// election: a restarted process starts reconciling at once.
fn controller(ns: &str, n: usize) -> Result<ControllerProcess> {
    ControllerProcess::start(
        &format!("chaos-{n}"),
        kubeconfig(),
        &["--namespace", ns, "--leader-elect=false"],
    )
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn label<'a>(labels: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.and_then(|l| l.get(key)).map(String::as_str)
}

fn selector_hash(svc: Option<&Service>) -> Option<String> {
    svc.and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.get(HASH).cloned())
}

#[derive(Default)]
struct Observed {
    /// Pod states checked (one per watch event) and watch errors.
    pod_states: usize,
    pod_watch_errors: usize,
    /// Samples of Rollouts, Services and Ingresses, and failed ones.
    samples: usize,
    failed_samples: usize,
    /// (Rollout, what was violated, details).
    violations: Vec<(String, &'static str, String)>,
    /// Per Rollout: the fewest available pods seen, and in how many pod
    /// states it had pods of two templates at once (an update under way).
    lowest: HashMap<String, i32>,
    mid_update: HashMap<String, usize>,
    /// Pod states with an update under way after the API server restart.
    mid_update_after_restart: usize,
    /// Checks that had something to check: an aborted Rollout's traffic,
    /// a blue-green active Service's pods.
    abort_checks: usize,
    active_checks: usize,
}

/// Ready (kwok's pods have no minReadySeconds, so ready is available) and
/// not on their way out, counted by pod template hash.
fn ready_by_hash<'a>(pods: impl Iterator<Item = &'a Pod>) -> BTreeMap<String, (i32, i32)> {
    let mut by_hash: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for p in pods {
        let hash = label(p.metadata.labels.as_ref(), HASH).unwrap_or("?");
        let e = by_hash.entry(hash.to_string()).or_default();
        e.0 += 1;
        e.1 += i32::from(is_ready(p));
    }
    by_hash
}

/// Availability of one Rollout in one state of its pods.
fn check_pods(shape: &Shape, pods: &HashMap<String, Pod>, restarted: bool, seen: &mut Observed) {
    let name = shape.name.as_str();
    let by_hash = ready_by_hash(
        pods.values()
            .filter(|p| label(p.metadata.labels.as_ref(), "app") == Some(name)),
    );
    let available: i32 = by_hash.values().map(|(_, ready)| ready).sum();
    let lowest = seen.lowest.entry(name.to_string()).or_insert(available);
    *lowest = (*lowest).min(available);
    if available < shape.min_available {
        seen.violations.push((
            name.to_string(),
            "availability",
            format!(
                "{} {name}: {available} available pods < {} (pods, ready by hash: {by_hash:?})",
                now(),
                shape.min_available
            ),
        ));
    }
    if by_hash.len() > 1 {
        *seen.mid_update.entry(name.to_string()).or_default() += 1;
        if restarted {
            seen.mid_update_after_restart += 1;
        }
    }
}

/// Watches the namespace's pods and checks availability in every state the
/// watch shows: each event is one state of the pods, in order, so no dip
/// between two samples can be missed. (Across a watch restart, as during
/// the API server outage, the relist replaces the whole set at once.)
async fn watch_pods(
    client: Client,
    ns: String,
    shapes: Vec<Shape>,
    outage: Arc<Mutex<Outage>>,
    seen: Arc<Mutex<Observed>>,
) {
    let api = Api::<Pod>::namespaced(client, &ns);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut pods: HashMap<String, Pod> = HashMap::new();
    let mut relist: HashMap<String, Pod> = HashMap::new();
    while let Some(event) = stream.next().await {
        let restarted = outage.lock().is_ok_and(|o| o.ended.is_some());
        let Ok(mut seen) = seen.lock() else { return };
        let changed = match event {
            Ok(watcher::Event::Apply(p)) => {
                let app = label(p.metadata.labels.as_ref(), "app").map(str::to_string);
                pods.insert(p.name_any(), p);
                app
            }
            Ok(watcher::Event::Delete(p)) => {
                pods.remove(&p.name_any());
                label(p.metadata.labels.as_ref(), "app").map(str::to_string)
            }
            Ok(watcher::Event::Init) => {
                relist.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(p)) => {
                relist.insert(p.name_any(), p);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                pods = std::mem::take(&mut relist);
                None
            }
            Err(_) => {
                seen.pod_watch_errors += 1;
                continue;
            }
        };
        seen.pod_states += 1;
        for shape in &shapes {
            if changed.as_ref().is_none_or(|app| *app == shape.name) {
                check_pods(shape, &pods, restarted, &mut seen);
            }
        }
    }
}

/// One look at what pods alone do not show. Rollouts are read first:
/// whatever the controller recorded in a status it had applied to Services
/// and Ingresses before writing that status (apply.rs writes the status
/// last), so the later reads must show it. Likewise the active Service is
/// read before the pods it selects.
async fn sample(client: &Client, ns: &str, shapes: &[Shape], seen: &Mutex<Observed>) -> Result<()> {
    let rollouts = list::<Rollout>(client, ns).await?;
    let services = list::<Service>(client, ns).await?;
    let ingresses = list::<Ingress>(client, ns).await?;
    let blue_green: Vec<&Shape> = shapes.iter().filter(|s| s.blue_green).collect();
    let mut blue_green_pods = Vec::new();
    for shape in &blue_green {
        let lp = ListParams::default().labels(&format!("app={}", shape.name));
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?;
        blue_green_pods.push(ready_by_hash(pods.items.iter()));
    }
    let at = now();
    let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    seen.samples += 1;
    let svc = |n: String| services.iter().find(|s| s.name_any() == n);
    for (shape, by_hash) in blue_green.iter().zip(&blue_green_pods) {
        // The active Service only ever selects a full set of ready pods.
        if let Some(hash) = selector_hash(svc(shape.stable_service())) {
            seen.active_checks += 1;
            let ready = by_hash.get(&hash).map_or(0, |(_, r)| *r);
            if ready < shape.replicas {
                seen.violations.push((
                    shape.name.clone(),
                    "active Service",
                    format!(
                        "{at} {}: the active Service selects {hash} with {ready} ready pods < {}",
                        shape.name, shape.replicas
                    ),
                ));
            }
        }
    }
    for shape in shapes {
        let name = shape.name.as_str();
        let ro = rollouts.iter().find(|r| r.name_any() == name);
        // An abort the controller has recorded (abortedAt is written with
        // the plan that sent traffic back) leaves nothing on the canary.
        let Some(s) = ro
            .and_then(|r| r.status.as_ref())
            .filter(|s| s.abort && s.aborted_at.is_some())
        else {
            continue;
        };
        seen.abort_checks += 1;
        let canary = selector_hash(svc(shape.canary_service()));
        if canary.is_some() && canary != s.stable_rs {
            seen.violations.push((
                name.to_string(),
                "abort: canary Service",
                format!(
                    "{at} {name}: aborted, but the canary Service selects {canary:?}, not the stable {:?}",
                    s.stable_rs
                ),
            ));
        }
        if shape.nginx {
            let weight = ingresses
                .iter()
                .find(|i| i.name_any() == shape.canary_ingress())
                .and_then(|i| i.annotations().get(WEIGHT).cloned());
            if weight.as_deref() != Some("0") {
                seen.violations.push((
                    name.to_string(),
                    "abort: canary Ingress",
                    format!("{at} {name}: aborted, but the canary Ingress weight is {weight:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Where the API server restart stood: when it began and ended.
#[derive(Default)]
struct Outage {
    began: Option<Instant>,
    ended: Option<Instant>,
}

/// Is every Rollout at its end state? Err(why) lists those that are not.
async fn end_states(
    client: &Client,
    ns: &str,
    shapes: &[Shape],
    v1: &HashMap<String, String>,
) -> Result<std::result::Result<(), String>> {
    let rollouts = list::<Rollout>(client, ns).await?;
    let sets = list::<ReplicaSet>(client, ns).await?;
    let services = list::<Service>(client, ns).await?;
    let ingresses = list::<Ingress>(client, ns).await?;
    let mut not_yet = Vec::new();
    for shape in shapes {
        if let Err(why) = end_state(shape, v1, &rollouts, &sets, &services, &ingresses) {
            not_yet.push(format!("{}: {why}", shape.name));
        }
    }
    Ok(if not_yet.is_empty() {
        Ok(())
    } else {
        Err(not_yet.join("\n"))
    })
}

fn end_state(
    shape: &Shape,
    v1: &HashMap<String, String>,
    rollouts: &[Rollout],
    sets: &[ReplicaSet],
    services: &[Service],
    ingresses: &[Ingress],
) -> std::result::Result<(), String> {
    let name = shape.name.as_str();
    let ro = rollouts
        .iter()
        .find(|r| r.name_any() == name)
        .ok_or("no Rollout")?;
    let s = ro.status.clone().unwrap_or_default();
    let what = format!(
        "phase {:?} ({:?}), step {:?}, stable {:?}, current {:?}, abort {}",
        s.phase, s.message, s.current_step_index, s.stable_rs, s.current_pod_hash, s.abort
    );
    let first = v1.get(name).ok_or("no v1 hash")?;
    if s.observed_generation != ro.metadata.generation.map(|g| g.to_string()) {
        return Err(format!("generation not observed yet; {what}"));
    }
    let current = s.current_pod_hash.clone().ok_or("no currentPodHash")?;
    if &current == first {
        return Err(format!("still on the v1 template; {what}"));
    }
    let (stable, image, gone) = match shape.end {
        End::Promoted => {
            if s.phase != Some(RolloutPhase::Healthy) || s.stable_rs.as_ref() != Some(&current) {
                return Err(what);
            }
            (current.clone(), V2, first.clone())
        }
        End::Aborted => {
            let aborted = s.phase == Some(RolloutPhase::Degraded)
                && s.abort
                && s.aborted_at.is_some()
                && s.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("RolloutAborted");
            if !aborted || s.stable_rs.as_ref() != Some(first) {
                return Err(what);
            }
            (first.clone(), V1, current.clone())
        }
    };
    let mine: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| {
            let labels = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref());
            label(labels, "app") == Some(name)
        })
        .collect();
    let counts = |rs: &ReplicaSet| {
        (
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            rs.status.as_ref().map_or(0, |s| s.replicas),
            rs.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
        )
    };
    let hash_of = |rs: &ReplicaSet| label(rs.metadata.labels.as_ref(), HASH).map(str::to_string);
    let stable_rs = mine
        .iter()
        .find(|rs| hash_of(rs).as_ref() == Some(&stable))
        .ok_or(format!("no ReplicaSet {stable}"))?;
    let r = shape.replicas;
    if counts(stable_rs) != (r, r, r) {
        return Err(format!(
            "stable ReplicaSet {stable} at (spec, pods, available) {:?}, want {r}",
            counts(stable_rs)
        ));
    }
    let images: Vec<String> = stable_rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default();
    if images != [image] {
        return Err(format!("stable ReplicaSet runs {images:?}, want {image}"));
    }
    // Every other ReplicaSet (the old stable after scaleDownDelaySeconds,
    // the aborted canary after abortScaleDownDelaySeconds) has no pods.
    for rs in mine
        .iter()
        .filter(|rs| hash_of(rs).as_ref() != Some(&stable))
    {
        if counts(rs).0 != 0 || counts(rs).1 != 0 {
            let which = if hash_of(rs).as_ref() == Some(&gone) {
                "the replaced"
            } else {
                "an older"
            };
            return Err(format!(
                "{which} ReplicaSet {} still at (spec, pods, available) {:?}",
                rs.name_any(),
                counts(rs)
            ));
        }
    }
    for svc in [shape.stable_service(), shape.canary_service()] {
        let hash = selector_hash(services.iter().find(|s| s.name_any() == svc));
        if hash.as_ref() != Some(&stable) {
            return Err(format!("Service {svc} selects {hash:?}, want {stable}"));
        }
    }
    if shape.nginx {
        let weight = ingresses
            .iter()
            .find(|i| i.name_any() == shape.canary_ingress())
            .and_then(|i| i.annotations().get(WEIGHT).cloned());
        if weight.as_deref() != Some("0") {
            return Err(format!("canary Ingress weight {weight:?}, want 0"));
        }
        let recorded = s.canary.weights.as_ref().map(|w| w.canary.weight);
        if recorded != Some(0) {
            return Err(format!("status.canary.weights canary {recorded:?}, want 0"));
        }
    }
    Ok(())
}

/// `kubectl rollouts <verb> <name>` once the Rollout waits at its pause,
/// again if it failed, as long as the pause is still there: a promote whose
/// answer was lost (the API server going down) must not be repeated, since
/// a second one would skip the next step.
async fn cli_at_pause(client: Client, ns: String, shape: Shape) -> Result<()> {
    let verb = match shape.cli {
        Cli::Promote => "promote",
        Cli::Abort => "abort",
        Cli::None => return Ok(()),
    };
    let api = Api::<Rollout>::namespaced(client, &ns);
    let attempted = AtomicBool::new(false);
    wait_for(
        &format!(
            "kubectl rollouts {verb} {} at step {}",
            shape.name, shape.pause_step
        ),
        Duration::from_secs(150),
        || async {
            let s = api.get(&shape.name).await?.status.unwrap_or_default();
            let at_pause = s.current_step_index == Some(shape.pause_step);
            let waiting = at_pause && !s.pause_conditions.is_empty();
            // (Before the update is seen, the status is v1's: past all steps.)
            let done = match shape.cli {
                Cli::Abort => s.abort,
                _ => {
                    attempted.load(Ordering::Relaxed)
                        && (s.current_step_index > Some(shape.pause_step) || !waiting)
                }
            };
            if done {
                return Ok(Ok(()));
            }
            if !waiting {
                return Ok(Err(format!(
                    "phase {:?}, step {:?}",
                    s.phase, s.current_step_index
                )));
            }
            attempted.store(true, Ordering::Relaxed);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-rollouts"));
            cmd.arg("--kubeconfig")
                .arg(kubeconfig())
                .args(["-n", &ns, verb, &shape.name]);
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            Ok(if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            })
        },
    )
    .await
}

/// A controller process that ended by itself: its name, when it was
/// started, when it was found ended, and how it ended.
type Exit = (String, Instant, Instant, std::process::ExitStatus);

/// SIGKILLs the controller every 2-4 s and starts a new process, until
/// `stop`. Returns the last process, the number of kills, and the
/// processes that ended by themselves (only expected while the API server
/// is down: a new process cannot list the CRD and exits).
async fn kill_loop(
    mut ctl: ControllerProcess,
    ns: String,
    logs: Logs,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<(ControllerProcess, usize, Vec<Exit>)> {
    let mut rng = Rng(seed);
    let (mut kills, mut exits, mut n) = (0, Vec::new(), 0);
    let mut started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.between(2000, 4000))).await;
        if stop.load(Ordering::Relaxed) {
            return Ok((ctl, kills, exits));
        }
        match ctl.exited()? {
            Some(status) => {
                exits.push((ctl.name.clone(), started, Instant::now(), status));
                logs.collect(&ctl, &format!("exited by itself: {status}"));
            }
            None => {
                ctl.kill().await?;
                kills += 1;
                logs.collect(&ctl, "SIGKILL");
            }
        }
        n += 1;
        ctl = controller(&ns, n)?;
        started = Instant::now();
    }
}

/// `hack/cluster.sh restart kube-apiserver` after `after`, timed.
async fn restart_api_server(after: Duration, outage: Arc<Mutex<Outage>>) -> Result<()> {
    tokio::time::sleep(after).await;
    if let Ok(mut o) = outage.lock() {
        o.began = Some(Instant::now());
    }
    let result =
        tokio::task::spawn_blocking(|| hack_script("cluster.sh", &["restart", "kube-apiserver"]))
            .await?;
    if let Ok(mut o) = outage.lock() {
        o.ended = Some(Instant::now());
    }
    result.map(drop).map_err(anyhow::Error::msg)
}

/// Waits until every Rollout is Healthy and returns its stable hash.
async fn healthy_on_v1(env: &TestEnv, count: usize) -> Result<HashMap<String, String>> {
    let api = env.api::<Rollout>();
    wait_for(
        "all Rollouts Healthy on v1",
        Duration::from_secs(120),
        || async {
            let mut out = HashMap::new();
            let mut not_yet = Vec::new();
            for ro in api.list(&ListParams::default()).await?.items {
                let s = ro.status.clone().unwrap_or_default();
                match (s.phase, s.stable_rs) {
                    (Some(RolloutPhase::Healthy), Some(hash)) => {
                        out.insert(ro.name_any(), hash);
                    }
                    (phase, _) => not_yet.push(format!("{}: {phase:?}", ro.name_any())),
                }
            }
            Ok(if out.len() == count {
                Ok(out)
            } else {
                Err(not_yet.join(", "))
            })
        },
    )
    .await
}

/// v2 on every Rollout (the bad canary's v2 pods never get Ready).
async fn update_all(env: &TestEnv, shapes: &[Shape]) -> Result<()> {
    let api = env.api::<Rollout>();
    for shape in shapes {
        let mut template = json!({"spec": {"containers": [{"name": "app", "image": V2}]}});
        if shape.bad_canary {
            template["metadata"] = json!({"labels": {"app": shape.name, "fail-readiness": "true"}});
        }
        let patch = json!({"spec": {"template": template}});
        retry(&format!("updating {}", shape.name), || async {
            api.patch(&shape.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn twenty_rollouts_reach_their_end_state_through_controller_kills_and_an_api_server_restart()
-> Result<()> {
    let began = Instant::now();
    let env = TestEnv::without_controller("chaos").await?;
    let client = env.client.clone();
    let ns = env.ns.clone();
    let logs = Logs {
        path: std::env::temp_dir().join(format!("rollouts-chaos-{ns}.log")),
    };
    let shapes = shapes();
    let server = TestServer::start(vec![Reply::json(200, json!({"ok": false}))]).await?;
    env.apply_yaml(&analysis_template(&server.url())).await?;
    for shape in &shapes {
        env.apply_yaml(&shape.yaml()).await?;
    }
    let ctl = controller(&ns, 0)?;
    // A settled start: the invariants hold from here on.
    let v1 = healthy_on_v1(&env, shapes.len()).await?;
    let deployed = began.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Observed::default()));
    let outage = Arc::new(Mutex::new(Outage::default()));
    let pod_watch = tokio::spawn(watch_pods(
        client.clone(),
        ns.clone(),
        shapes.clone(),
        outage.clone(),
        seen.clone(),
    ));
    let sampler = {
        let (client, ns, shapes) = (client.clone(), ns.clone(), shapes.clone());
        let (stop, seen) = (stop.clone(), seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if sample(&client, &ns, &shapes, &seen).await.is_err()
                    && let Ok(mut s) = seen.lock()
                {
                    s.failed_samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    update_all(&env, &shapes).await?;
    let updated = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("chaos: namespace {ns}, kill schedule seed {seed}");
    let chaos = tokio::spawn(kill_loop(
        ctl,
        ns.clone(),
        Logs {
            path: logs.path.clone(),
        },
        seed,
        stop.clone(),
    ));
    // Once, while the rollouts are under way.
    let restart = tokio::spawn(restart_api_server(Duration::from_secs(8), outage.clone()));
    let clis: Vec<_> = shapes
        .iter()
        .filter(|s| s.cli != Cli::None)
        .map(|s| tokio::spawn(cli_at_pause(client.clone(), ns.clone(), s.clone())))
        .collect();

    let ends = wait_for(
        "every Rollout at its end state",
        Duration::from_secs(200),
        || end_states(&client, &ns, &shapes, &v1),
    )
    .await;
    let converged = updated.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ctl, kills, exits) = chaos.await??;
    sampler.await?;
    pod_watch.abort();
    let _ = pod_watch.await; // cancelled
    let restarted = restart.await?;
    let mut clis_done = Vec::new();
    for cli in clis {
        clis_done.push(cli.await?);
    }
    // Still so with the last controller left alone: nothing is undone.
    let settled = match ends {
        Ok(()) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            end_states(&client, &ns, &shapes, &v1)
                .await?
                .map_err(anyhow::Error::msg)
                .context("the end states changed once the chaos stopped")
        }
        Err(e) => Err(e),
    };
    ctl.kill().await?;
    logs.collect(&ctl, "the last one");

    // The watchers have stopped: what they saw is final.
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let (outage_began, outage_ended) = {
        let o = outage.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (o.began.unwrap_or(updated), o.ended.unwrap_or(updated))
    };
    let mut lowest: Vec<_> = seen.lowest.iter().collect();
    lowest.sort();
    eprintln!(
        "chaos: deployed in {deployed:?}; the update converged in {converged:?} with {kills} \
         kills and {} processes that exited by themselves; the API server was down for {:?}, \
         from {:?} after the update; {} pod states checked ({} watch errors); {} samples ({} \
         failed) with {} abort and {} active Service checks; {} pod states mid-update after \
         the restart; fewest available pods seen: {lowest:?}; pod states mid-update: {:?}",
        exits.len(),
        outage_ended.saturating_duration_since(outage_began),
        outage_began.saturating_duration_since(updated),
        seen.pod_states,
        seen.pod_watch_errors,
        seen.samples,
        seen.failed_samples,
        seen.abort_checks,
        seen.active_checks,
        seen.mid_update_after_restart,
        seen.mid_update.iter().collect::<BTreeMap<_, _>>(),
    );
    let keep_logs = || format!("controller logs: {}", logs.path.display());
    if !seen.violations.is_empty() {
        // How many of each, then the first few of each kind.
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut first: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (rollout, kind, text) in &seen.violations {
            *counts.entry((kind, rollout.as_str())).or_default() += 1;
            let texts = first.entry(kind).or_default();
            if texts.len() < 10 {
                texts.push(text.as_str());
            }
        }
        let firsts: Vec<String> = first.values().map(|t| t.join("\n")).collect();
        bail!(
            "{} violations (kind, rollout): {counts:?}\n{}\n{}",
            seen.violations.len(),
            firsts.join("\n"),
            keep_logs()
        );
    }
    settled.with_context(keep_logs)?;
    restarted.context("restarting the API server")?;
    for done in clis_done {
        done.with_context(keep_logs)?;
    }
    ensure!(kills >= 5, "the controller was killed only {kills} times");
    // A process started while the API server was down may exit (it cannot
    // list the CRD); at any other time exiting is a bug.
    let slack = Duration::from_secs(2);
    for (name, started, found, status) in &exits {
        ensure!(
            *started <= outage_ended + slack && *found + slack >= outage_began,
            "controller {name} exited by itself ({status}) outside the API server outage; {}",
            keep_logs()
        );
    }
    // Not vacuous: many states and samples checked, every Rollout seen
    // mid-update, updates still under way once the API server was back.
    ensure!(
        seen.pod_states >= 250 && seen.samples >= 100,
        "only {} pod states and {} samples were checked",
        seen.pod_states,
        seen.samples
    );
    ensure!(
        seen.abort_checks >= 50 && seen.active_checks >= 100,
        "only {} abort and {} active Service checks",
        seen.abort_checks,
        seen.active_checks
    );
    // Each Rollout at least once, and many states in all. A canary of one
    // pod that aborts at once shows only a few states with two templates
    // (created, bound, ready), and a relist after the outage can replace
    // some of them, so a minimum per Rollout above one would be timing.
    for shape in &shapes {
        let n = seen.mid_update.get(&shape.name).copied().unwrap_or(0);
        ensure!(n >= 1, "{} was never seen mid-update", shape.name);
    }
    let mid_update: usize = seen.mid_update.values().sum();
    ensure!(
        mid_update >= 5 * shapes.len(),
        "only {mid_update} pod states mid-update across all Rollouts: {:?}",
        seen.mid_update
    );
    ensure!(
        seen.mid_update_after_restart >= 5,
        "the updates were over before the API server came back"
    );
    let _ = std::fs::remove_file(&logs.path);
    env.cleanup().await
}

#[test]
fn shapes_are_twenty_and_their_minimums_follow_upstreams_rounding() {
    let shapes = shapes();
    let names: BTreeSet<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 20);
    let ends = |e: End| shapes.iter().filter(|s| s.end == e).count();
    assert_eq!((ends(End::Promoted), ends(End::Aborted)), (15, 5));
    for s in &shapes {
        assert!(s.min_available <= s.replicas && s.min_available > 0);
        assert!(s.yaml().contains(&format!("name: {}", s.name)));
    }
}
