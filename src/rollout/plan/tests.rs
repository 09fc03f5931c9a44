//! Planner tests: `plan` driven on the simulated cluster
//! (`crate::rollout::simulate`: ReplicaSets whose new pods become available
//! one tick after they are created), checked against the invariants a
//! rollout must keep.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use proptest::prelude::*;

use super::replica_set::SCALE_DOWN_DEADLINE_ANNOTATION;
use super::replicas::canary_limits;
use super::status::{AVAILABLE, COMPLETED, HEALTHY, INVALID_SPEC, PROGRESSING, find};
use super::workload::WORKLOAD_GENERATION_ANNOTATION;
use super::{Action, after_create, events, plan};
use crate::api::Rollout;
use crate::api::rollout::RolloutPause;
use crate::api::rollout::{CanaryStep, CanaryStrategy, RolloutPhase, RolloutSpec, RolloutStrategy};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::simulate::Sim;
use crate::rollout::snapshot::{ReplicaSetExt, Snapshot};

fn rollout(
    replicas: i32,
    image: &str,
    surge: Option<IntOrString>,
    unavailable: Option<IntOrString>,
) -> Rollout {
    let labels = Some([("app".to_string(), "demo".to_string())].into());
    let mut ro = Rollout::new(
        "demo",
        RolloutSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                match_expressions: None,
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: RolloutStrategy {
                canary: Some(CanaryStrategy {
                    max_surge: surge,
                    max_unavailable: unavailable,
                    ..Default::default()
                }),
                blue_green: None,
            },
            ..Default::default()
        },
    );
    ro.metadata.namespace = Some("ns".into());
    ro.metadata.uid = Some("uid-1".into());
    ro.metadata.generation = Some(1);
    ro
}

impl Sim {
    /// One reconcile; a plan the simulated cluster cannot carry out fails
    /// the test.
    fn reconcile(&mut self) -> Vec<Action> {
        match self.try_reconcile() {
            Ok(p) => p.actions,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs reconcile+tick until the plan is empty and the phase Healthy,
    /// checking the invariants at every step once the first deploy is done.
    fn settle(&mut self, check_availability: bool) {
        let replicas = self.ro.spec.replicas_or_default();
        let c = self.ro.spec.strategy.canary.clone().unwrap();
        let limits =
            canary_limits(c.max_surge.as_ref(), c.max_unavailable.as_ref(), replicas).unwrap();
        for _ in 0..500 {
            let actions = self.reconcile();
            assert!(
                self.total_spec() <= replicas + limits.max_surge,
                "surge exceeded: {} pods for {replicas} replicas, maxSurge {}",
                self.total_spec(),
                limits.max_surge
            );
            if check_availability {
                assert!(
                    self.available() >= replicas - limits.max_unavailable,
                    "availability {} fell below {replicas} - {}",
                    self.available(),
                    limits.max_unavailable
                );
            }
            if actions.is_empty() && self.phase() == Some(RolloutPhase::Healthy) {
                // A settled rollout plans nothing and keeps the same status.
                let before = self.ro.status.clone();
                assert!(self.reconcile().is_empty(), "settled plan is not empty");
                assert_eq!(before, self.ro.status, "settled status changes on replan");
                return;
            }
            self.tick();
        }
        panic!("rollout did not settle: {:#?}", self.ro.status);
    }
}

fn set_image(w: &mut Sim, image: &str) {
    let t = w.ro.spec.template.as_mut().unwrap();
    t.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap_or(1) + 1);
}

#[test]
fn first_deploy_creates_replica_set_and_becomes_healthy() {
    let mut w = Sim::new(rollout(3, "nginx:1", None, None));
    let actions = w.reconcile();
    let Action::CreateReplicaSet(rs) = &actions[0] else {
        panic!("expected a create, got {actions:?}")
    };
    let hash =
        w.ro.status
            .as_ref()
            .unwrap()
            .current_pod_hash
            .clone()
            .unwrap();
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("demo-{hash}").as_str())
    );
    assert_eq!(
        rs.metadata.labels.as_ref().unwrap()["rollouts-pod-template-hash"],
        hash
    );
    assert_eq!(
        rs.metadata.annotations.as_ref().unwrap()["rollout.argoproj.io/revision"],
        "1"
    );
    assert_eq!(
        rs.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["rollouts-pod-template-hash"],
        hash
    );
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Rollout", "uid-1", Some(true))
    );
    assert!(actions.contains(&Action::SetRolloutRevision { revision: 1 }));
    let progressing = find(&w.ro.status.as_ref().unwrap().conditions, PROGRESSING).unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
    assert_eq!(
        progressing.message.clone().unwrap(),
        format!("Created new replica set \"demo-{hash}\"")
    );

    w.settle(false);
    let s = w.ro.status.clone().unwrap();
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas
        ),
        (3, 3, 3, 3)
    );
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert_eq!(s.selector.as_deref(), Some("app=demo"));
    assert_eq!(s.observed_generation.as_deref(), Some("1"));
    assert_eq!(s.phase, Some(RolloutPhase::Healthy));
    for (t, want) in [
        (HEALTHY, "True"),
        (AVAILABLE, "True"),
        (COMPLETED, "True"),
        (PROGRESSING, "True"),
    ] {
        assert_eq!(
            find(&s.conditions, t).map(|c| c.status.as_str()),
            Some(want),
            "{t}"
        );
    }
    assert_eq!(
        find(&s.conditions, PROGRESSING).unwrap().reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
}

#[test]
fn image_change_rolls_within_limits_and_promotes_new_stable() {
    let mut w = Sim::new(rollout(
        4,
        "nginx:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(1)),
    ));
    w.settle(false);
    let first = w.ro.status.clone().unwrap().stable_rs;
    set_image(&mut w, "nginx:2");
    w.settle(true);
    let s = w.ro.status.clone().unwrap();
    assert_ne!(s.stable_rs, first);
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert_eq!(w.replica_sets.len(), 2);
    let old = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == first.as_deref())
        .unwrap();
    assert_eq!(old.spec_replicas(), 0, "old ReplicaSet scaled to zero");
    let new = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == s.current_pod_hash.as_deref())
        .unwrap();
    assert_eq!(new.revision(), 2);
}

#[test]
fn going_back_to_an_old_template_reuses_its_replica_set() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.settle(false);
    set_image(&mut w, "nginx:2");
    w.settle(true);
    set_image(&mut w, "nginx:1");
    let actions = w.reconcile();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetReplicaSetRevision { revision: 3, .. })),
        "old template becomes revision 3: {actions:?}"
    );
    w.settle(true);
    assert_eq!(w.replica_sets.len(), 2, "no third ReplicaSet");
}

/// The benchmark's Rollout: 2 replicas, setWeight 50, pause 1s, setWeight 100.
fn bench_rollout() -> Rollout {
    let mut ro = rollout(2, "nginx:1", None, None);
    ro.spec.strategy.canary.as_mut().unwrap().steps =
        vec![weight(50), pause_for(Some(1)), weight(100)];
    ro
}

