//! Canary with nginx traffic routing, on the simulated cluster: the canary
//! Ingress, weights, replica math (setCanaryScale, dynamicStableScale,
//! minPodsPerReplicaSet), delays, header routes and the refusals.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::api::rollout::{
    HeaderRoutingMatch, ManagedRoute, NginxTrafficRouting, RolloutTrafficRouting, SetCanaryScale,
    SetHeaderRoute, StringMatch,
};

const STABLE_INGRESS: &str = "web";
const CANARY_INGRESS: &str = "demo-web-canary";
const PREFIX: &str = "nginx.ingress.kubernetes.io";

fn rule(host: &str, service: &str) -> IngressRule {
    IngressRule {
        host: Some(host.into()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some("/".into()),
                path_type: "Prefix".into(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: service.into(),
                        port: Some(ServiceBackendPort {
                            number: Some(80),
                            name: None,
                        }),
                    }),
                    resource: None,
                },
            }],
        }),
    }
}

fn ingress(name: &str, rules: Vec<IngressRule>) -> Ingress {
    Ingress {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            annotations: Some(
                [
                    (
                        "kubernetes.io/ingress.class".to_string(),
                        "nginx".to_string(),
                    ),
                    ("team".to_string(), "web".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some("nginx".into()),
            rules: Some(rules),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec!["example.com".into()]),
                secret_name: Some("tls".into()),
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn routing() -> RolloutTrafficRouting {
    RolloutTrafficRouting {
        nginx: Some(NginxTrafficRouting {
            stable_ingress: Some(STABLE_INGRESS.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn routed_rollout(steps: Vec<CanaryStep>, tweak: impl FnOnce(&mut CanaryStrategy)) -> Rollout {
    let mut ro = rollout(5, "app:1", None, None);
    let c = ro.spec.strategy.canary.as_mut().unwrap();
    c.steps = steps;
    c.stable_service = Some("stable".into());
    c.canary_service = Some("canary".into());
    c.traffic_routing = Some(routing());
    tweak(c);
    ro
}

/// 5 replicas behind Ingress `web` (one rule for the stable Service),
/// first deploy done.
fn routed(steps: Vec<CanaryStep>, tweak: impl FnOnce(&mut CanaryStrategy)) -> Sim {
    let mut w = Sim::new(routed_rollout(steps, tweak));
    w.services = vec![service("stable"), service("canary")];
    w.ingresses = vec![ingress(STABLE_INGRESS, vec![rule("example.com", "stable")])];
    drive(&mut w, "the first deploy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    assert_eq!(
        w.canary_weight(),
        Some(0),
        "canary Ingress made at weight 0"
    );
    w
}

fn header_step(name: &str, matches: Vec<HeaderRoutingMatch>) -> CanaryStep {
    CanaryStep {
        set_header_route: Some(SetHeaderRoute {
            name: name.into(),
            r#match: matches,
        }),
        ..Default::default()
    }
}

fn header(
    name: &str,
    exact: Option<&str>,
    regex: Option<&str>,
    prefix: Option<&str>,
) -> HeaderRoutingMatch {
    HeaderRoutingMatch {
        header_name: name.into(),
        header_value: Some(StringMatch {
            exact: exact.map(Into::into),
            regex: regex.map(Into::into),
            prefix: prefix.map(Into::into),
        }),
    }
}

fn scale_step(scale: SetCanaryScale) -> CanaryStep {
    CanaryStep {
        set_canary_scale: Some(scale),
        ..Default::default()
    }
}

impl Sim {
    fn annotation(&self, key: &str) -> Option<String> {
        self.ingress(CANARY_INGRESS)?
            .annotations()
            .get(&format!("{PREFIX}/{key}"))
            .cloned()
    }
    fn canary_weight(&self) -> Option<i32> {
        self.annotation("canary-weight")?.parse().ok()
    }
    fn available_of(&self, hash: &Option<String>) -> i32 {
        self.replica_sets
            .iter()
            .find(|r| r.pod_hash() == hash.as_deref())
            .map_or(0, |r| r.available())
    }
}

/// Reconcile and tick until `done`, checking after every plan: traffic only
/// on a canary with available pods, none after an abort, the recorded
/// weights equal to the Ingress's, and (without dynamicStableScale) the
/// stable at full size throughout an update.
fn drive(w: &mut Sim, what: &str, done: impl Fn(&Sim) -> bool) {
    let replicas = w.ro.spec.replicas_or_default();
    for _ in 0..400 {
        w.reconcile();
        let s = w.status();
        if let Some(weight) = w.canary_weight() {
            let canary = &s.current_pod_hash;
            if weight > 0 {
                assert!(
                    w.available_of(canary) > 0,
                    "weight {weight} on a canary with no available pods"
                );
                assert!(!s.abort, "weight {weight} after an abort");
            }
            let recorded = s.canary.weights.as_ref().map(|x| x.canary.weight);
            assert_eq!(recorded, Some(weight), "status.canary.weights");
        }
        let dynamic =
            w.ro.spec
                .strategy
                .canary
                .as_ref()
                .unwrap()
                .dynamic_stable_scale;
        if !dynamic && s.stable_rs.is_some() && s.stable_rs != s.current_pod_hash {
            assert_eq!(w.pods_of(&s.stable_rs), replicas, "stable at full size");
        }
        if done(w) {
            return;
        }
        w.tick();
    }
    panic!("never reached: {what}; status {:#?}", w.ro.status);
}

fn paused(w: &Sim) -> bool {
    w.phase() == Some(RolloutPhase::Paused)
}

#[test]
fn weights_follow_the_steps_and_return_to_zero_at_completion() {
    let mut w = routed(
        vec![
            weight(20),
            pause_for(None),
            weight(40),
            pause_for(Some(2)),
            weight(60),
            weight(80),
        ],
        |_| {},
    );
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    let record = |w: &Sim, seen: &mut Vec<i32>| {
        let x = w.canary_weight().unwrap();
        if seen.last() != Some(&x) {
            seen.push(x);
        }
    };
    drive(&mut w, "the first pause", paused);
    let new = w.status().current_pod_hash;
    assert_eq!(w.canary_weight(), Some(20));
    assert_eq!(
        (w.pods_of(&new), w.pods_of(&old)),
        (1, 5),
        "ceil(20% of 5) canary, full stable"
    );
    assert_eq!(w.selector("canary"), new);
    assert_eq!(
        w.selector("stable"),
        old,
        "stable Service untouched during the update"
    );

    w.promote();
    drive(&mut w, "the second pause", paused);
    assert_eq!(w.canary_weight(), Some(40));
    assert_eq!(w.pods_of(&new), 2);
    w.promote();
    drive(&mut w, "completion", |w| {
        let x = w.canary_weight().unwrap();
        w.phase() == Some(RolloutPhase::Healthy) && x == 0
    });
    // Weights seen along the way, each once, in order.
    let mut w2 = routed(
        vec![
            weight(20),
            pause_for(None),
            weight(40),
            pause_for(Some(2)),
            weight(60),
            weight(80),
        ],
        |_| {},
    );
    set_image(&mut w2, "app:2");
    let mut seen = vec![w2.canary_weight().unwrap()];
    for _ in 0..200 {
        w2.reconcile();
        record(&w2, &mut seen);
        if paused(&w2) {
            w2.promote();
        }
        if w2.phase() == Some(RolloutPhase::Healthy) && w2.canary_weight() == Some(0) {
            break;
        }
        w2.tick();
    }
    assert_eq!(seen, vec![0, 20, 40, 60, 80, 100, 0]);

    // Completion: all traffic on the new pods first, then the stable
    // Service switches and the weight returns to 0.
    let s = w.status();
    assert_eq!(s.stable_rs, new);
    assert_eq!(w.selector("stable"), new);
    let weights = s.canary.weights.unwrap();
    assert_eq!((weights.canary.weight, weights.stable.weight), (0, 100));
    assert_eq!(weights.stable.pod_template_hash, new);
    // The old stable keeps its pods for scaleDownDelaySeconds (30).
    let old_rs = |w: &Sim| {
        w.replica_sets
            .iter()
            .find(|r| r.pod_hash() == old.as_deref())
            .cloned()
            .unwrap()
    };
    drive(&mut w, "the scale-down deadline", |w| {
        replica_set_deadline(&old_rs(w)).is_some()
    });
    assert_eq!(old_rs(&w).spec_replicas(), 5);
    let start = w.now;
    drive(&mut w, "old stable scaled down", |w| w.pods_of(&old) == 0);
    assert!(w.now - start >= 30, "kept for scaleDownDelaySeconds");
    assert_eq!(
        replica_set_deadline(&old_rs(&w)),
        None,
        "scaled down, it has no deadline left (as upstream)"
    );
    w.settle(false);
}

fn replica_set_deadline(rs: &ReplicaSet) -> Option<String> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(SCALE_DOWN_DEADLINE_ANNOTATION)
        .cloned()
}

#[test]
fn the_canary_ingress_copies_only_the_stable_rules_with_tls_and_class() {
    let mut w = Sim::new(routed_rollout(vec![weight(50), pause_for(None)], |c| {
        let nginx = c.traffic_routing.as_mut().unwrap().nginx.as_mut().unwrap();
        nginx.additional_ingress_annotations = Some(
            [
                ("canary-by-cookie".to_string(), "beta".to_string()),
                (format!("{PREFIX}/load-balance"), "ewma".to_string()),
            ]
            .into(),
        );
        nginx.canary_ingress_annotations =
            Some([(format!("{PREFIX}/canary-by-cookie"), "gamma".to_string())].into());
        c.traffic_routing.as_mut().unwrap().max_traffic_weight = Some(1000);
        c.steps = vec![weight(500), pause_for(None)];
    }));
    w.services = vec![service("stable"), service("canary")];
    w.ingresses = vec![ingress(
        STABLE_INGRESS,
        vec![
            rule("example.com", "stable"),
            rule("admin.example.com", "admin"),
        ],
    )];
    drive(&mut w, "the first deploy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    let canary = w.ingress(CANARY_INGRESS).unwrap().clone();
    let spec = canary.spec.clone().unwrap();
    let rules = spec.rules.unwrap();
    assert_eq!(rules.len(), 1, "only the rule using the stable Service");
    assert_eq!(rules[0].host.as_deref(), Some("example.com"));
    let backend = rules[0].http.as_ref().unwrap().paths[0]
        .backend
        .service
        .as_ref()
        .unwrap();
    assert_eq!(backend.name, "canary");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("tls"));
    let a = canary.annotations();
    assert_eq!(a["kubernetes.io/ingress.class"], "nginx");
    assert!(
        !a.contains_key("team"),
        "other stable annotations are not copied"
    );
    assert_eq!(a[&format!("{PREFIX}/canary")], "true");
    assert_eq!(
        a[&format!("{PREFIX}/canary-by-cookie")],
        "gamma",
        "canary-specific wins"
    );
    assert_eq!(a[&format!("{PREFIX}/load-balance")], "ewma");
    assert_eq!(a[&format!("{PREFIX}/canary-weight-total")], "1000");
    let owner = &canary.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Rollout", "uid-1")
    );

    // Annotations someone else put on the canary Ingress stay.
    let i = w
        .ingresses
        .iter_mut()
        .find(|i| i.name_any() == CANARY_INGRESS)
        .unwrap();
    i.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("cert-manager.io/issuer".into(), "x".into());
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    assert_eq!(
        w.canary_weight(),
        Some(500),
        "weights are out of maxTrafficWeight"
    );
    assert_eq!(w.status().canary.weights.unwrap().stable.weight, 500);
    assert_eq!(
        w.pods_of(&w.status().current_pod_hash),
        3,
        "ceil(500/1000 of 5)"
    );
    assert!(
        w.ingress(CANARY_INGRESS)
            .unwrap()
            .annotations()
            .contains_key("cert-manager.io/issuer")
    );
}

#[test]
fn abort_sends_all_traffic_to_stable_at_once_and_scales_the_canary_down_after_the_delay() {
    let mut w = routed(vec![weight(40), pause_for(None)], |c| {
        c.abort_scale_down_delay_seconds = Some(5)
    });
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    let new = w.status().current_pod_hash;
    assert_eq!(w.canary_weight(), Some(40));

    w.ro.status.as_mut().unwrap().abort = true;
    w.reconcile();
    assert_eq!(
        w.canary_weight(),
        Some(0),
        "abort: weight 0 in the same plan"
    );
    assert_eq!(w.selector("canary"), old);
    assert_eq!(w.selector("stable"), old, "stable Service untouched");
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(
        w.pods_of(&new),
        2,
        "the canary keeps its pods for the delay"
    );
    let start = w.now;
    drive(&mut w, "canary scaled down", |w| w.pods_of(&new) == 0);
    assert!(w.now - start >= 5, "not before abortScaleDownDelaySeconds");
    assert_eq!(w.pods_of(&old), 5);
    // As upstream, the aborted canary keeps its deadline: its delay is over.
    let canary_rs = w
        .replica_sets
        .iter()
        .find(|r| r.pod_hash() == new.as_deref())
        .unwrap();
    assert!(replica_set_deadline(canary_rs).is_some());
    for _ in 0..3 {
        assert!(w.reconcile().is_empty(), "settled after the abort");
        w.tick();
    }

    // Retry starts over; weight moves again once the pods are back.
    w.ro.status.as_mut().unwrap().abort = false;
    drive(&mut w, "paused again", paused);
    assert_eq!(w.canary_weight(), Some(40));
}

#[test]
fn abort_scale_down_delay_zero_keeps_the_canary() {
    let mut w = routed(vec![weight(40), pause_for(None)], |c| {
        c.abort_scale_down_delay_seconds = Some(0)
    });
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    let new = w.status().current_pod_hash;
    w.ro.status.as_mut().unwrap().abort = true;
    for _ in 0..60 {
        w.reconcile();
        w.tick();
    }
    assert_eq!(w.canary_weight(), Some(0));
    assert_eq!(w.pods_of(&new), 2);
}

#[test]
fn a_canary_that_never_becomes_ready_never_gets_weight() {
    let mut w = routed(vec![weight(20), pause_for(None)], |_| {});
    set_image(&mut w, "app:2");
    w.reconcile();
    let new = w.status().current_pod_hash.unwrap();
    w.broken.push(new.clone());
    for _ in 0..60 {
        w.reconcile();
        assert_eq!(w.canary_weight(), Some(0));
        assert_eq!(
            w.selector("canary"),
            w.status().stable_rs,
            "no traffic through the Service either"
        );
        assert_eq!(w.status().current_step_index, Some(0));
        w.tick();
    }
}

#[test]
fn set_canary_scale_sizes_the_canary_independently_of_the_weight() {
    let mut w = routed(
        vec![
            scale_step(SetCanaryScale {
                replicas: Some(2),
                ..Default::default()
            }),
            weight(20),
            pause_for(None),
            scale_step(SetCanaryScale {
                weight: Some(60),
                ..Default::default()
            }),
            pause_for(None),
            scale_step(SetCanaryScale {
                match_traffic_weight: true,
                ..Default::default()
            }),
            weight(40),
            pause_for(None),
        ],
        |_| {},
    );
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    let mut seen = vec![];
    for _ in 0..3 {
        drive(&mut w, "a pause", paused);
        let new = w.status().current_pod_hash;
        seen.push((w.pods_of(&new), w.pods_of(&old), w.canary_weight().unwrap()));
        w.promote();
    }
    assert_eq!(seen, vec![(2, 5, 20), (3, 5, 20), (2, 5, 40)]);
    drive(&mut w, "completion", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
}

#[test]
fn dynamic_stable_scale_shrinks_the_stable_with_its_traffic() {
    let mut w = routed(
        vec![weight(20), pause_for(None), weight(60), pause_for(None)],
        |c| c.dynamic_stable_scale = true,
    );
    let old = w.status().stable_rs;
    set_image(&mut w, "app:2");
    drive(&mut w, "first pause", |w| {
        paused(w) && w.pods_of(&w.status().stable_rs) == 4
    });
    let new = w.status().current_pod_hash;
    assert_eq!(
        (w.pods_of(&new), w.pods_of(&old), w.canary_weight()),
        (1, 4, Some(20))
    );
    w.promote();
    drive(&mut w, "second pause", |w| {
        paused(w) && w.pods_of(&w.status().stable_rs) == 2
    });
    assert_eq!(
        (w.pods_of(&new), w.pods_of(&old), w.canary_weight()),
        (3, 2, Some(60))
    );
    w.promote();
    drive(&mut w, "completion", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.pods_of(&old) == 0
    });
    assert_eq!(w.pods_of(&new), 5);
    assert!(
        w.replica_sets
            .iter()
            .all(|r| replica_set_deadline(r).is_none()),
        "no scale-down delay with dynamicStableScale"
    );

    // Abort at 60%: all traffic back at once, stable back to full size.
    set_image(&mut w, "app:3");
    drive(&mut w, "first pause", paused);
    w.promote();
    drive(&mut w, "second pause", |w| {
        paused(w) && w.canary_weight() == Some(60)
    });
    let (stable, canary) = (w.status().stable_rs, w.status().current_pod_hash);
    w.ro.status.as_mut().unwrap().abort = true;
    w.reconcile();
    assert_eq!(w.canary_weight(), Some(0));
    drive(&mut w, "stable back to 5, canary gone", |w| {
        w.pods_of(&stable) == 5 && w.pods_of(&canary) == 0
    });
}

#[test]
fn min_pods_per_replica_set_raises_a_small_canary() {
    let mut w = routed(vec![weight(20), pause_for(None)], |c| {
        c.min_pods_per_replica_set = Some(2)
    });
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    assert_eq!(w.pods_of(&w.status().current_pod_hash), 2);
    assert_eq!(w.canary_weight(), Some(20));
}

#[test]
fn header_route_steps_set_and_clear_canary_by_header() {
    let route = |matches| header_step("beta", matches);
    let mut w = routed(
        vec![
            weight(10),
            route(vec![header("X-Canary", Some("yes"), None, None)]),
            pause_for(None),
            route(vec![header("X-User", None, Some(".*@example.com"), None)]),
            pause_for(None),
            route(vec![]),
            pause_for(None),
        ],
        |c| {
            c.traffic_routing.as_mut().unwrap().managed_routes = vec![ManagedRoute {
                name: "beta".into(),
            }]
        },
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "the first pause", paused);
    assert_eq!(
        w.annotation("canary-by-header").as_deref(),
        Some("X-Canary")
    );
    assert_eq!(
        w.annotation("canary-by-header-value").as_deref(),
        Some("yes")
    );
    assert_eq!(w.annotation("canary-by-header-pattern"), None);
    assert_eq!(w.canary_weight(), Some(10));
    w.promote();
    drive(&mut w, "the second pause", paused);
    assert_eq!(w.annotation("canary-by-header").as_deref(), Some("X-User"));
    assert_eq!(w.annotation("canary-by-header-value"), None);
    assert_eq!(
        w.annotation("canary-by-header-pattern").as_deref(),
        Some(".*@example.com")
    );
    w.promote();
    drive(&mut w, "the third pause", paused);
    assert_eq!(
        w.annotation("canary-by-header"),
        None,
        "a route without match removes it"
    );
    assert_eq!(w.annotation("canary-by-header-pattern"), None);

    // A route left in force is removed at completion and on abort.
    w.ro.status.as_mut().unwrap().abort = true;
    w.reconcile();
    w.ro.status.as_mut().unwrap().abort = false;
    drive(&mut w, "the first pause again", paused);
    assert_eq!(
        w.annotation("canary-by-header").as_deref(),
        Some("X-Canary")
    );
    w.ro.status.as_mut().unwrap().abort = true;
    w.reconcile();
    assert_eq!(
        w.annotation("canary-by-header"),
        None,
        "abort removes the route"
    );
    w.ro.status.as_mut().unwrap().abort = false;
    drive(&mut w, "the first pause again", paused);
    w.ro.status.as_mut().unwrap().promote_full = true;
    w.reconcile();
    assert_eq!(
        w.annotation("canary-by-header"),
        None,
        "promote --full ends the route at once"
    );
    drive(&mut w, "completion", |w| {
        w.phase() == Some(RolloutPhase::Healthy) && w.canary_weight() == Some(0)
    });
    assert_eq!(w.annotation("canary-by-header"), None);
}

#[test]
fn routing_problems_are_invalid_specs_with_upstream_messages() {
    let invalid = |w: &mut Sim| {
        w.reconcile();
        assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
        find(&w.status().conditions, INVALID_SPEC)
            .and_then(|c| c.message.clone())
            .expect("InvalidSpec")
    };
    let mut w = Sim::new(routed_rollout(vec![weight(20)], |_| {}));
    w.services = vec![service("stable"), service("canary")];
    assert_eq!(
        invalid(&mut w),
        "The Rollout \"demo\" is invalid: spec.strategy.canary.trafficRouting.nginx.stableIngress: Invalid value: \"web\": ingress.networking.k8s.io \"web\" not found"
    );
    w.ingresses = vec![ingress(STABLE_INGRESS, vec![rule("example.com", "other")])];
    assert_eq!(
        invalid(&mut w),
        "The Rollout \"demo\" is invalid: spec.strategy.canary.trafficRouting.nginx.stableIngress: Invalid value: \"web\": ingress `web` has no rules using service stable backend"
    );
    w.ingresses = vec![ingress(STABLE_INGRESS, vec![rule("example.com", "stable")])];
    let mut foreign = ingress(CANARY_INGRESS, vec![rule("example.com", "canary")]);
    foreign.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        name: "other".into(),
        uid: "uid-2".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    w.ingresses.push(foreign);
    assert_eq!(
        invalid(&mut w),
        "The Rollout \"demo\" cannot route traffic: canary ingress `demo-web-canary` controlled by different object"
    );
    assert!(w.replica_sets.is_empty(), "nothing done while invalid");

    let header_spec = |steps: Vec<CanaryStep>, managed: bool| {
        let ro = routed_rollout(steps, |c| {
            if managed {
                c.traffic_routing.as_mut().unwrap().managed_routes =
                    vec![ManagedRoute { name: "r".into() }];
            }
        });
        crate::rollout::validate::invalid_spec_message(&ro).unwrap_or_default()
    };
    let one = |m| vec![header_step("r", m)];
    assert!(
        header_spec(one(vec![header("X", Some("1"), None, None)]), false)
            .ends_with("spec.strategy.canary.trafficRouting.managedRoutes: Required value: Rollout has missing field 'spec.strategy.canary.trafficRouting.managedRoutes'")
    );
    assert!(
        header_spec(one(vec![header("X", None, None, Some("a"))]), true)
            .contains("match[0].headerValue.prefix: Invalid value: \"a\": nginx cannot match a header by prefix: use exact or regex")
    );
    assert!(
        header_spec(
            one(vec![
                header("X", Some("1"), None, None),
                header("Y", Some("2"), None, None)
            ]),
            true
        )
        .contains("nginx can route by one header only (canary-by-header)")
    );
    assert!(
        header_spec(one(vec![header("X", Some("1"), Some("2"), None)]), true)
            .contains("must have exactly one of the following: exact, regex, prefix")
    );
    assert!(
        header_spec(vec![header_step("other", vec![])], true)
            .contains("Steps define a route that does not exist in spec.strategy.canary.trafficRouting.managedRoutes")
    );
    assert_eq!(
        header_spec(one(vec![header("X", Some("1"), None, None)]), true),
        ""
    );

    let mut ro = routed_rollout(vec![], |c| {
        let n = c.traffic_routing.as_mut().unwrap().nginx.as_mut().unwrap();
        n.stable_ingresses = vec!["a".into()];
    });
    assert!(
        crate::rollout::validate::invalid_spec_message(&ro)
            .unwrap()
            .ends_with(
                "Either StableIngress or StableIngresses must be configured. Both are configured."
            )
    );
    ro.spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .traffic_routing
        .as_mut()
        .unwrap()
        .istio = Some(serde_json::json!({}));
    ro.spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .traffic_routing
        .as_mut()
        .unwrap()
        .nginx = None;
    assert!(invalid_message(&ro).contains("uses trafficRouting.istio, which this version"));
    let ro = routed_rollout(vec![], |c| {
        c.traffic_routing = Some(RolloutTrafficRouting::default());
    });
    assert!(invalid_message(&ro).ends_with(
        "spec.strategy.canary.trafficRouting: Required value: trafficRouting must name a traffic router (nginx is the one this controller implements)"
    ));
    let ro = routed_rollout(vec![], |c| {
        c.ping_pong = Some(Default::default());
    });
    assert!(invalid_message(&ro).contains("uses canary pingPong, which this version"));
}

#[test]
fn removing_max_traffic_weight_removes_the_weight_total() {
    let mut w = routed(vec![weight(40), pause_for(None)], |c| {
        c.traffic_routing.as_mut().unwrap().max_traffic_weight = Some(1000)
    });
    assert_eq!(w.annotation("canary-weight-total").as_deref(), Some("1000"));
    w.ro.spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .traffic_routing
        .as_mut()
        .unwrap()
        .max_traffic_weight = None;
    w.reconcile();
    assert_eq!(w.annotation("canary-weight-total"), None);
    assert_eq!(w.status().canary.weights.unwrap().stable.weight, 100);
}

#[test]
fn two_stable_ingresses_get_a_canary_each() {
    let mut w = Sim::new(routed_rollout(vec![weight(40), pause_for(None)], |c| {
        let n = c.traffic_routing.as_mut().unwrap().nginx.as_mut().unwrap();
        n.stable_ingress = None;
        n.stable_ingresses = vec!["web".into(), "api".into()];
    }));
    w.services = vec![service("stable"), service("canary")];
    w.ingresses = vec![
        ingress("web", vec![rule("example.com", "stable")]),
        ingress("api", vec![rule("api.example.com", "stable")]),
    ];
    drive(&mut w, "first deploy", |w| {
        w.phase() == Some(RolloutPhase::Healthy)
    });
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    for name in ["demo-web-canary", "demo-api-canary"] {
        let a = w.ingress(name).expect(name).annotations();
        assert_eq!(a[&format!("{PREFIX}/canary-weight")], "40", "{name}");
    }
}

#[test]
fn removing_traffic_routing_deletes_the_canary_ingress() {
    let mut w = routed(vec![weight(40), pause_for(None)], |_| {});
    assert!(w.ingress(CANARY_INGRESS).is_some());
    w.ro.spec.strategy.canary.as_mut().unwrap().traffic_routing = None;
    w.reconcile();
    assert!(
        w.ingress(CANARY_INGRESS).is_none(),
        "deleted (upstream leaves it: its issue 4751)"
    );
    assert!(
        w.ingress(STABLE_INGRESS).is_some(),
        "the stable Ingress is not ours"
    );
    assert_eq!(w.status().canary.weights, None);
}

fn routed_step() -> impl Strategy<Value = CanaryStep> {
    prop_oneof![
        (0..=100i32).prop_map(weight),
        (1..4i32).prop_map(|s| pause_for(Some(s))),
        Just(pause_for(None)),
        (0..=6i32).prop_map(|r| scale_step(SetCanaryScale {
            replicas: Some(r),
            ..Default::default()
        })),
        (0..=100i32).prop_map(|w| scale_step(SetCanaryScale {
            weight: Some(w),
            ..Default::default()
        })),
        Just(scale_step(SetCanaryScale {
            match_traffic_weight: true,
            ..Default::default()
        })),
        Just(header_step(
            "r",
            vec![header("X-Canary", Some("1"), None, None)]
        )),
    ]
}

#[derive(Clone, Debug)]
enum Poke {
    Tick,
    Promote,
    Abort,
    Retry,
    Update,
    Break,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the steps and the user do: traffic only ever on a canary
    /// with available pods, none after an abort, availability never below
    /// replicas - maxUnavailable, and it settles Healthy with weight 0.
    #[test]
    fn routed_updates_keep_invariants(
        steps in proptest::collection::vec(routed_step(), 0..6),
        dynamic in any::<bool>(),
        pokes in proptest::collection::vec(
            prop_oneof![
                6 => Just(Poke::Tick),
                2 => Just(Poke::Promote),
                1 => Just(Poke::Abort),
                1 => Just(Poke::Retry),
                1 => Just(Poke::Update),
                1 => Just(Poke::Break),
            ],
            0..40,
        ),
    ) {
        let mut w = routed(steps, |c| {
            c.dynamic_stable_scale = dynamic;
            c.traffic_routing.as_mut().unwrap().managed_routes = vec![ManagedRoute { name: "r".into() }];
        });
        let replicas = 5;
        let mut image = 2;
        set_image(&mut w, "app:2");
        for poke in pokes {
            let was_aborted = w.status().abort;
            w.reconcile();
            let s = w.status();
            let weight = w.canary_weight().unwrap();
            if weight > 0 {
                prop_assert!(w.available_of(&s.current_pod_hash) > 0, "weight {} on unavailable canary", weight);
                prop_assert!(!s.abort);
            }
            if was_aborted {
                prop_assert_eq!(weight, 0);
            }
            // (Pods that crash after their ReplicaSet became stable are
            // not the controller's doing.)
            let stable_broken = s.stable_rs.as_ref().is_some_and(|h| w.broken.contains(h));
            if !dynamic && !stable_broken {
                prop_assert!(w.available() >= replicas - 1, "availability {}", w.available());
            }
            match poke {
                Poke::Tick => w.tick(),
                Poke::Promote => w.promote(),
                Poke::Abort => w.ro.status.as_mut().unwrap().abort = true,
                Poke::Retry => w.ro.status.as_mut().unwrap().abort = false,
                Poke::Update => {
                    image += 1;
                    set_image(&mut w, &format!("app:{image}"));
                }
                // The canary's pods stop being available (never the stable's).
                Poke::Break => {
                    let s = w.status();
                    if let Some(h) = s.current_pod_hash.filter(|h| s.stable_rs.as_ref() != Some(h)) {
                        w.broken.push(h);
                    }
                }
            }
        }
        // Heal, finish the update, and settle.
        w.broken.clear();
        w.ro.status.as_mut().unwrap().abort = false;
        w.reconcile(); // a new template's update starts (and clears promoteFull)
        w.promote();
        w.ro.status.as_mut().unwrap().promote_full = true;
        drive(&mut w, "settled", |w| {
            w.phase() == Some(RolloutPhase::Healthy) && w.canary_weight() == Some(0)
        });
        prop_assert_eq!(w.status().stable_rs, w.status().current_pod_hash);
    }
}

/// Upstream's nginx events: CreatingCanaryIngress when the canary Ingress
/// is made, PatchingCanaryIngress at each change of it.
#[test]
fn canary_ingress_changes_are_reported_as_upstream() {
    let mut w = routed(vec![weight(40), pause_for(None)], |_| {});
    assert_eq!(
        w.event_messages(events::CREATING_CANARY_INGRESS),
        [format!(
            "Creating canary ingress `{CANARY_INGRESS}` with weight `0`"
        )]
    );
    set_image(&mut w, "app:2");
    drive(&mut w, "the pause", paused);
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == events::PATCHING_CANARY_INGRESS
                && e.message
                    == format!("Updating Ingress `{CANARY_INGRESS}` to desiredWeight '40'")),
        "{:?}",
        w.events
    );
}
