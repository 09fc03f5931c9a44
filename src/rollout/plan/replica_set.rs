//! The ReplicaSets of a Rollout, whatever the strategy: the new one for the
//! current template, revision bookkeeping, old ones beyond the history,
//! scale-down deadlines and ephemeral pod metadata.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodTemplateSpec, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use std::time::Duration;

use super::conditions::{conditions, requeue};
use super::status::{self as st, condition};
use super::{Action, Plan};
use crate::api::Rollout;
use crate::api::common::PodTemplateMetadata;
use crate::api::rollout::{ReplicaProgressThreshold, RolloutStatus};
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::snapshot::{
    DESIRED_REPLICAS_ANNOTATION, REVISION_ANNOTATION, ReplicaSetExt, Snapshot,
};

/// When an old ReplicaSet kept up after a switch is scaled down (RFC 3339).
pub const SCALE_DOWN_DEADLINE_ANNOTATION: &str = "scale-down-deadline";
/// The ephemeral pod metadata last put on a ReplicaSet (JSON), so that keys
/// no longer wanted can be taken off again.
pub const EPHEMERAL_METADATA_ANNOTATION: &str = "rollout.argoproj.io/ephemeral-metadata";

/// Rollout annotations not copied to its ReplicaSets (as upstream).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "rollout.argoproj.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    "notified.notifications.argoproj.io",
];

