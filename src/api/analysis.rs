//! AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun
//! (`argoproj.io/v1alpha1`), field for field as Argo Rollouts serves them.
// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{
    AnalysisTemplateRef, DryRun, FieldRef, MeasurementRetention, is_default, is_none_or_default,
    opaque_object,
};

/// Metrics and arguments of an analysis, reusable by Rollouts.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    plural = "analysistemplates",
    shortname = "at",
    namespaced,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since resource was created"
    )
)]
#[kube(derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Other templates whose metrics and args are merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
}

/// The cluster-scoped twin of AnalysisTemplate (same spec).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    plural = "clusteranalysistemplates",
    shortname = "cat",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since resource was created"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// One execution of an analysis.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "AnalysisRun",
    plural = "analysisruns",
    shortname = "ar",
    namespaced,
    status = "AnalysisRunStatus",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "AnalysisRun status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since resource was created"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    pub ttl_strategy: Option<TtlStrategy>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtlStrategy {
    pub seconds_after_completion: Option<i32>,
    pub seconds_after_failure: Option<i32>,
    pub seconds_after_success: Option<i32>,
}

/// A template or run argument, substituted as `{{args.NAME}}`.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    pub secret_key_ref: Option<SecretKeyRef>,
    pub field_ref: Option<FieldRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// One metric: how often to measure, what counts as success, which provider.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub name: String,
    /// Duration string between measurements ("30s").
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub initial_delay: Option<String>,
    pub count: Option<IntOrString>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub success_condition: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub failure_condition: Option<String>,
    /// Default 0; -1 disables.
    pub failure_limit: Option<IntOrString>,
    /// Default 0.
    pub inconclusive_limit: Option<IntOrString>,
    /// Default 4.
    pub consecutive_error_limit: Option<IntOrString>,
    /// Default 0 (off).
    pub consecutive_success_limit: Option<IntOrString>,
    #[serde(default)]
    pub provider: MetricProvider,
}

/// Exactly one provider is set.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    pub prometheus: Option<PrometheusMetric>,
    pub web: Option<WebMetric>,
    pub job: Option<JobMetric>,
    // Providers accepted so Argo templates apply, not implemented.
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub kayenta: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub datadog: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub wavefront: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub new_relic: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub cloud_watch: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub graphite: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub influxdb: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub skywalking: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub plugin: Option<serde_json::Value>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub query: Option<String>,
    pub authentication: Option<PrometheusAuth>,
    /// Seconds (default 30).
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    /// Run the query over a time range instead of at one instant.
    pub range_query: Option<PrometheusRangeQuery>,
}

/// A range query's bounds and resolution (upstream's
/// `PrometheusRangeQueryArgs`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRangeQuery {
    /// The start of the range, an expression that yields a time, such as
    /// `now() - duration("1h")`.
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub start: Option<String>,
    /// The end of the range, an expression such as `now()`.
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub end: Option<String>,
    /// The time between two points of the range, a duration string such
    /// as "30s", "5m", "1h".
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub step: Option<String>,
}

/// How a provider authenticates (upstream's `Authentication`, plus
/// `basicAuth`): used by the prometheus and web providers.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAuth {
    pub sigv4: Option<Sigv4Config>,
    pub oauth2: Option<OAuth2Config>,
    pub basic_auth: Option<BasicAuth>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sigv4Config {
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub role_arn: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Config {
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetric {
    /// GET | POST | PUT (default GET).
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub method: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub body: Option<String>,
    /// Default 10.
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub timeout_seconds: Option<i64>,
    /// Default `{$}`.
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub json_path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default)]
    #[schemars(schema_with = "any_json")]
    pub json_body: Option<serde_json::Value>,
    /// Upstream's `oauth2` (client credentials) and `sigv4` (refused: not
    /// implemented), and, beyond upstream, `basicAuth`.
    pub authentication: Option<PrometheusAuth>,
}

/// `jsonBody` is any JSON value (object, array, scalar).
fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetricHeader {
    pub key: String,
    pub value: String,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetric {
    pub metadata: Option<ObjectMeta>,
    pub spec: JobSpec,
}

/// Phase of a run, metric or measurement.
///
/// Served as upstream serves it, a plain string: upstream creates a run
/// with `status.phase: ""` (no omitempty), which an enum in the CRD would
/// refuse, and which is read here as Pending (a run not started yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AnalysisPhase {
    Pending,
    Running,
    Successful,
    Failed,
    Error,
    Inconclusive,
}

const ANALYSIS_PHASES: &[&str] = &[
    "Pending",
    "Running",
    "Successful",
    "Failed",
    "Error",
    "Inconclusive",
];

impl<'de> Deserialize<'de> for AnalysisPhase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "" | "Pending" => AnalysisPhase::Pending,
            "Running" => AnalysisPhase::Running,
            "Successful" => AnalysisPhase::Successful,
            "Failed" => AnalysisPhase::Failed,
            "Error" => AnalysisPhase::Error,
            "Inconclusive" => AnalysisPhase::Inconclusive,
            other => {
                return Err(serde::de::Error::unknown_variant(other, ANALYSIS_PHASES));
            }
        })
    }
}

impl JsonSchema for AnalysisPhase {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnalysisPhase".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    pub phase: Option<AnalysisPhase>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    pub started_at: Option<Time>,
    pub run_summary: Option<RunSummary>,
    pub dry_run_summary: Option<RunSummary>,
    pub completed_at: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    #[serde(default, skip_serializing_if = "is_default")]
    pub count: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub successful: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub inconclusive: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub error: i32,
}

#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    pub phase: AnalysisPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub count: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub successful: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub inconclusive: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub error: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub consecutive_error: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub consecutive_success: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub metadata: Option<BTreeMap<String, String>>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub phase: AnalysisPhase,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub resume_at: Option<Time>,
}
