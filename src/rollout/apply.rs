//! The imperative shell's write side: applies a [`Plan`] with idempotent
//! patches, in plan order, the status last (so a crash in between repeats
//! work on the next reconcile instead of skipping it).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use crate::api::Rollout;
use crate::api::analysis::AnalysisRun;
use crate::api::common::PodTemplateMetadata;
use crate::api::rollout::RolloutStatus;
use crate::controller::freshness::Version;
use crate::controller::patch::merge_diff;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::replica_set::{
    EPHEMERAL_METADATA_ANNOTATION, SCALE_DOWN_DEADLINE_ANNOTATION,
};
use crate::rollout::plan::workload::WORKLOAD_GENERATION_ANNOTATION;
use crate::rollout::plan::{Action, Plan, rejection_detail};
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, MANAGED_BY_ANNOTATION, REVISION_ANNOTATION,
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("creating ReplicaSet {name}: {source}")]
    Create { name: String, source: kube::Error },
    /// The API server refused the ReplicaSet as invalid (400 or 422): the
    /// pod template is at fault, and asking again will not help.
    #[error("the API server refused ReplicaSet {name}: {detail}")]
    Rejected {
        name: String,
        hash: String,
        detail: String,
    },
    #[error(
        "ReplicaSet {name} already exists and is not controlled by this Rollout; bumped status.collisionCount"
    )]
    Collision { name: String },
    /// The object changed since it was read: plan again from a fresh read.
    #[error("{what} changed since it was read")]
    Conflict { what: String },
    #[error("AnalysisRun {name}: {source}")]
    AnalysisRun { name: String, source: kube::Error },
    #[error("evicting pod {name}: {source}")]
    Evict { name: String, source: kube::Error },
    #[error("patching ReplicaSet {name}: {source}")]
    PatchReplicaSet { name: String, source: kube::Error },
    #[error("deleting ReplicaSet {name}: {source}")]
    Delete { name: String, source: kube::Error },
    #[error("listing pods {selector}: {source}")]
    ListPods {
        selector: String,
        source: kube::Error,
    },
    #[error("updating pod {name}: {source}")]
    PatchPod { name: String, source: kube::Error },
    #[error("writing canary Ingress {name}: {source}")]
    Ingress { name: String, source: kube::Error },
    #[error("patching Service {name}: {source}")]
    PatchService { name: String, source: kube::Error },
    #[error("scaling Deployment {name} (spec.workloadRef): {source}")]
    ScaleDeployment { name: String, source: kube::Error },
    #[error("patching Rollout {name}: {source}")]
    PatchRollout { name: String, source: kube::Error },
    #[error("writing status of Rollout {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("serializing the status of Rollout {name}: {source}")]
    Serialize {
        name: String,
        source: serde_json::Error,
    },
}

/// What applying a plan did, also when it stopped at a failure.
#[derive(Debug, Default)]
pub struct Applied {
    /// How many of the plan's actions were applied.
    pub done: usize,
    /// The Rollout as our last write to it returned it.
    pub rollout: Option<Rollout>,
    /// The ReplicaSet the plan created (or found already created by us).
    pub created: Option<ReplicaSet>,
    /// What each write to the Rollout, a ReplicaSet or a Service left, in
    /// order (the cached copy is behind while it shows an older one).
    pub versions: Vec<Version>,
}

impl Applied {
    /// Records a write to the Rollout.
    fn wrote(&mut self, updated: Rollout) {
        self.wrote_object(&updated.metadata);
        self.rollout = Some(updated);
    }

    fn wrote_replica_set(&mut self, rs: &ReplicaSet) {
        self.wrote_object(&rs.metadata);
    }

    fn wrote_object(&mut self, meta: &ObjectMeta) {
        self.versions.extend(Version::of(meta));
    }
}

