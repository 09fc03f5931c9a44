//! `{{args.NAME}}` substitution in metrics, as upstream: the metric is
//! rendered to JSON, every `{{...}}` tag replaced (JSON-escaped), and read
//! back, so an argument can appear in any provider field. Secret values are
//! substituted only for the measurement itself and masked everywhere else.

use std::collections::BTreeMap;

use crate::api::analysis::{Argument, Metric};

/// Stands in for a secret's value when a metric is resolved for anything
/// but taking a measurement (validation, status, scheduling).
const SECRET_PLACEHOLDER: &str = "temp-for-secret";
pub const MASK: &str = "*****";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("argument {0:?} was not supplied")]
    NotSupplied(String),
    #[error("failed to resolve {{{{{0}}}}}")]
    Unresolved(String),
    #[error("metric {metric:?} is not valid JSON after substitution: {error}")]
    Json { metric: String, error: String },
}

/// Replaces each `{{ tag }}` in `text` with `values[tag]` (tag trimmed).
/// An unknown tag is an error naming it; the rest of the text is kept.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, ArgError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let tag = &rest[start + 2..start + 2 + len];
        let value = values
            .get(tag.trim())
            .ok_or_else(|| ArgError::Unresolved(tag.to_string()))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `args.NAME -> value` map; every argument must have a value by now.
fn values(args: &[Argument]) -> Result<BTreeMap<String, String>, ArgError> {
    args.iter()
        .map(|a| {
            let v = a
                .value
                .as_ref()
                .ok_or_else(|| ArgError::NotSupplied(a.name.clone()))?;
            // Escaped for a JSON string, where the tag sits.
            let quoted = serde_json::to_string(v).unwrap_or_default();
            Ok((
                format!("args.{}", a.name),
                quoted[1..quoted.len().saturating_sub(1)].to_string(),
            ))
        })
        .collect()
}

/// The metric with its arguments substituted.
pub fn resolve_metric(metric: &Metric, args: &[Argument]) -> Result<Metric, ArgError> {
    let values = values(args)?;
    let json = serde_json::to_string(metric).map_err(|e| ArgError::Json {
        metric: metric.name.clone(),
        error: e.to_string(),
    })?;
    let resolved = substitute(&json, &values)?;
    serde_json::from_str(&resolved).map_err(|e| ArgError::Json {
        metric: metric.name.clone(),
        error: e.to_string(),
    })
}

/// Arguments with every secret reference replaced by a placeholder value,
/// for resolving metrics where the real value must not appear.
pub fn without_secrets(args: &[Argument]) -> Vec<Argument> {
    args.iter()
        .map(|a| {
            let secret = a
                .value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some());
            if secret {
                Argument {
                    name: a.name.clone(),
                    value: Some(SECRET_PLACEHOLDER.into()),
                    value_from: None,
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

/// Every metric resolved without secrets.
pub fn resolve_all(metrics: &[Metric], args: &[Argument]) -> Result<Vec<Metric>, ArgError> {
    let args = without_secrets(args);
    metrics.iter().map(|m| resolve_metric(m, &args)).collect()
}

/// `text` with every secret value replaced by `*****`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), MASK))
}

/// Template args overridden by the caller's, as upstream's MergeArgs: every
/// template arg must end up with a value (or a valueFrom).
pub fn merge(incoming: &[Argument], template: &[Argument]) -> Result<Vec<Argument>, ArgError> {
    let mut out: Vec<Argument> = template.to_vec();
    for arg in incoming {
        if let Some(t) = out.iter_mut().find(|t| t.name == arg.name)
            && (arg.value.is_some() || arg.value_from.is_some())
        {
            t.value = arg.value.clone();
            t.value_from = arg.value_from.clone();
        }
    }
    if let Some(missing) = out
        .iter()
        .find(|a| a.value.is_none() && a.value_from.is_none())
    {
        return Err(ArgError::NotSupplied(missing.name.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::{
        MetricProvider, PrometheusMetric, SecretKeyRef, ValueFrom, WebMetric,
    };

    fn arg(name: &str, value: Option<&str>) -> Argument {
        Argument {
            name: name.into(),
            value: value.map(Into::into),
            value_from: None,
        }
    }

    fn prom(query: &str) -> Metric {
        Metric {
            name: "m".into(),
            success_condition: Some("result[0] > {{ args.threshold }}".into()),
            provider: MetricProvider {
                prometheus: Some(PrometheusMetric {
                    address: Some("http://prom:9090".into()),
                    query: Some(query.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn args_are_substituted_in_every_field_and_json_escaped() {
        let m = prom(r#"sum(rate(http{service="{{args.svc}}"}[5m]))"#);
        let args = [arg("svc", Some("a\"b")), arg("threshold", Some("0.9"))];
        let r = resolve_metric(&m, &args).unwrap();
        let q = r.provider.prometheus.unwrap().query.unwrap();
        assert_eq!(q, r#"sum(rate(http{service="a"b"}[5m]))"#);
        assert_eq!(r.success_condition.as_deref(), Some("result[0] > 0.9"));
    }

    #[test]
    fn missing_and_unknown_arguments_are_errors_with_upstream_wording() {
        let m = prom("up");
        assert_eq!(
            resolve_metric(&m, &[arg("threshold", None)])
                .unwrap_err()
                .to_string(),
            "argument \"threshold\" was not supplied"
        );
        assert_eq!(
            resolve_metric(&m, &[]).unwrap_err().to_string(),
            "failed to resolve {{ args.threshold }}"
        );
        assert_eq!(
            merge(&[], &[arg("x", None)]).unwrap_err().to_string(),
            "argument \"x\" was not supplied"
        );
        let merged = merge(
            &[arg("x", Some("1"))],
            &[arg("x", None), arg("y", Some("2"))],
        )
        .unwrap();
        assert_eq!(merged, vec![arg("x", Some("1")), arg("y", Some("2"))]);
    }

    #[test]
    fn secrets_are_placeholders_outside_measurements_and_masked() {
        let mut web = prom("up");
        web.success_condition = None;
        web.provider = MetricProvider {
            web: Some(WebMetric {
                url: "http://x/?token={{args.token}}".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let args = [Argument {
            name: "token".into(),
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: Some(SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                }),
                field_ref: None,
            }),
        }];
        let r = resolve_all(&[web], &args).unwrap();
        assert_eq!(
            r[0].provider.web.as_ref().unwrap().url,
            "http://x/?token=temp-for-secret"
        );
        assert_eq!(
            mask("GET http://x/?token=hunter2 failed", &["hunter2".into()]),
            "GET http://x/?token=***** failed"
        );
    }
}
