//! The Prometheus provider against a real Prometheus (hack/prometheus.sh)
//! scraping a local HTTP server that serves the text exposition format:
//! vector and scalar results, range queries, passing and failing conditions,
//! empty vectors, Prometheus' own errors, a server that is down, and (against
//! a scripted server standing in for Prometheus) the headers and auth it
//! sends. One AnalysisRun with a range query goes through the controller.

mod support;

use anyhow::Result;
use rollouts::analysis::providers::prometheus::{WARNINGS_KEY, measure};
use rollouts::api::analysis::{
    AnalysisPhase, AnalysisRun, BasicAuth, Measurement, Metric, PrometheusAuth, PrometheusMetric,
    PrometheusRangeQuery, WebMetricHeader,
};
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use std::time::Duration;
use support::prometheus::Prometheus;
use support::{TestEnv, wait_run_completed};

/// 99 good requests and 1 error, as an app's /metrics would say.
const METRICS: &str = "# TYPE http_requests_total counter\n\
http_requests_total{code=\"200\"} 99\n\
http_requests_total{code=\"500\"} 1\n";

/// An app serving METRICS and a Prometheus scraping it every second.
async fn app_and_prometheus() -> Result<(TestServer, Prometheus)> {
    let app = TestServer::start(vec![Reply::text(200, METRICS)]).await?;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", app.port())).await?;
    Ok((app, prometheus))
}

fn metric(success: &str) -> Metric {
    Metric {
        name: "success-rate".into(),
        success_condition: Some(success.into()),
        ..Default::default()
    }
}

async fn query(prometheus: &Prometheus, promql: &str, success: &str) -> Measurement {
    let prom = PrometheusMetric {
        address: Some(prometheus.url()),
        query: Some(promql.into()),
        ..Default::default()
    };
    measure(&metric(success), &prom).await
}

const RATE: &str = r#"sum(http_requests_total{code="200"}) / sum(http_requests_total)"#;

#[tokio::test]
async fn vector_and_scalar_results_pass_or_fail_on_their_conditions() -> Result<()> {
    let (_app, prometheus) = app_and_prometheus().await?;

    let m = query(&prometheus, RATE, "result[0] >= 0.95").await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[0.99]"));
    assert_eq!(m.message, None);
    assert!(m.started_at.is_some() && m.finished_at.is_some());

    // One series per sample, in a list.
    let m = query(
        &prometheus,
        "sort(http_requests_total)",
        "len(result) == 2 && result[0] == 1 && result[1] == 99",
    )
    .await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[1,99]"));

    let m = query(&prometheus, &format!("scalar({RATE})"), "result >= 0.95").await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("0.99"));

    let errors = r#"sum(http_requests_total{code="500"}) / sum(http_requests_total)"#;
    let m = query(&prometheus, errors, "result[0] >= 0.95").await;
    assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[0.01]"));

    // Prometheus' NaN comes through as upstream shows it.
    let m = query(&prometheus, "scalar(vector(0) / 0)", "isNaN(result)").await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("NaN"));

    // A string result is not something a condition can judge (as upstream).
    let m = query(&prometheus, "\"text\"", "true").await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    assert_eq!(
        m.message.as_deref(),
        Some("Prometheus metric type not supported")
    );
    Ok(())
}

async fn range_query(
    prometheus: &Prometheus,
    promql: &str,
    (start, end, step): (&str, &str, &str),
    success: &str,
) -> Measurement {
    let prom = PrometheusMetric {
        address: Some(prometheus.url()),
        query: Some(promql.into()),
        range_query: Some(PrometheusRangeQuery {
            start: Some(start.into()),
            end: Some(end.into()),
            step: Some(step.into()),
        }),
        ..Default::default()
    };
    measure(&metric(success), &prom).await
}

