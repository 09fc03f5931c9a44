//! The controller process. Reads the kubeconfig as kubectl does (KUBECONFIG,
//! ~/.kube/config) or the in-cluster service account.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use rollouts::controller::{Scope, run};
use tracing_subscriber::EnvFilter;

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
    /// Log level or tracing filter (e.g. info, debug, rollouts=debug).
    #[arg(long, env = "ROLLOUTS_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
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
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "rollouts-controller: no Kubernetes configuration found (set KUBECONFIG or run in a cluster): {e}"
            );
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
    };
    match run(
        client,
        Scope {
            namespace: args.namespace,
        },
        shutdown,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollouts-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
