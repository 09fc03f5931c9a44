//! `kubectl rollouts`: the CLI for Rollouts. This version only reports its
//! version; the verbs (promote, abort, get, ...) come next.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-rollouts",
    version,
    about = "Manage Rollouts (Argo Rollouts API)"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version of the plugin.
    Version,
}

fn main() {
    match Args::parse().command {
        Command::Version => println!("kubectl-rollouts {}", env!("CARGO_PKG_VERSION")),
    }
}