#[tokio::test]
async fn range_queries_judge_every_sample_of_every_series() -> Result<()> {
    let (_app, prometheus) = app_and_prometheus().await?;
    // The first scrape is then at least two seconds old: the last two
    // seconds have data.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 10 s every 2 s: six points, an instant query would give one.
    let m = range_query(
        &prometheus,
        "vector(1)",
        (r#"now() - duration("10s")"#, "now()", "2s"),
        "len(result) == 6 && all(result, {# == 1})",
    )
    .await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[1,1,1,1,1,1]"));
    assert!(m.started_at.is_some() && m.finished_at.is_some());

    // Two series of two points, series by series (in label order).
    let m = range_query(
        &prometheus,
        "http_requests_total",
        (r#"now() - duration("1s")"#, "now()", "1s"),
        "all(result, {# < 1000})",
    )
    .await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[99,99,1,1]"));

    // One sample out of bounds fails the metric.
    let m = range_query(
        &prometheus,
        "http_requests_total",
        (r#"now() - duration("1s")"#, "now()", "1s"),
        "all(result, {# < 50})",
    )
    .await;
    assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[99,99,1,1]"));

    // What Prometheus refuses comes back as its own error.
    let refused = [
        (
            ("now()", r#"now() - duration("1m")"#, "1s"),
            "end timestamp must not be before start time",
        ),
        (
            (r#"now() - duration("1m")"#, "now()", "0"),
            "zero or negative query resolution step widths are not accepted",
        ),
        (
            (r#"now() - duration("24h")"#, "now()", "1s"),
            "exceeded maximum resolution of 11,000 points per timeseries",
        ),
    ];
    for (range, why) in refused {
        let m = range_query(&prometheus, "vector(1)", range, "true").await;
        assert_eq!(m.phase, AnalysisPhase::Error, "{range:?}: {m:?}");
        let message = m.message.unwrap_or_default();
        assert!(
            message.starts_with("bad_data: ") && message.contains(why),
            "{range:?}: {message}"
        );
    }

    // A start that is no time never reaches Prometheus.
    let m = range_query(&prometheus, "vector(1)", ("1", "now()", "1s"), "true").await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    assert_eq!(
        m.message.as_deref(),
        Some("failed to parse rangeQuery.start as time: expected time.Time, but got int")
    );
    Ok(())
}

#[tokio::test]
async fn an_analysis_run_with_a_range_query_measures_the_range() -> Result<()> {
    let (_app, prometheus) = app_and_prometheus().await?;
    let env = TestEnv::new("prom-range").await?;
    // Upstream's documented shape, the lookback from an argument.
    env.apply_yaml(&format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: range}}
spec:
  args:
  - name: lookback-duration
    value: 10s
  metrics:
  - name: ones
    successCondition: "all(result, # == 1)"
    provider:
      prometheus:
        address: "{}"
        query: vector(1)
        rangeQuery:
          start: 'now() - duration("{{{{args.lookback-duration}}}}")'
          end: 'now()'
          step: 2s
"#,
        prometheus.url()
    ))
    .await?;
    let run = env.api::<AnalysisRun>().get("range").await?;
    let stored = run.spec.metrics[0].provider.prometheus.clone();
    assert_eq!(
        stored.and_then(|p| p.range_query),
        Some(PrometheusRangeQuery {
            start: Some(r#"now() - duration("{{args.lookback-duration}}")"#.into()),
            end: Some("now()".into()),
            step: Some("2s".into()),
        }),
        "the API server kept rangeQuery"
    );
    let run = wait_run_completed(&env, "range").await?;
    let status = run.status.unwrap_or_default();
    assert_eq!(status.phase, Some(AnalysisPhase::Successful), "{status:?}");
    let measurement = &status.metric_results[0].measurements[0];
    assert_eq!(measurement.value.as_deref(), Some("[1,1,1,1,1,1]"));
    env.cleanup().await
}

#[tokio::test]
async fn an_empty_vector_is_an_empty_list_for_the_condition() -> Result<()> {
    let (_app, prometheus) = app_and_prometheus().await?;
    let none = r#"http_requests_total{code="404"}"#;

    let m = query(&prometheus, none, "result[0] > 0").await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[]"));
    let message = m.message.unwrap_or_default();
    assert!(
        message.starts_with("could not evaluate successCondition \"result[0] > 0\": ")
            && message.contains("no data returned from the metric provider"),
        "{message}"
    );

    let m = query(&prometheus, none, "len(result) == 0").await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[]"));
    Ok(())
}

#[tokio::test]
async fn bad_promql_is_an_error_with_prometheus_message() -> Result<()> {
    let (_app, prometheus) = app_and_prometheus().await?;
    let m = query(&prometheus, "sum(http_requests_total", "true").await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    assert_eq!(m.value, None);
    let message = m.message.unwrap_or_default();
    assert!(
        message.starts_with("bad_data: invalid parameter \"query\": ")
            && message.contains("parse error"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn prometheus_down_is_an_error_with_the_connection_failure() -> Result<()> {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let prom = PrometheusMetric {
        address: Some(format!("http://127.0.0.1:{port}")),
        query: Some("up".into()),
        timeout: Some(5),
        ..Default::default()
    };
    let m = measure(&metric("true"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    let message = m.message.unwrap_or_default();
    assert!(
        message.starts_with("failed to send request to server: ")
            && message.contains("Connection refused"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn sends_basic_auth_and_headers_and_keeps_warnings() -> Result<()> {
    let answer = json!({
        "status": "success",
        "warnings": ["results may be partial"],
        "data": {"resultType": "vector", "result": [
            {"metric": {"job": "app"}, "value": [1700000000.123, "0.97"]}
        ]}
    });
    let fake = TestServer::start(vec![
        Reply::json(200, answer.clone()),
        // A proxy that only allows GET: the query is retried with GET.
        Reply::text(405, "method not allowed"),
        Reply::json(200, answer),
        // A proxy's own failure page.
        Reply::text(502, "bad gateway"),
    ])
    .await?;
    let prom = PrometheusMetric {
        // A path prefix and a trailing slash, as behind a proxy.
        address: Some(format!("{}/prom/", fake.url())),
        query: Some("up == 1".into()),
        authentication: Some(PrometheusAuth {
            basic_auth: Some(BasicAuth {
                username: Some("admin".into()),
                password: Some("s3cret".into()),
            }),
            ..Default::default()
        }),
        headers: vec![WebMetricHeader {
            key: "X-Scope-OrgID".into(),
            value: "tenant-1".into(),
        }],
        ..Default::default()
    };
    let m = measure(&metric("result[0] > 0.9"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[0.97]"));
    assert_eq!(
        m.metadata.as_ref().map(|md| md[WARNINGS_KEY].as_str()),
        Some(r#""results may be partial""#)
    );

    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/prom/api/v1/query");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic YWRtaW46czNjcmV0") // admin:s3cret
    );
    assert_eq!(seen[0].header("x-scope-orgid"), Some("tenant-1"));
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        seen[0].body.starts_with("query=up+%3D%3D+1&time="),
        "{}",
        seen[0].body
    );

    let m = measure(&metric("result[0] > 0.9"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[2].method, "GET");
    assert!(
        seen[2]
            .path
            .starts_with("/prom/api/v1/query?query=up+%3D%3D+1&time="),
        "{}",
        seen[2].path
    );
    assert_eq!(
        seen[2].header("authorization"),
        Some("Basic YWRtaW46czNjcmV0")
    );

    let m = measure(&metric("true"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
    assert_eq!(
        m.message.as_deref(),
        Some("Prometheus answered 502 Bad Gateway without a JSON body: bad gateway")
    );
    Ok(())
}

#[tokio::test]
async fn a_range_query_asks_for_its_range_with_headers_and_a_get_fallback() -> Result<()> {
    let answer = json!({
        "status": "success",
        "data": {"resultType": "matrix", "result": [
            {"metric": {"job": "app"}, "values": [[1704164645, "0.97"], [1704164705, "0.98"]]}
        ]}
    });
    let fake = TestServer::start(vec![
        Reply::json(200, answer.clone()),
        Reply::text(405, "method not allowed"),
        Reply::json(200, answer),
    ])
    .await?;
    let prom = PrometheusMetric {
        address: Some(format!("{}/prom", fake.url())),
        query: Some("rate".into()),
        headers: vec![WebMetricHeader {
            key: "X-Scope-OrgID".into(),
            value: "tenant-1".into(),
        }],
        range_query: Some(PrometheusRangeQuery {
            start: Some(r#"date("2024-01-02T03:04:05Z")"#.into()),
            end: Some(r#"date("2024-01-02T03:04:05Z") + duration("1m")"#.into()),
            step: Some("1m".into()),
        }),
        ..Default::default()
    };
    let m = measure(&metric("all(result, {# > 0.95})"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("[0.97,0.98]"));
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/prom/api/v1/query_range");
    assert_eq!(seen[0].header("x-scope-orgid"), Some("tenant-1"));
    assert_eq!(
        seen[0].body,
        "query=rate&start=1704164645&end=1704164705&step=60"
    );

    let m = measure(&metric("all(result, {# > 0.95})"), &prom).await;
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].method, "GET");
    assert_eq!(
        seen[2].path,
        "/prom/api/v1/query_range?query=rate&start=1704164645&end=1704164705&step=60"
    );
    Ok(())
}
