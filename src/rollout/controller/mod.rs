//! The Rollout controller's shell.
//!
//! - `run` (here) wires the watches into caches and kube-runtime's runner;
//! - `caches`: what each cache keeps, and the lookups in them;
//! - `reconcile`: one reconcile as a pipeline (dereference, plan, apply,
//!   record), with its replans as one bounded loop;
//! - `dereference`: from the caches to the snapshot a plan is made from;
//! - `placement`: which waiting reconcile goes first;
//! - `memo`: answers of the API server kept between reconciles.
//!
//! The decisions are the planner's (`crate::rollout::plan`, pure); the
//! writes are `crate::rollout::apply`'s; the queue, indexes, freshness,
//! Events and backoff are generic (`crate::controller`).

mod caches;
mod dereference;
mod memo;
mod placement;
mod reconcile;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::Rollout;
use crate::api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::controller::Backoff;
use crate::controller::freshness::Freshness;
use crate::controller::index::Index;
use crate::controller::listed::Listed;
use crate::controller::recorder::Recorder;
use crate::controller::workers::Workers;
use crate::metrics::{Metrics, Queue};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::events;
use crate::rollout::references;
use crate::settings::Settings;

use caches::{
    Caches, Referrers, manager_key, managing_rollout, object_key, rollout_ref, slim_ingress,
    slim_replica_set, slim_rollout, slim_service, slim_template,
};
use memo::{Memos, lock};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] crate::rollout::apply::ApplyError),
    #[error(
        "the Rollout CRD is not installed in this cluster (kubectl apply --server-side -k crds/): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(kube::Error),
    #[error("reading {what}: {source}")]
    Read { what: String, source: kube::Error },
    #[error(
        "the {cache} cache has not synced yet (is the API server slow or the watch forbidden?)"
    )]
    CacheNotReady { cache: &'static str },
}

/// What every reconcile shares.
struct Context {
    client: Client,
    workers: Workers,
    caches: Caches,
    recorder: Recorder,
    freshness: Arc<Freshness>,
    memos: Arc<Memos>,
    backoff: Backoff<ObjectRef<Rollout>>,
    metrics: Metrics,
}

impl Context {
    /// Publishes Kubernetes Events about the Rollout, and counts them.
    fn publish(&self, ro: &Rollout, events: &[events::Event]) {
        self.recorder.publish(ro, events);
        for e in events {
            self.metrics.rollout_event(
                &ro.namespace().unwrap_or_default(),
                &ro.name_any(),
                e.warning,
                e.reason,
            );
        }
    }

    /// Forgets what the controller keeps in memory about a Rollout.
    fn forget(&self, uid: &str) {
        self.freshness.forget(uid);
        self.memos.forget(uid);
    }
}

/// What kube-runtime's runner holds of a Rollout: its metadata, of which
/// only the name and namespace are kept.
type RolloutKey = PartialObjectMeta<Rollout>;

