//! Real requests through a real proxy (tests/support/rig.rs): Traefik reads
//! the Ingresses the controller writes, a steady load goes through it to
//! the pods, and every claim about traffic is checked on what the requests
//! met. Runs itself inside a network namespace (hack/data-plane.sh) with a
//! local cluster of its own; needs root.
//!
//! Own harness (`harness = false`): the rig is set up once and the
//! scenarios run one after the other in it. An argument filters them by
//! name, as `cargo test --test traffic -- NAME` would.

mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::networking::v1::IngressClass;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rollouts::api::Rollout;
use rollouts::api::rollout::RolloutPhase;
use serde_json::json;
use support::prometheus::Prometheus;
use support::rig::{self, Load, PodServer, Traefik};
use support::{TestEnv, healthy, kubeconfig, patch_status, paused, wait_rollout};

const RO: &str = "web";
/// Requests a second through the proxy.
const RATE: u32 = 100;
/// Traefik splits by weighted round robin: exact once settled.
const TOLERANCE: f64 = 2.0;

/// An Ingress of ingress-nginx's class (which Traefik's NGINX provider
/// serves) sending every request for `host` to `service`, as a YAML document.
fn ingress(name: &str, host: &str, service: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: nginx
  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}
"#
    )
}

/// The Services, the Ingress (ingress-nginx's class, which Traefik's
/// NGINX provider serves) and the Rollout of a scenario. Every pod answers
/// with its image tag ("blue", "green", ...).
fn manifest(host: &str, strategy: &str) -> String {
    let ingress = ingress("web", host, "web-stable");
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web-stable}}
spec:
  ports: [{{name: http, port: 80, targetPort: http}}]
  selector: {{app: web}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-canary}}
spec:
  ports: [{{name: http, port: 80, targetPort: http}}]
  selector: {{app: web}}
{ingress}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: rig/web:blue
        ports: [{{name: http, containerPort: 8080}}]
  strategy:
{strategy}
"#
    )
}

/// A canary with nginx routing and these steps (a YAML flow sequence).
fn nginx_canary(host: &str, steps: &str) -> String {
    manifest(
        host,
        &format!(
            "    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        managedRoutes: [{{name: testers}}]
        nginx: {{stableIngress: web}}
      steps: {steps}"
        ),
    )
}

fn main() -> ExitCode {
    if let Some(code) = support::rig::enter() {
        return code;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(filter.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traffic: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type Scenario = for<'a> fn(&'a Rig) -> futures::future::LocalBoxFuture<'a, Result<()>>;

/// What every scenario shares: the proxy and the pod server.
struct Rig {
    traefik: Traefik,
    _pods: PodServer,
}

async fn run(filter: Option<&str>) -> Result<()> {
    let client = support::client().await?;
    let classes: Api<IngressClass> = Api::all(client.clone());
    let class: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "nginx"},
        "spec": {"controller": "k8s.io/ingress-nginx"}
    }))?;
    classes
        .patch(
            "nginx",
            &PatchParams::apply("rollouts-tests").force(),
            &Patch::Apply(&class),
        )
        .await?;
    let rig = Rig {
        traefik: Traefik::start(kubeconfig(), &client).await?,
        _pods: PodServer::start(client).await?,
    };
    // Each scenario with its name, as libtest would list it.
    macro_rules! scenarios {
        ($($f:ident),* $(,)?) => {
            [$((stringify!($f), (|r| Box::pin($f(r))) as Scenario)),*]
        };
    }
    let scenarios = scenarios![
        nginx_share_follows_each_weight_and_abort_returns_every_request_to_stable,
        nginx_header_route_sends_every_matching_request_to_the_canary,
        a_full_release_fails_no_request,
        without_routing_the_share_follows_the_pod_count,
        blue_green_switches_at_promotion_and_the_preview_serves_only_the_new_pods,
        an_analysis_of_the_proxys_metrics_passes_a_good_release_and_aborts_a_bad_one,
        a_web_metric_on_the_canarys_own_service_passes_a_good_release_and_aborts_a_bad_one,
        a_progress_deadline_abort_sends_no_request_to_a_canary_that_never_got_ready,
        max_traffic_weight_splits_out_of_its_total,
        the_gateway_api_provider_splits_an_httproute_by_its_weights,
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let began = Instant::now();
        match scenario(&rig).await {
            Ok(()) => eprintln!("test {name} ... ok ({:.1}s)", began.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!(
                    "test {name} ... FAILED: {e:#}\n--- traefik log (tail) ---\n{}",
                    rig.traefik.log_tail(20)
                );
                failed.push(name);
            }
        }
    }
    ensure!(failed.is_empty(), "failed: {failed:?}");
    Ok(())
}

