//! Blue-green planner tests on the simulated cluster.

use super::*;
use crate::api::analysis::{AnalysisPhase, AnalysisRunStatus};
use crate::api::common::PodTemplateMetadata;
use crate::api::rollout::BlueGreenStrategy;

const ACTIVE: &str = "active";
const PREVIEW: &str = "preview";

fn bg_world(replicas: i32, bg: BlueGreenStrategy) -> Sim {
    let mut ro = rollout(replicas, "app:1", None, None);
    ro.spec.strategy = RolloutStrategy {
        canary: None,
        blue_green: Some(BlueGreenStrategy {
            active_service: ACTIVE.into(),
            preview_service: Some(PREVIEW.into()),
            ..bg
        }),
    };
    let mut w = Sim::new(ro);
    w.services = vec![service(ACTIVE), service(PREVIEW)];
    w.templates
        .insert((false, "check".into()), check_template());
    // The first deploy switches the active Service at once (no pause).
    drive(&mut w, "the first deploy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    let first = w.status().stable_rs;
    assert!(first.is_some());
    assert_eq!(w.selector(ACTIVE), first);
    assert_eq!(w.selector(PREVIEW), first);
    w
}

/// Gives every ReplicaSet the newest creation time: made within one
/// second (creation times have one-second resolution), as in a quick test
/// on a real cluster.
fn same_creation_second(w: &mut Sim) {
    let created = w
        .replica_sets
        .iter()
        .map(|rs| rs.metadata.creation_timestamp.clone())
        .max()
        .flatten();
    for rs in &mut w.replica_sets {
        rs.metadata.creation_timestamp = created.clone();
    }
}

/// Reconcile and tick until `done`, checking at every step that the active
/// Service only ever points at pods that are all available, and back at
/// stable whenever the rollout is aborted.
fn drive(w: &mut Sim, what: &str, done: impl Fn(&Sim) -> bool) {
    let replicas = w.ro.spec.replicas_or_default();
    for _ in 0..300 {
        w.reconcile();
        if let Some(active) = w.selector(ACTIVE) {
            let rs = w
                .replica_sets
                .iter()
                .find(|r| r.pod_hash() == Some(active.as_str()));
            let available = rs.map_or(0, |r| r.available());
            assert!(
                available >= replicas || w.status().abort,
                "active Service on {active} with {available}/{replicas} available"
            );
        }
        if w.status().abort {
            assert_eq!(
                w.selector(ACTIVE),
                w.status().stable_rs,
                "abort left traffic on the new pods"
            );
        }
        if done(w) {
            return;
        }
        w.tick();
    }
    panic!("never reached: {what}; status {:#?}", w.ro.status);
}

/// Updates the image to app:2 and drives the update to its pause.
fn update_to_pause(w: &mut Sim) {
    set_image(w, "app:2");
    drive(w, "the pause", |w| w.phase() == Some(RolloutPhase::Paused));
}

fn pause_reasons(w: &Sim) -> Vec<String> {
    w.status()
        .pause_conditions
        .iter()
        .map(|c| c.reason.clone())
        .collect()
}

fn bg_run(w: &Sim, pre: bool) -> Option<String> {
    let s = w.status().blue_green;
    let entry = if pre {
        s.pre_promotion_analysis_run_status
    } else {
        s.post_promotion_analysis_run_status
    };
    entry.map(|r| r.name)
}

fn finish(w: &mut Sim, name: &str, phase: AnalysisPhase, message: &str) {
    w.run_mut(name).expect("the run exists").status = Some(AnalysisRunStatus {
        phase: Some(phase),
        message: (!message.is_empty()).then(|| message.into()),
        ..Default::default()
    });
}

#[test]
fn manual_promotion_switches_active_and_keeps_old_pods_for_the_delay() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            scale_down_delay_seconds: Some(5),
            ..Default::default()
        },
    );
    let old = w.status().stable_rs;
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    assert_ne!(new, old);
    assert_eq!(w.pods_of(&new), 2);
    assert_eq!(w.pods_of(&old), 2);
    assert_eq!(w.selector(PREVIEW), new);
    assert_eq!(w.selector(ACTIVE), old);
    assert_eq!(pause_reasons(&w), vec!["BlueGreenPause"]);
    assert_eq!(w.status().message.as_deref(), Some("BlueGreenPause"));
    // Paused: nothing more happens however long we wait.
    for _ in 0..5 {
        w.tick();
        w.reconcile();
    }
    assert_eq!(w.selector(ACTIVE), old);

    w.promote();
    w.reconcile();
    assert_eq!(w.selector(ACTIVE), new, "promotion switches active");
    assert_eq!(w.status().stable_rs, new);
    // The next plan (triggered by the status write) starts the delay.
    w.reconcile();
    let old_rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == old.as_deref())
        .unwrap();
    assert!(
        old_rs
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("scale-down-deadline"),
        "the old ReplicaSet gets a scale-down deadline"
    );
    assert_eq!(w.pods_of(&old), 2, "old pods stay during the delay");
    w.tick();
    w.reconcile();
    assert_eq!(w.pods_of(&old), 2);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    w.now += 5;
    drive(&mut w, "old pods gone", |w| w.pods_of(&old) == 0);
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
}

