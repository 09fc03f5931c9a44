//! The Rollout controller's caches: what each watch keeps of its objects
//! (the `slim_*` functions: only what the planner reads), and the lookups a
//! reconcile makes in them, by the indexes kept beside the stores.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{Error, RolloutKey};
use crate::analysis::template::{self, TemplateKey, Templates};
use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisRun, AnalysisTemplate, AnalysisTemplateSpec, ClusterAnalysisTemplate,
};
use crate::controller::index::Index;
use crate::controller::is_synced;
use crate::controller::listed::Listed;
use crate::rollout::plan::analysis as gates;
use crate::rollout::references;
use crate::rollout::snapshot::{MANAGED_BY_ANNOTATION, Snapshot};

/// How long a reconcile waits for the caches' first lists.
const CACHE_SYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// The stores the watches fill, and their indexes.
#[derive(Clone)]
pub(super) struct Caches {
    pub rollouts: Store<Rollout>,
    pub replica_sets: Store<ReplicaSet>,
    pub replica_sets_by_owner: Index<ReplicaSet>,
    pub analysis_runs: Store<AnalysisRun>,
    pub runs_by_owner: Index<AnalysisRun>,
    /// Services, slimmed to what the planner reads (`slim_service`).
    pub services: Store<Service>,
    /// The Services by the Rollout their managed-by annotation names.
    pub services_by_manager: Index<Service>,
    pub ingresses: Store<Ingress>,
    pub ingresses_by_owner: Index<Ingress>,
    pub templates: Store<AnalysisTemplate>,
    /// None when not watched: a namespaced controller (its Role cannot
    /// grant cluster-scoped reads) reads the few it is asked for by name.
    pub cluster_templates: Option<Store<ClusterAnalysisTemplate>>,
    /// All of the above (but the Rollouts) have listed once (`all_listed`).
    pub listed: Listed,
}

impl Caches {
    /// Waits until every cache a snapshot is built from has listed once.
    /// Planning before would take a rollout in progress for an initial
    /// deploy (no ReplicaSets yet) or a missing Ingress for an invalid spec.
    pub async fn synced(&self) -> Result<(), Error> {
        if self.listed.within(CACHE_SYNC).await {
            return Ok(());
        }
        let mut caches = vec![
            ("ReplicaSets", is_synced(&self.replica_sets)),
            ("AnalysisRuns", is_synced(&self.analysis_runs)),
            ("Services", is_synced(&self.services)),
            ("Ingresses", is_synced(&self.ingresses)),
            ("AnalysisTemplates", is_synced(&self.templates)),
        ];
        if let Some(cluster) = &self.cluster_templates {
            caches.push(("ClusterAnalysisTemplates", is_synced(cluster)));
        }
        let cache = caches
            .iter()
            .find(|(_, synced)| !synced)
            .map_or("", |c| c.0);
        Err(Error::CacheNotReady { cache })
    }

    /// What `synced` waits for: one wait shared by every reconcile.
    pub fn all_listed(&self) -> Listed {
        let mut stores = vec![
            Listed::store(&self.replica_sets),
            Listed::store(&self.analysis_runs),
            Listed::store(&self.services),
            Listed::store(&self.ingresses),
            Listed::store(&self.templates),
        ];
        stores.extend(self.cluster_templates.as_ref().map(Listed::store));
        Listed::all(stores)
    }

    /// The cached ReplicaSets the Rollout with this UID controls.
    pub fn replica_sets(&self, uid: &str) -> Vec<ReplicaSet> {
        let owned = self.replica_sets_by_owner.group(&self.replica_sets, uid);
        owned.iter().map(|rs| (**rs).clone()).collect()
    }

    /// The cached AnalysisRuns the Rollout with this UID controls.
    pub fn runs(&self, uid: &str) -> Vec<AnalysisRun> {
        let owned = self.runs_by_owner.group(&self.analysis_runs, uid);
        owned.iter().map(|r| (**r).clone()).collect()
    }

