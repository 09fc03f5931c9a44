//! ingress-nginx: one canary Ingress per stable Ingress, named
//! `<rollout>-<stable ingress>-canary`. It carries the stable Ingress's rules
//! that reach the stable Service (pointed at the canary Service instead),
//! its TLS and class, and the annotations that tell ingress-nginx how much
//! traffic (`canary-weight`) or which requests (`canary-by-header`) go to it.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressRule, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

use crate::api::Rollout;
use crate::api::rollout::{CanaryStep, NginxTrafficRouting};

pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const CANARY_SUFFIX: &str = "-canary";
/// Longest Kubernetes object name.
const MAX_NAME: usize = 253;

/// Why a canary Ingress cannot be built or written, in upstream's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NginxError {
    #[error("ingress `{ingress}` has no rules using service {service} backend")]
    NoStableRule { ingress: String, service: String },
    #[error("canary ingress `{0}` controlled by different object")]
    ForeignCanary(String),
}

/// Which requests go to the canary regardless of the weight: those with
/// header `name` equal to `exact`, or matching the regular expression
/// `pattern`; with neither, nginx's own convention for the header's value
/// ("always" / "never").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRoute {
    pub name: String,
    pub exact: Option<String>,
    pub pattern: Option<String>,
}

/// The stable Ingresses the Rollout names (stableIngresses, or the single
/// stableIngress).
pub fn stable_ingresses(nginx: &NginxTrafficRouting) -> Vec<String> {
    if nginx.stable_ingresses.is_empty() {
        nginx.stable_ingress.iter().cloned().collect()
    } else {
        nginx.stable_ingresses.clone()
    }
}

/// `<rollout>-<stable>-canary`, the first part cut so the name fits.
pub fn canary_ingress_name(rollout: &str, stable: &str) -> String {
    let mut prefix = format!("{rollout}-{stable}");
    let mut cut = MAX_NAME - CANARY_SUFFIX.len();
    if prefix.len() > cut {
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}{CANARY_SUFFIX}")
}

fn prefix(nginx: &NginxTrafficRouting) -> &str {
    nginx
        .annotation_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_ANNOTATION_PREFIX)
}

/// The header annotations this controller writes. When the Rollout has
/// setHeaderRoute steps they are ours: taken off again when no route is in
/// force (unless the spec's own annotations set them).
pub fn header_annotation_keys(nginx: &NginxTrafficRouting) -> [String; 3] {
    let p = prefix(nginx);
    [
        format!("{p}/canary-by-header"),
        format!("{p}/canary-by-header-value"),
        format!("{p}/canary-by-header-pattern"),
    ]
}

/// The annotations the controller takes off when it no longer wants them:
/// canary-weight-total (maxTrafficWeight removed) and, when the Rollout has
/// setHeaderRoute steps, the header ones.
pub fn owned_annotation_keys(nginx: &NginxTrafficRouting, steps: &[CanaryStep]) -> Vec<String> {
    let mut keys = vec![format!("{}/canary-weight-total", prefix(nginx))];
    if steps.iter().any(|s| s.set_header_route.is_some()) {
        keys.extend(header_annotation_keys(nginx));
    }
    keys
}

/// Does `ingress` have a rule whose backend is `service`?
pub fn has_rule_for(ingress: &Ingress, service: &str) -> bool {
    rules(ingress).iter().any(|r| rule_uses(r, service))
}

fn rules(ingress: &Ingress) -> &[IngressRule] {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or_default()
}

fn rule_uses(rule: &IngressRule, service: &str) -> bool {
    rule.http.iter().flat_map(|h| &h.paths).any(|p| {
        p.backend
            .service
            .as_ref()
            .is_some_and(|s| s.name == service)
    })
}

