//! kube-runtime wiring: watch Rollouts and the ReplicaSets they own (and the
//! objects they name: Services, Ingresses, analysis templates, the
//! Deployment a workloadRef names), build a snapshot from the caches, plan,
//! apply. Errors are logged and retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceSpec};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::analysis::template::{self, Templates};
use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisRun, AnalysisTemplate, AnalysisTemplateSpec, ClusterAnalysisTemplate,
    ClusterAnalysisTemplateSpec,
};
use crate::api::rollout::RolloutStatus;
use crate::controller::{Backoff, Settings, requeue_since};
use crate::index::Index;
use crate::metrics::{Metrics, Queue};
use crate::recorder::Recorder;
use crate::rollout::apply::{Applied, ApplyError, apply};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::hash::format_selector;
use crate::rollout::plan::analysis as gates;
use crate::rollout::plan::events;
use crate::rollout::plan::restart::needs_restart;
use crate::rollout::plan::workload;
use crate::rollout::plan::{Plan, after_create, moves_on, plan};
use crate::rollout::references;
use crate::rollout::snapshot::{MANAGED_BY_ANNOTATION, Reads, ReplicaSetExt, Snapshot};
use crate::rollout::template_match;
use crate::workers::{Place, Workers};

/// A settled rollout is still looked at this often, so a missed watch
/// event cannot leave it stale for long.
const RESYNC: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the first ReplicaSet list.
const CACHE_SYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(
        "the Rollout CRD is not installed in this cluster (kubectl apply --server-side -k crds/): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(kube::Error),
    #[error(
        "the ReplicaSet cache has not synced yet (is the API server slow or the watch forbidden?)"
    )]
    CacheNotReady,
}

struct Context {
    client: Client,
    workers: Workers,
    rollouts: Store<Rollout>,
    replica_sets: Store<ReplicaSet>,
    analysis_runs: Store<AnalysisRun>,
    /// Services, slimmed to what the planner reads (`slim_service`).
    services: Store<Service>,
    /// The Services by the Rollout their managed-by annotation names.
    services_by_manager: Index<Service>,
    replica_sets_by_owner: Index<ReplicaSet>,
    runs_by_owner: Index<AnalysisRun>,
    recorder: Recorder,
    ahead: Arc<Ahead>,
    backoff: Backoff<ObjectRef<Rollout>>,
    metrics: Metrics,
    memos: Arc<Memos>,
}

/// What the controller keeps in memory about one Rollout between
/// reconciles, besides `Ahead`. Nothing here is state: a restarted
/// controller does without it (one refused create is tried again; one
/// reconcile goes first that could have waited).
#[derive(Debug, Default)]
struct Memo {
    /// The pod-template hash whose ReplicaSet the API server last refused,
    /// and why (see `Snapshot::with_rejected`).
    rejected: Option<(String, String)>,
    /// While an update is under way: what its last reconcile read beyond
    /// the caches, and the Rollout generation it was read for (see `place`).
    reads: Option<(Option<i64>, Arc<Reads>)>,
    /// A template hash no ReplicaSet carries, and the hash of the
    /// ReplicaSet with the same template, if one has it (see
    /// `with_template_twin`).
    twin: Option<(String, Option<String>)>,
}

/// The memos by Rollout UID; a deleted Rollout's go with it.
#[derive(Default)]
struct Memos(Mutex<HashMap<String, Memo>>);

impl Memos {
    fn rejected(&self, ro: &Rollout) -> Option<(String, String)> {
        let uid = ro.metadata.uid.as_deref()?;
        lock(&self.0).get(uid)?.rejected.clone()
    }

    /// Remembers a refusal of the Rollout's ReplicaSet (None: forgets it).
    fn remember_rejected(&self, ro: &Rollout, rejected: Option<(String, String)>) {
        self.update(ro, |memo| memo.rejected = rejected);
    }

    fn twin(&self, ro: &Rollout) -> Option<(String, Option<String>)> {
        let uid = ro.metadata.uid.as_deref()?;
        lock(&self.0).get(uid)?.twin.clone()
    }

    fn remember_twin(&self, ro: &Rollout, twin: Option<(String, Option<String>)>) {
        self.update(ro, |memo| memo.twin = twin);
    }

    /// Remembers what a reconcile read beyond the caches while the update
    /// is under way (None: forgets it).
    fn remember_reads(&self, ro: &Rollout, reads: Option<Reads>) {
        let generation = ro.metadata.generation;
        self.update(ro, |memo| {
            memo.reads = reads.map(|r| (generation, Arc::new(r)));
        });
    }

    /// What a waiting reconcile's plan needs beyond the caches, if it can
    /// do without reading: nothing, or the reads of the last reconcile of
    /// this generation. None: only `observe` can tell (a pending restart
    /// lists pods; a workloadRef's Deployment changes under us; a new
    /// generation may name other objects).
    fn reads_for_placing(&self, ro: &Rollout, now: Timestamp) -> Option<Arc<Reads>> {
        if needs_restart(ro, now) || workload::deployment_name(ro).is_some() {
            return None;
        }
        if !Snapshot::needs_reads(ro) {
            return Some(Arc::default());
        }
        let memos = lock(&self.0);
        let (generation, reads) = memos.get(ro.metadata.uid.as_deref()?)?.reads.as_ref()?;
        (*generation == ro.metadata.generation).then(|| reads.clone())
    }

    fn update(&self, ro: &Rollout, change: impl FnOnce(&mut Memo)) {
        let Some(uid) = ro.metadata.uid.as_deref() else {
            return;
        };
        let mut memos = lock(&self.0);
        let mut memo = memos.remove(uid).unwrap_or_default();
        change(&mut memo);
        if memo.rejected.is_some() || memo.reads.is_some() || memo.twin.is_some() {
            memos.insert(uid.to_string(), memo);
        }
    }

    fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }

    fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.0).retain(|uid, _| live.contains(uid));
    }
}

impl Context {
    /// The cached ReplicaSets the Rollout with this UID controls.
    fn cached_replica_sets(&self, uid: &str) -> Vec<ReplicaSet> {
        let owned = self.replica_sets_by_owner.group(&self.replica_sets, uid);
        owned.iter().map(|rs| (**rs).clone()).collect()
    }

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

    /// The cached Services the Rollout names (one not cached is left out),
    /// and those it manages (which the planner hands back once the spec no
    /// longer names them).
    fn cached_services(&self, ro: &Rollout) -> Vec<Service> {
        let ns = ro.namespace().unwrap_or_default();
        let named = Snapshot::service_names(ro);
        let managed = self
            .services_by_manager
            .group(&self.services, &object_key(&ns, &ro.name_any()))
            .into_iter()
            .filter(|svc| !named.contains(&svc.name_any()));
        named
            .iter()
            .filter_map(|name| self.services.get(&ObjectRef::new(name).within(&ns)))
            .chain(managed)
            .map(|svc| (*svc).clone())
            .collect()
    }

