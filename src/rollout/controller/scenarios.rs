//! The reconcile pipeline's request sequences against a scripted API server
//! (`crate::controller::fake_api`): the real planner, the real apply, and
//! the replan loop, with answers the cluster suite cannot provoke on
//! purpose. Each scenario pins the exact requests, in order.

use http::Method;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector;
use serde_json::{Value, json};

use super::caches::Caches;
use super::reconcile::plan_and_apply;
use super::{Context, Error};
use crate::api::Rollout;
use crate::controller::fake_api::{Log, calls, patched, patched_again, requests, server, status};
use crate::controller::index::Index;
use crate::controller::recorder::Recorder;
use crate::controller::workers::Workers;
use crate::metrics::{Metrics, Queue};
use crate::rollout::apply::ApplyError;
use crate::rollout::hash::pod_template_hash;
use crate::rollout::snapshot::Snapshot;

impl Context {
    /// A context whose caches are empty and whose client is `client`.
    fn for_tests(client: Client) -> Context {
        let caches = Caches {
            rollouts: reflector::store().0,
            replica_sets: reflector::store().0,
            replica_sets_by_owner: Index::by_owner(),
            analysis_runs: reflector::store().0,
            runs_by_owner: Index::by_owner(),
            services: reflector::store().0,
            services_by_manager: Index::by_owner(),
            ingresses: reflector::store().0,
            ingresses_by_owner: Index::by_owner(),
            templates: reflector::store().0,
            cluster_templates: None,
            listed: crate::controller::listed::Listed::all(vec![]),
        };
        let metrics = Metrics::new();
        Context {
            recorder: Recorder::start(client.clone()),
            client,
            workers: Workers::new(1, metrics.queue(Queue::Rollouts)),
            caches,
            freshness: Default::default(),
            memos: Default::default(),
            backoff: Default::default(),
            metrics,
        }
    }
}

const NS: &str = "ns";
const RS_PATH: &str = "/apis/apps/v1/namespaces/ns/replicasets";
const RO_PATH: &str = "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/web";
const STATUS_PATH: &str = "/apis/argoproj.io/v1alpha1/namespaces/ns/rollouts/web/status";

/// A canary of one replica, at resourceVersion 10, whose template moved
/// from nginx:1 (the stable ReplicaSet, `stable()`) to nginx:2.
fn rollout() -> Rollout {
    let mut ro: Rollout = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS, "uid": "ro-uid", "resourceVersion": "10", "generation": 2},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("nginx:1"),
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        }
    }))
    .unwrap();
    let stable = hash(&ro);
    ro.spec.template = serde_json::from_value(template("nginx:2")).unwrap();
    ro.status = serde_json::from_value(json!({
        "observedGeneration": "1", "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1, "currentPodHash": stable, "stableRS": stable,
        "currentStepIndex": 2, "currentStepHash": "", "phase": "Healthy",
        "selector": "app=web"
    }))
    .unwrap();
    ro
}

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "app", "image": image}]}})
}

fn hash(ro: &Rollout) -> String {
    pod_template_hash(ro.spec.template.as_ref().unwrap(), None)
}

/// The ReplicaSet of `ro`'s template, controlled by `owner_uid`, with
/// `replicas` (all available), named `web-<hash>`, with `uid`, at `version`;
/// revision 1 for the stable template, 2 for the new one.
fn replica_set(ro: &Rollout, owner_uid: &str, replicas: i32, uid: &str, version: &str) -> Value {
    let hash = hash(ro);
    let revision = if hash == new_rs().0.trim_start_matches("web-") {
        "2"
    } else {
        "1"
    };
    let mut template = serde_json::to_value(ro.spec.template.as_ref().unwrap()).unwrap();
    template["metadata"]["labels"]["rollouts-pod-template-hash"] = json!(hash);
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{hash}"), "namespace": NS, "uid": uid, "resourceVersion": version,
            "generation": 1,
            "labels": {"app": "web", "rollouts-pod-template-hash": hash},
            "annotations": {"rollout.argoproj.io/revision": revision},
            "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "uid": owner_uid, "controller": true}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", "rollouts-pod-template-hash": hash}}, "template": template},
        "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
    })
}

/// The stable ReplicaSet (nginx:1), one replica available.
fn stable() -> ReplicaSet {
    let mut old = rollout();
    old.spec.template = serde_json::from_value(template("nginx:1")).unwrap();
    serde_json::from_value(replica_set(&old, "ro-uid", 1, "stable-uid", "5")).unwrap()
}