/// The canary Ingress as it should be for `stable`, sending `weight` (of
/// maxTrafficWeight) to the canary Service, and `header` requests too.
pub fn desired(
    ro: &Rollout,
    nginx: &NginxTrafficRouting,
    stable: &Ingress,
    weight: i32,
    header: Option<&HeaderRoute>,
) -> Result<Ingress, NginxError> {
    let canary = ro.spec.strategy.canary.as_ref();
    let stable_service = canary
        .and_then(|c| c.stable_service.clone())
        .unwrap_or_default();
    let canary_service = canary
        .and_then(|c| c.canary_service.clone())
        .unwrap_or_default();
    let stable_name = stable.name_any();

    // Only the rules that reach the stable Service, now reaching the canary.
    let rules: Vec<IngressRule> = rules(stable)
        .iter()
        .filter(|r| rule_uses(r, &stable_service))
        .cloned()
        .map(|mut rule| {
            for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
                if let Some(svc) = path.backend.service.as_mut()
                    && svc.name == stable_service
                {
                    svc.name = canary_service.clone();
                }
            }
            rule
        })
        .collect();
    if rules.is_empty() {
        return Err(NginxError::NoStableRule {
            ingress: stable_name,
            service: stable_service,
        });
    }

    let p = prefix(nginx);
    let mut annotations = BTreeMap::new();
    if let Some(class) = stable.annotations().get(CLASS_ANNOTATION) {
        annotations.insert(CLASS_ANNOTATION.to_string(), class.clone());
    }
    // Upstream's order: additional (prefix added), canary-specific (full
    // keys, win on collision), then what the controller itself decides.
    for (k, v) in nginx.additional_ingress_annotations.iter().flatten() {
        let key = if k.starts_with(p) {
            k.clone()
        } else {
            format!("{p}/{k}")
        };
        annotations.insert(key, v.clone());
    }
    for (k, v) in nginx.canary_ingress_annotations.iter().flatten() {
        annotations.insert(k.clone(), v.clone());
    }
    if let Some(h) = header {
        let [by_header, by_value, by_pattern] = header_annotation_keys(nginx);
        annotations.insert(by_header, h.name.clone());
        if let Some(v) = &h.exact {
            annotations.insert(by_value, v.clone());
        }
        if let Some(v) = &h.pattern {
            annotations.insert(by_pattern, v.clone());
        }
    }
    annotations.insert(format!("{p}/canary"), "true".into());
    annotations.insert(format!("{p}/canary-weight"), weight.to_string());
    if let Some(total) = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| t.max_traffic_weight)
    {
        annotations.insert(format!("{p}/canary-weight-total"), total.to_string());
    }

    let stable_spec = stable.spec.clone().unwrap_or_default();
    let name = canary_ingress_name(&ro.name_any(), &stable_name);
    Ok(Ingress {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: ro.namespace(),
            annotations: Some(annotations),
            owner_references: ro.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: stable_spec.ingress_class_name,
            rules: Some(rules),
            tls: stable_spec.tls,
            ..IngressSpec::default()
        }),
        status: None,
    })
}

/// Is the existing canary Ingress ours to change?
pub fn check_owner(ro: &Rollout, existing: &Ingress) -> Result<(), NginxError> {
    let uid = ro.meta().uid.as_deref();
    let ours = existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid);
    if ours {
        Ok(())
    } else {
        Err(NginxError::ForeignCanary(existing.name_any()))
    }
}

/// The JSON merge patch that brings `current` to `desired`, or None when
/// nothing differs. Annotations the controller does not own are kept;
/// `owned` ones missing from `desired` are removed. Spec fields are
/// replaced as a whole when they differ.
pub fn patch(current: &Ingress, desired: &Ingress, owned: &[String]) -> Option<Value> {
    let mut annotations = Map::new();
    let have = current.annotations();
    let want = desired.annotations();
    for (k, v) in want {
        if have.get(k) != Some(v) {
            annotations.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in owned {
        if have.contains_key(k) && !want.contains_key(k) {
            annotations.insert(k.clone(), Value::Null);
        }
    }
    let mut out = Map::new();
    if !annotations.is_empty() {
        out.insert("metadata".into(), json!({ "annotations": annotations }));
    }
    let cur = current.spec.clone().unwrap_or_default();
    let des = desired.spec.clone().unwrap_or_default();
    if cur.rules != des.rules
        || cur.tls != des.tls
        || cur.ingress_class_name != des.ingress_class_name
    {
        out.insert(
            "spec".into(),
            json!({
                "rules": des.rules,
                "tls": des.tls,
                "ingressClassName": des.ingress_class_name,
            }),
        );
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_annotations(pairs: &[(&str, &str)]) -> Ingress {
        let mut i = Ingress::default();
        i.metadata.name = Some("x".into());
        i.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        i
    }

    #[test]
    fn canary_names_fit_in_253_characters() {
        assert_eq!(canary_ingress_name("ro", "web"), "ro-web-canary");
        let long = canary_ingress_name(&"r".repeat(200), &"i".repeat(100));
        assert_eq!(long.len(), 253);
        assert!(
            long.ends_with("iii-canary"),
            "the prefix is cut, the suffix kept"
        );
        assert_eq!(&long[..201], format!("{}-", "r".repeat(200)));
    }

    #[test]
    fn patch_changes_only_what_differs_and_removes_only_owned_keys() {
        let current = with_annotations(&[
            ("nginx.ingress.kubernetes.io/canary-weight", "20"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X"),
            ("cert-manager.io/issuer", "other controller"),
        ]);
        let desired = with_annotations(&[("nginx.ingress.kubernetes.io/canary-weight", "40")]);
        let owned = header_annotation_keys(&NginxTrafficRouting::default()).to_vec();
        let p = patch(&current, &desired, &owned).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {
                "nginx.ingress.kubernetes.io/canary-weight": "40",
                "nginx.ingress.kubernetes.io/canary-by-header": null,
            }}})
        );
        // Without header routes the header keys are not ours to remove.
        let p = patch(&current, &desired, &[]).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "40"}}})
        );
        assert_eq!(patch(&current, &current, &owned), None, "nothing to do");
    }

    #[test]
    fn only_a_controller_reference_to_this_rollout_makes_it_ours() {
        let mut ro = Rollout::new("demo", Default::default());
        ro.metadata.uid = Some("u1".into());
        let mut i = with_annotations(&[]);
        assert_eq!(
            check_owner(&ro, &i).unwrap_err().to_string(),
            "canary ingress `x` controlled by different object"
        );
        i.metadata.owner_references = ro.controller_owner_ref(&()).map(|o| vec![o]);
        assert!(check_owner(&ro, &i).is_ok());
    }
}