/// The Rollout's annotations a ReplicaSet of it carries (all but those
/// above), and which of them `rs` lacks or has another value for.
fn annotations_to_copy(ro: &Rollout, rs: Option<&ReplicaSet>) -> BTreeMap<String, String> {
    let have = rs.and_then(|rs| rs.metadata.annotations.as_ref());
    ro.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .filter(|(k, v)| have.and_then(|h| h.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Old ReplicaSets beyond revisionHistoryLimit that are empty, oldest first.
pub fn history_cleanup(
    ro: &Rollout,
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
    stable_rs: Option<&ReplicaSet>,
) -> Vec<Action> {
    let keep = usize::try_from(ro.spec.revision_history_limit_or_default()).unwrap_or(0);
    let mut old: Vec<&ReplicaSet> = all
        .iter()
        .filter(|rs| rs.metadata.name != new_rs.metadata.name)
        .filter(|rs| stable_rs.is_none_or(|s| s.metadata.name != rs.metadata.name))
        .collect();
    if old.len() <= keep {
        return vec![];
    }
    old.sort_by_key(|rs| (rs.revision(), rs.metadata.creation_timestamp.clone()));
    let excess = old.len() - keep;
    old.into_iter()
        .take(excess)
        .filter(|rs| {
            rs.spec_replicas() == 0
                && rs.status_replicas() == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .map(|rs| Action::DeleteReplicaSet {
            name: rs.metadata.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// The ReplicaSet for the current template: `<rollout>-<hash>`, labelled
/// with the hash, owned by the Rollout, created at 0 replicas.
fn new_replica_set(
    ro: &Rollout,
    template: &PodTemplateSpec,
    hash: &str,
    revision: i64,
) -> ReplicaSet {
    let name = ro.metadata.name.clone().unwrap_or_default();
    let mut template = template.clone();
    inject_anti_affinity(ro, &mut template, hash);
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
    let labels = labels.clone();

    let mut selector: LabelSelector = ro.spec.selector.clone().unwrap_or_default();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());

    let mut annotations = annotations_to_copy(ro, None);
    annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
    annotations.insert(
        DESIRED_REPLICAS_ANNOTATION.into(),
        ro.spec.replicas_or_default().to_string(),
    );
    // Its first pods already carry the metadata of their role.
    if let Some(wanted) = initial_ephemeral_metadata(ro, hash) {
        let meta = template.metadata.get_or_insert_with(Default::default);
        for (have, want) in [
            (&mut meta.labels, &wanted.labels),
            (&mut meta.annotations, &wanted.annotations),
        ] {
            have.get_or_insert_with(Default::default)
                .extend(want.clone().unwrap_or_default());
        }
        annotations.insert(
            EPHEMERAL_METADATA_ANNOTATION.into(),
            serde_json::to_string(wanted).unwrap_or_default(),
        );
    }

    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: ro.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "argoproj.io/v1alpha1".into(),
                kind: "Rollout".into(),
                name,
                uid: ro.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(ro.spec.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// The plan of a reconcile that finds no ReplicaSet for the current
/// template: create it as the newest revision (at 0 replicas; the next plan
/// scales it), after the actions decided so far. `wait`: timers and the
/// restart re-check.
pub fn create_plan(
    snap: &Snapshot,
    old_status: &RolloutStatus,
    mut plan: Plan,
    wait: (&[Timestamp], Option<Duration>),
    now: &Time,
) -> Plan {
    let ro = &snap.rollout;
    let template = ro.spec.template.clone().unwrap_or_default();
    let revision = snap
        .replica_sets
        .iter()
        .map(|rs| rs.revision())
        .max()
        .unwrap_or(0)
        + 1;
    let hash = plan.status.current_pod_hash.clone().unwrap_or_default();
    let rs = new_replica_set(ro, &template, &hash, revision);
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    plan.actions.push(Action::CreateReplicaSet(Box::new(rs)));
    plan.actions.push(Action::SetRolloutRevision { revision });
    let status = &mut plan.status;
    conditions(ro, old_status, status, None, revision, None, now);
    st::refresh(
        &mut status.conditions,
        condition(
            st::PROGRESSING,
            "True",
            st::REASON_NEW_RS_CREATED,
            format!("Created new replica set {rs_name:?}"),
        ),
        now,
    );
    plan.requeue_after = requeue(ro, status, now, wait.0, wait.1);
    plan
}

/// The ephemeral metadata of a new ReplicaSet: the stable (active) one on
/// the first deploy or a return to stable, else the canary (preview) one.
fn initial_ephemeral_metadata<'a>(ro: &'a Rollout, hash: &str) -> Option<&'a PodTemplateMetadata> {
    let strategy = &ro.spec.strategy;
    let (new_meta, stable_meta) = match (&strategy.blue_green, &strategy.canary) {
        (Some(bg), _) => (bg.preview_metadata.as_ref(), bg.active_metadata.as_ref()),
        (None, Some(c)) => (c.canary_metadata.as_ref(), c.stable_metadata.as_ref()),
        (None, None) => (None, None),
    };
    let stable = ro.status.as_ref().and_then(|s| s.stable_rs.as_deref());
    if stable.is_none_or(|s| s == hash) {
        stable_meta
    } else {
        new_meta
    }
}

/// Keeps the new ReplicaSet's revision the newest (a template seen before,
/// i.e. a rollback, becomes the newest revision again), its annotations
/// those of the Rollout, its minReadySeconds that of the spec, and the
/// Rollout's revision annotation in step. Returns the new ReplicaSet's
/// revision.
pub fn sync_revision(
    ro: &Rollout,
    new_rs: &ReplicaSet,
    max_revision: i64,
    actions: &mut Vec<Action>,
) -> i64 {
    let name = new_rs.metadata.name.clone().unwrap_or_default();
    let revision = if new_rs.revision() < max_revision {
        actions.push(Action::SetReplicaSetRevision {
            name: name.clone(),
            revision: max_revision + 1,
        });
        max_revision + 1
    } else {
        new_rs.revision()
    };
    let copies = annotations_to_copy(ro, Some(new_rs));
    if !copies.is_empty() {
        actions.push(Action::SetReplicaSetAnnotations {
            name: name.clone(),
            annotations: copies,
        });
    }
    let min_ready = new_rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    if min_ready.unwrap_or(0) != ro.spec.min_ready_seconds {
        actions.push(Action::SetMinReadySeconds {
            name,
            seconds: ro.spec.min_ready_seconds,
        });
    }
    let rollout_revision = ro
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse::<i64>().ok());
    if rollout_revision != Some(revision) {
        actions.push(Action::SetRolloutRevision { revision });
    }
    revision
}

/// Scale `rs` to `to`, guarded by the resourceVersion it was observed at.
/// Scaled to 0, it loses its `scale-down-deadline` too, as upstream (see
/// `scale_to_keeping_deadline` for the one exception).
pub fn scale_to(rs: &ReplicaSet, to: i32, desired_replicas: i32) -> Action {
    scale(
        rs,
        to,
        desired_replicas,
        to == 0 && has_scale_down_deadline(rs),
    )
}

/// `scale_to`, keeping the deadline: an aborted update's ReplicaSet scaled
/// down after abortScaleDownDelaySeconds keeps it, as upstream, so that
/// the next plan knows its delay is over (and does not start another).
pub fn scale_to_keeping_deadline(rs: &ReplicaSet, to: i32, desired_replicas: i32) -> Action {
    scale(rs, to, desired_replicas, false)
}

fn scale(rs: &ReplicaSet, to: i32, desired_replicas: i32, clear_deadline: bool) -> Action {
    Action::ScaleReplicaSet {
        name: rs.metadata.name.clone().unwrap_or_default(),
        from: rs.spec_replicas(),
        to,
        desired_replicas,
        resource_version: rs.metadata.resource_version.clone(),
        clear_deadline,
    }
}

/// Is `rs` at exactly `want` pods, all available?
pub fn all_available(rs: &ReplicaSet, want: i32) -> bool {
    rs.spec_replicas() == want && rs.available() == want
}

/// Whether enough of the pods `rs` should have (`want`) are available for a
/// canary step to count as reached: `canary.replicaProgressThreshold` as
/// upstream reads it (a percentage of `want`, or a count of pods; any type
/// but `Percent` counts pods), and without one (or a negative value) all
/// of them, at exactly `want`.
pub fn progress_met(
    threshold: Option<&ReplicaProgressThreshold>,
    rs: &ReplicaSet,
    want: i32,
) -> bool {
    match threshold {
        Some(t) if t.value >= 0 && t.r#type == "Percent" => {
            // available / want >= value%, in integers.
            want == 0 || i64::from(rs.available()) * 100 >= i64::from(t.value) * i64::from(want)
        }
        Some(t) if t.value >= 0 => rs.available() >= t.value,
        _ => all_available(rs, want),
    }
}

/// The ReplicaSet's scale-down deadline, if it has a readable one.
pub fn scale_down_deadline(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(SCALE_DOWN_DEADLINE_ANNOTATION)?
        .parse()
        .ok()
}

pub fn has_scale_down_deadline(rs: &ReplicaSet) -> bool {
    rs.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SCALE_DOWN_DEADLINE_ANNOTATION))
}

/// Puts a deadline `seconds` after `now` on the ReplicaSet.
pub fn set_deadline(rs: &ReplicaSet, now: Timestamp, seconds: i32) -> (Action, Timestamp) {
    let at = now
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(now);
    let action = Action::SetScaleDownDeadline {
        name: rs.metadata.name.clone().unwrap_or_default(),
        deadline: Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    };
    (action, at)
}

/// The scale-down delay of old ReplicaSets (scaleDownDelaySeconds, at most
/// scaleDownDelayRevisionLimit of them), applied newest first.
pub struct Delay {
    seconds: i32,
    limit: i32,
    delayed: i32,
}

impl Delay {
    pub fn new(seconds: i32, revision_limit: Option<i32>) -> Self {
        Delay {
            seconds,
            limit: revision_limit.unwrap_or(i32::MAX),
            delayed: 0,
        }
    }

    /// Does `rs` (an old ReplicaSet still up) keep its pods for now? One
    /// without a deadline gets one (`actions`); one whose deadline passed,
    /// or beyond the revision limit, does not. `timers` get the deadlines.
    pub fn keep(
        &mut self,
        rs: &ReplicaSet,
        now: Timestamp,
        actions: &mut Vec<Action>,
        timers: &mut Vec<Timestamp>,
    ) -> bool {
        if !has_scale_down_deadline(rs) {
            if self.delayed < self.limit && self.seconds > 0 {
                self.delayed += 1;
                let (action, at) = set_deadline(rs, now, self.seconds);
                actions.push(action);
                timers.push(at);
                return true;
            }
            return false;
        }
        self.delayed += 1;
        match scale_down_deadline(rs) {
            Some(at) if self.delayed <= self.limit && at > now => {
                timers.push(at);
                true
            }
            _ => false,
        }
    }
}

/// An aborted update's ReplicaSet keeps its pods for abortScaleDownDelaySeconds
/// (`seconds` > 0), counted from when stable can take all the traffic.
/// Returns the size to scale it to (Some(0) once the deadline passed), or
/// None to leave it as it is.
pub fn abort_scale_down(
    new_rs: &ReplicaSet,
    stable_ready: bool,
    seconds: i32,
    now: Timestamp,
    actions: &mut Vec<Action>,
    timers: &mut Vec<Timestamp>,
) -> Option<i32> {
    match scale_down_deadline(new_rs) {
        Some(at) if at > now => {
            timers.push(at);
            None
        }
        Some(_) => Some(0),
        None if has_scale_down_deadline(new_rs) => Some(0), // unreadable: treat as passed
        None => {
            if stable_ready {
                let (action, at) = set_deadline(new_rs, now, seconds);
                actions.push(action);
                timers.push(at);
            }
            None
        }
    }
}

/// Takes the deadline off a ReplicaSet that is in use again.
pub fn clear_deadline(rs: &ReplicaSet) -> Option<Action> {
    has_scale_down_deadline(rs).then(|| Action::SetScaleDownDeadline {
        name: rs.metadata.name.clone().unwrap_or_default(),
        deadline: None,
    })
}

/// Upstream's antiAffinity: pods of a new template avoid the nodes of the
/// stable pods (preferred with a weight, or required), so a bad node does
/// not take both versions down. Nothing is injected on the first deploy or
/// a rollback to stable.
fn inject_anti_affinity(ro: &Rollout, template: &mut PodTemplateSpec, hash: &str) {
    let strategy = &ro.spec.strategy;
    let Some(anti) = strategy
        .blue_green
        .as_ref()
        .and_then(|b| b.anti_affinity.as_ref())
        .or_else(|| {
            strategy
                .canary
                .as_ref()
                .and_then(|c| c.anti_affinity.as_ref())
        })
    else {
        return;
    };
    let Some(stable) = ro.status.as_ref().and_then(|s| s.stable_rs.clone()) else {
        return;
    };
    if stable == hash {
        return;
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: POD_TEMPLATE_HASH_LABEL.into(),
                operator: "In".into(),
                values: Some(vec![stable]),
            }]),
            ..Default::default()
        }),
        namespaces: ro.metadata.namespace.clone().map(|n| vec![n]),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    let spec = template.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let pod_anti = affinity
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    if let Some(p) = &anti.preferred_during_scheduling_ignored_during_execution {
        pod_anti
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: p.weight,
                pod_affinity_term: term,
            });
    } else if anti
        .required_during_scheduling_ignored_during_execution
        .is_some()
    {
        pod_anti
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
    }
}

