//! The Prometheus provider: one query per measurement, an instant query at
//! "now", or a range query when the metric sets `rangeQuery` (its start and
//! end are expressions such as `now() - duration("1h")`). A scalar result is
//! judged as a number, a vector as a list of numbers (one per series, in
//! Prometheus' order; an empty vector is an empty list), a matrix as the list
//! of every sample of every series, series by series, as upstream.
//! Prometheus' warnings go into the measurement's metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use prometheus_http_query::response::Data;
use prometheus_http_query::{InstantQueryBuilder, RangeQueryBuilder};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{error, http_client, judged};
use crate::analysis::condition::eval_time;
use crate::api::analysis::{Measurement, Metric, PrometheusMetric, PrometheusRangeQuery};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Upstream's fallback when a metric names no address.
pub const ADDRESS_ENV: &str = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS";

/// The measurement metadata key for Prometheus' warnings (upstream's).
pub const WARNINGS_KEY: &str = "warnings";

pub async fn measure(metric: &Metric, prom: &PrometheusMetric) -> Measurement {
    let started = Timestamp::now();
    let env = std::env::var(ADDRESS_ENV).ok();
    match query(prom, env.as_deref()).await {
        Ok(answer) => judge(metric, answer, started),
        Err(message) => error(started, message),
    }
}

/// A query's result, as far as analysis can judge one.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    Scalar(f64),
    /// One value per series.
    Vector(Vec<f64>),
    /// Every sample of every series, series by series (a range query's
    /// answer, or an instant query of a range selector such as `up[5m]`).
    Matrix(Vec<f64>),
}

/// A range query's bounds, as Prometheus is asked for them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Unix seconds.
    pub start: i64,
    /// Unix seconds.
    pub end: i64,
    /// Seconds.
    pub step: f64,
}

/// Evaluates `rangeQuery`: start and end as expressions yielding a time,
/// step as a Go duration string. The errors are upstream's.
pub fn range(q: &PrometheusRangeQuery) -> Result<Range, String> {
    let time = |what: &str, expression: &Option<String>| {
        eval_time(expression.as_deref().unwrap_or_default())
            .map_err(|e| format!("failed to parse rangeQuery.{what} as time: {e}"))
    };
    let start = time("start", &q.start)?;
    let end = time("end", &q.end)?;
    let step = go_duration(q.step.as_deref().unwrap_or_default())
        .map_err(|e| format!("failed to parse rangeQuery.step as duration: {e}"))?;
    // As Go's Duration.Seconds: whole seconds plus the nanoseconds left.
    let step = (step / 1_000_000_000) as f64 + (step % 1_000_000_000) as f64 / 1e9;
    // The crate sends whole seconds; Prometheus aligns the points to the
    // start, so only a sub-second shift of the whole range is lost.
    Ok(Range {
        start: start.as_second(),
        end: end.as_second(),
        step,
    })
}

