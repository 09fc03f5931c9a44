//! `lint FILE`: offline validation of Rollout and AnalysisTemplate YAML.
//!
//! Each document of the file is checked on its own, with the controller's
//! own rules: a Rollout with [`validate`] (every field error, not only the
//! first one the InvalidSpec condition shows) and the "not implemented yet"
//! refusals of the planner; an AnalysisTemplate or ClusterAnalysisTemplate
//! with the checks an AnalysisRun of it would go through (metrics, dryRun
//! and measurementRetention rules, conditions that do not compile). Checks
//! that need the cluster (Services, Ingresses, referenced templates) are
//! not made. A document that does not fit its kind's schema is a finding
//! with serde's line and column; YAML that cannot be read at all is an
//! error.

use serde::{Deserialize, Deserializer};

use crate::analysis::args::{resolve_metric, without_secrets};
use crate::analysis::run::{dry_run_metrics, retention, validate_metrics};
use crate::api::Rollout;
use crate::api::analysis::{AnalysisTemplateSpec, Metric};
use crate::rollout::plan::unsupported;
use crate::rollout::plan::workload::{self, SCALE_DOWN_VALUES, Target};
use crate::rollout::validate::validate;

/// One finding: which object (kind/name, document index), the field path
/// and the message (the path is part of the message, as Kubernetes renders
/// a field error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    pub kind: String,
    pub name: String,
    pub message: String,
}

const ANALYSIS_TEMPLATE: &str = "AnalysisTemplate";
const CLUSTER_ANALYSIS_TEMPLATE: &str = "ClusterAnalysisTemplate";

/// Lints a multi-document YAML text. Unknown kinds (Services, Ingresses,
/// ...) are skipped. Err only for YAML that cannot be read.
pub fn lint(text: &str) -> Result<Vec<Finding>, String> {
    // First pass: every document as a plain value, to know its kind (and
    // to fail on unreadable YAML before reporting anything).
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        values.push(value);
    }
    // Second pass: the known kinds again, typed, so schema errors keep
    // their position in the file.
    let mut findings = Vec::new();
    let mut checked = 0;
    for (document, (doc, value)) in serde_yaml::Deserializer::from_str(text)
        .zip(&values)
        .enumerate()
    {
        let (kind, name) = kind_and_name(value);
        let mut report = |kind: &str, name: &str, message: String| {
            findings.push(Finding {
                document,
                kind: kind.to_string(),
                name: name.to_string(),
                message,
            })
        };
        if kind == "List" || kind.ends_with("List") {
            // `kubectl get -o yaml` output: each item on its own.
            let items = value.get("items").and_then(serde_yaml::Value::as_sequence);
            for item in items.into_iter().flatten() {
                let (kind, name) = kind_and_name(item);
                if let Some(messages) = lint_object(&kind, item.clone()) {
                    checked += 1;
                    messages.into_iter().for_each(|m| report(&kind, &name, m));
                }
            }
        } else if let Some(messages) = lint_object(&kind, doc) {
            checked += 1;
            messages.into_iter().for_each(|m| report(&kind, &name, m));
        }
    }
    if checked == 0 {
        findings.push(Finding {
            document: 0,
            kind: String::new(),
            name: String::new(),
            message: "nothing to check: no Rollout, AnalysisTemplate or ClusterAnalysisTemplate in the file".into(),
        });
    }
    Ok(findings)
}

fn kind_and_name(value: &serde_yaml::Value) -> (String, String) {
    let text = |v: Option<&serde_yaml::Value>| {
        v.and_then(serde_yaml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        text(value.get("kind")),
        text(value.get("metadata").and_then(|m| m.get("name"))),
    )
}

/// The findings for one object of a kind lint knows; None for other kinds.
fn lint_object<'de>(kind: &str, object: impl Deserializer<'de>) -> Option<Vec<String>> {
    Some(match kind {
        "Rollout" => match Rollout::deserialize(object) {
            Ok(ro) => lint_rollout(&ro),
            Err(e) => vec![e.to_string()],
        },
        ANALYSIS_TEMPLATE | CLUSTER_ANALYSIS_TEMPLATE => {
            match TemplateDocument::deserialize(object) {
                Ok(t) => lint_template(&t.spec),
                Err(e) => vec![e.to_string()],
            }
        }
        _ => return None,
    })
}

