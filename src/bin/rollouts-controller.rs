//! The controller process. Reads the kubeconfig as kubectl does (KUBECONFIG,
//! ~/.kube/config) or the in-cluster service account. Flags keep upstream's
//! names where upstream has them, so existing Deployment args carry over.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use futures::FutureExt;
use rollouts::controller::client::{self as kube_client, RateLimit};
use rollouts::controller::leader;
use rollouts::manager::{Health, run_elected};
use rollouts::metrics::Metrics;
use rollouts::server::Listeners;
use rollouts::settings::{Scope, Settings};
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
    #[arg(short = 'n', long, env = "ROLLOUTS_NAMESPACE")]
    namespace: Option<String>,
    /// Upstream's namespace install: reconcile only the namespace the
    /// controller runs in ($POD_NAMESPACE), or the one --namespace names.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    namespaced: bool,
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long)]
    cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long)]
    user: Option<String>,
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
    #[arg(long = "metricsport", visible_aliases = ["metricsPort", "metrics-port"], default_value_t = 8090)]
    metrics_port: u16,
    /// Port of /healthz and /readyz.
    #[arg(
        long = "healthzPort",
        visible_alias = "healthz-port",
        default_value_t = 8080
    )]
    healthz_port: u16,
    /// Log level or tracing filter (e.g. info, debug, rollouts=debug).
    #[arg(
        long,
        visible_alias = "loglevel",
        env = "ROLLOUTS_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
    /// Log format.
    #[arg(long, visible_alias = "logformat", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    upstream: UpstreamFlags,
}

/// Flags of upstream's `rollouts-controller` (v1.10) that have no effect
/// here: accepted, so upstream's Deployment args start this controller
/// too, and each one given is logged once at start.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Accepted for Argo Rollouts compatibility, without effect")]
struct UpstreamFlags {
    #[arg(long = "rollout-resync", value_name = "SECONDS")]
    rollout_resync: Option<String>,
    #[arg(long = "experiment-threads", value_name = "N")]
    experiment_threads: Option<String>,
    #[arg(long = "service-threads", value_name = "N")]
    service_threads: Option<String>,
    #[arg(long = "ingress-threads", value_name = "N")]
    ingress_threads: Option<String>,
    #[arg(long = "ephemeral-metadata-threads", value_name = "N")]
    ephemeral_metadata_threads: Option<String>,
    #[arg(long = "ephemeral-metadata-update-pod-retries", value_name = "N")]
    ephemeral_metadata_update_pod_retries: Option<String>,
    #[arg(long = "aws-target-group-binding-api-version", value_name = "VERSION")]
    aws_target_group_binding_api_version: Option<String>,
    #[arg(long = "alb-tag-key-resource-id", value_name = "KEY")]
    alb_tag_key_resource_id: Option<String>,
    #[arg(long = "istio-api-version", value_name = "VERSION")]
    istio_api_version: Option<String>,
    #[arg(long = "ambassador-api-version", value_name = "VERSION")]
    ambassador_api_version: Option<String>,
    #[arg(long = "traffic-split-api-version", value_name = "VERSION")]
    traffic_split_api_version: Option<String>,
    #[arg(long = "traefik-api-group", value_name = "GROUP")]
    traefik_api_group: Option<String>,
    #[arg(long = "traefik-api-version", value_name = "VERSION")]
    traefik_api_version: Option<String>,
    #[arg(long = "ingress-api-version", value_name = "VERSION")]
    ingress_api_version: Option<String>,
    #[arg(long = "appmesh-crd-version", value_name = "VERSION")]
    appmesh_crd_version: Option<String>,
    #[arg(long = "alb-ingress-classes", value_name = "CLASS")]
    alb_ingress_classes: Vec<String>,
    #[arg(long = "nginx-ingress-classes", value_name = "CLASS")]
    nginx_ingress_classes: Vec<String>,
    #[arg(long = "controllers", value_name = "NAME")]
    controllers: Vec<String>,
    #[arg(long = "enable-pprof-address", value_name = "ADDRESS")]
    enable_pprof_address: Option<String>,
    #[arg(long = "kloglevel", value_name = "LEVEL")]
    kloglevel: Option<String>,
    #[arg(long = "alb-verify-weight", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    alb_verify_weight: Option<String>,
    #[arg(long = "aws-verify-target-group", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    aws_verify_target_group: Option<String>,
    #[arg(long = "self-service-notification-enabled", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    self_service_notification_enabled: Option<String>,
    // kubectl's connection overrides beyond --kubeconfig/--context/--cluster/--user.
    #[arg(long = "server", value_name = "URL")]
    server: Option<String>,
    #[arg(long = "certificate-authority", value_name = "FILE")]
    certificate_authority: Option<String>,
    #[arg(long = "insecure-skip-tls-verify", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    insecure_skip_tls_verify: Option<String>,
    #[arg(long = "tls-server-name", value_name = "NAME")]
    tls_server_name: Option<String>,
    #[arg(long = "proxy-url", value_name = "URL")]
    proxy_url: Option<String>,
    #[arg(long = "disable-compression", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    disable_compression: Option<String>,
    #[arg(long = "client-certificate", value_name = "FILE")]
    client_certificate: Option<String>,
    #[arg(long = "client-key", value_name = "FILE")]
    client_key: Option<String>,
    #[arg(long = "token", value_name = "TOKEN")]
    token: Option<String>,
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    #[arg(long = "as-uid", value_name = "UID")]
    as_uid: Option<String>,
    #[arg(long = "as-group", value_name = "GROUP")]
    as_group: Vec<String>,
    #[arg(long = "username", value_name = "NAME")]
    username: Option<String>,
    #[arg(long = "password", value_name = "PASSWORD")]
    password: Option<String>,
    #[arg(long = "request-timeout", value_name = "DURATION")]
    request_timeout: Option<String>,
}

