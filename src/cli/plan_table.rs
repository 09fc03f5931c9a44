//! `plan FILE [--replicas N]`: the step table the controller would follow,
//! computed by running the controller's own planner on a simulated cluster.
//!
//! The simulation deploys the Rollout once, then changes its pod template
//! (an annotation) and reconciles until every canary step is done: each
//! plan's actions are applied to simulated ReplicaSets, Services, Ingresses
//! and AnalysisRuns; pods become available one (simulated) second after
//! their ReplicaSet asks for them; analyses succeed; indefinite pauses are
//! promoted and timed ones waited out by moving the clock. No replica or
//! weight arithmetic is done here: the numbers are what the planner did.
//!
//! A row is recorded when the planner completes a step. Its pods are the
//! ReplicaSet sizes the planner saw when it judged the step done (so a
//! pause shows the pods held during the pause, not the first move towards
//! the next weight). Its weight, with traffic routing, is the canary
//! Ingress's weight (`status.canary.weights`): for a setWeight step the one
//! the completing plan put in force, for the other steps the one they held
//! (the completing plan may already move on, when the next setWeight finds
//! its pods in place). Without traffic routing it is the canary's share of
//! the pods. With dynamicStableScale the
//! stable shrinks only after the traffic has moved, so a setWeight row shows
//! the stable before it shrinks and the next pause row after.
//!
//! A Rollout with `spec.workloadRef` is simulated with a stand-in for its
//! Deployment (a template with the selector's labels; the table does not
//! depend on the template), and the update changes the Deployment's
//! template, as a team using workloadRef does. A manual pause (spec.paused)
//! is left out of the simulation. Blue-green
//! rollouts have no steps: they are refused ("plan supports
//! canary rollouts").

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::analysis::template::{Templates, key};
use crate::api::Rollout;
use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, AnalysisTemplateSpec, Metric, MetricProvider,
    WebMetric,
};
use crate::api::rollout::{CanaryStep, RolloutStatus};
use crate::controller::patch::merge_patch;
use crate::rollout::plan::steps::PAUSE_REASON_CANARY;
use crate::rollout::plan::{Action, Plan, analysis, plan, status, workload};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, REVISION_ANNOTATION, ReplicaSetExt,
    Snapshot,
};
use crate::traffic::nginx;

/// One completed canary step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// 1-based, as `kubectl rollouts get` counts steps.
    pub step: usize,
    /// The step as upstream names it: "setWeight: 20", "pause", "pause: 30s",
    /// "analysis: tmpl", "setCanaryScale: replicas 2", "setHeaderRoute: beta".
    pub kind: String,
    /// Traffic weight in force once the step is done (see the module doc).
    pub weight: i32,
    pub canary_pods: i32,
    pub stable_pods: i32,
    /// What the step waits for or does: "waits for promote", "waits 30s",
    /// "runs analysis tmpl", ...
    pub note: String,
}

/// Iterations of reconcile + tick allowed for the whole simulation.
const MAX_ITERATIONS: usize = 5_000;
/// Consecutive idle reconciles (nothing to do, nothing to wait for) before
/// the simulation gives up.
const MAX_IDLE: usize = 3;
/// The annotation the simulated update puts on the pod template.
const UPDATE_ANNOTATION: &str = "rollouts.plan/update";

/// Runs the planner on a simulated cluster through a first deploy and one
/// update and returns a row per canary step. `replicas` overrides
/// spec.replicas. Err with the InvalidSpec message for a Rollout the
/// controller would refuse, and for one the simulation cannot finish.
pub fn plan_table(rollout: &Rollout, replicas: Option<i32>) -> Result<Vec<Row>, String> {
    if rollout.spec.strategy.blue_green.is_some() && rollout.spec.strategy.canary.is_none() {
        return Err("plan supports canary rollouts".into());
    }
    let mut ro = rollout.clone();
    if let Some(r) = replicas {
        ro.spec.replicas = Some(r);
    }
    let mut sim = Sim::new(ro);
    sim.run_until("the first deploy", |s| {
        s.phase() == Some(crate::api::rollout::RolloutPhase::Healthy)
    })?;
    sim.update();
    sim.run_steps()
}