async fn deploy(manifest: &str) -> Result<TestEnv> {
    let env = TestEnv::new("traffic").await?;
    env.apply_yaml(manifest).await?;
    wait_rollout(&env, RO, "the first deploy", healthy).await?;
    Ok(env)
}

async fn set_image(env: &TestEnv, image: &str) -> Result<()> {
    set_release(env, image, &[]).await
}

/// A new image whose pod template carries `labels` (the test labels not
/// given are removed): [`rig::ANSWER_LABEL`] makes a release whose pods
/// answer with an error, kwok's `fail-readiness` one whose pods never
/// become Ready.
async fn set_release(env: &TestEnv, image: &str, labels: &[(&str, &str)]) -> Result<()> {
    // A merge patch replaces the whole containers list: the port the
    // Services name goes with it.
    let container =
        json!({"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}]});
    let mut set = serde_json::Map::new();
    for key in [rig::ANSWER_LABEL, "fail-readiness"] {
        set.insert(key.into(), serde_json::Value::Null);
    }
    for (key, value) in labels {
        set.insert(key.to_string(), json!(value));
    }
    let labels = set;
    let patch = json!({"spec": {"template": {
        "metadata": {"labels": labels},
        "spec": {"containers": [container]}
    }}});
    env.api::<Rollout>()
        .patch(RO, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn pause_at(env: &TestEnv, index: i32) -> Result<()> {
    wait_rollout(env, RO, &format!("the pause at step {index}"), |s| {
        paused(s) && s.current_step_index == Some(index)
    })
    .await?;
    Ok(())
}

/// Waits until the requests all reach "blue", and returns that moment:
/// failures are counted from there (the proxy learns of a new Ingress a
/// few seconds after it is written, and answers 404/503 meanwhile).
async fn all_blue(load: &Load) -> Result<Instant> {
    load.settle("the first deploy", "blue", 100.0, 0.0, WINDOW, SETTLE)
        .await?;
    Ok(Instant::now())
}

/// No request answered after `from` failed.
fn no_failures(load: &Load, from: Instant) -> Result<u32> {
    let seen = load.tally(from, None);
    let failed: Vec<_> = load
        .failed_seconds()
        .into_iter()
        .filter(|(s, _)| load.started() + Duration::from_secs(*s + 1) > from)
        .collect();
    ensure!(
        seen.failed.is_empty(),
        "{} of {} requests failed; by second: {failed:?}",
        seen.failed.len(),
        seen.total(),
    );
    Ok(seen.total())
}

const WINDOW: Duration = Duration::from_secs(3);
const SETTLE: Duration = Duration::from_secs(30);

/// setWeight 20 and 50 give the canary 20 % and 50 % of the requests; an
/// abort sends every request back to stable within a second, with no
/// failed request at any point.
async fn nginx_share_follows_each_weight_and_abort_returns_every_request_to_stable(
    rig: &Rig,
) -> Result<()> {
    // A host per scenario: a namespace being deleted still has its Ingress.
    let host = "weights.rig.test";
    let env = deploy(&nginx_canary(
        host,
        "[{setWeight: 20}, {pause: {}}, {setWeight: 50}, {pause: {}}]",
    ))
    .await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;

    set_image(&env, "rig/web:green").await?;
    pause_at(&env, 1).await?;
    let at20 = load
        .settle("setWeight 20", "green", 20.0, TOLERANCE, WINDOW, SETTLE)
        .await?;
    patch_status(&env, RO, json!({"pauseConditions": null})).await?;
    pause_at(&env, 3).await?;
    let at50 = load
        .settle("setWeight 50", "green", 50.0, TOLERANCE, WINDOW, SETTLE)
        .await?;

    // From the abort's write to the first whole second all stable.
    let aborted = Instant::now();
    patch_status(&env, RO, json!({"abort": true})).await?;
    let back = loop {
        let second = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tally = load.tally(second, None);
        if tally.total() > 0 && tally.share("blue") == 100.0 {
            break second.duration_since(aborted);
        }
        ensure!(
            aborted.elapsed() < SETTLE,
            "{SETTLE:?} after the abort, requests still reach the canary: {tally:?}"
        );
    };
    wait_rollout(&env, RO, "the abort", |s| {
        s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    load.settle("after the abort", "blue", 100.0, 0.0, WINDOW, SETTLE)
        .await?;
    let total = no_failures(&load, from)?;
    eprintln!(
        "  setWeight 20: {:?}; setWeight 50: {:?}; abort -> 100 % stable from {:.1}s after the write; {total} requests, none failed",
        at20.served,
        at50.served,
        back.as_secs_f64()
    );
    env.cleanup().await
}

/// setHeaderRoute: every request with the header reaches the canary, at
/// weight 0 and at weight 20; the others follow the weight; the route goes
/// with the next setHeaderRoute without match.
async fn nginx_header_route_sends_every_matching_request_to_the_canary(rig: &Rig) -> Result<()> {
    let host = "header.rig.test";
    let env = deploy(&nginx_canary(
        host,
        r#"[{setCanaryScale: {replicas: 1}},
            {setHeaderRoute: {name: testers, match: [{headerName: X-Canary, headerValue: {exact: "yes"}}]}},
            {pause: {}},
            {setWeight: 20}, {setCanaryScale: {matchTrafficWeight: true}}, {pause: {}},
            {setHeaderRoute: {name: testers}}, {pause: {}}]"#,
    ))
    .await?;
    let plain = Load::start(rig.traefik.web_port, host, RATE / 2);
    let testers = Load::with_headers(rig.traefik.web_port, host, &[("X-Canary", "yes")], RATE / 2);
    let others = Load::with_headers(rig.traefik.web_port, host, &[("X-Canary", "no")], RATE / 4);
    let from = all_blue(&plain).await?;

    set_image(&env, "rig/web:green").await?;
    pause_at(&env, 2).await?;
    testers
        .settle(
            "the header route at weight 0",
            "green",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    plain
        .settle(
            "weight 0 beside the header route",
            "blue",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    others
        .settle(
            "another header value at weight 0",
            "blue",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;

    patch_status(&env, RO, json!({"pauseConditions": null})).await?;
    pause_at(&env, 5).await?;
    testers
        .settle(
            "the header route at weight 20",
            "green",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    let at20 = rig::settle(
        &[&plain, &others],
        "weight 20 beside the header route",
        "green",
        20.0,
        TOLERANCE,
        WINDOW,
        SETTLE,
    )
    .await?;

    patch_status(&env, RO, json!({"pauseConditions": null})).await?;
    pause_at(&env, 7).await?;
    let gone = rig::settle(
        &[&plain, &testers, &others],
        "the header route removed",
        "green",
        20.0,
        TOLERANCE,
        WINDOW,
        SETTLE,
    )
    .await?;
    let mut total = 0;
    for load in [&plain, &testers, &others] {
        total += no_failures(load, from)?;
    }
    eprintln!(
        "  X-Canary: yes -> 100 % canary at weight 0 and 20; the rest at 20: {:?}; all after the route is removed: {:?}; {total} requests, none failed",
        at20.served, gone.served
    );
    env.cleanup().await
}

/// A good release from first step to completion: timed pauses, the stable
/// Service moved to the new pods at the end, the canary weight back to 0.
/// Every request is answered, and at the end all by the new pods.
async fn a_full_release_fails_no_request(rig: &Rig) -> Result<()> {
    let host = "release.rig.test";
    let env = deploy(&nginx_canary(
        host,
        "[{setWeight: 25}, {pause: {duration: 3}}, {setWeight: 75}, {pause: {duration: 3}}]",
    ))
    .await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;
    set_image(&env, "rig/web:green").await?;
    wait_rollout(&env, RO, "the release", |s| {
        healthy(s) && s.stable_rs == s.current_pod_hash
    })
    .await?;
    let end = load
        .settle("after the release", "green", 100.0, 0.0, WINDOW, SETTLE)
        .await?;
    // The stable pods go once the release is done: still nothing fails.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let total = no_failures(&load, from)?;
    eprintln!(
        "  after the release: {:?}; {total} requests, none failed",
        end.served
    );
    env.cleanup().await
}

/// Without traffic routing the canary gets traffic by pod count: a plain
/// Service over all the Rollout's pods, as its clients see it.
async fn without_routing_the_share_follows_the_pod_count(rig: &Rig) -> Result<()> {
    let host = "pods.rig.test";
    let manifest = manifest(
        host,
        "    canary:
      steps: [{setWeight: 25}, {pause: {}}, {setWeight: 50}, {pause: {}}]",
    );
    let env = deploy(&manifest).await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;
    set_image(&env, "rig/web:green").await?;
    let mut seen = Vec::new();
    for (step, weight) in [(1, 25.0), (3, 50.0)] {
        pause_at(&env, step).await?;
        let ro = env.api::<Rollout>().get(RO).await?;
        let status = ro.status.unwrap_or_default();
        let (canary, total) = (status.updated_replicas, status.available_replicas);
        // The pod ratio the replica math gives, and what the requests show.
        let ratio = 100.0 * f64::from(canary) / f64::from(total.max(1));
        ensure!(
            (ratio - weight).abs() <= 100.0 / f64::from(total.max(1)),
            "setWeight {weight}: {canary} of {total} pods"
        );
        let tally = load
            .settle(
                &format!("setWeight {weight}"),
                "green",
                ratio,
                TOLERANCE,
                WINDOW,
                SETTLE,
            )
            .await?;
        seen.push((weight, canary, total, tally.served));
        patch_status(&env, RO, json!({"pauseConditions": null})).await?;
    }
    let total = no_failures(&load, from)?;
    eprintln!(
        "  (setWeight, canary pods, pods, requests): {seen:?}; {total} requests, none failed"
    );
    env.cleanup().await
}

/// Blue-green: the preview Service serves only the new pods before the
/// promotion, the active one only the old; at the promotion the active
/// Service switches with no failed request.
async fn blue_green_switches_at_promotion_and_the_preview_serves_only_the_new_pods(
    rig: &Rig,
) -> Result<()> {
    let (host, preview_host) = ("active.rig.test", "preview.rig.test");
    let preview_ingress = ingress("web-preview", preview_host, "web-canary");
    let manifest = manifest(
        host,
        "    blueGreen:
      activeService: web-stable
      previewService: web-canary
      autoPromotionEnabled: false
      scaleDownDelaySeconds: 10",
    ) + &preview_ingress;
    let env = deploy(&manifest).await?;
    let active = Load::start(rig.traefik.web_port, host, RATE);
    let preview = Load::start(rig.traefik.web_port, preview_host, RATE / 4);
    let from = all_blue(&active).await?;
    set_image(&env, "rig/web:green").await?;
    wait_rollout(&env, RO, "the pause before promotion", paused).await?;
    let before = preview
        .settle(
            "the preview before promotion",
            "green",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    active
        .settle(
            "the active Service before promotion",
            "blue",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    patch_status(&env, RO, json!({"pauseConditions": null})).await?;
    let after = active
        .settle(
            "the active Service after promotion",
            "green",
            100.0,
            0.0,
            WINDOW,
            SETTLE,
        )
        .await?;
    wait_rollout(&env, RO, "the promotion", |s| {
        healthy(s) && s.stable_rs == s.current_pod_hash
    })
    .await?;
    // Past the scale-down delay: the old pods go, nothing fails.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let total = no_failures(&active, from)?;
    eprintln!(
        "  preview before: {:?}; active after: {:?}; {total} requests to the active Service, none failed",
        before.served, after.served
    );
    env.cleanup().await
}

/// An AnalysisTemplate on Traefik's own request metrics (the canary's 5xx
/// rate, analysis-examples/traefik-canary-error-rate.yaml) as a step: a good
/// release goes through; a bad one (its pods answer 500) is aborted by the
/// analysis alone, every request returns to stable, and nothing fails after.
async fn an_analysis_of_the_proxys_metrics_passes_a_good_release_and_aborts_a_bad_one(
    rig: &Rig,
) -> Result<()> {
    let host = "analysis.rig.test";
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", rig.traefik.metrics_port)).await?;
    let steps = "[{setWeight: 20}, {analysis: {templates: [{templateName: traefik-canary-error-rate}], \
                 args: [{name: canary-service, value: CANARY}, {name: prometheus-address, value: PROMETHEUS}]}}, \
                 {setWeight: 60}, {pause: {duration: 2}}]";
    let env = TestEnv::new("traffic").await?;
    let canary = format!("{}-web-web-stable-80-canary@kubernetesingressnginx", env.ns);
    let interval = 5;
    env.apply_yaml(&support::example(
        "traefik-canary-error-rate.yaml",
        &[("interval: 10s", &format!("interval: {interval}s"))],
    )?)
    .await?;
    env.apply_yaml(&nginx_canary(
        host,
        &steps
            .replace("CANARY", &format!("\"{canary}\""))
            .replace("PROMETHEUS", &format!("\"{}\"", prometheus.url())),
    ))
    .await?;
    // The first measurement with errors in Prometheus's 20 s window fails
    // the run (failureLimit 0): at most one interval after the first 500,
    // plus a scrape (1 s) and the controller's reaction.
    let bound = Duration::from_secs(interval + 5);
    good_then_bad(rig, env, host, bound).await
}

/// A good release through the analysis, then a bad one (its pods answer
/// 500), aborted by the analysis within `bound` of its first failed
/// request; every request back on stable after, none failing.
async fn good_then_bad(rig: &Rig, env: TestEnv, host: &str, bound: Duration) -> Result<()> {
    wait_rollout(&env, RO, "the first deploy", healthy).await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;

    // A good release: the analysis passes, the release completes.
    set_image(&env, "rig/web:green").await?;
    wait_rollout(&env, RO, "the good release", |s| {
        healthy(s) && s.stable_rs == s.current_pod_hash
    })
    .await?;
    load.settle(
        "after the good release",
        "green",
        100.0,
        0.0,
        WINDOW,
        SETTLE,
    )
    .await?;
    let good = no_failures(&load, from)?;

    // A bad release: its pods answer 500.
    let bad_from = Instant::now();
    set_release(&env, "rig/web:red", &[(rig::ANSWER_LABEL, "500")]).await?;
    let aborted = wait_rollout(&env, RO, "the abort by the analysis", |s| {
        s.abort && s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    let abort_seen = Instant::now();
    let failing = load.tally(bad_from, None);
    let first_failure = load
        .first_failure(bad_from)
        .ok_or_else(|| anyhow::anyhow!("the bad release failed no request: {failing:?}"))?;
    let back = load
        .settle("after the abort", "green", 100.0, 0.0, WINDOW, SETTLE)
        .await?;
    let after = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    no_failures(&load, after)?;
    let message = aborted.message.unwrap_or_default();
    ensure!(
        message.contains("analysis"),
        "the abort does not name the analysis: {message}"
    );
    let took = abort_seen.duration_since(first_failure);
    ensure!(
        took <= bound,
        "the abort came {took:?} after the first failed request (bound {bound:?})"
    );
    eprintln!(
        "  good release: {good} requests, none failed; bad release: aborted {:.1}s after its first failed request (bound {bound:?}), {} of {} requests failed until then; then {:?} and none failed; {message}",
        took.as_secs_f64(),
        failing.failed.len(),
        failing.total(),
        back.served,
    );
    env.cleanup().await
}

/// A web metric that calls the canary's own Service
/// (analysis-examples/web-canary-health.yaml; here through the proxy, by
/// an Ingress of its own, as the rig has no kube-proxy): a good release
/// goes through, a bad one is aborted by the analysis alone.
async fn a_web_metric_on_the_canarys_own_service_passes_a_good_release_and_aborts_a_bad_one(
    rig: &Rig,
) -> Result<()> {
    let (host, canary_host) = ("web-metric.rig.test", "canary.web-metric.rig.test");
    let canary_ingress = ingress("web-canary-direct", canary_host, "web-canary");
    let steps = format!(
        "[{{setWeight: 20}}, {{analysis: {{templates: [{{templateName: web-canary-health}}], \
         args: [{{name: canary-url, value: \"http://127.0.0.1:{}/\"}}, {{name: canary-host, value: {canary_host}}}]}}}}, \
         {{setWeight: 60}}, {{pause: {{duration: 2}}}}]",
        rig.traefik.web_port
    );
    let env = TestEnv::new("traffic").await?;
    let interval = 2;
    env.apply_yaml(&support::example(
        "web-canary-health.yaml",
        &[("interval: 10s", &format!("interval: {interval}s"))],
    )?)
    .await?;
    env.apply_yaml(&(nginx_canary(host, &steps) + &canary_ingress))
        .await?;
    // consecutiveErrorLimit 1: the second error in a row ends the run. As
    // upstream, a measurement after an error waits 10 s, not the interval;
    // the first one of a run may still reach the old pods (Traefik applies
    // the canary Service's new endpoints within its 2 s throttle).
    let bound = Duration::from_secs(interval + 10 + 5);
    good_then_bad(rig, env, host, bound).await
}

/// A canary whose pods never become Ready: the weight never moves to it,
/// the progress deadline aborts the update (`progressDeadlineAbort`), and
/// no request goes to it or fails at any point.
async fn a_progress_deadline_abort_sends_no_request_to_a_canary_that_never_got_ready(
    rig: &Rig,
) -> Result<()> {
    let host = "deadline.rig.test";
    let manifest = nginx_canary(host, "[{setWeight: 20}, {pause: {}}]")
        + "  progressDeadlineSeconds: 10\n  progressDeadlineAbort: true\n";
    let env = deploy(&manifest).await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;
    set_release(&env, "rig/web:green", &[("fail-readiness", "true")]).await?;
    let aborted = wait_rollout(&env, RO, "the abort at the progress deadline", |s| {
        s.abort && s.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = load.tally(from, None);
    ensure!(
        seen.share("blue") == 100.0,
        "requests reached the canary that never got ready: {seen:?}"
    );
    let total = no_failures(&load, from)?;
    let message = aborted.message.unwrap_or_default();
    ensure!(
        message.contains("has timed out progressing"),
        "the abort does not name the deadline: {message}"
    );
    eprintln!("  {total} requests, all to stable, none failed; {message}");
    env.cleanup().await
}

/// `maxTrafficWeight: 1000`: `setWeight: 200` is 20 % of the requests
/// (the canary Ingress's `canary-weight-total` is 1000).
async fn max_traffic_weight_splits_out_of_its_total(rig: &Rig) -> Result<()> {
    let host = "total.rig.test";
    let manifest = nginx_canary(host, "[{setWeight: 200}, {pause: {}}]").replace(
        "        nginx: {stableIngress: web}",
        "        maxTrafficWeight: 1000\n        nginx: {stableIngress: web}",
    );
    let env = deploy(&manifest).await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    let from = all_blue(&load).await?;
    set_image(&env, "rig/web:green").await?;
    pause_at(&env, 1).await?;
    let at = load
        .settle(
            "setWeight 200 of 1000",
            "green",
            20.0,
            TOLERANCE,
            WINDOW,
            SETTLE,
        )
        .await?;
    let total = no_failures(&load, from)?;
    eprintln!(
        "  setWeight 200 of 1000: {:?}; {total} requests, none failed",
        at.served
    );
    env.cleanup().await
}

/// The rig's Gateway API provider (what issue 31's routing will drive): an
/// HTTPRoute whose rule sends 70/30 to a blue-green Rollout's active and
/// preview Services, paused with the old pods behind one and the new behind
/// the other, splits the requests 70/30, and none fails.
async fn the_gateway_api_provider_splits_an_httproute_by_its_weights(rig: &Rig) -> Result<()> {
    let host = "gateway.rig.test";
    let manifest = manifest(
        "ingress.gateway.rig.test",
        "    blueGreen:
      activeService: web-stable
      previewService: web-canary
      autoPromotionEnabled: false",
    );
    let env = deploy(&manifest).await?;
    set_image(&env, "rig/web:green").await?;
    wait_rollout(&env, RO, "the blue-green pause", paused).await?;
    env.apply_yaml(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: traefik}}
spec: {{controllerName: {controller}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: rig}}
spec:
  gatewayClassName: traefik
  listeners:
  - {{name: web, protocol: HTTP, port: {port}, allowedRoutes: {{namespaces: {{from: Same}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: rig}}]
  hostnames: [{host}]
  rules:
  - backendRefs:
    - {{name: web-stable, port: 80, weight: 70}}
    - {{name: web-canary, port: 80, weight: 30}}
"#,
        controller = rig::GATEWAY_CONTROLLER,
        port = rig.traefik.web_port,
    ))
    .await?;
    let load = Load::start(rig.traefik.web_port, host, RATE);
    // Until Traefik has read the route, requests get 404: settle first.
    let split = load
        .settle(
            "the HTTPRoute at 70/30",
            "green",
            30.0,
            TOLERANCE,
            WINDOW,
            SETTLE,
        )
        .await?;
    let from = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let total = no_failures(&load, from)?;
    eprintln!(
        "  70/30 route: {:?}; then {total} requests, none failed",
        split.served
    );
    env.cleanup().await
}