    /// The cached AnalysisRuns the Rollout with this UID controls.
    fn cached_runs(&self, uid: &str) -> Vec<AnalysisRun> {
        let owned = self.runs_by_owner.group(&self.analysis_runs, uid);
        owned.iter().map(|r| (**r).clone()).collect()
    }
}

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
    let ahead = Arc::new(Ahead::default());
    let memos = Arc::new(Memos::default());
    let announced = Arc::new(Announced::default());
    // Services, by the Rollout that manages them (see `svc_stream`).
    let (svc_reader, svc_writer) = reflector::store();
    let svc_index = Index::by(manager_key);
    let forget_gone = {
        let (ahead, memos, store) = (ahead.clone(), memos.clone(), ro_reader.clone());
        let announced = announced.clone();
        let (client, services, by_manager) =
            (client.clone(), svc_reader.clone(), svc_index.clone());
        move |ev: &watcher::Event<Rollout>| {
            let live: std::collections::HashSet<String> = match ev {
                watcher::Event::Delete(ro) => {
                    let uid = ro.uid().unwrap_or_default();
                    ahead.forget(&uid);
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
            ahead.retain(&live);
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
    // kept too (10,000 Rollouts starting took ~100 MB more than 10,000
    // settled ones; this is one suspect). So the runner gets
    // keys only: a second store with each Rollout's name and namespace,
    // fed from the same watch; a reconcile reads the full Rollout from
    // the first one when its turn comes.
    let (key_reader, key_writer) = reflector::store::<RolloutKey>();
    // Every watch event about a Rollout, or about what it owns, nudges its
    // reconcile should it wait in the other line (see `place`).
    let workers = Workers::new(
        settings.rollout_workers,
        settings.metrics.clone(),
        Queue::Rollouts,
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
        // deploy (the chaos test caught this on restarts).
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

    // Services, slimmed: a reconcile takes the ones its Rollout names from
    // this cache rather than asking the API server each time (two reads
    // per reconcile of a canary with Services tripled its time). A change
    // to a Service reconciles the Rollout that manages it, if any (that
    // also ends the wait of one whose cache was behind our selector patch),
    // and those that name it (one created after its Rollout).
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

    // Deployments, metadata only (observe reads the one a Rollout names): a
    // `kubectl set image deployment/...` on a workloadRef starts an update.
    let deploy_stream = metadata_changes::<Deployment>(scope.api(&client));
    // Ingresses, likewise (observe reads those the nginx routing names):
    // the stable Ingress created after its Rollout, or changed.
    let ingress_stream = metadata_changes::<Ingress>(scope.api(&client));

    // Analysis templates, slimmed to the templates they nest and their
    // metrics (observe reads those a Rollout names; the metrics feed
    // analysis_template_metric_info): one created after its Rollout, or
    // changed, reconciles the Rollouts that name it or a template nesting it.
    // ClusterAnalysisTemplates only when every namespace is watched (a
    // namespace install may not read them; its Rollouts wait for the retry).
    let (at_reader, at_writer) = reflector::store();
    let at_index = Index::by_each(references::of_analysis_template);
    let at_indexer = at_index.clone();
    let at_stream = watcher(
        scope.api::<AnalysisTemplate>(&client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|t: &mut AnalysisTemplate| {
        t.metadata = slim_meta(&t.metadata);
        t.spec = AnalysisTemplateSpec {
            templates: std::mem::take(&mut t.spec.templates),
            metrics: std::mem::take(&mut t.spec.metrics),
            ..Default::default()
        };
    })
    .inspect_ok(move |ev| at_indexer.apply(ev))
    .reflect(at_writer)
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());
    let (cat_reader, cat_writer) = reflector::store();
    let cat_index = Index::by_each(references::of_cluster_analysis_template);
    let cat_indexer = cat_index.clone();
    let cat_stream = watcher(
        Api::<ClusterAnalysisTemplate>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|t: &mut ClusterAnalysisTemplate| {
        t.metadata = slim_meta(&t.metadata);
        t.spec = ClusterAnalysisTemplateSpec {
            template: AnalysisTemplateSpec {
                templates: std::mem::take(&mut t.spec.template.templates),
                metrics: std::mem::take(&mut t.spec.template.metrics),
                ..Default::default()
            },
        };
    })
    .inspect_ok(move |ev| cat_indexer.apply(ev))
    .reflect(cat_writer)
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());
    settings.metrics.watch_templates(
        at_reader.clone(),
        scope.namespace.is_none().then(|| cat_reader.clone()),
    );
    let cat_stream = if scope.namespace.is_none() {
        cat_stream.boxed()
    } else {
        futures::stream::empty().boxed()
    };
    let referrers = Referrers {
        by_reference,
        rollouts: ro_reader.clone(),
        templates: at_reader,
        templates_by_nested: at_index,
        cluster_templates: cat_reader,
        cluster_templates_by_nested: cat_index,
    };

    let ctx = Arc::new(Context {
        recorder,
        ahead,
        client,
        workers,
        rollouts: ro_reader.clone(),
        replica_sets: rs_reader,
        analysis_runs: ar_reader,
        services: svc_reader,
        services_by_manager: svc_index,
        replica_sets_by_owner: rs_index,
        runs_by_owner: ar_index,
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
    let caches = (
        ro_reader.clone(),
        ctx.replica_sets.clone(),
        ctx.analysis_runs.clone(),
        ctx.services.clone(),
    );
    let synced = move || {
        use crate::controller::is_synced;
        is_synced(&caches.0) && is_synced(&caches.1) && is_synced(&caches.2) && is_synced(&caches.3)
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

/// How soon to look again at a Rollout whose cached copy is behind our own
/// write, should its watch event not come.
const BEHIND_RETRY: Duration = Duration::from_secs(2);

/// Per Rollout, what the cache must show before the next plan, of the
/// Rollout itself and of each of its ReplicaSets (by uid): none of the
/// versions our last writes replaced, and at least the generation they
/// produced. One reconcile can write an object twice (an annotation, then
/// the status; a create, then a scale): the cache showing the version
/// between the two is behind too. So is one showing someone else's write
/// made between ours (the controller-manager writes a new ReplicaSet's
/// status at once): only its generation, which may be compared where
/// versions may not, tells that it predates our scale.
#[derive(Default)]
struct Ahead(Mutex<HashMap<String, HashMap<String, Mark>>>);

/// The versions replaced, and the generation written (0: none).
type Mark = (Vec<String>, i64);

/// What one reconcile wrote of one object: its uid, the version it started
/// from (the cached one, if any), the versions written (or read afresh
/// after a conflict), oldest first, and the highest generation written.
type Writes = (String, Option<String>, Vec<String>, i64);

impl Ahead {
    /// Records what a reconcile of `rollout` wrote; it replaces what was
    /// recorded before (the reconcile ran, so the cache had caught up).
    fn wrote(&self, rollout: &str, writes: Vec<Writes>) {
        let mut objects = HashMap::new();
        for (object, before, written, generation) in writes {
            let Some((latest, between)) = written.split_last() else {
                continue;
            };
            let replaced: Vec<String> = before
                .into_iter()
                .chain(between.iter().cloned())
                .filter(|v| v != latest)
                .collect();
            if !replaced.is_empty() || generation > 0 {
                objects.insert(object, (replaced, generation));
            }
        }
        let mut map = lock(&self.0);
        if objects.is_empty() {
            map.remove(rollout);
        } else {
            map.insert(rollout.to_string(), objects);
        }
    }

    /// Whether the cached copy of `object` (the Rollout or one of its
    /// ReplicaSets), at `version` and `generation`, is older than our last
    /// writes to it.
    fn is_behind(
        &self,
        rollout: &str,
        object: &str,
        version: Option<&str>,
        generation: i64,
    ) -> bool {
        let mut map = lock(&self.0);
        let Some(objects) = map.get_mut(rollout) else {
            return false;
        };
        let Some((replaced, written)) = objects.get(object) else {
            return false;
        };
        if version.is_some_and(|c| replaced.iter().any(|v| v == c)) || generation < *written {
            return true;
        }
        objects.remove(object);
        if objects.is_empty() {
            map.remove(rollout);
        }
        false
    }

    fn forget(&self, rollout: &str) {
        lock(&self.0).remove(rollout);
    }

    /// Forgets the Rollouts not in `live`.
    fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.0).retain(|uid, _| live.contains(uid));
    }
}

/// What one reconcile wrote, oldest first: the Rollout's versions (and one
/// read afresh after a conflict), and each ReplicaSet or Service write as
/// (uid, version, generation).
#[derive(Default)]
struct Written {
    rollout: Vec<String>,
    objects: Vec<(String, String, i64)>,
}

impl Written {
    fn add(&mut self, applied: &mut Applied) {
        self.rollout.append(&mut applied.written);
        self.objects.append(&mut applied.objects);
    }

    /// Per object written, for [`Ahead::wrote`]: the Rollout from `before`,
    /// each ReplicaSet or Service from its version in `cached` (uid,
    /// version).
    fn by_object(
        self,
        rollout: (&str, Option<String>),
        cached: &[(String, Option<String>)],
    ) -> Vec<Writes> {
        let mut out = vec![(rollout.0.to_string(), rollout.1, self.rollout, 0)];
        for (uid, version, generation) in self.objects {
            match out.iter_mut().find(|w| w.0 == uid) {
                Some(w) => {
                    w.2.push(version);
                    w.3 = w.3.max(generation);
                }
                None => {
                    let before = cached.iter().find(|c| c.0 == uid).and_then(|c| c.1.clone());
                    out.push((uid, before, vec![version], generation));
                }
            }
        }
        out
    }
}

/// What kube-runtime's runner holds of a Rollout: its metadata, of which
/// only the name and namespace are kept.
type RolloutKey = PartialObjectMeta<Rollout>;

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

/// The key of the full Rollout a runner's key names.
fn rollout_ref(key: &RolloutKey) -> ObjectRef<Rollout> {
    let r = ObjectRef::new(&key.name_any());
    match key.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// A poisoned lock still guards consistent data here: every critical
/// section is a single map operation.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a cached Rollout can do without: managedFields and kubectl's copy
/// of the last applied spec, never read and often the bulk of the object.
fn slim_rollout(ro: &mut Rollout) {
    ro.managed_fields_mut().clear();
    ro.annotations_mut().remove(LAST_APPLIED);
}

/// The planner reads a ReplicaSet's counts, labels, annotations, owners
/// and its template's metadata, never the pod spec: the cache drops it and
/// managedFields (with 10,000 Rollouts they are most of the memory).
fn slim_replica_set(rs: &mut ReplicaSet) {
    rs.managed_fields_mut().clear();
    if let Some(template) = rs.spec.as_mut().and_then(|s| s.template.as_mut()) {
        template.spec = None;
    }
}

/// The Rollout a Service's managed-by annotation names (set when the
/// Rollout first switches the Service's selector).
fn managing_rollout(svc: &Service) -> Option<ObjectRef<RolloutKey>> {
    let name = svc.annotations().get(MANAGED_BY_ANNOTATION)?;
    Some(ObjectRef::new(name).within(&svc.namespace()?))
}

/// The planner reads a Service's name, selector and managed-by annotation;
/// the cache keeps those and the identity (uid, version), nothing else:
/// it holds every Service in the watched namespaces, not only ours.
fn slim_service(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    let annotations = meta.annotations.and_then(|mut a| {
        let managed_by = a.remove_entry(MANAGED_BY_ANNOTATION)?;
        Some(std::collections::BTreeMap::from([managed_by]))
    });
    svc.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        annotations,
        ..ObjectMeta::default()
    };
    let selector = svc.spec.take().and_then(|spec| spec.selector);
    svc.spec = Some(ServiceSpec {
        selector,
        ..ServiceSpec::default()
    });
    svc.status = None;
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// The Rollout a Service's managed-by annotation names.
fn manager_key(svc: &Service) -> Option<String> {
    let rollout = svc.annotations().get(MANAGED_BY_ANNOTATION)?;
    Some(object_key(&svc.namespace()?, rollout))
}

fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
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

/// Identity only: what an index and a wake-up need of a watched object.
fn slim_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        ..ObjectMeta::default()
    }
}

/// Finds the Rollouts that name an object, or a template nesting it.
#[derive(Clone)]
struct Referrers {
    by_reference: Index<Rollout>,
    rollouts: Store<Rollout>,
    templates: Store<AnalysisTemplate>,
    templates_by_nested: Index<AnalysisTemplate>,
    cluster_templates: Store<ClusterAnalysisTemplate>,
    cluster_templates_by_nested: Index<ClusterAnalysisTemplate>,
}

impl Referrers {
    /// A watch mapper: the Rollouts to reconcile for an object of kind K.
    fn waker<K: Resource<DynamicType = ()>>(
        &self,
    ) -> impl Fn(K) -> Vec<ObjectRef<RolloutKey>> + use<K> {
        let referrers = self.clone();
        move |obj| referrers.of(references::key_of(&obj))
    }

    /// The Rollouts to reconcile when the object with this key
    /// (`references::key`) appears or changes.
    fn of(&self, key: String) -> Vec<ObjectRef<RolloutKey>> {
        let keys = references::with_nesting(key, |k| {
            let nesting = self.templates_by_nested.group(&self.templates, k);
            let cluster_nesting = self
                .cluster_templates_by_nested
                .group(&self.cluster_templates, k);
            nesting
                .iter()
                .map(|t| references::key_of(&**t))
                .chain(cluster_nesting.iter().map(|t| references::key_of(&**t)))
                .collect()
        });
        let mut woken: Vec<ObjectRef<RolloutKey>> = keys
            .iter()
            .flat_map(|k| self.by_reference.group(&self.rollouts, k))
            .map(|ro| ObjectRef::new(&ro.name_any()).within(&ro.namespace().unwrap_or_default()))
            .collect();
        woken.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        woken.dedup();
        woken
    }
}

/// The Rollouts already announced (RolloutAddedToInformer) by this
/// process, by UID; a deleted Rollout's goes with it.
#[derive(Default)]
struct Announced(Mutex<std::collections::HashSet<String>>);

impl Announced {
    /// True the first time this Rollout is seen.
    fn first_sight(&self, ro: &Rollout) -> bool {
        ro.uid().is_some_and(|uid| lock(&self.0).insert(uid))
    }
    fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }
    fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.0).retain(|uid| live.contains(uid));
    }
}

async fn reconcile(key: Arc<RolloutKey>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ctx = &*ctx;
    ctx.workers
        .reconcile(
            &ctx.rollouts,
            rollout_ref(&key),
            |ro| place(ctx, ro),
            |ro| async move { reconcile_inner(&ro, ctx).await },
        )
        .await
}

/// Where a Rollout's reconcile waits for a worker (see `workers`). Only an
/// update under way can go first: the status names a new pod template
/// hash beside the stable one, which the update's first write does. It
/// goes first when its plan moves it on; one that would only mirror replica
/// counts waits in the other line until its next step comes due. That plan
/// is made from the caches and, for its Ingresses and analysis templates,
/// from what its last reconcile read (`Memos::reads_for_placing`); a
/// Rollout whose snapshot needs more (a Deployment, pods, reads not made
/// yet for this generation) is not told apart: under way, it goes first.
fn place(ctx: &Context, ro: &Rollout) -> Place {
    if !underway(ro.status.as_ref()) {
        return Place::Other;
    }
    let now = Timestamp::now();
    let Some(reads) = ctx.memos.reads_for_placing(ro, now) else {
        return Place::Progress;
    };
    let uid = ro.uid().unwrap_or_default();
    let snapshot = Snapshot::new(ro.clone(), ctx.cached_replica_sets(&uid))
        .with_services(ctx.cached_services(ro))
        .with_analysis(ctx.cached_runs(&uid), Templates::new())
        .with_reads(&reads)
        .with_rejected(ctx.memos.rejected(ro))
        .with_template_twin(remembered_twin(ctx, ro));
    place_of(&snapshot, now)
}

fn underway(status: Option<&RolloutStatus>) -> bool {
    let current = status.and_then(|s| s.current_pod_hash.as_deref());
    let stable = status.and_then(|s| s.stable_rs.as_deref());
    matches!((current, stable), (Some(current), Some(stable)) if current != stable)
}

/// The place of an update under way whose snapshot is `snapshot`.
fn place_of(snapshot: &Snapshot, now: Timestamp) -> Place {
    let plan = plan(snapshot, now);
    if moves_on(snapshot.rollout.status.as_ref(), &plan) {
        Place::Progress
    } else {
        Place::OtherForNow {
            recheck: plan.requeue_after,
        }
    }
}

async fn reconcile_inner(ro: &Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let uid = ro.uid().unwrap_or_default();
    if ro.meta().deletion_timestamp.is_some() {
        ctx.ahead.forget(&uid);
        ctx.memos.forget(&uid);
        return Ok(Requeue::await_change());
    }
    // Planning with a cache that has not listed the ReplicaSets yet would
    // take a rollout in progress for an initial deploy and promote it.
    for ready in [
        ctx.replica_sets.wait_until_ready().boxed(),
        ctx.analysis_runs.wait_until_ready().boxed(),
        ctx.services.wait_until_ready().boxed(),
    ] {
        tokio::time::timeout(CACHE_SYNC, ready)
            .await
            .map_err(|_| Error::CacheNotReady)?
            .map_err(|_| Error::CacheNotReady)?;
    }
    let cached = ctx.cached_replica_sets(&uid);
    let services = ctx.cached_services(ro);
    // Our last writes to this Rollout, its ReplicaSets or its Services have
    // not reached the cache yet: a plan from the older copies would only
    // meet a conflict (and a re-read). The watch events of those writes
    // bring the Rollout back; the requeue is a safety net.
    let behind = ctx
        .ahead
        .is_behind(&uid, &uid, ro.resource_version().as_deref(), 0)
        || cached
            .iter()
            .map(|rs| &rs.metadata)
            .chain(services.iter().map(|svc| &svc.metadata))
            .any(|meta| {
                ctx.ahead.is_behind(
                    &uid,
                    meta.uid.as_deref().unwrap_or_default(),
                    meta.resource_version.as_deref(),
                    meta.generation.unwrap_or(0),
                )
            });
    if behind {
        debug!(rollout = %ro.name_any(), "cache behind our own write; waiting for it");
        return Ok(Requeue::requeue(BEHIND_RETRY));
    }
    let cached_versions: Vec<(String, Option<String>)> = cached
        .iter()
        .map(|rs| (rs.uid().unwrap_or_default(), rs.resource_version()))
        .chain(
            services
                .iter()
                .map(|svc| (svc.uid().unwrap_or_default(), svc.resource_version())),
        )
        .collect();
    let (now, planned_at) = (Timestamp::now(), Instant::now());
    let runs = ctx.cached_runs(&uid);
    let snapshot = observe(&ctx.client, (**ro).clone(), cached, services, runs, now)
        .await?
        .with_rejected(ctx.memos.rejected(ro));
    // Boxed, as below: inline, its future deepens every reconcile's stack.
    let snapshot = Box::pin(with_template_twin(ctx, snapshot)).await?;
    let reads = Snapshot::needs_reads(ro).then(|| snapshot.reads());
    // What this reconcile wrote or read afresh: until the cache shows the
    // last version of each object, it is behind.
    let mut written = Written::default();
    let planned = plan_and_apply_or_reread(ctx, snapshot, now, &mut written).await;
    // Also after a failure: what was written is written.
    let writes = written.by_object((&uid, ro.resource_version()), &cached_versions);
    ctx.ahead.wrote(&uid, writes);
    let plan = planned?;
    // Kept only while the update is under way: only then may a reconcile
    // of this Rollout wait in the other line (see `place`).
    ctx.memos
        .remember_reads(ro, reads.filter(|_| underway(Some(&plan.status))));
    ctx.backoff.succeeded(&ObjectRef::from_obj(&**ro));
    Ok(requeue_since(
        planned_at,
        plan.requeue_after.unwrap_or(RESYNC).min(RESYNC),
    ))
}

async fn plan_and_apply_or_reread(
    ctx: &Context,
    snapshot: Snapshot,
    now: Timestamp,
    written: &mut Written,
) -> Result<Plan, Error> {
    let ro = &snapshot.rollout;
    match plan_and_apply(ctx, &snapshot, now, written).await {
        // Someone changed what the plan was based on (or the caches lag
        // behind our own writes): plan once more from the API server itself.
        Err(Error::Apply(ApplyError::Conflict { what })) => {
            debug!(rollout = %ro.name_any(), %what, "conflict; planning again from a fresh read");
            let ns = ro.namespace().unwrap_or_default();
            let fresh = fresh_snapshot(ctx, ro, &ns, now)
                .await?
                .with_rejected(ctx.memos.rejected(ro));
            let fresh = Box::pin(with_template_twin(ctx, fresh)).await?;
            let read = fresh.rollout.resource_version();
            if read.is_some() && read.as_ref() != written.rollout.last() {
                written.rollout.extend(read);
            }
            plan_and_apply(ctx, &fresh, now, written).await
        }
        other => other,
    }
}

async fn plan_and_apply(
    ctx: &Context,
    snapshot: &Snapshot,
    now: Timestamp,
    written: &mut Written,
) -> Result<Plan, Error> {
    match plan_and_apply_once(ctx, snapshot, now, written).await {
        // The pod template is invalid in the API server's eyes: plan again
        // knowing it, which reports it as InvalidSpec and creates nothing.
        Err(Error::Apply(ApplyError::Rejected { name, hash, detail })) => {
            let ro = &snapshot.rollout;
            warn!(rollout = %ro.name_any(), replicaset = %name, %detail, "the API server refused the ReplicaSet");
            let rejected = Some((hash, detail));
            ctx.memos.remember_rejected(ro, rejected.clone());
            let known = snapshot.clone().with_rejected(rejected);
            plan_and_apply_once(ctx, &known, now, written).await
        }
        other => other,
    }
}

/// Plans and applies; a plan that created the new ReplicaSet is followed
/// by one from what the API server returned (see `after_create`). What
/// was written is added to `written`.
async fn plan_and_apply_once(
    ctx: &Context,
    snapshot: &Snapshot,
    now: Timestamp,
    written: &mut Written,
) -> Result<Plan, Error> {
    let ro = &snapshot.rollout;
    let mut applied = Applied::default();
    let first = apply_plan(ctx, snapshot, now, &mut applied).await;
    written.add(&mut applied);
    let first = first?;
    let next = applied.created.take().and_then(|mut created| {
        let mut rollout = applied.rollout.take().unwrap_or_else(|| ro.clone());
        slim_rollout(&mut rollout);
        slim_replica_set(&mut created);
        after_create(snapshot, &first, rollout, created)
    });
    let Some(next) = next else {
        return Ok(first);
    };
    debug!(rollout = %ro.name_any(), "created the new ReplicaSet; planning again from what the API server returned");
    let mut second = Applied::default();
    let result = apply_plan(ctx, &next, now, &mut second).await;
    written.add(&mut second);
    result
}

/// Plans from `snapshot`, applies the plan and publishes its events.
async fn apply_plan(
    ctx: &Context,
    snapshot: &Snapshot,
    now: Timestamp,
    applied: &mut Applied,
) -> Result<Plan, Error> {
    let ro = &snapshot.rollout;
    let plan = plan(snapshot, now);
    if !plan.actions.is_empty() {
        debug!(rollout = %ro.name_any(), actions = ?plan.actions, "plan");
    }
    if let Err(e) = apply(&ctx.client, ro, &plan, applied).await {
        // What was done is done: the plan made after this failure finds
        // it so and would never report it.
        let slice = plan.actions.get(..applied.done).unwrap_or_default();
        ctx.publish(ro, &events::for_actions(snapshot, slice));
        return Err(e.into());
    }
    ctx.publish(ro, &plan.events);
    Ok(plan)
}

/// Completes a snapshot: the Services the Rollout names (those not in
/// `services`, from the cache, are read), the Deployment its workloadRef
/// names, the analysis templates it refers to and, while a restart is
/// pending, its pods. These are read directly: caching every Deployment,
/// template and pod in the cluster would cost far more than these few reads.
async fn observe(
    client: &Client,
    ro: Rollout,
    replica_sets: Vec<ReplicaSet>,
    mut services: Vec<Service>,
    mut runs: Vec<AnalysisRun>,
    now: Timestamp,
) -> Result<Snapshot, Error> {
    let ns = ro.namespace().unwrap_or_default();
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    for name in Snapshot::service_names(&ro) {
        if services
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&name))
        {
            continue;
        }
        if let Some(mut svc) = svc_api.get_opt(&name).await.map_err(Error::Api)? {
            slim_service(&mut svc);
            services.push(svc);
        }
    }
    // The Deployment a workloadRef names (the planner reports it missing).
    let workload = match workload::deployment_name(&ro) {
        Some(name) => Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt(name)
            .await
            .map_err(Error::Api)?
            .map(|mut d| {
                d.managed_fields_mut().clear();
                d
            }),
        None => None,
    };
    let pods = if needs_restart(&ro, now) {
        // A workloadRef Rollout may name no selector: the Deployment's.
        let selector = format_selector(workload::selector(&ro, workload.as_ref()).as_ref());
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::Api)?
            .items
    } else {
        vec![]
    };
    // A run the status names but the cache has not shown yet (just created).
    let runs_api: Api<AnalysisRun> = Api::namespaced(client.clone(), &ns);
    let named: Vec<String> = ro
        .status
        .iter()
        .flat_map(|s| {
            [
                &s.canary.current_step_analysis_run_status,
                &s.canary.current_background_analysis_run_status,
                &s.blue_green.pre_promotion_analysis_run_status,
                &s.blue_green.post_promotion_analysis_run_status,
            ]
        })
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    for name in named {
        if !runs
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(name.as_str()))
            && let Some(run) = runs_api.get_opt(&name).await.map_err(Error::Api)?
        {
            runs.push(run);
        }
    }
    let templates = read_templates(client, &ro, &ns).await?;
    let ingresses = read_ingresses(client, &ro, &ns).await?;
    Ok(Snapshot::new(ro, replica_sets)
        .with_services(services)
        .with_pods(pods)
        .with_analysis(runs, templates)
        .with_ingresses(ingresses)
        .with_workload(workload))
}

