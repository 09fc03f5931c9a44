//! The data-plane rig: real HTTP requests through a real proxy to the local
//! cluster's pods (`hack/data-plane.sh` makes the pod range local inside a
//! network namespace of its own).
//!
//! - [`enter`]: a test binary calls it first; outside the rig it runs itself
//!   again inside one and returns that run's exit code.
//! - [`PodServer`]: answers HTTP on every pod's IP, as the pod would: with
//!   its image tag and pod-template hash, or with the status its template
//!   asks for (label [`ANSWER_LABEL`]), which is how a test makes a bad
//!   release.
//! - [`Traefik`]: Traefik 3.7 (hack/traefik.sh), reading the cluster with
//!   its NGINX-annotation provider and its Gateway API provider (the
//!   standard-channel CRDs of hack/gateway-api-crds.sh installed first).
//! - [`Load`]: a steady stream of requests through the proxy, recording
//!   when each was answered, by which revision, or that it failed.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::process::{Child, Command};

use super::scripts::{free_ports, hack_script, repo_root};

/// The port every pod answers on (the containerPort of the rig's pods).
pub const POD_PORT: u16 = 8080;

/// A pod template label whose value is the HTTP status the pod answers
/// with, e.g. "500": a bad release is a new image with this label.
pub const ANSWER_LABEL: &str = "rig.rollouts.test/answer";

/// How long a deleted pod keeps answering on its IP (a real pod serves
/// through its termination grace period; kwok deletes at once). A new pod
/// given the same IP answers instead.
const DRAIN: Duration = Duration::from_secs(30);

