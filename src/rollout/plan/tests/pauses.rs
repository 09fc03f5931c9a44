//! Pauses and the ways a client ends them. An Inconclusive analysis holds
//! the rollout through a timed pause; a resume that clears only the pause
//! conditions (Argo CD's resume, upstream's plugin) starts one new run, not
//! a run per reconcile; and whatever a client writes, at whatever moment,
//! the controller creates a bounded number of runs and its plans settle.

use super::*;
use crate::api::analysis::{AnalysisPhase, AnalysisRunStatus};
use crate::api::rollout::{BlueGreenStrategy, RolloutAnalysisBackground};
use crate::controller::patch::merge_patch;

const CANARY_PAUSE: &str = "CanaryPauseStep";
const INCONCLUSIVE: &str = "InconclusiveAnalysisRun";

/// A canary of 5 with `steps` and, if asked, background analysis from the
/// first step; deployed once, then updated to app:2.
fn canary_world(steps: Vec<CanaryStep>, background: bool) -> Sim {
    let mut ro = rollout(
        5,
        "app:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    );
    let c = ro.spec.strategy.canary.as_mut().unwrap();
    c.steps = steps;
    if background {
        c.analysis = Some(RolloutAnalysisBackground {
            analysis: check_analysis(),
            starting_step: None,
        });
    }
    let mut w = Sim::new(ro);
    w.templates
        .insert((false, "check".into()), check_template());
    w.settle(false);
    set_image(&mut w, "app:2");
    w
}

fn analysis_step() -> CanaryStep {
    CanaryStep {
        analysis: Some(check_analysis()),
        ..Default::default()
    }
}

fn reasons(w: &Sim) -> Vec<String> {
    w.status()
        .pause_conditions
        .iter()
        .map(|c| c.reason.clone())
        .collect()
}

fn set_phase(w: &mut Sim, name: &str, phase: AnalysisPhase) {
    w.run_mut(name).expect("the run exists").status = Some(AnalysisRunStatus {
        phase: Some(phase),
        ..Default::default()
    });
}

fn background_run(w: &Sim) -> Option<String> {
    w.status()
        .canary
        .current_background_analysis_run_status
        .map(|r| r.name)
}

fn step_run(w: &Sim) -> Option<String> {
    w.status()
        .canary
        .current_step_analysis_run_status
        .map(|r| r.name)
}

/// The scenario: background analysis turns Inconclusive 20 s into a
/// `pause: {duration: 60s}` step. As upstream, the rollout pauses and stays
/// paused past the pause's end (its ReplicaSets are not scaled on), until
/// someone promotes; then one fresh background run starts and the update
/// completes.
#[test]
fn an_inconclusive_run_during_a_timed_pause_holds_the_rollout_until_promoted() {
    let mut w = canary_world(vec![weight(20), pause_for(Some(60))], true);
    w.run_until("the timed pause", |w| reasons(w) == [CANARY_PAUSE]);
    let stable = w.status().stable_rs;
    let canary = w.status().current_pod_hash;
    let run = background_run(&w).expect("background run");
    w.now += 20;
    set_phase(&mut w, &run, AnalysisPhase::Inconclusive);
    w.reconcile();
    assert_eq!(reasons(&w), [CANARY_PAUSE, INCONCLUSIVE]);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    assert_eq!(w.status().message.as_deref(), Some(CANARY_PAUSE));
    for _ in 0..100 {
        w.tick();
        w.now += 1;
        w.reconcile();
    }
    let s = w.status();
    assert_eq!(s.phase, Some(RolloutPhase::Paused), "{s:#?}");
    assert_eq!(s.message.as_deref(), Some(INCONCLUSIVE));
    assert_eq!(
        reasons(&w),
        [INCONCLUSIVE],
        "the timed pause itself is over"
    );
    assert!(s.controller_pause);
    assert_eq!(s.stable_rs, stable, "not promoted");
    assert_eq!(w.pods_of(&canary), 1, "the canary keeps its step's size");
    assert_eq!(w.pods_of(&stable), 4);
    assert_eq!(w.runs.len(), 1, "no new run while paused");

    // Upstream's plugin and Argo CD clear the pause conditions only.
    w.promote();
    w.reconcile();
    assert_eq!(w.runs.len(), 2, "one fresh background run");
    assert!(
        !w.status().controller_pause,
        "the resume is taken into account"
    );
    w.settle(true);
    assert_eq!(w.status().stable_rs, canary);
    assert_eq!(w.runs.len(), 2);
}

/// Argo CD's resume clears only `pauseConditions`. The controller starts
/// one new run and records that it did (controllerPause false), so a new run
/// that is Inconclusive again pauses the rollout again instead of making
/// the controller start another run at every reconcile.
#[test]
fn a_resume_starts_one_run_and_an_inconclusive_one_pauses_again() {
    for background in [false, true] {
        let steps = if background {
            vec![weight(20), pause_for(None), weight(60)]
        } else {
            vec![weight(20), analysis_step(), weight(60)]
        };
        let mut w = canary_world(steps, background);
        let current = if background { background_run } else { step_run };
        w.run_until("a run", |w| current(w).is_some());
        let first = current(&w).unwrap();
        set_phase(&mut w, &first, AnalysisPhase::Inconclusive);
        w.reconcile();
        assert!(reasons(&w).contains(&INCONCLUSIVE.to_string()));
        w.ro.status.as_mut().unwrap().pause_conditions.clear();
        for round in 0..30 {
            w.reconcile();
            if let Some(run) = current(&w)
                && run != first
                && w.runs
                    .iter()
                    .any(|r| r.name_any() == run && r.status.is_none())
            {
                set_phase(&mut w, &run, AnalysisPhase::Inconclusive);
            }
            assert!(
                w.runs.len() <= 2,
                "background {background}, round {round}: {} runs",
                w.runs.len()
            );
            w.tick();
        }
        assert_eq!(w.runs.len(), 2, "background {background}");
        assert_eq!(
            w.phase(),
            Some(RolloutPhase::Paused),
            "background {background}"
        );
        assert!(reasons(&w).contains(&INCONCLUSIVE.to_string()));
    }
}

/// What a client can write to a Rollout, each the way some tool does it.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// Argo CD's resume and upstream's `promote` on most pauses.
    ClearPauseConditions,
    /// A tool that also clears controllerPause.
    ClearPauseAndControllerPause,
    /// A tool that removes only the Inconclusive condition.
    ClearInconclusiveOnly,
    /// Our plugin's `promote` (and `--full`).
    Promote,
    PromoteFull,
    Abort,
    Retry,
    /// `spec.paused` (kubectl rollouts pause / Argo CD's resume of old).
    Pause,
    Unpause,
}