/// The stable and canary Ingresses the nginx routing names; after the
/// routing was removed from the spec, every Ingress of the namespace (the
/// snapshot keeps those this Rollout owns, to delete them).
async fn read_ingresses(client: &Client, ro: &Rollout, ns: &str) -> Result<Vec<Ingress>, Error> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
    if Snapshot::needs_owned_ingresses(ro) {
        return Ok(api
            .list(&ListParams::default())
            .await
            .map_err(Error::Api)?
            .items);
    }
    let mut out = Vec::new();
    for name in Snapshot::ingress_names(ro) {
        if let Some(ingress) = api.get_opt(&name).await.map_err(Error::Api)? {
            out.push(ingress);
        }
    }
    Ok(out)
}

/// The AnalysisTemplates and ClusterAnalysisTemplates the Rollout's
/// analyses refer to, nested ones included; missing ones are left out (the
/// planner reports them).
async fn read_templates(client: &Client, ro: &Rollout, ns: &str) -> Result<Templates, Error> {
    let refs: Vec<_> = gates::analyses(ro)
        .into_iter()
        .flat_map(|(_, a)| a.templates.clone())
        .collect();
    let mut templates = Templates::new();
    let mut tried = std::collections::BTreeSet::new();
    loop {
        let todo: Vec<_> = template::wanted(&refs, &templates)
            .into_iter()
            .filter(|k| !tried.contains(k))
            .collect();
        if todo.is_empty() {
            return Ok(templates);
        }
        for key in todo {
            tried.insert(key.clone());
            let (cluster, name) = &key;
            let spec = if *cluster {
                Api::<ClusterAnalysisTemplate>::all(client.clone())
                    .get_opt(name)
                    .await
                    .map_err(Error::Api)?
                    .map(|t| t.spec.template)
            } else {
                Api::<AnalysisTemplate>::namespaced(client.clone(), ns)
                    .get_opt(name)
                    .await
                    .map_err(Error::Api)?
                    .map(|t| t.spec)
            };
            if let Some(spec) = spec {
                templates.insert(key, spec);
            }
        }
    }
}