impl UpstreamFlags {
    /// The names of the flags given (values are not logged: --token and
    /// --password are secrets).
    fn given(&self) -> Vec<&'static str> {
        let one = |name: &'static str, set: bool| set.then_some(name);
        [
            one("--rollout-resync", self.rollout_resync.is_some()),
            one("--experiment-threads", self.experiment_threads.is_some()),
            one("--service-threads", self.service_threads.is_some()),
            one("--ingress-threads", self.ingress_threads.is_some()),
            one(
                "--ephemeral-metadata-threads",
                self.ephemeral_metadata_threads.is_some(),
            ),
            one(
                "--ephemeral-metadata-update-pod-retries",
                self.ephemeral_metadata_update_pod_retries.is_some(),
            ),
            one(
                "--aws-target-group-binding-api-version",
                self.aws_target_group_binding_api_version.is_some(),
            ),
            one(
                "--alb-tag-key-resource-id",
                self.alb_tag_key_resource_id.is_some(),
            ),
            one("--istio-api-version", self.istio_api_version.is_some()),
            one(
                "--ambassador-api-version",
                self.ambassador_api_version.is_some(),
            ),
            one(
                "--traffic-split-api-version",
                self.traffic_split_api_version.is_some(),
            ),
            one("--traefik-api-group", self.traefik_api_group.is_some()),
            one("--traefik-api-version", self.traefik_api_version.is_some()),
            one("--ingress-api-version", self.ingress_api_version.is_some()),
            one("--appmesh-crd-version", self.appmesh_crd_version.is_some()),
            one(
                "--alb-ingress-classes",
                !self.alb_ingress_classes.is_empty(),
            ),
            one(
                "--nginx-ingress-classes",
                !self.nginx_ingress_classes.is_empty(),
            ),
            one("--controllers", !self.controllers.is_empty()),
            one(
                "--enable-pprof-address",
                self.enable_pprof_address.is_some(),
            ),
            one("--kloglevel", self.kloglevel.is_some()),
            one("--alb-verify-weight", self.alb_verify_weight.is_some()),
            one(
                "--aws-verify-target-group",
                self.aws_verify_target_group.is_some(),
            ),
            one(
                "--self-service-notification-enabled",
                self.self_service_notification_enabled.is_some(),
            ),
            one("--server", self.server.is_some()),
            one(
                "--certificate-authority",
                self.certificate_authority.is_some(),
            ),
            one(
                "--insecure-skip-tls-verify",
                self.insecure_skip_tls_verify.is_some(),
            ),
            one("--tls-server-name", self.tls_server_name.is_some()),
            one("--proxy-url", self.proxy_url.is_some()),
            one("--disable-compression", self.disable_compression.is_some()),
            one("--client-certificate", self.client_certificate.is_some()),
            one("--client-key", self.client_key.is_some()),
            one("--token", self.token.is_some()),
            one("--as", self.as_user.is_some()),
            one("--as-uid", self.as_uid.is_some()),
            one("--as-group", !self.as_group.is_empty()),
            one("--username", self.username.is_some()),
            one("--password", self.password.is_some()),
            one("--request-timeout", self.request_timeout.is_some()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Upstream's (logrus) level names as tracing reads them; anything else is
/// taken as a tracing filter.
fn log_filter(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "fatal" | "panic" => "error".into(),
        _ => level.to_string(),
    }
}

/// The namespace to reconcile: --namespace, or with --namespaced the one
/// the controller runs in.
fn scope_namespace(args: &Args) -> Result<Option<String>, String> {
    if args.namespace.is_some() || !args.namespaced {
        return Ok(args.namespace.clone());
    }
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .map(Some)
        .ok_or_else(|| {
            "--namespaced: cannot tell which namespace the controller runs in (set --namespace or POD_NAMESPACE)".into()
        })
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

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(rollouts::manager::THREAD_STACK_SIZE)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("rollouts-controller: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(log_filter(&args.log_level)) {
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
    for flag in args.upstream.given() {
        info!(
            flag,
            "flag accepted for compatibility with Argo Rollouts; it has no effect here"
        );
    }
    let namespace = match scope_namespace(&args) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rollouts-controller: {e}");
            return ExitCode::from(2);
        }
    };
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
    let source = kube_client::Source {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
    };
    let client =
        match kube_client::client(&source, limit, std::sync::Arc::new(metrics.clone())).await {
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
            namespace,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of upstream v1.10's rollouts-controller, as its
    /// Deployments pass them: accepted.
    #[test]
    fn upstreams_flags_are_accepted() {
        let args = Args::try_parse_from([
            "rollouts-controller",
            "--metricsPort=8090",
            "--healthzPort=8080",
            "--namespaced",
            "--loglevel=warning",
            "--logformat=json",
            "--kloglevel=0",
            "--instance-id=x",
            "--qps=40",
            "--burst=80",
            "--rollout-threads=10",
            "--experiment-threads=10",
            "--analysis-threads=30",
            "--service-threads=10",
            "--ingress-threads=10",
            "--ephemeral-metadata-threads=10",
            "--ephemeral-metadata-update-pod-retries=5",
            "--rollout-resync=900",
            "--leader-elect",
            "--leader-election-lease-duration=15s",
            "--leader-election-renew-deadline=10s",
            "--leader-election-retry-period=2s",
            "--aws-target-group-binding-api-version=elbv2.k8s.aws/v1beta1",
            "--alb-tag-key-resource-id=ingress.k8s.aws/resource",
            "--istio-api-version=v1alpha3",
            "--ambassador-api-version=getambassador.io/v2",
            "--traffic-split-api-version=v1alpha1",
            "--traefik-api-group=traefik.containo.us",
            "--traefik-api-version=traefik.containo.us/v1alpha1",
            "--ingress-api-version=networking.k8s.io/v1",
            "--appmesh-crd-version=v1beta2",
            "--alb-ingress-classes=alb",
            "--nginx-ingress-classes=nginx",
            "--nginx-ingress-classes=nginx-internal",
            "--alb-verify-weight=false",
            "--aws-verify-target-group",
            "--self-service-notification-enabled=false",
            "--controllers=rollouts",
            "--enable-pprof-address=0.0.0.0:6060",
            "--kubeconfig=/tmp/kc",
            "--context=c",
            "--request-timeout=0",
            "--token=secret",
            "--as-group=a",
            "--as-group=b",
        ])
        .expect("upstream's flags are accepted");
        assert_eq!(args.metrics_port, 8090);
        assert!(args.namespaced);
        assert_eq!(log_filter(&args.log_level), "warn");
        let given = args.upstream.given();
        assert!(given.contains(&"--experiment-threads") && given.contains(&"--token"));
        assert!(!given.contains(&"--server"));
    }

    #[test]
    fn namespaced_takes_the_namespace_given_or_fails_clearly() {
        let args =
            Args::try_parse_from(["rollouts-controller", "--namespaced", "--namespace=team"])
                .expect("parses");
        assert_eq!(scope_namespace(&args), Ok(Some("team".into())));
        let args = Args::try_parse_from(["rollouts-controller"]).expect("parses");
        assert_eq!(scope_namespace(&args), Ok(None));
    }

    #[test]
    fn a_flag_nobody_has_is_still_a_usage_error() {
        assert!(Args::try_parse_from(["rollouts-controller", "--no-such-flag"]).is_err());
    }
}