/// The part of an (Cluster)AnalysisTemplate that is checked; both kinds
/// share the spec.
#[derive(Deserialize)]
struct TemplateDocument {
    #[serde(default)]
    spec: AnalysisTemplateSpec,
}

/// What the controller refuses as not implemented (first, as the
/// controller reports it), every field error of the spec, then what it
/// would refuse in a workloadRef without reading the cluster.
fn lint_rollout(ro: &Rollout) -> Vec<String> {
    unsupported(ro)
        .into_iter()
        .chain(validate(ro).iter().map(ToString::to_string))
        .chain(lint_workload_ref(ro))
        .collect()
}

/// A workloadRef of a kind the controller refuses, and a scaleDown value it
/// does not know (the controller, as upstream, takes it for `never`: most
/// likely a typo such as `onSuccess`). Whether the Deployment exists is a
/// question for the cluster.
fn lint_workload_ref(ro: &Rollout) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Target::Invalid(message)) = workload::target(ro) {
        out.push(message);
    }
    let scale_down = ro
        .spec
        .workload_ref
        .as_ref()
        .and_then(|r| r.scale_down.as_deref())
        .filter(|v| !v.is_empty() && !SCALE_DOWN_VALUES.contains(v));
    if let Some(value) = scale_down {
        let supported: Vec<String> = SCALE_DOWN_VALUES.iter().map(|v| format!("{v:?}")).collect();
        out.push(format!(
            "spec.workloadRef.scaleDown: Unsupported value: {value:?}: supported values: {} (the controller treats it as \"never\")",
            supported.join(", ")
        ));
    }
    out
}

/// What an AnalysisRun of this template alone would fail on, every metric
/// checked (the controller stops at the first). A metric that uses an
/// argument without a value (the Rollout supplies it) is checked only for
/// what does not depend on it: its conditions, when they use no argument.
fn lint_template(spec: &AnalysisTemplateSpec) -> Vec<String> {
    let mut out = Vec::new();
    // A template made only of other templates has its metrics elsewhere.
    if spec.metrics.is_empty() && !spec.templates.is_empty() {
        return out;
    }
    let args = without_secrets(&spec.args);
    let resolved: Vec<Option<Metric>> = spec
        .metrics
        .iter()
        .map(|m| match resolve_metric(m, &args) {
            Ok(r) => Some(r),
            Err(_) if !uses_arguments(m) => Some(m.clone()),
            Err(_) => None,
        })
        .collect();
    let mut each_valid = true;
    for (i, m) in resolved.iter().enumerate() {
        let Some(m) = m else { continue };
        if let Err(e) = validate_metrics(std::slice::from_ref(m)) {
            each_valid = false;
            let e = e.strip_prefix("metrics[0]: ").unwrap_or(&e).to_string();
            out.push(format!("spec.metrics[{i}]: {e}"));
        }
    }
    let complete: Option<Vec<Metric>> = resolved.into_iter().collect();
    if let Some(metrics) = complete {
        // The list as a whole: empty, duplicate names; then the rules
        // naming metrics.
        if each_valid && let Err(e) = validate_metrics(&metrics) {
            out.push(at_spec(&e));
        }
        if let Err(e) = dry_run_metrics(&spec.dry_run, &metrics) {
            out.push(at_spec(&e));
        }
        if let Err(e) = retention(&spec.measurement_retention, &metrics) {
            out.push(at_spec(&e));
        }
    }
    for (i, m) in spec.metrics.iter().enumerate() {
        for (field, condition) in [
            ("successCondition", &m.success_condition),
            ("failureCondition", &m.failure_condition),
        ] {
            let Some(c) = condition.as_deref().filter(|c| !c.trim().is_empty()) else {
                continue;
            };
            if c.contains("{{") {
                continue;
            }
            if let Err(e) = expr::compile(c) {
                let text = e.to_string();
                let first = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or_default();
                out.push(format!(
                    "spec.metrics[{i}].{field}: Invalid value: {c:?}: {first}"
                ));
            }
        }
    }
    out
}

