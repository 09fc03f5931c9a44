//! spec.workloadRef on the simulated cluster: the template and selector
//! taken from the Deployment, the workload generation, each scaleDown mode,
//! and the references the controller refuses.

use k8s_openapi::api::apps::v1::DeploymentSpec;

use super::*;
use crate::api::rollout::ObjectRef;
use crate::rollout::hash::pod_template_hash;
use crate::rollout::validate::validate;

const DEPLOYMENT: &str = "demo-deploy";

fn template(image: &str) -> PodTemplateSpec {
    rollout(1, image, None, None).spec.template.unwrap()
}

/// The Deployment the Rollout names: `replicas` pods of `image`, labelled
/// and selected by app=demo, at generation 1.
fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(DEPLOYMENT.into()),
            namespace: Some("ns".into()),
            generation: Some(1),
            resource_version: Some("100".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "demo".to_string())].into()),
                match_expressions: None,
            },
            template: template(image),
            ..Default::default()
        }),
        status: None,
    }
}

/// A 3-replica canary Rollout with no template and no selector, referencing
/// the Deployment with this scaleDown.
fn referencing(scale_down: Option<&str>) -> Rollout {
    let mut ro = rollout(3, "unused", None, None);
    ro.spec.template = None;
    ro.spec.selector = None;
    ro.spec.workload_ref = Some(ObjectRef {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some(DEPLOYMENT.into()),
        scale_down: scale_down.map(String::from),
    });
    ro
}

fn world(scale_down: Option<&str>, deployment_replicas: i32) -> Sim {
    let mut w = Sim::new(referencing(scale_down));
    w.deployment = Some(deployment(deployment_replicas, "nginx:1"));
    w
}

fn deployment_replicas(w: &Sim) -> i32 {
    w.deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap()
}

/// A `kubectl set image deployment/...`: new template, next generation.
fn set_deployment_image(w: &mut Sim, image: &str) {
    let d = w.deployment.as_mut().unwrap();
    d.spec.as_mut().unwrap().template = template(image);
    d.metadata.generation = Some(d.metadata.generation.unwrap() + 1);
}

fn scales(actions: &[Action]) -> Vec<i32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleDeployment { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

fn image_of(rs: &ReplicaSet) -> Option<String> {
    rs.spec
        .as_ref()?
        .template
        .as_ref()?
        .spec
        .as_ref()?
        .containers[0]
        .image
        .clone()
}

#[test]
fn the_template_and_selector_come_from_the_deployment() {
    let mut w = world(None, 3);
    let actions = w.reconcile();
    let Some(Action::CreateReplicaSet(rs)) = actions.first() else {
        panic!("expected a create, got {actions:?}")
    };
    assert_eq!(image_of(rs).as_deref(), Some("nginx:1"));
    // Exactly the hash an inline copy of the Deployment's template gets.
    let hash = pod_template_hash(&template("nginx:1"), None);
    let inline = plan(
        &Snapshot::new(rollout(3, "nginx:1", None, None), vec![]),
        Timestamp::from_second(w.now).unwrap(),
    );
    assert_eq!(
        inline.status.current_pod_hash.as_deref(),
        Some(hash.as_str())
    );
    let s = w.ro.status.clone().unwrap();
    assert_eq!(s.current_pod_hash.as_deref(), Some(hash.as_str()));
    let labels = rs.spec.as_ref().unwrap().template.as_ref().unwrap();
    let labels = labels.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert_eq!(labels["app"], "demo");
    assert_eq!(labels["rollouts-pod-template-hash"], hash);
    // No selector in the Rollout: the Deployment's.
    assert_eq!(s.selector.as_deref(), Some("app=demo"));
    assert_eq!(s.workload_observed_generation.as_deref(), Some("1"));
    assert!(actions.contains(&Action::SetWorkloadGeneration {
        generation: Some("1".into())
    }));

    w.settle(false);
    let annotations = w.ro.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[WORKLOAD_GENERATION_ANNOTATION], "1");
    assert_eq!(deployment_replicas(&w), 3, "scaleDown unset means never");

    // An update is a change of the Deployment's template.
    set_deployment_image(&mut w, "nginx:2");
    w.settle(true);
    let s = w.ro.status.clone().unwrap();
    let current = w
        .snapshot()
        .replica_set(s.current_pod_hash.as_deref())
        .cloned();
    assert_eq!(image_of(&current.unwrap()).as_deref(), Some("nginx:2"));
    assert_eq!(s.stable_rs, s.current_pod_hash);
    assert_eq!(s.workload_observed_generation.as_deref(), Some("2"));
    assert_eq!(
        w.ro.metadata.annotations.as_ref().unwrap()[WORKLOAD_GENERATION_ANNOTATION],
        "2"
    );
    // The Rollout's own generation did not move: only the Deployment's.
    assert_eq!(s.observed_generation.as_deref(), Some("1"));
}

