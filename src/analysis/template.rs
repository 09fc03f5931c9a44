//! From a Rollout's analysis (template references and arguments) to the spec
//! of an AnalysisRun, as upstream: referenced templates (and the templates
//! they nest) are flattened into one list of metrics, their arguments merged
//! with the Rollout's, dryRun and measurementRetention rules concatenated.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::args::merge;
use crate::api::analysis::{AnalysisRunSpec, AnalysisTemplateSpec, Argument};
use crate::api::common::AnalysisTemplateRef;
use crate::api::rollout::{AnalysisRunArgument, RolloutAnalysis};

/// A template as referenced: (clusterScope, name).
pub type TemplateKey = (bool, String);
/// The templates a reconcile has read, by reference.
pub type Templates = BTreeMap<TemplateKey, AnalysisTemplateSpec>;

pub fn key(r: &AnalysisTemplateRef) -> TemplateKey {
    (r.cluster(), r.template_name.clone())
}

fn kind(cluster: bool) -> &'static str {
    if cluster {
        "ClusterAnalysisTemplate"
    } else {
        "AnalysisTemplate"
    }
}

/// Every template reachable from `refs` (nested `templates[]` included), in
/// order, each once; the first missing one is an error.
pub fn resolve<'a>(
    refs: &[AnalysisTemplateRef],
    templates: &'a Templates,
) -> Result<Vec<&'a AnalysisTemplateSpec>, String> {
    fn walk<'a>(
        refs: &[AnalysisTemplateRef],
        templates: &'a Templates,
        seen: &mut BTreeSet<TemplateKey>,
        out: &mut Vec<&'a AnalysisTemplateSpec>,
    ) -> Result<(), String> {
        for r in refs {
            let k = key(r);
            if !seen.insert(k.clone()) {
                continue;
            }
            let t = templates
                .get(&k)
                .ok_or_else(|| format!("{} '{}' not found", kind(k.0), k.1))?;
            out.push(t);
            walk(&t.templates, templates, seen, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(refs, templates, &mut BTreeSet::new(), &mut out)?;
    Ok(out)
}

/// Every template reference the spec can reach, given what has been read
/// so far (the shell reads until nothing new turns up).
pub fn wanted(refs: &[AnalysisTemplateRef], templates: &Templates) -> BTreeSet<TemplateKey> {
    let mut want = BTreeSet::new();
    let mut stack: Vec<TemplateKey> = refs.iter().map(key).collect();
    while let Some(k) = stack.pop() {
        if want.insert(k.clone())
            && let Some(t) = templates.get(&k)
        {
            stack.extend(t.templates.iter().map(key));
        }
    }
    want
}

/// One template made of several, as upstream's FlattenTemplates.
fn flatten(parts: &[&AnalysisTemplateSpec]) -> Result<AnalysisTemplateSpec, String> {
    let mut out = AnalysisTemplateSpec::default();
    let mut names = BTreeSet::new();
    for t in parts {
        for m in &t.metrics {
            if !names.insert(m.name.clone()) {
                return Err(format!("two metrics have the same name '{}'", m.name));
            }
            out.metrics.push(m.clone());
        }
        for arg in &t.args {
            match out.args.iter_mut().find(|a| a.name == arg.name) {
                Some(prev) => match (&prev.value, &arg.value) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(format!(
                            "Argument `{}` specified multiple times with different values: '{a}', '{b}'",
                            arg.name
                        ));
                    }
                    (None, _) => *prev = arg.clone(),
                    _ => {}
                },
                None => out.args.push(arg.clone()),
            }
        }
        out.dry_run.extend(t.dry_run.iter().cloned());
        out.measurement_retention
            .extend(t.measurement_retention.iter().cloned());
    }
    Ok(out)
}

/// What a Rollout knows when it builds a run's arguments.
pub struct ArgContext<'a> {
    /// The Rollout as JSON, for `fieldRef`.
    pub rollout: &'a Value,
    pub stable_hash: Option<&'a str>,
    pub latest_hash: &'a str,
}

