//! An in-memory cluster that carries out plans: the one simulator of the
//! planner's tests, `kubectl rollouts plan` (`cli/plan_table.rs`) and the
//! fuzz targets (`fuzzing.rs`).
//!
//! [`Sim`] holds what a reconcile reads (the Rollout, its ReplicaSets,
//! Services, Ingresses, AnalysisRuns, analysis templates, the `workloadRef`
//! Deployment) and plays the parts around the planner:
//! - the API server: [`Sim::apply`] carries out every [`Action`] as
//!   `apply.rs` asks the API server to, then writes the status;
//! - the ReplicaSet controller and the kubelet: [`Sim::tick`] moves the
//!   clock a second, removes the pods a ReplicaSet no longer wants and makes
//!   the pods it asked for available a tick later (except those of the
//!   `broken` and `capped` hashes);
//! - the analysis controller, if `runs_succeed`: at each tick every
//!   unfinished run that was not terminated succeeds. Otherwise runs end only
//!   when a test says so.
//!
//! No replica or weight arithmetic is done here: every number is the
//! planner's. A plan the cluster cannot carry out (an action on an object
//! that does not exist, a pod to evict: restarts are simulated with pods in
//! `restart.rs`'s tests) is an error, never a panic: the plugin runs this on
//! a user's file.
//!
//! It depends on the planner, the API types and the generic merge patch
//! (`controller::patch`), not on the Rollout controller's shell or the CLI.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::analysis::template::{Templates, key};
use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, AnalysisTemplateSpec, Metric, MetricProvider,
    WebMetric,
};
use crate::api::rollout::{RolloutPhase, RolloutStatus};
use crate::controller::patch::merge_patch;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::events::Event;
use crate::rollout::plan::replica_set::{
    EPHEMERAL_METADATA_ANNOTATION, SCALE_DOWN_DEADLINE_ANNOTATION,
};
use crate::rollout::plan::workload::{self, WORKLOAD_GENERATION_ANNOTATION};
use crate::rollout::plan::{Action, Plan, analysis, plan, status};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, REVISION_ANNOTATION, ReplicaSetExt,
    Snapshot,
};
use crate::traffic::nginx;

/// The simulated clock starts here (seconds since the epoch).
pub const START: i64 = 1_700_000_000;

/// The annotation [`Sim::update`] puts on the pod template.
pub const UPDATE_ANNOTATION: &str = "rollouts.plan/update";

