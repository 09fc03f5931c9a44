//! Finding a template's ReplicaSet when no hash names it: by comparing
//! templates, as upstream does last (`FindNewReplicaSet`).
//!
//! `kubectl rollouts undo` (ours and upstream's) copies a ReplicaSet's
//! template back into the Rollout. That template carries every default the
//! API server filled in when it created the ReplicaSet, so it hashes
//! differently from the template the ReplicaSet was made from; without
//! this, undo would create a third ReplicaSet and walk every step again
//! instead of going straight back (a fast rollback). The shell has the API
//! server default the Rollout's template (a server-side dry run), and
//! [`same_template`] compares it with each ReplicaSet's, leaving out what
//! the controllers add to a ReplicaSet's template: the hash label, the
//! ephemeral role metadata, the injected anti-affinity term, and the
//! deprecated `serviceAccount` the API server copies.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::api::common::PodTemplateMetadata;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::replica_set::EPHEMERAL_METADATA_ANNOTATION;
use crate::rollout::snapshot::Snapshot;

/// The hash `template` would get when the snapshot's ReplicaSets carry none
/// of its hashes although there are some, and the template carries the API
/// server's defaults: then a ReplicaSet may still hold this very template
/// (an undo copied it back) and only a comparison can tell. None when a
/// hash finds it, or there is nothing to compare with.
pub fn unmatched_hash(
    snapshot: &Snapshot,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Option<String> {
    if snapshot.replica_sets.is_empty() || !carries_defaults(template) {
        return None;
    }
    let hash = snapshot.pod_hash(template, collision_count);
    snapshot.replica_set(Some(&hash)).is_none().then_some(hash)
}

/// Whether the template has what the API server fills into every pod
/// template it stores (`schedulerName`, each container's
/// `terminationMessagePath`): a template copied from a ReplicaSet always
/// does, one people write seldom. A template without them that equals a
/// ReplicaSet's has that ReplicaSet's hash, so only these need comparing;
/// the others (every ordinary update) cost no dry run.
fn carries_defaults(template: &PodTemplateSpec) -> bool {
    template.spec.as_ref().is_some_and(|spec| {
        spec.scheduler_name.is_some()
            && !spec.containers.is_empty()
            && spec
                .containers
                .iter()
                .all(|c| c.termination_message_path.is_some())
    })
}

/// Whether `live`'s template is `defaulted` (the Rollout's template with
/// the API server's defaults), leaving out what controllers add to a
/// ReplicaSet's template. The ephemeral metadata recorded on `live` is
/// left out of both sides: an undo copies it into the Rollout along with
/// the rest.
pub fn same_template(live: &ReplicaSet, defaulted: &PodTemplateSpec) -> bool {
    let Some(live_template) = live.spec.as_ref().and_then(|s| s.template.as_ref()) else {
        return false;
    };
    let ephemeral: PodTemplateMetadata = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EPHEMERAL_METADATA_ANNOTATION))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let normal = |t: &PodTemplateSpec| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        strip_added(&mut v, &ephemeral);
        prune_empty(&mut v);
        v
    };
    normal(live_template) == normal(defaulted)
}

fn strip_added(template: &mut Value, ephemeral: &PodTemplateMetadata) {
    if let Some(meta) = template.get_mut("metadata") {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            for k in ephemeral.labels.iter().flatten().map(|(k, _)| k) {
                labels.remove(k);
            }
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for k in ephemeral.annotations.iter().flatten().map(|(k, _)| k) {
                annotations.remove(k);
            }
        }
    }
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.remove("serviceAccount");
    let anti = spec
        .get_mut("affinity")
        .and_then(|a| a.get_mut("podAntiAffinity"));
    if let Some(anti) = anti {
        // The injected term selects pods by the hash label (the stable's):
        // no term a person writes does, as the hash is not known to them.
        if let Some(terms) = anti
            .get_mut("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            terms.retain(|t| !selects_by_hash(t));
        }
        if let Some(terms) = anti
            .get_mut("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            terms.retain(|t| !selects_by_hash(&t["podAffinityTerm"]));
        }
    }
}