/// A snapshot with the Rollout and its ReplicaSets read from the API server
/// rather than the caches. Only this Rollout's ReplicaSets are listed (by
/// its selector): a namespace with thousands of Rollouts must not be listed
/// whole on every conflict. AnalysisRuns come from the cache; `observe`
/// reads those the status names and the cache lacks.
async fn fresh_snapshot(
    ctx: &Context,
    ro: &Rollout,
    ns: &str,
    now: Timestamp,
) -> Result<Snapshot, Error> {
    let client = &ctx.client;
    let ro = Api::<Rollout>::namespaced(client.clone(), ns)
        .get(&ro.name_any())
        .await
        .map_err(Error::Api)?;
    let replica_sets = list_replica_sets(client, &ro, ns).await?;
    let runs = ctx.cached_runs(&ro.uid().unwrap_or_default());
    // Services read afresh too: `vec![]` as the cached ones.
    observe(client, ro, replica_sets, vec![], runs, now).await
}

/// The ReplicaSets that may be the Rollout's, read from the API server
/// (the cache keeps no pod templates).
async fn list_replica_sets(
    client: &Client,
    ro: &Rollout,
    ns: &str,
) -> Result<Vec<ReplicaSet>, Error> {
    // A workloadRef Rollout may name no selector.
    let selector = match format_selector(ro.spec.selector.as_ref()) {
        s if s.is_empty() || s == "<none>" => POD_TEMPLATE_HASH_LABEL.to_string(),
        s => format!("{s},{POD_TEMPLATE_HASH_LABEL}"),
    };
    Ok(Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Api)?
        .items)
}

