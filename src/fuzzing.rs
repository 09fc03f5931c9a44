//! Entry points of the fuzz targets (`fuzz/`), here rather than in the fuzz
//! crate so that `tests/fuzz_corpus.rs` runs the very same code over the
//! committed corpus on stable Rust: a crash the fuzzer found stays fixed
//! without nightly.
//!
//! Each function takes what a user can write (bytes of a manifest, the text
//! of a condition) and runs it through what the controller and the kubectl
//! plugin do with it. They return nothing: the only failure is a panic (or
//! a hang, or runaway memory), which is a bug.

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::analysis::condition::{self, to_expr};
use crate::analysis::plan::{Prepare, Taken, conclude, prepare};
use crate::analysis::template::{self, ArgContext, Templates};
use crate::api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunSpec, AnalysisTemplateSpec, Measurement, Metric,
};
use crate::api::common::AnalysisTemplateRef;
use crate::api::rollout::{AnalysisRunArgument, RolloutAnalysis};
use crate::api::{AnalysisTemplate, ClusterAnalysisTemplate, Rollout};
use crate::rollout::simulate::{Sim, invalid_spec};

/// Reconciles the planner runs per Rollout: enough for a first deploy and
/// an update of a few steps, few enough to keep thousands of runs a second.
const RECONCILES: usize = 24;
/// Canary steps up to which `kubectl rollouts plan` is simulated too.
const MAX_TABLE_STEPS: usize = 6;
/// Reconciles of an AnalysisRun made from a template.
const RUN_RECONCILES: usize = 8;
/// Fixed so that a crash reproduces.
const NOW: i64 = 1_700_000_000;

/// libfuzzer-sys installs a panic hook that aborts at once, even on a
/// panic the code catches on purpose (expr-lang's, which `condition` turns
/// into an Error measurement). Back to the default hook: an uncaught panic
/// still aborts, in libfuzzer-sys's own wrapper, and is reported as a crash.
fn panics_caught_by_the_controller_are_not_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// A manifest (YAML or JSON, one or more documents) as `kubectl rollouts
/// lint` reads it, then each Rollout in it as the controller would see it:
/// validation, the not-implemented refusals, and the planner over a first
/// deploy and an update on a simulated cluster (`kubectl rollouts plan`
/// too, for a canary).
pub fn rollout(data: &[u8]) {
    panics_caught_by_the_controller_are_not_crashes();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::cli::lint::lint(text);
    for ro in documents::<Rollout>(text) {
        check_rollout(&ro);
    }
}

fn check_rollout(ro: &Rollout) {
    let _ = crate::rollout::validate::validate(ro);
    let _ = crate::rollout::validate::invalid_spec_message(ro);
    let _ = crate::rollout::plan::unsupported(ro);
    let _ = exercise(ro, RECONCILES);
    // The plugin's `plan` runs on the same simulator, with its own driver.
    // The step table simulates every step until the end: only for a few
    // steps at a small size, or each input would take a second.
    let steps = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    if steps <= MAX_TABLE_STEPS {
        let replicas = ro.spec.replicas.map(|r| r.clamp(0, 5));
        let _ = crate::cli::plan_table::plan_table(ro, replicas);
    }
    // Arguments the Rollout passes to its analyses, fieldRef included.
    let json = serde_json::to_value(ro).unwrap_or_default();
    let ctx = ArgContext {
        rollout: &json,
        stable_hash: Some("stable"),
        latest_hash: "latest",
    };
    for (_, analysis) in crate::rollout::plan::analysis::analyses(ro) {
        let _ = template::rollout_args(&analysis.args, &ctx);
    }
}

/// Drives the planner through `reconciles` reconciles of a first deploy
/// and then an update, for either strategy and at the Rollout's own size,
/// on a simulated cluster with what the spec names: pods become available
/// one tick after they are asked for, every pause is promoted, analyses
/// succeed. Err with the planner's InvalidSpec message (or what the
/// simulated cluster could not carry out).
fn exercise(rollout: &Rollout, reconciles: usize) -> Result<(), String> {
    let mut ro = rollout.clone();
    ro.spec.paused = false;
    let mut sim = Sim::with_references(ro);
    for i in 0..reconciles {
        let p = sim.try_reconcile().map_err(|e| e.to_string())?;
        if let Some(message) = invalid_spec(&p) {
            return Err(message);
        }
        sim.tick();
        sim.promote();
        if i == reconciles / 2 {
            sim.update();
        }
    }
    Ok(())
}

/// An AnalysisTemplate or ClusterAnalysisTemplate as lint reads it, then as
/// a Rollout's analysis uses it: arguments resolved (each one without a
/// value given one, as upstream validates a template), the run spec built,
/// and an AnalysisRun of it reconciled a few times with every measurement
/// judged by the metric's conditions.
pub fn analysis_template(data: &[u8]) {
    panics_caught_by_the_controller_are_not_crashes();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::cli::lint::lint(text);
    let specs = documents::<AnalysisTemplate>(text)
        .into_iter()
        .map(|t| (false, t.metadata.name.unwrap_or_default(), t.spec))
        .chain(
            documents::<ClusterAnalysisTemplate>(text)
                .into_iter()
                .map(|t| (true, t.metadata.name.unwrap_or_default(), t.spec.template)),
        );
    for (cluster, name, spec) in specs {
        check_template(cluster, name, spec);
    }
}