#[test]
fn preview_replica_count_runs_few_pods_until_promotion() {
    let mut w = bg_world(
        3,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            preview_replica_count: Some(1),
            scale_down_delay_seconds: Some(0),
            ..Default::default()
        },
    );
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    assert_eq!(w.pods_of(&new), 1);
    w.promote();
    drive(&mut w, "active on new", |w| w.selector(ACTIVE) == new);
    assert_eq!(w.pods_of(&new), 3);
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.status().replicas == 3
    });
}

#[test]
fn auto_promotion_seconds_promotes_after_the_wait() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_seconds: 10,
            ..Default::default()
        },
    );
    let old = w.status().stable_rs;
    update_to_pause(&mut w);
    let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    let wait = p.requeue_after.unwrap().as_secs();
    assert!(
        (1..=10).contains(&wait),
        "wakes up for the promotion, got {wait}s"
    );
    assert_eq!(w.selector(ACTIVE), old);
    w.now += 11;
    drive(&mut w, "promoted", |w| w.selector(ACTIVE) != old);
    assert_eq!(w.status().stable_rs, w.status().current_pod_hash);
}

#[test]
fn auto_promotion_without_seconds_does_not_pause() {
    let mut w = bg_world(2, BlueGreenStrategy::default());
    set_image(&mut w, "app:2");
    let new = Some(super::super::super::hash::pod_template_hash(
        w.ro.spec.template.as_ref().unwrap(),
        None,
    ));
    drive(&mut w, "promoted", |w| {
        assert!(pause_reasons(w).is_empty());
        w.selector(ACTIVE) == new
    });
}

#[test]
fn abort_returns_active_to_stable_and_scales_preview_down_after_delay() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            abort_scale_down_delay_seconds: Some(3),
            ..Default::default()
        },
    );
    let old = w.status().stable_rs;
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    w.ro.status.as_mut().unwrap().abort = true;
    w.reconcile();
    let s = w.status();
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert!(
        s.message
            .unwrap()
            .starts_with("RolloutAborted: Rollout aborted update to revision 2")
    );
    assert_eq!(w.selector(ACTIVE), old);
    assert_eq!(
        w.pods_of(&new),
        2,
        "preview kept during abortScaleDownDelaySeconds"
    );
    w.now += 4;
    drive(&mut w, "preview scaled down", |w| w.pods_of(&new) == 0);
    assert_eq!(w.pods_of(&old), 2);

    // Retry: the update starts again.
    w.ro.status.as_mut().unwrap().abort = false;
    drive(&mut w, "paused again", |w| {
        w.phase() == Some(RolloutPhase::Paused)
    });
    assert_eq!(w.pods_of(&new), 2);
}

#[test]
fn abort_scale_down_delay_zero_keeps_preview() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            abort_scale_down_delay_seconds: Some(0),
            ..Default::default()
        },
    );
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    w.ro.status.as_mut().unwrap().abort = true;
    for _ in 0..50 {
        w.reconcile();
        w.tick();
    }
    w.now += 1000;
    w.reconcile();
    assert_eq!(w.pods_of(&new), 2);
}