/// The template twin remembered for the Rollout's current template, if
/// any: no reads, for `place`.
fn remembered_twin(ctx: &Context, ro: &Rollout) -> Option<(String, String)> {
    let (of, twin) = ctx.memos.twin(ro)?;
    Some((of, twin?))
}

/// When no hash finds the template's ReplicaSet although the Rollout has
/// some, looks for one with the same template, the API server's defaults
/// applied (`template_match`: after an undo). The answer is remembered by
/// template hash, so a template costs one dry run and one list, not one
/// per reconcile.
async fn with_template_twin(ctx: &Context, snapshot: Snapshot) -> Result<Snapshot, Error> {
    let resolved = workload::resolve(&snapshot);
    let ro = resolved.as_ref().unwrap_or(&snapshot.rollout);
    let Some(template) = ro.spec.template.as_ref() else {
        return Ok(snapshot);
    };
    let collisions = ro.status.as_ref().and_then(|s| s.collision_count);
    let Some(hash) = template_match::unmatched_hash(&snapshot, template, collisions) else {
        return Ok(snapshot);
    };
    let twin = match ctx.memos.twin(&snapshot.rollout) {
        Some((of, twin)) if of == hash => twin,
        _ => {
            let twin = find_twin(&ctx.client, ro, template).await?;
            if let Some(twin) = &twin {
                info!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), template_hash = %hash, replicaset_hash = %twin, "no ReplicaSet carries the template's hash, but this one has the same template once defaulted (an undo): going back to it");
            }
            ctx.memos
                .remember_twin(&snapshot.rollout, Some((hash.clone(), twin.clone())));
            twin
        }
    };
    Ok(snapshot.with_template_twin(twin.map(|t| (hash, t))))
}