fn check_template(cluster: bool, name: String, spec: AnalysisTemplateSpec) {
    let given: Vec<AnalysisRunArgument> = spec
        .args
        .iter()
        .filter(|a| a.value.is_none() && a.value_from.is_none())
        .map(|a| AnalysisRunArgument {
            name: a.name.clone(),
            value: Some("fuzz".into()),
            value_from: None,
        })
        .collect();
    let analysis = RolloutAnalysis {
        templates: vec![AnalysisTemplateRef {
            template_name: name.clone(),
            cluster_scope: Some(cluster),
        }],
        args: given,
        ..Default::default()
    };
    let mut templates = Templates::new();
    templates.insert((cluster, name), spec);
    let json = Json::Null;
    let ctx = ArgContext {
        rollout: &json,
        stable_hash: Some("stable"),
        latest_hash: "latest",
    };
    let Ok(args) = template::rollout_args(&analysis.args, &ctx) else {
        return;
    };
    let Ok(run_spec) = template::run_spec(&analysis, &templates, &args) else {
        return;
    };
    reconcile_run(run_spec);
}

/// A few reconciles of a run: each due measurement gets the value 1 (or
/// an error), judged by the metric's conditions as the controller does.
fn reconcile_run(spec: AnalysisRunSpec) {
    let mut run = AnalysisRun {
        metadata: Default::default(),
        spec,
        status: None,
    };
    let mut now = NOW;
    for _ in 0..RUN_RECONCILES {
        let at = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
        let prepared = match prepare(&run, at) {
            Prepare::Finished => return,
            Prepare::Invalid(plan) => {
                run.status = Some(plan.status);
                return;
            }
            Prepare::Measure(p) => p,
        };
        let taken = prepared
            .tasks
            .iter()
            .filter_map(|task| {
                let metric = prepared.metrics.get(task.metric)?;
                Some(Taken {
                    task: task.clone(),
                    measurement: measure(metric, at),
                })
            })
            .collect();
        let plan = conclude(&run, &prepared, taken, at);
        let wait = plan
            .requeue_after
            .map_or(1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        run.status = Some(plan.status);
        now = now.saturating_add(wait.clamp(1, 86_400));
    }
}

fn measure(metric: &Metric, at: Timestamp) -> Measurement {
    let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
    let (phase, message) = match condition::evaluate(metric, &serde_json::json!(1)) {
        Ok(phase) => (phase, None),
        Err(e) => (AnalysisPhase::Error, Some(e.to_string())),
    };
    Measurement {
        phase,
        message,
        started_at: Some(time.clone()),
        finished_at: Some(time),
        value: Some("1".into()),
        metadata: None,
        resume_at: None,
    }
}

/// Input of the condition target, as text so that the corpus reads:
/// line 1 is the successCondition, line 2 the failureCondition (an empty
/// line: none), the rest the provider's result: JSON, or `NaN`, `+Inf`,
/// `-Inf` (Prometheus' special values, which JSON cannot hold), or else
/// the text itself as a string.
pub fn condition(data: &[u8]) {
    panics_caught_by_the_controller_are_not_crashes();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let success = parts.next().unwrap_or_default();
    let failure = parts.next().unwrap_or_default();
    let result = parts.next().unwrap_or_default();
    let value = match result.trim() {
        "NaN" => expr::Value::Float(f64::NAN),
        "+Inf" => expr::Value::Float(f64::INFINITY),
        "-Inf" => expr::Value::Float(f64::NEG_INFINITY),
        t => match serde_json::from_str::<Json>(t) {
            Ok(json) => to_expr(&json),
            Err(_) => expr::Value::String(result.to_string()),
        },
    };
    let metric = Metric {
        name: "fuzz".into(),
        success_condition: Some(success.to_string()),
        failure_condition: Some(failure.to_string()),
        ..Default::default()
    };
    let _ = condition::evaluate_value(&metric, &value);
}

/// Every document of `text` that reads as a `T` (the others are skipped,
/// as they are by lint's schema findings). JSON is YAML, so one parser
/// serves both; a JSON text is also read as JSON, as the controller reads
/// objects from the API server. Reading stops at the first document that
/// is not YAML at all, as lint and the plugin do: after a syntax error
/// serde_yaml's document iterator yields the same error forever.
fn documents<T: for<'de> Deserialize<'de>>(text: &str) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = serde_yaml::Value::deserialize(doc) else {
            break;
        };
        if let Ok(v) = serde_yaml::from_value(value) {
            out.push(v);
        }
    }
    if text.trim_start().starts_with('{')
        && let Ok(v) = serde_json::from_str::<T>(text)
    {
        out.push(v);
    }
    out
}