/// Inside the rig: `None`, go on. Outside: fetches Traefik and the Gateway
/// API CRDs (the rig has no network), runs this binary again with the same arguments inside a rig,
/// and returns its exit code.
pub fn enter() -> Option<ExitCode> {
    if std::env::var_os("ROLLOUTS_RIG").is_some() {
        return None;
    }
    for script in ["traefik.sh", "gateway-api-crds.sh"] {
        if let Err(e) = hack_script(script, &[]) {
            eprintln!("{e}");
            return Some(ExitCode::FAILURE);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("rig: this test binary's path: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("hack/data-plane.sh"))
        .args(["run", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .status();
    match status {
        Ok(s) if s.success() => Some(ExitCode::SUCCESS),
        Ok(s) => {
            eprintln!("rig: the run inside the rig failed ({s})");
            Some(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("rig: running hack/data-plane.sh: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// What the pod server knows of one pod IP.
#[derive(Clone, Debug)]
struct Backend {
    tag: String,
    hash: String,
    answer: StatusCode,
    /// When the pod was seen deleted; it answers until `DRAIN` after.
    gone: Option<Instant>,
}

fn backend(pod: &Pod) -> Option<(IpAddr, Backend)> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let image = pod.spec.as_ref()?.containers.first()?.image.clone()?;
    let tag = image.rsplit_once(':').map_or(image.as_str(), |(_, t)| t);
    let answer = labels
        .get(ANSWER_LABEL)
        .and_then(|a| a.parse::<u16>().ok())
        .and_then(|a| StatusCode::from_u16(a).ok())
        .unwrap_or(StatusCode::OK);
    let hash = labels
        .get("rollouts-pod-template-hash")
        .cloned()
        .unwrap_or_default();
    Some((
        ip,
        Backend {
            tag: tag.to_string(),
            hash,
            answer,
            gone: None,
        },
    ))
}

/// Answers HTTP for every pod of the cluster on [`POD_PORT`]. Stops when
/// dropped.
pub struct PodServer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PodServer {
    pub async fn start(client: Client) -> Result<PodServer> {
        let backends: Arc<Mutex<HashMap<IpAddr, Backend>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", POD_PORT))
            .await
            .with_context(|| format!("pod server: binding 0.0.0.0:{POD_PORT}"))?;
        let watch = {
            let backends = backends.clone();
            let pods: Api<Pod> = Api::all(client);
            tokio::spawn(async move {
                let mut events = watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { continue };
                    let mut backends = lock(&backends);
                    match event {
                        watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                            if let Some((ip, b)) = backend(&pod) {
                                backends.insert(ip, b);
                            }
                        }
                        watcher::Event::Delete(pod) => {
                            if let Some((ip, _)) = backend(&pod)
                                && let Some(b) = backends.get_mut(&ip)
                                && b.hash == pod_hash(&pod)
                            {
                                b.gone = Some(Instant::now());
                            }
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                }
            })
        };
        let serve = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let local = stream.local_addr().ok();
                let backends = backends.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<_>| {
                        let answer = answer(&backends, local);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(PodServer {
            tasks: vec![watch, serve],
        })
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn pod_hash(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("rollouts-pod-template-hash").cloned())
        .unwrap_or_default()
}

/// The answer of the pod whose IP was dialled.
fn answer(
    backends: &Mutex<HashMap<IpAddr, Backend>>,
    local: Option<SocketAddr>,
) -> Response<Full<Bytes>> {
    let found = local.and_then(|l| lock(backends).get(&l.ip()).cloned());
    let (status, body) = match found {
        Some(b) if b.gone.is_none_or(|at| at.elapsed() < DRAIN) => {
            (b.answer, format!("{} {}\n", b.tag, b.hash))
        }
        // Not a pod, or gone longer than a grace period: no one would
        // answer on this IP. A refused connection would make the proxy
        // retry elsewhere and hide the fault, so say it.
        _ => (StatusCode::BAD_GATEWAY, "no pod at this address\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The GatewayClass controller name Traefik's Gateway API provider serves.
pub const GATEWAY_CONTROLLER: &str = "traefik.io/gateway-controller";

/// Traefik, reading Ingresses with ingress-nginx's annotations, and the
/// Gateway API (a Gateway's listener must use port `web_port`, its
/// entrypoint's). Killed when dropped.
pub struct Traefik {
    pub web_port: u16,
    pub metrics_port: u16,
    log: PathBuf,
    child: Child,
}

impl Traefik {
    pub async fn start(kubeconfig: &Path, client: &Client) -> Result<Traefik> {
        let bin = hack_script("traefik.sh", &[]).map_err(anyhow::Error::msg)?;
        // Its Gateway API provider stops without the CRDs.
        let dir = hack_script("gateway-api-crds.sh", &[]).map_err(anyhow::Error::msg)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        super::crds::apply(client, &files, "rollouts-rig").await?;
        let [web_port, metrics_port] = free_ports()?;
        let log = std::env::temp_dir().join(format!("rig-traefik-{web_port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args([
                format!("--entryPoints.web.address=127.0.0.1:{web_port}"),
                format!("--entryPoints.metrics.address=127.0.0.1:{metrics_port}"),
                "--providers.kubernetesingressnginx=true".into(),
                "--providers.kubernetesgateway=true".into(),
                "--metrics.prometheus=true".into(),
                "--metrics.prometheus.entryPoint=metrics".into(),
                "--global.checkNewVersion=false".into(),
                "--global.sendAnonymousUsage=false".into(),
                "--log.noColor=true".into(),
                "--log.level=INFO".into(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting traefik")?;
        let traefik = Traefik {
            web_port,
            metrics_port,
            log,
            child,
        };
        // Up once its entrypoint answers (404 for an unknown host).
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{web_port}/");
        for _ in 0..100 {
            if http.get(&url).send().await.is_ok() {
                return Ok(traefik);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "traefik did not answer on port {web_port} within 10s:\n{}",
            traefik.log_tail(30)
        )
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// One request's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx by a pod running this image tag.
    Served(String),
    /// Anything else: the status, or the error.
    Failed(String),
}

/// A steady stream of requests through the proxy.
pub struct Load {
    start: Instant,
    log: Arc<Mutex<Vec<(Instant, Outcome)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a stretch of time saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub served: BTreeMap<String, u32>,
    pub failed: Vec<String>,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Served(tag) => *self.served.entry(tag.clone()).or_default() += 1,
            Outcome::Failed(why) => self.failed.push(why.clone()),
        }
    }

    pub fn add(&mut self, other: Tally) {
        for (tag, n) in other.served {
            *self.served.entry(tag).or_default() += n;
        }
        self.failed.extend(other.failed);
    }
    pub fn total(&self) -> u32 {
        self.served.values().sum::<u32>() + self.failed.len() as u32
    }
    /// The share (0-100) of requests served by `tag`.
    pub fn share(&self, tag: &str) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.served.get(tag).copied().unwrap_or(0)) / f64::from(total)
    }
}

impl Load {
    /// `rate` requests a second to `http://127.0.0.1:port/` with `Host: host`,
    /// each answered within 2 s or counted failed.
    pub fn start(port: u16, host: &str, rate: u32) -> Load {
        Load::with_headers(port, host, &[], rate)
    }

    /// As [`Load::start`], every request carrying `headers`.
    pub fn with_headers(port: u16, host: &str, headers: &[(&str, &str)], rate: u32) -> Load {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log: Arc<Mutex<Vec<(Instant, Outcome)>>> = Arc::default();
        let (url, host) = (format!("http://127.0.0.1:{port}/"), host.to_string());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let (http, url, host, log) =
                        (http.clone(), url.clone(), host.clone(), log.clone());
                    let headers = headers.clone();
                    tokio::spawn(async move {
                        let mut request = http.get(&url).header("Host", &host);
                        for (k, v) in &headers {
                            request = request.header(k, v);
                        }
                        let outcome = match request.send().await {
                            Ok(r) if r.status().is_success() => match r.text().await {
                                Ok(body) => Outcome::Served(
                                    body.split_whitespace().next().unwrap_or_default().into(),
                                ),
                                Err(e) => Outcome::Failed(format!("body: {e}")),
                            },
                            Ok(r) => Outcome::Failed(r.status().to_string()),
                            Err(e) => Outcome::Failed(e.to_string()),
                        };
                        lock(&log).push((Instant::now(), outcome));
                    });
                }
            })
        };
        Load {
            start: Instant::now(),
            log,
            task,
        }
    }

    /// The requests answered at or after `from` (and before `to`).
    pub fn tally(&self, from: Instant, to: Option<Instant>) -> Tally {
        let mut tally = Tally::default();
        for (at, outcome) in lock(&self.log).iter() {
            if *at < from || to.is_some_and(|to| *at >= to) {
                continue;
            }
            tally.count(outcome);
        }
        tally
    }

    /// Takes the requests answered before `to` out of the record and
    /// returns their tally: a load that runs for hours (the demo's) keeps
    /// only what has not been counted yet.
    pub fn drain(&self, to: Instant) -> Tally {
        let mut tally = Tally::default();
        lock(&self.log).retain(|(at, outcome)| {
            if *at >= to {
                return true;
            }
            tally.count(outcome);
            false
        });
        tally
    }

    /// When the first request answered at or after `from` failed.
    pub fn first_failure(&self, from: Instant) -> Option<Instant> {
        lock(&self.log)
            .iter()
            .filter(|(at, o)| *at >= from && matches!(o, Outcome::Failed(_)))
            .map(|(at, _)| *at)
            .min()
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Each second (since the load started) that saw a failure, with the
    /// tally of that second.
    pub fn failed_seconds(&self) -> Vec<(u64, Tally)> {
        let log = lock(&self.log);
        let mut seconds: Vec<u64> = log
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .map(|(at, _)| at.duration_since(self.start).as_secs())
            .collect();
        seconds.dedup();
        drop(log);
        seconds
            .into_iter()
            .map(|s| {
                let from = self.start + Duration::from_secs(s);
                (s, self.tally(from, Some(from + Duration::from_secs(1))))
            })
            .collect()
    }

    /// Waits until a whole window of `window` has `tag` at `share` % within
    /// `tolerance` points, and returns that window's tally.
    pub async fn settle(
        &self,
        what: &str,
        tag: &str,
        share: f64,
        tolerance: f64,
        window: Duration,
        timeout: Duration,
    ) -> Result<Tally> {
        settle(&[self], what, tag, share, tolerance, window, timeout).await
    }
}

/// [`Load::settle`] on the requests of several loads together. The proxy
/// splits all requests of a route by one weighted round robin, so steady
/// streams at fixed rates can each meet the canary more or less often than
/// the weight: only their sum follows it exactly.
pub async fn settle(
    loads: &[&Load],
    what: &str,
    tag: &str,
    share: f64,
    tolerance: f64,
    window: Duration,
    timeout: Duration,
) -> Result<Tally> {
    let began = Instant::now();
    let mut last = Tally::default();
    while began.elapsed() < timeout {
        let from = Instant::now();
        tokio::time::sleep(window).await;
        last = Tally::default();
        for load in loads {
            last.add(load.tally(from, None));
        }
        if last.total() > 0 && (last.share(tag) - share).abs() <= tolerance {
            return Ok(last);
        }
    }
    bail!(
        "{what}: {tag} never held {share}% (±{tolerance}) for {window:?} within {timeout:?}; last window: {last:?}"
    )
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}
