//! Publishes Kubernetes Events (events.k8s.io/v1) about a Rollout or an
//! AnalysisRun.
//!
//! Off the reconcile path: a reconcile only queues its events (with their
//! time), and background tasks create them. An update emits about a dozen
//! events per Rollout; creating them inline made every reconcile wait on
//! them. As client-go's broadcaster does, a full queue drops events (with a
//! warning) rather than slowing rollouts down.
//!
//! Not kube-runtime's `Recorder`: it folds events with the same reason into
//! one series that keeps the first message, so "step 2/6 completed" would be
//! shown as a repeat of "step 1/6 completed". Our events are emitted only on
//! transitions, so each one is created as it is.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// One Kubernetes Event to publish: Normal or Warning, its reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Event {
            warning: false,
            reason,
            message,
        }
    }
}

pub const REPORTING_CONTROLLER: &str = "argoproj.io/rollouts-controller";

/// Events waiting to be created; beyond this, new ones are dropped.
const QUEUE: usize = 10_000;
/// Events created at the same time, one per lane. All events of one object
/// go through the same lane, one after the other, so they are created in
/// the order they happened.
const LANES: usize = 8;

/// Queues events for background tasks that create them. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    lanes: Arc<[mpsc::Sender<K8sEvent>]>,
}

impl Recorder {
    /// Starts the background tasks (they end when every Recorder is dropped).
    pub fn start(client: Client) -> Recorder {
        let lanes = (0..LANES)
            .map(|_| {
                let (queue, pending) = mpsc::channel(QUEUE / LANES);
                tokio::spawn(deliver(client.clone(), pending));
                queue
            })
            .collect();
        Recorder { lanes }
    }

    /// Queues one Event per entry. Never fails: losing an event must not
    /// stop a rollout, so a failure is only logged.
    pub fn publish<K>(&self, obj: &K, events: &[Event])
    where
        K: Resource<DynamicType = ()>,
    {
        let Some(queue) = self.lanes.get(lane(obj.meta().uid.as_deref())) else {
            return;
        };
        for event in build(obj, events) {
            if let Err(e) = queue.try_send(event) {
                let reason = match &e {
                    mpsc::error::TrySendError::Full(_) => "the event queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the event publisher has stopped",
                };
                warn!(name = %obj.name_any(), %reason, "event dropped");
            }
        }
    }
}

/// The lane of an object's events.
fn lane(uid: Option<&str>) -> usize {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    uid.hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

async fn deliver(client: Client, mut pending: mpsc::Receiver<K8sEvent>) {
    while let Some(event) = pending.recv().await {
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            let regarding = event.regarding.as_ref();
            warn!(
                kind = regarding.and_then(|r| r.kind.as_deref()).unwrap_or_default(),
                name = regarding.and_then(|r| r.name.as_deref()).unwrap_or_default(),
                namespace = %ns,
                reason = event.reason.as_deref().unwrap_or_default(),
                error = %e,
                "could not publish event"
            );
        }
    }
}

/// The Event objects, stamped with the current time.
fn build<K>(obj: &K, events: &[Event]) -> Vec<K8sEvent>
where
    K: Resource<DynamicType = ()>,
{
    if events.is_empty() {
        return vec![];
    }
    let ns = obj.namespace().unwrap_or_default();
    let kind = K::kind(&());
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
    let now = Timestamp::now();
    events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            info!(%kind, name = %obj.name_any(), namespace = %ns, reason = ev.reason, message = %ev.message, "event");
            K8sEvent {
                metadata: ObjectMeta {
                    // Distinct names for the events of one reconcile.
                    name: Some(format!(
                        "{}.{:x}",
                        obj.name_any(),
                        now.as_nanosecond() + i as i128
                    )),
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
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_objects_events_keep_to_one_lane_and_objects_spread_over_all() {
        assert_eq!(lane(Some("a-uid")), lane(Some("a-uid")));
        let used: std::collections::HashSet<usize> =
            (0..200).map(|i| lane(Some(&format!("uid-{i}")))).collect();
        assert_eq!(used.len(), LANES);
        assert!(used.iter().all(|l| *l < LANES));
    }
}