#[test]
fn failed_pre_promotion_analysis_aborts_without_switching() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            pre_promotion_analysis: Some(check_analysis()),
            ..Default::default()
        },
    );
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "pre-promotion run", |w| bg_run(w, true).is_some());
    let name = bg_run(&w, true).unwrap();
    assert!(name.ends_with("-2-pre"), "{name}");
    let run = w
        .runs
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&name))
        .unwrap();
    assert_eq!(
        run.metadata.labels.as_ref().unwrap()["rollout-type"],
        "PrePromotion"
    );
    // Waiting for the analysis: no switch.
    for _ in 0..5 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.selector(ACTIVE), old);
    finish(
        &mut w,
        &name,
        AnalysisPhase::Failed,
        "metric \"m\" assessed Failed",
    );
    w.reconcile();
    let s = w.status();
    assert!(s.abort);
    assert_eq!(w.selector(ACTIVE), old);
    let msg = find(&s.conditions, PROGRESSING)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        msg.ends_with(
            "Blue/green pre-promotion analysis phase error/failed: metric \"m\" assessed Failed"
        ),
        "{msg}"
    );
    // The preview pods get their abort deadline.
    w.reconcile();
    let new = w.status().current_pod_hash;
    let new_rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == new.as_deref())
        .unwrap();
    assert!(
        new_rs
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("scale-down-deadline")
    );
    // Retry starts a fresh run; once it passes the rollout promotes itself.
    w.ro.status.as_mut().unwrap().abort = false;
    drive(&mut w, "a second run", |w| {
        bg_run(w, true).is_some_and(|n| n != name)
    });
    let second = bg_run(&w, true).unwrap();
    assert_eq!(second, format!("{name}.1"));
    // The retried update waits for its new run (its ReplicaSet's abort
    // deadline does not make it a fast rollback).
    for _ in 0..5 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.selector(ACTIVE), old);
    finish(&mut w, &second, AnalysisPhase::Successful, "");
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    assert_eq!(w.selector(ACTIVE), w.status().current_pod_hash);
}

#[test]
fn failed_post_promotion_analysis_switches_active_back() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            post_promotion_analysis: Some(check_analysis()),
            ..Default::default()
        },
    );
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    let new = Some(super::super::super::hash::pod_template_hash(
        w.ro.spec.template.as_ref().unwrap(),
        None,
    ));
    drive(&mut w, "post-promotion run", |w| bg_run(w, false).is_some());
    assert_eq!(w.selector(ACTIVE), new);
    assert_eq!(
        w.status().stable_rs,
        old,
        "not stable before the analysis passes"
    );
    assert_eq!(
        w.status().message.as_deref(),
        Some("waiting for analysis to complete")
    );
    assert_eq!(w.pods_of(&old), 2, "old pods kept while the analysis runs");
    let name = bg_run(&w, false).unwrap();
    assert!(name.ends_with("-2-post"), "{name}");
    finish(&mut w, &name, AnalysisPhase::Failed, "");
    w.reconcile();
    w.reconcile();
    assert!(w.status().abort);
    assert_eq!(w.selector(ACTIVE), old, "active switched back");
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
}

#[test]
fn successful_post_promotion_analysis_makes_new_stable() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            post_promotion_analysis: Some(check_analysis()),
            scale_down_delay_seconds: Some(0),
            ..Default::default()
        },
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "post-promotion run", |w| bg_run(w, false).is_some());
    let name = bg_run(&w, false).unwrap();
    finish(&mut w, &name, AnalysisPhase::Successful, "");
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.status().replicas == 2
    });
    assert_eq!(w.status().stable_rs, w.status().current_pod_hash);
}

#[test]
fn revision_limit_scales_older_revisions_down_at_once() {
    let mut w = bg_world(
        1,
        BlueGreenStrategy {
            scale_down_delay_seconds: Some(100),
            scale_down_delay_revision_limit: Some(1),
            ..Default::default()
        },
    );
    let first = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "second promoted", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    let second = w.status().stable_rs;
    assert_eq!(w.pods_of(&first), 1, "within its delay");
    set_image(&mut w, "app:3");
    drive(&mut w, "third promoted", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.pods_of(&first) == 0
    });
    assert_eq!(w.pods_of(&second), 1, "the newest old revision stays up");
}

#[test]
fn preview_and_active_metadata_follow_the_role() {
    let meta = |k: &str| PodTemplateMetadata {
        labels: Some([("role".to_string(), k.to_string())].into()),
        annotations: None,
    };
    let mut w = bg_world(
        1,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            preview_metadata: Some(meta("preview")),
            active_metadata: Some(meta("active")),
            ..Default::default()
        },
    );
    let role = |w: &Sim, hash: &Option<String>| {
        let rs = w
            .replica_sets
            .iter()
            .find(|r| r.pod_hash() == hash.as_deref())
            .unwrap();
        let t = rs.spec.as_ref().unwrap().template.as_ref().unwrap();
        t.metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()
            .get("role")
            .cloned()
    };
    let old = w.status().stable_rs;
    assert_eq!(role(&w, &old).as_deref(), Some("active"));
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    assert_eq!(role(&w, &new).as_deref(), Some("preview"));
    w.promote();
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    assert_eq!(role(&w, &new).as_deref(), Some("active"));
}

