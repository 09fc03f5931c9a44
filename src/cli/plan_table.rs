//! `plan FILE [--replicas N]`: the step table the controller would follow,
//! computed by running the controller's own planner on a simulated cluster.
//!
//! The simulation (`crate::rollout::simulate`) deploys the Rollout once,
//! then changes its pod template (an annotation) and reconciles until every
//! canary step is done: each plan's actions are applied to simulated
//! ReplicaSets, Services, Ingresses and AnalysisRuns; pods become available
//! one (simulated) second after their ReplicaSet asks for them; analyses
//! succeed; indefinite pauses are promoted and timed ones waited out by
//! moving the clock. No replica or weight arithmetic is done here: the
//! numbers are what the planner did.
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

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::Rollout;
use crate::api::rollout::{CanaryStep, RolloutPhase, RolloutStatus};
use crate::rollout::plan::Plan;
use crate::rollout::plan::steps::PAUSE_REASON_CANARY;
use crate::rollout::simulate::{Sim, invalid_spec};

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
    // The table is about the steps: a manual pause would only stop it.
    ro.spec.paused = false;
    let mut table = Table {
        sim: Sim::with_references(ro),
        iterations: 0,
    };
    table.run_until("the first deploy", |s| {
        s.phase() == Some(RolloutPhase::Healthy)
    })?;
    table.sim.update();
    table.run_steps()
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

/// The simulated cluster and the reconciles spent on it.
struct Table {
    sim: Sim,
    iterations: usize,
}

impl Table {
    /// One reconcile. Err with the message when the planner reports an
    /// invalid spec, or when the simulation runs too long.
    fn reconcile(&mut self) -> Result<Plan, String> {
        self.iterations += 1;
        if self.iterations > MAX_ITERATIONS {
            return Err(format!(
                "the simulated rollout did not finish in {MAX_ITERATIONS} reconciles"
            ));
        }
        let p = self.sim.try_reconcile().map_err(|e| e.to_string())?;
        match invalid_spec(&p) {
            Some(message) => Err(message),
            None => Ok(p),
        }
    }

    /// Reconciles and ticks until `done`; the pauses and timers of a first
    /// deploy are handled as during the steps.
    fn run_until(&mut self, what: &str, done: impl Fn(&Sim) -> bool) -> Result<(), String> {
        let mut idle = 0;
        loop {
            let before = self.sim.ro.status.clone();
            let p = self.reconcile()?;
            if done(&self.sim) {
                return Ok(());
            }
            self.wait(&p, before.as_ref(), &mut idle, what)?;
            self.sim.tick();
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
        let quiet = p.actions.is_empty() && before == Some(&p.status) && self.sim.settled();
        if !quiet {
            *idle = 0;
            return Ok(());
        }
        let status = self.sim.status();
        let paused = status
            .pause_conditions
            .iter()
            .any(|c| c.reason == PAUSE_REASON_CANARY);
        let step = self.sim.ro.spec.strategy.canary.as_ref().and_then(|c| {
            c.steps
                .get(status.current_step_index.unwrap_or(0).max(0) as usize)
        });
        let indefinite = step
            .and_then(|s| s.pause.as_ref())
            .is_some_and(|p| p.duration.is_none());
        if paused && indefinite {
            // kubectl rollouts promote
            self.sim.promote();
            *idle = 0;
        } else if let Some(after) = p.requeue_after {
            self.sim.now += i64::try_from(after.as_secs())
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

    /// Reconciles through the update, a row per completed step.
    fn run_steps(&mut self) -> Result<Vec<Row>, String> {
        let steps = self
            .sim
            .ro
            .spec
            .strategy
            .canary
            .as_ref()
            .map(|c| c.steps.clone())
            .unwrap_or_default();
        let routed = crate::rollout::plan::traffic::routing(&self.sim.ro).is_some();
        let mut rows: Vec<Row> = Vec::new();
        let mut idle = 0;
        while rows.len() < steps.len() {
            let before = self.sim.ro.status.clone();
            let old = before.clone().unwrap_or_default();
            let canary_pods = self.sim.pods_of(&old.current_pod_hash);
            let stable_pods = self.sim.pods_of(&old.stable_rs);
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
            self.sim.tick();
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

#[cfg(test)]
mod tests;