/// The Rollout's arguments with their values: `podTemplateHashValue`
/// (Stable | Latest) and `fieldRef` into the Rollout.
pub fn rollout_args(
    args: &[AnalysisRunArgument],
    ctx: &ArgContext,
) -> Result<Vec<Argument>, String> {
    args.iter()
        .map(|a| {
            let from = a.value_from.as_ref();
            let value = match (
                from.and_then(|f| f.pod_template_hash_value.as_deref()),
                from.and_then(|f| f.field_ref.as_ref()),
            ) {
                (Some("Latest"), _) => Some(ctx.latest_hash.to_string()),
                (Some("Stable"), _) => Some(ctx.stable_hash.unwrap_or_default().to_string()),
                (Some(other), _) => {
                    return Err(format!(
                        "argument {:?}: podTemplateHashValue must be Stable or Latest, not {other:?}",
                        a.name
                    ));
                }
                (None, Some(f)) => Some(field_path(ctx.rollout, &f.field_path).ok_or_else(
                    || format!("argument {:?}: fieldPath {:?} not found in the Rollout", a.name, f.field_path),
                )?),
                (None, None) => a.value.clone(),
            };
            Ok(Argument {
                name: a.name.clone(),
                value,
                value_from: None,
            })
        })
        .collect()
}

