//! Our pod-template hash equals upstream Argo Rollouts' for the same
//! template, byte for byte: random templates (quantities in odd spellings,
//! probes, volumes, env, affinity, characters Go escapes, empty lists...)
//! are hashed by us and by Go itself (`hack/gojson hash`, built with the
//! k8s.io/api version upstream v1.10.2 uses), and compared. Same for
//! quantities alone, against Go's `resource.Quantity`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rollouts::api::rollout::CanaryStep;
use rollouts::rollout::hash::{pod_template_hash, steps_hash};
use serde_json::{Map, Value, json};

/// Builds `hack/gojson` once (Go's build cache keeps it warm).
fn gojson() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gojson");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(root.join("hack/gojson"))
            .env("GOFLAGS", "-mod=mod")
            // go.mod names the toolchain upstream's module needs.
            .env("GOTOOLCHAIN", "auto")
            .status()
            .expect("Go is installed (the local cluster needs it too)");
        assert!(status.success(), "building hack/gojson failed");
        out
    })
}

/// Runs `gojson MODE` with one line per input; returns one line per input.
fn go(mode: &str, lines: &[String]) -> Vec<String> {
    let mut child = Command::new(gojson())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gojson runs");
    // Written from another thread: gojson answers as it reads, and a full
    // stdout pipe would block it while we still write.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("gojson ends");
    writer
        .join()
        .expect("writer thread")
        .expect("write to gojson");
    assert!(out.status.success(), "gojson {mode} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `n` values of `strategy`, the same ones on every run.
fn samples<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, n: usize) -> Vec<T> {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a sample").current())
        .collect()
}

#[test]
fn random_templates_hash_as_upstream_does() {
    let templates: Vec<Value> = samples(template(), 600);
    let lines: Vec<String> = templates.iter().map(Value::to_string).collect();
    let from_go = go("hash", &lines);
    assert_eq!(from_go.len(), templates.len());
    let mut checked = 0;
    for (t, go_line) in templates.iter().zip(&from_go) {
        assert!(!go_line.starts_with("error:"), "Go refused {t}: {go_line}");
        let (go_hash, go_json) = go_line.split_once(' ').unwrap_or((go_line, ""));
        // As the controller gets it: through k8s-openapi's types.
        let parsed: PodTemplateSpec =
            serde_json::from_value(t.clone()).expect("k8s-openapi reads it");
        let ours = pod_template_hash(&parsed, None);
        if ours != go_hash {
            let value = serde_json::to_value(&parsed).unwrap_or_default();
            let encoded =
                rollouts::go_json::pod_template(&value, rollouts::go_json::Dialect::OmitZero);
            panic!(
                "hash {ours} != Go's {go_hash} for\n{t}\nGo wrote:\n{go_json}\nwe wrote:\n{encoded:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 600);
}

/// Our `currentStepHash` equals upstream's for the same steps, so a switch
/// in the middle of an update carries on at the same step.
#[test]
fn random_canary_steps_hash_as_upstream_does() {
    let lists: Vec<Value> = samples(list(step(), 6), 400);
    let lines: Vec<String> = lists.iter().map(Value::to_string).collect();
    let from_go = go("steps-hash", &lines);
    assert_eq!(from_go.len(), lists.len());
    for (steps, go_line) in lists.iter().zip(&from_go) {
        assert!(
            !go_line.starts_with("error:"),
            "Go refused {steps}: {go_line}"
        );
        let (go_hash, go_json) = go_line.split_once(' ').unwrap_or((go_line, ""));
        // As the controller gets them: through our API types.
        let parsed: Vec<CanaryStep> =
            serde_json::from_value(steps.clone()).expect("our types read them");
        let ours = steps_hash(&parsed);
        if ours != go_hash && !(parsed.is_empty() && go_json == "[]") {
            let value = serde_json::to_value(&parsed).unwrap_or_default();
            panic!(
                "steps hash {ours} != Go's {go_hash} for\n{steps}\nGo wrote:\n{go_json}\nwe wrote:\n{:?}",
                rollouts::go_json::canary_steps(&value)
            );
        }
    }
}

/// One canary step of any kind, with the optional fields each present or
/// not.
fn step() -> BoxedStrategy<Value> {
    let string_match = || {
        prop_oneof![
            s().prop_map(|v| json!({"exact": v})),
            s().prop_map(|v| json!({"prefix": v})),
            s().prop_map(|v| json!({"regex": v})),
        ]
        .boxed()
    };
    let metadata = || object(vec![("labels", b(labels())), ("annotations", b(labels()))]);
    let duration = prop_oneof![
        int(0, 3600),
        Just(json!("30s")),
        Just(json!("1h")),
        Just(json!("5"))
    ];
    let arg = (
        s(),
        prop_oneof![
            s().prop_map(|v| json!({"value": v})),
            prop_oneof![Just("Stable"), Just("Latest")]
                .prop_map(|v| json!({"valueFrom": {"podTemplateHashValue": v}})),
            Just(json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}})),
        ],
    )
        .prop_map(|(name, mut rest)| {
            rest["name"] = name;
            rest
        });
    let analysis = object(vec![
        (
            "templates",
            list(
                (s(), prop::option::of(any::<bool>()))
                    .prop_map(|(name, cluster)| match cluster {
                        Some(c) => json!({"templateName": name, "clusterScope": c}),
                        None => json!({"templateName": name}),
                    })
                    .boxed(),
                3,
            ),
        ),
        ("args", list(arg.boxed(), 3)),
        (
            "dryRun",
            list(s().prop_map(|m| json!({"metricName": m})).boxed(), 2),
        ),
        (
            "measurementRetention",
            list(
                (s(), 0i64..20)
                    .prop_map(|(m, l)| json!({"metricName": m, "limit": l}))
                    .boxed(),
                2,
            ),
        ),
        ("analysisRunMetadata", metadata()),
    ]);
    let header_match = (s(), string_match())
        .prop_map(|(name, value)| json!({"headerName": name, "headerValue": value}))
        .boxed();
    let route_match = object(vec![
        ("method", string_match()),
        ("path", string_match()),
        (
            "headers",
            prop::collection::btree_map("[a-z-]{1,8}", string_match(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed(),
        ),
    ]);
    let experiment = (
        list(
            (
                s(),
                prop_oneof![Just("canary"), Just("stable")],
                object(vec![
                    ("replicas", int(0, 5)),
                    ("weight", int(0, 100)),
                    ("metadata", metadata()),
                ]),
            )
                .prop_map(|(name, spec_ref, mut rest)| {
                    rest["name"] = name;
                    rest["specRef"] = json!(spec_ref);
                    rest
                })
                .boxed(),
            3,
        ),
        object(vec![("duration", b(Just(json!("1h"))))]),
    )
        .prop_map(|(templates, mut rest)| {
            rest["templates"] = templates;
            rest
        });
    prop_oneof![
        int(0, 101).prop_map(|w| json!({"setWeight": w})),
        object(vec![("duration", duration.boxed())]).prop_map(|p| json!({"pause": p})),
        analysis.prop_map(|a| json!({"analysis": a})),
        object(vec![
            ("weight", int(0, 101)),
            ("replicas", int(0, 10)),
            ("matchTrafficWeight", boolean()),
        ])
        .prop_map(|c| json!({"setCanaryScale": c})),
        (s(), list(header_match, 3))
            .prop_map(|(name, m)| json!({"setHeaderRoute": {"name": name, "match": m}})),
        (s(), list(route_match, 2), prop::option::of(0i64..101)).prop_map(|(name, m, p)| {
            let mut r = json!({"name": name, "match": m});
            if let Some(p) = p {
                r["percentage"] = json!(p);
            }
            json!({"setMirrorRoute": r})
        }),
        experiment.prop_map(|e| json!({"experiment": e})),
        (s(), labels())
            .prop_map(|(name, config)| json!({"plugin": {"name": name, "config": config}})),
    ]
    .boxed()
}

/// The Rust encoder's table of Go's types is what Go says today.
#[test]
fn the_go_type_table_is_up_to_date() {
    let out = Command::new(gojson())
        .arg("types")
        .output()
        .expect("gojson runs");
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/go_json/types.json"),
    )
    .expect("src/go_json/types.json");
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "src/go_json/types.json is out of date: (cd hack/gojson && go run . types) > src/go_json/types.json"
    );
}

#[test]
fn random_quantities_are_written_as_go_writes_them() {
    let inputs: Vec<String> = samples(quantity_string(), 2000);
    let lines: Vec<String> = inputs
        .iter()
        .map(|q| Value::String(q.clone()).to_string())
        .collect();
    let from_go = go("quantity", &lines);
    assert_eq!(from_go.len(), inputs.len());
    for (q, go_line) in inputs.iter().zip(&from_go) {
        let ours = rollouts::go_json::quantity::canonical(q);
        match go_line.strip_prefix("error: ") {
            Some(_) => assert!(ours.is_err(), "Go refuses {q:?}, we wrote {ours:?}"),
            None => {
                let go_value: String = serde_json::from_str(go_line).expect("a JSON string");
                assert_eq!(ours.as_deref(), Ok(go_value.as_str()), "{q:?}");
            }
        }
    }
}

/// Quantities as people write them, and odder ones.
fn quantity_string() -> impl Strategy<Value = String> {
    let sign = prop_oneof![Just(""), Just("-"), Just("+")];
    let int = prop_oneof![
        Just("0".to_string()),
        Just("00".to_string()),
        Just("1".to_string()),
        Just("01".to_string()),
        Just("8".to_string()),
        Just("100".to_string()),
        Just("1000".to_string()),
        Just("1024".to_string()),
        Just("1536".to_string()),
        Just("123456789012345678901".to_string()),
        "[0-9]{1,4}",
        "[1-9][0-9]{5,19}",
    ];
    let frac = prop_oneof![
        3 => Just(String::new()),
        1 => Just(".".to_string()),
        1 => Just(".0".to_string()),
        1 => Just(".5".to_string()),
        1 => Just(".25".to_string()),
        1 => Just(".000000001".to_string()),
        1 => Just(".0000000001".to_string()),
        2 => "\\.[0-9]{1,12}",
    ];
    let suffix = prop_oneof![
        Just(""),
        Just("n"),
        Just("u"),
        Just("m"),
        Just("k"),
        Just("M"),
        Just("G"),
        Just("T"),
        Just("P"),
        Just("E"),
        Just("Ki"),
        Just("Mi"),
        Just("Gi"),
        Just("Ti"),
        Just("Pi"),
        Just("Ei"),
        Just("e3"),
        Just("E3"),
        Just("e-3"),
        Just("e+2"),
        Just("e0"),
        Just("e-12"),
        Just("e20"),
        Just("K"),
        Just("i"),
        Just("x"),
    ];
    (sign, int, frac, suffix).prop_map(|(s, i, f, x)| format!("{s}{i}{f}{x}"))
}

/// A quantity as it appears in templates: mostly valid, as a string or a
/// number.
fn quantity_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop_oneof![
            Just("100m"), Just("0.5"), Just("1"), Just("2"), Just("1.5"), Just("250m"),
            Just("1Gi"), Just("512Mi"), Just("1024Mi"), Just("1.5Gi"), Just("1000"),
            Just("128974848"), Just("129e6"), Just("129M"), Just("123Mi"), Just("0.1"),
            Just("+1"), Just("01"), Just("1E3"), Just("100Ki"), Just("1e3"),
        ].prop_map(|s| json!(s)),
        1 => (1u32..4096).prop_map(|n| json!(n)),
    ]
}

