//! The Rollout kind (`argoproj.io/v1alpha1`), field for field as Argo Rollouts
//! serves it. Defaults are applied at read time by the accessor methods, as
//! upstream does; nothing is defaulted into the stored object.
// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{
    AnalysisTemplateRef, DryRun, FieldRef, MeasurementRetention, PodTemplateMetadata, is_default,
    is_none_or_default, opaque_object,
};

/// Desired state of a Rollout.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    shortname = "ro",
    namespaced,
    status = "RolloutStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.HPAReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Number of desired pods"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Total number of non-terminated pods targeted by this rollout"
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "Total number of non-terminated pods targeted by this rollout that have the desired template spec"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas",
        description = "Total number of available pods (ready for at least minReadySeconds) targeted by this rollout"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since resource was created"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Desired number of pods (default 1).
    pub replicas: Option<i32>,
    /// Label selector for pods; must match the template's labels. Immutable.
    pub selector: Option<LabelSelector>,
    /// Pod template; absent when `workloadRef` names a Deployment.
    pub template: Option<PodTemplateSpec>,
    /// Takes the pod template from an existing workload instead of `template`.
    pub workload_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_ready_seconds: i32,
    /// The deployment strategy: exactly one of `canary` or `blueGreen`.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Old ReplicaSets kept for rollback (default 10).
    pub revision_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Seconds a rollout may make no progress before it is reported failed (default 600).
    pub progress_deadline_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress_deadline_abort: bool,
    /// Pods created before this time are restarted.
    pub restart_at: Option<Time>,
    pub analysis: Option<AnalysisRunStrategy>,
    pub rollback_window: Option<RollbackWindowSpec>,
}

/// Reference to the workload that carries the pod template.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// never | onsuccess | progressively
    pub scale_down: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackWindowSpec {
    #[serde(default)]
    pub revisions: i32,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStrategy {
    pub successful_run_history_limit: Option<i32>,
    pub unsuccessful_run_history_limit: Option<i32>,
}

/// Exactly one of the two must be set.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    pub blue_green: Option<BlueGreenStrategy>,
    pub canary: Option<CanaryStrategy>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Service that receives production traffic.
    pub active_service: String,
    pub preview_service: Option<String>,
    pub preview_replica_count: Option<i32>,
    /// Default true.
    pub auto_promotion_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_promotion_seconds: i32,
    pub max_unavailable: Option<IntOrString>,
    /// Default 30.
    pub scale_down_delay_seconds: Option<i32>,
    pub scale_down_delay_revision_limit: Option<i32>,
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    pub anti_affinity: Option<AntiAffinity>,
    pub post_promotion_analysis: Option<RolloutAnalysis>,
    pub preview_metadata: Option<PodTemplateMetadata>,
    pub active_metadata: Option<PodTemplateMetadata>,
    /// Default 30; 0 keeps the preview ReplicaSet up after an abort.
    pub abort_scale_down_delay_seconds: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    pub canary_service: Option<String>,
    pub stable_service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    pub traffic_routing: Option<RolloutTrafficRouting>,
    /// Default "25%", rounded down.
    pub max_unavailable: Option<IntOrString>,
    /// Default "25%", rounded up.
    pub max_surge: Option<IntOrString>,
    pub analysis: Option<RolloutAnalysisBackground>,
    pub anti_affinity: Option<AntiAffinity>,
    pub canary_metadata: Option<PodTemplateMetadata>,
    pub stable_metadata: Option<PodTemplateMetadata>,
    pub scale_down_delay_seconds: Option<i32>,
    pub scale_down_delay_revision_limit: Option<i32>,
    pub abort_scale_down_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_stable_scale: bool,
    pub ping_pong: Option<PingPongSpec>,
    pub min_pods_per_replica_set: Option<i32>,
    /// How many of the canary's pods must be available for a step (and the
    /// promotion) to count as reached; default: all of them.
    pub replica_progress_threshold: Option<ReplicaProgressThreshold>,
}

/// `type: Percent` (of the pods the step asks for) or `type: Pods` (a
/// count); a negative value means all of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaProgressThreshold {
    pub r#type: String,
    pub value: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingPongSpec {
    pub ping_service: String,
    pub pong_service: String,
}

/// One step of a canary: one of setWeight, pause, experiment and analysis,
/// or none of them, with setCanaryScale, setHeaderRoute, setMirrorRoute or
/// plugin beside it (as upstream accepts).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    pub set_weight: Option<i32>,
    pub pause: Option<RolloutPause>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub experiment: Option<serde_json::Value>,
    pub analysis: Option<RolloutAnalysis>,
    pub set_canary_scale: Option<SetCanaryScale>,
    pub set_header_route: Option<SetHeaderRoute>,
    pub set_mirror_route: Option<SetMirrorRoute>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub plugin: Option<serde_json::Value>,
}

