//! Analysis gates, as upstream. Canary: an `analysis` step starts an
//! AnalysisRun and the step completes when it is Successful; background
//! analysis runs from `startingStep` until the rollout completes. Blue-green:
//! pre-promotion analysis once the preview pods are all available (the
//! active Service switches only after it succeeds), post-promotion analysis
//! once the active Service has switched (the new ReplicaSet becomes stable
//! only after it succeeds). An Inconclusive run pauses the rollout
//! (InconclusiveAnalysisRun), a Failed or Error run aborts it. Runs that are
//! no longer current are terminated, and old ones deleted beyond the
//! history limits.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use super::Action;
use super::events::Event;
use super::steps::{self, PAUSE_REASON_BLUE_GREEN, PAUSE_REASON_CANARY};
use crate::analysis::template::{self, ArgContext};
use crate::api::INSTANCE_ID_LABEL;
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::rollout::{
    PauseCondition, RolloutAnalysis, RolloutAnalysisRunStatus, RolloutStatus,
};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::snapshot::{REVISION_ANNOTATION, ReplicaSetExt, Snapshot};

pub const PAUSE_REASON_INCONCLUSIVE: &str = "InconclusiveAnalysisRun";
pub const TYPE_LABEL: &str = "rollout-type";
pub const STEP_INDEX_LABEL: &str = "step-index";
const STEP: &str = "Step";
const BACKGROUND: &str = "Background";
const PRE_PROMOTION: &str = "PrePromotion";
const POST_PROMOTION: &str = "PostPromotion";
const DEFAULT_HISTORY_LIMIT: usize = 5;

/// What the analysis gates decide in one plan.
#[derive(Debug, Default, PartialEq)]
pub struct Gates {
    pub actions: Vec<Action>,
    /// A run failed: abort the update with this message.
    pub abort: Option<String>,
    pub events: Vec<Event>,
}

/// Where the rollout stands, as decided by the plan so far.
pub struct Position<'a> {
    /// The new pod template's hash and the revision of its ReplicaSet.
    pub hash: &'a str,
    pub revision: i64,
    /// The new ReplicaSet is the stable one (done, or a fast rollback).
    pub promoted: bool,
    /// For blue-green: whether each analysis is due.
    pub blue_green: Option<BlueGreenDue>,
}

/// When blue-green's analyses may run, decided by the blue-green planner.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlueGreenDue {
    pub pre: Due,
    pub post: Due,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Due {
    /// Past this analysis' moment (or before it): a run is stopped.
    pub skip: bool,
    /// The new pods are all available: a first run may start.
    pub ready: bool,
}

pub fn plan(snap: &Snapshot, status: &mut RolloutStatus, at: Position, now: &Time) -> Gates {
    let ro = &snap.rollout;
    let by_name: BTreeMap<&str, &AnalysisRun> = snap
        .analysis_runs
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, r)))
        .collect();
    let mut gates = Gates::default();
    let mut new_runs: Vec<AnalysisRun> = Vec::new();
    let mut ctx = Build {
        snap,
        at: &at,
        existing: &by_name,
        created: &mut new_runs,
        error: None,
        now,
    };
    let current = match at.blue_green {
        Some(due) => blue_green_gates(&mut ctx, status, due, &mut gates),
        None => canary_gates(&mut ctx, status, &mut gates),
    };
    if let Some(e) = ctx.error {
        gates.abort.get_or_insert(e);
    }
    let mut keep = BTreeSet::new();
    for (kind, before, after) in &current {
        keep.extend(after.as_ref().map(|r| r.name.clone()));
        gates
            .events
            .extend(status_event(kind, before.as_ref(), after.as_ref()));
    }

    // Runs that are no longer current: stopped, then kept within the limits.
    let others: Vec<&AnalysisRun> = snap
        .analysis_runs
        .iter()
        .filter(|r| !keep.contains(&r.name_any()))
        .collect();
    gates.actions.extend(others.iter().filter_map(|r| stop(r)));
    let limits = ro.spec.analysis.as_ref();
    let limit = |v: Option<i32>| {
        v.and_then(|v| usize::try_from(v).ok())
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    };
    for name in to_delete(
        snap,
        &others,
        limit(limits.and_then(|l| l.successful_run_history_limit)),
        limit(limits.and_then(|l| l.unsuccessful_run_history_limit)),
    ) {
        gates.actions.push(Action::DeleteAnalysisRun { name });
    }
    gates.actions.extend(
        new_runs
            .into_iter()
            .map(|r| Action::CreateAnalysisRun(Box::new(r))),
    );
    gates
}

