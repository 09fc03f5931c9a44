//! The requests `apply` makes, and what it does with each answer, against
//! a scripted API server: the branches the cluster suite cannot provoke on
//! purpose (a name collision, an adopted ReplicaSet, a refused template,
//! objects already gone, an eviction a budget refuses, a stale read).

use http::Method;
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};

use super::{Applied, ApplyError, apply};
use crate::api::Rollout;
use crate::api::rollout::RolloutStatus;
use crate::controller::fake_api::{calls, requests, server, status};
use crate::rollout::plan::{Action, Plan};

const RS_PATH: &str = "/apis/apps/v1/namespaces/ns/replicasets";
const RO_PATH: &str = "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/web";

fn rollout() -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "ns", "uid": "ro-uid", "resourceVersion": "10"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}},
        "status": {"collisionCount": 2}
    }))
    .unwrap()
}

fn replica_set(owner_uid: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid", "resourceVersion": "20",
            "labels": {"rollouts-pod-template-hash": "abc"},
            "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "uid": owner_uid, "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}}
    })
}

fn create_plan(status: RolloutStatus) -> Plan {
    let rs: ReplicaSet = serde_json::from_value(replica_set("ro-uid")).unwrap();
    Plan {
        actions: vec![Action::CreateReplicaSet(Box::new(rs))],
        status,
        ..Plan::default()
    }
}

/// A plan of `actions` that leaves the status as `ro` has it.
fn actions_only(ro: &Rollout, actions: Vec<Action>) -> Plan {
    Plan {
        actions,
        status: ro.status.clone().unwrap_or_default(),
        ..Plan::default()
    }
}

/// A 409 on create for a ReplicaSet someone else controls: the name is
/// taken, so `collisionCount` goes up by one (the next hash differs) and
/// the reconcile ends with a Collision error; nothing else is written.
#[tokio::test]
async fn a_name_taken_by_another_owner_bumps_the_collision_count() {
    let (client, seen) = server(vec![
        (
            Method::POST,
            RS_PATH,
            409,
            status(409, "AlreadyExists", "exists"),
        ),
        (
            Method::GET,
            &format!("{RS_PATH}/web-abc"),
            200,
            replica_set("someone-else"),
        ),
        (
            Method::PATCH,
            &format!("{RO_PATH}/status"),
            200,
            serde_json::to_value(rollout()).unwrap(),
        ),
    ]);
    let ro = rollout();
    let mut applied = Applied::default();
    let result = apply(
        &client,
        &ro,
        &create_plan(RolloutStatus::default()),
        &mut applied,
    )
    .await;
    assert!(
        matches!(result, Err(ApplyError::Collision { ref name }) if name == "web-abc"),
        "{result:?}"
    );
    assert_eq!(calls(&seen).len(), 3, "{:?}", calls(&seen));
    let patch = requests(&seen)[2].body.clone();
    assert_eq!(
        patch,
        Some(json!({"metadata": {"resourceVersion": "10"}, "status": {"collisionCount": 3}}))
    );
    assert_eq!(applied.done, 0);
    assert!(applied.created.is_none());
}

/// A 409 on create for a ReplicaSet this Rollout controls (made by an
/// earlier reconcile the cache has not shown): adopted as created, and the
/// plan goes on to the status.
#[tokio::test]
async fn our_own_replica_set_from_an_earlier_reconcile_is_adopted() {
    let (client, seen) = server(vec![
        (
            Method::POST,
            RS_PATH,
            409,
            status(409, "AlreadyExists", "exists"),
        ),
        (
            Method::GET,
            &format!("{RS_PATH}/web-abc"),
            200,
            replica_set("ro-uid"),
        ),
    ]);
    let ro = rollout();
    let mut applied = Applied::default();
    let same_status = ro.status.clone().unwrap_or_default();
    let result = apply(&client, &ro, &create_plan(same_status), &mut applied).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(applied.done, 1);
    assert_eq!(
        applied
            .created
            .as_ref()
            .and_then(|rs| rs.metadata.uid.as_deref()),
        Some("rs-uid")
    );
    let versions: Vec<_> = applied
        .versions
        .iter()
        .map(|v| (v.uid.as_str(), v.resource_version.as_str()))
        .collect();
    assert_eq!(versions, [("rs-uid", "20")]);
    assert_eq!(calls(&seen).len(), 2, "no status write: it did not change");
}