/// Go's `time.ParseDuration` (upstream parses `step` with it): a signed
/// sequence of decimal numbers, each with a unit (ns, us, µs, ms, s, m, h);
/// "0" needs none. Nanoseconds, or Go's error message.
pub fn go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u128 = 1 << 63;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(a) => {
                let (f, after) = a.split_at(digits(a));
                (Some(f), after)
            }
            None => (None, after),
        };
        if whole.is_empty() && fraction.is_none_or(str::is_empty) {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        if let Some(f) = fraction.filter(|f| !f.is_empty()) {
            // Digits past what an f64 holds change nothing.
            let f = &f[..f.len().min(18)];
            let digits: f64 = f.parse().map_err(|_| invalid())?;
            let part = digits * (scale as f64 / 10f64.powi(f.len() as i32));
            value += part as u128;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > LIMIT {
            return Err(invalid());
        }
        rest = after;
    }
    if negative {
        // -(1 << 63) is i64::MIN itself.
        Ok(i64::try_from(total).map_or(i64::MIN, |t| -t))
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// What Prometheus answered to a successful query.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub result: Result<QueryResult, String>,
    pub warnings: Vec<String>,
}

/// Sends the query; Prometheus' answer, or why there is none.
async fn query(prom: &PrometheusMetric, env_address: Option<&str>) -> Result<Answer, String> {
    let address = address(prom.address.as_deref(), env_address)?;
    let promql = prom
        .query
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .ok_or("prometheus query is not configured")?;
    let timeout = match prom.timeout {
        Some(s) if s < 0 => return Err("prometheus timeout should not be negative".into()),
        Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()),
        _ => DEFAULT_TIMEOUT,
    };
    let mut headers = headers(prom)?;
    // Evaluated before anything is sent, so a bad range costs no request.
    let range = prom.range_query.as_ref().map(range).transpose()?;
    let client = http_client(timeout, prom.insecure).map_err(|e| chain(&e))?;
    let oauth = prom.authentication.as_ref().and_then(|a| a.oauth2.as_ref());
    if let Some(cfg) = oauth.filter(|c| super::oauth2::configured(Some(c))) {
        headers.insert(
            AUTHORIZATION,
            super::oauth2::authorization(&client, cfg).await?,
        );
    }
    let client = prometheus_http_query::Client::from(client, address).map_err(|e| chain(&e))?;
    let mut request = match range {
        Some(r) => Request::Range(client.query_range(promql, r.start, r.end, r.step)),
        None => {
            let now = Timestamp::now().as_millisecond();
            Request::Instant(client.query(promql).query(
                "time",
                format!("{}.{:03}", now.div_euclid(1000), now.rem_euclid(1000)),
            ))
        }
    };
    for (name, value) in &headers {
        request = request.header(name.clone(), value.clone());
    }
    // As Prometheus' Go client: a form POST, and GET where POST is refused.
    let mut response = request.send(true).await.map_err(|e| chain(&e))?;
    if matches!(response.status().as_u16(), 405 | 501) {
        response = request.send(false).await.map_err(|e| chain(&e))?;
    }
    let status = response.status();
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == "application/json");
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the response from Prometheus: {}", chain(&e)))?;
    // An API error (bad PromQL, a timeout) comes with a 4xx/5xx status and
    // speaks for itself; anything else unparsable names the status too.
    let envelope = envelope(&body).map_err(|e| {
        if !json {
            format!(
                "Prometheus answered {status} without a JSON body: {}",
                snippet(&body)
            )
        } else if status.is_success() {
            e
        } else {
            format!("Prometheus answered {status}: {e}")
        }
    })?;
    answer(envelope)
}

/// An instant or a range query, ready to send.
enum Request {
    Instant(InstantQueryBuilder),
    Range(RangeQueryBuilder),
}

impl Request {
    fn header(self, name: HeaderName, value: HeaderValue) -> Self {
        match self {
            Request::Instant(r) => Request::Instant(r.header(name, value)),
            Request::Range(r) => Request::Range(r.header(name, value)),
        }
    }

    /// A form POST, or a GET.
    async fn send(&self, post: bool) -> Result<reqwest::Response, prometheus_http_query::Error> {
        match (self, post) {
            (Request::Instant(r), true) => r.clone().post_raw().await,
            (Request::Instant(r), false) => r.clone().get_raw().await,
            (Request::Range(r), true) => r.clone().post_raw().await,
            (Request::Range(r), false) => r.clone().get_raw().await,
        }
    }
}

/// The metric's address, else the controller's environment; trailing `/`
/// trimmed so the API path joins cleanly.
fn address<'a>(metric: Option<&'a str>, env: Option<&'a str>) -> Result<&'a str, String> {
    let raw = metric
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .or_else(|| env.map(str::trim).filter(|a| !a.is_empty()))
        .ok_or_else(|| {
            format!("prometheus address is not configured (set provider.prometheus.address or {ADDRESS_ENV})")
        })?;
    let has_host = raw
        .split_once("://")
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
    if !has_host {
        return Err(format!(
            "prometheus address {raw:?} is not a URL (expected e.g. http://prometheus:9090)"
        ));
    }
    Ok(raw.trim_end_matches('/'))
}

/// Basic auth and the metric's headers (a header named like one set before
/// replaces it). SigV4 is refused rather than silently skipped; an OAuth2
/// token is added by `query`.
fn headers(prom: &PrometheusMetric) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    if let Some(auth) = &prom.authentication {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        if let Some(o) = &auth.oauth2
            && !super::oauth2::configured(Some(o))
            && (set(&o.client_id) || set(&o.client_secret))
        {
            return Err("missing mandatory parameter in metric for OAuth2 setup".into());
        }
        if let Some(s) = &auth.sigv4
            && (set(&s.region) || set(&s.profile) || set(&s.role_arn))
        {
            return Err("prometheus sigv4 authentication is not supported: use basicAuth or an Authorization header".into());
        }
        if let Some(basic) = &auth.basic_auth
            && (set(&basic.username) || set(&basic.password))
        {
            let credentials = format!(
                "{}:{}",
                basic.username.as_deref().unwrap_or_default(),
                basic.password.as_deref().unwrap_or_default()
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|e| format!("invalid basicAuth credentials: {e}"))?;
            value.set_sensitive(true);
            out.insert(AUTHORIZATION, value);
        }
    }
    for h in &prom.headers {
        let name = HeaderName::from_bytes(h.key.as_bytes())
            .map_err(|e| format!("invalid header name {:?}: {e}", h.key))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|e| format!("invalid value for header {:?}: {e}", h.key))?;
        out.insert(name, value);
    }
    Ok(out)
}

