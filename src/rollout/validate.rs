//! Validation of a Rollout spec. The first error becomes the InvalidSpec
//! condition, in upstream's words: `The Rollout "x" is invalid: <error>`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::Rollout;
use crate::api::common::parse_duration;
use crate::api::rollout::{CanaryStrategy, RolloutTrafficRouting, SetCanaryScale, SetHeaderRoute};
use crate::rollout::hash::{selector_is_empty, selector_matches};

/// One field error, rendered like Kubernetes' `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub kind: ErrorKind,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    /// The offending value, already rendered as Go's `%v`/`%q` would.
    Invalid(String),
    /// Kubernetes' `field.InternalError`.
    Internal,
    /// Kubernetes' `field.Forbidden`.
    Forbidden,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Required => write!(f, "{}: Required value: {}", self.path, self.detail),
            ErrorKind::Invalid(v) => {
                write!(f, "{}: Invalid value: {}: {}", self.path, v, self.detail)
            }
            ErrorKind::Internal => write!(f, "{}: Internal error: {}", self.path, self.detail),
            ErrorKind::Forbidden => write!(f, "{}: Forbidden: {}", self.path, self.detail),
        }
    }
}

fn required(path: &str, detail: &str) -> FieldError {
    FieldError {
        path: path.into(),
        kind: ErrorKind::Required,
        detail: detail.into(),
    }
}

const INVALID_STEP: &str = "Step must have one of the following set: experiment, setWeight, setCanaryScale, plugin or pause";

fn invalid(path: &str, value: String, detail: &str) -> FieldError {
    FieldError {
        path: path.into(),
        kind: ErrorKind::Invalid(value),
        detail: detail.into(),
    }
}

/// Go's `%#v` of a map[string]string, as upstream's message shows labels.
fn go_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