/// Ephemeral pod metadata (canaryMetadata/stableMetadata,
/// previewMetadata/activeMetadata): the labels and annotations the pods of
/// `rs` should carry for the role it has now. None when they already do.
pub fn ephemeral_metadata(rs: &ReplicaSet, wanted: Option<&PodTemplateMetadata>) -> Option<Action> {
    let previous: Option<PodTemplateMetadata> = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EPHEMERAL_METADATA_ANNOTATION))
        .and_then(|j| serde_json::from_str(j).ok());
    let template_meta = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref());
    let has_all = |have: Option<&BTreeMap<String, String>>,
                   want: Option<&BTreeMap<String, String>>| {
        want.into_iter()
            .flatten()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    let in_template = has_all(
        template_meta.and_then(|m| m.labels.as_ref()),
        wanted.and_then(|w| w.labels.as_ref()),
    ) && has_all(
        template_meta.and_then(|m| m.annotations.as_ref()),
        wanted.and_then(|w| w.annotations.as_ref()),
    );
    if previous.as_ref() == wanted && in_template {
        return None;
    }
    if previous.is_none() && wanted.is_none() {
        return None;
    }
    Some(Action::SetPodMetadata {
        replica_set: rs.metadata.name.clone().unwrap_or_default(),
        hash: rs.pod_hash().unwrap_or_default().to_string(),
        wanted: wanted.cloned(),
        previous,
    })
}

/// Ephemeral metadata for the new and stable ReplicaSets, as upstream: once
/// fully rolled out the new ReplicaSet carries the stable (active) metadata;
/// during an update it carries the canary (preview) metadata and the stable
/// one the stable (active) metadata. Nothing when neither is configured.
pub fn ephemeral_actions(
    new_rs: &ReplicaSet,
    stable_rs: Option<&ReplicaSet>,
    new_meta: Option<&PodTemplateMetadata>,
    stable_meta: Option<&PodTemplateMetadata>,
) -> Vec<Action> {
    if new_meta.is_none() && stable_meta.is_none() {
        return vec![];
    }
    match stable_rs.filter(|s| s.metadata.name != new_rs.metadata.name) {
        None => ephemeral_metadata(new_rs, stable_meta)
            .into_iter()
            .collect(),
        Some(stable) => [
            ephemeral_metadata(new_rs, new_meta),
            ephemeral_metadata(stable, stable_meta),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}