/// A current run's summary before and after this plan, by kind.
type Current = (
    &'static str,
    Option<RolloutAnalysisRunStatus>,
    Option<RolloutAnalysisRunStatus>,
);

fn canary_gates(ctx: &mut Build, status: &mut RolloutStatus, gates: &mut Gates) -> Vec<Current> {
    let old = status.canary.clone();
    let step_run = ctx.current(&old.current_step_analysis_run_status);
    let background_run = ctx.current(&old.current_background_analysis_run_status);
    let cancel_all =
        ctx.at.promoted || status.abort || status.promote_full || status.stable_rs.is_none();
    let (step, background) = if cancel_all {
        (None, None)
    } else {
        let step = step_gate(ctx, status, step_run, gates);
        (step, background_gate(ctx, status, background_run, gates))
    };
    status.canary.current_step_analysis_run_status = step.clone();
    status.canary.current_background_analysis_run_status = background.clone();
    vec![
        (STEP, old.current_step_analysis_run_status, step),
        (
            BACKGROUND,
            old.current_background_analysis_run_status,
            background,
        ),
    ]
}

fn blue_green_gates(
    ctx: &mut Build,
    status: &mut RolloutStatus,
    due: BlueGreenDue,
    gates: &mut Gates,
) -> Vec<Current> {
    let old = status.blue_green.clone();
    let pre_run = ctx.current(&old.pre_promotion_analysis_run_status);
    let post_run = ctx.current(&old.post_promotion_analysis_run_status);
    let bg = ctx.snap.rollout.spec.strategy.blue_green.as_ref();
    let cancel_all =
        ctx.at.promoted || status.abort || status.promote_full || status.stable_rs.is_none();
    let (pre, post) = if cancel_all {
        // Blue-green keeps its last runs in the status (stopped if running).
        for run in [pre_run, post_run].into_iter().flatten() {
            gates.actions.extend(stop(run));
        }
        (pre_run.map(summary), post_run.map(summary))
    } else {
        let pre = BlueGreenKind {
            label: PRE_PROMOTION,
            infix: "pre",
            message: "Blue/green pre-promotion",
        };
        let post = BlueGreenKind {
            label: POST_PROMOTION,
            infix: "post",
            message: "Blue/green post-promotion",
        };
        (
            blue_green_gate(
                ctx,
                status,
                pre,
                bg.and_then(|b| b.pre_promotion_analysis.as_ref()),
                pre_run,
                due.pre,
                gates,
            ),
            blue_green_gate(
                ctx,
                status,
                post,
                bg.and_then(|b| b.post_promotion_analysis.as_ref()),
                post_run,
                due.post,
                gates,
            ),
        )
    };
    status.blue_green.pre_promotion_analysis_run_status = pre.clone();
    status.blue_green.post_promotion_analysis_run_status = post.clone();
    vec![
        (PRE_PROMOTION, old.pre_promotion_analysis_run_status, pre),
        (POST_PROMOTION, old.post_promotion_analysis_run_status, post),
    ]
}

struct BlueGreenKind {
    label: &'static str,
    infix: &'static str,
    message: &'static str,
}

fn blue_green_gate(
    ctx: &mut Build,
    status: &mut RolloutStatus,
    kind: BlueGreenKind,
    analysis: Option<&RolloutAnalysis>,
    run: Option<&AnalysisRun>,
    due: Due,
    gates: &mut Gates,
) -> Option<RolloutAnalysisRunStatus> {
    // Not configured (any more): an old run is no longer current.
    let analysis = analysis.filter(|a| !a.templates.is_empty())?;
    // Once started, a run is not stopped because pods churn; only moving
    // past its moment stops it.
    if due.skip || (run.is_none() && !due.ready) {
        gates.actions.extend(run.and_then(stop));
        return run.map(summary);
    }
    if has_pause(status, PAUSE_REASON_INCONCLUSIVE) {
        return run.map(summary);
    }
    let run = match run {
        Some(r) if !needs_new(r, status) => r,
        // A retry (or a promote past an Inconclusive run) waits, like a
        // first run, for the new pods: they may have been scaled down.
        Some(_) if !due.ready => return None,
        _ => {
            let labels = [(TYPE_LABEL, kind.label.to_string())];
            return ctx.create(analysis, Some(kind.infix.to_string()), &labels);
        }
    };
    react(run, status, kind.message, gates, ctx.now);
    Some(summary(run))
}

