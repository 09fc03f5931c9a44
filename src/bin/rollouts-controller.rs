//! The controller process. Reads the kubeconfig as kubectl does (KUBECONFIG,
//! ~/.kube/config) or the in-cluster service account. Flags keep upstream's
//! names where upstream has them, so existing Deployment args carry over.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use futures::FutureExt;
use rollouts::controller::{Health, Scope, Settings, run_elected};
use rollouts::kube_client::{self, RateLimit};
use rollouts::leader;
use rollouts::metrics::Metrics;
use rollouts::server::Listeners;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// jemalloc, not glibc's malloc: with glibc, memory freed after a wave of
/// updates stayed with the process (72.6 MB steady after updating 1,000
/// Rollouts, 45.4 MB before; docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`; `_RJEM_MALLOC_CONF` in the
/// environment overrides them): a background thread returns pages unused
/// for a second to the OS, instead of waiting for the next allocation.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Progressive-delivery controller for Kubernetes (Argo Rollouts API).
#[derive(Debug, Parser)]
#[command(name = "rollouts-controller", version)]
struct Args {
    /// Reconcile Rollouts in this namespace only (default: all namespaces).
    #[arg(long, env = "ROLLOUTS_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only Rollouts labelled argo-rollouts.argoproj.io/controller-instance-id=ID
    /// (without it: only Rollouts without that label).
    #[arg(long = "instance-id", value_name = "ID")]
    instance_id: Option<String>,
    /// Sustained Kubernetes API requests per second.
    #[arg(long, default_value_t = 40.0)]
    qps: f32,
    /// Kubernetes API requests allowed in a burst.
    #[arg(long, default_value_t = 80)]
    burst: u32,
    /// Rollouts reconciled concurrently.
    #[arg(long = "rollout-threads", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    rollout_threads: u16,
    /// AnalysisRuns reconciled concurrently.
    #[arg(long = "analysis-threads", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    analysis_threads: u16,
    /// Elect a leader among the replicas through a Lease; only the leader
    /// reconciles. `--leader-elect=false` for a single replica.
    #[arg(long = "leader-elect", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else "rollouts").
    #[arg(long = "leader-election-namespace")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease (default: rollouts-controller-lock, plus
    /// "-<instance-id>" with --instance-id, as upstream).
    #[arg(long = "leader-election-lease-name")]
    leader_election_lease_name: Option<String>,
    /// How long a standby waits after the last renewal seen before taking over.
    #[arg(long = "leader-election-lease-duration", default_value = "15s", value_parser = duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long = "leader-election-renew-deadline", default_value = "10s", value_parser = duration)]
    leader_election_renew_deadline: Duration,
    /// Time between attempts to acquire or renew the lease.
    #[arg(long = "leader-election-retry-period", default_value = "2s", value_parser = duration)]
    leader_election_retry_period: Duration,
    /// Port of /metrics.
    #[arg(long = "metricsport", alias = "metrics-port", default_value_t = 8090)]
    metrics_port: u16,
    /// Port of /healthz and /readyz.
    #[arg(long = "healthzPort", alias = "healthz-port", default_value_t = 8080)]
    healthz_port: u16,
    /// Log level or tracing filter (e.g. info, debug, rollouts=debug).
    #[arg(
        long,
        alias = "loglevel",
        env = "ROLLOUTS_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
    /// Log format.
    #[arg(long, alias = "logformat", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn duration(s: &str) -> Result<Duration, String> {
    rollouts::api::common::parse_duration_str(s).map_err(|e| e.to_string())
}

impl Args {
    fn election(&self) -> Option<leader::Settings> {
        if !self.leader_elect {
            return None;
        }
        let pod_namespace = std::env::var("POD_NAMESPACE").ok();
        let lease_name =
            self.leader_election_lease_name
                .clone()
                .unwrap_or_else(|| match &self.instance_id {
                    Some(id) => format!("rollouts-controller-lock-{id}"),
                    None => "rollouts-controller-lock".into(),
                });
        Some(leader::Settings {
            namespace: self
                .leader_election_namespace
                .clone()
                .or(pod_namespace)
                .unwrap_or_else(|| "rollouts".into()),
            lease_name,
            identity: leader::identity(std::env::var("POD_NAME").ok().as_deref()),
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
            retry_period: self.leader_election_retry_period,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "rollouts-controller: invalid --log-level {:?}: {e}",
                args.log_level
            );
            return ExitCode::from(2);
        }
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let election = args.election();
    if let Some(e) = &election
        && let Err(err) = e.validate()
    {
        eprintln!("rollouts-controller: {err}");
        return ExitCode::from(2);
    }
    let metrics = Metrics::new();
    let limit = RateLimit {
        qps: args.qps,
        burst: args.burst,
    };
    let client = match kube_client::client(limit, metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rollouts-controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match Listeners::bind(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.metrics_port)),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.healthz_port)),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rollouts-controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
    }
    .shared();
    let health = Health::default();
    let server = tokio::spawn(listeners.serve(metrics.clone(), health.clone(), shutdown.clone()));
    let settings = Settings {
        scope: Scope {
            namespace: args.namespace,
            instance_id: args.instance_id,
        },
        rollout_workers: args.rollout_threads,
        analysis_workers: args.analysis_threads,
        metrics,
    };
    let result = run_elected(client, settings, election, health, shutdown).await;
    server.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollouts-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