/// As upstream's resolver, the Rollout carries the Deployment's generation
/// before anything is planned, so a new ReplicaSet copies it with the
/// Rollout's other annotations: upstream adds it to a ReplicaSet that lacks
/// it, a write after a switch.
#[test]
fn a_new_replica_set_carries_the_workload_generation() {
    fn created(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::CreateReplicaSet(rs) => rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(WORKLOAD_GENERATION_ANNOTATION))
                .cloned(),
            _ => None,
        })
    }
    let mut w = world(None, 3);
    let actions = w.reconcile();
    assert_eq!(created(&actions).as_deref(), Some("1"), "{actions:?}");
    // Still recorded on the Rollout itself.
    assert!(actions.contains(&Action::SetWorkloadGeneration {
        generation: Some("1".into())
    }));
    w.settle(false);
    set_deployment_image(&mut w, "nginx:2");
    let actions = w.reconcile();
    assert_eq!(created(&actions).as_deref(), Some("2"), "{actions:?}");
    assert!(actions.contains(&Action::SetWorkloadGeneration {
        generation: Some("2".into())
    }));
}

#[test]
fn never_leaves_the_deployment_alone() {
    let mut w = world(Some("never"), 3);
    for _ in 0..20 {
        assert_eq!(scales(&w.reconcile()), Vec::<i32>::new());
        w.tick();
    }
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(deployment_replicas(&w), 3);
}

#[test]
fn onsuccess_scales_to_zero_only_once_healthy() {
    let mut w = world(Some("onsuccess"), 3);
    let mut healthy_at = None;
    for i in 0..20 {
        let actions = w.reconcile();
        let healthy = w.phase() == Some(RolloutPhase::Healthy);
        if !healthy {
            assert!(scales(&actions).is_empty(), "scaled before Healthy");
            assert_eq!(deployment_replicas(&w), 3);
        } else if healthy_at.is_none() {
            healthy_at = Some(i);
            assert_eq!(scales(&actions), vec![0], "the Healthy plan scales to 0");
        }
        w.tick();
    }
    assert!(healthy_at.is_some());
    assert_eq!(deployment_replicas(&w), 0);
    w.settle(false);

    // Scaled back up by hand (or a GitOps sync) and updated: drained again
    // once the update is Healthy, not before.
    w.deployment
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .replicas = Some(3);
    set_deployment_image(&mut w, "nginx:2");
    let actions = w.reconcile();
    assert_ne!(w.phase(), Some(RolloutPhase::Healthy));
    assert!(scales(&actions).is_empty());
    w.tick();
    w.settle(true);
    assert_eq!(deployment_replicas(&w), 0);
}

/// Pods the Rollout has available, over all its ReplicaSets.
fn set_available(w: &mut Sim, available: i32) {
    let rs = w.replica_sets.first_mut().unwrap();
    let st = rs.status.get_or_insert_with(Default::default);
    st.available_replicas = Some(available);
    st.ready_replicas = Some(available);
}

#[test]
fn progressively_follows_availability_until_the_migration_is_done() {
    let mut w = world(Some("progressively"), 3);
    // First reconcile: the ReplicaSet is created, nothing is available yet.
    assert!(scales(&w.reconcile()).is_empty());
    // Its pods come up one by one; the Deployment gives one up for each.
    let mut seen = vec![];
    for available in [0, 1, 2] {
        w.tick();
        set_available(&mut w, available);
        w.reconcile();
        seen.push(deployment_replicas(&w));
        assert!(
            deployment_replicas(&w) + available >= 3,
            "capacity lost: {} Deployment pods + {available} Rollout pods",
            deployment_replicas(&w)
        );
    }
    assert_eq!(seen, vec![3, 2, 1]);
    // The Rollout's pods fail: the Deployment is scaled back up.
    set_available(&mut w, 0);
    w.reconcile();
    assert_eq!(deployment_replicas(&w), 3);
    // All available: Healthy, and the Deployment is done.
    w.tick();
    w.settle(false);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(deployment_replicas(&w), 0);

    // After the migration the Deployment stays at 0, whatever the Rollout
    // does: a pod lost, or scaled up (an HPA), or updated.
    set_available(&mut w, 1);
    assert!(scales(&w.reconcile()).is_empty());
    w.tick();
    w.ro.spec.replicas = Some(5);
    w.ro.metadata.generation = Some(2);
    assert!(scales(&w.reconcile()).is_empty());
    w.tick();
    w.settle(false);
    set_deployment_image(&mut w, "nginx:2");
    w.settle(true);
    assert_eq!(deployment_replicas(&w), 0);
}