/// Applies the plan's actions, then the status, recording in `applied`
/// what was done.
pub async fn apply(
    client: &Client,
    ro: &Rollout,
    plan: &Plan,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let ns = ro.namespace().unwrap_or_default();
    let ro_name = ro.name_any();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let ro_api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let merge = PatchParams::default();

    for action in &plan.actions {
        match action {
            Action::CreateReplicaSet(rs) => {
                let name = rs.name_any();
                match rs_api.create(&PostParams::default(), rs).await {
                    Ok(created) => {
                        info!(rollout = %ro_name, replicaset = %name, "created ReplicaSet");
                        applied.wrote_replica_set(&created);
                        applied.created = Some(created);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        // Ours from an earlier reconcile (the cache lagged): fine.
                        // Someone else's: change the hash and try again.
                        let existing =
                            rs_api
                                .get(&name)
                                .await
                                .map_err(|source| ApplyError::Create {
                                    name: name.clone(),
                                    source,
                                })?;
                        let ours = existing.owner_references().iter().any(|o| {
                            o.controller == Some(true) && Some(&o.uid) == ro.metadata.uid.as_ref()
                        });
                        if ours {
                            applied.wrote_replica_set(&existing);
                            applied.created = Some(existing);
                        } else {
                            let count = ro
                                .status
                                .as_ref()
                                .and_then(|s| s.collision_count)
                                .unwrap_or(0)
                                + 1;
                            // On the version the count was read from (a
                            // count from a stale copy would not move the
                            // hash on), and recorded, so that the next
                            // plan waits for the cache to show it.
                            let version = ro.metadata.resource_version.as_deref();
                            let bump = json!({"metadata": {"resourceVersion": version}, "status": {"collisionCount": count}});
                            let updated = ro_api
                                .patch_status(&ro_name, &merge, &Patch::Merge(bump))
                                .await
                                .map_err(conflict_or(format!("Rollout {ro_name}"), |source| {
                                    ApplyError::Status {
                                        name: ro_name.clone(),
                                        source,
                                    }
                                }))?;
                            applied.wrote(updated);
                            return Err(ApplyError::Collision { name });
                        }
                    }
                    Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
                        return Err(ApplyError::Rejected {
                            name,
                            hash: rs
                                .labels()
                                .get(POD_TEMPLATE_HASH_LABEL)
                                .cloned()
                                .unwrap_or_default(),
                            detail: rejection_detail(e.code, &e.message),
                        });
                    }
                    Err(source) => return Err(ApplyError::Create { name, source }),
                }
            }
            Action::ScaleReplicaSet {
                name,
                from,
                to,
                desired_replicas,
                resource_version,
                clear_deadline,
            } => {
                let mut annotations =
                    json!({DESIRED_REPLICAS_ANNOTATION: desired_replicas.to_string()});
                if *clear_deadline {
                    annotations[SCALE_DOWN_DEADLINE_ANNOTATION] = Value::Null;
                }
                let patch = json!({
                    "metadata": {
                        "annotations": annotations,
                        "resourceVersion": resource_version,
                    },
                    "spec": {"replicas": to},
                });
                let scaled = patch_replica_set(&rs_api, name, patch).await.map_err(
                    |e| match e {
                        ApplyError::Conflict { what } => ApplyError::Conflict {
                            what: format!(
                                "{what} (to scale {from} -> {to} at version {resource_version:?})"
                            ),
                        },
                        e => e,
                    },
                )?;
                applied.wrote_replica_set(&scaled);
                let direction = if to > from { "up" } else { "down" };
                info!(rollout = %ro_name, replicaset = %name, from, to, "scaled {direction} ReplicaSet");
            }
            Action::SetReplicaSetRevision { name, revision } => {
                let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
                applied.wrote_replica_set(&patch_replica_set(&rs_api, name, patch).await?);
                info!(rollout = %ro_name, replicaset = %name, revision, "ReplicaSet is the newest revision again");
            }
            Action::SetReplicaSetAnnotations { name, annotations } => {
                let patch = json!({"metadata": {"annotations": annotations}});
                applied.wrote_replica_set(&patch_replica_set(&rs_api, name, patch).await?);
                info!(rollout = %ro_name, replicaset = %name, keys = ?annotations.keys().collect::<Vec<_>>(), "copied the Rollout's annotations to its ReplicaSet");
            }
            Action::SetMinReadySeconds { name, seconds } => {
                let patch = json!({"spec": {"minReadySeconds": seconds}});
                applied.wrote_replica_set(&patch_replica_set(&rs_api, name, patch).await?);
                info!(rollout = %ro_name, replicaset = %name, seconds, "updated minReadySeconds");
            }
            Action::DeleteReplicaSet { name } => {
                match rs_api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {
                        info!(rollout = %ro_name, replicaset = %name, "deleted old ReplicaSet beyond revisionHistoryLimit")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Delete {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            Action::SetScaleDownDeadline { name, deadline } => {
                let patch = json!({"metadata": {"annotations": {SCALE_DOWN_DEADLINE_ANNOTATION: deadline}}});
                applied.wrote_replica_set(&patch_replica_set(&rs_api, name, patch).await?);
                match deadline {
                    Some(at) => {
                        info!(rollout = %ro_name, replicaset = %name, deadline = %at, "set scale-down deadline")
                    }
                    None => {
                        info!(rollout = %ro_name, replicaset = %name, "removed scale-down deadline")
                    }
                }
            }
            Action::SetPodMetadata {
                replica_set,
                hash,
                wanted,
                previous,
            } => {
                let written =
                    set_pod_metadata(client, &rs_api, &ns, replica_set, hash, wanted, previous)
                        .await?;
                written.iter().for_each(|rs| applied.wrote_replica_set(rs));
                info!(rollout = %ro_name, replicaset = %replica_set, "updated ephemeral pod metadata");
            }
            Action::SetServiceSelector {
                name,
                hash,
                adopt,
                resource_version,
            } => {
                let mut patch = json!({
                    "metadata": {"resourceVersion": resource_version},
                    "spec": {"selector": {POD_TEMPLATE_HASH_LABEL: hash}},
                });
                if *adopt {
                    patch["metadata"]["annotations"] = json!({MANAGED_BY_ANNOTATION: ro_name});
                }
                let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
                let patched = svc_api
                    .patch(name, &merge, &Patch::Merge(patch))
                    .await
                    .map_err(conflict_or(format!("Service {name}"), |source| {
                        ApplyError::PatchService {
                            name: name.clone(),
                            source,
                        }
                    }))?;
                applied.wrote_object(&patched.metadata);
                info!(rollout = %ro_name, service = %name, hash = %hash, "switched Service selector");
            }
            Action::ReleaseService { name } => match release_service(client, &ns, name).await {
                Ok(Some(patched)) => {
                    applied.wrote_object(&patched);
                    info!(rollout = %ro_name, service = %name, "released Service the spec no longer names");
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(ApplyError::PatchService {
                        name: name.clone(),
                        source,
                    });
                }
            },
            // Our own changes to the Rollout: the status write below must
            // not see them as someone else's.
            Action::SetRolloutRevision { revision } => {
                let updated = annotate(
                    &ro_api,
                    &ro_name,
                    REVISION_ANNOTATION,
                    json!(revision.to_string()),
                )
                .await?;
                applied.wrote(updated);
            }
            Action::SetWorkloadGeneration { generation } => {
                let updated = annotate(
                    &ro_api,
                    &ro_name,
                    WORKLOAD_GENERATION_ANNOTATION,
                    json!(generation),
                )
                .await?;
                applied.wrote(updated);
            }
            Action::ScaleDeployment {
                name,
                from,
                to,
                resource_version,
            } => {
                // Decided on the Deployment as read: refused (409) if it
                // changed since, then decided again on a fresh read.
                let patch = json!({
                    "metadata": {"resourceVersion": resource_version},
                    "spec": {"replicas": to},
                });
                Api::<Deployment>::namespaced(client.clone(), &ns)
                    .patch(name, &merge, &Patch::Merge(patch))
                    .await
                    .map_err(|source| match source {
                        kube::Error::Api(e) if e.code == 409 || e.code == 404 => {
                            ApplyError::Conflict {
                                what: format!("Deployment {name}"),
                            }
                        }
                        source => ApplyError::ScaleDeployment {
                            name: name.clone(),
                            source,
                        },
                    })?;
                info!(rollout = %ro_name, deployment = %name, from, to, "scaled Deployment (workloadRef scaleDown)");
            }
            Action::CreateAnalysisRun(run) => {
                let name = run.name_any();
                match runs_api(client, &ns)
                    .create(&PostParams::default(), run)
                    .await
                {
                    Ok(_) => info!(rollout = %ro_name, analysisrun = %name, "created AnalysisRun"),
                    // Created by an earlier reconcile the caches have not
                    // shown yet: plan again from a fresh read, which adopts it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Err(ApplyError::Conflict {
                            what: format!("AnalysisRun {name}"),
                        });
                    }
                    Err(source) => return Err(ApplyError::AnalysisRun { name, source }),
                }
            }
            Action::TerminateAnalysisRun { name } => {
                let patch = json!({"spec": {"terminate": true}});
                match runs_api(client, &ns)
                    .patch(name, &merge, &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {
                        info!(rollout = %ro_name, analysisrun = %name, "terminated AnalysisRun")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::AnalysisRun {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            Action::DeleteAnalysisRun { name } => {
                match runs_api(client, &ns)
                    .delete(name, &Default::default())
                    .await
                {
                    Ok(_) => {
                        info!(rollout = %ro_name, analysisrun = %name, "deleted AnalysisRun beyond the history limit")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::AnalysisRun {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            Action::CreateIngress(ingress) => {
                let name = ingress.name_any();
                match ingress_api(client, &ns)
                    .create(&PostParams::default(), ingress)
                    .await
                {
                    Ok(_) => info!(rollout = %ro_name, ingress = %name, "created canary Ingress"),
                    // Made by an earlier reconcile (or by someone else, which
                    // the next plan reports): plan again from a fresh read.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Err(ApplyError::Conflict {
                            what: format!("Ingress {name}"),
                        });
                    }
                    Err(source) => return Err(ApplyError::Ingress { name, source }),
                }
            }
            Action::PatchIngress { name, patch } => {
                ingress_api(client, &ns)
                    .patch(name, &merge, &Patch::Merge(patch))
                    .await
                    .map_err(|source| ApplyError::Ingress {
                        name: name.clone(),
                        source,
                    })?;
                let weight = patch
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.as_object())
                    .and_then(|a| a.iter().find(|(k, _)| k.ends_with("/canary-weight")))
                    .map(|(_, v)| v.to_string());
                info!(rollout = %ro_name, ingress = %name, weight = weight.as_deref().unwrap_or("unchanged"), "updated canary Ingress");
            }
            Action::DeleteIngress { name } => {
                match ingress_api(client, &ns)
                    .delete(name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {
                        info!(rollout = %ro_name, ingress = %name, "deleted canary Ingress no longer used")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Ingress {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            Action::EvictPod { name } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
                match pods.evict(name, &EvictParams::default()).await {
                    Ok(_) => {
                        info!(rollout = %ro_name, pod = %name, "evicted pod older than restartAt")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    // A PodDisruptionBudget says not now; the restart tries again.
                    Err(kube::Error::Api(e)) if e.code == 429 => {
                        warn!(rollout = %ro_name, pod = %name, reason = %e.message, "eviction refused; will retry")
                    }
                    Err(source) => {
                        return Err(ApplyError::Evict {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
        }
        applied.done += 1;
    }

    let to_json = |v: &RolloutStatus| {
        serde_json::to_value(v).map_err(|source| ApplyError::Serialize {
            name: ro_name.clone(),
            source,
        })
    };
    let observed = ro.status.clone().unwrap_or_default();
    let old = to_json(&observed)?;
    let new = to_json(&plan.status)?;
    if let Some(diff) = merge_diff(&old, &new) {
        debug!(rollout = %ro_name, %diff, "status diff");
        // The diff is against the status this plan observed: written only
        // if the Rollout is still as observed, else planned again (409).
        let current = applied.rollout.as_ref().unwrap_or(ro);
        let version = current.metadata.resource_version.as_deref();
        let patch = json!({"metadata": {"resourceVersion": version}, "status": diff});
        let updated = ro_api
            .patch_status(&ro_name, &merge, &Patch::Merge(patch))
            .await
            .map_err(conflict_or(format!("Rollout {ro_name}"), |source| {
                ApplyError::Status {
                    name: ro_name.clone(),
                    source,
                }
            }))?;
        applied.wrote(updated);
        info!(
            rollout = %ro_name,
            phase = plan.status.phase.map(|p| p.as_str()).unwrap_or_default(),
            message = plan.status.message.as_deref().unwrap_or_default(),
            "status updated"
        );
    }
    Ok(())
}

/// Sets (or, with null, removes) one annotation of the Rollout; returns it
/// as written.
/// Hands a Service back: takes off the hash selector and the managed-by
/// annotation. Returns its new metadata, or None when it is gone.
pub async fn release_service(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, kube::Error> {
    let patch = json!({
        "metadata": {"annotations": {MANAGED_BY_ANNOTATION: null}},
        "spec": {"selector": {POD_TEMPLATE_HASH_LABEL: null}},
    });
    let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
    match svc_api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(patched) => Ok(Some(patched.metadata)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

async fn annotate(
    api: &Api<Rollout>,
    name: &str,
    key: &str,
    value: serde_json::Value,
) -> Result<Rollout, ApplyError> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| ApplyError::PatchRollout {
            name: name.to_string(),
            source,
        })
}

fn ingress_api(client: &Client, ns: &str) -> Api<Ingress> {
    Api::namespaced(client.clone(), ns)
}

fn runs_api(client: &Client, ns: &str) -> Api<AnalysisRun> {
    Api::namespaced(client.clone(), ns)
}

/// Ephemeral metadata goes on the template first (new pods get it), then on
/// the running pods, and is recorded on the ReplicaSet last: a failure in
/// between leaves the record stale, so the next plan does it all again.
/// Returns the ReplicaSet as each of the two writes left it.
async fn set_pod_metadata(
    client: &Client,
    rs_api: &Api<ReplicaSet>,
    ns: &str,
    replica_set: &str,
    hash: &str,
    wanted: &Option<PodTemplateMetadata>,
    previous: &Option<PodTemplateMetadata>,
) -> Result<[ReplicaSet; 2], ApplyError> {
    let meta = metadata_patch(wanted.as_ref(), previous.as_ref());
    let template = json!({"spec": {"template": {"metadata": meta}}});
    let first = patch_replica_set(rs_api, replica_set, template).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{POD_TEMPLATE_HASH_LABEL}={hash}");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ApplyError::ListPods {
            selector: selector.clone(),
            source,
        })?;
    for pod in list.items {
        let name = pod.name_any();
        let patch = json!({"metadata": meta});
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            // Gone meanwhile: nothing to label.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(ApplyError::PatchPod { name, source }),
        }
    }
    let record = wanted
        .as_ref()
        .map(|w| serde_json::to_string(w).unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {EPHEMERAL_METADATA_ANNOTATION: record}}});
    let last = patch_replica_set(rs_api, replica_set, patch).await?;
    Ok([first, last])
}

/// A merge patch of labels and annotations: the wanted values set, keys
/// only in `previous` removed (null).
fn metadata_patch(
    wanted: Option<&PodTemplateMetadata>,
    previous: Option<&PodTemplateMetadata>,
) -> Value {
    let part =
        |get: fn(&PodTemplateMetadata) -> Option<&std::collections::BTreeMap<String, String>>| {
            let mut out = Map::new();
            for k in previous.and_then(get).into_iter().flatten().map(|(k, _)| k) {
                out.insert(k.clone(), Value::Null);
            }
            for (k, v) in wanted.and_then(get).into_iter().flatten() {
                out.insert(k.clone(), Value::String(v.clone()));
            }
            Value::Object(out)
        };
    json!({
        "labels": part(|m| m.labels.as_ref()),
        "annotations": part(|m| m.annotations.as_ref()),
    })
}

async fn patch_replica_set(
    api: &Api<ReplicaSet>,
    name: &str,
    patch: Value,
) -> Result<ReplicaSet, ApplyError> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(conflict_or(format!("ReplicaSet {name}"), |source| {
            ApplyError::PatchReplicaSet {
                name: name.to_string(),
                source,
            }
        }))
}

/// Maps a write's error: a 409 means `what` changed since it was read (the
/// reconcile plans again from a fresh read), anything else is `other`.
fn conflict_or(
    what: String,
    other: impl FnOnce(kube::Error) -> ApplyError,
) -> impl FnOnce(kube::Error) -> ApplyError {
    move |source| match source {
        kube::Error::Api(e) if e.code == 409 => ApplyError::Conflict { what },
        source => other(source),
    }
}

#[cfg(test)]
mod requests;