/// Terminate a run that is still going.
fn stop(run: &AnalysisRun) -> Option<Action> {
    (!run.spec.terminate && !phase(run).is_some_and(|p| p.completed())).then(|| {
        Action::TerminateAnalysisRun {
            name: run.name_any(),
        }
    })
}

/// Shared state while building runs.
struct Build<'a, 'b> {
    snap: &'a Snapshot,
    at: &'a Position<'a>,
    existing: &'a BTreeMap<&'a str, &'a AnalysisRun>,
    created: &'b mut Vec<AnalysisRun>,
    /// A run that could not be built (the spec was checked before
    /// planning, so this is unexpected): the update is aborted with it.
    error: Option<String>,
    now: &'a Time,
}

fn step_gate(
    ctx: &mut Build,
    status: &mut RolloutStatus,
    run: Option<&AnalysisRun>,
    gates: &mut Gates,
) -> Option<RolloutAnalysisRunStatus> {
    let ro = &ctx.snap.rollout;
    let steps_list = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.as_slice())
        .unwrap_or_default();
    let index = status.current_step_index.unwrap_or(0);
    let step = steps::current(steps_list, status.current_step_index);
    // While paused or aborted the current run is left as it is.
    if !status.pause_conditions.is_empty() || status.abort {
        return run.map(summary);
    }
    let analysis = step
        .and_then(|s| s.analysis.as_ref())
        .filter(|a| !a.templates.is_empty());
    let from_previous_step =
        run.is_some_and(|r| label(r, STEP_INDEX_LABEL) != Some(&index.to_string()));
    let analysis = analysis.filter(|_| !from_previous_step)?;
    let run = match run {
        Some(r) if !needs_new(r, status) => r,
        _ => {
            let labels = [
                (TYPE_LABEL, STEP.to_string()),
                (STEP_INDEX_LABEL, index.to_string()),
            ];
            return ctx.create(analysis, Some(index.to_string()), &labels);
        }
    };
    react(run, status, "Step-based", gates, ctx.now);
    Some(summary(run))
}

fn background_gate(
    ctx: &mut Build,
    status: &mut RolloutStatus,
    run: Option<&AnalysisRun>,
    gates: &mut Gates,
) -> Option<RolloutAnalysisRunStatus> {
    let ro = &ctx.snap.rollout;
    let background = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.analysis.as_ref())
        .filter(|a| !a.analysis.templates.is_empty())?;
    let before_start = background
        .starting_step
        .is_some_and(|s| status.current_step_index.unwrap_or(0) < s);
    if before_start {
        return None;
    }
    if has_pause(status, PAUSE_REASON_INCONCLUSIVE) {
        return run.map(summary);
    }
    let run = match run {
        Some(r) if !needs_new(r, status) => r,
        _ => {
            let labels = [(TYPE_LABEL, BACKGROUND.to_string())];
            return ctx.create(&background.analysis, None, &labels);
        }
    };
    react(run, status, "Background", gates, ctx.now);
    Some(summary(run))
}

/// Upstream's rule for starting a fresh run: after a promote past an
/// Inconclusive one (the controller's pause is still set, its condition
/// gone), or after a retry of an aborted update.
fn needs_new(run: &AnalysisRun, status: &RolloutStatus) -> bool {
    if status.controller_pause
        && !has_pause(status, PAUSE_REASON_CANARY)
        && !has_pause(status, PAUSE_REASON_BLUE_GREEN)
    {
        return phase(run) == Some(AnalysisPhase::Inconclusive);
    }
    status.aborted_at.is_some()
}