/// The controller plans once more from what a create returned (the
/// Rollout and the new ReplicaSet as written): that plan must be the one
/// the next reconcile would make, and it scales the new ReplicaSet.
#[test]
fn the_plan_after_a_create_is_the_next_reconciles_and_scales_the_new_replica_set() {
    let mut w = Sim::new(bench_rollout());
    for update in [false, true] {
        if update {
            w.settle(false);
            set_image(&mut w, "nginx:2");
        }
        let before = w.snapshot();
        let first = plan(&before, Timestamp::from_second(w.now).unwrap());
        w.reconcile();
        let created = w.replica_sets.last().cloned().unwrap();
        assert!(
            matches!(first.actions.first(), Some(Action::CreateReplicaSet(rs)) if rs.metadata.name == created.metadata.name),
            "update {update}: {:?}",
            first.actions
        );
        let next = after_create(&before, &first, w.ro.clone(), created.clone())
            .expect("a plan that only creates");
        let now = Timestamp::from_second(w.now).unwrap();
        let second = plan(&next, now);
        assert_eq!(second, plan(&w.snapshot(), now), "update {update}");
        let scaled_up = second.actions.iter().any(|a| {
            matches!(a, Action::ScaleReplicaSet { name, from: 0, to, .. }
                if Some(name) == created.metadata.name.as_ref() && *to > 0)
        });
        assert!(scaled_up, "update {update}: {:?}", second.actions);

        // As the API server returns it: with a version, which the
        // ReplicaSet controller's first status write changes at once. The
        // scale must not be conditional on it.
        let mut versioned = created.clone();
        versioned.metadata.resource_version = Some("41".into());
        let next = after_create(&before, &first, w.ro.clone(), versioned).unwrap();
        let conditional = plan(&next, now).actions.into_iter().any(|a| {
            matches!(a, Action::ScaleReplicaSet { name, resource_version: Some(_), .. }
                if Some(&name) == created.metadata.name.as_ref())
        });
        assert!(!conditional, "update {update}");

        // The Rollout came back with a newer spec: what else was read
        // (Services, templates) was for the old one.
        let mut edited = w.ro.clone();
        edited.metadata.generation = Some(edited.metadata.generation.unwrap_or(1) + 1);
        assert!(after_create(&before, &first, edited, created.clone()).is_none());
    }
    // A plan that also changed a Service: the snapshot cannot show that.
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    let mut snap = w.snapshot();
    for svc in snap.services.values_mut() {
        svc.spec.as_mut().unwrap().selector = None;
    }
    let first = plan(&snap, Timestamp::from_second(w.now).unwrap());
    assert!(
        first
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetServiceSelector { .. })),
        "{:?}",
        first.actions
    );
    let created = first.actions.iter().find_map(|a| match a {
        Action::CreateReplicaSet(rs) => Some((**rs).clone()),
        _ => None,
    });
    let created = created.expect("the plan creates the new ReplicaSet");
    assert!(after_create(&snap, &first, w.ro.clone(), created).is_none());
}

#[test]
fn a_step_done_and_what_follows_from_it_are_one_status_write() {
    let mut w = Sim::new(bench_rollout());
    w.settle(false);
    set_image(&mut w, "nginx:2");
    let (mut paused_with, mut completed_with) = (None, None);
    for _ in 0..50 {
        let before = w.status().current_step_index;
        let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
        let reasons: Vec<&str> = p.events.iter().map(|e| e.reason).collect();
        match (before, p.status.current_step_index) {
            (Some(0), Some(1)) => {
                paused_with = Some((p.status.clone(), reasons));
                // Woken when the 1 s pause ends, not only by a watch event.
                let wake = p.requeue_after.expect("a timed pause requeues");
                assert!(wake <= std::time::Duration::from_secs(1), "{wake:?}");
                // What was written is settled: planning again changes nothing.
                w.reconcile();
                let again = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
                assert!(again.actions.is_empty(), "{:?}", again.actions);
                assert_eq!(Some(&again.status), w.ro.status.as_ref());
            }
            (Some(2), Some(3)) => completed_with = Some((p.status.clone(), reasons)),
            _ => {}
        }
        w.reconcile();
        if w.phase() == Some(RolloutPhase::Healthy) && completed_with.is_some() {
            break;
        }
        w.tick();
    }
    // setWeight 50 done: the pause after it starts in the same write.
    let (status, reasons) = paused_with.expect("step 0 completes");
    assert_eq!(status.pause_conditions.len(), 1, "{status:#?}");
    assert_eq!(status.phase, Some(RolloutPhase::Paused));
    assert_eq!(reasons, [events::STEP_COMPLETED, events::PAUSED]);
    // The last step done: the rollout is complete in the same write.
    let (status, reasons) = completed_with.expect("step 2 completes");
    assert_eq!(status.phase, Some(RolloutPhase::Healthy), "{status:#?}");
    assert_eq!(status.stable_rs, status.current_pod_hash);
    assert!(reasons.contains(&events::STEP_COMPLETED), "{reasons:?}");
    assert!(reasons.contains(&events::COMPLETED), "{reasons:?}");
}

#[test]
fn only_a_status_change_that_does_not_start_an_abort_chains() {
    let ro = rollout(2, "nginx:1", None, None);
    let status = |abort: bool| crate::api::rollout::RolloutStatus {
        abort,
        current_step_index: Some(1),
        ..Default::default()
    };
    let status_only = |s| super::Plan {
        status: s,
        ..Default::default()
    };
    assert!(super::chains(&ro, &status_only(status(false))));
    // The progress deadline's reason is written before the abort's.
    assert!(!super::chains(&ro, &status_only(status(true))));
    // Nothing changed: nothing to chain.
    let mut settled = ro.clone();
    settled.status = Some(status(false));
    assert!(!super::chains(&settled, &status_only(status(false))));
    // Actions end the chain.
    let mut with_actions = status_only(status(false));
    with_actions
        .actions
        .push(Action::DeleteReplicaSet { name: "x".into() });
    assert!(!super::chains(&ro, &with_actions));
}

#[test]
fn manual_pause_holds_scaling() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.settle(false);
    w.ro.spec.paused = true;
    set_image(&mut w, "nginx:2");
    for _ in 0..5 {
        let actions = w.reconcile();
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::ScaleReplicaSet { .. })),
            "{actions:?}"
        );
        w.tick();
    }
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    assert_eq!(
        w.ro.status.as_ref().unwrap().message.as_deref(),
        Some("manually paused")
    );
    w.ro.spec.paused = false;
    w.settle(true);
}

#[test]
fn manual_pause_still_applies_a_change_of_replicas() {
    let mut w = Sim::new(rollout(4, "nginx:1", None, None));
    w.settle(false);
    w.ro.spec.paused = true;
    w.ro.spec.replicas = Some(6);
    for _ in 0..10 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.total_spec(), 6);
    assert_eq!(w.available(), 6);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
}

#[test]
fn a_new_min_ready_seconds_reaches_the_current_replica_set() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.settle(false);
    w.ro.spec.min_ready_seconds = 7;
    let actions = w.reconcile();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetMinReadySeconds { seconds: 7, .. })),
        "{actions:?}"
    );
    assert!(w.reconcile().is_empty(), "applied once");
}

#[test]
fn progress_deadline_marks_degraded_and_requeues() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.ro.spec.progress_deadline_seconds = Some(30);
    w.settle(false);
    set_image(&mut w, "nginx:2");
    let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    w.reconcile();
    assert_eq!(p.requeue_after.map(|d| d.as_secs()), Some(30));
    // The new pods never become available: no tick, time passes.
    w.now += 31;
    w.reconcile();
    let s = w.ro.status.clone().unwrap();
    let c = find(&s.conditions, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert!(
        s.message
            .unwrap()
            .starts_with("ProgressDeadlineExceeded: ReplicaSet")
    );
}

fn invalid_message(ro: &Rollout) -> String {
    let p = plan(
        &Snapshot::new(ro.clone(), vec![]),
        Timestamp::from_second(0).unwrap(),
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase, Some(RolloutPhase::Degraded));
    find(&p.status.conditions, INVALID_SPEC)
        .and_then(|c| c.message.clone())
        .expect("InvalidSpec condition")
}

#[test]
fn invalid_specs_get_upstream_messages() {
    let mut ro = rollout(1, "x", None, None);
    ro.spec.strategy = RolloutStrategy::default();
    assert_eq!(
        invalid_message(&ro),
        "The Rollout \"demo\" is invalid: spec.strategy.strategy: Required value: Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'"
    );
    let mut ro = rollout(1, "x", None, None);
    ro.spec.strategy.blue_green = Some(Default::default());
    assert_eq!(
        invalid_message(&ro),
        "The Rollout \"demo\" is invalid: spec.strategy.strategy: Invalid value: \"blueGreen: true canary: true\": Multiple Strategies can not be listed"
    );
    let mut ro = rollout(1, "x", None, None);
    ro.spec.selector.as_mut().unwrap().match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    assert_eq!(
        invalid_message(&ro),
        "The Rollout \"demo\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"demo\"}: `selector` does not match template `labels`"
    );
    let ro = rollout(
        1,
        "x",
        Some(IntOrString::Int(0)),
        Some(IntOrString::String("0%".into())),
    );
    assert!(invalid_message(&ro).ends_with("MaxSurge and MaxUnavailable both can not be zero"));
    let mut ro = rollout(1, "x", None, None);
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![CanaryStep {
        set_weight: Some(120),
        ..Default::default()
    }];
    assert!(invalid_message(&ro).ends_with("SetWeight needs to be between 0 and 100"));
}

#[test]
fn features_not_yet_implemented_are_reported_not_ignored() {
    let mut ro = rollout(1, "x", None, None);
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![CanaryStep {
        experiment: Some(Default::default()),
        ..Default::default()
    }];
    assert!(
        invalid_message(&ro).contains(
            "experiment steps, which this version of the controller does not implement yet"
        )
    );
}

