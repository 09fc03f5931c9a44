//! The table on upstream's examples, checked against the replica math of
//! the basic canary (replicas.rs) and of routed canaries (traffic.rs).

use serde::Deserialize;

use super::*;
use crate::api::rollout::{
    HeaderRoutingMatch, ManagedRoute, RolloutAnalysis, SetCanaryScale, SetHeaderRoute, StringMatch,
};

fn fixture(name: &str) -> Rollout {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Rollout"))
        .map(|v| serde_yaml::from_value(v).unwrap())
        .unwrap()
}

/// (step, kind, weight, canary, stable, note) per row.
type Flat = (usize, String, i32, i32, i32, String);

fn flat(rows: &[Row]) -> Vec<Flat> {
    rows.iter()
        .map(|r| {
            (
                r.step,
                r.kind.clone(),
                r.weight,
                r.canary_pods,
                r.stable_pods,
                r.note.clone(),
            )
        })
        .collect()
}

fn row(step: usize, kind: &str, weight: i32, canary: i32, stable: i32, note: &str) -> Flat {
    (step, kind.into(), weight, canary, stable, note.into())
}

fn weight(w: i32) -> CanaryStep {
    CanaryStep {
        set_weight: Some(w),
        ..Default::default()
    }
}

fn pause() -> CanaryStep {
    CanaryStep {
        pause: Some(Default::default()),
        ..Default::default()
    }
}

fn scale(s: SetCanaryScale) -> CanaryStep {
    CanaryStep {
        set_canary_scale: Some(s),
        ..Default::default()
    }
}

/// The nginx example with other steps.
fn routed(steps: Vec<CanaryStep>) -> Rollout {
    let mut ro = fixture("nginx-getting-started.yaml");
    ro.spec.strategy.canary.as_mut().unwrap().steps = steps;
    ro
}

#[test]
fn basic_canary_follows_the_replica_math() {
    let rows = plan_table(&fixture("rollout-canary.yaml"), None).unwrap();
    // 5 replicas, maxSurge 2, maxUnavailable 1: the closest split of 5 pods.
    assert_eq!(
        flat(&rows),
        vec![
            row(1, "setWeight: 20", 20, 1, 4, ""),
            row(2, "pause", 20, 1, 4, "waits for promote"),
            row(3, "setWeight: 40", 40, 2, 3, ""),
            row(4, "pause: 40s", 40, 2, 3, "waits 40s"),
            row(5, "setWeight: 60", 60, 3, 2, ""),
            row(6, "pause: 20s", 60, 3, 2, "waits 20s"),
            row(7, "setWeight: 80", 80, 4, 1, ""),
            row(8, "pause: 20s", 80, 4, 1, "waits 20s"),
        ]
    );
}

#[test]
fn nginx_canary_keeps_the_stable_at_full_size() {
    let rows = plan_table(&fixture("nginx-getting-started.yaml"), None).unwrap();
    // ceil(weight x 5) canary pods, the stable at 5, the Ingress at the weight.
    assert_eq!(
        flat(&rows),
        vec![
            row(1, "setWeight: 20", 20, 1, 5, ""),
            row(2, "pause", 20, 1, 5, "waits for promote"),
            row(3, "setWeight: 40", 40, 2, 5, ""),
            row(4, "pause", 40, 2, 5, "waits for promote"),
            row(5, "setWeight: 60", 60, 3, 5, ""),
            row(6, "pause", 60, 3, 5, "waits for promote"),
            row(7, "setWeight: 80", 80, 4, 5, ""),
            row(8, "pause", 80, 4, 5, "waits for promote"),
        ]
    );
}

#[test]
fn replicas_can_be_overridden() {
    let rows = plan_table(&fixture("rollout-canary.yaml"), Some(10)).unwrap();
    let pods: Vec<(i32, i32, i32)> = rows
        .iter()
        .filter(|r| r.kind.starts_with("setWeight"))
        .map(|r| (r.weight, r.canary_pods, r.stable_pods))
        .collect();
    assert_eq!(pods, vec![(20, 2, 8), (40, 4, 6), (60, 6, 4), (80, 8, 2)]);
    let rows = plan_table(&fixture("nginx-getting-started.yaml"), Some(3)).unwrap();
    let pods: Vec<(i32, i32, i32)> = rows
        .iter()
        .filter(|r| r.kind.starts_with("setWeight"))
        .map(|r| (r.weight, r.canary_pods, r.stable_pods))
        .collect();
    // ceil(20% of 3) = 1, ceil(40%) = 2, ceil(60%) = 2, ceil(80%) = 3.
    assert_eq!(pods, vec![(20, 1, 3), (40, 2, 3), (60, 2, 3), (80, 3, 3)]);
}

#[test]
fn set_canary_scale_fixes_the_canary_until_match_traffic_weight() {
    let ro = routed(vec![
        scale(SetCanaryScale {
            replicas: Some(2),
            ..Default::default()
        }),
        weight(20),
        pause(),
        scale(SetCanaryScale {
            weight: Some(60),
            ..Default::default()
        }),
        scale(SetCanaryScale {
            match_traffic_weight: true,
            ..Default::default()
        }),
        weight(40),
    ]);
    let rows = plan_table(&ro, None).unwrap();
    assert_eq!(
        flat(&rows),
        vec![
            row(1, "setCanaryScale: replicas 2", 0, 2, 5, "canary at 2 pods"),
            row(2, "setWeight: 20", 20, 2, 5, ""),
            row(3, "pause", 20, 2, 5, "waits for promote"),
            row(
                4,
                "setCanaryScale: weight 60",
                20,
                3,
                5,
                "canary pods for weight 60"
            ),
            row(
                5,
                "setCanaryScale: matchTrafficWeight",
                20,
                1,
                5,
                "canary pods follow the weight"
            ),
            row(6, "setWeight: 40", 40, 2, 5, ""),
        ]
    );
}

