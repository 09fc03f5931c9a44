//! Metric providers: each takes one measurement of a resolved metric (its
//! arguments, secrets included, already substituted) and returns it.

pub mod job;
pub mod prometheus;
pub mod web;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::analysis::{AnalysisPhase, Measurement, MetricProvider};

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

/// The name of the provider a metric uses, as in the spec.
pub fn name(p: &MetricProvider) -> &'static str {
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
    .find_map(|(set, name)| set.then_some(name))
    .unwrap_or("unknown")
}