/// `duration` is seconds (int or numeric string) or "30s"/"5m"/"1h"; absent
/// means pause until promoted.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPause {
    pub duration: Option<IntOrString>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetCanaryScale {
    pub weight: Option<i32>,
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_traffic_weight: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HeaderRoutingMatch>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoutingMatch {
    pub header_name: String,
    pub header_value: Option<StringMatch>,
}

/// Exactly one of exact, prefix or regex.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMirrorRoute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<RouteMatch>,
    pub percentage: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    pub method: Option<StringMatch>,
    pub path: Option<StringMatch>,
    pub headers: Option<BTreeMap<String, StringMatch>>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTrafficRouting {
    pub nginx: Option<NginxTrafficRouting>,
    /// Default 100.
    pub max_traffic_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_routes: Vec<ManagedRoute>,
    // Routers other than nginx are accepted (so Argo manifests apply) but not
    // implemented; validation names them.
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub istio: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub alb: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub smi: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub ambassador: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub app_mesh: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub traefik: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub apisix: Option<serde_json::Value>,
    #[serde(default)]
    #[schemars(schema_with = "opaque_object")]
    pub plugins: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRoute {
    pub name: String,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NginxTrafficRouting {
    /// Default "nginx.ingress.kubernetes.io".
    pub annotation_prefix: Option<String>,
    pub stable_ingress: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_ingresses: Vec<String>,
    pub additional_ingress_annotations: Option<BTreeMap<String, String>>,
    pub canary_ingress_annotations: Option<BTreeMap<String, String>>,
}

/// Analysis run by a step, or before/after a blue-green promotion.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisRunArgument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    pub analysis_run_metadata: Option<PodTemplateMetadata>,
}

/// Background analysis of a canary: runs from `startingStep` to the end.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisBackground {
    #[serde(flatten)]
    pub analysis: RolloutAnalysis,
    pub starting_step: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunArgument {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<ArgumentValueFrom>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// Stable | Latest
    pub pod_template_hash_value: Option<String>,
    pub field_ref: Option<FieldRef>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AntiAffinity {
    pub preferred_during_scheduling_ignored_during_execution: Option<PreferredAntiAffinity>,
    pub required_during_scheduling_ignored_during_execution: Option<RequiredAntiAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredAntiAffinity {
    pub weight: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RequiredAntiAffinity {}

/// Observed state of a Rollout. Field names and types follow upstream
/// exactly: Argo CD's health check and kubectl plugins read them.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller_pause: bool,
    pub aborted_at: Option<Time>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub current_pod_hash: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub current_step_hash: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub updated_replicas: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub available_replicas: i32,
    pub current_step_index: Option<i32>,
    pub collision_count: Option<i32>,
    /// metadata.generation as a decimal string (upstream's type).
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub observed_generation: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RolloutCondition>,
    #[serde(default)]
    pub canary: CanaryStatus,
    #[serde(default)]
    pub blue_green: BlueGreenStatus,
    #[serde(rename = "HPAReplicas", default, skip_serializing_if = "is_default")]
    pub hpa_replicas: i32,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub selector: Option<String>,
    #[serde(rename = "stableRS", skip_serializing_if = "is_none_or_default")]
    pub stable_rs: Option<String>,
    pub restarted_at: Option<Time>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    pub phase: Option<RolloutPhase>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub workload_observed_generation: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    Healthy,
    Degraded,
    Progressing,
    Paused,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Healthy => "Healthy",
            RolloutPhase::Degraded => "Degraded",
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// CanaryPauseStep | BlueGreenPause | InconclusiveAnalysisRun | InconclusiveExperiment
    pub reason: String,
    pub start_time: Time,
}

#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    pub r#type: String,
    /// "True" | "False" | "Unknown"
    pub status: String,
    pub last_update_time: Option<Time>,
    pub last_transition_time: Option<Time>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    pub current_step_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    pub current_background_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub current_experiment: Option<String>,
    pub weights: Option<TrafficWeights>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub stable_ping_pong: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub preview_selector: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub active_selector: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_up_preview_check_point: bool,
    pub pre_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    pub post_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisRunStatus {
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub message: Option<String>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficWeights {
    pub canary: WeightDestination,
    pub stable: WeightDestination,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<WeightDestination>,
    pub verified: Option<bool>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightDestination {
    #[serde(default)]
    pub weight: i32,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub service_name: Option<String>,
    #[serde(skip_serializing_if = "is_none_or_default")]
    pub pod_template_hash: Option<String>,
}

/// Read-time defaults, as upstream's `defaults` package.
impl RolloutSpec {
    pub fn replicas_or_default(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }
    pub fn revision_history_limit_or_default(&self) -> i32 {
        self.revision_history_limit.unwrap_or(10)
    }
    pub fn progress_deadline_seconds_or_default(&self) -> i32 {
        self.progress_deadline_seconds.unwrap_or(600)
    }
}
