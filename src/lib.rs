//! rollouts: a progressive-delivery controller for Kubernetes that serves the
//! Argo Rollouts API (`argoproj.io/v1alpha1`).

pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod experiment;
pub mod fuzzing;
pub mod go_json;
pub mod index;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod recorder;
pub mod rollout;
pub mod server;
pub mod testing;
pub mod traffic;
pub mod workers;
