//! The shell's unit tests: what the caches keep and find.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;

use super::caches::{LAST_APPLIED, Referrers, managing_rollout, slim_service};
use crate::api::Rollout;
use crate::api::analysis::AnalysisTemplate;
use crate::controller::index::Index;
use crate::rollout::references;
use crate::rollout::snapshot::MANAGED_BY_ANNOTATION;

#[test]
fn the_service_cache_keeps_only_what_the_planner_reads() {
    let mut svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7",
            "labels": {"app": "web"},
            "annotations": {
                MANAGED_BY_ANNOTATION: "r",
                LAST_APPLIED: "{\"a\": \"long\"}",
            },
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "10.0.0.1"},
        "status": {"loadBalancer": {}},
    }))
    .unwrap();
    slim_service(&mut svc);
    let want: Service = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7",
            "annotations": {MANAGED_BY_ANNOTATION: "r"},
        },
        "spec": {"selector": {"app": "web"}},
    }))
    .unwrap();
    assert_eq!(svc, want);
    assert_eq!(
        managing_rollout(&svc),
        Some(ObjectRef::new("r").within("a"))
    );
    // Not ours: no annotation left at all, no Rollout to reconcile.
    let mut other = Service::default();
    other.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
    other.metadata.namespace = Some("a".into());
    slim_service(&mut other);
    assert_eq!(other.metadata.annotations, None);
    assert_eq!(managing_rollout(&other), None);
}

#[test]
fn a_change_wakes_only_the_rollouts_that_name_it_or_a_template_nesting_it() {
    use crate::api::common::AnalysisTemplateRef;
    use crate::api::rollout::{
        CanaryStrategy, ObjectRef as WorkloadRef, RolloutAnalysis, RolloutAnalysisBackground,
    };
    let tref = |name: &str, cluster_scope: bool| AnalysisTemplateRef {
        template_name: name.into(),
        cluster_scope: Some(cluster_scope),
    };
    let rollout = |ns: &str, name: &str, deployment: Option<&str>, template: Option<&str>| {
        let mut ro = Rollout::new(name, Default::default());
        ro.metadata.namespace = Some(ns.into());
        ro.spec.workload_ref = deployment.map(|d| WorkloadRef {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(d.into()),
            scale_down: None,
        });
        ro.spec.strategy.canary = Some(CanaryStrategy {
            analysis: template.map(|t| RolloutAnalysisBackground {
                analysis: RolloutAnalysis {
                    templates: vec![tref(t, false)],
                    ..Default::default()
                },
                starting_step: None,
            }),
            ..Default::default()
        });
        ro
    };
    let deployment = |ns: &str, name: &str| {
        let mut d = PartialObjectMeta::<Deployment>::default();
        d.metadata.namespace = Some(ns.into());
        d.metadata.name = Some(name.into());
        d
    };
    let template = |name: &str, nested: Vec<AnalysisTemplateRef>| {
        let mut t = AnalysisTemplate::new(name, Default::default());
        t.metadata.namespace = Some("a".into());
        t.spec.templates = nested;
        t
    };
    let (store, mut writer) = reflector::store::<Rollout>();
    let (templates, mut template_writer) = reflector::store::<AnalysisTemplate>();
    let referrers = Referrers {
        by_reference: Index::by_each(references::of_rollout),
        rollouts: store,
        templates,
        templates_by_nested: Index::by_each(references::of_analysis_template),
        cluster_templates: reflector::store().0,
        cluster_templates_by_nested: Index::by_each(references::of_cluster_analysis_template),
    };
    let mut feed = |ev: watcher::Event<Rollout>| {
        referrers.by_reference.apply(&ev);
        writer.apply_watcher_event(&ev);
    };
    feed(watcher::Event::Apply(rollout(
        "a",
        "one",
        Some("web"),
        None,
    )));
    feed(watcher::Event::Apply(rollout(
        "a",
        "two",
        Some("web"),
        Some("outer"),
    )));
    feed(watcher::Event::Apply(rollout(
        "b",
        "three",
        Some("web"),
        None,
    )));
    feed(watcher::Event::Apply(rollout(
        "a",
        "inline",
        None,
        Some("inner"),
    )));
    for t in [
        template("outer", vec![tref("middle", false)]),
        template("middle", vec![tref("inner", false), tref("shared", true)]),
    ] {
        let ev = watcher::Event::Apply(t);
        referrers.templates_by_nested.apply(&ev);
        template_writer.apply_watcher_event(&ev);
    }
    let woken = |key: String| {
        let mut names: Vec<String> = referrers
            .of(key)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    };
    let deployment_key = |ns, name| references::key_of(&deployment(ns, name));
    assert_eq!(woken(deployment_key("a", "web")), ["a/one", "a/two"]);
    assert_eq!(woken(deployment_key("b", "web")), ["b/three"]);
    assert!(woken(deployment_key("a", "other")).is_empty());
    // Named directly, or nested two levels down.
    let template_key = |name| references::key("AnalysisTemplate", Some("a"), name);
    assert_eq!(woken(template_key("outer")), ["a/two"]);
    assert_eq!(woken(template_key("inner")), ["a/inline", "a/two"]);
    let shared = references::key("ClusterAnalysisTemplate", None, "shared");
    assert_eq!(woken(shared), ["a/two"]);

    // A Rollout that points elsewhere is no longer woken by the old one.
    feed(watcher::Event::Apply(rollout(
        "a",
        "two",
        Some("api"),
        None,
    )));
    assert_eq!(woken(deployment_key("a", "web")), ["a/one"]);
    assert_eq!(woken(deployment_key("a", "api")), ["a/two"]);
    assert_eq!(woken(template_key("inner")), ["a/inline"]);
}
