//! `kubectl rollouts`: the CLI for Rollouts (Argo Rollouts API). Reads the
//! kubeconfig as kubectl does; each verb sends what upstream's plugin sends
//! (decided in `rollouts::cli::patches`), status changes through the status
//! subresource.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::{Value, json};

use rollouts::api::Rollout;
use rollouts::api::analysis::AnalysisRun;
use rollouts::api::common::parse_duration_str;
use rollouts::api::rollout::RolloutPhase;
use rollouts::cli::patches::{self, Patches, TemplateHome, VerbError};
use rollouts::cli::{lint, plan_table, render};
use rollouts::controller::patch::merge_diff;
use rollouts::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use rollouts::rollout::plan::workload;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-rollouts",
    version,
    about = "Manage Rollouts (Argo Rollouts API)"
)]
struct Args {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resume a paused rollout (or skip the current step); --full skips all steps.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// Abort the update: all traffic back to stable.
    Abort { name: String },
    /// Retry an aborted rollout (`retry rollout NAME`).
    Retry {
        #[command(subcommand)]
        what: RetryWhat,
    },
    /// Pause a rollout (spec.paused).
    Pause { name: String },
    /// Restart the pods of a rollout, now or --in a duration.
    Restart {
        name: String,
        #[arg(long = "in")]
        in_: Option<String>,
    },
    /// Roll back to the previous revision, or --to-revision N.
    Undo {
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Set a container image (`set image NAME CONTAINER=IMAGE`, `*` = all).
    Set {
        #[command(subcommand)]
        what: SetWhat,
    },
    /// Terminate an AnalysisRun (`terminate analysisrun NAME`).
    Terminate {
        #[command(subcommand)]
        what: TerminateWhat,
    },
    /// Show a rollout: header and tree of revisions, ReplicaSets, pods, runs.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// List rollouts.
    List {
        #[command(subcommand)]
        what: ListWhat,
    },
    /// Print the rollout's status; exit 0 when Healthy, 1 when Degraded or
    /// on timeout.
    Status {
        name: String,
        /// Keep watching until Healthy or Degraded (default).
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Give up after this long (e.g. 30s, 5m); 0 waits forever.
        #[arg(short, long, default_value = "0")]
        timeout: String,
        /// While watching, stop with exit 0 when the rollout pauses.
        #[arg(long)]
        exit_on_pause: bool,
    },
    /// Validate Rollout/AnalysisTemplate YAML offline.
    Lint { file: std::path::PathBuf },
    /// Print, offline, the steps the controller would follow.
    Plan {
        file: std::path::PathBuf,
        #[arg(long)]
        replicas: Option<i32>,
    },
    /// Print the version of the plugin.
    Version,
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum RetryWhat {
    Rollout { name: String },
}

#[derive(Debug, Subcommand)]
enum SetWhat {
    Image { name: String, assignment: String },
}

#[derive(Debug, Subcommand)]
enum TerminateWhat {
    #[command(alias = "ar")]
    Analysisrun { name: String },
}

#[derive(Debug, Subcommand)]
enum GetWhat {
    #[command(alias = "ro")]
    Rollout {
        name: String,
        #[arg(short, long)]
        watch: bool,
        #[arg(long)]
        no_color: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ListWhat {
    #[command(alias = "ro")]
    Rollouts {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long)]
        watch: bool,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Verb(#[from] VerbError),
    #[error("rollout '{name}' not found in namespace '{namespace}'")]
    NotFound { name: String, namespace: String },
    #[error(
        "deployment '{name}' (spec.workloadRef of rollout '{rollout}') not found in namespace '{namespace}'"
    )]
    WorkloadNotFound {
        rollout: String,
        name: String,
        namespace: String,
    },
    #[error("analysisrun '{name}' not found in namespace '{namespace}'")]
    RunNotFound { name: String, namespace: String },
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    client: Client,
    namespace: String,
}

impl Ctx {
    fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    async fn rollout(&self, name: &str) -> Result<Rollout, CliError> {
        self.rollouts()
            .get_opt(name)
            .await?
            .ok_or_else(|| CliError::NotFound {
                name: name.into(),
                namespace: self.namespace.clone(),
            })
    }
    async fn patch_spec(&self, name: &str, patch: &Value) -> Result<(), CliError> {
        self.rollouts()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
    async fn patch_status(&self, name: &str, patch: &Value) -> Result<(), CliError> {
        self.rollouts()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
    async fn apply(&self, name: &str, p: Patches) -> Result<(), CliError> {
        if let Some(s) = &p.status {
            self.patch_status(name, s).await?;
        }
        if let Some(s) = &p.spec {
            self.patch_spec(name, s).await?;
        }
        Ok(())
    }
    /// The Deployment a Rollout's workloadRef names.
    async fn workload(&self, rollout: &str, name: &str) -> Result<Deployment, CliError> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await?
            .ok_or_else(|| CliError::WorkloadNotFound {
                rollout: rollout.into(),
                name: name.into(),
                namespace: self.namespace.clone(),
            })
    }
    /// Merge-patches a Deployment's pod template (a workloadRef's).
    async fn patch_workload(&self, name: &str, patch: &Value) -> Result<(), CliError> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
    /// The ReplicaSets this Rollout controls.
    async fn replica_sets(&self, ro: &Rollout) -> Result<Vec<ReplicaSet>, CliError> {
        let uid = ro.metadata.uid.clone();
        let all = Api::<ReplicaSet>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
            .await?
            .items;
        Ok(all
            .into_iter()
            .filter(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
            })
            .collect())
    }
    async fn view(&self, name: &str) -> Result<render::RolloutView, CliError> {
        let ro = self.rollout(name).await?;
        let replica_sets = self.replica_sets(&ro).await?;
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
            .await?
            .items
            .into_iter()
            .filter(|p| {
                let hash = p.labels().get(POD_TEMPLATE_HASH_LABEL);
                replica_sets
                    .iter()
                    .any(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL) == hash)
            })
            .collect();
        let uid = ro.metadata.uid.clone();
        let runs = Api::<AnalysisRun>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| {
                r.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
            })
            .collect();
        Ok(render::RolloutView {
            rollout: ro,
            replica_sets,
            pods,
            runs,
        })
    }
}

