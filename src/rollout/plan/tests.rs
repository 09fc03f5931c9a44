//! Planner tests: a small pure simulation of the cluster (ReplicaSets whose
//! new pods become available one tick after they are created) driven by
//! `plan`, checked against the invariants a rollout must keep.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::replicas::canary_limits;
use super::status::{AVAILABLE, COMPLETED, HEALTHY, INVALID_SPEC, PROGRESSING, find};
use super::{Action, plan};
use crate::api::Rollout;
use crate::api::rollout::{CanaryStep, CanaryStrategy, RolloutPhase, RolloutSpec, RolloutStrategy};
use crate::rollout::snapshot::{REVISION_ANNOTATION, ReplicaSetExt, Snapshot};

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

/// The cluster as the planner sees it, plus the rules that move it.
struct World {
    ro: Rollout,
    rss: Vec<ReplicaSet>,
    now: i64,
}

impl World {
    fn new(ro: Rollout) -> Self {
        World {
            ro,
            rss: vec![],
            now: 1_700_000_000,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.ro.clone(), self.rss.clone())
    }

    fn rs_mut(&mut self, name: &str) -> &mut ReplicaSet {
        self.rss
            .iter_mut()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .expect("planned RS exists")
    }

    /// One reconcile: plan, apply every action, write the status.
    fn reconcile(&mut self) -> Vec<Action> {
        let p = plan(&self.snapshot(), Timestamp::from_second(self.now).unwrap());
        for a in &p.actions {
            match a {
                Action::CreateReplicaSet(rs) => {
                    let mut rs = (**rs).clone();
                    rs.metadata.creation_timestamp = None;
                    self.rss.push(rs);
                }
                Action::ScaleReplicaSet { name, to, .. } => {
                    self.rs_mut(name).spec.as_mut().unwrap().replicas = Some(*to);
                }
                Action::DeleteReplicaSet { name } => self
                    .rss
                    .retain(|r| r.metadata.name.as_deref() != Some(name)),
                Action::SetReplicaSetRevision { name, revision } => {
                    let a = self
                        .rs_mut(name)
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    a.insert(REVISION_ANNOTATION.into(), revision.to_string());
                }
                Action::SetRolloutRevision { revision } => {
                    let a = self
                        .ro
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    a.insert(REVISION_ANNOTATION.into(), revision.to_string());
                }
            }
        }
        self.ro.status = Some(p.status);
        p.actions
    }

    /// The ReplicaSet controller and kubelet: extra pods go at once (the
    /// unavailable ones first), missing pods are created and become available
    /// on the next tick.
    fn tick(&mut self) {
        self.now += 1;
        for rs in &mut self.rss {
            let spec = rs.spec_replicas();
            let st = rs.status.get_or_insert_with(ReplicaSetStatus::default);
            let avail = st.available_replicas.unwrap_or(0);
            let new_avail = if st.replicas > spec {
                avail.min(spec)
            } else {
                st.replicas.min(spec)
            };
            st.available_replicas = Some(new_avail);
            st.ready_replicas = Some(new_avail);
            st.replicas = spec;
        }
    }

    fn available(&self) -> i32 {
        self.rss.iter().map(|r| r.available()).sum()
    }
    fn total_spec(&self) -> i32 {
        self.rss.iter().map(|r| r.spec_replicas()).sum()
    }
    fn phase(&self) -> Option<RolloutPhase> {
        self.ro.status.as_ref().and_then(|s| s.phase)
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

fn set_image(w: &mut World, image: &str) {
    let t = w.ro.spec.template.as_mut().unwrap();
    t.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap_or(1) + 1);
}

#[test]
fn first_deploy_creates_replica_set_and_becomes_healthy() {
    let mut w = World::new(rollout(3, "nginx:1", None, None));
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
    let mut w = World::new(rollout(
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
    assert_eq!(w.rss.len(), 2);
    let old = w
        .rss
        .iter()
        .find(|r| r.pod_hash() == first.as_deref())
        .unwrap();
    assert_eq!(old.spec_replicas(), 0, "old ReplicaSet scaled to zero");
    let new = w
        .rss
        .iter()
        .find(|r| r.pod_hash() == s.current_pod_hash.as_deref())
        .unwrap();
    assert_eq!(new.revision(), 2);
}

#[test]
fn going_back_to_an_old_template_reuses_its_replica_set() {
    let mut w = World::new(rollout(2, "nginx:1", None, None));
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
    assert_eq!(w.rss.len(), 2, "no third ReplicaSet");
}

#[test]
fn manual_pause_holds_scaling() {
    let mut w = World::new(rollout(2, "nginx:1", None, None));
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
fn progress_deadline_marks_degraded_and_requeues() {
    let mut w = World::new(rollout(2, "nginx:1", None, None));
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
        set_weight: Some(20),
        ..Default::default()
    }];
    assert!(
        invalid_message(&ro)
            .contains("canary steps, which this version of the controller does not implement yet")
    );
}

#[test]
fn invalid_spec_clears_once_fixed() {
    let mut w = World::new(rollout(1, "x", None, None));
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
        let mut w = World::new(rollout(replicas, "app:1", Some(surge), Some(unavailable)));
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
        let live: Vec<_> = w.rss.iter().filter(|r| r.spec_replicas() > 0).collect();
        prop_assert_eq!(live.len(), 1);
    }
}