    /// The cached Services the Rollout names (one not cached is left out),
    /// and those it manages (which the planner hands back once the spec no
    /// longer names them).
    pub fn services(&self, ro: &Rollout) -> Vec<Service> {
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

    /// The Ingresses the nginx routing names (stable and canary) and, once
    /// the routing was taken out of the spec, those the Rollout controls
    /// (its canary Ingresses, which the planner deletes).
    pub fn ingresses(&self, ro: &Rollout) -> Vec<Ingress> {
        let ns = ro.namespace().unwrap_or_default();
        let named = Snapshot::ingress_names(ro)
            .into_iter()
            .filter_map(|name| self.ingresses.get(&ObjectRef::new(&name).within(&ns)));
        let owned = match Snapshot::needs_owned_ingresses(ro) {
            true => (self.ingresses_by_owner).group(&self.ingresses, &ro.uid().unwrap_or_default()),
            false => vec![],
        };
        let mut out: Vec<Ingress> = named.chain(owned).map(|i| (*i).clone()).collect();
        out.sort_by_key(|i| i.metadata.name.clone());
        out.dedup_by_key(|i| i.metadata.name.clone());
        out
    }

    /// The analysis templates the Rollout's analyses refer to, nested ones
    /// included, from the caches; missing ones are left out (the planner
    /// reports them). Also the ClusterAnalysisTemplates it names that no
    /// cache holds (see `cluster_templates`), for the caller to read.
    pub fn templates(&self, ro: &Rollout) -> (Templates, Vec<String>) {
        let ns = ro.namespace().unwrap_or_default();
        resolve_templates(ro, |key| self.template(&ns, key))
    }

    /// One template by reference, from the caches (None: not found).
    pub fn template(&self, ns: &str, (cluster, name): &TemplateKey) -> Option<Lookup> {
        if !*cluster {
            let t = self.templates.get(&ObjectRef::new(name).within(ns))?;
            return Some(Lookup::Found(t.spec.clone()));
        }
        match &self.cluster_templates {
            Some(store) => {
                let t = store.get(&ObjectRef::new(name))?;
                Some(Lookup::Found(t.spec.template.clone()))
            }
            None => Some(Lookup::NotCached),
        }
    }
}

/// What a template lookup found.
pub(super) enum Lookup {
    Found(AnalysisTemplateSpec),
    /// A ClusterAnalysisTemplate, and no cache of them.
    NotCached,
}

/// Follows the Rollout's template references, nested ones included, with
/// `lookup` (None: not found); returns the templates found and the names of
/// the ClusterAnalysisTemplates `lookup` could not tell about.
pub(super) fn resolve_templates(
    ro: &Rollout,
    mut lookup: impl FnMut(&TemplateKey) -> Option<Lookup>,
) -> (Templates, Vec<String>) {
    let refs: Vec<_> = gates::analyses(ro)
        .into_iter()
        .flat_map(|(_, a)| a.templates.clone())
        .collect();
    let mut templates = Templates::new();
    let mut not_cached = Vec::new();
    let mut tried = std::collections::BTreeSet::new();
    loop {
        let todo: Vec<TemplateKey> = template::wanted(&refs, &templates)
            .into_iter()
            .filter(|k| !tried.contains(k))
            .collect();
        if todo.is_empty() {
            return (templates, not_cached);
        }
        for key in todo {
            tried.insert(key.clone());
            match lookup(&key) {
                Some(Lookup::Found(spec)) => {
                    templates.insert(key, spec);
                }
                Some(Lookup::NotCached) => not_cached.push(key.1.clone()),
                None => {}
            }
        }
    }
}

/// What kube-runtime's runner holds of a Rollout, as the key of the full one.
pub(super) fn rollout_ref(key: &RolloutKey) -> ObjectRef<Rollout> {
    let r = ObjectRef::new(&key.name_any());
    match key.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// What a cached Rollout can do without: managedFields and kubectl's copy
/// of the last applied spec, never read and often the bulk of the object.
pub(super) fn slim_rollout(ro: &mut Rollout) {
    ro.managed_fields_mut().clear();
    ro.annotations_mut().remove(LAST_APPLIED);
}

/// The planner reads a ReplicaSet's counts, labels, annotations, owners
/// and its template's metadata, never the pod spec: the cache drops it and
/// managedFields (with 10,000 Rollouts they are most of the memory).
pub(super) fn slim_replica_set(rs: &mut ReplicaSet) {
    rs.managed_fields_mut().clear();
    if let Some(template) = rs.spec.as_mut().and_then(|s| s.template.as_mut()) {
        template.spec = None;
    }
}

/// The cache holds every Ingress of the watched namespaces: it keeps what
/// the nginx routing reads (rules, TLS, class, annotations, owners), not
/// managedFields, kubectl's last applied copy or the load balancer status.
pub(super) fn slim_ingress(ingress: &mut Ingress) {
    ingress.managed_fields_mut().clear();
    ingress.annotations_mut().remove(LAST_APPLIED);
    ingress.status = None;
}

/// Templates are few and read whole (metrics, args, dry-run rules); only
/// managedFields and the last applied copy go.
pub(super) fn slim_template<K: ResourceExt>(t: &mut K) {
    t.managed_fields_mut().clear();
    t.annotations_mut().remove(LAST_APPLIED);
}

/// The Rollout a Service's managed-by annotation names (set when the
/// Rollout first switches the Service's selector).
pub(super) fn managing_rollout(svc: &Service) -> Option<ObjectRef<RolloutKey>> {
    let name = svc.annotations().get(MANAGED_BY_ANNOTATION)?;
    Some(ObjectRef::new(name).within(&svc.namespace()?))
}

/// The planner reads a Service's name, selector and managed-by annotation;
/// the cache keeps those and the identity (uid, version), nothing else:
/// it holds every Service in the watched namespaces, not only ours.
pub(super) fn slim_service(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    let annotations = meta.annotations.and_then(|mut a| {
        let managed_by = a.remove_entry(MANAGED_BY_ANNOTATION)?;
        Some(BTreeMap::from([managed_by]))
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

pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Rollout a Service's managed-by annotation names, as an index key.
pub(super) fn manager_key(svc: &Service) -> Option<String> {
    let rollout = svc.annotations().get(MANAGED_BY_ANNOTATION)?;
    Some(object_key(&svc.namespace()?, rollout))
}

pub(super) fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Finds the Rollouts that name an object, or a template nesting it.
#[derive(Clone)]
pub(super) struct Referrers {
    pub by_reference: Index<Rollout>,
    pub rollouts: Store<Rollout>,
    pub templates: Store<AnalysisTemplate>,
    pub templates_by_nested: Index<AnalysisTemplate>,
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
    pub cluster_templates_by_nested: Index<ClusterAnalysisTemplate>,
}

impl Referrers {
    /// A watch mapper: the Rollouts to reconcile for an object of kind K.
    pub fn waker<K: kube::Resource<DynamicType = ()>>(
        &self,
    ) -> impl Fn(K) -> Vec<ObjectRef<RolloutKey>> + use<K> {
        let referrers = self.clone();
        move |obj| referrers.of(references::key_of(&obj))
    }

    /// The Rollouts to reconcile when the object with this key
    /// (`references::key`) appears or changes.
    pub fn of(&self, key: String) -> Vec<ObjectRef<RolloutKey>> {
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
