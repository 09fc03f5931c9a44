//! The `argoproj.io/v1alpha1` kinds, with upstream's JSON names and types.

pub mod analysis;
pub mod common;
pub mod rollout;

pub use analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
pub use rollout::{Rollout, RolloutSpec, RolloutStatus};

use kube::CustomResourceExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD this project serves, in the order `crds/` lists them.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("rollout-crd.yaml", Rollout::crd()),
        ("analysis-template-crd.yaml", AnalysisTemplate::crd()),
        ("cluster-analysis-template-crd.yaml", ClusterAnalysisTemplate::crd()),
        ("analysis-run-crd.yaml", AnalysisRun::crd()),
    ]
}
