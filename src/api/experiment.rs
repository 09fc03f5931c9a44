//! Experiments (`argoproj.io/v1alpha1`), served so that upstream's tools
//! (its kubectl plugin lists them before it shows a Rollout) and users'
//! manifests find the kind. This controller does not run Experiments yet:
//! the spec is kept as written, and the status says so.

use std::borrow::Cow;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An experiment: template ReplicaSets run side by side with analyses.
/// Upstream's fields are kept as written (not interpreted here).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Experiment",
    plural = "experiments",
    shortname = "exp",
    namespaced,
    status = "ExperimentStatus",
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Experiment status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since resource was created"
    )
)]
pub struct ExperimentSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// What this controller writes: the phase and why. Other fields (upstream
/// writes more) are kept as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExperimentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

// Both kept as written: an object that preserves every field.
impl JsonSchema for ExperimentSpec {
    fn schema_name() -> Cow<'static, str> {
        "ExperimentSpec".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        super::common::opaque_object(generator)
    }
}

impl JsonSchema for ExperimentStatus {
    fn schema_name() -> Cow<'static, str> {
        "ExperimentStatus".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        super::common::opaque_object(generator)
    }
}
