//! Metric providers: each takes one measurement of a resolved metric (its
//! arguments, secrets included, already substituted) and returns it.

pub mod job;
pub mod oauth2;
pub mod prometheus;
pub mod web;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use std::collections::BTreeMap;

use crate::analysis::condition::evaluate_value;
use crate::api::analysis::{AnalysisPhase, Measurement, Metric, MetricProvider};

/// A measurement that ended in an Error (as upstream's MarkMeasurementError).
pub fn error(started: Timestamp, message: impl Into<String>) -> Measurement {
    Measurement {
        phase: AnalysisPhase::Error,
        message: Some(message.into()),
        started_at: Some(Time(started)),
        finished_at: Some(Time(Timestamp::now())),
        value: None,
        metadata: None,
        resume_at: None,
    }
}

/// A finished measurement of `result` (shown in the status as `shown`),
/// its phase from the metric's conditions; a condition that cannot be
/// evaluated is an Error that still shows the value.
pub fn judged(
    metric: &Metric,
    result: &expr::Value,
    shown: String,
    metadata: Option<BTreeMap<String, String>>,
    started: Timestamp,
) -> Measurement {
    let mut m = match evaluate_value(metric, result) {
        Ok(phase) => Measurement {
            phase,
            message: None,
            started_at: Some(Time(started)),
            finished_at: Some(Time(Timestamp::now())),
            value: None,
            metadata: None,
            resume_at: None,
        },
        Err(e) => error(started, e.0),
    };
    m.value = Some(shown);
    m.metadata = metadata;
    m
}

/// An HTTP client for providers: rustls with ring (as kube), a whole-request
/// timeout, optionally without certificate checks (`insecure: true`).
pub fn http_client(
    timeout: std::time::Duration,
    insecure: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default crypto provider; install ring once
    // (a second install fails harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(insecure)
        .build()
}

/// The names of the providers a metric sets (exactly one is valid).
pub fn set(p: &MetricProvider) -> Vec<&'static str> {
    [
        (p.prometheus.is_some(), "prometheus"),
        (p.web.is_some(), "web"),
        (p.job.is_some(), "job"),
        (p.kayenta.is_some(), "kayenta"),
        (p.datadog.is_some(), "datadog"),
        (p.wavefront.is_some(), "wavefront"),
        (p.new_relic.is_some(), "newRelic"),
        (p.cloud_watch.is_some(), "cloudWatch"),
        (p.graphite.is_some(), "graphite"),
        (p.influxdb.is_some(), "influxdb"),
        (p.skywalking.is_some(), "skywalking"),
        (p.plugin.is_some(), "plugin"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}