/// The Rollout as the API server returns it after a write: `ro` at `version`.
fn returned(ro: &Rollout, version: &str) -> Value {
    let mut v = serde_json::to_value(ro).unwrap();
    v["metadata"]["resourceVersion"] = json!(version);
    v
}

type Outcome = Result<Option<crate::rollout::plan::Plan>, Error>;

/// Runs the plan-apply loop on `ro` and its stable ReplicaSet; returns the
/// outcome and the versions recorded (uid@version).
async fn run(client: Client, ro: Rollout) -> (Outcome, Vec<String>) {
    let ctx = Context::for_tests(client);
    let mut versions = Vec::new();
    let snapshot = Snapshot::new(ro, [stable()]);
    let result = plan_and_apply(&ctx, snapshot, Timestamp::now(), &mut versions).await;
    let versions = versions
        .into_iter()
        .map(|v| format!("{}@{}", v.uid, v.resource_version))
        .collect();
    (result, versions)
}

fn show(seen: &Log) -> Vec<String> {
    calls(seen)
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect()
}

/// The new ReplicaSet's name and path.
fn new_rs() -> (String, String) {
    let name = format!("web-{}", hash(&rollout()));
    let path = format!("{RS_PATH}/{name}");
    (name, path)
}

/// A 409 on the create of a ReplicaSet this Rollout controls (an earlier
/// reconcile made it; the cache has not shown it): adopted, the status
/// written, and the same reconcile plans again from it and scales it.
#[tokio::test]
async fn our_own_replica_set_is_adopted_and_scaled_in_the_same_reconcile() {
    let ro = rollout();
    let (_, new_path) = new_rs();
    let (client, seen) = server(vec![
        (
            Method::POST,
            RS_PATH,
            409,
            status(409, "AlreadyExists", "exists"),
        ),
        (
            Method::GET,
            &new_path,
            200,
            replica_set(&ro, "ro-uid", 0, "new-uid", "30"),
        ),
        (
            Method::PATCH,
            RO_PATH,
            200,
            patched(returned(&ro, "10"), "11"),
        ),
        (Method::PATCH, STATUS_PATH, 200, patched_again("12")),
        (
            Method::PATCH,
            &new_path,
            200,
            patched(replica_set(&ro, "ro-uid", 0, "new-uid", "30"), "31"),
        ),
    ]);
    let (result, versions) = run(client, ro).await;
    assert!(matches!(result, Ok(Some(_))), "{result:?}");
    assert_eq!(
        show(&seen),
        [
            format!("POST {RS_PATH}"),
            format!("GET {new_path}"),
            // Its revision annotation, then the status naming the new hash.
            format!("PATCH {RO_PATH}"),
            format!("PATCH {STATUS_PATH}"),
            // The second plan, from the ReplicaSet as returned: setWeight 50
            // of one replica is one pod.
            format!("PATCH {new_path}"),
        ]
    );
    let scale = requests(&seen)[4].body.clone().unwrap_or_default();
    assert_eq!(scale["spec"]["replicas"], json!(1), "{scale}");
    assert_eq!(
        versions,
        ["new-uid@30", "ro-uid@11", "ro-uid@12", "new-uid@31"]
    );
}

/// A 409 on create for a ReplicaSet someone else controls: the name is
/// taken, `collisionCount` goes up by one (the next hash differs), and the
/// reconcile ends with the Collision error; no replan.
#[tokio::test]
async fn a_name_taken_by_another_owner_bumps_the_collision_count_and_ends() {
    let ro = rollout();
    let (_, new_path) = new_rs();
    let (client, seen) = server(vec![
        (
            Method::POST,
            RS_PATH,
            409,
            status(409, "AlreadyExists", "exists"),
        ),
        (
            Method::GET,
            &new_path,
            200,
            replica_set(&ro, "other-uid", 0, "theirs", "30"),
        ),
        (
            Method::PATCH,
            STATUS_PATH,
            200,
            patched(returned(&ro, "10"), "11"),
        ),
    ]);
    let (result, versions) = run(client, ro).await;
    assert!(
        matches!(result, Err(Error::Apply(ApplyError::Collision { .. }))),
        "{result:?}"
    );
    assert_eq!(
        show(&seen),
        [
            format!("POST {RS_PATH}"),
            format!("GET {new_path}"),
            format!("PATCH {STATUS_PATH}"),
        ]
    );
    let bump = requests(&seen)[2].body.clone().unwrap_or_default();
    assert_eq!(bump["status"]["collisionCount"], json!(1), "{bump}");
    assert_eq!(bump["metadata"]["resourceVersion"], json!("10"), "{bump}");
    assert_eq!(versions, ["ro-uid@11"]);
}

