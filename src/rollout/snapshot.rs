//! What one reconcile observes of a Rollout: the object, the ReplicaSets it
//! controls, the Services it names, the Deployment its workloadRef names
//! and (only while a restart is pending) its pods. Built by the shell; the
//! planner reads nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;

use crate::analysis::template::Templates;
use crate::api::Rollout;
use crate::api::analysis::AnalysisRun;
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, pod_template_hash, pod_template_hashes};
use crate::traffic::nginx::{canary_ingress_name, stable_ingresses};

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub rollout: Rollout,
    /// ReplicaSets whose controller owner reference is this Rollout.
    pub replica_sets: Vec<ReplicaSet>,
    /// The Services the spec names, by name; a missing name was not found.
    pub services: BTreeMap<String, Service>,
    /// Pods matching the Rollout's selector; listed only while a restart
    /// (spec.restartAt) is pending, empty otherwise.
    pub pods: Vec<Pod>,
    /// AnalysisRuns whose controller owner reference is this Rollout.
    pub analysis_runs: Vec<AnalysisRun>,
    /// The analysis templates the spec refers to (nested ones included);
    /// a missing reference was not found.
    pub templates: Templates,
    /// Ingresses by name: the stable Ingresses the nginx routing names and
    /// their canary Ingresses (a missing name was not found), plus, after
    /// traffic routing was taken out of the spec, the canary Ingresses
    /// this Rollout still owns.
    pub ingresses: BTreeMap<String, Ingress>,
    /// The Deployment `spec.workloadRef` names (None: no reference, or the
    /// Deployment was not found).
    pub workload: Option<Deployment>,
    /// A pod-template hash whose ReplicaSet the API server refused to
    /// create, with its reason (see [`Snapshot::with_rejected`]).
    pub rejected: Option<(String, String)>,
    /// A template no hash names, and the hash of the ReplicaSet whose
    /// template is the same one (see [`Snapshot::with_template_twin`]).
    pub template_twin: Option<(String, String)>,
}

impl Snapshot {
    /// The Rollout's ReplicaSet for a pod-template hash.
    pub fn replica_set(&self, hash: Option<&str>) -> Option<&ReplicaSet> {
        let hash = hash?;
        self.replica_sets
            .iter()
            .find(|rs| rs.pod_hash() == Some(hash))
    }

    /// The pod-template hash of `template`: that of its ReplicaSet if one
    /// exists under any hash it may carry (upstream's, an older upstream's,
    /// this controller's before it matched upstream), else upstream's, for
    /// the ReplicaSet to create. See `hash::pod_template_hashes`.
    pub fn pod_hash(&self, template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
        // Every reconcile asks: the usual answer (the ReplicaSet exists
        // under upstream's hash) costs one encoding, the older hashes are
        // computed only when it does not.
        let current = pod_template_hash(template, collision_count);
        if self.replica_set(Some(&current)).is_some() || self.replica_sets.is_empty() {
            return current;
        }
        pod_template_hashes(template, collision_count)
            .into_iter()
            .find(|h| self.replica_set(Some(h)).is_some())
            .or_else(|| {
                let (of, twin) = self.template_twin.as_ref()?;
                (*of == current && self.replica_set(Some(twin)).is_some()).then(|| twin.clone())
            })
            .unwrap_or(current)
    }

    /// Keeps only the ReplicaSets controlled by `rollout` (by owner UID).
    pub fn new(rollout: Rollout, candidates: impl IntoIterator<Item = ReplicaSet>) -> Self {
        let replica_sets = owned(&rollout, candidates);
        Snapshot {
            rollout,
            replica_sets,
            services: BTreeMap::new(),
            pods: Vec::new(),
            analysis_runs: Vec::new(),
            templates: Templates::new(),
            ingresses: BTreeMap::new(),
            workload: None,
            rejected: None,
            template_twin: None,
        }
    }

    /// The API server refused to create the ReplicaSet of the template
    /// with this hash (400 or 422: a pod template it finds invalid, such
    /// as a malformed quantity or no containers), and why. The controller
    /// remembers the answer so that the planner reports it as InvalidSpec
    /// instead of asking again at every reconcile; a changed template has
    /// another hash and is tried afresh.
    pub fn with_rejected(mut self, rejected: Option<(String, String)>) -> Self {
        self.rejected = rejected;
        self
    }

    /// The template whose hash is `.0` is the template of the ReplicaSet
    /// with hash `.1`, by comparison with the API server's defaults applied
    /// (`crate::rollout::template_match`): an undo copied that ReplicaSet's
    /// template back, and the Rollout goes back to it instead of making a
    /// new one.
    pub fn with_template_twin(mut self, twin: Option<(String, String)>) -> Self {
        self.template_twin = twin;
        self
    }