async fn connect(args: &Args) -> Result<Ctx, CliError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| CliError::Kubeconfig(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| CliError::Kubeconfig(e.to_string()))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(CliError::Api)?;
    Ok(Ctx { client, namespace })
}

async fn run(args: Args) -> Result<ExitCode, CliError> {
    // Offline verbs first: no cluster needed.
    match &args.command {
        Command::Version => {
            println!("kubectl-rollouts {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "kubectl-rollouts",
                &mut std::io::stdout(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Lint { file } => {
            let text = read(file)?;
            let findings = lint::lint(&text).map_err(CliError::Failed)?;
            if findings.is_empty() {
                println!("{}: no problems found", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            eprint!("{}", lint::render_findings(&findings));
            return Ok(ExitCode::FAILURE);
        }
        Command::Plan { file, replicas } => {
            let text = read(file)?;
            let ro = first_rollout(&text)?;
            let rows = plan_table::plan_table(&ro, *replicas).map_err(CliError::Failed)?;
            print!("{}", plan_table::render(&rows));
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let ctx = connect(&args).await?;
    match args.command {
        Command::Promote { name, full } => {
            let ro = ctx.rollout(&name).await?;
            ctx.apply(&name, patches::promote(&ro, full)?).await?;
            println!(
                "rollout '{name}' {}",
                if full { "fully promoted" } else { "promoted" }
            );
        }
        Command::Abort { name } => {
            ctx.rollout(&name).await?;
            ctx.patch_status(&name, &patches::abort()).await?;
            println!("rollout '{name}' aborted");
        }
        Command::Retry {
            what: RetryWhat::Rollout { name },
        } => {
            ctx.rollout(&name).await?;
            ctx.patch_status(&name, &patches::retry()).await?;
            println!("rollout '{name}' retried");
        }
        Command::Pause { name } => {
            ctx.rollout(&name).await?;
            ctx.patch_spec(&name, &patches::pause()).await?;
            println!("rollout '{name}' paused");
        }
        Command::Restart { name, in_ } => {
            ctx.rollout(&name).await?;
            let delay = match in_.as_deref() {
                Some(d) => {
                    parse_duration_str(d).map_err(|e| CliError::Usage(format!("--in: {e}")))?
                }
                None => Duration::ZERO,
            };
            let at = Timestamp::now()
                .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO))
                .unwrap_or_else(|_| Timestamp::now());
            ctx.patch_spec(&name, &patches::restart(at)).await?;
            println!("rollout '{name}' restarts");
        }
        Command::Undo { name, to_revision } => {
            let ro = ctx.rollout(&name).await?;
            let rss = ctx.replica_sets(&ro).await?;
            match patches::template_home(&ro)? {
                TemplateHome::Deployment(deployment) => {
                    // As upstream: the revision's template goes into the
                    // Deployment, which the Rollout follows.
                    let target = patches::revision_template(&name, &rss, to_revision)?;
                    let current = ctx.workload(&name, &deployment).await?;
                    let current = current.spec.map(|s| s.template).unwrap_or_default();
                    match patches::template_patch(&current, &target) {
                        None => println!(
                            "skipped rollback (current template already matches the revision)"
                        ),
                        Some(patch) => {
                            ctx.patch_workload(&deployment, &patch).await?;
                            println!("rollout '{name}' undo (deployment '{deployment}')");
                        }
                    }
                }
                TemplateHome::Rollout => match patches::undo(&ro, &rss, to_revision)? {
                    None => {
                        println!("skipped rollback (current template already matches the revision)")
                    }
                    Some(template) => {
                        // Replaces the template: fields the old revision lacks are
                        // removed (nulls in the merge patch).
                        let current =
                            serde_json::to_value(&ro.spec.template).unwrap_or(Value::Null);
                        let wanted = serde_json::to_value(&template).unwrap_or(Value::Null);
                        let diff = merge_diff(&current, &wanted).unwrap_or(Value::Null);
                        ctx.patch_spec(&name, &json!({"spec": {"template": diff}}))
                            .await?;
                        println!("rollout '{name}' undo");
                    }
                },
            }
        }
        Command::Set {
            what: SetWhat::Image { name, assignment },
        } => {
            let (container, image) = assignment.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("expected CONTAINER=IMAGE, got {assignment:?}"))
            })?;
            let ro = ctx.rollout(&name).await?;
            match patches::template_home(&ro)? {
                TemplateHome::Deployment(deployment) => {
                    let current = ctx.workload(&name, &deployment).await?;
                    let current = current.spec.map(|s| s.template).unwrap_or_default();
                    let updated = patches::set_image(&name, &current, container, image)?;
                    if let Some(patch) = patches::template_patch(&current, &updated) {
                        ctx.patch_workload(&deployment, &patch).await?;
                    }
                    println!("rollout '{name}' image updated (deployment '{deployment}')");
                }
                TemplateHome::Rollout => {
                    let template = ro
                        .spec
                        .template
                        .clone()
                        .ok_or_else(|| VerbError::NoTemplate(name.clone()))?;
                    let updated = patches::set_image(&name, &template, container, image)?;
                    ctx.patch_spec(&name, &json!({"spec": {"template": updated}}))
                        .await?;
                    println!("rollout '{name}' image updated");
                }
            }
        }
        Command::Terminate {
            what: TerminateWhat::Analysisrun { name },
        } => {
            let api = Api::<AnalysisRun>::namespaced(ctx.client.clone(), &ctx.namespace);
            if api.get_opt(&name).await?.is_none() {
                return Err(CliError::RunNotFound {
                    name,
                    namespace: ctx.namespace.clone(),
                });
            }
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"terminate": true}})),
            )
            .await?;
            println!("analysisrun '{name}' terminated");
        }
        Command::Get {
            what:
                GetWhat::Rollout {
                    name,
                    watch,
                    no_color,
                },
        } => loop {
            let view = ctx.view(&name).await?;
            let out = render::get_rollout(&view, Timestamp::now(), !no_color);
            if watch {
                print!("\x1b[H\x1b[2J{out}");
                std::io::stdout().flush().ok();
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                print!("{out}");
                break;
            }
        },
        Command::List {
            what:
                ListWhat::Rollouts {
                    all_namespaces,
                    watch,
                },
        } => {
            let api: Api<Rollout> = if all_namespaces {
                Api::all(ctx.client.clone())
            } else {
                ctx.rollouts()
            };
            let mut last = String::new();
            loop {
                let items = api.list(&ListParams::default()).await?.items;
                let out = render::list_rollouts(&items, all_namespaces);
                if out != last {
                    print!("{out}");
                    std::io::stdout().flush().ok();
                    last = out;
                }
                if !watch {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Status {
            name,
            watch,
            timeout,
            exit_on_pause,
        } => {
            let timeout = parse_duration_str(&timeout)
                .map_err(|e| CliError::Usage(format!("--timeout: {e}")))?;
            return status(&ctx, &name, watch, timeout, exit_on_pause).await;
        }
        Command::Version
        | Command::Completion { .. }
        | Command::Lint { .. }
        | Command::Plan { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each new status line; Healthy -> exit 0, Degraded -> error,
/// timeout -> error; Paused -> exit 0 only with --exit-on-pause.
async fn status(
    ctx: &Ctx,
    name: &str,
    watch: bool,
    timeout: Duration,
    exit_on_pause: bool,
) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let ro = ctx.rollout(name).await?;
        let s = ro.status.clone().unwrap_or_default();
        let observed = s.observed_generation == ro.metadata.generation.map(|g| g.to_string());
        // A workloadRef Rollout is updated through its Deployment, whose
        // generation the controller records once it has seen the change.
        let workload_observed = match workload::deployment_name(&ro) {
            Some(deployment) => {
                let generation = Api::<Deployment>::namespaced(ctx.client.clone(), &ctx.namespace)
                    .get_opt(deployment)
                    .await?
                    .and_then(|d| d.metadata.generation);
                generation.is_none_or(|g| s.workload_observed_generation == Some(g.to_string()))
            }
            None => true,
        };
        let (phase, message) = if !observed {
            (
                Some(RolloutPhase::Progressing),
                "waiting for rollout spec update to be observed".into(),
            )
        } else if !workload_observed {
            (
                Some(RolloutPhase::Progressing),
                "waiting for rollout spec update to be observed for the reference workload".into(),
            )
        } else {
            (s.phase, s.message.clone().unwrap_or_default())
        };
        let phase_name = phase.map_or("Progressing".to_string(), |p| format!("{p:?}"));
        let line = match phase {
            Some(RolloutPhase::Healthy) | Some(RolloutPhase::Degraded) => phase_name.clone(),
            _ => format!("{phase_name} - {message}"),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        match phase {
            Some(RolloutPhase::Healthy) => return Ok(ExitCode::SUCCESS),
            Some(RolloutPhase::Degraded) => {
                return Err(CliError::Failed(format!(
                    "The rollout is in a degraded state with message: {message}"
                )));
            }
            Some(RolloutPhase::Paused) if watch && exit_on_pause => return Ok(ExitCode::SUCCESS),
            _ => {}
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        if !timeout.is_zero() && start.elapsed() >= timeout {
            return Err(CliError::Failed(
                "Rollout status watch exceeded timeout".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn read(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The first Rollout in a multi-document YAML text.
fn first_rollout(text: &str) -> Result<Rollout, CliError> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| CliError::Failed(format!("reading YAML: {e}")))?;
        if value.get("kind").and_then(Value::as_str) == Some("Rollout") {
            return serde_json::from_value(value)
                .map_err(|e| CliError::Failed(format!("reading the Rollout: {e}")));
        }
    }
    Err(CliError::Failed("no Rollout in the file".into()))
}
