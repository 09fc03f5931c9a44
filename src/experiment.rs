//! Experiments are not run by this controller yet. Rather than leave them
//! silently Pending, each Experiment in scope that has not finished gets
//! the phase `Error` and a message saying so, and one Warning event. One
//! that finished (under upstream's controller, before a switch) is left as
//! it is.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::experiment::Experiment;
use crate::controller::recorder::{Event, Recorder};
use crate::settings::Settings;

pub const NOT_IMPLEMENTED: &str =
    "Experiments are not implemented by this controller yet: this Experiment was not run";
pub const NOT_IMPLEMENTED_REASON: &str = "ExperimentNotImplemented";

/// Upstream's phases after which an Experiment does not change.
const FINISHED: [&str; 4] = ["Successful", "Failed", "Error", "Inconclusive"];

/// The merge patch that marks the Experiment as not run, if it needs one.
pub fn status_patch(exp: &Experiment) -> Option<Value> {
    let status = exp.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if phase.is_some_and(|p| FINISHED.contains(&p)) {
        return None;
    }
    Some(json!({"status": {"phase": "Error", "message": NOT_IMPLEMENTED}}))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status of Experiment {name}: {source}")]
    Status { name: String, source: kube::Error },
}

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Watches the Experiments in scope until `shutdown`. Without the
/// Experiment CRD (an older install of the CRDs) it says so once and
/// stays idle: Rollouts and AnalysisRuns do not depend on it.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let scope = &settings.scope;
    let api: Api<Experiment> = scope.api(&client);
    let one = ListParams::default().limit(1);
    let probe = tokio::select! {
        probe = api.list(&one) => probe,
        () = shutdown.clone() => return,
    };
    if let Err(e) = probe {
        warn!(error = %e, "Experiments are not watched (is the Experiment CRD installed? kubectl apply --server-side -k crds/)");
        return;
    }
    let config = watcher::Config::default().labels(&scope.instance_selector());
    let ctx = Arc::new(Context {
        recorder: Recorder::start(client.clone()),
        client,
    });
    let controller = Controller::new(api, config);
    let store = controller.store();
    let results =
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx);
    // The same bounded stop as the other controllers.
    crate::controller::drive("experiments", results, shutdown, move || {
        crate::controller::is_synced(&store)
    })
    .await;
}

async fn reconcile(exp: Arc<Experiment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let Some(mut patch) = status_patch(&exp) else {
        return Ok(Requeue::await_change());
    };
    // Only onto the version read: a status written meanwhile (upstream's
    // controller finishing it) is not overwritten; a conflict re-reads.
    patch["metadata"] = json!({"resourceVersion": exp.metadata.resource_version});
    let name = exp.name_any();
    let ns = exp.namespace().unwrap_or_default();
    Api::<Experiment>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Status {
            name: name.clone(),
            source,
        })?;
    info!(namespace = %ns, experiment = %name, "Experiment marked as not run (not implemented)");
    ctx.recorder.publish(
        &*exp,
        &[Event {
            warning: true,
            reason: NOT_IMPLEMENTED_REASON,
            message: NOT_IMPLEMENTED.into(),
        }],
    );
    Ok(Requeue::await_change())
}

fn error_policy(exp: Arc<Experiment>, err: &Error, _: Arc<Context>) -> Requeue {
    warn!(namespace = %exp.namespace().unwrap_or_default(), experiment = %exp.name_any(), error = %err, "will retry");
    Requeue::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::experiment::ExperimentStatus;

    fn experiment(phase: Option<&str>) -> Experiment {
        let mut e = Experiment::new("e", Default::default());
        e.status = phase.map(|p| ExperimentStatus {
            phase: Some(p.into()),
            ..Default::default()
        });
        e
    }

    #[test]
    fn an_unfinished_experiment_is_marked_as_not_run_and_a_finished_one_kept() {
        let marked = json!({"status": {"phase": "Error", "message": NOT_IMPLEMENTED}});
        assert_eq!(status_patch(&experiment(None)), Some(marked.clone()));
        assert_eq!(
            status_patch(&experiment(Some("Pending"))),
            Some(marked.clone())
        );
        assert_eq!(status_patch(&experiment(Some("Running"))), Some(marked));
        for done in FINISHED {
            assert_eq!(status_patch(&experiment(Some(done))), None, "{done}");
        }
    }
}
