//! The objects a Rollout names, as keys the controller's indexes group by:
//! its Services, the nginx Ingresses, the analysis templates (and the ones
//! they nest) and the workloadRef Deployment. When one of them appears or
//! changes, the Rollouts that name it are reconciled at once, as upstream
//! re-queues them, instead of waiting for the retry of an invalid spec.

use kube::{Resource, ResourceExt};

use crate::api::Rollout;
use crate::api::analysis::{AnalysisTemplate, ClusterAnalysisTemplate};
use crate::api::common::AnalysisTemplateRef;
use crate::rollout::plan::{analysis, workload};
use crate::rollout::snapshot::Snapshot;

/// The key of an object of `kind` (cluster-scoped: no namespace).
pub fn key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind}/{}/{name}", namespace.unwrap_or_default())
}

/// The key of a watched object, by its kind.
pub fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    key(
        &K::kind(&()),
        obj.meta().namespace.as_deref(),
        &obj.name_any(),
    )
}

/// The keys of everything the Rollout names directly (nested templates are
/// found through the templates that nest them, see [`of_analysis_template`]).
pub fn of_rollout(ro: &Rollout) -> Vec<String> {
    let ns = ro.namespace();
    let ns = ns.as_deref();
    let services = Snapshot::service_names(ro)
        .into_iter()
        .map(|n| key("Service", ns, &n));
    let ingresses = Snapshot::ingress_names(ro)
        .into_iter()
        .map(|n| key("Ingress", ns, &n));
    let deployment = workload::deployment_name(ro).map(|n| key("Deployment", ns, n));
    let templates: Vec<String> = analysis::analyses(ro)
        .into_iter()
        .flat_map(|(_, a)| template_keys(&a.templates, ns))
        .collect();
    services
        .chain(ingresses)
        .chain(deployment)
        .chain(templates)
        .collect()
}

/// The keys of the templates an AnalysisTemplate nests.
pub fn of_analysis_template(t: &AnalysisTemplate) -> Vec<String> {
    template_keys(&t.spec.templates, t.namespace().as_deref())
}

/// The keys of the ClusterAnalysisTemplates a ClusterAnalysisTemplate nests.
/// (A namespaced template it nests is looked up in each Rollout's
/// namespace: not known here, so a Rollout waiting for one is retried on
/// its own schedule.)
pub fn of_cluster_analysis_template(t: &ClusterAnalysisTemplate) -> Vec<String> {
    let cluster: Vec<AnalysisTemplateRef> = t
        .spec
        .template
        .templates
        .iter()
        .filter(|r| r.cluster())
        .cloned()
        .collect();
    template_keys(&cluster, None)
}

fn template_keys(refs: &[AnalysisTemplateRef], ns: Option<&str>) -> Vec<String> {
    refs.iter()
        .map(|r| {
            if r.cluster() {
                key("ClusterAnalysisTemplate", None, &r.template_name)
            } else {
                key("AnalysisTemplate", ns, &r.template_name)
            }
        })
        .collect()
}

/// Every key `first` stands for: itself, and the templates that nest it,
/// directly or not (`nesting` gives the keys of the templates that nest a
/// key). Each key once, so a cycle of templates ends.
pub fn with_nesting(first: String, nesting: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![first];
    let mut out = Vec::new();
    while let Some(k) = todo.pop() {
        if !seen.insert(k.clone()) {
            continue;
        }
        todo.extend(nesting(&k));
        out.push(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{
        BlueGreenStrategy, CanaryStep, CanaryStrategy, NginxTrafficRouting, ObjectRef,
        RolloutAnalysis, RolloutAnalysisBackground, RolloutTrafficRouting,
    };

    fn tref(name: &str, cluster_scope: bool) -> AnalysisTemplateRef {
        AnalysisTemplateRef {
            template_name: name.into(),
            cluster_scope: Some(cluster_scope),
        }
    }

    fn analysis(refs: Vec<AnalysisTemplateRef>) -> RolloutAnalysis {
        RolloutAnalysis {
            templates: refs,
            ..Default::default()
        }
    }

    fn rollout() -> Rollout {
        let mut ro = Rollout::new("web", Default::default());
        ro.metadata.namespace = Some("ns".into());
        ro
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn a_canary_names_its_services_ingresses_templates_and_workload() {
        let mut ro = rollout();
        ro.spec.workload_ref = Some(ObjectRef {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some("web-deploy".into()),
            ..Default::default()
        });
        ro.spec.strategy.canary = Some(CanaryStrategy {
            stable_service: Some("web-stable".into()),
            canary_service: Some("web-canary".into()),
            traffic_routing: Some(RolloutTrafficRouting {
                nginx: Some(NginxTrafficRouting {
                    stable_ingress: Some("web".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            analysis: Some(RolloutAnalysisBackground {
                analysis: analysis(vec![tref("bg", false)]),
                starting_step: None,
            }),
            steps: vec![CanaryStep {
                analysis: Some(analysis(vec![tref("step", false), tref("shared", true)])),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(
            sorted(of_rollout(&ro)),
            [
                "AnalysisTemplate/ns/bg",
                "AnalysisTemplate/ns/step",
                "ClusterAnalysisTemplate//shared",
                "Deployment/ns/web-deploy",
                "Ingress/ns/web",
                "Ingress/ns/web-web-canary",
                "Service/ns/web-canary",
                "Service/ns/web-stable",
            ]
        );
    }

    #[test]
    fn a_blue_green_names_its_services_and_promotion_templates() {
        let mut ro = rollout();
        ro.spec.strategy.blue_green = Some(BlueGreenStrategy {
            active_service: "active".into(),
            preview_service: Some("preview".into()),
            pre_promotion_analysis: Some(analysis(vec![tref("pre", false)])),
            post_promotion_analysis: Some(analysis(vec![tref("post", true)])),
            ..Default::default()
        });
        assert_eq!(
            sorted(of_rollout(&ro)),
            [
                "AnalysisTemplate/ns/pre",
                "ClusterAnalysisTemplate//post",
                "Service/ns/active",
                "Service/ns/preview",
            ]
        );
    }

    #[test]
    fn templates_name_what_they_nest_in_their_scope() {
        let mut t = AnalysisTemplate::new("outer", Default::default());
        t.metadata.namespace = Some("ns".into());
        t.spec.templates = vec![tref("inner", false), tref("shared", true)];
        assert_eq!(
            of_analysis_template(&t),
            [
                "AnalysisTemplate/ns/inner",
                "ClusterAnalysisTemplate//shared"
            ]
        );
        let mut c = ClusterAnalysisTemplate::new("outer", Default::default());
        c.spec.template.templates = vec![tref("inner", false), tref("shared", true)];
        assert_eq!(
            of_cluster_analysis_template(&c),
            ["ClusterAnalysisTemplate//shared"]
        );
        assert_eq!(key_of(&t), "AnalysisTemplate/ns/outer");
        assert_eq!(key_of(&c), "ClusterAnalysisTemplate//outer");
    }

    #[test]
    fn nesting_is_followed_through_every_level_and_cycles_end() {
        // a nests b, b nests c, c nests a.
        let nesting = |k: &str| -> Vec<String> {
            match k {
                "c" => vec!["b".into()],
                "b" => vec!["a".into()],
                "a" => vec!["c".into()],
                _ => vec![],
            }
        };
        assert_eq!(sorted(with_nesting("c".into(), nesting)), ["a", "b", "c"]);
        assert_eq!(with_nesting("z".into(), nesting), ["z"]);
    }
}
