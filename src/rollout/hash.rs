//! Names derived from content: the pod-template hash that names ReplicaSets
//! (upstream's, over Go's JSON: see `crate::go_json`), the steps hash, and
//! the label-selector string of `status.selector`.

use std::collections::BTreeMap;

use crate::api::rollout::CanaryStep;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Label carrying the pod-template hash on ReplicaSets, pods and Services.
pub const POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The pod-template hash that names the ReplicaSet of a template, as
/// upstream Argo Rollouts (v1.10) computes it: FNV-1a (32-bit) over Go's
/// JSON of the template (`crate::go_json`), plus the collision count
/// (little-endian u32 in eight bytes), rendered like Kubernetes'
/// `rand.SafeEncodeString` so it is safe in names and label values. The
/// same template gets the same ReplicaSet under either controller.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let value = serde_json::to_value(template).unwrap_or_default();
    // A template Go could not read (a malformed quantity): upstream could
    // not handle it either; serde's bytes still name it.
    let bytes = crate::go_json::pod_template(&value, crate::go_json::Dialect::OmitZero)
        .map(String::into_bytes)
        .unwrap_or_else(|_| serde_json::to_vec(template).unwrap_or_default());
    hash_bytes(&bytes, collision_count)
}

/// Every hash an existing ReplicaSet of this template may carry, the one
/// to create first: upstream v1.10's; upstream's before Go's `omitzero`
/// (v1.9 and older write `"creationTimestamp":null`); this controller's
/// before it matched upstream (serde's JSON). A ReplicaSet found under any
/// of them is the template's, so switching controllers, or upgrading this
/// one, replaces no pods.
pub fn pod_template_hashes(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Vec<String> {
    let value = serde_json::to_value(template).unwrap_or_default();
    let legacy = serde_json::to_vec(template).unwrap_or_default();
    let go = |dialect| crate::go_json::pod_template(&value, dialect).map(String::into_bytes);
    // As in `pod_template_hash`: serde's bytes where Go could not read it.
    let mut out: Vec<String> = [
        go(crate::go_json::Dialect::OmitZero).unwrap_or_else(|_| legacy.clone()),
        go(crate::go_json::Dialect::BeforeOmitZero).unwrap_or_else(|_| legacy.clone()),
        legacy,
    ]
    .iter()
    .map(|bytes| hash_bytes(bytes, collision_count))
    .collect();
    out.dedup();
    out
}

fn hash_bytes(bytes: &[u8], collision_count: Option<i32>) -> String {
    let mut h = Fnv32a::new();
    h.write(bytes);
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h.write(&b);
    }
    safe_encode(&h.0.to_string())
}

/// Hash of the canary steps (`status.currentStepHash`), as upstream
/// computes it: FNV-1a over Go's JSON of `[]CanaryStep`, safe-encoded. A
/// change of steps restarts the rollout's steps, so a switch between
/// controllers in the middle of an update must find the same hash.
/// A Rollout without steps is Go's nil slice (`null`); `steps: []` cannot
/// be told apart from it once read.
pub fn steps_hash(steps: &[CanaryStep]) -> String {
    let value = if steps.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(steps).unwrap_or_default()
    };
    // Steps Go could not read: upstream could not either; serde's bytes
    // still name them.
    let bytes = crate::go_json::canary_steps(&value)
        .map(String::into_bytes)
        .unwrap_or_else(|_| serde_json::to_vec(steps).unwrap_or_default());
    hash_bytes(&bytes, None)
}

/// Whether `recorded` (a Rollout's `currentStepHash`) names these steps:
/// upstream's hash, or the one this controller wrote before it matched
/// upstream (serde's JSON), so upgrading it restarts no update in flight.
pub fn steps_hash_matches(recorded: &str, steps: &[CanaryStep], current: &str) -> bool {
    recorded == current
        || recorded == hash_bytes(&serde_json::to_vec(steps).unwrap_or_default(), None)
}