#[test]
fn invalid_spec_clears_once_fixed() {
    let mut w = Sim::new(rollout(1, "x", None, None));
    w.ro.spec.selector = None;
    w.reconcile();
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    w.ro.spec.selector = rollout(1, "x", None, None).spec.selector;
    w.settle(false);
    assert!(find(&w.ro.status.as_ref().unwrap().conditions, INVALID_SPEC).is_none());
}

fn int_or_percent() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        (0i32..4).prop_map(IntOrString::Int),
        (0i32..=100).prop_map(|p| IntOrString::String(format!("{p}%")))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For any size and limits: an update never drops availability below
    /// replicas - maxUnavailable, never exceeds replicas + maxSurge, ends
    /// Healthy on the new template, and then plans nothing more.
    #[test]
    fn rolling_update_keeps_invariants(
        replicas in 1i32..12,
        surge in int_or_percent(),
        unavailable in int_or_percent(),
        second_change in any::<bool>(),
    ) {
        let zero = |v: &IntOrString| matches!(v, IntOrString::Int(0)) || *v == IntOrString::String("0%".into());
        prop_assume!(!(zero(&surge) && zero(&unavailable)));
        let mut w = Sim::new(rollout(replicas, "app:1", Some(surge), Some(unavailable)));
        w.settle(false);
        set_image(&mut w, "app:2");
        if second_change {
            // a second image change in the middle of the first update
            w.reconcile();
            w.tick();
            w.reconcile();
            set_image(&mut w, "app:3");
        }
        w.settle(true);
        let s = w.ro.status.clone().unwrap();
        prop_assert_eq!(s.available_replicas, replicas);
        prop_assert_eq!(&s.stable_rs, &s.current_pod_hash);
        let live: Vec<_> = w.replica_sets.iter().filter(|r| r.spec_replicas() > 0).collect();
        prop_assert_eq!(live.len(), 1);
    }
}

fn weight(w: i32) -> CanaryStep {
    CanaryStep {
        set_weight: Some(w),
        ..Default::default()
    }
}

fn pause_for(secs: Option<i32>) -> CanaryStep {
    CanaryStep {
        pause: Some(RolloutPause {
            duration: secs.map(IntOrString::Int),
        }),
        ..Default::default()
    }
}

/// AnalysisTemplate `check`: one metric `m` (its runs are finished by hand).
/// An analysis of the template `check` (`check_template`).
/// A canary paused at its second step under a `currentStepHash` this
/// controller wrote before it matched upstream (serde's JSON, which
/// differs from Go's where Go escapes `&`) stays at that step after an
/// upgrade, and the status gets upstream's hash; a real change of steps
/// starts them over.
#[test]
fn a_former_steps_hash_keeps_the_step_and_changed_steps_restart() {
    let mut ro = rollout(
        5,
        "app:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    );
    let mut analysis = check_analysis();
    analysis.args = vec![crate::api::rollout::AnalysisRunArgument {
        name: "query".into(),
        value: Some("a&b".into()),
        value_from: None,
    }];
    let steps = vec![
        weight(25),
        pause_for(None),
        weight(50),
        pause_for(None),
        CanaryStep {
            analysis: Some(analysis),
            ..Default::default()
        },
    ];
    ro.spec.strategy.canary.as_mut().unwrap().steps = steps.clone();
    let mut w = Sim::new(ro);
    w.templates
        .insert((false, "check".into()), check_template());
    w.settle(false);
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.status().current_step_index == Some(1)
    });
    w.promote();
    w.run_until("the second pause", |w| {
        w.status().current_step_index == Some(3)
    });

    let upstream = crate::rollout::hash::steps_hash(&steps);
    let former = crate::rollout::hash::safe_encode(&{
        // FNV-1a over serde's JSON, as this controller hashed steps before.
        let mut h: u32 = 0x811c_9dc5;
        for b in serde_json::to_vec(&steps).unwrap() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h.to_string()
    });
    assert_ne!(
        former, upstream,
        "the steps must hash differently in serde's JSON"
    );
    assert_eq!(
        w.status().current_step_hash.as_deref(),
        Some(upstream.as_str())
    );
    w.ro.status.as_mut().unwrap().current_step_hash = Some(former);
    w.reconcile();
    let s = w.status();
    assert_eq!(s.current_step_index, Some(3), "still at the second pause");
    assert_eq!(s.current_step_hash.as_deref(), Some(upstream.as_str()));

    // New steps: the update starts over.
    w.ro.spec.strategy.canary.as_mut().unwrap().steps = vec![weight(10), pause_for(None)];
    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap_or(1) + 1);
    w.reconcile();
    assert_eq!(w.status().current_step_index, Some(0));
}

fn check_analysis() -> crate::api::rollout::RolloutAnalysis {
    crate::api::rollout::RolloutAnalysis {
        templates: vec![crate::api::common::AnalysisTemplateRef {
            template_name: "check".into(),
            cluster_scope: None,
        }],
        ..Default::default()
    }
}