/// Drives the planner through `reconciles` reconciles of a first deploy
/// and then an update, for either strategy and at the Rollout's own size:
/// pods become available one tick after they are asked for, every pause is
/// promoted, analyses succeed. Err with the planner's InvalidSpec message
/// (or the simulation's complaint). For the fuzz targets and their corpus
/// test: it runs plan code on specs that validation accepted.
pub fn exercise(rollout: &Rollout, reconciles: usize) -> Result<(), String> {
    let mut sim = Sim::new(rollout.clone());
    for i in 0..reconciles {
        sim.reconcile()?;
        sim.tick();
        if let Some(s) = sim.ro.status.as_mut() {
            s.pause_conditions.clear();
        }
        if i == reconciles / 2 {
            sim.update();
        }
    }
    Ok(())
}

/// Aligned columns: STEP  KIND  WEIGHT  CANARY  STABLE  NOTE.
pub fn render(rows: &[Row]) -> String {
    let header = ["STEP", "KIND", "WEIGHT", "CANARY", "STABLE", "NOTE"].map(String::from);
    let mut table = vec![header.to_vec()];
    for r in rows {
        table.push(vec![
            r.step.to_string(),
            r.kind.clone(),
            r.weight.to_string(),
            r.canary_pods.to_string(),
            r.stable_pods.to_string(),
            r.note.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The step as upstream's events name it, with the detail a table wants.
fn step_kind(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight: {w}");
    }
    if let Some(p) = &step.pause {
        return match &p.duration {
            None => "pause".into(),
            Some(d) => format!("pause: {}", duration(d)),
        };
    }
    if let Some(a) = &step.analysis {
        return format!("analysis: {}", template_names(&a.templates));
    }
    if let Some(s) = &step.set_canary_scale {
        return match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale: replicas {r}"),
            (None, Some(w)) => format!("setCanaryScale: weight {w}"),
            _ => "setCanaryScale: matchTrafficWeight".into(),
        };
    }
    if let Some(h) = &step.set_header_route {
        return format!("setHeaderRoute: {}", h.name);
    }
    "unknown".into()
}

fn step_note(step: &CanaryStep) -> String {
    if let Some(p) = &step.pause {
        return match &p.duration {
            None => "waits for promote".into(),
            Some(d) => format!("waits {}", duration(d)),
        };
    }
    if let Some(a) = &step.analysis {
        return format!("runs analysis {}", template_names(&a.templates));
    }
    if let Some(s) = &step.set_canary_scale {
        return match (s.replicas, s.weight) {
            (Some(r), _) => format!("canary at {r} pods"),
            (None, Some(w)) => format!("canary pods for weight {w}"),
            _ => "canary pods follow the weight".into(),
        };
    }
    if let Some(h) = &step.set_header_route {
        return match h.r#match.first() {
            Some(m) => format!("header {} goes to the canary", m.header_name),
            None => "header route removed".into(),
        };
    }
    String::new()
}

/// A pause duration as written: a bare number is seconds.
fn duration(d: &IntOrString) -> String {
    match d {
        IntOrString::Int(s) => format!("{s}s"),
        IntOrString::String(s) => s.clone(),
    }
}

fn template_names(refs: &[crate::api::common::AnalysisTemplateRef]) -> String {
    refs.iter()
        .map(|r| r.template_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cluster as the planner sees it, and the rules that move it.
struct Sim {
    ro: Rollout,
    replica_sets: Vec<ReplicaSet>,
    services: Vec<Service>,
    ingresses: Vec<Ingress>,
    runs: Vec<AnalysisRun>,
    templates: Templates,
    /// The stand-in for the Deployment a workloadRef names.
    deployment: Option<Deployment>,
    /// Seconds since the epoch.
    now: i64,
    iterations: usize,
}

impl Sim {
    /// The Rollout (without status) with what its spec names: its
    /// Services, for nginx routing a stable Ingress per stableIngress with
    /// a rule for the stable Service, and each referenced analysis
    /// template with one metric.
    fn new(mut ro: Rollout) -> Self {
        let namespace = ro
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into())
            .clone();
        ro.metadata.name.get_or_insert_with(|| "rollout".into());
        ro.metadata.uid = Some("plan-uid".into());
        ro.metadata.generation = Some(1);
        // The table is about the steps: a manual pause would only stop it.
        ro.spec.paused = false;
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
            ro,
            replica_sets: vec![],
            services,
            ingresses,
            runs: vec![],
            templates,
            deployment,
            now: 1_700_000_000,
            iterations: 0,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.ro.clone(), self.replica_sets.clone())
            .with_services(self.services.clone())
            .with_analysis(self.runs.clone(), self.templates.clone())
            .with_ingresses(self.ingresses.clone())
            .with_workload(self.deployment.clone())
    }

    fn status(&self) -> RolloutStatus {
        self.ro.status.clone().unwrap_or_default()
    }

    fn phase(&self) -> Option<crate::api::rollout::RolloutPhase> {
        self.ro.status.as_ref().and_then(|s| s.phase)
    }

    /// One reconcile: plan, apply every action, write the status. Err with
    /// the message when the planner reports an invalid spec.
    fn reconcile(&mut self) -> Result<Plan, String> {
        self.iterations += 1;
        if self.iterations > MAX_ITERATIONS {
            return Err(format!(
                "the simulated rollout did not finish in {MAX_ITERATIONS} reconciles"
            ));
        }
        let p = plan(&self.snapshot(), self.time());
        if let Some(c) = status::find(&p.status.conditions, status::INVALID_SPEC)
            && c.status == "True"
        {
            return Err(c.message.clone().unwrap_or_else(|| "invalid spec".into()));
        }
        for action in &p.actions {
            self.apply(action)?;
        }
        self.ro.status = Some(p.status.clone());
        Ok(p)
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_second(self.now).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn apply(&mut self, action: &Action) -> Result<(), String> {
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
                let rs = self.replica_set(name)?;
                rs.spec.get_or_insert_with(Default::default).replicas = Some(*to);
                annotate(
                    &mut rs.metadata,
                    DESIRED_REPLICAS_ANNOTATION,
                    Some(desired_replicas.to_string()),
                );
                if *clear_deadline {
                    annotate(
                        &mut rs.metadata,
                        crate::rollout::plan::replica_set::SCALE_DOWN_DEADLINE_ANNOTATION,
                        None,
                    );
                }
            }
            Action::EvictPod { name } => {
                return Err(format!("unexpected eviction of pod {name}"));
            }
            Action::SetReplicaSetRevision { name, revision } => {
                let rs = self.replica_set(name)?;
                annotate(
                    &mut rs.metadata,
                    REVISION_ANNOTATION,
                    Some(revision.to_string()),
                );
            }
            Action::SetReplicaSetAnnotations { name, annotations } => {
                let rs = self.replica_set(name)?;
                for (k, v) in annotations {
                    annotate(&mut rs.metadata, k, Some(v.clone()));
                }
            }
            Action::SetMinReadySeconds { name, seconds } => {
                let rs = self.replica_set(name)?;
                rs.spec
                    .get_or_insert_with(Default::default)
                    .min_ready_seconds = Some(*seconds);
            }
            Action::DeleteReplicaSet { name } => {
                self.replica_sets
                    .retain(|r| r.metadata.name.as_deref() != Some(name));
            }
            Action::SetRolloutRevision { revision } => {
                annotate(
                    &mut self.ro.metadata,
                    REVISION_ANNOTATION,
                    Some(revision.to_string()),
                );
            }
            Action::ReleaseService { name } => {
                let svc = self
                    .services
                    .iter_mut()
                    .find(|s| s.metadata.name.as_deref() == Some(name))
                    .ok_or_else(|| format!("released Service {name} does not exist"))?;
                if let Some(sel) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
                    sel.remove(crate::rollout::hash::POD_TEMPLATE_HASH_LABEL);
                }
                annotate(&mut svc.metadata, MANAGED_BY_ANNOTATION, None);
            }
            Action::SetServiceSelector {
                name, hash, adopt, ..
            } => {
                let owner = self.ro.metadata.name.clone();
                let svc = self
                    .services
                    .iter_mut()
                    .find(|s| s.metadata.name.as_deref() == Some(name))
                    .ok_or_else(|| format!("planned Service {name} does not exist"))?;
                svc.spec
                    .get_or_insert_with(Default::default)
                    .selector
                    .get_or_insert_with(Default::default)
                    .insert(
                        crate::rollout::hash::POD_TEMPLATE_HASH_LABEL.into(),
                        hash.clone(),
                    );
                if *adopt {
                    annotate(&mut svc.metadata, MANAGED_BY_ANNOTATION, owner);
                }
            }
            Action::SetScaleDownDeadline { name, deadline } => {
                let rs = self.replica_set(name)?;
                annotate(
                    &mut rs.metadata,
                    crate::rollout::plan::replica_set::SCALE_DOWN_DEADLINE_ANNOTATION,
                    deadline.clone(),
                );
            }
            // Labels and annotations of pods change no number in the table.
            Action::SetPodMetadata { .. } => {}
            Action::CreateIngress(ingress) => self.ingresses.push((**ingress).clone()),
            Action::PatchIngress { name, patch } => {
                let ingress = self
                    .ingresses
                    .iter_mut()
                    .find(|i| i.metadata.name.as_deref() == Some(name))
                    .ok_or_else(|| format!("patched Ingress {name} does not exist"))?;
                let mut value = serde_json::to_value(&*ingress).map_err(|e| e.to_string())?;
                merge_patch(&mut value, patch);
                *ingress = serde_json::from_value(value).map_err(|e| e.to_string())?;
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
                if let Some(r) = self
                    .runs
                    .iter_mut()
                    .find(|r| r.metadata.name.as_deref() == Some(name))
                {
                    r.spec.terminate = true;
                }
            }
            Action::DeleteAnalysisRun { name } => {
                self.runs
                    .retain(|r| r.metadata.name.as_deref() != Some(name));
            }
            Action::ScaleDeployment { to, .. } => {
                if let Some(spec) = self.deployment.as_mut().and_then(|d| d.spec.as_mut()) {
                    spec.replicas = Some(*to);
                }
            }
            Action::SetWorkloadGeneration { generation } => annotate(
                &mut self.ro.metadata,
                workload::WORKLOAD_GENERATION_ANNOTATION,
                generation.clone(),
            ),
        }
        Ok(())
    }

    fn replica_set(&mut self, name: &str) -> Result<&mut ReplicaSet, String> {
        self.replica_sets
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("planned ReplicaSet {name} does not exist"))
    }

    /// One simulated second: the ReplicaSet controller and kubelet (extra
    /// pods go at once, missing ones are available a tick later) and the
    /// analysis controller (every unfinished run succeeds).
    fn tick(&mut self) {
        self.now += 1;
        for rs in &mut self.replica_sets {
            let spec = rs.spec_replicas();
            let st = rs.status.get_or_insert_with(ReplicaSetStatus::default);
            let available = st.replicas.min(spec);
            st.available_replicas = Some(available);
            st.ready_replicas = Some(available);
            st.replicas = spec;
        }
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

    /// Nothing moves by itself: every ReplicaSet has its pods, available.
    fn settled(&self) -> bool {
        self.replica_sets.iter().all(|rs| {
            let spec = rs.spec_replicas();
            rs.status_replicas() == spec && rs.available() == spec
        })
    }

    /// Reconciles and ticks until `done`; the pauses and timers of a first
    /// deploy are handled as during the steps.
    fn run_until(&mut self, what: &str, done: impl Fn(&Sim) -> bool) -> Result<(), String> {
        let mut idle = 0;
        loop {
            let before = self.ro.status.clone();
            let p = self.reconcile()?;
            if done(self) {
                return Ok(());
            }
            self.wait(&p, before.as_ref(), &mut idle, what)?;
            self.tick();
        }
    }

    /// After a plan: when nothing changed and nothing is moving, promote an
    /// indefinite pause or move the clock to the planner's next look.
    fn wait(
        &mut self,
        p: &Plan,
        before: Option<&RolloutStatus>,
        idle: &mut usize,
        what: &str,
    ) -> Result<(), String> {
        let quiet = p.actions.is_empty() && before == Some(&p.status) && self.settled();
        if !quiet {
            *idle = 0;
            return Ok(());
        }
        let status = self.status();
        let paused = status
            .pause_conditions
            .iter()
            .any(|c| c.reason == PAUSE_REASON_CANARY);
        let step = self.ro.spec.strategy.canary.as_ref().and_then(|c| {
            c.steps
                .get(status.current_step_index.unwrap_or(0).max(0) as usize)
        });
        let indefinite = step
            .and_then(|s| s.pause.as_ref())
            .is_some_and(|p| p.duration.is_none());
        if paused && indefinite {
            // kubectl rollouts promote
            if let Some(s) = self.ro.status.as_mut() {
                s.pause_conditions.clear();
            }
            *idle = 0;
        } else if let Some(after) = p.requeue_after {
            self.now += i64::try_from(after.as_secs())
                .unwrap_or(i64::MAX / 2)
                .max(1);
            *idle = 0;
        } else {
            *idle += 1;
            if *idle > MAX_IDLE {
                return Err(format!(
                    "the simulated rollout made no progress towards {what} (step index {:?}, phase {:?}, message {:?})",
                    status.current_step_index, status.phase, status.message
                ));
            }
        }
        Ok(())
    }

    /// The update: a new pod template (an extra annotation).
    fn update(&mut self) {
        // With a workloadRef the change is the Deployment's, whose generation
        // moves; the Rollout's does not.
        let template = match self.deployment.as_mut() {
            Some(d) => {
                d.metadata.generation = Some(2);
                &mut d.spec.get_or_insert_with(Default::default).template
            }
            None => {
                self.ro.metadata.generation = Some(2);
                self.ro.spec.template.get_or_insert_with(Default::default)
            }
        };
        let meta = template.metadata.get_or_insert_with(Default::default);
        annotate(meta, UPDATE_ANNOTATION, Some("true".into()));
    }

    fn pods_of(&self, hash: Option<&str>) -> i32 {
        hash.and_then(|h| self.replica_sets.iter().find(|rs| rs.pod_hash() == Some(h)))
            .map_or(0, ReplicaSetExt::spec_replicas)
    }

    /// Reconciles through the update, a row per completed step.
    fn run_steps(&mut self) -> Result<Vec<Row>, String> {
        let steps = self
            .ro
            .spec
            .strategy
            .canary
            .as_ref()
            .map(|c| c.steps.clone())
            .unwrap_or_default();
        let routed = crate::rollout::plan::traffic::routing(&self.ro).is_some();
        let mut rows: Vec<Row> = Vec::new();
        let mut idle = 0;
        while rows.len() < steps.len() {
            let before = self.ro.status.clone();
            let old = before.clone().unwrap_or_default();
            let canary_pods = self.pods_of(old.current_pod_hash.as_deref());
            let stable_pods = self.pods_of(old.stable_rs.as_deref());
            let p = self.reconcile()?;
            let s = &p.status;
            if s.abort {
                return Err(format!(
                    "the simulated rollout aborted: {}",
                    s.message.clone().unwrap_or_default()
                ));
            }
            // The first plan of the update starts the steps over.
            let started = old.current_pod_hash == s.current_pod_hash;
            let (from, to) = (
                old.current_step_index.unwrap_or(0),
                s.current_step_index.unwrap_or(0),
            );
            if started && to > from {
                for index in from..to {
                    let i = index as usize;
                    let Some(step) = steps.get(i) else { break };
                    // A setWeight step moves the traffic in the plan that
                    // completes it; the other steps hold what was in force.
                    let weights = if step.set_weight.is_some() {
                        s.canary.weights.as_ref()
                    } else {
                        old.canary.weights.as_ref()
                    };
                    let weight = if routed {
                        weights.map_or(0, |w| w.canary.weight)
                    } else {
                        share(canary_pods, stable_pods)
                    };
                    rows.push(Row {
                        step: i + 1,
                        kind: step_kind(step),
                        weight,
                        canary_pods,
                        stable_pods,
                        note: step_note(step),
                    });
                }
            }
            self.wait(&p, before.as_ref(), &mut idle, "the end of the steps")?;
            self.tick();
        }
        Ok(rows)
    }
}

/// The canary's share of the pods, in percent (rounded).
fn share(canary: i32, stable: i32) -> i32 {
    let total = canary + stable;
    if total == 0 {
        return 0;
    }
    ((f64::from(canary) * 100.0 / f64::from(total)).round()) as i32
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

fn annotate(meta: &mut ObjectMeta, key: &str, value: Option<String>) {
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => a.insert(key.into(), v),
        None => a.remove(key),
    };
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

#[cfg(test)]
mod tests;