#[test]
fn anti_affinity_points_new_pods_away_from_stable() {
    use crate::api::rollout::{AntiAffinity, PreferredAntiAffinity};
    let mut w = bg_world(
        1,
        BlueGreenStrategy {
            anti_affinity: Some(AntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(PreferredAntiAffinity {
                    weight: 50,
                }),
                required_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        },
    );
    let first = w.replica_sets[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .clone()
        .unwrap();
    assert!(
        first.spec.unwrap().affinity.is_none(),
        "nothing on the first deploy"
    );
    let old = w.status().stable_rs.unwrap();
    set_image(&mut w, "app:2");
    w.reconcile();
    let t = w.replica_sets[1]
        .spec
        .as_ref()
        .unwrap()
        .template
        .clone()
        .unwrap();
    let anti = t.spec.unwrap().affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(term.weight, 50);
    let sel = term.pod_affinity_term.label_selector.as_ref().unwrap();
    let req = &sel.match_expressions.as_ref().unwrap()[0];
    assert_eq!(req.key, "rollouts-pod-template-hash");
    assert_eq!(req.values.as_deref(), Some(&[old][..]));
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
}

#[test]
fn same_active_and_preview_service_is_invalid() {
    let mut ro = rollout(1, "app:1", None, None);
    ro.spec.strategy = RolloutStrategy {
        canary: None,
        blue_green: Some(BlueGreenStrategy {
            active_service: "svc".into(),
            preview_service: Some("svc".into()),
            ..Default::default()
        }),
    };
    let w = Sim::new(ro);
    let p = plan(&w.snapshot(), Timestamp::from_second(w.now).unwrap());
    let msg = find(&p.status.conditions, INVALID_SPEC)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(msg.ends_with("This rollout uses the same service for the active and preview services, but two different services are required."), "{msg}");
}

#[test]
fn promote_full_skips_the_pause_and_the_check_analysis() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            pre_promotion_analysis: Some(check_analysis()),
            ..Default::default()
        },
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "pre-promotion run", |w| bg_run(w, true).is_some());
    let run = bg_run(&w, true).unwrap();
    w.ro.status.as_mut().unwrap().promote_full = true;
    drive(&mut w, "Healthy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    let s = w.status();
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert_eq!(w.selector(ACTIVE), s.current_pod_hash);
    assert!(!s.promote_full);
    assert!(
        w.run_mut(&run).expect("the run exists").spec.terminate,
        "the running analysis is stopped"
    );
}

#[test]
fn restart_evicts_one_pod_at_a_time_with_max_unavailable_zero() {
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let mut w = bg_world(3, BlueGreenStrategy::default());
    w.replica_sets[0].metadata.uid = Some("rs-uid".into());
    let old = Time(Timestamp::from_second(w.now - 100).unwrap());
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            let mut p = Pod::default();
            p.metadata.name = Some(format!("pod-{i}"));
            p.metadata.creation_timestamp = Some(old.clone());
            p.metadata.owner_references = Some(vec![OwnerReference {
                kind: "ReplicaSet".into(),
                uid: "rs-uid".into(),
                controller: Some(true),
                ..Default::default()
            }]);
            p.status = Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(old.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            p
        })
        .collect();
    w.ro.spec.restart_at = Some(Time(Timestamp::from_second(w.now - 10).unwrap()));
    let snap = w.snapshot().with_pods(pods);
    let p = plan(&snap, Timestamp::from_second(w.now).unwrap());
    assert!(
        matches!(p.actions.as_slice(), [Action::EvictPod { .. }]),
        "one eviction and nothing else: {:?}",
        p.actions
    );
}