/// Strings Go escapes or treats specially.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,12}",
        1 => Just("a<b>&c".to_string()),
        1 => Just("line\nbreak\ttab\r".to_string()),
        1 => Just("quote\"back\\slash".to_string()),
        1 => Just("ctrl\u{1}\u{8}\u{c}\u{1f}".to_string()),
        1 => Just("sep\u{2028}\u{2029}".to_string()),
        1 => Just("ünïcødé ✓ 日本".to_string()),
        1 => Just(String::new()),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z]{1,6}(/[a-z]{1,4})?", text(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k, json!(v))).collect()))
}

/// An object of the fields each present with its own chance.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = fields
        .into_iter()
        .map(|(k, s)| prop::option::weighted(0.5, s.prop_map(move |v| (k, v))).boxed())
        .collect();
    parts
        .prop_map(|kvs| {
            Value::Object(
                kvs.into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

fn b<T: Strategy<Value = Value> + 'static>(s: T) -> BoxedStrategy<Value> {
    s.boxed()
}

fn int(lo: i64, hi: i64) -> BoxedStrategy<Value> {
    (lo..hi).prop_map(|n| json!(n)).boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(|v| json!(v)).boxed()
}

fn s() -> BoxedStrategy<Value> {
    text().prop_map(|t| json!(t)).boxed()
}

fn list(item: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
    // Zero items included: an empty list is written, unlike an absent one.
    prop::collection::vec(item, 0..max)
        .prop_map(Value::Array)
        .boxed()
}

fn resources() -> BoxedStrategy<Value> {
    let list_of = || {
        prop::collection::btree_map(
            prop_oneof![
                Just("cpu"),
                Just("memory"),
                Just("ephemeral-storage"),
                Just("nvidia.com/gpu")
            ],
            quantity_value(),
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .boxed()
    };
    object(vec![("limits", list_of()), ("requests", list_of())])
}

fn port_value() -> BoxedStrategy<Value> {
    prop_oneof![int(1, 65535), Just(json!("http")), Just(json!("8080"))].boxed()
}

fn probe() -> BoxedStrategy<Value> {
    let handler = prop_oneof![
        object(vec![
            ("path", s()),
            ("port", port_value()),
            ("scheme", b(Just(json!("HTTP")))),
            (
                "httpHeaders",
                list(object(vec![("name", s()), ("value", s())]), 2)
            )
        ])
        .prop_map(|h| json!({"httpGet": h})),
        list(s(), 3).prop_map(|c| json!({"exec": {"command": c}})),
        port_value().prop_map(|p| json!({"tcpSocket": {"port": p}})),
    ];
    (
        handler,
        object(vec![
            ("initialDelaySeconds", int(0, 30)),
            ("periodSeconds", int(0, 30)),
            ("timeoutSeconds", int(1, 5)),
            ("failureThreshold", int(1, 5)),
            ("successThreshold", int(1, 2)),
            ("terminationGracePeriodSeconds", int(0, 60)),
        ]),
    )
        .prop_map(|(h, mut rest)| {
            if let (Value::Object(r), Value::Object(h)) = (&mut rest, h) {
                r.extend(h);
            }
            rest
        })
        .boxed()
}

fn env_var() -> BoxedStrategy<Value> {
    prop_oneof![
        (s(), s()).prop_map(|(n, v)| json!({"name": n, "value": v})),
        s().prop_map(|n| json!({"name": n})),
        s().prop_map(|n| json!({"name": n, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
        (s(), boolean()).prop_map(|(n, o)| json!({"name": n, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": o}}})),
        s().prop_map(|n| json!({"name": n, "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}})),
    ]
    .boxed()
}

fn container() -> BoxedStrategy<Value> {
    (
        "[a-z]{1,8}",
        object(vec![
            ("image", s()),
            ("command", list(s(), 3)),
            ("args", list(s(), 3)),
            ("workingDir", s()),
            (
                "ports",
                list(
                    object(vec![
                        ("containerPort", int(1, 65535)),
                        ("name", s()),
                        (
                            "protocol",
                            b(prop_oneof![Just(json!("TCP")), Just(json!("UDP"))]),
                        ),
                        ("hostPort", int(0, 2)),
                    ]),
                    3,
                ),
            ),
            ("env", list(env_var(), 4)),
            (
                "envFrom",
                list(
                    b(Just(
                        json!({"configMapRef": {"name": "cm"}, "prefix": "P_"}),
                    )),
                    2,
                ),
            ),
            ("resources", resources()),
            (
                "volumeMounts",
                list(
                    object(vec![
                        ("name", s()),
                        ("mountPath", s()),
                        ("readOnly", boolean()),
                        ("subPath", s()),
                    ]),
                    3,
                ),
            ),
            ("livenessProbe", probe()),
            ("readinessProbe", probe()),
            ("startupProbe", probe()),
            (
                "lifecycle",
                b(Just(
                    json!({"preStop": {"exec": {"command": ["sleep", "5"]}}}),
                )),
            ),
            ("terminationMessagePath", s()),
            ("terminationMessagePolicy", b(Just(json!("File")))),
            (
                "imagePullPolicy",
                b(prop_oneof![
                    Just(json!("Always")),
                    Just(json!("IfNotPresent"))
                ]),
            ),
            (
                "securityContext",
                object(vec![
                    ("runAsUser", int(0, 70000)),
                    ("runAsNonRoot", boolean()),
                    ("readOnlyRootFilesystem", boolean()),
                    ("allowPrivilegeEscalation", boolean()),
                    (
                        "capabilities",
                        object(vec![
                            ("add", list(s(), 2)),
                            ("drop", list(b(Just(json!("ALL"))), 2)),
                        ]),
                    ),
                ]),
            ),
            ("stdin", boolean()),
            ("tty", boolean()),
            ("unknownField", s()),
        ]),
    )
        .prop_map(|(name, mut c)| {
            if let Value::Object(m) = &mut c {
                m.insert("name".into(), json!(name));
            }
            c
        })
        .boxed()
}

fn volume() -> BoxedStrategy<Value> {
    let source = prop_oneof![
        object(vec![
            ("medium", b(Just(json!("Memory")))),
            ("sizeLimit", b(quantity_value()))
        ])
        .prop_map(|e| json!({"emptyDir": e})),
        object(vec![
            ("defaultMode", int(0, 511)),
            ("optional", boolean()),
            (
                "items",
                list(
                    object(vec![("key", s()), ("path", s()), ("mode", int(0, 511))]),
                    2
                )
            )
        ])
        .prop_map(|c| {
            let mut c = c;
            c["name"] = json!("cm");
            json!({"configMap": c})
        }),
        object(vec![("secretName", s()), ("defaultMode", int(0, 511))])
            .prop_map(|c| json!({"secret": c})),
        s().prop_map(|p| json!({"hostPath": {"path": p, "type": "Directory"}})),
        (s(), boolean())
            .prop_map(|(c, r)| json!({"persistentVolumeClaim": {"claimName": c, "readOnly": r}})),
        Just(
            json!({"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}})
        ),
        Just(
            json!({"projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}})
        ),
    ];
    ("[a-z]{1,8}", source)
        .prop_map(|(n, mut v)| {
            v["name"] = json!(n);
            v
        })
        .boxed()
}

fn selector() -> BoxedStrategy<Value> {
    object(vec![
        ("matchLabels", b(labels())),
        (
            "matchExpressions",
            list(
                object(vec![
                    ("key", s()),
                    (
                        "operator",
                        b(prop_oneof![
                            Just(json!("In")),
                            Just(json!("NotIn")),
                            Just(json!("Exists"))
                        ]),
                    ),
                    ("values", list(s(), 3)),
                ]),
                2,
            ),
        ),
    ])
}

fn affinity() -> BoxedStrategy<Value> {
    let term = object(vec![
        ("labelSelector", selector()),
        ("topologyKey", s()),
        ("namespaces", list(s(), 2)),
    ]);
    object(vec![
        (
            "nodeAffinity",
            object(vec![
                (
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    b(list(
                        object(vec![(
                            "matchExpressions",
                            list(
                                object(vec![
                                    ("key", s()),
                                    ("operator", b(Just(json!("In")))),
                                    ("values", list(s(), 2)),
                                ]),
                                2,
                            ),
                        )]),
                        2,
                    )
                    .prop_map(|t| json!({"nodeSelectorTerms": t}))),
                ),
                (
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    list(
                        object(vec![
                            ("weight", int(1, 100)),
                            (
                                "preference",
                                object(vec![(
                                    "matchFields",
                                    list(
                                        object(vec![
                                            ("key", s()),
                                            ("operator", b(Just(json!("In")))),
                                            ("values", list(s(), 2)),
                                        ]),
                                        1,
                                    ),
                                )]),
                            ),
                        ]),
                        2,
                    ),
                ),
            ]),
        ),
        (
            "podAntiAffinity",
            object(vec![
                (
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    list(
                        (int(1, 100), term.clone())
                            .prop_map(|(w, t)| json!({"weight": w, "podAffinityTerm": t}))
                            .boxed(),
                        2,
                    ),
                ),
                (
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    list(term, 2),
                ),
            ]),
        ),
    ])
}

fn template() -> impl Strategy<Value = Value> {
    let metadata = object(vec![
        ("labels", b(labels())),
        ("annotations", b(labels())),
        ("name", s()),
        ("namespace", s()),
        ("generateName", s()),
    ]);
    let spec = (
        prop::collection::vec(container(), 1..3),
        object(vec![
            ("initContainers", list(container(), 2)),
            ("volumes", list(volume(), 3)),
            ("affinity", affinity()),
            (
                "tolerations",
                list(
                    object(vec![
                        ("key", s()),
                        (
                            "operator",
                            b(prop_oneof![Just(json!("Exists")), Just(json!("Equal"))]),
                        ),
                        ("value", s()),
                        ("effect", b(Just(json!("NoSchedule")))),
                        ("tolerationSeconds", int(0, 600)),
                    ]),
                    3,
                ),
            ),
            ("nodeSelector", b(labels())),
            ("serviceAccountName", s()),
            ("terminationGracePeriodSeconds", int(0, 120)),
            ("activeDeadlineSeconds", int(1, 100)),
            ("dnsPolicy", b(Just(json!("ClusterFirst")))),
            ("restartPolicy", b(Just(json!("Always")))),
            ("hostNetwork", boolean()),
            ("automountServiceAccountToken", boolean()),
            ("priority", int(-10, 10)),
            ("priorityClassName", s()),
            ("schedulerName", s()),
            (
                "securityContext",
                object(vec![
                    ("runAsUser", int(0, 10)),
                    ("fsGroup", int(0, 10)),
                    (
                        "sysctls",
                        list(object(vec![("name", s()), ("value", s())]), 2),
                    ),
                ]),
            ),
            ("imagePullSecrets", list(object(vec![("name", s())]), 2)),
            (
                "topologySpreadConstraints",
                list(
                    object(vec![
                        ("maxSkew", int(1, 3)),
                        ("topologyKey", s()),
                        ("whenUnsatisfiable", b(Just(json!("DoNotSchedule")))),
                        ("labelSelector", selector()),
                    ]),
                    2,
                ),
            ),
            (
                "hostAliases",
                list(object(vec![("ip", s()), ("hostnames", list(s(), 2))]), 2),
            ),
            (
                "overhead",
                b(
                    prop::collection::btree_map(Just("cpu"), quantity_value(), 0..2).prop_map(
                        |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
                    ),
                ),
            ),
            (
                "readinessGates",
                list(object(vec![("conditionType", s())]), 2),
            ),
        ]),
    )
        .prop_map(|(containers, mut spec)| {
            spec["containers"] = Value::Array(containers);
            spec
        });
    (metadata, spec, any::<bool>()).prop_map(|(m, s, with_meta)| {
        if with_meta {
            json!({"metadata": m, "spec": s})
        } else {
            json!({"spec": s})
        }
    })
}