/// Runs the Rollout controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let scope = &settings.scope;
    let rollouts: Api<Rollout> = scope.api(&client);
    rollouts
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref r) if r.code == 404 => Error::CrdMissing(e),
            e => Error::Api(e),
        })?;

    let recorder = Recorder::start(client.clone());
    // Cached objects drop what the controller never reads (slim_*).
    let (ro_reader, ro_writer) = reflector::store::<Rollout>();
    let owned = watcher::Config::default()
        .labels(&scope.instance_selector())
        .any_semantic();
    // What the controller remembers per Rollout goes with the Rollout: a
    // deleted one is never reconciled again to forget it.
    let freshness = Arc::new(Freshness::default());
    let memos = Arc::new(Memos::default());
    let announced = Arc::new(Announced::default());
    // Services, by the Rollout that manages them (see `svc_stream`).
    let (svc_reader, svc_writer) = reflector::store();
    let svc_index = Index::by(manager_key);
    let forget_gone = {
        let (freshness, memos, store) = (freshness.clone(), memos.clone(), ro_reader.clone());
        let announced = announced.clone();
        let (client, services, by_manager) =
            (client.clone(), svc_reader.clone(), svc_index.clone());
        move |ev: &watcher::Event<Rollout>| {
            let live: HashSet<String> = match ev {
                watcher::Event::Delete(ro) => {
                    let uid = ro.uid().unwrap_or_default();
                    freshness.forget(&uid);
                    memos.forget(&uid);
                    announced.forget(&uid);
                    release_services_of(&client, &services, &by_manager, ro);
                    return;
                }
                // A relist: deletions during a watch gap come as absences.
                watcher::Event::InitDone => {
                    store.state().iter().filter_map(|ro| ro.uid()).collect()
                }
                _ => return,
            };
            freshness.retain(&live);
            memos.retain(&live);
            announced.retain(&live);
        }
    };
    // Upstream's RolloutAddedToInformer: once per Rollout per controller
    // start (upstream's informer add), which its notifications can use.
    let announce = {
        let (recorder, metrics) = (recorder.clone(), settings.metrics.clone());
        move |ev: &watcher::Event<Rollout>| {
            if let watcher::Event::Apply(ro) | watcher::Event::InitApply(ro) = ev
                && announced.first_sight(ro)
            {
                let message = format!(
                    "Rollout resource added to informer: {}/{}",
                    ro.namespace().unwrap_or_default(),
                    ro.name_any()
                );
                let event = events::Event::normal(events::ADDED_TO_INFORMER, message);
                recorder.publish(ro, std::slice::from_ref(&event));
                metrics.rollout_event(
                    &ro.namespace().unwrap_or_default(),
                    &ro.name_any(),
                    false,
                    event.reason,
                );
            }
        }
    };
    // kube-runtime's runner holds the copy of the object it dequeued until
    // the reconcile ends, and in a wave a reconcile waits its turn for a
    // while: by then the cache may hold a newer copy, and the old one is
    // kept too. So the runner gets keys only: a second store with each
    // Rollout's name and namespace, fed from the same watch; a reconcile
    // reads the full Rollout from the first one when its turn comes.
    let (key_reader, key_writer) = reflector::store::<RolloutKey>();
    // Every watch event about a Rollout, or about what it owns, nudges its
    // reconcile should it wait in the other line (see `placement`).
    let workers = Workers::new(
        settings.rollout_workers,
        settings.metrics.queue(Queue::Rollouts),
    );
    let nudges = workers.clone();
    // The Rollouts by the objects they name, so that a change to one of
    // them does not walk every Rollout.
    let by_reference = Index::by_each(references::of_rollout);
    let reference_indexer = by_reference.clone();
    let ro_stream = watcher(rollouts, owned.clone())
        .default_backoff()
        .modify(slim_rollout)
        .inspect_ok(move |ev| reference_indexer.apply(ev))
        .reflect(ro_writer)
        .inspect_ok(forget_gone)
        .inspect_ok(announce)
        .map_ok(key_event)
        .reflect(key_writer)
        .touched_objects()
        .inspect_ok(move |key| {
            nudges.nudge(
                key.namespace().as_deref().unwrap_or_default(),
                &key.name_any(),
            )
        });
    // Only ReplicaSets carrying our hash label: other workloads' are not cached.
    let (rs_reader, rs_writer) = reflector::store();
    let rs_index = Index::by_owner();
    let rs_indexer = rs_index.clone();
    let rs_config = watcher::Config::default()
        .labels(POD_TEMPLATE_HASH_LABEL)
        .any_semantic();
    let rs_stream = watcher(scope.api::<ReplicaSet>(&client), rs_config)
        .default_backoff()
        .modify(slim_replica_set)
        // The index before the store: a reconcile woken by the store's first
        // complete list must find the index complete too, or it would plan
        // with no ReplicaSets and take an update in progress for a first
        // deploy (the chaos test caught this on restarts). So for every
        // cache below.
        .inspect_ok(move |ev| rs_indexer.apply(ev))
        .reflect(rs_writer)
        .touched_objects()
        .inspect_ok(nudge_owner(&workers));

    // AnalysisRuns: a run changing phase moves its Rollout on.
    let (ar_reader, ar_writer) = reflector::store();
    let ar_index = Index::by_owner();
    let ar_indexer = ar_index.clone();
    let ar_stream = watcher(scope.api::<AnalysisRun>(&client), owned)
        .default_backoff()
        .modify(|r: &mut AnalysisRun| r.managed_fields_mut().clear())
        .inspect_ok(move |ev| ar_indexer.apply(ev))
        .reflect(ar_writer)
        .touched_objects()
        .inspect_ok(nudge_owner(&workers));

    // Services, slimmed. A change to a Service reconciles the Rollout that
    // manages it, if any (that also ends the wait of one whose cache was
    // behind our selector patch), and those that name it (one created
    // after its Rollout).
    let svc_indexer = svc_index.clone();
    let svc_stream = watcher(
        scope.api::<Service>(&client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(slim_service)
    .inspect_ok(move |ev| svc_indexer.apply(ev))
    .reflect(svc_writer)
    .touched_objects();

    // Deployments, metadata only (dereference reads the one a Rollout
    // names): a `kubectl set image deployment/...` on a workloadRef starts
    // an update.
    let deploy_stream = metadata_changes::<Deployment>(scope.api(&client));

    // Ingresses, slimmed, by the Rollout that controls them (its canary
    // Ingresses). A spec change reconciles the Rollouts that name the
    // Ingress (a stable Ingress created after its Rollout, or changed).
    let (ing_reader, ing_writer) = reflector::store();
    let ing_index = Index::by_owner();
    let ing_indexer = ing_index.clone();
    let ingress_stream = watcher(
        scope.api::<Ingress>(&client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(slim_ingress)
    .inspect_ok(move |ev| ing_indexer.apply(ev))
    .reflect(ing_writer)
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());

    // Analysis templates: one created after its Rollout, or changed,
    // reconciles the Rollouts that name it or a template nesting it.
    // ClusterAnalysisTemplates only when every namespace is watched (a
    // namespaced install cannot list them; dereference reads them by name).
    let (at_reader, at_writer) = reflector::store();
    let at_index = Index::by_each(references::of_analysis_template);
    let at_indexer = at_index.clone();
    let at_stream = watcher(
        scope.api::<AnalysisTemplate>(&client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(slim_template::<AnalysisTemplate>)
    .inspect_ok(move |ev| at_indexer.apply(ev))
    .reflect(at_writer)
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());
    let (cat_reader, cat_writer) = reflector::store();
    let cat_index = Index::by_each(references::of_cluster_analysis_template);
    let cat_indexer = cat_index.clone();
    let cluster_wide = scope.namespace.is_none();
    let cat_stream = if cluster_wide {
        watcher(
            Api::<ClusterAnalysisTemplate>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(slim_template::<ClusterAnalysisTemplate>)
        .inspect_ok(move |ev| cat_indexer.apply(ev))
        .reflect(cat_writer)
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default())
        .boxed()
    } else {
        futures::stream::empty().boxed()
    };
    settings
        .metrics
        .watch_templates(at_reader.clone(), cluster_wide.then(|| cat_reader.clone()));
    let referrers = Referrers {
        by_reference,
        rollouts: ro_reader.clone(),
        templates: at_reader.clone(),
        templates_by_nested: at_index,
        cluster_templates: cat_reader.clone(),
        cluster_templates_by_nested: cat_index,
    };

    let mut caches = Caches {
        rollouts: ro_reader.clone(),
        replica_sets: rs_reader,
        replica_sets_by_owner: rs_index,
        analysis_runs: ar_reader,
        runs_by_owner: ar_index,
        services: svc_reader,
        services_by_manager: svc_index,
        ingresses: ing_reader,
        ingresses_by_owner: ing_index,
        templates: at_reader,
        cluster_templates: cluster_wide.then_some(cat_reader),
        listed: Listed::all(vec![]),
    };
    caches.listed = caches.all_listed();
    let ctx = Arc::new(Context {
        recorder,
        freshness,
        client,
        workers,
        caches: caches.clone(),
        backoff: Backoff::default(),
        metrics: settings.metrics.clone(),
        memos,
    });
    settings.metrics.watch_rollouts(ro_reader.clone());
    info!(
        namespace = scope.namespace.as_deref().unwrap_or("<all>"),
        instance_id = scope.instance_id.as_deref().unwrap_or("<none>"),
        workers = settings.rollout_workers,
        "rollouts controller started"
    );
    let shutdown = shutdown.shared();
    let synced = move || {
        use crate::controller::is_synced;
        is_synced(&caches.rollouts)
            && is_synced(&caches.replica_sets)
            && is_synced(&caches.analysis_runs)
            && is_synced(&caches.services)
            && is_synced(&caches.ingresses)
            && is_synced(&caches.templates)
    };
    let services = referrers.clone();
    let results = Controller::for_stream(ro_stream, key_reader)
        .owns_stream(rs_stream)
        .owns_stream(ar_stream)
        .watches_stream(deploy_stream, referrers.waker())
        .watches_stream(ingress_stream, referrers.waker())
        .watches_stream(svc_stream, move |svc| {
            let mut woken = services.of(references::key_of(&svc));
            woken.extend(managing_rollout(&svc));
            woken
        })
        .watches_stream(at_stream, referrers.waker())
        .watches_stream(cat_stream, referrers.waker())
        // Unbounded here: `Workers` limits the reconciles, in turn.
        .with_config(controller::Config::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx);
    crate::controller::drive("rollouts", results, shutdown, synced).await;
    Ok(())
}

/// kube-runtime's entry: waits for a worker where `placement` puts the
/// Rollout, then runs the pipeline on the latest cached copy.
async fn reconcile(key: Arc<RolloutKey>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ctx = &*ctx;
    ctx.workers
        .reconcile(
            &ctx.caches.rollouts,
            rollout_ref(&key),
            |ro| placement::place(ctx, ro),
            |ro| async move { reconcile::reconcile(&ro, ctx).await },
        )
        .await
}

fn error_policy(key: Arc<RolloutKey>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.retried(Queue::Rollouts);
    let (failures, delay) = ctx.backoff.failed(rollout_ref(&key));
    warn!(rollout = %key.name_any(), namespace = key.namespace().unwrap_or_default(), error = %err, failures, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// Nudges the reconcile of the Rollout that owns the object an event is about.
fn nudge_owner<K: Resource>(workers: &Workers) -> impl Fn(&K) + use<K> {
    let workers = workers.clone();
    move |obj| {
        let ns = obj.meta().namespace.as_deref().unwrap_or_default();
        for owner in obj
            .owner_references()
            .iter()
            .filter(|o| o.kind == "Rollout")
        {
            workers.nudge(ns, &owner.name);
        }
    }
}

fn key_event(ev: watcher::Event<Rollout>) -> watcher::Event<RolloutKey> {
    let key = |ro: Rollout| {
        ObjectMeta {
            name: ro.metadata.name,
            namespace: ro.metadata.namespace,
            ..ObjectMeta::default()
        }
        .into_request_partial::<Rollout>()
    };
    match ev {
        watcher::Event::Apply(ro) => watcher::Event::Apply(key(ro)),
        watcher::Event::Delete(ro) => watcher::Event::Delete(key(ro)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(ro) => watcher::Event::InitApply(key(ro)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A watch of an object kind's metadata: its creations and spec changes
/// (not status updates, which do not change the generation).
fn metadata_changes<K>(
    api: Api<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    PartialObjectMeta<K>: Resource<DynamicType = ()>,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default())
}

/// As upstream, the Services a deleted Rollout managed are handed back
/// (hash selector and managed-by annotation off), so they select the
/// app's pods again rather than none. In the background: a failure is
/// logged (the Service then stays as it was, as after a deletion missed
/// while the controller was down).
fn release_services_of(
    client: &Client,
    services: &Store<Service>,
    by_manager: &Index<Service>,
    ro: &Rollout,
) {
    let ns = ro.namespace().unwrap_or_default();
    let rollout = ro.name_any();
    let managed: Vec<String> = by_manager
        .group(services, &object_key(&ns, &rollout))
        .iter()
        .map(|svc| svc.name_any())
        .collect();
    if managed.is_empty() {
        return;
    }
    let client = client.clone();
    tokio::spawn(async move {
        for service in managed {
            match crate::rollout::apply::release_service(&client, &ns, &service).await {
                Ok(_) => {
                    info!(namespace = %ns, %rollout, %service, "released Service of a deleted Rollout")
                }
                Err(error) => {
                    warn!(namespace = %ns, %rollout, %service, %error, "could not release Service of a deleted Rollout")
                }
            }
        }
    });
}

/// The Rollouts already announced (RolloutAddedToInformer) by this
/// process, by UID; a deleted Rollout's goes with it.
#[derive(Default)]
struct Announced(Mutex<HashSet<String>>);

impl Announced {
    /// True the first time this Rollout is seen.
    fn first_sight(&self, ro: &Rollout) -> bool {
        ro.uid().is_some_and(|uid| lock(&self.0).insert(uid))
    }
    fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }
    fn retain(&self, live: &HashSet<String>) {
        lock(&self.0).retain(|uid| live.contains(uid));
    }
}
