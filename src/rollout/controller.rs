//! kube-runtime wiring: watch Rollouts and the ReplicaSets they own, build a
//! snapshot from the caches, plan, apply. Errors are logged and retried.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::Rollout;
use crate::rollout::apply::{ApplyError, apply};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::plan;
use crate::rollout::snapshot::Snapshot;

/// A settled rollout is still looked at this often, so a missed watch
/// event cannot leave it stale for long.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the Rollout CRD is not installed in this cluster (kubectl apply -f crds/): {0}")]
    CrdMissing(kube::Error),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(kube::Error),
}

struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
}

/// Where the controller looks.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch one namespace only; all namespaces when None.
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the Rollout controller until the process is asked to stop (SIGINT or
/// SIGTERM) or `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let rollouts: Api<Rollout> = api(&client, &scope);
    rollouts
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref r) if r.code == 404 => Error::CrdMissing(e),
            e => Error::Api(e),
        })?;

    // Cached objects drop managedFields: the controller never reads them and
    // they are often the largest part of an object.
    let (ro_reader, ro_writer) = reflector::store();
    let ro_stream = watcher(rollouts, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|ro: &mut Rollout| ro.managed_fields_mut().clear())
        .reflect(ro_writer)
        .touched_objects();
    // Only ReplicaSets carrying our hash label: other workloads' are not cached.
    let (rs_reader, rs_writer) = reflector::store();
    let rs_config = watcher::Config::default()
        .labels(POD_TEMPLATE_HASH_LABEL)
        .any_semantic();
    let rs_stream = watcher(api::<ReplicaSet>(&client, &scope), rs_config)
        .default_backoff()
        .modify(|rs: &mut ReplicaSet| rs.managed_fields_mut().clear())
        .reflect(rs_writer)
        .touched_objects();

    let ctx = Arc::new(Context {
        client,
        replica_sets: rs_reader,
    });
    info!(
        namespace = scope.namespace.as_deref().unwrap_or("<all>"),
        "rollouts controller started"
    );
    Controller::for_stream(ro_stream, ro_reader)
        .owns_stream(rs_stream)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "reconcile trigger failed");
            }
        })
        .await;
    info!("rollouts controller stopped");
    Ok(())
}

async fn reconcile(ro: Arc<Rollout>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if ro.meta().deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let ns = ro.namespace();
    let candidates = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace() == ns)
        .map(|rs| (*rs).clone());
    // The few Services a Rollout names are read directly: caching every
    // Service in the cluster would cost more than these GETs.
    let svc_api: Api<Service> =
        Api::namespaced(ctx.client.clone(), &ns.clone().unwrap_or_default());
    let mut services = Vec::new();
    for name in Snapshot::service_names(&ro) {
        if let Some(svc) = svc_api.get_opt(&name).await.map_err(Error::Api)? {
            services.push(svc);
        }
    }
    let snapshot = Snapshot::new((*ro).clone(), candidates).with_services(services);
    let plan = plan(&snapshot, Timestamp::now());
    if !plan.actions.is_empty() {
        debug!(rollout = %ro.name_any(), actions = ?plan.actions, "plan");
    }
    apply(&ctx.client, &ro, &plan).await?;
    Ok(Requeue::requeue(
        plan.requeue_after.unwrap_or(RESYNC).min(RESYNC),
    ))
}

fn error_policy(ro: Arc<Rollout>, err: &Error, _ctx: Arc<Context>) -> Requeue {
    warn!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), error = %err, "reconcile failed; retrying");
    Requeue::requeue(RETRY)
}
