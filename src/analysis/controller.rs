//! kube-runtime wiring for AnalysisRuns: `plan::prepare` says what to
//! measure, this shell resolves secret arguments, runs the providers
//! concurrently, masks secrets, and writes what `plan::conclude` decided.
//! Jobs created for measurements are watched so a finished Job is noticed
//! at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::args;
use super::plan::{self, Prepare, Prepared, RunPlan, Taken};
use super::providers::{self, job, prometheus, web};
use crate::api::analysis::{AnalysisPhase, AnalysisRun, Argument, Measurement, Metric};
use crate::controller::patch::merge_diff;
use crate::controller::recorder::{Event, Recorder};
use crate::controller::workers::{Place, Workers};
use crate::controller::{Backoff, requeue_since};
use crate::metrics::{Metrics, Queue};
use crate::settings::Settings;

/// A run with nothing scheduled is still looked at this often.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the AnalysisRun CRD is not installed in this cluster (kubectl apply --server-side -k crds/): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(kube::Error),
    #[error("AnalysisRun {0} changed since it was read")]
    Conflict(String),
    #[error("writing status of AnalysisRun {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("deleting expired AnalysisRun {name}: {source}")]
    Delete { name: String, source: kube::Error },
}

struct Context {
    client: Client,
    workers: Workers,
    runs: Store<AnalysisRun>,
    recorder: Recorder,
    backoff: Backoff<ObjectRef<AnalysisRun>>,
    metrics: Metrics,
}

/// Runs the AnalysisRun controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let scope = &settings.scope;
    let runs: Api<AnalysisRun> = scope.api(&client);
    runs.list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref r) if r.code == 404 => Error::CrdMissing(e),
            e => Error::Api(e),
        })?;
    let (reader, writer) = reflector::store();
    let owned = watcher::Config::default()
        .labels(&scope.instance_selector())
        .any_semantic();
    let stream = watcher(runs, owned)
        .default_backoff()
        .modify(|r: &mut AnalysisRun| r.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    // Only our Jobs: the label marks Jobs created for a measurement.
    let jobs = watcher(
        scope.api::<Job>(&client),
        watcher::Config::default()
            .labels(job::RUN_UID_LABEL)
            .any_semantic(),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Context {
        recorder: Recorder::start(client.clone()),
        client,
        workers: Workers::new(
            settings.analysis_workers,
            settings.metrics.queue(Queue::AnalysisRuns),
        ),
        runs: reader.clone(),
        backoff: Backoff::default(),
        metrics: settings.metrics.clone(),
    });
    settings.metrics.watch_analysis_runs(reader.clone());
    info!(
        namespace = scope.namespace.as_deref().unwrap_or("<all>"),
        instance_id = scope.instance_id.as_deref().unwrap_or("<none>"),
        workers = settings.analysis_workers,
        "analysis controller started"
    );
    let shutdown = shutdown.shared();
    let cache = reader.clone();
    let synced = move || crate::controller::is_synced(&cache);
    let results = Controller::for_stream(stream, reader)
        .owns_stream(jobs)
        // Unbounded here: `Workers` limits the reconciles, in turn.
        .with_config(controller::Config::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx);
    crate::controller::drive("analysis", results, shutdown, synced).await;
    Ok(())
}

async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ctx = &*ctx;
    ctx.workers
        .reconcile(
            &ctx.runs,
            ObjectRef::from_obj(&*run),
            |_| Place::Other,
            |run| reconcile_inner(run, ctx),
        )
        .await
}

async fn reconcile_inner(run: Arc<AnalysisRun>, ctx: &Context) -> Result<Requeue, Error> {
    if run.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let (now, planned) = (Timestamp::now(), Instant::now());
    let requeue = match plan::prepare(&run, now) {
        Prepare::Finished => return expire(&ctx.client, &run, now).await,
        Prepare::Invalid(plan) => write(&ctx.client, &ctx.recorder, &run, &plan, planned).await?,
        Prepare::Measure(prepared) => {
            // Measuring takes time: the plan is made when it is done.
            let (plan, planned) = match secret_args(&ctx.client, &run).await {
                Ok((args, secrets)) => {
                    let taken = measure(&ctx.client, &run, &prepared, &args, &secrets).await;
                    let plan = plan::conclude(&run, &prepared, taken, Timestamp::now());
                    (plan, Instant::now())
                }
                Err(e) => {
                    let why = format!("Unable to resolve metric arguments: {e}");
                    (plan::error_plan(&run, why, now), planned)
                }
            };
            job::garbage_collect(&ctx.client, &run, &plan.dropped).await;
            write(&ctx.client, &ctx.recorder, &run, &plan, planned).await?
        }
    };
    ctx.backoff.succeeded(&ObjectRef::from_obj(&*run));
    Ok(requeue)
}