impl Client {
    fn apply(self, w: &mut Sim) {
        let s = w.ro.status.get_or_insert_with(Default::default);
        match self {
            Client::ClearPauseConditions => s.pause_conditions.clear(),
            Client::ClearPauseAndControllerPause => {
                s.pause_conditions.clear();
                s.controller_pause = false;
            }
            Client::ClearInconclusiveOnly => {
                s.pause_conditions.retain(|c| c.reason != INCONCLUSIVE)
            }
            Client::Promote | Client::PromoteFull => {
                let full = matches!(self, Client::PromoteFull);
                let Ok(p) = crate::cli::patches::promote(&w.ro, full) else {
                    return; // nothing to promote: the plugin says so and writes nothing
                };
                let mut value = serde_json::to_value(&w.ro).unwrap();
                if let Some(spec) = &p.spec {
                    merge_patch(&mut value, spec);
                }
                if let Some(status) = &p.status {
                    merge_patch(&mut value, status);
                }
                let spec_changed = p.spec.is_some();
                w.ro = serde_json::from_value(value).unwrap();
                if spec_changed {
                    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap_or(1) + 1);
                }
            }
            Client::Abort => s.abort = true,
            Client::Retry => s.abort = false,
            Client::Pause | Client::Unpause => {
                let paused = matches!(self, Client::Pause);
                if w.ro.spec.paused != paused {
                    w.ro.spec.paused = paused;
                    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap_or(1) + 1);
                }
            }
        }
    }
}

fn client() -> impl Strategy<Value = Client> {
    prop_oneof![
        Just(Client::ClearPauseConditions),
        Just(Client::ClearPauseAndControllerPause),
        Just(Client::ClearInconclusiveOnly),
        Just(Client::Promote),
        Just(Client::PromoteFull),
        Just(Client::Abort),
        Just(Client::Retry),
        Just(Client::Pause),
        Just(Client::Unpause),
    ]
}

/// How an AnalysisRun ends, two ticks after it was created (Running: not
/// before it is terminated).
fn outcome() -> impl Strategy<Value = AnalysisPhase> {
    prop_oneof![
        1 => Just(AnalysisPhase::Successful),
        3 => Just(AnalysisPhase::Inconclusive),
        1 => Just(AnalysisPhase::Failed),
        1 => Just(AnalysisPhase::Running),
    ]
}