/// The API's envelope: `{"status":"success","data":{...},"warnings":[...]}`
/// or `{"status":"error","errorType":"bad_data","error":"..."}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    data: Option<serde_json::Value>,
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// Parses a query response body. Err for an error response (worded as
/// Prometheus' Go client does: "bad_data: ...") or one that is not the API's
/// JSON; an answer whose result type analysis cannot judge carries an Err
/// result.
pub fn parse(body: &str) -> Result<Answer, String> {
    answer(envelope(body)?)
}

fn envelope(body: &str) -> Result<Envelope, String> {
    serde_json::from_str(body).map_err(|e| {
        format!(
            "could not parse the Prometheus response: {e}: {}",
            snippet(body)
        )
    })
}

fn answer(envelope: Envelope) -> Result<Answer, String> {
    if envelope.status != "success" {
        return Err(format!(
            "{}: {}",
            envelope.error_type.as_deref().unwrap_or("error"),
            envelope
                .error
                .as_deref()
                .unwrap_or("Prometheus reported an error without a message")
        ));
    }
    let data = envelope
        .data
        .ok_or("the Prometheus response has no data".to_string())?;
    let kind = data.get("resultType").and_then(|t| t.as_str());
    let result = match kind {
        Some("scalar" | "vector" | "matrix") => match serde_json::from_value::<Data>(data) {
            Ok(Data::Scalar(s)) => Ok(QueryResult::Scalar(s.value())),
            Ok(Data::Vector(v)) => Ok(QueryResult::Vector(
                v.iter().map(|s| s.sample().value()).collect(),
            )),
            Ok(Data::Matrix(m)) => Ok(QueryResult::Matrix(
                m.iter()
                    .flat_map(|series| series.samples().iter().map(|s| s.value()))
                    .collect(),
            )),
            Err(e) => return Err(format!("could not parse the Prometheus result: {e}")),
        },
        _ => Err("Prometheus metric type not supported".to_string()),
    };
    Ok(Answer {
        result,
        warnings: envelope.warnings,
    })
}

/// The measurement for an answer: the value as upstream shows it (`10`,
/// `[0.5,1]`, `NaN`, `+Inf`) and the phase from the metric's conditions.
pub fn judge(metric: &Metric, answer: Answer, started: Timestamp) -> Measurement {
    let (shown, result) = match answer.result {
        Ok(QueryResult::Scalar(v)) => (format_value(v), expr::Value::Float(v)),
        Ok(QueryResult::Vector(vs) | QueryResult::Matrix(vs)) => (
            format!(
                "[{}]",
                vs.iter()
                    .map(|v| format_value(*v))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            expr::Value::Array(vs.into_iter().map(expr::Value::Float).collect()),
        ),
        Err(message) => return error(started, message),
    };
    let metadata = (!answer.warnings.is_empty()).then(|| {
        let joined = answer
            .warnings
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(", ");
        BTreeMap::from([(WARNINGS_KEY.to_string(), joined)])
    });
    judged(metric, &result, shown, metadata, started)
}

/// A sample value as Prometheus (Go's FormatFloat 'f', -1) writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's Display is the shortest round-trip form without exponent,
        // as Go's 'f' with precision -1.
        v.to_string()
    }
}