/// The run's arguments with secret values read, and those values (to mask).
async fn secret_args(
    client: &Client,
    run: &AnalysisRun,
) -> Result<(Vec<Argument>, Vec<String>), String> {
    let ns = run.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut args = run.spec.args.clone();
    let mut secrets = Vec::new();
    for arg in &mut args {
        let Some(r) = arg
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        else {
            continue;
        };
        let secret = api
            .get(&r.name)
            .await
            .map_err(|e| format!("secret {:?}: {e}", r.name))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .ok_or_else(|| format!("key '{}' does not exist in secret '{}'", r.key, r.name))?;
        let value = String::from_utf8_lossy(&bytes.0).into_owned();
        secrets.push(value.clone());
        arg.value = Some(value);
        arg.value_from = None;
    }
    Ok((args, secrets))
}

/// Takes every due measurement concurrently; secret values are masked in
/// what comes back (message, value, metadata) before it is logged or stored.
async fn measure(
    client: &Client,
    run: &AnalysisRun,
    prepared: &Prepared,
    args: &[Argument],
    secrets: &[String],
) -> Vec<Taken> {
    let takes = prepared.tasks.iter().map(|task| async move {
        let started = Timestamp::now();
        let measurement = match run.spec.metrics.get(task.metric) {
            // With secrets, the metric is resolved again with their values,
            // for this measurement only.
            Some(spec) => match args::resolve_metric(spec, args) {
                Ok(metric) => {
                    take(
                        client,
                        run,
                        &metric,
                        task.resume.clone(),
                        prepared.terminating,
                    )
                    .await
                }
                Err(e) => {
                    providers::error(started, format!("Unable to resolve metric arguments: {e}"))
                }
            },
            None => providers::error(started, "metric not found in the run's spec"),
        };
        let measurement = masked(measurement, secrets);
        if let Some(m) = run.spec.metrics.get(task.metric) {
            info!(run = %run.name_any(), metric = %m.name, phase = measurement.phase.as_str(),
                message = measurement.message.as_deref().unwrap_or_default(), "measurement");
        }
        Taken {
            task: task.clone(),
            measurement,
        }
    });
    futures::future::join_all(takes).await
}

/// One measurement from the metric's provider: a new one, or the in-flight
/// one resumed or (when the run is terminating) ended.
async fn take(
    client: &Client,
    run: &AnalysisRun,
    metric: &Metric,
    resume: Option<Measurement>,
    terminating: bool,
) -> Measurement {
    let p = &metric.provider;
    match (resume, &p.job) {
        (Some(m), Some(_)) if terminating => job::terminate(client, run, m).await,
        (Some(m), Some(_)) => job::resume(client, run, m).await,
        (None, Some(spec)) => job::run(client, run, metric, spec).await,
        // Other providers finish each measurement at once; an in-flight one
        // (written by another controller) is simply ended or taken again.
        (Some(m), None) if terminating => Measurement {
            phase: AnalysisPhase::Successful,
            finished_at: Some(Time(Timestamp::now())),
            ..m
        },
        (_, None) => {
            if let Some(w) = &p.web {
                web::measure(metric, w).await
            } else if let Some(prom) = &p.prometheus {
                prometheus::measure(metric, prom).await
            } else {
                providers::error(
                    Timestamp::now(),
                    format!(
                        "the {} provider is not supported by this controller (supported: web, job, prometheus)",
                        providers::set(p).join(", ")
                    ),
                )
            }
        }
    }
}

fn masked(mut m: Measurement, secrets: &[String]) -> Measurement {
    if secrets.is_empty() {
        return m;
    }
    m.message = m.message.map(|t| args::mask(&t, secrets));
    m.value = m.value.map(|t| args::mask(&t, secrets));
    if let Some(md) = m.metadata.as_mut() {
        for v in md.values_mut() {
            *v = args::mask(v, secrets);
        }
    }
    m
}