/// Inconclusive pauses the rollout; Failed or Error aborts it.
fn react(run: &AnalysisRun, status: &mut RolloutStatus, kind: &str, gates: &mut Gates, now: &Time) {
    match phase(run) {
        Some(AnalysisPhase::Inconclusive) => {
            if !has_pause(status, PAUSE_REASON_INCONCLUSIVE) {
                status.pause_conditions.push(PauseCondition {
                    reason: PAUSE_REASON_INCONCLUSIVE.into(),
                    start_time: now.clone(),
                });
            }
            status.controller_pause = true;
        }
        Some(AnalysisPhase::Failed | AnalysisPhase::Error) => {
            let mut message = format!("{kind} analysis phase error/failed");
            if let Some(m) = run.status.as_ref().and_then(|s| s.message.as_deref()) {
                message = format!("{message}: {m}");
            }
            gates.abort.get_or_insert(message);
        }
        _ => {}
    }
}

impl<'a> Build<'a, '_> {
    /// The run a status entry names, if it exists.
    fn current(&self, s: &Option<RolloutAnalysisRunStatus>) -> Option<&'a AnalysisRun> {
        s.as_ref()
            .and_then(|s| self.existing.get(s.name.as_str()).copied())
    }
}

impl Build<'_, '_> {
    /// Builds the next run for `analysis` (named `<rollout>-<hash>-<revision>`
    /// plus `-<infix>`, `.N` after a name already taken).
    fn create(
        &mut self,
        analysis: &RolloutAnalysis,
        infix: Option<String>,
        type_labels: &[(&str, String)],
    ) -> Option<RolloutAnalysisRunStatus> {
        // A run of ours for the same thing that is still going (its name
        // was lost, e.g. a status write that failed) is taken up again.
        let same = |r: &&&AnalysisRun| {
            label(r, POD_TEMPLATE_HASH_LABEL).map(String::as_str) == Some(self.at.hash)
                && type_labels.iter().all(|(k, v)| label(r, k) == Some(v))
                && !r.spec.terminate
                && !phase(r).is_some_and(|p| p.completed())
        };
        if let Some(r) = self.existing.values().find(same) {
            return Some(summary(r));
        }
        match self.build(analysis, infix, type_labels) {
            Ok(run) => {
                let s = summary(&run);
                self.created.push(run);
                Some(s)
            }
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn build(
        &self,
        analysis: &RolloutAnalysis,
        infix: Option<String>,
        type_labels: &[(&str, String)],
    ) -> Result<AnalysisRun, String> {
        let ro = &self.snap.rollout;
        let spec = run_spec_for(self.snap, analysis, self.at.hash)?;
        let base = [
            Some(ro.name_any()),
            Some(self.at.hash.to_string()),
            Some(self.at.revision.to_string()),
            infix,
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("-");
        let taken = |n: &str| {
            self.existing.contains_key(n)
                || self
                    .created
                    .iter()
                    .any(|r| r.metadata.name.as_deref() == Some(n))
        };
        let name = std::iter::once(base.clone())
            .chain((1..).map(|i| format!("{base}.{i}")))
            .find(|n| !taken(n))
            .unwrap_or(base);
        let mut labels = BTreeMap::from([(
            POD_TEMPLATE_HASH_LABEL.to_string(),
            self.at.hash.to_string(),
        )]);
        labels.extend(type_labels.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut annotations = BTreeMap::from([(
            REVISION_ANNOTATION.to_string(),
            self.at.revision.to_string(),
        )]);
        if let Some(meta) = &analysis.analysis_run_metadata {
            labels.extend(meta.labels.clone().into_iter().flatten());
            annotations.extend(meta.annotations.clone().into_iter().flatten());
        }
        if let Some(sel) = ro
            .spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
        {
            labels.extend(sel.clone());
        }
        // A run belongs to the same controller instance as its Rollout, or
        // that instance would never see it (as upstream).
        if let Some(id) = ro.labels().get(INSTANCE_ID_LABEL) {
            labels.insert(INSTANCE_ID_LABEL.to_string(), id.clone());
        }
        Ok(AnalysisRun {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: ro.namespace(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: ro.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            spec,
            status: None,
        })
    }
}

/// The run spec for one of the Rollout's analyses, or why it cannot be
/// built (a template missing, an argument without a value, ...).
pub fn run_spec_for(
    snap: &Snapshot,
    analysis: &RolloutAnalysis,
    latest_hash: &str,
) -> Result<crate::api::analysis::AnalysisRunSpec, String> {
    let ro = &snap.rollout;
    // The Rollout as JSON only for the arguments that read a field of it.
    let uses_field = analysis
        .args
        .iter()
        .any(|a| a.value_from.as_ref().is_some_and(|v| v.field_ref.is_some()));
    let json = if uses_field {
        serde_json::to_value(ro).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let stable = ro.status.as_ref().and_then(|s| s.stable_rs.as_deref());
    let args = template::rollout_args(
        &analysis.args,
        &ArgContext {
            rollout: &json,
            stable_hash: stable,
            latest_hash,
        },
    )?;
    template::run_spec(analysis, &snap.templates, &args)
}

/// Every analysis the spec names, with where it is (for messages).
pub fn analyses(ro: &crate::api::Rollout) -> Vec<(String, &RolloutAnalysis)> {
    let strategy = &ro.spec.strategy;
    if let Some(bg) = &strategy.blue_green {
        return [
            ("prePromotionAnalysis", &bg.pre_promotion_analysis),
            ("postPromotionAnalysis", &bg.post_promotion_analysis),
        ]
        .into_iter()
        .filter_map(|(field, a)| Some((format!("spec.strategy.blueGreen.{field}"), a.as_ref()?)))
        .collect();
    }
    let Some(c) = strategy.canary.as_ref() else {
        return vec![];
    };
    let mut out: Vec<(String, &RolloutAnalysis)> = c
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Some((
                format!("spec.strategy.canary.steps[{i}].analysis"),
                s.analysis.as_ref()?,
            ))
        })
        .collect();
    if let Some(bg) = &c.analysis {
        out.push(("spec.strategy.canary.analysis".into(), &bg.analysis));
    }
    out
}

/// Upstream's InvalidSpec for analyses that cannot be run: a template that
/// does not exist, metrics that clash, an argument without a value, a
/// metric of a step or a blue-green gate that would run forever. Also what
/// would make the run fail at once (a spec its controller refuses, a
/// condition that does not compile): upstream starts the update and then
/// aborts it, which shows the problem later and less clearly.
pub fn problem(snap: &Snapshot, latest_hash: &str) -> Option<String> {
    let name = snap.rollout.name_any();
    analyses(&snap.rollout).into_iter().find_map(|(field, a)| {
        let background = field == "spec.strategy.canary.analysis";
        run_spec_for(snap, a, latest_hash)
            .and_then(|spec| unusable(&spec, background, a, &snap.templates))
            .err()
            .map(|e| {
                format!("The Rollout {name:?} is invalid: {field}.templates: Invalid value: {e}")
            })
    })
}

/// What the AnalysisRun of `spec` would fail on before measuring anything,
/// with the AnalysisRun controller's own checks.
fn unusable(
    spec: &crate::api::analysis::AnalysisRunSpec,
    background: bool,
    analysis: &RolloutAnalysis,
    templates: &template::Templates,
) -> Result<(), String> {
    use crate::analysis::{args, condition, run};
    // The template a metric comes from, for messages (names are unique
    // across the templates of one run).
    let owner = |metric: &str| {
        template::wanted(&analysis.templates, templates)
            .into_iter()
            .find(|k| {
                templates
                    .get(k)
                    .is_some_and(|t| t.metrics.iter().any(|m| m.name == metric))
            })
            .map(|(cluster, n)| {
                let kind = if cluster {
                    "ClusterAnalysisTemplate"
                } else {
                    "AnalysisTemplate"
                };
                format!("{kind} {n}")
            })
            .unwrap_or_else(|| "AnalysisTemplate".into())
    };
    let metrics = args::resolve_all(&spec.metrics, &spec.args)
        .map_err(|e| format!("Unable to resolve metric arguments: {e}"))?;
    run::validate_metrics(&metrics).map_err(|e| format!("Analysis spec invalid: {e}"))?;
    run::dry_run_metrics(&spec.dry_run, &metrics)
        .map_err(|e| format!("Analysis spec invalid: {e}"))?;
    run::retention(&spec.measurement_retention, &metrics)
        .map_err(|e| format!("Analysis spec invalid: {e}"))?;
    for m in &metrics {
        for (which, c) in [
            ("successCondition", &m.success_condition),
            ("failureCondition", &m.failure_condition),
        ] {
            if let Some(e) = c.as_deref().and_then(condition::compile_error) {
                return Err(format!(
                    "{} has metric {} whose {which} {:?} does not compile: {e}",
                    owner(&m.name),
                    m.name,
                    c.as_deref().unwrap_or_default()
                ));
            }
        }
        // Upstream: only background analysis may run until terminated; a
        // step or a blue-green gate waiting on it would wait forever.
        if !background && run::effective_count(m).is_none() {
            let count = match &m.count {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                    i.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                None => "<nil>".into(),
            };
            return Err(format!(
                "{} has metric {} which runs indefinitely. Invalid value for count: {count}",
                owner(&m.name),
                m.name
            ));
        }
    }
    Ok(())
}

fn summary(run: &AnalysisRun) -> RolloutAnalysisRunStatus {
    RolloutAnalysisRunStatus {
        name: run.name_any(),
        status: phase(run)
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        message: run.status.as_ref().and_then(|s| s.message.clone()),
    }
}

fn phase(run: &AnalysisRun) -> Option<AnalysisPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn label<'a>(run: &'a AnalysisRun, key: &str) -> Option<&'a String> {
    run.metadata.labels.as_ref()?.get(key)
}

pub fn has_pause(status: &RolloutStatus, reason: &str) -> bool {
    status.pause_conditions.iter().any(|c| c.reason == reason)
}

/// Upstream's AnalysisRun<Phase> event on the Rollout when a current run
/// changes phase.
fn status_event(
    kind: &str,
    before: Option<&RolloutAnalysisRunStatus>,
    after: Option<&RolloutAnalysisRunStatus>,
) -> Option<Event> {
    let after = after.filter(|a| !a.status.is_empty())?;
    let previous = match before {
        None => "NoPreviousStatus".to_string(),
        Some(b) if b.name == after.name && b.status != after.status => {
            if b.status.is_empty() {
                "NoPreviousStatus".into()
            } else {
                b.status.clone()
            }
        }
        Some(b) if b.name != after.name => "NoPreviousStatus".into(),
        Some(_) => return None,
    };
    let reason = match after.status.as_str() {
        "Successful" => "AnalysisRunSuccessful",
        "Failed" => "AnalysisRunFailed",
        "Error" => "AnalysisRunError",
        "Inconclusive" => "AnalysisRunInconclusive",
        "Pending" => "AnalysisRunPending",
        _ => "AnalysisRunRunning",
    };
    Some(Event {
        warning: matches!(after.status.as_str(), "Failed" | "Error"),
        reason,
        message: format!(
            "{kind} Analysis Run '{}' Status New: '{}' Previous: '{previous}'",
            after.name, after.status
        ),
    })
}

/// Upstream's history limits over the runs that are not current: runs of
/// ReplicaSets that are gone go first; then the newest `successful` and
/// `unsuccessful` completed runs are kept.
fn to_delete(
    snap: &Snapshot,
    others: &[&AnalysisRun],
    successful: usize,
    unsuccessful: usize,
) -> Vec<String> {
    let hashes: BTreeSet<&str> = snap
        .replica_sets
        .iter()
        .filter_map(|rs| rs.pod_hash())
        .collect();
    let mut runs: Vec<&&AnalysisRun> = others.iter().collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let (mut ok, mut bad) = (0, 0);
    let mut out = Vec::new();
    for r in runs {
        let keep = match label(r, POD_TEMPLATE_HASH_LABEL) {
            Some(h) if hashes.contains(h.as_str()) => match phase(r) {
                Some(AnalysisPhase::Successful) => {
                    ok += 1;
                    ok <= successful
                }
                Some(
                    AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive,
                ) => {
                    bad += 1;
                    bad <= unsuccessful
                }
                _ => true,
            },
            _ => false,
        };
        if !keep {
            out.push(r.name_any());
        }
    }
    out
}