#[test]
fn a_missing_deployment_is_an_invalid_spec_until_it_appears() {
    let mut w = world(Some("progressively"), 3);
    let d = w.deployment.take();
    let actions = w.reconcile();
    assert!(actions.is_empty(), "{actions:?}");
    let s = w.ro.status.clone().unwrap();
    assert_eq!(s.phase, Some(RolloutPhase::Degraded));
    assert_eq!(
        find(&s.conditions, INVALID_SPEC).and_then(|c| c.message.clone()),
        Some(
            "The Rollout \"demo\" is invalid: deployments.apps \"ns/demo-deploy\" not found".into()
        )
    );
    w.deployment = d;
    w.settle(false);
    assert!(find(&w.ro.status.as_ref().unwrap().conditions, INVALID_SPEC).is_none());
}

#[test]
fn references_the_controller_refuses() {
    let snapshot = |ro: Rollout| Snapshot::new(ro, vec![]).with_workload(Some(deployment(3, "x")));
    let message = |ro: Rollout| {
        let p = plan(&snapshot(ro), Timestamp::UNIX_EPOCH);
        assert!(p.actions.is_empty());
        find(&p.status.conditions, INVALID_SPEC)
            .and_then(|c| c.message.clone())
            .expect("InvalidSpec")
    };

    // A template beside the reference: upstream's resolver message, and
    // the field error `lint` reports.
    let mut both = referencing(None);
    both.spec.template = Some(template("nginx:1"));
    assert_eq!(
        message(both.clone()),
        "The Rollout \"demo\" is invalid: template must be empty for workload reference rollout"
    );
    assert_eq!(
        validate(&both)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "spec.template: Internal error: template must be empty for workload reference rollout"
        ]
    );
    // An empty template is no template.
    let mut empty = referencing(None);
    empty.spec.template = Some(PodTemplateSpec::default());
    assert!(
        find(
            &plan(&snapshot(empty), Timestamp::UNIX_EPOCH)
                .status
                .conditions,
            INVALID_SPEC
        )
        .is_none()
    );

    let with_kind = |api_version: &str, kind: &str| {
        let mut ro = referencing(None);
        let r = ro.spec.workload_ref.as_mut().unwrap();
        r.api_version = Some(api_version.into());
        r.kind = Some(kind.into());
        ro
    };
    assert_eq!(
        message(with_kind("apps/v1", "StatefulSet")),
        "The Rollout \"demo\" is invalid: workload of type apps/StatefulSet is not supported"
    );
    assert_eq!(
        message(with_kind("apps/v1beta1", "Deployment")),
        "The Rollout \"demo\" is invalid: spec.workloadRef.apiVersion: Unsupported value: \"apps/v1beta1\": supported values: \"apps/v1\""
    );
    // Kinds upstream resolves and this version does not, yet.
    assert_eq!(
        message(with_kind("apps/v1", "ReplicaSet")),
        "The Rollout \"demo\" uses spec.workloadRef of kind ReplicaSet, which this version of the controller does not implement yet"
    );
    assert!(
        message(with_kind("v1", "PodTemplate")).contains("spec.workloadRef of kind PodTemplate")
    );

    // The Rollout's own selector must match the Deployment's template.
    let mut other = referencing(None);
    other.spec.selector = Some(LabelSelector {
        match_labels: Some([("app".to_string(), "other".to_string())].into()),
        match_expressions: None,
    });
    assert_eq!(
        message(other),
        "The Rollout \"demo\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"demo\"}: `selector` does not match template `labels`"
    );

    // As written, a reference with no template and no selector is valid.
    assert!(validate(&referencing(Some("progressively"))).is_empty());
}

#[test]
fn dropping_the_reference_clears_the_workload_generation() {
    let mut w = world(None, 3);
    w.settle(false);
    assert!(
        w.ro.status
            .as_ref()
            .unwrap()
            .workload_observed_generation
            .is_some()
    );
    // Inline again, with the same template: the same ReplicaSet goes on.
    let hash = w.ro.status.as_ref().unwrap().current_pod_hash.clone();
    w.ro.spec.workload_ref = None;
    w.ro.spec.template = Some(template("nginx:1"));
    w.ro.spec.selector = rollout(3, "x", None, None).spec.selector;
    w.ro.metadata.generation = Some(2);
    let actions = w.reconcile();
    assert!(actions.contains(&Action::SetWorkloadGeneration { generation: None }));
    let s = w.ro.status.clone().unwrap();
    assert_eq!(s.workload_observed_generation, None);
    assert_eq!(s.current_pod_hash, hash);
    w.settle(false);
    assert!(
        !w.ro
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(WORKLOAD_GENERATION_ANNOTATION)
    );
}
