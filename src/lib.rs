//! rollouts: a progressive-delivery controller for Kubernetes that serves the
//! Argo Rollouts API (`argoproj.io/v1alpha1`).

pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod experiment;
pub mod fuzzing;
pub mod go_json;
pub mod manager;
pub mod metrics;
pub mod rollout;
pub mod server;
pub mod settings;
pub mod testing;
pub mod traffic;