fn selects_by_hash(term: &Value) -> bool {
    term["labelSelector"]["matchExpressions"]
        .as_array()
        .is_some_and(|exprs| {
            exprs
                .iter()
                .any(|e| e["key"].as_str() == Some(POD_TEMPLATE_HASH_LABEL))
        })
}

/// Nulls and empty lists and objects are left out: an absent field and an
/// empty one mean the same (Go's semantic equality treats them alike).
fn prune_empty(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for item in map.values_mut() {
                prune_empty(item);
            }
            map.retain(|_, item| !is_empty(item));
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune_empty(item);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn rs(template: Value, ephemeral: Option<&str>) -> ReplicaSet {
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"selector": {}, "template": template}
        }))
        .unwrap();
        if let Some(e) = ephemeral {
            rs.metadata.annotations =
                Some([(EPHEMERAL_METADATA_ANNOTATION.to_string(), e.to_string())].into());
        }
        rs
    }

    /// A template as the API server keeps it in a ReplicaSet this
    /// controller made: defaults, hash label, role label, anti-affinity.
    fn live() -> Value {
        json!({
            "metadata": {"labels": {"app": "a", POD_TEMPLATE_HASH_LABEL: "abc", "role": "stable"}},
            "spec": {
                "containers": [{"name": "c", "image": "app:1", "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log", "resources": {}}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "securityContext": {},
                "serviceAccount": "sa", "serviceAccountName": "sa",
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchExpressions": [{"key": POD_TEMPLATE_HASH_LABEL, "operator": "In", "values": ["old"]}]}}}
                ]}}
            }
        })
    }

    fn defaulted(image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {
                "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log"}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "securityContext": {},
                "serviceAccountName": "sa"
            }
        })
    }

    #[test]
    fn what_controllers_add_is_left_out() {
        let live = rs(live(), Some(r#"{"labels":{"role":"stable"}}"#));
        assert!(same_template(&live, &template(defaulted("app:1"))));
        assert!(!same_template(&live, &template(defaulted("app:2"))));
    }

    #[test]
    fn an_undo_copy_with_the_role_label_matches_too() {
        let live = rs(live(), Some(r#"{"labels":{"role":"stable"}}"#));
        let mut copy = defaulted("app:1");
        copy["metadata"]["labels"]["role"] = json!("stable");
        assert!(same_template(&live, &template(copy)));
    }

    #[test]
    fn a_label_controllers_did_not_add_counts() {
        // Without the ephemeral record, `role` is the user's own label.
        let live = rs(live(), None);
        assert!(!same_template(&live, &template(defaulted("app:1"))));
    }

    #[test]
    fn an_anti_affinity_term_a_person_wrote_counts() {
        let mut own = live();
        own["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"]["labelSelector"] = json!({"matchLabels": {"app": "a"}});
        let live = rs(own, Some(r#"{"labels":{"role":"stable"}}"#));
        assert!(!same_template(&live, &template(defaulted("app:1"))));
    }

    #[test]
    fn only_templates_with_the_servers_defaults_are_compared() {
        assert!(carries_defaults(&template(json!({"spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": "c", "terminationMessagePath": "/dev/termination-log"}]
        }}))));
        assert!(!carries_defaults(&template(json!({"spec": {
            "containers": [{"name": "c", "image": "app:1"}]
        }}))));
        assert!(!carries_defaults(&template(json!({"spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": "c", "terminationMessagePath": "/dev/termination-log"}, {"name": "d"}]
        }}))));
    }

    #[test]
    fn a_replica_set_without_a_template_matches_nothing() {
        let live: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "r"}})).unwrap();
        assert!(!same_template(&live, &template(defaulted("app:1"))));
    }
}