/// A 422 on create: the API server finds the pod template invalid. The
/// same reconcile plans again knowing it: the status says InvalidSpec with
/// the server's words, and nothing is created a second time.
#[tokio::test]
async fn a_refused_template_is_an_invalid_spec_without_a_second_create() {
    let ro = rollout();
    let message = "ReplicaSet.apps \"web-x\" is invalid: spec.template.spec.containers[0].image: Required value";
    let (client, seen) = server(vec![
        (Method::POST, RS_PATH, 422, status(422, "Invalid", message)),
        (
            Method::PATCH,
            STATUS_PATH,
            200,
            patched(returned(&ro, "10"), "11"),
        ),
    ]);
    let (result, _) = run(client, ro).await;
    assert!(matches!(result, Ok(Some(_))), "{result:?}");
    assert_eq!(
        show(&seen),
        [format!("POST {RS_PATH}"), format!("PATCH {STATUS_PATH}")]
    );
    let written = requests(&seen)[1].body.clone().unwrap_or_default();
    let conditions = written["status"]["conditions"].to_string();
    assert!(conditions.contains("InvalidSpec"), "{written}");
    assert!(conditions.contains("Required value"), "{written}");
}

/// A 409 on the status write: someone changed the Rollout since it was
/// read. The Rollout and its ReplicaSets are read afresh (only this
/// Rollout's, by selector), and the second plan is written on the version
/// read. A second conflict ends the reconcile (the loop is bounded).
#[tokio::test]
async fn a_conflict_plans_again_from_a_fresh_read_once() {
    let mut ro = rollout();
    // The ReplicaSet exists: this plan only writes the status.
    ro.status.as_mut().unwrap().phase = None;
    let mut settled = ro.clone();
    settled.spec.template = serde_json::from_value(template("nginx:1")).unwrap();
    settled.metadata.annotations =
        Some([("rollout.argoproj.io/revision".into(), "1".into())].into());
    let stable_rs = serde_json::to_value(stable()).unwrap();
    let list = json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [stable_rs]});
    let conflict = status(409, "Conflict", "the object has been modified");
    for second in [200, 409] {
        let (client, seen) = server(vec![
            (Method::PATCH, STATUS_PATH, 409, conflict.clone()),
            (Method::GET, RO_PATH, 200, returned(&settled, "15")),
            (Method::GET, RS_PATH, 200, list.clone()),
            (
                Method::PATCH,
                STATUS_PATH,
                second,
                if second == 200 {
                    patched(returned(&settled, "15"), "16")
                } else {
                    conflict.clone()
                },
            ),
        ]);
        let (result, versions) = run(client, settled.clone()).await;
        assert_eq!(
            show(&seen),
            [
                format!("PATCH {STATUS_PATH}"),
                format!("GET {RO_PATH}"),
                format!("GET {RS_PATH}"),
                format!("PATCH {STATUS_PATH}"),
            ],
            "second write answered {second}"
        );
        let requests = requests(&seen);
        assert!(
            requests[2]
                .query
                .ends_with("labelSelector=app%3Dweb%2Crollouts-pod-template-hash"),
            "only this Rollout's ReplicaSets: {}",
            requests[2].query
        );
        let precondition = &requests[3].body.as_ref().unwrap()["metadata"]["resourceVersion"];
        assert_eq!(precondition, &json!("15"), "on the version read");
        if second == 200 {
            assert!(matches!(result, Ok(Some(_))), "{result:?}");
            assert_eq!(versions, ["ro-uid@15", "ro-uid@16"]);
        } else {
            assert!(
                matches!(result, Err(Error::Apply(ApplyError::Conflict { .. }))),
                "{result:?}"
            );
            assert_eq!(versions, ["ro-uid@15"]);
        }
    }
}

/// The fresh read after a conflict finds the Rollout deleted: the
/// reconcile ends quietly (no error to retry, nothing more written).
#[tokio::test]
async fn a_rollout_deleted_meanwhile_ends_the_reconcile() {
    let mut settled = rollout();
    settled.spec.template = serde_json::from_value(template("nginx:1")).unwrap();
    settled.metadata.annotations =
        Some([("rollout.argoproj.io/revision".into(), "1".into())].into());
    settled.status.as_mut().unwrap().phase = None;
    let (client, seen) = server(vec![
        (
            Method::PATCH,
            STATUS_PATH,
            409,
            status(409, "Conflict", "modified"),
        ),
        (
            Method::GET,
            RO_PATH,
            404,
            status(404, "NotFound", "rollouts \"web\" not found"),
        ),
    ]);
    let (result, versions) = run(client, settled).await;
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert_eq!(show(&seen).len(), 2);
    assert!(versions.is_empty());
}