fn template_labels(template: Option<&PodTemplateSpec>) -> BTreeMap<String, String> {
    template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn labels_mismatch(labels: &BTreeMap<String, String>) -> FieldError {
    invalid(
        "spec.template.metadata.labels",
        go_map(labels),
        "`selector` does not match template `labels`",
    )
}

/// The selector's matchExpressions, as Kubernetes' ValidateLabelSelector
/// (which upstream runs first): a known operator, values for In and
/// NotIn, none for Exists and DoesNotExist. Without this, a typo in an
/// operator would read as "`selector` does not match template `labels`".
fn validate_selector_expressions(sel: &LabelSelector, errs: &mut Vec<FieldError>) {
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
        match e.operator.as_str() {
            "In" | "NotIn" if !has_values => errs.push(required(
                &format!("{path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if has_values => errs.push(FieldError {
                path: format!("{path}.values"),
                kind: ErrorKind::Forbidden,
                detail: "may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into(),
            }),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(invalid(
                &format!("{path}.operator"),
                format!("{other:?}"),
                "not a valid selector operator",
            )),
        }
    }
}

/// The message of the InvalidSpec condition for the first error, if any.
/// The planner calls it after resolving `spec.workloadRef`: a Rollout with a
/// reference carries the Deployment's template here, and that template is
/// checked against the selector as an inline one would be.
pub fn invalid_spec_message(rollout: &Rollout) -> Option<String> {
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    check(rollout, true)
        .first()
        .map(|e| format!("The Rollout {name:?} is invalid: {e}"))
}

/// Whether the traffic router needs both Services (upstream's
/// requireCanaryStableServices): not Istio subset-level routing (a
/// destinationRule), not ALB or Istio with pingPong, not plugins.
fn needs_canary_and_stable_services(canary: &CanaryStrategy, tr: &RolloutTrafficRouting) -> bool {
    let ping_pong = canary.ping_pong.is_some();
    let istio_host_level = tr
        .istio
        .as_ref()
        .is_some_and(|i| i.get("destinationRule").is_none_or(|d| d.is_null()));
    ((tr.alb.is_some() || istio_host_level) && !ping_pong)
        || tr.smi.is_some()
        || tr.apisix.is_some()
        || tr.ambassador.is_some()
        || tr.nginx.is_some()
        || tr.app_mesh.is_some()
        || tr.traefik.is_some()
}

/// Traffic routing: nginx needs exactly one of stableIngress and
/// stableIngresses; most routers need both Services.
fn validate_routing(
    canary: &CanaryStrategy,
    tr: &RolloutTrafficRouting,
    errs: &mut Vec<FieldError>,
) {
    let needs_services = needs_canary_and_stable_services(canary, tr);
    for (field, name) in [
        ("stableService", &canary.stable_service),
        ("canaryService", &canary.canary_service),
    ] {
        if needs_services && name.as_deref().unwrap_or_default().is_empty() {
            errs.push(invalid(
                &format!("spec.strategy.canary.{field}"),
                "\"\"".into(),
                "Canary service and Stable service must to be set to use Traffic Routing",
            ));
        }
    }
    let routers = [
        tr.nginx.is_some(),
        tr.istio.is_some(),
        tr.alb.is_some(),
        tr.smi.is_some(),
        tr.ambassador.is_some(),
        tr.app_mesh.is_some(),
        tr.traefik.is_some(),
        tr.apisix.is_some(),
        tr.plugins.is_some(),
    ];
    if !routers.contains(&true) {
        errs.push(required(
            "spec.strategy.canary.trafficRouting",
            "trafficRouting must name a traffic router (nginx is the one this controller implements)",
        ));
    }
    if let Some(nginx) = &tr.nginx {
        let single = nginx
            .stable_ingress
            .as_deref()
            .is_some_and(|s| !s.is_empty());
        let multiple = !nginx.stable_ingresses.is_empty();
        let detail = match (single, multiple) {
            (true, true) => Some(
                "Either StableIngress or StableIngresses must be configured. Both are configured.",
            ),
            (false, false) => Some(
                "Either StableIngress or StableIngresses must be configured. Neither are configured.",
            ),
            _ => None,
        };
        if let Some(detail) = detail {
            errs.push(invalid(
                "spec.strategy.canary.trafficRouting.nginx",
                "\"\"".into(),
                detail,
            ));
        }
    }
    if let Some(w) = tr.max_traffic_weight
        && w < 1
    {
        errs.push(invalid(
            "spec.strategy.canary.trafficRouting.maxTrafficWeight",
            w.to_string(),
            "must be greater than 0",
        ));
    }
}

/// setCanaryScale: replicas or weight (in range), or matchTrafficWeight.
fn validate_canary_scale(
    path: &str,
    scale: &SetCanaryScale,
    max_weight: i32,
    errs: &mut Vec<FieldError>,
) {
    if let Some(w) = scale.weight
        && !(0..=max_weight).contains(&w)
    {
        errs.push(invalid(
            &format!("{path}.setCanaryScale.weight"),
            w.to_string(),
            &format!("SetCanaryScale weight needs to be between 0 and {max_weight}"),
        ));
    }
    if let Some(r) = scale.replicas
        && r < 0
    {
        errs.push(invalid(
            &format!("{path}.setCanaryScale.replicas"),
            r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// setHeaderRoute on nginx: the route must be one of managedRoutes (as
/// upstream), and nginx's canary-by-header can express one header, matched
/// exactly or by a regular expression; a match with no value uses nginx's
/// own "always"/"never" convention.
fn validate_header_route(
    path: &str,
    route: &SetHeaderRoute,
    tr: Option<&RolloutTrafficRouting>,
    errs: &mut Vec<FieldError>,
) {
    let path = format!("{path}.setHeaderRoute");
    let Some(tr) = tr else {
        errs.push(invalid(
            &path,
            format!("{:?}", route.name),
            "SetHeaderRoute requires TrafficRouting (nginx, in this controller)",
        ));
        return;
    };
    if tr.managed_routes.is_empty() {
        errs.push(required(
            "spec.strategy.canary.trafficRouting.managedRoutes",
            "Rollout has missing field 'spec.strategy.canary.trafficRouting.managedRoutes'",
        ));
    } else if !tr.managed_routes.iter().any(|m| m.name == route.name) {
        errs.push(invalid(
            &path,
            format!("{:?}", route.name),
            "Steps define a route that does not exist in spec.strategy.canary.trafficRouting.managedRoutes",
        ));
    }
    if route.r#match.len() > 1 {
        errs.push(invalid(
            &format!("{path}.match"),
            format!("{} headers", route.r#match.len()),
            "nginx can route by one header only (canary-by-header)",
        ));
    }
    for (j, m) in route.r#match.iter().enumerate() {
        let at = format!("{path}.match[{j}]");
        if m.header_name.is_empty() {
            errs.push(required(
                &format!("{at}.headerName"),
                "headerName is required",
            ));
        }
        let Some(v) = &m.header_value else {
            continue;
        };
        if v.prefix.is_some() {
            errs.push(invalid(
                &format!("{at}.headerValue.prefix"),
                format!("{:?}", v.prefix.as_deref().unwrap_or_default()),
                "nginx cannot match a header by prefix: use exact or regex",
            ));
        } else if v.exact.is_some() == v.regex.is_some() {
            errs.push(invalid(
                &format!("{at}.headerValue"),
                "\"\"".into(),
                "StringMatch match value must have exactly one of the following: exact, regex, prefix",
            ));
        }
    }
}

/// All errors of a Rollout as written, in the order upstream checks them.
pub fn validate(rollout: &Rollout) -> Vec<FieldError> {
    check(rollout, false)
}

/// `resolved`: a workloadRef's template has been put in spec.template (as
/// upstream's `TemplateResolvedFromRef`).
fn check(rollout: &Rollout, resolved: bool) -> Vec<FieldError> {
    let spec = &rollout.spec;
    let mut errs = Vec::new();

    // Upstream's path repeats "strategy" (its Child() is applied twice); kept
    // so messages read the same as under Argo Rollouts.
    match (&spec.strategy.canary, &spec.strategy.blue_green) {
        (None, None) => errs.push(required(
            "spec.strategy.strategy",
            "Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'",
        )),
        (Some(_), Some(_)) => errs.push(invalid(
            "spec.strategy.strategy",
            "\"blueGreen: true canary: true\"".into(),
            "Multiple Strategies can not be listed",
        )),
        _ => {}
    }

    if spec.workload_ref.is_none() {
        match &spec.selector {
            None => errs.push(required(
                "spec.selector",
                "Rollout has missing field '.spec.selector'",
            )),
            Some(sel) if selector_is_empty(sel) => errs.push(invalid(
                "spec.selector",
                "\"\"".into(),
                "empty selector is invalid for deployment",
            )),
            Some(sel) => {
                let before = errs.len();
                validate_selector_expressions(sel, &mut errs);
                let labels = template_labels(spec.template.as_ref());
                if errs.len() > before {
                    // A malformed selector matches nothing: saying it does
                    // not match the labels would only mislead.
                } else if spec.template.is_none() {
                    errs.push(required(
                        "spec.template",
                        "Rollout has missing field '.spec.template'",
                    ));
                } else if !selector_matches(sel, &labels) {
                    errs.push(labels_mismatch(&labels));
                }
            }
        }
    } else if resolved {
        // The selector (the Rollout's or the Deployment's) against the
        // Deployment's template, as upstream validates a resolved template.
        let labels = template_labels(spec.template.as_ref());
        if let Some(sel) = spec.selector.as_ref()
            && !selector_is_empty(sel)
            && !selector_matches(sel, &labels)
        {
            errs.push(labels_mismatch(&labels));
        }
    } else if !template_is_empty(spec.template.as_ref()) {
        errs.push(FieldError {
            path: "spec.template".into(),
            kind: ErrorKind::Internal,
            detail: "template must be empty for workload reference rollout".into(),
        });
    }

    for (path, value) in [
        ("spec.replicas", spec.replicas),
        ("spec.minReadySeconds", Some(spec.min_ready_seconds)),
        ("spec.revisionHistoryLimit", spec.revision_history_limit),
        (
            "spec.progressDeadlineSeconds",
            spec.progress_deadline_seconds,
        ),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(invalid(
                path,
                v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let deadline = spec.progress_deadline_seconds_or_default();
    if deadline <= spec.min_ready_seconds {
        errs.push(invalid(
            "spec.progressDeadlineSeconds",
            deadline.to_string(),
            "must be greater than minReadySeconds",
        ));
    }

    if let Some(canary) = &spec.strategy.canary {
        let zero = |v: &Option<IntOrString>| match v {
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.trim_end_matches('%') == "0",
            _ => false,
        };
        if zero(&canary.max_surge) && zero(&canary.max_unavailable) {
            errs.push(invalid(
                "spec.strategy.maxSurge",
                "0".into(),
                "MaxSurge and MaxUnavailable both can not be zero",
            ));
        }
        for (what, value) in [
            ("maxSurge", &canary.max_surge),
            ("maxUnavailable", &canary.max_unavailable),
        ] {
            if let Some(IntOrString::String(s)) = value
                && s.trim_end_matches('%').parse::<i32>().is_err()
            {
                errs.push(invalid(
                    &format!("spec.strategy.canary.{what}"),
                    format!("{s:?}"),
                    "must be an integer or a percentage such as \"25%\"",
                ));
            }
        }
        if let (Some(c), Some(s)) = (&canary.canary_service, &canary.stable_service)
            && !c.is_empty()
            && c == s
        {
            errs.push(invalid(
                "spec.strategy.canary.stableService",
                format!("{s:?}"),
                "This rollout uses the same service for the stable and canary services, but two different services are required.",
            ));
        }
        let routed = canary.traffic_routing.is_some();
        if let Some(tr) = &canary.traffic_routing {
            validate_routing(canary, tr, &mut errs);
        }
        let max_weight = canary
            .traffic_routing
            .as_ref()
            .and_then(|t| t.max_traffic_weight)
            .unwrap_or(100);
        if canary.scale_down_delay_seconds.is_some() && !routed {
            errs.push(invalid(
                "spec.strategy.canary.scaleDownDelaySeconds",
                canary
                    .scale_down_delay_seconds
                    .unwrap_or_default()
                    .to_string(),
                "Canary scaleDownDelaySeconds can only be used with traffic routing",
            ));
        }
        if canary.dynamic_stable_scale && !routed {
            errs.push(invalid(
                "spec.strategy.canary.dynamicStableScale",
                "true".into(),
                "Canary dynamicStableScale can only be used with traffic routing",
            ));
        }
        if canary.dynamic_stable_scale && routed && canary.scale_down_delay_seconds.is_some() {
            errs.push(invalid(
                "spec.strategy.canary.dynamicStableScale",
                "true".into(),
                "Canary dynamicStableScale cannot be used with scaleDownDelaySeconds",
            ));
        }
        for (i, step) in canary.steps.iter().enumerate() {
            let path = format!("spec.strategy.canary.steps[{i}]");
            // As upstream: at most one of setWeight, pause, experiment and
            // analysis; setCanaryScale, setHeaderRoute, setMirrorRoute and
            // plugin may stand beside one of them (or alone, or together).
            let (weight, pause, experiment, analysis) = (
                step.set_weight.is_some(),
                step.pause.is_some(),
                step.experiment.is_some(),
                step.analysis.is_some(),
            );
            let kinds = [weight, pause, experiment, analysis];
            if kinds.iter().filter(|b| **b).count() > 1 {
                errs.push(invalid(
                    &path,
                    // A string value, quoted as Kubernetes' field errors quote it.
                    format!(
                        "\"step.Experiment: {experiment} step.Pause: {pause} step.SetWeight: {weight} step.Analysis: {analysis}\""
                    ),
                    INVALID_STEP,
                ));
            }
            let others = [
                step.set_canary_scale.is_some(),
                step.set_header_route.is_some(),
                step.set_mirror_route.is_some(),
                step.plugin.is_some(),
            ];
            if !kinds.iter().chain(others.iter()).any(|b| *b) {
                // Upstream's value says which fields are nil (all of them).
                errs.push(invalid(
                    &path,
                    "\"step.Experiment: true step.Pause: true step.SetWeight: true step.Analysis: true step.SetCanaryScale: true step.SetHeaderRoute: true step.SetMirrorRoute: true step.Plugin: true\"".into(),
                    INVALID_STEP,
                ));
            }
            if let Some(w) = step.set_weight
                && !(0..=max_weight).contains(&w)
            {
                errs.push(invalid(
                    &format!("{path}.setWeight"),
                    w.to_string(),
                    &format!("SetWeight needs to be between 0 and {max_weight}"),
                ));
            }
            if let Some(scale) = &step.set_canary_scale {
                validate_canary_scale(&path, scale, max_weight, &mut errs);
            }
            if let Some(route) = &step.set_header_route {
                validate_header_route(&path, route, canary.traffic_routing.as_ref(), &mut errs);
            }
            if let Some(d) = step.pause.as_ref().and_then(|p| p.duration.as_ref())
                && let Err(e) = parse_duration(d)
            {
                errs.push(invalid(
                    &format!("{path}.pause.duration"),
                    match d {
                        IntOrString::Int(i) => i.to_string(),
                        IntOrString::String(s) => format!("{s:?}"),
                    },
                    &e.to_string(),
                ));
            }
            if step.set_canary_scale.is_some() && !routed {
                errs.push(required(
                    &format!("{path}.setCanaryScale"),
                    "SetCanaryScale requires TrafficRouting to be set",
                ));
            }
        }
    }
    if let Some(bg) = &spec.strategy.blue_green {
        if bg.active_service.is_empty() {
            errs.push(required(
                "spec.strategy.blueGreen.activeService",
                "Rollout has missing field '.spec.strategy.blueGreen.activeService'",
            ));
        } else if bg.preview_service.as_ref() == Some(&bg.active_service) {
            errs.push(invalid(
                "spec.strategy.activeService",
                format!("{:?}", bg.active_service),
                "This rollout uses the same service for the active and preview services, but two different services are required.",
            ));
        }
        if let Some(limit) = bg.scale_down_delay_revision_limit
            && spec.revision_history_limit_or_default() < limit
        {
            errs.push(invalid(
                "spec.strategy.scaleDownDelayRevisionLimit",
                limit.to_string(),
                "This rollout's revision history limit can not be smaller than the rollout's scale down limit",
            ));
        }
        if let Some(IntOrString::String(s)) = &bg.max_unavailable
            && s.trim_end_matches('%').parse::<i32>().is_err()
        {
            errs.push(invalid(
                "spec.strategy.blueGreen.maxUnavailable",
                format!("{s:?}"),
                "must be an integer or a percentage such as \"25%\"",
            ));
        }
    }
    let anti_affinity = spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|b| b.anti_affinity.as_ref())
        .or_else(|| {
            spec.strategy
                .canary
                .as_ref()
                .and_then(|c| c.anti_affinity.as_ref())
        });
    if let Some(a) = anti_affinity {
        let preferred = a
            .preferred_during_scheduling_ignored_during_execution
            .as_ref();
        let required_ = a
            .required_during_scheduling_ignored_during_execution
            .as_ref();
        if preferred.is_some() == required_.is_some() {
            errs.push(invalid(
                "spec.strategy.antiAffinity",
                "\"\"".into(),
                "AntiAffinity must have exactly one strategy listed",
            ));
        }
        if let Some(p) = preferred
            && !(1..=100).contains(&p.weight)
        {
            errs.push(invalid(
                "spec.strategy.antiAffinity.weight",
                p.weight.to_string(),
                "AntiAffinity weight must be between 1-100",
            ));
        }
    }
    errs
}

/// Upstream's `EmptyTemplate`: no labels, no annotations, no pod spec.
pub fn template_is_empty(template: Option<&PodTemplateSpec>) -> bool {
    let Some(t) = template else {
        return true;
    };
    let meta = t.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.as_ref());
    let annotations = meta.and_then(|m| m.annotations.as_ref());
    labels.is_none_or(|l| l.is_empty())
        && annotations.is_none_or(|a| a.is_empty())
        && t.spec.as_ref().is_none_or(|s| *s == PodSpec::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid canary Rollout named "r" with `patch` (YAML lines under
    /// `spec:`) appended, so a test states only what it breaks.
    fn rollout(spec: &str) -> Rollout {
        let yaml = format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: r}}\nspec:\n  template:\n    metadata: {{labels: {{app: r}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n{spec}"
        );
        serde_yaml::from_str(&yaml).expect("test Rollout parses")
    }

    #[test]
    fn selector_expressions_are_checked_as_kubernetes_does() {
        let ro = rollout(
            "  selector:\n    matchLabels: {app: r}\n    matchExpressions: [{key: app, operator: Is, values: [r]}]\n  strategy: {canary: {}}\n",
        );
        assert_eq!(
            invalid_spec_message(&ro).as_deref(),
            Some(
                "The Rollout \"r\" is invalid: spec.selector.matchExpressions[0].operator: Invalid value: \"Is\": not a valid selector operator"
            )
        );
        let ro = rollout(
            "  selector:\n    matchExpressions: [{key: app, operator: In}]\n  strategy: {canary: {}}\n",
        );
        assert_eq!(
            invalid_spec_message(&ro).as_deref(),
            Some(
                "The Rollout \"r\" is invalid: spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )
        );
        let ro = rollout(
            "  selector:\n    matchLabels: {app: r}\n    matchExpressions: [{key: app, operator: Exists, values: [r]}]\n  strategy: {canary: {}}\n",
        );
        assert_eq!(
            invalid_spec_message(&ro).as_deref(),
            Some(
                "The Rollout \"r\" is invalid: spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        );
        let ok = rollout(
            "  selector:\n    matchExpressions: [{key: app, operator: In, values: [r]}, {key: tier, operator: DoesNotExist}]\n  strategy: {canary: {}}\n",
        );
        assert_eq!(invalid_spec_message(&ok), None);
    }
}