/// A plan the simulated cluster cannot carry out.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("planned {kind} {name} does not exist")]
    Missing { kind: &'static str, name: String },
    #[error("planned {kind} {name} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("unexpected eviction of pod {0}")]
    Eviction(String),
    #[error("Deployment {name} scaled from {from} but it has {has:?} replicas")]
    StaleScale {
        name: String,
        from: i32,
        has: Option<i32>,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
}

/// The cluster as the planner sees it, and the rules that move it. The
/// fields are public: a test sets up a scene or plays a user's write by
/// changing them between reconciles.
#[derive(Clone, Debug)]
pub struct Sim {
    pub ro: Rollout,
    pub replica_sets: Vec<ReplicaSet>,
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    pub runs: Vec<AnalysisRun>,
    pub templates: Templates,
    /// The Deployment a workloadRef names.
    pub deployment: Option<Deployment>,
    /// What the shell's template comparison found (`template_match`).
    pub template_twin: Option<(String, String)>,
    /// Seconds since the epoch.
    pub now: i64,
    /// Every event the plans published, oldest first.
    pub events: Vec<Event>,
    /// Pod hashes whose pods never become available.
    pub broken: Vec<String>,
    /// Pod hashes of which at most this many pods become available.
    pub capped: Vec<(String, i32)>,
    /// Whether the analysis controller ends every run at the next tick,
    /// Successful (else a run ends when a test sets its status).
    pub runs_succeed: bool,
}

impl Sim {
    /// The Rollout alone, as written: nothing else exists yet.
    pub fn new(ro: Rollout) -> Self {
        Sim {
            ro,
            replica_sets: vec![],
            services: vec![],
            ingresses: vec![],
            runs: vec![],
            templates: Templates::new(),
            deployment: None,
            template_twin: None,
            now: START,
            events: vec![],
            broken: vec![],
            capped: vec![],
            runs_succeed: false,
        }
    }

    /// The Rollout (its status dropped, at generation 1, with a namespace,
    /// name and uid) with what its spec names: its Services, for nginx
    /// routing a stable Ingress per stableIngress with a rule for the
    /// stable Service, each referenced analysis template with one metric,
    /// and a stand-in for a workloadRef's Deployment; every run succeeds.
    /// For a walk through an update of a Rollout read from a file.
    pub fn with_references(mut ro: Rollout) -> Self {
        let namespace = ro
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into())
            .clone();
        ro.metadata.name.get_or_insert_with(|| "rollout".into());
        ro.metadata.uid = Some("plan-uid".into());
        ro.metadata.generation = Some(1);
        ro.status = None;
        let meta = |name: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        };
        let services = Snapshot::service_names(&ro)
            .iter()
            .map(|n| Service {
                metadata: meta(n),
                ..Default::default()
            })
            .collect();
        let canary = ro.spec.strategy.canary.as_ref();
        let stable_service = canary
            .and_then(|c| c.stable_service.clone())
            .unwrap_or_default();
        let ingresses = canary
            .and_then(|c| c.traffic_routing.as_ref())
            .and_then(|t| t.nginx.as_ref())
            .map(nginx::stable_ingresses)
            .unwrap_or_default()
            .iter()
            .map(|n| Ingress {
                metadata: meta(n),
                spec: Some(IngressSpec {
                    rules: Some(vec![rule_for(&stable_service)]),
                    ..Default::default()
                }),
                status: None,
            })
            .collect();
        let templates = analysis::analyses(&ro)
            .into_iter()
            .flat_map(|(_, a)| a.templates.iter().map(key))
            .map(|k| (k, trivial_template()))
            .collect();
        let deployment = workload::deployment_name(&ro).map(|name| stand_in(&ro, meta(name)));
        Sim {
            services,
            ingresses,
            templates,
            deployment,
            runs_succeed: true,
            ..Sim::new(ro)
        }
    }

    /// What a reconcile reads.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.ro.clone(), self.replica_sets.clone())
            .with_services(self.services.clone())
            .with_analysis(self.runs.clone(), self.templates.clone())
            .with_ingresses(self.ingresses.clone())
            .with_workload(self.deployment.clone())
            .with_template_twin(self.template_twin.clone())
    }

    pub fn time(&self) -> Timestamp {
        Timestamp::from_second(self.now).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The plan of a reconcile now, not applied.
    pub fn plan(&self) -> Plan {
        plan(&self.snapshot(), self.time())
    }

    /// One reconcile: plan, then [`apply`](Sim::apply) the plan.
    pub fn try_reconcile(&mut self) -> Result<Plan, SimError> {
        let p = self.plan();
        self.apply(&p)?;
        Ok(p)
    }

    /// Carries out the plan's actions in order, then writes its status and
    /// publishes its events. Stops at the first action that cannot be
    /// carried out.
    pub fn apply(&mut self, p: &Plan) -> Result<(), SimError> {
        for action in &p.actions {
            self.act(action)?;
        }
        self.ro.status = Some(p.status.clone());
        self.events.extend(p.events.iter().cloned());
        Ok(())
    }

    /// One action, as the API server would carry out `apply.rs`'s request.
    /// A `match` without a wildcard: a new action must be simulated here.
    fn act(&mut self, action: &Action) -> Result<(), SimError> {
        match action {
            Action::CreateReplicaSet(rs) => {
                let mut rs = (**rs).clone();
                rs.metadata.creation_timestamp = Some(Time(self.time()));
                self.replica_sets.push(rs);
            }
            Action::ScaleReplicaSet {
                name,
                to,
                desired_replicas,
                clear_deadline,
                ..
            } => {
                let rs = self.replica_set_mut(name)?;
                rs.spec.get_or_insert_with(Default::default).replicas = Some(*to);
                annotate(
                    &mut rs.metadata,
                    DESIRED_REPLICAS_ANNOTATION,
                    Some(desired_replicas.to_string()),
                );
                if *clear_deadline {
                    annotate(&mut rs.metadata, SCALE_DOWN_DEADLINE_ANNOTATION, None);
                }
            }
            Action::SetReplicaSetRevision { name, revision } => {
                let rs = self.replica_set_mut(name)?;
                annotate(
                    &mut rs.metadata,
                    REVISION_ANNOTATION,
                    Some(revision.to_string()),
                );
            }
            Action::SetReplicaSetAnnotations { name, annotations } => {
                let rs = self.replica_set_mut(name)?;
                for (k, v) in annotations {
                    annotate(&mut rs.metadata, k, Some(v.clone()));
                }
            }
            Action::SetMinReadySeconds { name, seconds } => {
                let rs = self.replica_set_mut(name)?;
                rs.spec
                    .get_or_insert_with(Default::default)
                    .min_ready_seconds = Some(*seconds);
            }
            Action::DeleteReplicaSet { name } => {
                self.replica_sets
                    .retain(|r| r.metadata.name.as_deref() != Some(name));
            }
            Action::SetScaleDownDeadline { name, deadline } => {
                let rs = self.replica_set_mut(name)?;
                annotate(
                    &mut rs.metadata,
                    SCALE_DOWN_DEADLINE_ANNOTATION,
                    deadline.clone(),
                );
            }
            // The ReplicaSet's pod template and its record; the running
            // pods change no number the planner reads.
            Action::SetPodMetadata {
                replica_set,
                wanted,
                previous,
                ..
            } => {
                let record = serde_json::to_string(wanted).map_err(|source| SimError::Json {
                    what: format!("ephemeral metadata of ReplicaSet {replica_set}"),
                    source,
                })?;
                let rs = self.replica_set_mut(replica_set)?;
                let meta = rs
                    .spec
                    .get_or_insert_with(Default::default)
                    .template
                    .get_or_insert_with(Default::default)
                    .metadata
                    .get_or_insert_with(Default::default);
                let labels = meta.labels.get_or_insert_with(Default::default);
                for k in previous.iter().flat_map(|p| p.labels.iter().flatten()) {
                    labels.remove(k.0);
                }
                labels.extend(
                    wanted
                        .iter()
                        .flat_map(|w| w.labels.clone().unwrap_or_default()),
                );
                let value = wanted.is_some().then_some(record);
                annotate(&mut rs.metadata, EPHEMERAL_METADATA_ANNOTATION, value);
            }
            Action::EvictPod { name } => return Err(SimError::Eviction(name.clone())),
            Action::SetRolloutRevision { revision } => annotate(
                &mut self.ro.metadata,
                REVISION_ANNOTATION,
                Some(revision.to_string()),
            ),
            Action::SetServiceSelector {
                name, hash, adopt, ..
            } => {
                let owner = self.ro.metadata.name.clone().unwrap_or_default();
                let svc = self.service_mut(name)?;
                svc.spec
                    .get_or_insert_with(Default::default)
                    .selector
                    .get_or_insert_with(Default::default)
                    .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
                if *adopt {
                    annotate(&mut svc.metadata, MANAGED_BY_ANNOTATION, Some(owner));
                }
            }
            Action::ReleaseService { name } => {
                let svc = self.service_mut(name)?;
                if let Some(sel) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
                    sel.remove(POD_TEMPLATE_HASH_LABEL);
                }
                if let Some(a) = svc.metadata.annotations.as_mut() {
                    a.remove(MANAGED_BY_ANNOTATION);
                }
            }
            Action::CreateIngress(ingress) => {
                let name = ingress.metadata.name.clone().unwrap_or_default();
                if self.ingress(&name).is_some() {
                    return Err(SimError::Exists {
                        kind: "Ingress",
                        name,
                    });
                }
                self.ingresses.push((**ingress).clone());
            }
            Action::PatchIngress { name, patch } => {
                let json = |source| SimError::Json {
                    what: format!("patched Ingress {name}"),
                    source,
                };
                let ingress = self
                    .ingresses
                    .iter_mut()
                    .find(|i| i.metadata.name.as_deref() == Some(name))
                    .ok_or_else(|| missing("Ingress", name))?;
                let mut value = serde_json::to_value(&*ingress).map_err(json)?;
                merge_patch(&mut value, patch);
                *ingress = serde_json::from_value(value).map_err(json)?;
            }
            Action::DeleteIngress { name } => {
                self.ingresses
                    .retain(|i| i.metadata.name.as_deref() != Some(name));
            }
            Action::CreateAnalysisRun(run) => {
                let mut run = (**run).clone();
                run.metadata.creation_timestamp = Some(Time(self.time()));
                self.runs.push(run);
            }
            Action::TerminateAnalysisRun { name } => {
                self.run_mut(name)
                    .ok_or_else(|| missing("AnalysisRun", name))?
                    .spec
                    .terminate = true;
            }
            Action::DeleteAnalysisRun { name } => {
                self.runs
                    .retain(|r| r.metadata.name.as_deref() != Some(name));
            }
            Action::ScaleDeployment { name, from, to, .. } => {
                let d = self
                    .deployment
                    .as_mut()
                    .filter(|d| d.metadata.name.as_deref() == Some(name))
                    .ok_or_else(|| missing("Deployment", name))?;
                let spec = d.spec.get_or_insert_with(Default::default);
                // The patch carries the version read: what it decided on.
                if spec.replicas != Some(*from) {
                    return Err(SimError::StaleScale {
                        name: name.clone(),
                        from: *from,
                        has: spec.replicas,
                    });
                }
                spec.replicas = Some(*to);
                // The API server counts a change of spec.
                d.metadata.generation = Some(d.metadata.generation.unwrap_or(1) + 1);
            }
            Action::SetWorkloadGeneration { generation } => annotate(
                &mut self.ro.metadata,
                WORKLOAD_GENERATION_ANNOTATION,
                generation.clone(),
            ),
        }
        Ok(())
    }

    /// One simulated second. The ReplicaSet controller and kubelet: extra
    /// pods go at once (the unavailable ones first), missing pods are
    /// created and become available on the next tick; and, with
    /// `runs_succeed`, the analysis controller.
    pub fn tick(&mut self) {
        self.now += 1;
        for rs in &mut self.replica_sets {
            let hash = rs.pod_hash();
            let broken = hash.is_some_and(|h| self.broken.iter().any(|b| b == h));
            let cap = self
                .capped
                .iter()
                .find(|(h, _)| hash == Some(h.as_str()))
                .map_or(i32::MAX, |(_, c)| *c);
            let spec = rs.spec_replicas();
            let st = rs.status.get_or_insert_with(ReplicaSetStatus::default);
            let available = if broken {
                0
            } else if st.replicas > spec {
                st.available_replicas.unwrap_or(0).min(spec)
            } else {
                st.replicas.min(spec)
            };
            let available = available.min(cap);
            st.available_replicas = Some(available);
            st.ready_replicas = Some(available);
            st.replicas = spec;
        }
        if self.runs_succeed {
            for run in &mut self.runs {
                let done = run
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(AnalysisPhase::completed);
                if !done && !run.spec.terminate {
                    run.status = Some(AnalysisRunStatus {
                        phase: Some(AnalysisPhase::Successful),
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// An update: a new pod template (an extra annotation). With a
    /// workloadRef the change is the Deployment's, whose generation moves;
    /// the Rollout's does not.
    pub fn update(&mut self) {
        let template = match self.deployment.as_mut() {
            Some(d) => {
                d.metadata.generation = Some(d.metadata.generation.unwrap_or(1) + 1);
                &mut d.spec.get_or_insert_with(Default::default).template
            }
            None => {
                self.ro.metadata.generation = Some(self.ro.metadata.generation.unwrap_or(1) + 1);
                self.ro.spec.template.get_or_insert_with(Default::default)
            }
        };
        let meta = template.metadata.get_or_insert_with(Default::default);
        annotate(meta, UPDATE_ANNOTATION, Some("true".into()));
    }

    /// `kubectl rollouts promote` of a step pause: the pause conditions go.
    pub fn promote(&mut self) {
        if let Some(s) = self.ro.status.as_mut() {
            s.pause_conditions.clear();
        }
    }

    pub fn status(&self) -> RolloutStatus {
        self.ro.status.clone().unwrap_or_default()
    }

    pub fn phase(&self) -> Option<RolloutPhase> {
        self.ro.status.as_ref().and_then(|s| s.phase)
    }

    /// Available pods of every ReplicaSet.
    pub fn available(&self) -> i32 {
        self.replica_sets.iter().map(|r| r.available()).sum()
    }

    /// Pods every ReplicaSet asks for.
    pub fn total_spec(&self) -> i32 {
        self.replica_sets.iter().map(|r| r.spec_replicas()).sum()
    }

    /// Pods the ReplicaSet of `hash` asks for (0 if there is none).
    pub fn pods_of(&self, hash: &Option<String>) -> i32 {
        self.replica_sets
            .iter()
            .find(|r| r.pod_hash() == hash.as_deref())
            .map_or(0, |r| r.spec_replicas())
    }

    /// The pod hash a Service selects.
    pub fn selector(&self, service: &str) -> Option<String> {
        let s = self
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(service))?;
        s.spec
            .as_ref()?
            .selector
            .as_ref()?
            .get(POD_TEMPLATE_HASH_LABEL)
            .cloned()
    }

    /// Nothing moves by itself: every ReplicaSet has its pods, available.
    pub fn settled(&self) -> bool {
        self.replica_sets.iter().all(|rs| {
            let spec = rs.spec_replicas();
            rs.status_replicas() == spec && rs.available() == spec
        })
    }

    pub fn ingress(&self, name: &str) -> Option<&Ingress> {
        self.ingresses
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
    }

    pub fn run_mut(&mut self, name: &str) -> Option<&mut AnalysisRun> {
        self.runs
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    }

    fn replica_set_mut(&mut self, name: &str) -> Result<&mut ReplicaSet, SimError> {
        self.replica_sets
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| missing("ReplicaSet", name))
    }

    fn service_mut(&mut self, name: &str) -> Result<&mut Service, SimError> {
        self.services
            .iter_mut()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| missing("Service", name))
    }
}

/// The InvalidSpec message of a plan whose Rollout the planner refused.
pub fn invalid_spec(p: &Plan) -> Option<String> {
    status::find(&p.status.conditions, status::INVALID_SPEC)
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone().unwrap_or_else(|| "invalid spec".into()))
}

fn missing(kind: &'static str, name: &str) -> SimError {
    SimError::Missing {
        kind,
        name: name.into(),
    }
}

fn annotate(meta: &mut ObjectMeta, key: &str, value: Option<String>) {
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => a.insert(key.into(), v),
        None => a.remove(key),
    };
}