#[test]
fn canary_metadata_follows_the_role_too() {
    let meta = |k: &str| PodTemplateMetadata {
        labels: Some([("role".to_string(), k.to_string())].into()),
        annotations: None,
    };
    // run_until checks the availability of this 5-replica shape.
    let mut ro = rollout(
        5,
        "app:1",
        Some(IntOrString::Int(1)),
        Some(IntOrString::Int(0)),
    );
    let c = ro.spec.strategy.canary.as_mut().unwrap();
    c.canary_metadata = Some(meta("canary"));
    c.stable_metadata = Some(meta("stable"));
    c.steps = vec![weight(50), pause_for(None)];
    let mut w = Sim::new(ro);
    w.settle(false);
    set_image(&mut w, "app:2");
    w.run_until("the pause", |w| w.phase() == Some(RolloutPhase::Paused));
    let role = |w: &Sim, hash: &Option<String>| {
        let rs = w
            .replica_sets
            .iter()
            .find(|r| r.pod_hash() == hash.as_deref())
            .unwrap();
        let t = rs.spec.as_ref().unwrap().template.as_ref().unwrap();
        t.metadata.as_ref().unwrap().labels.as_ref().unwrap()["role"].clone()
    };
    let s = w.status();
    assert_eq!(role(&w, &s.current_pod_hash), "canary");
    assert_eq!(role(&w, &s.stable_rs), "stable");
}

#[derive(Clone, Debug)]
enum Op {
    Tick,
    Wait(i64),
    Promote,
    Abort,
    Retry,
    NewImage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Tick),
        1 => (1i64..40).prop_map(Op::Wait),
        2 => Just(Op::Promote),
        1 => Just(Op::Abort),
        1 => Just(Op::Retry),
        1 => Just(Op::NewImage),
    ]
}

proptest! {
    /// Whatever people do, the active Service only points at a ReplicaSet
    /// whose pods are all available, and an abort sends all traffic back to
    /// stable, which never loses its pods.
    #[test]
    fn active_traffic_only_reaches_available_pods(
        replicas in 1i32..5,
        preview in proptest::option::of(1i32..3),
        manual in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut w = bg_world(replicas, BlueGreenStrategy {
            auto_promotion_enabled: Some(!manual),
            preview_replica_count: preview.map(|p| p.min(replicas)),
            scale_down_delay_seconds: Some(5),
            abort_scale_down_delay_seconds: Some(5),
            ..Default::default()
        });
        let mut image = 2;
        for op in ops {
            match op {
                Op::Tick => w.tick(),
                Op::Wait(s) => w.now += s,
                Op::Promote => w.promote(),
                Op::Abort => w.ro.status.as_mut().unwrap().abort = true,
                Op::Retry => w.ro.status.as_mut().unwrap().abort = false,
                Op::NewImage => {
                    set_image(&mut w, &format!("app:{image}"));
                    image += 1;
                }
            }
            w.reconcile();
            let s = w.status();
            if let Some(active) = w.selector(ACTIVE) {
                let rs = w.replica_sets.iter().find(|r| r.pod_hash() == Some(active.as_str()));
                let available = rs.map_or(0, |r| r.available());
                prop_assert!(
                    available >= replicas || s.abort,
                    "active Service on {} with {}/{} available", active, available, replicas
                );
            }
            if s.abort {
                prop_assert_eq!(w.selector(ACTIVE), s.stable_rs.clone());
            }
            if let Some(stable) = s.stable_rs.as_deref() {
                let rs = w.replica_sets.iter().find(|r| r.pod_hash() == Some(stable));
                prop_assert_eq!(rs.map(|r| r.spec_replicas()), Some(replicas));
            }
        }
        // Left alone (promoting when asked), it always settles Healthy.
        for _ in 0..200 {
            w.ro.status.as_mut().unwrap().abort = false;
            w.promote();
            w.reconcile();
            w.tick();
            w.now += 1;
            if w.phase() == Some(RolloutPhase::Healthy) {
                break;
            }
        }
        prop_assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
        prop_assert_eq!(w.selector(ACTIVE), w.status().current_pod_hash);
    }
}

#[test]
fn a_retry_waits_for_the_preview_pods_before_analysing_again() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            pre_promotion_analysis: Some(check_analysis()),
            abort_scale_down_delay_seconds: Some(3),
            ..Default::default()
        },
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "pre-promotion run", |w| bg_run(w, true).is_some());
    let name = bg_run(&w, true).unwrap();
    finish(&mut w, &name, AnalysisPhase::Failed, "");
    let new = w.status().current_pod_hash;
    w.now += 1;
    drive(&mut w, "aborted", |w| w.status().abort);
    w.now += 5;
    drive(&mut w, "preview pods gone", |w| w.pods_of(&new) == 0);
    w.ro.status.as_mut().unwrap().abort = false;
    w.reconcile();
    assert_eq!(bg_run(&w, true), None, "no run against absent pods");
    assert!(
        w.runs
            .iter()
            .all(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    );
    drive(&mut w, "the retry's run", |w| bg_run(w, true).is_some());
    let rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == new.as_deref())
        .unwrap();
    assert_eq!(rs.available(), 2, "started once the preview pods are back");
    assert_eq!(bg_run(&w, true), Some(format!("{name}.1")));
}