/// FNV-1a, 32-bit (Go's `hash/fnv.New32a`).
struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Kubernetes' alphabet for `SafeEncodeString` (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// `metav1.FormatLabelSelector`: requirements sorted by key, comma-joined;
/// `<none>` when empty.
pub fn format_selector(selector: Option<&LabelSelector>) -> String {
    let Some(sel) = selector else {
        return "<none>".into();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        };
        reqs.push((e.key.clone(), text));
    }
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Whether a selector selects nothing in particular (matches every object).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn fnv32a_matches_reference_vectors() {
        // Published FNV-1a 32 test vectors.
        let mut h = Fnv32a::new();
        h.write(b"");
        assert_eq!(h.0, 0x811c_9dc5);
        let mut h = Fnv32a::new();
        h.write(b"a");
        assert_eq!(h.0, 0xe40c_292c);
        let mut h = Fnv32a::new();
        h.write(b"foobar");
        assert_eq!(h.0, 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_uses_kubernetes_alphabet() {
        // digits 0-9 map to "4 5 6 7 8 9 b c d f"
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_template_and_collisions() {
        let mut t = PodTemplateSpec::default();
        let a = pod_template_hash(&t, None);
        assert_eq!(a, pod_template_hash(&t, None));
        assert_ne!(a, pod_template_hash(&t, Some(1)));
        t.metadata = Some(Default::default());
        t.metadata.as_mut().unwrap().labels = Some([("app".into(), "x".into())].into());
        assert_ne!(a, pod_template_hash(&t, None));
        assert!(a.len() <= 10 && a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    /// Values from Go (`hack/gojson steps-hash`), i.e. upstream's
    /// currentStepHash for the same steps.
    #[test]
    fn steps_hash_is_upstreams() {
        let steps: Vec<CanaryStep> = serde_json::from_value(serde_json::json!([
            {"setWeight": 20}, {"pause": {}}, {"pause": {"duration": 30}},
            {"analysis": {"templates": [{"templateName": "a"}], "args": [{"name": "x", "value": "<y>"}]}},
            {"setCanaryScale": {"matchTrafficWeight": true}},
            {"setHeaderRoute": {"name": "h", "match": [{"headerName": "n", "headerValue": {"exact": "v"}}]}},
            {"plugin": {"name": "p", "config": {"a": "&", "b": 1}}}
        ]))
        .unwrap();
        assert_eq!(steps_hash(&steps), "76c75758cc");
        // No steps: Go's nil slice.
        assert_eq!(steps_hash(&[]), "5ffbfbbd64");
    }

    #[test]
    fn a_steps_hash_written_before_it_matched_upstream_still_names_the_steps() {
        let steps: Vec<CanaryStep> =
            serde_json::from_value(serde_json::json!([{"setWeight": 20}, {"pause": {}}, {"setHeaderRoute": {"name": "h", "match": [{"headerName": "n", "headerValue": {"exact": "<v>"}}]}}])).unwrap();
        let current = steps_hash(&steps);
        let legacy = hash_bytes(&serde_json::to_vec(&steps).unwrap(), None);
        assert_ne!(legacy, current);
        assert!(steps_hash_matches(&legacy, &steps, &current));
        assert!(steps_hash_matches(&current, &steps, &current));
        assert!(!steps_hash_matches("other", &steps, &current));
    }

    fn sel(labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(exprs),
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selector_formatting_matches_kubernetes() {
        assert_eq!(format_selector(None), "<none>");
        assert_eq!(format_selector(Some(&sel(&[], vec![]))), "<none>");
        let s = sel(
            &[("app", "web"), ("tier", "fe")],
            vec![
                req("env", "In", &["prod", "dev"]),
                req("zone", "DoesNotExist", &[]),
            ],
        );
        assert_eq!(
            format_selector(Some(&s)),
            "app=web,env in (dev,prod),tier=fe,!zone"
        );
    }

    #[test]
    fn selector_matching() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("env".into(), "prod".into()),
        ]
        .into();
        assert!(selector_matches(&sel(&[("app", "web")], vec![]), &labels));
        assert!(!selector_matches(&sel(&[("app", "db")], vec![]), &labels));
        assert!(selector_matches(
            &sel(&[], vec![req("env", "In", &["prod"])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("env", "NotIn", &["prod"])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("app", "Exists", &[])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("app", "DoesNotExist", &[])]),
            &labels
        ));
        assert!(selector_is_empty(&sel(&[], vec![])));
    }
}