/// The Deployment a workloadRef names, for the simulation: the Rollout's
/// selector (or `app: <rollout>`) and a template with those labels.
fn stand_in(ro: &Rollout, metadata: ObjectMeta) -> Deployment {
    let name = ro.metadata.name.clone().unwrap_or_default();
    let selector = ro.spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some([("app".to_string(), name)].into()),
        match_expressions: None,
    });
    Deployment {
        metadata: ObjectMeta {
            generation: Some(1),
            ..metadata
        },
        spec: Some(DeploymentSpec {
            replicas: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: selector.match_labels.clone(),
                    ..Default::default()
                }),
                spec: None,
            },
            selector,
            ..Default::default()
        }),
        status: None,
    }
}

/// A rule of the stable Ingress sending `/` to the stable Service.
fn rule_for(service: &str) -> IngressRule {
    IngressRule {
        host: None,
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".into()),
                path_type: "Prefix".into(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: service.into(),
                        port: Some(ServiceBackendPort {
                            number: Some(80),
                            name: None,
                        }),
                    }),
                    resource: None,
                },
            }],
        }),
    }
}

/// Stands in for a referenced template: one web metric, always valid.
fn trivial_template() -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        metrics: vec![Metric {
            name: "plan".into(),
            provider: MetricProvider {
                web: Some(WebMetric {
                    url: "http://plan.invalid".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    }
}