/// An analysis error as a path under spec: "metrics[1]: ..." and
/// "dryRun[0]: ..." name their field; the others are about the metrics.
fn at_spec(e: &str) -> String {
    if ["metrics[", "dryRun[", "measurementRetention["]
        .iter()
        .any(|p| e.starts_with(p))
    {
        format!("spec.{e}")
    } else {
        format!("spec.metrics: {e}")
    }
}

fn uses_arguments(m: &Metric) -> bool {
    serde_json::to_string(m).is_ok_and(|s| s.contains("{{"))
}

/// One line per finding: `document N: Kind/name: message`.
pub fn render_findings(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no problems found\n".into();
    }
    findings
        .iter()
        .map(|f| {
            let object = match (f.kind.is_empty(), f.name.is_empty()) {
                (true, _) => "(no kind)".to_string(),
                (false, true) => f.kind.clone(),
                (false, false) => format!("{}/{}", f.kind, f.name),
            };
            format!("document {}: {object}: {}\n", f.document + 1, f.message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    const BAD_ROLLOUT: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: bad
spec:
  replicas: 3
  selector:
    matchLabels:
      app: bad
  template:
    metadata:
      labels:
        app: bad
    spec:
      containers:
      - name: app
        image: nginx
  strategy:
    canary:
      steps:
      - setWeight: 120
      - pause: {duration: 10x}
"#;

    #[test]
    fn valid_rollouts_have_no_findings() {
        for f in ["rollout-canary.yaml", "nginx-getting-started.yaml"] {
            assert_eq!(lint(&fixture(f)).unwrap(), vec![], "{f}");
        }
        assert_eq!(
            render_findings(&lint(&fixture("rollout-canary.yaml")).unwrap()),
            "no problems found\n"
        );
    }

    #[test]
    fn list_items_are_checked_and_a_file_without_our_kinds_is_a_finding() {
        let bad = BAD_ROLLOUT.replace('\n', "\n    ");
        let list = format!("apiVersion: v1\nkind: List\nitems:\n- {}\n", bad.trim_end());
        let findings = lint(&list).unwrap();
        assert!(!findings.is_empty());
        assert!(
            findings
                .iter()
                .all(|f| (f.kind.as_str(), f.name.as_str()) == ("Rollout", "bad")),
            "{findings:?}"
        );
        let only_a_service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n";
        let findings = lint(only_a_service).unwrap();
        assert_eq!(findings.len(), 1);
        assert!(findings[0].message.starts_with("nothing to check"));
    }

    #[test]
    fn every_field_error_is_reported_with_its_path() {
        let findings = lint(BAD_ROLLOUT).unwrap();
        let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(
            messages[0],
            "spec.strategy.canary.steps[0].setWeight: Invalid value: 120: SetWeight needs to be between 0 and 100"
        );
        assert!(
            messages[1].starts_with(
                "spec.strategy.canary.steps[1].pause.duration: Invalid value: \"10x\": "
            ),
            "{}",
            messages[1]
        );
        assert!(
            findings
                .iter()
                .all(|f| (f.document, f.kind.as_str(), f.name.as_str()) == (0, "Rollout", "bad"))
        );
        let text = render_findings(&findings);
        assert!(text.starts_with("document 1: Rollout/bad: spec.strategy.canary.steps[0]"));
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn what_the_controller_does_not_implement_is_reported() {
        let text = BAD_ROLLOUT
            .replace("- setWeight: 120", "- setWeight: 20")
            .replace("- pause: {duration: 10x}", "- experiment: {templates: []}");
        let findings = lint(&text).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            findings[0].message,
            "The Rollout \"bad\" uses experiment steps, which this version of the controller does not implement yet"
        );
    }

    const WORKLOAD_REF: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 3
  workloadRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
    scaleDown: progressively
  strategy:
    canary:
      steps:
      - setWeight: 50
      - pause: {}
"#;

    #[test]
    fn workload_refs_lint_clean_without_template_or_selector() {
        assert_eq!(lint(WORKLOAD_REF).unwrap(), vec![]);
        let both = WORKLOAD_REF.replace(
            "  strategy:",
            "  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: nginx}]}\n  strategy:",
        );
        let messages: Vec<String> = lint(&both)
            .unwrap()
            .into_iter()
            .map(|f| f.message)
            .collect();
        assert_eq!(
            messages,
            [
                "spec.template: Internal error: template must be empty for workload reference rollout"
            ]
        );
        let odd = WORKLOAD_REF
            .replace("kind: Deployment", "kind: StatefulSet")
            .replace("scaleDown: progressively", "scaleDown: onSuccess");
        let messages: Vec<String> = lint(&odd).unwrap().into_iter().map(|f| f.message).collect();
        assert_eq!(
            messages,
            [
                "workload of type apps/StatefulSet is not supported",
                "spec.workloadRef.scaleDown: Unsupported value: \"onSuccess\": supported values: \"never\", \"onsuccess\", \"progressively\" (the controller treats it as \"never\")"
            ]
        );
    }

    #[test]
    fn analysis_templates_are_checked_like_their_runs() {
        let text = r#"
kind: Service
metadata: {name: skipped}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
  - name: service
  metrics:
  - name: ok
    interval: 1m
    count: 3
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: http://prometheus:9090
        query: sum(rate(x{service="{{args.service}}"}[1m]))
  - name: bad
    count: 2
    provider:
      web:
        url: http://example.com
---
apiVersion: argoproj.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata:
  name: cluster
spec:
  metrics:
  - name: web
    successCondition: "result ==="
    provider:
      web:
        url: http://example.com
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: empty
spec: {}
"#;
        let findings = lint(text).unwrap();
        let got: Vec<(usize, &str, &str, &str)> = findings
            .iter()
            .map(|f| {
                (
                    f.document,
                    f.kind.as_str(),
                    f.name.as_str(),
                    f.message.as_str(),
                )
            })
            .collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(
            got[0],
            (
                1,
                "AnalysisTemplate",
                "success-rate",
                "spec.metrics[1]: interval must be specified when count > 1"
            )
        );
        assert_eq!(
            (got[1].0, got[1].1, got[1].2),
            (2, "ClusterAnalysisTemplate", "cluster")
        );
        assert!(
            got[1]
                .3
                .starts_with("spec.metrics[0].successCondition: Invalid value: \"result ===\": "),
            "{}",
            got[1].3
        );
        assert_eq!(
            got[2],
            (
                3,
                "AnalysisTemplate",
                "empty",
                "spec.metrics: no metrics specified"
            )
        );
    }

    #[test]
    fn schema_errors_are_findings_with_their_position() {
        let text = fixture("rollout-canary.yaml").replace("replicas: 5", "replicas: five");
        let findings = lint(&text).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].message.contains("line 9"),
            "{}",
            findings[0].message
        );
        assert_eq!(findings[0].name, "rollout-canary");
        // Positions count from the start of the file, whatever the document.
        let text = fixture("nginx-getting-started.yaml").replace("replicas: 5", "replicas: five");
        let findings = lint(&text).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].document, 3);
        assert!(
            findings[0].message.contains("line 54"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn unreadable_yaml_is_an_error_naming_the_line() {
        let text = "kind: Rollout\nmetadata:\n  name: x\nspec: [unclosed\n";
        let err = lint(text).unwrap_err();
        assert!(err.contains("line "), "{err}");
        let text = "kind: Rollout\nmetadata:\n  name: x\n bad: indent\n";
        let err = lint(text).unwrap_err();
        assert!(err.contains("line 4"), "{err}");
    }
}
