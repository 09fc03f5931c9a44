//! Publishes Kubernetes Events (events.k8s.io/v1) about a Rollout or an
//! AnalysisRun.
//!
//! Not kube-runtime's `Recorder`: it folds events with the same reason into
//! one series that keeps the first message, so "step 2/6 completed" would be
//! shown as a repeat of "step 1/6 completed". Our events are emitted only on
//! transitions, so each one is created as it is.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

pub use crate::rollout::plan::events::Event;

pub const REPORTING_CONTROLLER: &str = "argoproj.io/rollouts-controller";

/// Creates one Event per entry. A failure is logged, not returned: losing an
/// event must not stop a rollout.
pub async fn publish<K>(client: &Client, obj: &K, events: &[Event])
where
    K: Resource<DynamicType = ()>,
{
    if events.is_empty() {
        return;
    }
    let ns = obj.namespace().unwrap_or_default();
    let kind = K::kind(&());
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let regarding = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(kind.clone().into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    };
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "rollouts-controller".into());
    for ev in events {
        let now = Timestamp::now();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(ev.reason.into()),
            action: Some(ev.reason.into()),
            note: Some(ev.message.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(instance.clone()),
            ..Default::default()
        };
        info!(%kind, name = %obj.name_any(), namespace = %ns, reason = ev.reason, message = %ev.message, "event");
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            warn!(%kind, name = %obj.name_any(), reason = ev.reason, error = %e, "could not publish event");
        }
    }
}