/// The rollouts under test, one per kind of pause.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// setWeight, an analysis step, an indefinite pause.
    CanaryStep,
    /// Background analysis through a timed pause and an indefinite one.
    CanaryBackground,
    /// Blue-green with pre- and post-promotion analysis and a manual pause.
    BlueGreen,
}

fn shape_world(shape: Shape) -> Sim {
    match shape {
        Shape::CanaryStep => canary_world(
            vec![weight(20), analysis_step(), pause_for(None), weight(60)],
            false,
        ),
        Shape::CanaryBackground => canary_world(
            vec![weight(20), pause_for(Some(5)), weight(40), pause_for(None)],
            true,
        ),
        Shape::BlueGreen => {
            let mut ro = rollout(3, "app:1", None, None);
            ro.spec.strategy = RolloutStrategy {
                canary: None,
                blue_green: Some(BlueGreenStrategy {
                    active_service: "active".into(),
                    preview_service: Some("preview".into()),
                    auto_promotion_enabled: Some(false),
                    pre_promotion_analysis: Some(check_analysis()),
                    post_promotion_analysis: Some(check_analysis()),
                    scale_down_delay_seconds: Some(5),
                    ..Default::default()
                }),
            };
            let mut w = Sim::new(ro);
            w.services = vec![service("active"), service("preview")];
            w.templates
                .insert((false, "check".into()), check_template());
            for _ in 0..50 {
                w.reconcile();
                w.tick();
            }
            assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
            set_image(&mut w, "app:2");
            w
        }
    }
}

/// Analysis kinds a Rollout of `shape` can start in one walk through its update.
fn gates(shape: Shape) -> usize {
    match shape {
        Shape::CanaryStep | Shape::CanaryBackground => 1,
        Shape::BlueGreen => 2,
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::CanaryStep),
        Just(Shape::CanaryBackground),
        Just(Shape::BlueGreen),
    ]
}

impl Sim {
    /// The AnalysisRun controller: a run ends two ticks after it was
    /// created, with the next outcome; a terminated run ends Successful.
    fn measure(&mut self, outcomes: &[AnalysisPhase], next: &mut usize) {
        for run in &mut self.runs {
            let done = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.completed());
            if done {
                continue;
            }
            let age = self.now
                - run
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(self.now, |t| t.0.as_second());
            let phase = if run.spec.terminate {
                AnalysisPhase::Successful
            } else if age >= 2 {
                let p = outcomes[*next % outcomes.len()];
                *next += 1;
                p
            } else {
                continue;
            };
            if phase == AnalysisPhase::Running && run.status.is_some() {
                continue;
            }
            run.status = Some(AnalysisRunStatus {
                phase: Some(phase),
                ..Default::default()
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever a client writes, whenever: every run the controller creates
    /// is due to a step, a gate or a client's write (never a loop), and
    /// with time and the cluster standing still the plans settle within a
    /// few reconciles (no write loop).
    #[test]
    fn runs_and_writes_stay_bounded_whatever_clients_write(
        shape in shape(),
        outcomes in proptest::collection::vec(outcome(), 1..5),
        script in proptest::collection::vec((0usize..6, client()), 0..12),
    ) {
        let mut w = shape_world(shape);
        let mut next = 0;
        let mut writes = 0;
        let mut created = 0;
        for tick in 0..150usize {
            // Client writes land between reconciles, several at once at times.
            let due: Vec<Client> = script
                .iter()
                .scan(0usize, |at, (gap, c)| { *at += gap; Some((*at, *c)) })
                .filter(|(at, _)| *at == tick)
                .map(|(_, c)| c)
                .collect();
            for c in &due {
                c.apply(&mut w);
                writes += 1;
            }
            // Without time passing or the cluster moving, plans settle.
            let mut settled = false;
            for _ in 0..6 {
                let before = w.ro.status.clone();
                let actions = w.reconcile();
                created += actions
                    .iter()
                    .filter(|a| matches!(a, Action::CreateAnalysisRun(_)))
                    .count();
                if actions.is_empty() && w.ro.status == before {
                    settled = true;
                    break;
                }
            }
            prop_assert!(settled, "tick {}: plans never settle: {:#?}", tick, w.ro.status);
            let bound = gates(shape) * (2 + 2 * writes) + writes;
            prop_assert!(
                created <= bound,
                "tick {}: {} runs created for {} client writes (bound {})",
                tick, created, writes, bound
            );
            w.measure(&outcomes, &mut next);
            w.tick();
        }
    }
}