#[test]
fn dynamic_stable_scale_shrinks_the_stable_after_the_traffic_moves() {
    let mut ro = routed(vec![weight(20), pause(), weight(60), pause()]);
    ro.spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .dynamic_stable_scale = true;
    let rows = plan_table(&ro, None).unwrap();
    assert_eq!(
        flat(&rows),
        vec![
            row(1, "setWeight: 20", 20, 1, 5, ""),
            row(2, "pause", 20, 1, 4, "waits for promote"),
            row(3, "setWeight: 60", 60, 3, 4, ""),
            row(4, "pause", 60, 3, 2, "waits for promote"),
        ]
    );
}

#[test]
fn analysis_and_header_route_steps() {
    let mut ro = routed(vec![
        weight(20),
        CanaryStep {
            analysis: Some(RolloutAnalysis {
                templates: vec![crate::api::common::AnalysisTemplateRef {
                    template_name: "success-rate".into(),
                    cluster_scope: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
        CanaryStep {
            set_header_route: Some(SetHeaderRoute {
                name: "beta".into(),
                r#match: vec![HeaderRoutingMatch {
                    header_name: "X-Beta".into(),
                    header_value: Some(StringMatch {
                        exact: Some("yes".into()),
                        ..Default::default()
                    }),
                }],
            }),
            ..Default::default()
        },
        pause(),
        weight(50),
    ]);
    ro.spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .traffic_routing
        .as_mut()
        .unwrap()
        .managed_routes = vec![ManagedRoute {
        name: "beta".into(),
    }];
    let rows = plan_table(&ro, None).unwrap();
    assert_eq!(
        flat(&rows),
        vec![
            row(1, "setWeight: 20", 20, 1, 5, ""),
            row(
                2,
                "analysis: success-rate",
                20,
                1,
                5,
                "runs analysis success-rate"
            ),
            row(
                3,
                "setHeaderRoute: beta",
                20,
                1,
                5,
                "header X-Beta goes to the canary"
            ),
            row(4, "pause", 20, 1, 5, "waits for promote"),
            row(5, "setWeight: 50", 50, 3, 5, ""),
        ]
    );
}

#[test]
fn an_invalid_rollout_gives_the_controllers_message() {
    let mut ro = fixture("rollout-canary.yaml");
    ro.spec.strategy.canary.as_mut().unwrap().steps[0].set_weight = Some(120);
    assert_eq!(
        plan_table(&ro, None).unwrap_err(),
        "The Rollout \"rollout-canary\" is invalid: spec.strategy.canary.steps[0].setWeight: Invalid value: 120: SetWeight needs to be between 0 and 100"
    );
    let mut ro = fixture("rollout-canary.yaml");
    ro.spec.strategy.canary.as_mut().unwrap().steps[1] = CanaryStep {
        experiment: Some(serde_json::json!({})),
        ..Default::default()
    };
    assert!(plan_table(&ro, None).unwrap_err().contains(
        "uses experiment steps, which this version of the controller does not implement yet"
    ));
}

#[test]
fn blue_green_is_refused() {
    assert_eq!(
        plan_table(&fixture("rollout-bluegreen.yaml"), None).unwrap_err(),
        "plan supports canary rollouts"
    );
}

#[test]
fn no_steps_no_rows_and_the_rendering_is_aligned() {
    let mut ro = fixture("rollout-canary.yaml");
    ro.spec.strategy.canary.as_mut().unwrap().steps.clear();
    assert_eq!(plan_table(&ro, None).unwrap(), vec![]);

    let rows = plan_table(&fixture("rollout-canary.yaml"), None).unwrap();
    let text = render(&rows[..2]);
    assert_eq!(
        text,
        "STEP  KIND           WEIGHT  CANARY  STABLE  NOTE\n\
         1     setWeight: 20  20      1       4\n\
         2     pause          20      1       4       waits for promote\n"
    );
}

#[test]
fn a_background_analysis_does_not_stop_the_steps() {
    let mut ro = fixture("rollout-canary.yaml");
    ro.spec.strategy.canary.as_mut().unwrap().analysis =
        Some(crate::api::rollout::RolloutAnalysisBackground {
            analysis: RolloutAnalysis {
                templates: vec![crate::api::common::AnalysisTemplateRef {
                    template_name: "error-rate".into(),
                    cluster_scope: Some(true),
                }],
                ..Default::default()
            },
            starting_step: Some(2),
        });
    let rows = plan_table(&ro, None).unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(
        (rows[6].weight, rows[6].canary_pods, rows[6].stable_pods),
        (80, 4, 1)
    );
}

#[test]
fn a_workload_ref_rollout_has_the_table_of_its_inline_twin() {
    let inline = fixture("rollout-canary.yaml");
    let mut referencing = inline.clone();
    referencing.spec.template = None;
    referencing.spec.selector = None;
    referencing.spec.workload_ref = Some(crate::api::rollout::ObjectRef {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some("web".into()),
        scale_down: Some("progressively".into()),
    });
    assert_eq!(
        flat(&plan_table(&referencing, None).unwrap()),
        flat(&plan_table(&inline, None).unwrap())
    );
}
