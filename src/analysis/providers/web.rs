//! The web provider: one HTTP request per measurement; the JSON response (or,
//! if it is not JSON, the body as a string) is narrowed by `jsonPath` (first
//! match) and judged by the metric's conditions.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{error, http_client, judged};
use crate::analysis::condition::to_expr;
use crate::api::analysis::{Measurement, Metric, PrometheusAuth, WebMetric};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn measure(metric: &Metric, web: &WebMetric) -> Measurement {
    let started = Timestamp::now();
    match request(web).await {
        Ok(body) => judge(metric, web, &body, started),
        Err(message) => error(started, message),
    }
}

/// Sends the request; the body of a 2xx response, or why there is none.
async fn request(web: &WebMetric) -> Result<String, String> {
    let method = web
        .method
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or("GET");
    let has_body = web.body.as_deref().is_some_and(|b| !b.is_empty());
    if has_body && web.json_body.is_some() {
        return Err("use either Body or JSONBody; both cannot exists for WebMetric payload".into());
    }
    if (has_body || web.json_body.is_some()) && method == "GET" {
        return Err(
            "Body/JSONBody can only be used with POST or PUT WebMetric Method types".into(),
        );
    }
    let method = match method {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        other => {
            return Err(format!(
                "unsupported method {other:?}: use GET, POST or PUT"
            ));
        }
    };
    let timeout = web
        .timeout_seconds
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.unsigned_abs()));
    let client = http_client(timeout, web.insecure).map_err(|e| e.to_string())?;
    let mut req = client.request(method, &web.url);
    if let Some(auth) = &web.authentication {
        req = authenticate(&client, req, auth).await?;
    }
    for h in &web.headers {
        req = req.header(&h.key, &h.value);
    }
    if let Some(json) = &web.json_body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json.to_string());
    } else if has_body {
        req = req.body(web.body.clone().unwrap_or_default());
    }
    let resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "received non 2xx response code: {}",
            status.as_u16()
        ));
    }
    resp.text()
        .await
        .map_err(|e| format!("Received no bytes in response: {}", describe(&e)))
}

/// Upstream's OAuth2 client credentials (a Bearer token per measurement),
/// and basicAuth; SigV4 is refused rather than skipped.
async fn authenticate(
    client: &reqwest::Client,
    req: reqwest::RequestBuilder,
    auth: &PrometheusAuth,
) -> Result<reqwest::RequestBuilder, String> {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if let Some(s) = &auth.sigv4
        && (set(&s.region) || set(&s.profile) || set(&s.role_arn))
    {
        return Err("web sigv4 authentication is not supported: use oauth2, basicAuth or an Authorization header".into());
    }
    if let Some(cfg) = &auth.oauth2 {
        if super::oauth2::configured(Some(cfg)) {
            let value = super::oauth2::authorization(client, cfg).await?;
            return Ok(req.header(reqwest::header::AUTHORIZATION, value));
        }
        if set(&cfg.client_id) || set(&cfg.client_secret) {
            return Err("missing mandatory parameter in metric for OAuth2 setup".into());
        }
    }
    if let Some(basic) = &auth.basic_auth
        && (set(&basic.username) || set(&basic.password))
    {
        return Ok(req.basic_auth(
            basic.username.clone().unwrap_or_default(),
            basic.password.clone(),
        ));
    }
    Ok(req)
}

/// reqwest's error with its causes ("error sending request: connection
/// refused"), which is what a user needs to see.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn judge(metric: &Metric, web: &WebMetric, body: &str, started: Timestamp) -> Measurement {
    let (value, shown) = match serde_json::from_str::<Value>(body) {
        Ok(doc) => match select(web.json_path.as_deref(), &doc) {
            Ok(v) => {
                let shown = v.to_string();
                (v, shown)
            }
            Err(message) => return error(started, message),
        },
        // Not JSON: the body itself, as a string.
        Err(_) => (Value::String(body.to_string()), body.to_string()),
    };
    judged(metric, &to_expr(&value), shown, None, started)
}