#[test]
fn a_new_template_never_reuses_the_previous_pre_promotion_result() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            pre_promotion_analysis: Some(check_analysis()),
            ..Default::default()
        },
    );
    let first = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "pre-promotion run", |w| bg_run(w, true).is_some());
    let name = bg_run(&w, true).unwrap();
    finish(&mut w, &name, AnalysisPhase::Successful, "");
    drive(&mut w, "promoted", |w| w.status().stable_rs != first);
    let second = w.status().stable_rs;
    // Straight back to app:1, whose pods are all still up (no deadline
    // written yet): a normal update that must be analysed again.
    set_image(&mut w, "app:1");
    for _ in 0..5 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(
        w.selector(ACTIVE),
        second,
        "no switch without a new analysis"
    );
    let run = bg_run(&w, true).unwrap();
    assert_ne!(run, name);
}

#[test]
fn a_fast_rollback_with_preview_replica_count_returns_at_full_size() {
    let mut w = bg_world(
        3,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            preview_replica_count: Some(1),
            scale_down_delay_seconds: Some(100),
            ..Default::default()
        },
    );
    let first = w.status().stable_rs;
    update_to_pause(&mut w);
    w.promote();
    drive(&mut w, "promoted", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.status().stable_rs != first
    });
    for _ in 0..3 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.pods_of(&first), 3, "within its scale-down delay");
    set_image(&mut w, "app:1");
    drive(&mut w, "rolled back", |w| {
        assert_eq!(w.pods_of(&first), 3, "never shrunk to previewReplicaCount");
        w.selector(ACTIVE) == first && w.phase() == Some(RolloutPhase::Healthy)
    });
}

/// Going back to the previous ReplicaSet while it is still up (within its
/// scaleDownDelaySeconds) is a fast rollback: as upstream, no pre- or
/// post-promotion analysis runs, and the active Service switches back as
/// soon as it can.
#[test]
fn a_fast_rollback_runs_no_check_analysis() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            pre_promotion_analysis: Some(check_analysis()),
            post_promotion_analysis: Some(check_analysis()),
            scale_down_delay_seconds: Some(30),
            ..Default::default()
        },
    );
    let first = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "the pre-promotion run", |w| {
        bg_run(w, true).is_some()
    });
    let pre = bg_run(&w, true).unwrap();
    finish(&mut w, &pre, AnalysisPhase::Successful, "");
    drive(&mut w, "the post-promotion run", |w| {
        bg_run(w, false).is_some()
    });
    let post = bg_run(&w, false).unwrap();
    finish(&mut w, &post, AnalysisPhase::Successful, "");
    drive(&mut w, "promoted, the old pods within their delay", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
            && w.status().stable_rs != first
            && w.replica_sets.iter().any(|rs| {
                rs.pod_hash() == first.as_deref()
                    && crate::rollout::plan::replica_set::has_scale_down_deadline(rs)
            })
    });
    let runs = w.runs.len();
    assert_eq!(runs, 2);
    assert_eq!(w.pods_of(&first), 2, "within its scale-down delay");
    // Both ReplicaSets made within one second (creation times have
    // one-second resolution), as in a quick test on a real cluster.
    same_creation_second(&mut w);
    set_image(&mut w, "app:1");
    for _ in 0..4 {
        w.reconcile();
        eprintln!(
            "DBG {:?} {:?}",
            w.replica_sets
                .iter()
                .map(|r| (
                    r.pod_hash().map(str::to_string),
                    r.metadata.annotations.clone(),
                    r.metadata.creation_timestamp.clone()
                ))
                .collect::<Vec<_>>(),
            w.status().message
        );
        w.tick();
    }
    drive(&mut w, "rolled back", |w| {
        w.selector(ACTIVE) == first && w.phase() == Some(RolloutPhase::Healthy)
    });
    assert_eq!(w.status().stable_rs, first);
    assert_eq!(
        w.runs.len(),
        runs,
        "no new AnalysisRun: {:?}",
        w.runs.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == first.as_deref())
        .unwrap();
    assert!(
        !rs.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("scale-down-deadline"),
        "the rolled-back-to ReplicaSet is in use again: no deadline"
    );
}