/// The hash of the oldest ReplicaSet of `ro` whose template is `template`
/// once the API server has defaulted it (a server-side dry run of the
/// ReplicaSet this template would get). None when there is none, or the
/// API server refuses the template (the create says why, later).
async fn find_twin(
    client: &Client,
    ro: &Rollout,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Result<Option<String>, Error> {
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use kube::api::PostParams;
    let ns = ro.namespace().unwrap_or_default();
    let probe = ReplicaSet {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ro.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            selector: ro.spec.selector.clone().unwrap_or_default(),
            template: Some(template.clone()),
            ..Default::default()
        }),
        status: None,
    };
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let defaulted = match Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .create(&dry_run, &probe)
        .await
    {
        Ok(rs) => rs.spec.and_then(|s| s.template),
        Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => None,
        Err(e) => return Err(Error::Api(e)),
    };
    let Some(defaulted) = defaulted else {
        return Ok(None);
    };
    let listed = list_replica_sets(client, ro, &ns).await?;
    let mut owned = Snapshot::new(ro.clone(), listed).replica_sets;
    // Upstream takes the oldest that matches.
    owned.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(owned
        .iter()
        .find(|rs| template_match::same_template(rs, &defaulted))
        .and_then(|rs| rs.pod_hash().map(str::to_string)))
}