/// The first match of a Kubernetes-style jsonPath (`{$.data.ok}`, default
/// `{$}`) in the document.
pub fn select(path: Option<&str>, doc: &Value) -> Result<Value, String> {
    let path = path
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("{$}");
    let inner = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path)
        .trim();
    let inner = if inner.starts_with('.') || inner.starts_with('[') {
        format!("${inner}")
    } else {
        inner.to_string()
    };
    let parsed = serde_json_path::JsonPath::parse(&inner)
        .map_err(|e| format!("Could not find JSONPath in body: invalid jsonPath {path:?}: {e}"))?;
    parsed
        .query(doc)
        .first()
        .cloned()
        .ok_or_else(|| "result of web metric produced no value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::{AnalysisPhase, WebMetricHeader};
    use crate::testing::{Reply, TestServer};
    use serde_json::json;

    fn metric(success: Option<&str>) -> Metric {
        Metric {
            name: "web".into(),
            success_condition: success.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn json_path_takes_the_first_match() {
        let doc = json!({"data": {"items": [{"v": 0.97}, {"v": 0.1}], "ok": true}});
        assert_eq!(select(None, &doc), Ok(doc.clone()));
        assert_eq!(select(Some("{$.data.ok}"), &doc), Ok(json!(true)));
        assert_eq!(select(Some("{.data.items[*].v}"), &doc), Ok(json!(0.97)));
        assert_eq!(
            select(Some("{$.data.missing}"), &doc),
            Err("result of web metric produced no value".into())
        );
        assert!(select(Some("{$.[}"), &doc).is_err());
    }

    #[tokio::test]
    async fn measures_against_a_real_server() {
        let server = TestServer::start(vec![
            Reply::json(200, json!({"data": {"ok": true, "rate": 0.99}})),
            Reply::json(200, json!({"data": {"ok": true, "rate": 0.5}})),
            Reply::text(503, "down"),
            Reply::text(200, "healthy"),
        ])
        .await
        .unwrap();
        let web = WebMetric {
            url: format!("{}/check?svc=a", server.url()),
            headers: vec![WebMetricHeader {
                key: "X-Token".into(),
                value: "t0k".into(),
            }],
            json_path: Some("{$.data.rate}".into()),
            ..Default::default()
        };
        let m = metric(Some("result > 0.9"));
        let first = measure(&m, &web).await;
        assert_eq!(first.phase, AnalysisPhase::Successful, "{first:?}");
        assert_eq!(first.value.as_deref(), Some("0.99"));
        assert!(first.finished_at.is_some());
        let second = measure(&m, &web).await;
        assert_eq!(second.phase, AnalysisPhase::Failed);
        let third = measure(&m, &web).await;
        assert_eq!(third.phase, AnalysisPhase::Error);
        assert_eq!(
            third.message.as_deref(),
            Some("received non 2xx response code: 503")
        );
        let text = measure(&metric(Some("result == \"healthy\"")), &web).await;
        assert_eq!(text.phase, AnalysisPhase::Successful, "{text:?}");

        let seen = server.requests();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/check?svc=a");
        assert_eq!(seen[0].header("x-token"), Some("t0k"));
    }

    #[tokio::test]
    async fn posts_json_bodies_and_reports_connection_errors() {
        let server = TestServer::start(vec![Reply::json(200, json!({"ok": true}))])
            .await
            .unwrap();
        let web = WebMetric {
            url: server.url(),
            method: Some("POST".into()),
            json_body: Some(json!({"q": "x"})),
            json_path: Some("{$.ok}".into()),
            ..Default::default()
        };
        let ok = measure(&metric(Some("result == true")), &web).await;
        assert_eq!(ok.phase, AnalysisPhase::Successful, "{ok:?}");
        let seen = server.requests();
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert_eq!(seen[0].body, r#"{"q":"x"}"#);

        let get_with_body = WebMetric {
            method: None,
            ..web.clone()
        };
        let e = measure(&metric(None), &get_with_body).await;
        assert_eq!(
            e.message.as_deref(),
            Some("Body/JSONBody can only be used with POST or PUT WebMetric Method types")
        );

        drop(server);
        let closed = WebMetric {
            url: "http://127.0.0.1:1/".into(),
            ..Default::default()
        };
        let e = measure(&metric(None), &closed).await;
        assert_eq!(e.phase, AnalysisPhase::Error);
        assert!(
            e.message
                .as_deref()
                .unwrap_or_default()
                .contains("Connection refused")
                || e.message.as_deref().unwrap_or_default().contains("connect"),
            "{e:?}"
        );
    }
}