    /// The Deployment `spec.workloadRef` names, as read.
    pub fn with_workload(mut self, workload: Option<Deployment>) -> Self {
        self.workload = workload;
        self
    }

    /// Keeps only the runs controlled by the Rollout (by owner UID).
    pub fn with_analysis(
        mut self,
        runs: impl IntoIterator<Item = AnalysisRun>,
        templates: Templates,
    ) -> Self {
        self.analysis_runs = owned(&self.rollout, runs);
        self.templates = templates;
        self
    }

    /// Names of the Services the spec refers to (stable and canary).
    pub fn service_names(rollout: &Rollout) -> Vec<String> {
        Self::service_fields(rollout)
            .into_iter()
            .map(|(_, name)| name)
            .collect()
    }

    /// The Services the strategy names, with the field naming each.
    pub fn service_fields(rollout: &Rollout) -> Vec<(&'static str, String)> {
        let strategy = &rollout.spec.strategy;
        let named = if let Some(bg) = strategy.blue_green.as_ref() {
            vec![
                ("blueGreen.activeService", Some(&bg.active_service)),
                ("blueGreen.previewService", bg.preview_service.as_ref()),
            ]
        } else if let Some(c) = strategy.canary.as_ref() {
            vec![
                ("canary.stableService", c.stable_service.as_ref()),
                ("canary.canaryService", c.canary_service.as_ref()),
            ]
        } else {
            vec![]
        };
        named
            .into_iter()
            .filter_map(|(field, name)| Some((field, name?.clone())))
            .filter(|(_, n)| !n.is_empty())
            .collect()
    }

    pub fn with_services(mut self, services: impl IntoIterator<Item = Service>) -> Self {
        self.services = services
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        self
    }

    pub fn with_pods(mut self, pods: Vec<Pod>) -> Self {
        self.pods = pods;
        self
    }

    /// Names of the Ingresses to read: each stable Ingress the nginx
    /// routing names, and its canary Ingress.
    pub fn ingress_names(rollout: &Rollout) -> Vec<String> {
        let Some(nginx) = rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.traffic_routing.as_ref())
            .and_then(|t| t.nginx.as_ref())
        else {
            return vec![];
        };
        let name = rollout.name_any();
        stable_ingresses(nginx)
            .into_iter()
            .flat_map(|s| [canary_ingress_name(&name, &s), s])
            .collect()
    }

    /// Does the Rollout need the canary Ingresses it owns listed? Only when
    /// it recorded traffic weights but no longer routes traffic, so the
    /// leftovers can be deleted.
    pub fn needs_owned_ingresses(rollout: &Rollout) -> bool {
        let routed = rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .is_some_and(|c| c.traffic_routing.is_some());
        let weighted = rollout
            .status
            .as_ref()
            .is_some_and(|s| s.canary.weights.is_some());
        weighted && !routed
    }

    /// Keeps the named Ingresses, and of the others those this Rollout
    /// controls.
    pub fn with_ingresses(mut self, ingresses: impl IntoIterator<Item = Ingress>) -> Self {
        let named = Self::ingress_names(&self.rollout);
        let (named, others): (Vec<Ingress>, Vec<Ingress>) = ingresses
            .into_iter()
            .partition(|i| named.contains(&i.name_any()));
        self.ingresses = named
            .into_iter()
            .chain(owned(&self.rollout, others))
            .map(|i| (i.name_any(), i))
            .collect();
        self
    }
}

/// The objects whose controller owner reference is `rollout`.
fn owned<K: ResourceExt>(rollout: &Rollout, candidates: impl IntoIterator<Item = K>) -> Vec<K> {
    let uid = rollout.metadata.uid.as_ref();
    candidates
        .into_iter()
        .filter(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && Some(&r.uid) == uid)
        })
        .collect()
}

/// Accessors for the few ReplicaSet fields the planner reads.
pub trait ReplicaSetExt {
    fn pod_hash(&self) -> Option<&str>;
    fn spec_replicas(&self) -> i32;
    fn status_replicas(&self) -> i32;
    fn ready(&self) -> i32;
    fn available(&self) -> i32;
    fn revision(&self) -> i64;
}

pub const REVISION_ANNOTATION: &str = "rollout.argoproj.io/revision";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "rollout.argoproj.io/desired-replicas";
/// Set on a Service when a Rollout first takes over its selector.
pub const MANAGED_BY_ANNOTATION: &str = "argo-rollouts.argoproj.io/managed-by-rollouts";

impl ReplicaSetExt for ReplicaSet {
    fn pod_hash(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()?
            .get(POD_TEMPLATE_HASH_LABEL)
            .map(String::as_str)
    }
    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn status_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.replicas)
    }
    fn ready(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
    fn available(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    }
    fn revision(&self) -> i64 {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }
}