/// Writes the plan's status (a merge patch of what changed, only onto the
/// run as it was read), publishes the completion event, and says when to
/// look again (counted from `planned`, when the plan was made).
async fn write(
    client: &Client,
    recorder: &Recorder,
    run: &AnalysisRun,
    plan: &RunPlan,
    planned: Instant,
) -> Result<Requeue, Error> {
    let name = run.name_any();
    let old = serde_json::to_value(run.status.clone().unwrap_or_default()).unwrap_or_default();
    let new = serde_json::to_value(&plan.status).unwrap_or_default();
    if let Some(diff) = merge_diff(&old, &new) {
        let patch = json!({
            "metadata": {"resourceVersion": run.metadata.resource_version},
            "status": diff,
        });
        let api: Api<AnalysisRun> =
            Api::namespaced(client.clone(), &run.namespace().unwrap_or_default());
        // The main resource, as upstream: its CRD has no status
        // subresource, and neither has ours (src/api/mod.rs).
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|source| match source {
                kube::Error::Api(e) if e.code == 409 => Error::Conflict(name.clone()),
                source => Error::Status {
                    name: name.clone(),
                    source,
                },
            })?;
    }
    if let Some(phase) = plan.completed {
        info!(run = %name, phase = phase.as_str(), message = plan.status.message.as_deref().unwrap_or_default(), "analysis completed");
        recorder.publish(run, &[completion_event(phase)]);
    }
    Ok(match plan.requeue_after {
        Some(after) => requeue_since(planned, after.min(RESYNC)),
        // A completed run: the watch event of this very write brings it
        // back as Finished, where its TTL is looked after.
        None if plan.completed.is_some() => Requeue::await_change(),
        None => Requeue::requeue(RESYNC),
    })
}

/// A completed run whose TTL ran out is deleted; one with a TTL to come is
/// looked at again then.
async fn expire(client: &Client, run: &AnalysisRun, now: Timestamp) -> Result<Requeue, Error> {
    let Some(at) = plan::expires_at(run) else {
        return Ok(Requeue::await_change());
    };
    if at > now {
        return Ok(Requeue::requeue(until(now, at)));
    }
    let name = run.name_any();
    let api: Api<AnalysisRun> =
        Api::namespaced(client.clone(), &run.namespace().unwrap_or_default());
    match api.delete(&name, &Default::default()).await {
        Ok(_) => {
            info!(run = %name, "AnalysisRun deleted: its ttlStrategy expired");
            Ok(Requeue::await_change())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Requeue::await_change()),
        Err(source) => Err(Error::Delete { name, source }),
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let ms = (at.as_millisecond() - now.as_millisecond()).max(0) as u64;
    Duration::from_millis(ms + 500)
}

/// Upstream's completion event: reason `AnalysisRun<Phase>`.
pub fn completion_event(phase: AnalysisPhase) -> Event {
    let reason = match phase {
        AnalysisPhase::Successful => "AnalysisRunSuccessful",
        AnalysisPhase::Failed => "AnalysisRunFailed",
        AnalysisPhase::Error => "AnalysisRunError",
        AnalysisPhase::Inconclusive => "AnalysisRunInconclusive",
        AnalysisPhase::Running => "AnalysisRunRunning",
        AnalysisPhase::Pending => "AnalysisRunPending",
    };
    Event {
        warning: matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error),
        reason,
        message: format!("Analysis Completed. Result: {}", phase.as_str()),
    }
}

fn error_policy(run: Arc<AnalysisRun>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.retried(Queue::AnalysisRuns);
    let (failures, delay) = ctx.backoff.failed(ObjectRef::from_obj(&*run));
    if matches!(err, Error::Conflict(_)) {
        debug!(run = %run.name_any(), error = %err, "conflict; looking again");
        return Requeue::requeue(Duration::from_millis(200));
    }
    warn!(run = %run.name_any(), namespace = run.namespace().unwrap_or_default(), error = %err, failures, retry_in = ?delay, "analysis reconcile failed");
    Requeue::requeue(delay)
}