fn check_template() -> crate::api::analysis::AnalysisTemplateSpec {
    crate::api::analysis::AnalysisTemplateSpec {
        metrics: vec![crate::api::analysis::Metric {
            name: "m".into(),
            provider: crate::api::analysis::MetricProvider {
                web: Some(crate::api::analysis::WebMetric {
                    url: "http://check.invalid".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn service(name: &str) -> Service {
    let mut s = Service::default();
    s.metadata.name = Some(name.into());
    s
}

/// The scenario: 5 replicas, 20 / pause / 40 / pause 2s / 60 / 80.
fn stepped_world() -> Sim {
    let mut ro = rollout(
        5,
        "app:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    );
    let c = ro.spec.strategy.canary.as_mut().unwrap();
    c.steps = vec![
        weight(20),
        pause_for(None),
        weight(40),
        pause_for(Some(2)),
        weight(60),
        weight(80),
    ];
    c.stable_service = Some("stable".into());
    c.canary_service = Some("canary".into());
    let mut w = Sim::new(ro);
    w.services = vec![service("stable"), service("canary")];
    w.settle(false);
    w
}

impl Sim {
    /// The messages of the events published with `reason`, oldest first.
    fn event_messages(&self, reason: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.message.clone())
            .collect()
    }

    /// Runs until `done` holds, checking surge and availability throughout.
    fn run_until(&mut self, what: &str, done: impl Fn(&Sim) -> bool) {
        for _ in 0..200 {
            self.reconcile();
            assert!(
                self.total_spec() <= 6,
                "surge exceeded: {}",
                self.total_spec()
            );
            assert!(
                self.available() >= 5 || self.replica_sets.len() == 1,
                "availability {}",
                self.available()
            );
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("never reached: {what}; status {:#?}", self.ro.status);
    }
}

#[test]
fn a_step_pause_shows_in_the_conditions_as_upstreams() {
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    let reason = |w: &Sim, kind: &str| {
        let c = w.status().conditions.into_iter().find(|c| c.r#type == kind);
        c.map(|c| (c.status, c.reason.unwrap_or_default()))
    };
    // What dashboards (rollout_info's phase) and upstream's checkPausedConditions see.
    assert_eq!(
        reason(&w, "Progressing"),
        Some(("Unknown".into(), "RolloutPaused".into()))
    );
    assert_eq!(
        reason(&w, "Paused"),
        Some(("True".into(), "RolloutPaused".into()))
    );
    w.promote();
    w.reconcile();
    assert_eq!(
        reason(&w, "Progressing"),
        Some(("True".into(), "ReplicaSetUpdated".into())),
        "resumed: progressing again, with a fresh deadline"
    );
    assert_eq!(
        reason(&w, "Paused"),
        Some(("False".into(), "RolloutResumed".into()))
    );
}

/// The plugin's promote of a manually paused rollout is two writes: the
/// status (pause conditions cleared), then the spec (`paused: false`). A
/// reconcile between the two must keep the resume for when the spec is
/// unpaused, not restart the pause step.
#[test]
fn a_promote_of_a_manual_pause_survives_a_reconcile_between_its_two_patches() {
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    assert_eq!(w.status().current_step_index, Some(1));
    w.ro.spec.paused = true; // kubectl rollouts pause
    w.reconcile();
    w.promote(); // the status patch
    for _ in 0..3 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(
        w.status().current_step_index,
        Some(1),
        "still paused by the spec"
    );
    assert!(w.status().controller_pause, "the resume is kept");
    w.ro.spec.paused = false; // the spec patch
    w.reconcile();
    let s = w.status();
    assert_eq!(s.current_step_index, Some(2), "the pause step is done");
    assert!(s.pause_conditions.is_empty(), "{:?}", s.pause_conditions);
}

#[test]
fn steps_pause_and_promote_to_completion() {
    let mut w = stepped_world();
    let stable = w.status().stable_rs;
    assert_eq!(w.selector("stable"), stable);
    assert_eq!(
        w.selector("canary"),
        stable,
        "no canary yet: canary Service on stable"
    );
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    let s = w.status();
    assert_eq!(s.current_step_index, Some(1));
    assert_eq!(s.message.as_deref(), Some("CanaryPauseStep"));
    assert_eq!(w.pods_of(&s.current_pod_hash), 1, "20% of 5");
    // upstream's split of 5 pods at 20% with maxSurge 1 is 1 canary + 4 stable
    assert_eq!(w.pods_of(&stable), 4);
    assert_eq!(
        w.selector("canary"),
        s.current_pod_hash,
        "canary Service on the canary pods"
    );
    assert_eq!(w.selector("stable"), stable);

    // Still paused later: an indefinite pause waits for a promote.
    for _ in 0..5 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.status().current_step_index, Some(1));

    w.promote();
    w.run_until("the timed pause", |w| {
        w.status().current_step_index == Some(3) && !w.status().pause_conditions.is_empty()
    });
    let s = w.status();
    assert_eq!(w.pods_of(&s.current_pod_hash), 2, "40% of 5");
    let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    assert!(
        p.requeue_after.is_some_and(|d| d.as_secs() <= 2),
        "timed pause requeues: {:?}",
        p.requeue_after
    );
    // The wait counts from the exact time, not the whole second: 1.7 s into
    // the 2 s pause, it is due in 300 ms.
    let start = s.pause_conditions[0].start_time.0;
    let exact = start + k8s_openapi::jiff::SignedDuration::from_millis(1700);
    let p = plan(&w.snapshot(), exact);
    assert_eq!(p.requeue_after, Some(std::time::Duration::from_millis(300)));
    w.now += 3; // the 2s pause passes
    w.run_until("Healthy", |w| w.phase() == Some(RolloutPhase::Healthy));
    let s = w.status();
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert_eq!(s.current_step_index, Some(6));
    assert_eq!(w.pods_of(&stable), 0, "old stable scaled to zero");
    assert_eq!(w.selector("stable"), s.current_pod_hash);
    assert_eq!(w.selector("canary"), s.current_pod_hash);
}

#[test]
fn abort_returns_everything_to_stable_and_retry_starts_over() {
    let mut w = stepped_world();
    let stable = w.status().stable_rs;
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    let canary = w.status().current_pod_hash;

    w.ro.status.as_mut().unwrap().abort = true; // kubectl rollouts abort
    w.reconcile();
    assert_eq!(
        w.selector("canary"),
        stable,
        "abort moves canary traffic back at once"
    );
    w.run_until("canary at 0", |w| w.pods_of(&canary) == 0);
    let s = w.status();
    assert_eq!(w.pods_of(&stable), 5);
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert_eq!(
        s.message.as_deref(),
        Some("RolloutAborted: Rollout aborted update to revision 2")
    );
    assert_eq!(s.current_step_index, Some(0));
    assert!(s.aborted_at.is_some());
    assert_eq!(s.stable_rs, stable);

    w.ro.status.as_mut().unwrap().abort = false; // kubectl rollouts retry
    w.run_until("paused again at step 1", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    assert_eq!(w.pods_of(&canary), 1);
    assert!(w.status().aborted_at.is_none());
}

#[test]
fn promote_full_skips_the_remaining_steps() {
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    w.ro.status.as_mut().unwrap().promote_full = true;
    w.run_until("Healthy", |w| w.phase() == Some(RolloutPhase::Healthy));
    let s = w.status();
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert!(!s.promote_full);
}

/// Upstream clears the abort on `promote --full` and promotes the update
/// fully (canary as blue-green).
#[test]
fn promote_full_after_an_abort_promotes_the_update() {
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    let canary = w.status().current_pod_hash;
    w.ro.status.as_mut().unwrap().abort = true;
    w.run_until("the abort done", |w| {
        w.phase() == Some(RolloutPhase::Degraded) && w.pods_of(&w.status().current_pod_hash) == 0
    });
    // kubectl rollouts promote --full
    let p = crate::cli::patches::promote(&w.ro, true).expect("something to promote");
    assert_eq!(
        p.status,
        Some(serde_json::json!({"status": {"promoteFull": true}}))
    );
    w.ro.status.as_mut().unwrap().promote_full = true;
    w.run_until("Healthy", |w| w.phase() == Some(RolloutPhase::Healthy));
    let s = w.status();
    assert_eq!(s.stable_rs, canary);
    assert!(!s.abort && s.aborted_at.is_none() && !s.promote_full);
    assert_eq!(w.pods_of(&canary), 5);
}

/// Upstream's step kinds may share a step: one of setWeight, pause,
/// experiment and analysis, with setCanaryScale, setHeaderRoute,
/// setMirrorRoute or plugin beside it. Two of the first four are refused.
#[test]
fn steps_with_two_keys_are_accepted_as_upstream_does() {
    let mut ro = rollout(1, "x", None, None);
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![CanaryStep {
        set_weight: Some(20),
        pause: Some(RolloutPause { duration: None }),
        ..Default::default()
    }];
    assert_eq!(
        invalid_message(&ro),
        "The Rollout \"demo\" is invalid: spec.strategy.canary.steps[0]: Invalid value: \"step.Experiment: false step.Pause: true step.SetWeight: true step.Analysis: false\": Step must have one of the following set: experiment, setWeight, setCanaryScale, plugin or pause"
    );
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![CanaryStep::default()];
    assert!(invalid_message(&ro).contains(
        "steps[0]: Invalid value: \"step.Experiment: true step.Pause: true step.SetWeight: true step.Analysis: true step.SetCanaryScale: true step.SetHeaderRoute: true step.SetMirrorRoute: true step.Plugin: true\": Step must have one"
    ));
    // A pause with a setCanaryScale beside it (needs routing: checked
    // further on, not refused as a step shape).
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![CanaryStep {
        pause: Some(RolloutPause { duration: None }),
        set_canary_scale: Some(crate::api::rollout::SetCanaryScale {
            replicas: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let msg = invalid_message(&ro);
    assert!(!msg.contains("Step must have"), "{msg}");
}

/// What this version does not implement is said first, and the rest is
/// validated as that feature needs it: Istio subset-level routing (a
/// destinationRule) needs no canary and stable Services.
#[test]
fn a_feature_not_implemented_is_named_before_other_errors() {
    let mut ro = rollout(1, "x", None, None);
    let c = ro.spec.strategy.canary.as_mut().unwrap();
    c.traffic_routing = Some(crate::api::rollout::RolloutTrafficRouting {
        istio: Some(serde_json::json!({
            "virtualService": {"name": "rollouts-demo-vsvc", "routes": ["primary"]},
            "destinationRule": {"name": "rollouts-demo-destrule", "canarySubsetName": "canary", "stableSubsetName": "stable"}
        })),
        ..Default::default()
    });
    assert_eq!(
        invalid_message(&ro),
        "The Rollout \"demo\" uses trafficRouting.istio, which this version of the controller does not implement yet"
    );
    assert_eq!(crate::rollout::validate::invalid_spec_message(&ro), None);
    // Host-level Istio routing does need them, as upstream checks.
    let tr = ro
        .spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .traffic_routing
        .as_mut()
        .unwrap();
    tr.istio = Some(serde_json::json!({"virtualService": {"name": "v"}}));
    assert!(
        crate::rollout::validate::invalid_spec_message(&ro)
            .is_some_and(|m| m.contains("Canary service and Stable service must to be set"))
    );
    // Still, what is not implemented is what the status says.
    assert!(
        invalid_message(&ro).contains("uses trafficRouting.istio"),
        "{}",
        invalid_message(&ro)
    );
}

/// progressDeadlineAbort set after the deadline passed aborts at once, as
/// upstream; a deadline does not run out on an analysis step (upstream's
/// isIndefiniteStep).
#[test]
fn progress_deadline_abort_turned_on_after_the_deadline_aborts() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.ro.spec.progress_deadline_seconds = Some(30);
    w.settle(false);
    let stable = w.status().stable_rs;
    set_image(&mut w, "nginx:2");
    w.reconcile();
    w.now += 31; // the new pods never become available
    w.reconcile();
    let s = w.status();
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert!(!s.abort, "no abort asked for yet");
    w.ro.spec.progress_deadline_abort = true;
    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap() + 1);
    w.reconcile();
    assert!(w.status().abort, "{:#?}", w.status());
    for _ in 0..10 {
        w.reconcile();
        w.tick();
    }
    let s = w.status();
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .starts_with("RolloutAborted: ")
    );
    assert_eq!(
        w.pods_of(&s.current_pod_hash),
        0,
        "the canary is scaled down"
    );
    assert_eq!(w.pods_of(&stable), 2);
}

#[test]
fn the_progress_deadline_does_not_run_out_on_an_analysis_step() {
    let mut ro = rollout(
        2,
        "nginx:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    );
    ro.spec.progress_deadline_seconds = Some(30);
    ro.spec.progress_deadline_abort = true;
    ro.spec.strategy.canary.as_mut().unwrap().steps = vec![
        weight(50),
        CanaryStep {
            analysis: Some(crate::api::rollout::RolloutAnalysis {
                templates: vec![crate::api::common::AnalysisTemplateRef {
                    template_name: "check".into(),
                    cluster_scope: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut w = Sim::new(ro);
    w.templates
        .insert((false, "check".into()), check_template());
    w.settle(false);
    set_image(&mut w, "nginx:2");
    for _ in 0..50 {
        if w.status().current_step_index == Some(1) {
            break;
        }
        w.reconcile();
        w.tick();
    }
    assert_eq!(
        w.status().current_step_index,
        Some(1),
        "at the analysis step"
    );
    w.now += 600; // a long analysis
    w.reconcile();
    let s = w.status();
    assert!(!s.abort, "{s:#?}");
    assert_ne!(s.phase, Some(RolloutPhase::Degraded));
}

/// Upstream's SwitchService (each Service selector switch, with the hash it
/// had) and RolloutNotCompleted (an update starts), which its notification
/// triggers and dashboards read.
#[test]
fn service_switches_and_a_new_update_are_reported_as_upstream() {
    let mut w = stepped_world();
    let stable = w.status().stable_rs.unwrap();
    assert_eq!(
        w.event_messages(events::SWITCH_SERVICE),
        [
            format!("Switched selector for service 'stable' from '' to '{stable}'"),
            format!("Switched selector for service 'canary' from '' to '{stable}'"),
        ]
    );
    assert!(
        !w.events.iter().any(|e| e.reason == events::NOT_COMPLETED),
        "the first deploy completes at once: {:?}",
        w.events
    );
    w.events.clear();
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    let canary = w.status().current_pod_hash.unwrap();
    assert_eq!(
        w.event_messages(events::NOT_COMPLETED),
        [format!(
            "Rollout not completed, started update to revision 2 ({canary})"
        )],
        "{:?}",
        w.events
    );
    assert!(w.events.iter().any(|e| e.reason == events::SWITCH_SERVICE
        && e.message
            == format!("Switched selector for service 'canary' from '{stable}' to '{canary}'")));
}

#[test]
fn going_back_to_the_stable_template_skips_the_steps() {
    let mut w = stepped_world();
    let first = w.status().stable_rs;
    set_image(&mut w, "app:2");
    w.run_until("the first pause", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    set_image(&mut w, "app:1");
    w.events.clear();
    w.run_until("Healthy", |w| w.phase() == Some(RolloutPhase::Healthy));
    let s = w.status();
    assert_eq!(s.stable_rs, first, "back on the original ReplicaSet");
    assert_eq!(s.current_step_index, Some(6));
    assert_eq!(
        w.event_messages(events::SKIP_STEPS),
        ["Rollback to stable ReplicaSets"],
        "{:?}",
        w.events
    );
}

#[test]
fn a_template_the_api_server_refused_is_an_invalid_spec_until_it_changes() {
    let mut w = stepped_world();
    set_image(&mut w, "app:2");
    let hash = {
        let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
        let Some(Action::CreateReplicaSet(rs)) = p.actions.first() else {
            panic!("expected a create first: {:?}", p.actions);
        };
        rs.labels()[POD_TEMPLATE_HASH_LABEL].clone()
    };
    let detail = super::rejection_detail(
        422,
        "ReplicaSet.apps \"demo-x\" is invalid: spec.template.spec.containers[0].image: Required value",
    );
    let refused = w.snapshot().with_rejected(Some((hash, detail)));
    let p = plan(&refused, Timestamp::from_second(w.now).unwrap());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.phase, Some(RolloutPhase::Degraded));
    assert_eq!(
        find(&p.status.conditions, INVALID_SPEC).and_then(|c| c.message.as_deref()),
        Some(
            "The Rollout \"demo\" is invalid: spec.template.spec.containers[0].image: Required value"
        )
    );
    // Another template is tried afresh.
    set_image(&mut w, "app:3");
    let refused = w.snapshot().with_rejected(refused.rejected.clone());
    let p = plan(&refused, Timestamp::from_second(w.now).unwrap());
    assert!(matches!(
        p.actions.first(),
        Some(Action::CreateReplicaSet(_))
    ));
}

#[test]
fn refusals_read_as_field_errors() {
    assert_eq!(
        super::rejection_detail(
            422,
            "ReplicaSet.apps \"web-5f\" is invalid: [spec.template.spec.containers: Required value, spec.template.spec.restartPolicy: Unsupported value: \"Never\"]"
        ),
        "[spec.template.spec.containers: Required value, spec.template.spec.restartPolicy: Unsupported value: \"Never\"]"
    );
    assert_eq!(
        super::rejection_detail(
            400,
            "ReplicaSet in version \"v1\" cannot be handled as a ReplicaSet: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        ),
        "spec.template: Invalid value: the API server cannot create a ReplicaSet from it: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
}

#[test]
fn a_missing_service_is_an_invalid_spec() {
    let mut w = stepped_world();
    w.services
        .retain(|s| s.metadata.name.as_deref() != Some("canary"));
    let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    let c = find(&p.status.conditions, INVALID_SPEC).expect("InvalidSpec");
    assert_eq!(
        c.message.as_deref(),
        Some(
            "The Rollout \"demo\" is invalid: spec.strategy.canary.canaryService: Invalid value: \"canary\": services \"canary\" not found"
        )
    );
    assert!(p.actions.is_empty());
}

#[test]
fn services_with_foreign_labels_or_another_manager_are_refused() {
    let invalid = |w: &Sim| {
        let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
        assert!(p.actions.is_empty());
        find(&p.status.conditions, INVALID_SPEC).and_then(|c| c.message.clone())
    };
    let mut w = stepped_world();
    let svc = w
        .services
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("stable"))
        .unwrap();
    svc.spec.get_or_insert_with(Default::default).selector =
        Some([("app".to_string(), "other".to_string())].into());
    assert_eq!(
        invalid(&w).as_deref(),
        Some(
            "The Rollout \"demo\" is invalid: spec.strategy.canary.stableService: Invalid value: \"stable\": Service \"stable\" has unmatch label \"app\" in rollout"
        )
    );

    let mut w = stepped_world();
    let svc = w
        .services
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("canary"))
        .unwrap();
    svc.metadata.annotations = Some(
        [(
            "argo-rollouts.argoproj.io/managed-by-rollouts".to_string(),
            "someone-else".to_string(),
        )]
        .into(),
    );
    assert_eq!(
        invalid(&w).as_deref(),
        Some(
            "The Rollout \"demo\" is invalid: spec.strategy.canary.canaryService: Invalid value: \"canary\": Service \"canary\" is managed by another Rollout"
        )
    );
}

#[test]
fn progress_deadline_abort_turns_the_deadline_into_an_abort() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.ro.spec.progress_deadline_seconds = Some(30);
    w.ro.spec.progress_deadline_abort = true;
    w.settle(false);
    set_image(&mut w, "nginx:2");
    w.reconcile();
    w.now += 31; // the new pods never become available
    w.reconcile();
    assert!(w.status().abort, "deadline sets abort");
    // The reason is written once before the abort replaces it.
    let progressing = find(&w.status().conditions, PROGRESSING).cloned();
    assert_eq!(
        progressing.and_then(|c| c.reason).as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    w.reconcile();
    let s = w.status();
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    // As upstream: the abort names the deadline.
    let new_rs = format!(
        "{}-{}",
        w.ro.metadata.name.clone().unwrap_or_default(),
        s.current_pod_hash.clone().unwrap_or_default()
    );
    assert_eq!(
        s.message.as_deref(),
        Some(format!("RolloutAborted: Rollout aborted update to revision 2: ReplicaSet \"{new_rs}\" has timed out progressing.").as_str())
    );
    w.reconcile();
    assert_eq!(
        w.status().message,
        s.message,
        "kept as long as the abort lasts"
    );
}

fn step_strategy() -> impl Strategy<Value = CanaryStep> {
    prop_oneof![
        (0i32..=100).prop_map(weight),
        Just(pause_for(None)),
        (0i32..3).prop_map(|s| pause_for(Some(s))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Random steps, limits, promotes and an optional abort: surge and
    /// availability stay within limits, the canary Service never selects a
    /// canary without available pods, an abort ends with stable at full size
    /// and the canary at zero, and everything else ends Healthy.
    #[test]
    fn stepped_updates_keep_invariants(
        replicas in 1i32..8,
        surge in 0i32..3,
        unavailable in 0i32..3,
        steps in proptest::collection::vec(step_strategy(), 1..6),
        abort_at in proptest::option::of(1usize..40),
    ) {
        prop_assume!(surge + unavailable > 0);
        let mut ro = rollout(replicas, "app:1", Some(IntOrString::Int(surge)), Some(IntOrString::Int(unavailable)));
        let c = ro.spec.strategy.canary.as_mut().unwrap();
        c.steps = steps;
        c.stable_service = Some("stable".into());
        c.canary_service = Some("canary".into());
        let mut w = Sim::new(ro);
        w.services = vec![service("stable"), service("canary")];
        w.settle(false);
        let stable = w.status().stable_rs;
        set_image(&mut w, "app:2");
        let limits = canary_limits(Some(&IntOrString::Int(surge)), Some(&IntOrString::Int(unavailable)), replicas).unwrap();
        let mut aborted = false;
        for round in 0..400 {
            if abort_at == Some(round) && w.status().stable_rs == stable {
                w.ro.status.as_mut().unwrap().abort = true;
                aborted = true;
            }
            w.reconcile();
            let s = w.status();
            prop_assert!(w.total_spec() <= replicas + limits.max_surge, "surge: {} pods", w.total_spec());
            prop_assert!(w.available() >= replicas - limits.max_unavailable, "availability {}", w.available());
            let canary_sel = w.selector("canary");
            let on_canary = canary_sel.is_some() && canary_sel == s.current_pod_hash && s.current_pod_hash != s.stable_rs;
            if let Some(rs) = w.replica_sets.iter().find(|r| on_canary && r.pod_hash() == canary_sel.as_deref()) {
                prop_assert!(rs.available() > 0, "canary Service selects {canary_sel:?} with no available pods");
            }
            if aborted {
                prop_assert_eq!(&canary_sel, &stable, "abort moves canary traffic to stable at once");
                if w.pods_of(&s.current_pod_hash) == 0 && w.pods_of(&stable) == replicas {
                    prop_assert_eq!(s.phase, Some(RolloutPhase::Degraded));
                    return Ok(());
                }
            } else if s.phase == Some(RolloutPhase::Healthy) && s.stable_rs == s.current_pod_hash {
                prop_assert_eq!(w.pods_of(&s.current_pod_hash), replicas);
                return Ok(());
            }
            if w.phase() == Some(RolloutPhase::Paused) {
                w.promote();
            }
            w.tick();
            w.now += 1; // timed pauses pass
        }
        prop_assert!(false, "did not finish: {:#?}", w.ro.status);
    }
}

mod analysis_gates {
    use super::*;
    use crate::api::analysis::{AnalysisPhase, AnalysisRunStatus};
    use crate::api::common::AnalysisTemplateRef;
    use crate::api::rollout::{RolloutAnalysis, RolloutAnalysisBackground};

    fn analysis() -> RolloutAnalysis {
        RolloutAnalysis {
            templates: vec![AnalysisTemplateRef {
                template_name: "check".into(),
                cluster_scope: None,
            }],
            ..Default::default()
        }
    }

    /// 20% / analysis / 60%, with the template in place, deployed once.
    fn world(background: bool) -> Sim {
        let mut ro = rollout(
            5,
            "app:1",
            Some(IntOrString::Int(1)),
            Some(IntOrString::Int(0)),
        );
        let c = ro.spec.strategy.canary.as_mut().unwrap();
        c.steps = vec![
            weight(20),
            CanaryStep {
                analysis: Some(analysis()),
                ..Default::default()
            },
            weight(60),
        ];
        if background {
            c.steps.remove(1);
            c.analysis = Some(RolloutAnalysisBackground {
                analysis: analysis(),
                starting_step: Some(1),
            });
        }
        let mut w = Sim::new(ro);
        w.templates
            .insert((false, "check".into()), check_template());
        w.settle(false);
        set_image(&mut w, "app:2");
        w
    }

    #[test]
    fn a_step_done_is_written_before_the_next_steps_run_is_created() {
        // Chaining stops at a plan with actions: the run is created only
        // once the status showing its step is written.
        let mut w = world(false);
        for _ in 0..50 {
            let before = w.status().current_step_index;
            let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
            let creates = p
                .actions
                .iter()
                .any(|a| matches!(a, Action::CreateAnalysisRun(_)));
            if before == Some(0) && p.status.current_step_index == Some(1) {
                assert!(!creates, "{:?}", p.actions);
                w.reconcile();
                let next = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
                assert!(
                    next.actions
                        .iter()
                        .any(|a| matches!(a, Action::CreateAnalysisRun(_))),
                    "{:?}",
                    next.actions
                );
                return;
            }
            w.reconcile();
            w.tick();
        }
        panic!("step 0 never completed: {:#?}", w.status());
    }

    impl Sim {
        fn finish_run(&mut self, name: &str, phase: AnalysisPhase, message: &str) {
            self.run_mut(name).expect("the run exists").status = Some(AnalysisRunStatus {
                phase: Some(phase),
                message: (!message.is_empty()).then(|| message.into()),
                ..Default::default()
            });
        }
        fn step_run(&self) -> Option<String> {
            self.status()
                .canary
                .current_step_analysis_run_status
                .map(|r| r.name)
        }
    }

    #[test]
    fn a_run_carries_its_rollouts_controller_instance_id() {
        let mut w = world(false);
        let id = "argo-rollouts.argoproj.io/controller-instance-id";
        w.ro.metadata
            .labels
            .get_or_insert_default()
            .insert(id.into(), "team-a".into());
        w.run_until("the step's run", |w| w.step_run().is_some());
        assert_eq!(w.runs[0].metadata.labels.as_ref().unwrap()[id], "team-a");
    }

    #[test]
    fn an_analysis_step_waits_for_its_run_and_continues_when_successful() {
        let mut w = world(false);
        w.run_until("the step's run", |w| w.step_run().is_some());
        let s = w.status();
        assert_eq!(s.current_step_index, Some(1));
        let hash = s.current_pod_hash.clone().unwrap();
        let name = format!("demo-{hash}-2-1");
        assert_eq!(w.step_run(), Some(name.clone()));
        let run = &w.runs[0];
        let labels = run.metadata.labels.clone().unwrap();
        assert_eq!(labels["rollout-type"], "Step");
        assert_eq!(labels["step-index"], "1");
        assert_eq!(labels["rollouts-pod-template-hash"], hash);
        assert_eq!(labels["app"], "demo", "the Rollout's selector labels");
        assert_eq!(
            run.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Rollout"
        );
        assert_eq!(run.spec.metrics[0].name, "m");
        for _ in 0..5 {
            w.tick();
            w.reconcile();
        }
        assert_eq!(w.status().current_step_index, Some(1), "waits for the run");
        assert_eq!(w.runs.len(), 1, "one run per step");
        w.finish_run(&name, AnalysisPhase::Successful, "");
        w.settle(true);
        assert_eq!(w.status().stable_rs, Some(hash));
        assert_eq!(w.step_run(), None, "no current run once complete");
    }

    #[test]
    fn a_failed_run_aborts_and_a_retry_starts_a_new_run() {
        let mut w = world(false);
        w.run_until("the step's run", |w| w.step_run().is_some());
        let name = w.step_run().unwrap();
        let stable = w.status().stable_rs;
        w.finish_run(
            &name,
            AnalysisPhase::Failed,
            "Metric \"m\" assessed Failed due to failed (1) > failureLimit (0)",
        );
        w.run_until("the abort to finish", |w| {
            w.pods_of(&w.status().current_pod_hash) == 0 && w.pods_of(&stable) == 5
        });
        let s = w.status();
        assert!(s.abort);
        assert_eq!(s.phase, Some(RolloutPhase::Degraded));
        let progressing = find(&s.conditions, PROGRESSING).unwrap();
        assert_eq!(
            progressing.message.as_deref(),
            Some(
                "Rollout aborted update to revision 2: Step-based analysis phase error/failed: Metric \"m\" assessed Failed due to failed (1) > failureLimit (0)"
            )
        );
        assert_eq!(w.step_run(), None);
        // Retry: back to step 0, and the analysis step gets a fresh run.
        w.ro.status.as_mut().unwrap().abort = false;
        w.run_until("a new run", |w| w.step_run().is_some_and(|n| n != name));
        assert_eq!(w.step_run(), Some(format!("{name}.1")));
    }

    #[test]
    fn an_inconclusive_run_pauses_until_promoted() {
        let mut w = world(false);
        w.run_until("the step's run", |w| w.step_run().is_some());
        let name = w.step_run().unwrap();
        w.finish_run(&name, AnalysisPhase::Inconclusive, "");
        w.reconcile();
        let s = w.status();
        assert_eq!(s.pause_conditions[0].reason, "InconclusiveAnalysisRun");
        assert!(s.controller_pause);
        assert_eq!(s.phase, Some(RolloutPhase::Paused));
        // kubectl rollouts promote after an inconclusive run.
        let st = w.ro.status.as_mut().unwrap();
        st.pause_conditions.clear();
        st.controller_pause = false;
        st.current_step_index = Some(2);
        w.settle(true);
        assert_eq!(w.status().stable_rs, w.status().current_pod_hash);
    }

    #[test]
    fn background_analysis_runs_from_its_starting_step_and_stops_at_the_end() {
        let mut w = world(true);
        w.run_until("step 1", |w| w.status().current_step_index == Some(1));
        w.reconcile();
        let bg = w
            .status()
            .canary
            .current_background_analysis_run_status
            .unwrap()
            .name;
        let hash = w.status().current_pod_hash.unwrap();
        assert_eq!(bg, format!("demo-{hash}-2"));
        w.finish_run(&bg, AnalysisPhase::Running, "");
        w.settle(true);
        assert!(
            w.runs[0].spec.terminate,
            "terminated once the rollout completed"
        );
        assert_eq!(
            w.status().canary.current_background_analysis_run_status,
            None
        );
        // Failed background analysis aborts a later update.
        set_image(&mut w, "app:3");
        w.run_until("a background run", |w| {
            w.status()
                .canary
                .current_background_analysis_run_status
                .is_some()
        });
        let bg = w
            .status()
            .canary
            .current_background_analysis_run_status
            .unwrap()
            .name;
        w.finish_run(&bg, AnalysisPhase::Error, "boom");
        w.reconcile();
        let s = w.status();
        assert!(s.abort);
        assert!(
            find(&s.conditions, PROGRESSING)
                .unwrap()
                .message
                .as_deref()
                .unwrap()
                .ends_with("Background analysis phase error/failed: boom")
        );
    }

    fn invalid_spec(w: &mut Sim) -> String {
        w.reconcile();
        let s = w.status();
        assert_eq!(s.phase, Some(RolloutPhase::Degraded));
        find(&s.conditions, INVALID_SPEC)
            .and_then(|c| c.message.clone())
            .expect("InvalidSpec")
    }

    #[test]
    fn a_template_whose_run_would_fail_at_once_is_an_invalid_spec() {
        // A condition that does not compile could only ever measure Error.
        let mut w = world(false);
        let t = w.templates.get_mut(&(false, "check".into())).unwrap();
        t.metrics[0].success_condition = Some("result >".into());
        let msg = invalid_spec(&mut w);
        assert!(
            msg.starts_with(
                "The Rollout \"demo\" is invalid: spec.strategy.canary.steps[1].analysis.templates: Invalid value: AnalysisTemplate check has metric m whose successCondition \"result >\" does not compile: "
            ),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        // A metric the AnalysisRun controller refuses.
        let mut w = world(false);
        let t = w.templates.get_mut(&(false, "check".into())).unwrap();
        t.metrics[0].provider = Default::default();
        assert!(
            invalid_spec(&mut w).ends_with(
                "Invalid value: Analysis spec invalid: metrics[0]: no provider specified"
            ),
        );
        // A step waiting on a metric that never ends, as upstream.
        let mut w = world(false);
        let t = w.templates.get_mut(&(false, "check".into())).unwrap();
        t.metrics[0].interval = Some("5s".into());
        assert!(invalid_spec(&mut w).ends_with(
            "Invalid value: AnalysisTemplate check has metric m which runs indefinitely. Invalid value for count: <nil>"
        ));
        // ...which background analysis may do.
        let mut w = world(true);
        let t = w.templates.get_mut(&(false, "check".into())).unwrap();
        t.metrics[0].interval = Some("5s".into());
        w.reconcile();
        assert!(find(&w.status().conditions, INVALID_SPEC).is_none());
    }

    #[test]
    fn a_missing_template_is_an_invalid_spec() {
        let mut w = world(false);
        w.templates.clear();
        w.reconcile();
        let s = w.status();
        assert_eq!(s.phase, Some(RolloutPhase::Degraded));
        assert!(
            find(&s.conditions, INVALID_SPEC).unwrap().message.as_deref().unwrap().ends_with(
                "spec.strategy.canary.steps[1].analysis.templates: Invalid value: AnalysisTemplate 'check' not found"
            )
        );
    }
}

mod blue_green;
mod pauses;
mod traffic;
mod workload;

/// The workers serve first the reconciles of an update under way that
/// move it on (`moves_on`); those that only mirror counts wait. Through
/// the benchmark's update (setWeight 50, pause 1s, setWeight 100): every
/// step taken and every scale moves on; a pod that is created but not
/// available yet only changes counts.
#[test]
fn only_plans_that_act_or_take_a_step_move_an_update_on() {
    // The benchmark's Rollout, and the same with a stable and a canary
    // Service (whose selectors the plan switches: actions).
    let mut with_services = bench_rollout();
    let c = with_services.spec.strategy.canary.as_mut().unwrap();
    c.stable_service = Some("stable".into());
    c.canary_service = Some("canary".into());
    for (ro, services) in [
        (bench_rollout(), vec![]),
        (with_services, vec![service("stable"), service("canary")]),
    ] {
        let mut w = Sim::new(ro);
        w.services = services;
        walk_an_update_telling_moves_from_mirrors(w);
    }
}

fn walk_an_update_telling_moves_from_mirrors(mut w: Sim) {
    w.settle(false);
    set_image(&mut w, "nginx:2");
    let (mut moved, mut mirrored) = (0, 0);
    for _ in 0..50 {
        let before = w.ro.status.clone();
        let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
        let on = super::moves_on(before.as_ref(), &p);
        let b = before.clone().unwrap_or_default();
        let stepped = b.current_step_index != p.status.current_step_index
            || b.pause_conditions != p.status.pause_conditions
            || b.stable_rs != p.status.stable_rs
            || b.current_pod_hash != p.status.current_pod_hash;
        if !p.actions.is_empty() || stepped {
            assert!(on, "{:?} {:#?}", p.actions, p.status);
            moved += 1;
        } else if Some(&p.status) != before.as_ref() {
            assert!(!on, "only counts changed: {:#?}", p.status);
            mirrored += 1;
        } else {
            assert!(!on, "nothing changed");
        }
        w.reconcile();
        if w.phase() == Some(RolloutPhase::Healthy) && p.actions.is_empty() && !stepped {
            break;
        }
        w.tick();
    }
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    // The create, both scales of each setWeight, the steps; and counts.
    assert!(moved >= 5, "{moved} plans moved the update on");
    assert!(mirrored >= 2, "{mirrored} plans only mirrored counts");
}

#[test]
fn a_status_that_changes_only_in_counts_does_not_move_on() {
    use crate::api::rollout::RolloutStatus;
    let before = RolloutStatus {
        current_step_index: Some(1),
        replicas: 2,
        available_replicas: 1,
        message: Some("updated replicas are still becoming available".into()),
        ..Default::default()
    };
    let status_only = |status| super::Plan {
        status,
        ..Default::default()
    };
    let counts = RolloutStatus {
        available_replicas: 2,
        ready_replicas: 2,
        updated_replicas: 1,
        message: None,
        phase: Some(RolloutPhase::Progressing),
        ..before.clone()
    };
    assert!(!super::moves_on(
        Some(&before),
        &status_only(counts.clone())
    ));
    let step = RolloutStatus {
        current_step_index: Some(2),
        ..counts.clone()
    };
    assert!(super::moves_on(Some(&before), &status_only(step)));
    let abort = RolloutStatus {
        abort: true,
        ..counts.clone()
    };
    assert!(super::moves_on(Some(&before), &status_only(abort)));
    // No status yet: the first one moves on; so does any action.
    assert!(super::moves_on(None, &status_only(counts.clone())));
    let mut acting = status_only(before.clone());
    acting
        .actions
        .push(Action::DeleteReplicaSet { name: "x".into() });
    assert!(super::moves_on(Some(&before), &acting));
}

/// An undo in the middle of a canary copies the stable ReplicaSet's
/// template, defaults and all, back into the Rollout: a template no hash
/// names. Once the shell's comparison names the stable ReplicaSet as its
/// twin, the Rollout goes straight back to it (no new ReplicaSet, no
/// steps), as upstream's fast rollback; a twin found for another template
/// is not used.
#[test]
fn an_undo_to_the_stable_template_is_a_fast_rollback() {
    let mut w = Sim::new(rollout(
        5,
        "app:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    ));
    w.ro.spec.strategy.canary.as_mut().unwrap().steps = vec![weight(20), pause_for(None)];
    w.settle(false);
    let stable = w.status().stable_rs.unwrap();
    set_image(&mut w, "app:2");
    w.run_until("the pause", |w| w.status().current_step_index == Some(1));
    assert_eq!(w.replica_sets.len(), 2);

    // The undo: app:1 again, with a default the API server filled in.
    set_image(&mut w, "app:1");
    let t = w.ro.spec.template.as_mut().unwrap();
    t.spec.as_mut().unwrap().containers[0].image_pull_policy = Some("IfNotPresent".into());
    let copied = crate::rollout::hash::pod_template_hash(t, None);
    assert_ne!(copied, stable);

    let planned = |w: &Sim| plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    let creates = |w: &Sim| {
        planned(w)
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateReplicaSet(_)))
    };
    assert!(creates(&w), "without a twin: a new ReplicaSet");
    w.template_twin = Some(("another-template".into(), stable.clone()));
    assert!(creates(&w), "a twin of another template is not this one's");

    w.template_twin = Some((copied.clone(), stable.clone()));
    w.run_until("Healthy on the stable", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    assert_eq!(w.replica_sets.len(), 2, "no new ReplicaSet");
    let s = w.status();
    assert_eq!(s.current_pod_hash.as_deref(), Some(stable.as_str()));
    assert_eq!(s.stable_rs.as_deref(), Some(stable.as_str()));
    assert_eq!(w.pods_of(&Some(stable)), 5);
}

/// `canary.replicaProgressThreshold`: a step counts as reached, and the
/// canary is promoted, once as many of its pods are available as the
/// threshold asks (a percentage of the step's pods, or a count); without
/// one, only once all of them are.
#[test]
fn replica_progress_threshold_lets_a_partly_available_canary_on() {
    use crate::api::rollout::ReplicaProgressThreshold;
    let run = |threshold: Option<ReplicaProgressThreshold>, cap: i32| {
        let mut w = Sim::new(rollout(
            10,
            "app:1",
            Some(IntOrString::Int(1)),
            Some(IntOrString::Int(5)),
        ));
        let c = w.ro.spec.strategy.canary.as_mut().unwrap();
        c.steps = vec![weight(50), pause_for(None)];
        c.replica_progress_threshold = threshold;
        w.settle(false);
        set_image(&mut w, "app:2");
        w.reconcile();
        let canary = w.status().current_pod_hash.unwrap();
        w.capped = vec![(canary.clone(), cap)];
        for _ in 0..30 {
            w.reconcile();
            w.tick();
        }
        (w, canary)
    };
    let percent = |v| {
        Some(ReplicaProgressThreshold {
            r#type: "Percent".into(),
            value: v,
        })
    };
    let pods = |v| {
        Some(ReplicaProgressThreshold {
            r#type: "Pods".into(),
            value: v,
        })
    };

    // setWeight 50 of 10: 5 canary pods, 3 of them available.
    let (w, _) = run(None, 3);
    assert_eq!(w.status().current_step_index, Some(0), "all 5 needed");
    let (w, _) = run(percent(70), 3);
    assert_eq!(w.status().current_step_index, Some(0), "3 of 5 is 60%");
    let (w, _) = run(percent(60), 3);
    assert_eq!(w.status().current_step_index, Some(1), "60% reached");
    let (w, _) = run(pods(3), 3);
    assert_eq!(w.status().current_step_index, Some(1), "3 pods reached");
    let (w, _) = run(pods(-1), 3);
    assert_eq!(
        w.status().current_step_index,
        Some(0),
        "negative: all of them"
    );

    // Promotion: 8 of 10 available is enough for 80%, not without it.
    for (threshold, promoted) in [(None, false), (percent(80), true), (pods(9), false)] {
        let (mut w, canary) = run(threshold.clone(), 8);
        w.promote();
        for _ in 0..30 {
            w.reconcile();
            w.tick();
        }
        assert_eq!(
            w.status().stable_rs.as_deref() == Some(canary.as_str()),
            promoted,
            "{threshold:?}: {:#?}",
            w.status()
        );
    }
}

/// An annotation added to the Rollout after its ReplicaSet was made reaches
/// that ReplicaSet, as upstream copies them on every reconcile; the ones
/// upstream never copies (revision, desired replicas, last-applied, the
/// notification record) stay off, and a settled Rollout copies nothing.
#[test]
fn annotations_added_to_the_rollout_reach_its_current_replica_set() {
    let mut w = Sim::new(rollout(2, "nginx:1", None, None));
    w.settle(false);
    let annotations =
        w.ro.metadata
            .annotations
            .get_or_insert_with(Default::default);
    annotations.insert("team".into(), "payments".into());
    annotations.insert("notified.notifications.argoproj.io".into(), "{}".into());
    annotations.insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        "{}".into(),
    );
    let actions = w.reconcile();
    let copied: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SetReplicaSetAnnotations { annotations, .. } => Some(annotations.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        copied,
        vec![[("team".to_string(), "payments".to_string())].into()],
        "{actions:?}"
    );
    let rs = &w.replica_sets[0];
    assert_eq!(
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("payments")
    );
    assert!(w.reconcile().is_empty(), "copied once");
}

/// A ReplicaSet made under an older hash of the same template (upstream
/// before Go's omitzero, or this controller before it matched upstream) is
/// the template's: found and kept, no new ReplicaSet, no pod replaced.
#[test]
fn a_replica_set_under_an_older_hash_of_the_template_is_reused() {
    let template = rollout(2, "nginx:1", None, None).spec.template.unwrap();
    let hashes = crate::rollout::hash::pod_template_hashes(&template, None);
    assert_eq!(hashes.len(), 3, "three distinct hashes: {hashes:?}");
    for older in &hashes[1..] {
        let mut w = Sim::new(rollout(2, "nginx:1", None, None));
        w.settle(false);
        let current = w.status().current_pod_hash.unwrap();
        assert_eq!(current, hashes[0], "a new template gets upstream's hash");
        // As the older controller left it.
        let rs = &mut w.replica_sets[0];
        let relabel = |labels: &mut Option<std::collections::BTreeMap<String, String>>| {
            if let Some(l) = labels.as_mut() {
                l.insert(POD_TEMPLATE_HASH_LABEL.into(), older.clone());
            }
        };
        relabel(&mut rs.metadata.labels);
        let spec = rs.spec.as_mut().unwrap();
        relabel(&mut spec.selector.match_labels);
        relabel(
            &mut spec
                .template
                .as_mut()
                .unwrap()
                .metadata
                .as_mut()
                .unwrap()
                .labels,
        );
        rs.metadata.name = Some(format!("demo-{older}"));
        let status = w.ro.status.as_mut().unwrap();
        status.current_pod_hash = Some(older.clone());
        status.stable_rs = Some(older.clone());
        for _ in 0..5 {
            let actions = w.reconcile();
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::CreateReplicaSet(_))),
                "{actions:?}"
            );
            w.tick();
        }
        assert_eq!(w.replica_sets.len(), 1);
        let s = w.status();
        assert_eq!(s.current_pod_hash.as_deref(), Some(older.as_str()));
        assert_eq!(s.stable_rs.as_deref(), Some(older.as_str()));
        assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    }
}