/// Switching a Rollout from blueGreen to canary hands the Services it no
/// longer names back, as upstream: without the hash selector they select
/// the app's pods again instead of one ReplicaSet's.
#[test]
fn services_no_longer_named_are_handed_back() {
    let mut w = bg_world(2, BlueGreenStrategy::default());
    let stable = w.status().stable_rs;
    assert_eq!(w.selector(ACTIVE), stable);
    w.services.push(service("stable"));
    w.ro.spec.strategy = RolloutStrategy {
        blue_green: None,
        canary: Some(crate::api::rollout::CanaryStrategy {
            stable_service: Some("stable".into()),
            ..Default::default()
        }),
    };
    w.ro.metadata.generation = Some(w.ro.metadata.generation.unwrap() + 1);
    let actions = w.reconcile();
    let released: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ReleaseService { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(released, [ACTIVE, PREVIEW]);
    assert_eq!(w.selector(ACTIVE), None);
    assert_eq!(w.selector(PREVIEW), None);
    assert_eq!(w.selector("stable"), stable);
    assert!(
        w.reconcile()
            .iter()
            .all(|a| !matches!(a, Action::ReleaseService { .. })),
        "once"
    );
}

/// An old ReplicaSet scaled down after its scaleDownDelaySeconds loses its
/// scale-down-deadline with its pods, as upstream.
#[test]
fn a_replica_set_scaled_down_loses_its_deadline() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            scale_down_delay_seconds: Some(5),
            ..Default::default()
        },
    );
    let first = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "promoted", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.status().stable_rs != first
    });
    w.reconcile();
    w.now += 6;
    drive(&mut w, "old pods gone", |w| w.pods_of(&first) == 0);
    let rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == first.as_deref())
        .unwrap();
    assert!(
        !rs.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("scale-down-deadline"),
        "{:?}",
        rs.metadata.annotations
    );
}

/// A retried update whose ReplicaSet still carries its abort deadline, made
/// in the same second as the stable one (creation times have one-second
/// resolution), is not a rollback: its pre-promotion analysis runs again.
#[test]
fn a_retry_in_the_same_second_runs_its_analysis_again() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            pre_promotion_analysis: Some(check_analysis()),
            abort_scale_down_delay_seconds: Some(30),
            ..Default::default()
        },
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "pre-promotion run", |w| bg_run(w, true).is_some());
    let name = bg_run(&w, true).unwrap();
    finish(&mut w, &name, AnalysisPhase::Failed, "failed");
    drive(&mut w, "aborted, the preview within its abort delay", |w| {
        w.status().abort
            && w.replica_sets.iter().any(|rs| {
                rs.pod_hash() != w.status().stable_rs.as_deref()
                    && crate::rollout::plan::replica_set::has_scale_down_deadline(rs)
            })
    });
    same_creation_second(&mut w);
    w.ro.status.as_mut().unwrap().abort = false; // kubectl rollouts retry
    drive(&mut w, "a fresh pre-promotion run", |w| {
        bg_run(w, true).is_some_and(|r| r != name)
    });
    assert_eq!(bg_run(&w, true), Some(format!("{name}.1")));
}

/// The plugin's promote of a manually paused blue-green update: the status
/// write (pause conditions cleared), a plan, then the spec write. The
/// switch waits for the spec, then happens: the pause is not started again.
#[test]
fn a_promote_of_a_manual_pause_survives_a_reconcile_between_its_two_patches() {
    let mut w = bg_world(
        2,
        BlueGreenStrategy {
            auto_promotion_enabled: Some(false),
            ..Default::default()
        },
    );
    update_to_pause(&mut w);
    let new = w.status().current_pod_hash;
    w.ro.spec.paused = true; // kubectl rollouts pause
    w.reconcile();
    w.promote(); // the status patch
    for _ in 0..3 {
        w.reconcile();
        w.tick();
    }
    assert_ne!(
        w.selector(ACTIVE),
        new,
        "no switch while the spec is paused"
    );
    w.ro.spec.paused = false; // the spec patch
    drive(&mut w, "the switch", |w| w.selector(ACTIVE) == new);
    assert!(pause_reasons(&w).is_empty(), "{:?}", pause_reasons(&w));
}