/// A value in `obj` at a field path such as `metadata.name`,
/// `metadata.labels['app']` or `spec.template.spec.containers[0].image`.
/// Strings are returned as they are, other values as JSON.
pub fn field_path(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            let key = inner[..end].trim_matches(|c| c == '\'' || c == '"');
            cur = match key.parse::<usize>() {
                Ok(i) if cur.is_array() => cur.get(i)?,
                _ => cur.get(key)?,
            };
            rest = inner[end + 1..].trim_start_matches('.');
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            cur = cur.get(&rest[..end])?;
            rest = rest[end..].trim_start_matches('.');
        }
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The spec of a run for `analysis`, with the Rollout's arguments resolved.
pub fn run_spec(
    analysis: &RolloutAnalysis,
    templates: &Templates,
    args: &[Argument],
) -> Result<AnalysisRunSpec, String> {
    let parts = resolve(&analysis.templates, templates)?;
    let flat = flatten(&parts)?;
    let args = merge(args, &flat.args).map_err(|e| e.to_string())?;
    let mut dry_run = analysis.dry_run.clone();
    dry_run.extend(flat.dry_run);
    let mut retention = analysis.measurement_retention.clone();
    retention.extend(flat.measurement_retention);
    unique(dry_run.iter().map(|d| d.metric_name.as_str()), "Dry-Run")?;
    unique(
        retention.iter().map(|r| r.metric_name.as_str()),
        "Measurement Retention",
    )?;
    Ok(AnalysisRunSpec {
        metrics: flat.metrics,
        args,
        dry_run,
        measurement_retention: retention,
        ..Default::default()
    })
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, what: &str) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("two {what} metric rules have the same name '{n}'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::Metric;
    use crate::api::common::DryRun;
    use crate::api::rollout::ArgumentValueFrom;
    use serde_json::json;

    fn tref(name: &str, cluster: bool) -> AnalysisTemplateRef {
        AnalysisTemplateRef {
            template_name: name.into(),
            cluster_scope: Some(cluster),
        }
    }
    fn metric(name: &str) -> Metric {
        Metric {
            name: name.into(),
            ..Default::default()
        }
    }
    fn arg(name: &str, value: Option<&str>) -> Argument {
        Argument {
            name: name.into(),
            value: value.map(Into::into),
            value_from: None,
        }
    }

    fn templates() -> Templates {
        let mut t = Templates::new();
        t.insert(
            (false, "web".into()),
            AnalysisTemplateSpec {
                metrics: vec![metric("success-rate")],
                args: vec![arg("service", None), arg("port", Some("80"))],
                templates: vec![tref("shared", true)],
                ..Default::default()
            },
        );
        t.insert(
            (true, "shared".into()),
            AnalysisTemplateSpec {
                metrics: vec![metric("latency")],
                args: vec![arg("service", None)],
                dry_run: vec![DryRun {
                    metric_name: "latency".into(),
                }],
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn nested_and_cluster_templates_merge_into_one_run() {
        let analysis = RolloutAnalysis {
            templates: vec![tref("web", false)],
            ..Default::default()
        };
        let spec = run_spec(&analysis, &templates(), &[arg("service", Some("api"))]).unwrap();
        let names: Vec<_> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["success-rate", "latency"]);
        assert_eq!(
            spec.args,
            vec![arg("service", Some("api")), arg("port", Some("80"))]
        );
        assert_eq!(spec.dry_run[0].metric_name, "latency");
        assert_eq!(
            wanted(&analysis.templates, &templates()),
            BTreeSet::from([(false, "web".into()), (true, "shared".into())])
        );
    }

    #[test]
    fn missing_templates_arguments_and_duplicates_are_errors() {
        let missing = RolloutAnalysis {
            templates: vec![tref("nope", true)],
            ..Default::default()
        };
        assert_eq!(
            run_spec(&missing, &templates(), &[]).unwrap_err(),
            "ClusterAnalysisTemplate 'nope' not found"
        );
        let web = RolloutAnalysis {
            templates: vec![tref("web", false)],
            ..Default::default()
        };
        assert_eq!(
            run_spec(&web, &templates(), &[]).unwrap_err(),
            "argument \"service\" was not supplied"
        );
        let twice = RolloutAnalysis {
            templates: vec![tref("web", false), tref("shared", true)],
            ..Default::default()
        };
        // "shared" is nested in "web" and named again: still one copy.
        assert!(run_spec(&twice, &templates(), &[arg("service", Some("a"))]).is_ok());
        let mut clash = templates();
        clash.insert(
            (false, "other".into()),
            AnalysisTemplateSpec {
                metrics: vec![metric("latency")],
                ..Default::default()
            },
        );
        let both = RolloutAnalysis {
            templates: vec![tref("web", false), tref("other", false)],
            ..Default::default()
        };
        assert_eq!(
            run_spec(&both, &clash, &[arg("service", Some("a"))]).unwrap_err(),
            "two metrics have the same name 'latency'"
        );
    }

    #[test]
    fn rollout_arguments_come_from_hashes_and_field_paths() {
        let ro = json!({"metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "shop"}},
            "spec": {"template": {"spec": {"containers": [{"image": "nginx:2"}]}}}});
        let ctx = ArgContext {
            rollout: &ro,
            stable_hash: Some("abc"),
            latest_hash: "def",
        };
        let from = |hash: Option<&str>, path: Option<&str>| AnalysisRunArgument {
            name: "x".into(),
            value: None,
            value_from: Some(ArgumentValueFrom {
                pod_template_hash_value: hash.map(Into::into),
                field_ref: path.map(|p| crate::api::common::FieldRef {
                    field_path: p.into(),
                }),
            }),
        };
        let value = |a: AnalysisRunArgument| rollout_args(&[a], &ctx).map(|v| v[0].value.clone());
        assert_eq!(value(from(Some("Latest"), None)), Ok(Some("def".into())));
        assert_eq!(value(from(Some("Stable"), None)), Ok(Some("abc".into())));
        assert_eq!(
            value(from(
                None,
                Some("metadata.labels['app.kubernetes.io/name']")
            )),
            Ok(Some("shop".into()))
        );
        assert_eq!(
            value(from(None, Some("spec.template.spec.containers[0].image"))),
            Ok(Some("nginx:2".into()))
        );
        assert!(value(from(None, Some("metadata.nope"))).is_err());
    }
}
