//! What the controllers are told at start: where they look (`Scope`) and
//! how they run (`Settings`).

use kube::{Api, Client, Resource};

use crate::api::INSTANCE_ID_LABEL;
use crate::metrics::Metrics;

/// Where the controllers look.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch one namespace only; all namespaces when None.
    pub namespace: Option<String>,
    /// Reconcile only Rollouts and AnalysisRuns labelled with this id; when
    /// None, only those without the label (as upstream's `--instance-id`).
    pub instance_id: Option<String>,
}

impl Scope {
    pub fn namespace(ns: impl Into<String>) -> Self {
        Scope {
            namespace: Some(ns.into()),
            instance_id: None,
        }
    }

    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// The label selector for the Rollouts and AnalysisRuns this controller
    /// instance owns.
    pub fn instance_selector(&self) -> String {
        match &self.instance_id {
            Some(id) => format!("{INSTANCE_ID_LABEL}={id}"),
            None => format!("!{INSTANCE_ID_LABEL}"),
        }
    }
}

/// How the controllers run.
#[derive(Clone)]
pub struct Settings {
    pub scope: Scope,
    /// Rollouts reconciled at once (`--rollout-threads`).
    pub rollout_workers: u16,
    /// AnalysisRuns reconciled at once (`--analysis-threads`).
    pub analysis_workers: u16,
    pub metrics: Metrics,
}

impl Settings {
    /// Upstream's defaults: 10 rollout and 30 analysis workers.
    pub fn new(scope: Scope) -> Self {
        Settings {
            scope,
            rollout_workers: 10,
            analysis_workers: 30,
            metrics: Metrics::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_owns_its_labelled_objects_and_no_instance_the_unlabelled() {
        let mut scope = Scope::namespace("a");
        assert_eq!(
            scope.instance_selector(),
            "!argo-rollouts.argoproj.io/controller-instance-id"
        );
        scope.instance_id = Some("blue".into());
        assert_eq!(
            scope.instance_selector(),
            "argo-rollouts.argoproj.io/controller-instance-id=blue"
        );
    }
}