/// An error with its causes ("failed to send request to server: error
/// sending request for url (...): ...: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The start of a body, for error messages.
fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::AnalysisPhase;
    use serde_json::json;

    fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
        Metric {
            name: "prom".into(),
            success_condition: success.map(Into::into),
            failure_condition: failure.map(Into::into),
            ..Default::default()
        }
    }

    fn answer(result: QueryResult) -> Answer {
        Answer {
            result: Ok(result),
            warnings: vec![],
        }
    }

    fn vector(values: &[&str]) -> String {
        let result: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"metric": {"i": i.to_string()}, "value": [1700000000.5, v]}))
            .collect();
        json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
    }

    #[test]
    fn values_read_as_prometheus_writes_them() {
        assert_eq!(format_value(10.0), "10");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-0.25), "-0.25");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn parses_scalars_vectors_and_special_values() {
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000.5, "0.75"]}});
        assert_eq!(
            parse(&scalar.to_string()),
            Ok(answer(QueryResult::Scalar(0.75)))
        );
        let v = parse(&vector(&["0.5", "1", "NaN", "+Inf", "-Inf"]))
            .unwrap()
            .result
            .unwrap();
        let QueryResult::Vector(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(&v[..2], &[0.5, 1.0]);
        assert!(v[2].is_nan());
        assert_eq!(&v[3..], &[f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(parse(&vector(&[])), Ok(answer(QueryResult::Vector(vec![]))));
    }

    #[test]
    fn other_result_types_and_errors() {
        let unsupported = Err("Prometheus metric type not supported".to_string());
        let string =
            json!({"status": "success", "data": {"resultType": "string", "result": [1.5, "x"]}});
        assert_eq!(parse(&string.to_string()).unwrap().result, unsupported);

        let bad = json!({"status": "error", "errorType": "bad_data", "error": "invalid parameter \"query\": 1:5: parse error: unexpected end of input"});
        assert_eq!(
            parse(&bad.to_string()),
            Err(
                "bad_data: invalid parameter \"query\": 1:5: parse error: unexpected end of input"
                    .into()
            )
        );
        let err = parse("<html>oops</html>").unwrap_err();
        assert!(
            err.starts_with("could not parse the Prometheus response"),
            "{err}"
        );

        let warned = json!({"status": "success", "warnings": ["w1", "w2"], "data": {"resultType": "scalar", "result": [1.5, "10"]}});
        let a = parse(&warned.to_string()).unwrap();
        assert_eq!(a.warnings, ["w1", "w2"]);
        let m = judge(&metric(Some("result == 10"), None), a, Timestamp::now());
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.metadata.unwrap()[WARNINGS_KEY], r#""w1", "w2""#);
    }

    #[test]
    fn a_matrix_is_every_sample_of_every_series_in_order() {
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"code": "200"}, "values": [[1700000000, "99"], [1700000060, "98.5"]]},
            {"metric": {"code": "500"}, "values": [[1700000000, "1"], [1700000060, "NaN"]]}
        ]}});
        let a = parse(&matrix.to_string()).unwrap();
        let Ok(QueryResult::Matrix(values)) = &a.result else {
            panic!("{a:?}")
        };
        assert_eq!(values[..3], [99.0, 98.5, 1.0]);
        assert!(values[3].is_nan());
        // NaN < 1000 is false, as in Go.
        let m = judge(
            &metric(Some("all(result, {# < 1000})"), None),
            a.clone(),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[99,98.5,1,NaN]"));
        let m = judge(
            &metric(Some("all(result, {isNaN(#) || # < 1000})"), None),
            a,
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");

        let no_series =
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        let a = parse(&no_series.to_string()).unwrap();
        assert_eq!(a.result, Ok(QueryResult::Matrix(vec![])));
        let m = judge(
            &metric(Some("all(result, {# < 1000})"), None),
            a,
            Timestamp::now(),
        );
        // An empty list passes all(), as upstream's.
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[]"));
    }

    #[test]
    fn durations_as_go_parses_them() {
        const S: i64 = 1_000_000_000;
        let ok = [
            ("0", 0),
            ("-0", 0),
            ("1m", 60 * S),
            ("+5s", 5 * S),
            ("-1s", -S),
            ("300ms", 300_000_000),
            ("1h30m", 5400 * S),
            ("1.5h", 5400 * S),
            (".5s", S / 2),
            ("1.s", S),
            ("2us", 2_000),
            ("2\u{b5}s", 2_000),
            ("2\u{3bc}s", 2_000),
            ("7ns", 7),
            ("1m0.000000001s", 60 * S + 1),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ];
        for (text, want) in ok {
            assert_eq!(go_duration(text), Ok(want), "{text}");
        }
        let err = |text: &str| go_duration(text).unwrap_err();
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("-"), r#"time: invalid duration "-""#);
        assert_eq!(err("s"), r#"time: invalid duration "s""#);
        assert_eq!(err(".s"), r#"time: invalid duration ".s""#);
        assert_eq!(
            err("1h-5m"),
            r#"time: unknown unit "h-" in duration "1h-5m""#
        );
        assert_eq!(err("30"), r#"time: missing unit in duration "30""#);
        assert_eq!(err("1d"), r#"time: unknown unit "d" in duration "1d""#);
        assert_eq!(
            err("9223372036854775808ns"),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(err("3000000h"), r#"time: invalid duration "3000000h""#);
    }

    fn range_query(start: &str, end: &str, step: &str) -> PrometheusRangeQuery {
        PrometheusRangeQuery {
            start: Some(start.into()),
            end: Some(end.into()),
            step: Some(step.into()),
        }
    }

    #[test]
    fn range_bounds_are_expressions_and_the_step_a_duration() {
        let r = range(&range_query(r#"now() - duration("1h")"#, "now()", "1m")).unwrap();
        let now = Timestamp::now().as_second();
        assert!((now - 2..=now).contains(&r.end), "{r:?} {now}");
        assert!((3599..=3601).contains(&(r.end - r.start)), "{r:?}");
        assert_eq!(r.step, 60.0);

        let r = range(&range_query(
            r#"date("2024-01-02T03:04:05Z")"#,
            r#"date("2024-01-02T03:04:05Z") + duration("90s")"#,
            "1.5s",
        ))
        .unwrap();
        assert_eq!(
            r,
            Range {
                start: 1_704_164_645,
                end: 1_704_164_735,
                step: 1.5
            }
        );
        assert_eq!(
            range(&range_query("now()", "now()", "1ns")).unwrap().step,
            1e-9
        );
        // A negative step is Prometheus' to refuse, as upstream.
        assert_eq!(
            range(&range_query("now()", "now()", "-1m")).unwrap().step,
            -60.0
        );
    }

    #[test]
    fn bad_range_queries_are_upstreams_errors() {
        let err = |q: PrometheusRangeQuery| range(&q).unwrap_err();
        assert_eq!(
            err(range_query("1", "now()", "1m")),
            "failed to parse rangeQuery.start as time: expected time.Time, but got int"
        );
        assert_eq!(
            err(range_query("now()", r#"duration("1h")"#, "1m")),
            "failed to parse rangeQuery.end as time: expected time.Time, but got time.Duration"
        );
        let e = err(range_query("now()", "now() -", "1m"));
        assert!(
            e.starts_with("failed to parse rangeQuery.end as time: "),
            "{e}"
        );
        let e = err(range_query(r#"now() - duration("1d")"#, "now()", "1m"));
        assert!(
            e.starts_with("failed to parse rangeQuery.start as time: "),
            "{e}"
        );
        assert_eq!(
            err(range_query("now()", "now()", "60")),
            r#"failed to parse rangeQuery.step as duration: time: missing unit in duration "60""#
        );
        let missing = PrometheusRangeQuery {
            step: None,
            ..range_query("now()", "now()", "1m")
        };
        assert_eq!(
            err(missing),
            r#"failed to parse rangeQuery.step as duration: time: invalid duration """#
        );
        let missing = PrometheusRangeQuery {
            start: None,
            ..range_query("now()", "now()", "1m")
        };
        assert!(err(missing).starts_with("failed to parse rangeQuery.start as time: "),);
    }

    #[test]
    fn scalar_and_vector_results_as_upstream() {
        let m = judge(
            &metric(Some("result == 10"), Some("result != 10")),
            answer(QueryResult::Scalar(10.0)),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("10"));
        assert!(m.started_at.is_some() && m.finished_at.is_some());
        assert_eq!(m.metadata, None);

        let m = judge(
            &metric(Some("10 in result"), Some("len(result) != 2")),
            answer(QueryResult::Vector(vec![10.0, 11.0])),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[10,11]"));

        let m = judge(
            &metric(Some("result[0] >= 0.95"), None),
            answer(QueryResult::Vector(vec![0.5, 1.0])),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[0.5,1]"));
    }

    #[test]
    fn an_empty_vector_is_an_empty_list() {
        let empty = || answer(QueryResult::Vector(vec![]));
        let m = judge(
            &metric(Some("result[0] > 1"), None),
            empty(),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[]"));
        assert!(
            m.message
                .as_deref()
                .unwrap_or_default()
                .contains("no data returned from the metric provider"),
            "{m:?}"
        );
        let m = judge(
            &metric(Some("len(result) == 0 || result[0] > 1"), None),
            empty(),
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[]"));
    }

    #[test]
    fn nan_and_inf_as_upstream() {
        let nan = || answer(QueryResult::Scalar(f64::NAN));
        let phase = |s, f, a| judge(&metric(s, f), a, Timestamp::now());
        let m = phase(Some("result >= 0.9"), Some("result < 0.9"), nan());
        assert_eq!(m.phase, AnalysisPhase::Inconclusive, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("NaN"));
        let m = phase(Some("result >= 0.9 || isNaN(result)"), None, nan());
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        let m = phase(Some("result >= 0.9"), None, nan());
        assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");

        let inf = || answer(QueryResult::Scalar(f64::INFINITY));
        let m = phase(Some("result >= 0.9"), None, inf());
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("+Inf"));
        let m = phase(None, Some("isInf(result)"), inf());
        assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");

        let m = phase(
            Some("all(result, {isNaN(#) || # > 0})"),
            None,
            answer(QueryResult::Vector(vec![f64::NAN, 1.0])),
        );
        assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
        assert_eq!(m.value.as_deref(), Some("[NaN,1]"));
    }

    #[test]
    fn unsupported_results_are_errors() {
        let m = judge(
            &metric(Some("true"), None),
            Answer {
                result: Err("Prometheus metric type not supported".into()),
                warnings: vec!["ignored".into()],
            },
            Timestamp::now(),
        );
        assert_eq!(m.phase, AnalysisPhase::Error);
        assert_eq!(
            m.message.as_deref(),
            Some("Prometheus metric type not supported")
        );
        assert_eq!(m.value, None);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address(Some("http://prom:9090/"), None),
            Ok("http://prom:9090")
        );
        assert_eq!(
            address(Some(" "), Some("http://env:9090")),
            Ok("http://env:9090")
        );
        assert_eq!(
            address(Some("http://a"), Some("http://env:9090")),
            Ok("http://a")
        );
        assert!(
            address(None, None)
                .unwrap_err()
                .starts_with("prometheus address is not configured")
        );
        assert!(address(Some("prom:9090"), None).is_err());
    }

    async fn error_message(p: &PrometheusMetric) -> String {
        let got = measure(&metric(None, None), p).await;
        assert_eq!(got.phase, AnalysisPhase::Error, "{got:?}");
        assert!(got.finished_at.is_some());
        got.message.unwrap_or_default()
    }

    #[tokio::test]
    async fn configuration_errors_are_error_measurements() {
        use crate::api::analysis::{OAuth2Config, PrometheusAuth, Sigv4Config, WebMetricHeader};
        let base = PrometheusMetric {
            address: Some("http://127.0.0.1:1".into()),
            query: Some("up".into()),
            ..Default::default()
        };
        let no_query = PrometheusMetric {
            query: None,
            ..base.clone()
        };
        assert_eq!(
            error_message(&no_query).await,
            "prometheus query is not configured"
        );
        let negative = PrometheusMetric {
            timeout: Some(-1),
            ..base.clone()
        };
        assert_eq!(
            error_message(&negative).await,
            "prometheus timeout should not be negative"
        );
        let oauth = PrometheusMetric {
            authentication: Some(PrometheusAuth {
                oauth2: Some(OAuth2Config {
                    token_url: Some("http://127.0.0.1:1/token".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..base.clone()
        };
        // A token URL without the client: upstream's message.
        assert_eq!(
            error_message(&oauth).await,
            "missing mandatory parameter in metric for OAuth2 setup"
        );
        let sigv4 = PrometheusMetric {
            authentication: Some(PrometheusAuth {
                sigv4: Some(Sigv4Config {
                    region: Some("eu-west-1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..base.clone()
        };
        assert!(
            error_message(&sigv4)
                .await
                .contains("sigv4 authentication is not supported")
        );
        // A bad range is found before anything is sent (nothing listens
        // on port 1, so a request would fail differently).
        let bad_range = PrometheusMetric {
            range_query: Some(PrometheusRangeQuery {
                start: Some("now()".into()),
                end: Some("now()".into()),
                step: Some("1x".into()),
            }),
            ..base.clone()
        };
        assert_eq!(
            error_message(&bad_range).await,
            r#"failed to parse rangeQuery.step as duration: time: unknown unit "x" in duration "1x""#
        );
        let bad_header = PrometheusMetric {
            headers: vec![WebMetricHeader {
                key: "Bad Name".into(),
                value: "x".into(),
            }],
            ..base.clone()
        };
        assert!(
            error_message(&bad_header)
                .await
                .starts_with("invalid header name \"Bad Name\"")
        );
    }
}