fn error_policy(key: Arc<RolloutKey>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.retried(Queue::Rollouts);
    let (failures, delay) = ctx.backoff.failed(rollout_ref(&key));
    warn!(rollout = %key.name_any(), namespace = key.namespace().unwrap_or_default(), error = %err, failures, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// One object written: the Rollout `uid` itself.
    fn wrote(ahead: &Ahead, uid: &str, before: &str, written: &[&str]) {
        let written = written.iter().map(|v| v.to_string()).collect();
        ahead.wrote(uid, vec![(uid.into(), Some(before.into()), written, 0)]);
    }

    #[test]
    fn ahead_waits_only_for_the_version_our_write_replaced() {
        let ahead = Ahead::default();
        let behind = |uid: &str, cached: &str| ahead.is_behind(uid, uid, Some(cached), 0);
        wrote(&ahead, "a", "1", &["2"]);
        assert!(behind("a", "1"), "the cache still has 1");
        assert!(!behind("a", "2"), "caught up");
        assert!(!behind("a", "1"), "forgotten once caught up");
        // Nothing written: nothing to wait for.
        wrote(&ahead, "b", "5", &[]);
        assert!(!behind("b", "5"));
        // An annotation (6), then the status (7): 6 is behind as well.
        wrote(&ahead, "c", "5", &["6", "7"]);
        assert!(behind("c", "5"));
        assert!(behind("c", "6"), "between our two writes");
        assert!(!behind("c", "7"), "caught up");
        // A conflict, a fresh read of 8 and nothing written after it: the
        // cache is behind until it shows 8, and 8 itself is never behind.
        wrote(&ahead, "d", "5", &["8"]);
        assert!(behind("d", "5"));
        wrote(&ahead, "e", "8", &["8"]);
        assert!(!behind("e", "8"));
    }

    #[test]
    fn ahead_waits_for_our_replica_set_writes_too() {
        let ahead = Ahead::default();
        // The status written (ro: 1 -> 2), the stable ReplicaSet scaled
        // (s: 10 -> 11, generation 3 -> 4), and a new one created (c: 20,
        // generation 1) then scaled (c: 22, generation 2).
        let written = Written {
            rollout: vec!["2".into()],
            objects: vec![
                ("s".into(), "11".into(), 4),
                ("c".into(), "20".into(), 1),
                ("c".into(), "22".into(), 2),
            ],
        };
        let cached = [("s".to_string(), Some("10".to_string()))];
        ahead.wrote("ro", written.by_object(("ro", Some("1".into())), &cached));
        let behind = |object: &str, version: &str, generation: i64| {
            ahead.is_behind("ro", object, Some(version), generation)
        };
        assert!(!behind("ro", "2", 0), "the Rollout caught up");
        assert!(behind("s", "10", 3), "the scale not seen yet");
        assert!(behind("c", "20", 1), "created, scale not seen");
        // The controller-manager's status write (21) came between our
        // create and our scale: not a version we wrote, but an older
        // generation.
        assert!(
            behind("c", "21", 1),
            "someone else's write before our scale"
        );
        assert!(!behind("c", "22", 2));
        assert!(!behind("s", "12", 4), "newer than ours");
        assert!(!behind("s", "10", 3), "forgotten once caught up");
        // A ReplicaSet only read, never written, is never behind.
        assert!(!behind("other", "1", 1));
        // The next reconcile's writes replace the record.
        ahead.wrote("ro", vec![("ro".into(), Some("2".into()), vec![], 0)]);
        assert!(!behind("c", "20", 1));
        assert!(lock(&ahead.0).is_empty());
    }

    #[test]
    fn only_a_rollout_whose_update_has_begun_may_go_first() {
        let with = |current: Option<&str>, stable: Option<&str>| {
            let mut ro = Rollout::new("r", Default::default());
            ro.status = Some(crate::api::rollout::RolloutStatus {
                current_pod_hash: current.map(Into::into),
                stable_rs: stable.map(Into::into),
                ..Default::default()
            });
            underway(ro.status.as_ref())
        };
        assert!(!underway(None));
        assert!(!with(Some("a"), None), "first deploy");
        assert!(!with(Some("a"), Some("a")), "settled");
        assert!(with(Some("b"), Some("a")));
    }

    #[test]
    fn the_service_cache_keeps_only_what_the_planner_reads() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {
                    MANAGED_BY_ANNOTATION: "r",
                    LAST_APPLIED: "{\"a\": \"long\"}",
                },
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "10.0.0.1"},
            "status": {"loadBalancer": {}},
        }))
        .unwrap();
        slim_service(&mut svc);
        let want: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7",
                "annotations": {MANAGED_BY_ANNOTATION: "r"},
            },
            "spec": {"selector": {"app": "web"}},
        }))
        .unwrap();
        assert_eq!(svc, want);
        assert_eq!(
            managing_rollout(&svc),
            Some(ObjectRef::new("r").within("a"))
        );
        // Not ours: no annotation left at all, no Rollout to reconcile.
        let mut other = Service::default();
        other.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
        other.metadata.namespace = Some("a".into());
        slim_service(&mut other);
        assert_eq!(other.metadata.annotations, None);
        assert_eq!(managing_rollout(&other), None);
    }

    /// A waiting reconcile is planned from the caches, plus what the last
    /// reconcile of the same generation read beyond them; without those
    /// reads it goes first.
    #[test]
    fn a_waiting_reconcile_is_planned_from_the_last_reads_of_its_generation() {
        let now = Timestamp::now();
        let parse = |yaml: &str| -> Rollout {
            let spec = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
            let mut ro = Rollout::new("r", spec);
            ro.metadata.uid = Some("u".into());
            ro.metadata.generation = Some(1);
            ro
        };
        let memos = Memos::default();
        let basic = "strategy: {canary: {steps: [{setWeight: 50}, {pause: {duration: 1}}]}}";
        for cached in [
            basic,
            "strategy: {canary: {canaryService: c, stableService: s}}",
            "strategy: {blueGreen: {activeService: a}}",
        ] {
            let reads = memos.reads_for_placing(&parse(cached), now);
            assert!(
                reads.is_some_and(|r| r.ingresses.is_empty() && r.templates.is_empty()),
                "the caches hold all of it: {cached}"
            );
        }
        let template = |name: &str| ((false, name.to_string()), Default::default());
        for names in [
            "strategy: {canary: {steps: [{analysis: {templates: [{templateName: t}]}}]}}",
            "strategy: {canary: {analysis: {templates: [{templateName: t}]}}}",
            "strategy: {canary: {trafficRouting: {nginx: {stableIngress: i}}}}",
        ] {
            let mut ro = parse(names);
            assert!(memos.reads_for_placing(&ro, now).is_none(), "{names}");
            let reads = Reads {
                templates: Templates::from([template("t")]),
                ..Default::default()
            };
            memos.remember_reads(&ro, Some(reads));
            let placed = memos.reads_for_placing(&ro, now);
            assert_eq!(placed.map(|r| r.templates.len()), Some(1), "{names}");
            ro.metadata.generation = Some(2);
            assert!(
                memos.reads_for_placing(&ro, now).is_none(),
                "read for the spec before: {names}"
            );
            memos.remember_reads(&ro, None);
            assert!(lock(&memos.0).is_empty(), "forgotten: {names}");
        }
        // Read afresh, whatever was kept: a workloadRef's Deployment, and
        // the pods of a pending restart.
        let workload = parse(
            "workloadRef: {apiVersion: apps/v1, kind: Deployment, name: d}\nstrategy: {canary: {}}",
        );
        memos.remember_reads(&workload, Some(Reads::default()));
        assert!(memos.reads_for_placing(&workload, now).is_none());
        let mut restart = parse(basic);
        restart.spec.restart_at = Some(Time(now));
        assert!(memos.reads_for_placing(&restart, now).is_none());
        // A refusal is kept apart from the reads.
        memos.remember_rejected(&workload, Some(("h".into(), "no".into())));
        memos.remember_reads(&workload, None);
        assert_eq!(memos.rejected(&workload), Some(("h".into(), "no".into())));
        memos.remember_rejected(&workload, None);
        assert!(lock(&memos.0).is_empty());
    }

    #[test]
    fn a_change_wakes_only_the_rollouts_that_name_it_or_a_template_nesting_it() {
        use crate::api::common::AnalysisTemplateRef;
        use crate::api::rollout::{
            CanaryStrategy, ObjectRef as WorkloadRef, RolloutAnalysis, RolloutAnalysisBackground,
        };
        let tref = |name: &str, cluster_scope: bool| AnalysisTemplateRef {
            template_name: name.into(),
            cluster_scope: Some(cluster_scope),
        };
        let rollout = |ns: &str, name: &str, deployment: Option<&str>, template: Option<&str>| {
            let mut ro = Rollout::new(name, Default::default());
            ro.metadata.namespace = Some(ns.into());
            ro.spec.workload_ref = deployment.map(|d| WorkloadRef {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(d.into()),
                scale_down: None,
            });
            ro.spec.strategy.canary = Some(CanaryStrategy {
                analysis: template.map(|t| RolloutAnalysisBackground {
                    analysis: RolloutAnalysis {
                        templates: vec![tref(t, false)],
                        ..Default::default()
                    },
                    starting_step: None,
                }),
                ..Default::default()
            });
            ro
        };
        let deployment = |ns: &str, name: &str| {
            let mut d = PartialObjectMeta::<Deployment>::default();
            d.metadata.namespace = Some(ns.into());
            d.metadata.name = Some(name.into());
            d
        };
        let template = |name: &str, nested: Vec<AnalysisTemplateRef>| {
            let mut t = AnalysisTemplate::new(name, Default::default());
            t.metadata.namespace = Some("a".into());
            t.spec.templates = nested;
            t
        };
        let (store, mut writer) = reflector::store::<Rollout>();
        let (templates, mut template_writer) = reflector::store::<AnalysisTemplate>();
        let referrers = Referrers {
            by_reference: Index::by_each(references::of_rollout),
            rollouts: store,
            templates,
            templates_by_nested: Index::by_each(references::of_analysis_template),
            cluster_templates: reflector::store().0,
            cluster_templates_by_nested: Index::by_each(references::of_cluster_analysis_template),
        };
        let mut feed = |ev: watcher::Event<Rollout>| {
            referrers.by_reference.apply(&ev);
            writer.apply_watcher_event(&ev);
        };
        feed(watcher::Event::Apply(rollout(
            "a",
            "one",
            Some("web"),
            None,
        )));
        feed(watcher::Event::Apply(rollout(
            "a",
            "two",
            Some("web"),
            Some("outer"),
        )));
        feed(watcher::Event::Apply(rollout(
            "b",
            "three",
            Some("web"),
            None,
        )));
        feed(watcher::Event::Apply(rollout(
            "a",
            "inline",
            None,
            Some("inner"),
        )));
        for t in [
            template("outer", vec![tref("middle", false)]),
            template("middle", vec![tref("inner", false), tref("shared", true)]),
        ] {
            let ev = watcher::Event::Apply(t);
            referrers.templates_by_nested.apply(&ev);
            template_writer.apply_watcher_event(&ev);
        }
        let woken = |key: String| {
            let mut names: Vec<String> = referrers
                .of(key)
                .into_iter()
                .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
                .collect();
            names.sort();
            names
        };
        let deployment_key = |ns, name| references::key_of(&deployment(ns, name));
        assert_eq!(woken(deployment_key("a", "web")), ["a/one", "a/two"]);
        assert_eq!(woken(deployment_key("b", "web")), ["b/three"]);
        assert!(woken(deployment_key("a", "other")).is_empty());
        // Named directly, or nested two levels down.
        let template_key = |name| references::key("AnalysisTemplate", Some("a"), name);
        assert_eq!(woken(template_key("outer")), ["a/two"]);
        assert_eq!(woken(template_key("inner")), ["a/inline", "a/two"]);
        let shared = references::key("ClusterAnalysisTemplate", None, "shared");
        assert_eq!(woken(shared), ["a/two"]);

        // A Rollout that points elsewhere is no longer woken by the old one.
        feed(watcher::Event::Apply(rollout(
            "a",
            "two",
            Some("api"),
            None,
        )));
        assert_eq!(woken(deployment_key("a", "web")), ["a/one"]);
        assert_eq!(woken(deployment_key("a", "api")), ["a/two"]);
        assert_eq!(woken(template_key("inner")), ["a/inline"]);
    }

    #[test]
    fn ahead_forgets_rollouts_that_are_gone() {
        let ahead = Ahead::default();
        for uid in ["a", "b", "c"] {
            wrote(&ahead, uid, "1", &["2"]);
        }
        ahead.forget("a");
        ahead.retain(&["b".to_string()].into_iter().collect());
        assert!(!ahead.is_behind("a", "a", Some("1"), 0));
        assert!(ahead.is_behind("b", "b", Some("1"), 0));
        assert!(!ahead.is_behind("c", "c", Some("1"), 0));
        assert_eq!(lock(&ahead.0).len(), 1);
    }
}