/// 422 and 400 on create: the template is invalid; the error carries the
/// hash and the API server's field errors, and nothing else is asked.
#[tokio::test]
async fn a_refused_template_is_rejected_with_the_servers_words() {
    for (code, reason) in [(422, "Invalid"), (400, "BadRequest")] {
        let message =
            "ReplicaSet.apps \"web-abc\" is invalid: spec.template.spec.containers: Required value";
        let (client, seen) = server(vec![(
            Method::POST,
            RS_PATH,
            code,
            status(code, reason, message),
        )]);
        let mut applied = Applied::default();
        let result = apply(
            &client,
            &rollout(),
            &create_plan(RolloutStatus::default()),
            &mut applied,
        )
        .await;
        match result {
            Err(ApplyError::Rejected { name, hash, detail }) => {
                assert_eq!((name.as_str(), hash.as_str()), ("web-abc", "abc"));
                assert!(!detail.is_empty(), "{code}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(calls(&seen).len(), 1);
    }
}

/// Objects already gone (404) are what deleting or terminating wanted:
/// the plan goes on. A 429 on eviction (a PodDisruptionBudget) is retried
/// by a later reconcile, and the plan goes on too.
#[tokio::test]
async fn gone_objects_and_a_refused_eviction_do_not_stop_the_plan() {
    let (client, seen) = server(vec![
        (
            Method::DELETE,
            &format!("{RS_PATH}/old"),
            404,
            status(404, "NotFound", "gone"),
        ),
        (
            Method::PATCH,
            "/apis/argoproj.io/v1alpha1/namespaces/ns/analysisruns/run",
            404,
            status(404, "NotFound", "gone"),
        ),
        (
            Method::DELETE,
            "/apis/argoproj.io/v1alpha1/namespaces/ns/analysisruns/run-old",
            404,
            status(404, "NotFound", "gone"),
        ),
        (
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1/eviction",
            429,
            status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ),
        ),
        (
            Method::POST,
            "/api/v1/namespaces/ns/pods/p2/eviction",
            404,
            status(404, "NotFound", "gone"),
        ),
    ]);
    let ro = rollout();
    let plan = actions_only(
        &ro,
        vec![
            Action::DeleteReplicaSet { name: "old".into() },
            Action::TerminateAnalysisRun { name: "run".into() },
            Action::DeleteAnalysisRun {
                name: "run-old".into(),
            },
            Action::EvictPod { name: "p1".into() },
            Action::EvictPod { name: "p2".into() },
        ],
    );
    let mut applied = Applied::default();
    let result = apply(&client, &ro, &plan, &mut applied).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(applied.done, 5);
    assert_eq!(calls(&seen).len(), 5, "{:?}", calls(&seen));
}

/// The status is written as a merge diff against the status the plan
/// observed (a removed field as null), on the condition that the Rollout
/// is still at the version read; a 409 means it changed, and the reconcile
/// plans again from a fresh read.
#[tokio::test]
async fn the_status_diff_is_written_on_the_version_read_and_a_conflict_replans() {
    let mut ro = rollout();
    ro.status.as_mut().unwrap().message = Some("old message".into());
    let plan = Plan {
        status: RolloutStatus {
            collision_count: Some(2),
            current_pod_hash: Some("abc".into()),
            ..Default::default()
        },
        ..Plan::default()
    };
    let mut written = rollout();
    written.metadata.resource_version = Some("11".into());
    let (client, seen) = server(vec![(
        Method::PATCH,
        &format!("{RO_PATH}/status"),
        200,
        serde_json::to_value(&written).unwrap(),
    )]);
    let mut applied = Applied::default();
    assert!(apply(&client, &ro, &plan, &mut applied).await.is_ok());
    let body = requests(&seen)[0].body.clone();
    assert_eq!(
        body,
        Some(json!({
            "metadata": {"resourceVersion": "10"},
            "status": {"currentPodHash": "abc", "message": null}
        }))
    );
    let versions: Vec<_> = applied
        .versions
        .iter()
        .map(|v| v.resource_version.as_str())
        .collect();
    assert_eq!(versions, ["11"]);

    let (client, _) = server(vec![(
        Method::PATCH,
        &format!("{RO_PATH}/status"),
        409,
        status(409, "Conflict", "the object has been modified"),
    )]);
    let result = apply(&client, &ro, &plan, &mut Applied::default()).await;
    assert!(
        matches!(result, Err(ApplyError::Conflict { .. })),
        "{result:?}"
    );
}

/// A scale is conditional on the ReplicaSet's version as read: a 409 is a
/// conflict (plan again), not a failure.
#[tokio::test]
async fn a_scale_on_a_stale_replica_set_is_a_conflict() {
    let (client, seen) = server(vec![(
        Method::PATCH,
        &format!("{RS_PATH}/web-abc"),
        409,
        status(409, "Conflict", "the object has been modified"),
    )]);
    let ro = rollout();
    let plan = actions_only(
        &ro,
        vec![Action::ScaleReplicaSet {
            name: "web-abc".into(),
            from: 1,
            to: 2,
            desired_replicas: 2,
            resource_version: Some("20".into()),
            clear_deadline: false,
        }],
    );
    let result = apply(&client, &ro, &plan, &mut Applied::default()).await;
    assert!(
        matches!(result, Err(ApplyError::Conflict { ref what }) if what.contains("web-abc") && what.contains("1 -> 2")),
        "{result:?}"
    );
    let body = requests(&seen)[0].body.clone();
    assert_eq!(
        body.as_ref()
            .and_then(|b| b.pointer("/metadata/resourceVersion")),
        Some(&json!("20"))
    );
}

/// The Rollout's annotations go to its ReplicaSet as one merge patch of
/// those keys.
#[tokio::test]
async fn copied_annotations_are_one_merge_patch() {
    let (client, seen) = server(vec![(
        Method::PATCH,
        &format!("{RS_PATH}/web-abc"),
        200,
        replica_set("ro-uid"),
    )]);
    let ro = rollout();
    let plan = actions_only(
        &ro,
        vec![Action::SetReplicaSetAnnotations {
            name: "web-abc".into(),
            annotations: [("team".to_string(), "payments".to_string())].into(),
        }],
    );
    let mut applied = Applied::default();
    assert!(apply(&client, &ro, &plan, &mut applied).await.is_ok());
    let body = requests(&seen)[0].body.clone();
    assert_eq!(
        body,
        Some(json!({"metadata": {"annotations": {"team": "payments"}}}))
    );
    let versions: Vec<_> = applied
        .versions
        .iter()
        .map(|v| (v.uid.as_str(), v.resource_version.as_str()))
        .collect();
    assert_eq!(versions, [("rs-uid", "20")]);
}

/// A Service selector is switched only if the Service is as the plan saw
/// it: one handed back meanwhile (its Rollout deleted while this reconcile
/// ran) answers 409, a conflict, and is left alone.
#[tokio::test]
async fn a_service_switch_is_conditional_on_the_version_seen() {
    let (client, seen) = server(vec![(
        Method::PATCH,
        "/api/v1/namespaces/ns/services/web-active",
        409,
        status(409, "Conflict", "the object has been modified"),
    )]);
    let ro = rollout();
    let plan = actions_only(
        &ro,
        vec![Action::SetServiceSelector {
            name: "web-active".into(),
            hash: "abc".into(),
            adopt: true,
            resource_version: Some("30".into()),
        }],
    );
    let result = apply(&client, &ro, &plan, &mut Applied::default()).await;
    assert!(
        matches!(result, Err(ApplyError::Conflict { ref what }) if what == "Service web-active"),
        "{result:?}"
    );
    let body = requests(&seen)[0].body.clone();
    assert_eq!(
        body,
        Some(json!({
            "metadata": {"resourceVersion": "30", "annotations": {"argo-rollouts.argoproj.io/managed-by-rollouts": "web"}},
            "spec": {"selector": {"rollouts-pod-template-hash": "abc"}}
        }))
    );
}
