//! Validation of a Rollout spec. The first error becomes the InvalidSpec
//! condition, in upstream's words: `The Rollout "x" is invalid: <error>`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::Rollout;
use crate::api::common::parse_duration;
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
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Required => write!(f, "{}: Required value: {}", self.path, self.detail),
            ErrorKind::Invalid(v) => {
                write!(f, "{}: Invalid value: {}: {}", self.path, v, self.detail)
            }
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

/// The message of the InvalidSpec condition for the first error, if any.
pub fn invalid_spec_message(rollout: &Rollout) -> Option<String> {
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    validate(rollout)
        .first()
        .map(|e| format!("The Rollout {name:?} is invalid: {e}"))
}

/// All errors, in the order upstream checks them.
pub fn validate(rollout: &Rollout) -> Vec<FieldError> {
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
                let labels = spec
                    .template
                    .as_ref()
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                if spec.template.is_none() {
                    errs.push(required(
                        "spec.template",
                        "Rollout has missing field '.spec.template'",
                    ));
                } else if !selector_matches(sel, &labels) {
                    errs.push(invalid(
                        "spec.template.metadata.labels",
                        go_map(&labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
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
        for (i, step) in canary.steps.iter().enumerate() {
            let path = format!("spec.strategy.canary.steps[{i}]");
            let set = [
                step.set_weight.is_some(),
                step.pause.is_some(),
                step.experiment.is_some(),
                step.analysis.is_some(),
                step.set_canary_scale.is_some(),
                step.set_header_route.is_some(),
                step.set_mirror_route.is_some(),
                step.plugin.is_some(),
            ]
            .into_iter()
            .filter(|b| *b)
            .count();
            if set != 1 {
                errs.push(invalid(
                    &path,
                    format!("{set} fields"),
                    "Step must have one of the following set: experiment, setWeight, setCanaryScale or pause",
                ));
            }
            if let Some(w) = step.set_weight
                && !(0..=100).contains(&w)
            {
                errs.push(invalid(
                    &format!("{path}.setWeight"),
                    w.to_string(),
                    "SetWeight needs to be between 0 and 100",
                ));
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
