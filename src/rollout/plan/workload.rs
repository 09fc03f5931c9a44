//! `spec.workloadRef`: a Rollout that takes its pod template (and, when it
//! names none, its selector) from a Deployment, and optionally scales that
//! Deployment down as it takes over (`scaleDown`).
//!
//! As upstream's template resolver does, the reference is resolved before
//! anything else is planned: the Rollout is planned as if the Deployment's
//! `spec.template` were written inline, so the pod-template hash, the
//! ReplicaSets and every strategy work unchanged. A reference that cannot be
//! resolved is the InvalidSpec condition, in upstream's words.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Action;
use crate::api::Rollout;
use crate::api::rollout::{ObjectRef, RolloutPhase, RolloutStatus};
use crate::rollout::snapshot::{ReplicaSetExt, Snapshot};
use crate::rollout::validate::template_is_empty;

/// Upstream's annotation on the Rollout: the generation of the referenced
/// workload the controller last resolved. Argo CD's health check compares it
/// with `status.workloadObservedGeneration`.
pub const WORKLOAD_GENERATION_ANNOTATION: &str = "rollout.argoproj.io/workload-generation";

/// `workloadRef.scaleDown`, as upstream spells the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDown {
    /// The default: the Deployment is left alone.
    Never,
    /// The Deployment goes to 0 once the Rollout is Healthy.
    OnSuccess,
    /// The Deployment shrinks as the Rollout's pods become available.
    Progressively,
}

pub const SCALE_DOWN_VALUES: [&str; 3] = ["never", "onsuccess", "progressively"];

impl ScaleDown {
    /// Unset, empty or unknown values mean `never`, as upstream (which
    /// compares the string with its three constants and does nothing
    /// otherwise).
    pub fn of(r: &ObjectRef) -> Self {
        match r.scale_down.as_deref() {
            Some("onsuccess") => ScaleDown::OnSuccess,
            Some("progressively") => ScaleDown::Progressively,
            _ => ScaleDown::Never,
        }
    }
}

/// The group of an apiVersion ("apps/v1" -> "apps", "v1" -> "").
fn group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group)
}

/// What `spec.workloadRef` points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// An apps/v1 Deployment of this name (in the Rollout's namespace).
    Deployment(&'a str),
    /// A kind upstream resolves but this version does not (ReplicaSet,
    /// PodTemplate): the planner reports it as not implemented yet.
    NotImplemented(String),
    /// A reference upstream refuses too, with the message.
    Invalid(String),
}

/// Where `spec.workloadRef` points (None: the Rollout has no reference).
pub fn target(ro: &Rollout) -> Option<Target<'_>> {
    let r = ro.spec.workload_ref.as_ref()?;
    let api_version = r.api_version.as_deref().unwrap_or_default();
    let kind = r.kind.as_deref().unwrap_or_default();
    Some(match (group(api_version), kind) {
        ("apps", "Deployment") if api_version == "apps/v1" => {
            Target::Deployment(r.name.as_deref().unwrap_or_default())
        }
        // Upstream would look for the version in discovery and fail; no
        // served Kubernetes version has Deployments outside apps/v1.
        ("apps", "Deployment") => Target::Invalid(format!(
            "spec.workloadRef.apiVersion: Unsupported value: {api_version:?}: supported values: \"apps/v1\""
        )),
        ("apps", "ReplicaSet") | ("", "PodTemplate") => {
            Target::NotImplemented(format!("spec.workloadRef of kind {kind}"))
        }
        (g, k) => Target::Invalid(format!("workload of type {g}/{k} is not supported")),
    })
}

/// The name of the Deployment the shell should read, if any.
pub fn deployment_name(ro: &Rollout) -> Option<&str> {
    match target(ro)? {
        // An empty name cannot be read (a GET without a name is a list);
        // the planner reports it as not found.
        Target::Deployment(name) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The selector the Rollout works with: its own, else the Deployment's (as
/// upstream, which takes the workload's when the Rollout names none).
pub fn selector(ro: &Rollout, deployment: Option<&Deployment>) -> Option<LabelSelector> {
    ro.spec.selector.clone().or_else(|| {
        ro.spec.workload_ref.as_ref()?;
        deployment
            .and_then(|d| d.spec.as_ref())
            .map(|s| s.selector.clone())
    })
}

/// Why the reference cannot be resolved, as the InvalidSpec message (None:
/// it can, or there is no reference). Checked in upstream's order: a
/// template beside the reference, the kind, then the Deployment itself.
pub fn problem(snapshot: &Snapshot) -> Option<String> {
    let ro = &snapshot.rollout;
    let name = ro.metadata.name.as_deref().unwrap_or_default();
    let invalid = |detail: &str| format!("The Rollout {name:?} is invalid: {detail}");
    let target = target(ro)?;
    if !template_is_empty(ro.spec.template.as_ref()) {
        return Some(invalid(
            "template must be empty for workload reference rollout",
        ));
    }
    match target {
        Target::Deployment(deployment) => snapshot.workload.is_none().then(|| {
            // Upstream's informer lister reports the namespaced key.
            let ns = ro.metadata.namespace.as_deref().unwrap_or_default();
            invalid(&format!("deployments.apps \"{ns}/{deployment}\" not found"))
        }),
        Target::NotImplemented(what) => Some(super::not_implemented(name, &what)),
        Target::Invalid(detail) => Some(invalid(&detail)),
    }
}

/// The Rollout as if the Deployment's template (and, when the Rollout names
/// none, its selector) were written inline, and already annotated with the
/// Deployment's generation. None when there is no reference or no
/// Deployment to resolve it with ([`problem`] says why).
///
/// The annotation is there, as in upstream's resolver, so that a
/// ReplicaSet created by this plan copies it with the Rollout's other
/// annotations: upstream would add it to a ReplicaSet that lacks it.
/// [`actions`] records it on the Rollout itself, comparing with the
/// Rollout as read.
pub fn resolve(snapshot: &Snapshot) -> Option<Rollout> {
    let ro = &snapshot.rollout;
    ro.spec.workload_ref.as_ref()?;
    let deployment = snapshot.workload.as_ref()?;
    let mut resolved = ro.clone();
    resolved.spec.template = deployment.spec.as_ref().map(|s| s.template.clone());
    resolved.spec.selector = selector(ro, Some(deployment));
    if let Some(generation) = deployment.metadata.generation {
        resolved
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                WORKLOAD_GENERATION_ANNOTATION.into(),
                generation.to_string(),
            );
    }
    Some(resolved)
}

/// What a reconcile of a Rollout with a resolved reference adds to its
/// plan: the workload-generation annotation (status carries the same
/// value) and the Deployment's scale-down. `snapshot` holds the Rollout as
/// read, not as [`resolve`]d.
///
/// `scaleDown` (unset = never):
/// - `onsuccess`: the Deployment goes to 0 once the Rollout is Healthy.
/// - `progressively`: the Deployment runs `replicas - available` pods (the
///   Rollout's available pods over all its ReplicaSets, never below 0), so
///   the two together never have fewer pods available than the Rollout
///   asks for; Healthy means 0. A Deployment already at 0 stays there: the
///   migration is over, and the Rollout's later updates and scaling (an HPA)
///   must not start Deployment pods again (upstream #4321).
///
/// Upstream does this only while the Rollout is at revision 1 (#4681,
/// #4935); here it holds at every revision, so a Deployment scaled back up
/// by hand or by a GitOps sync is drained again once the Rollout is Healthy.
pub fn actions(snapshot: &Snapshot, status: &mut RolloutStatus) -> Vec<Action> {
    let ro = &snapshot.rollout;
    let recorded = ro
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WORKLOAD_GENERATION_ANNOTATION));
    let Some(deployment) = snapshot
        .workload
        .as_ref()
        .filter(|_| ro.spec.workload_ref.is_some())
    else {
        // No reference (any more): nothing observed, as upstream.
        status.workload_observed_generation = None;
        return recorded
            .map(|_| Action::SetWorkloadGeneration { generation: None })
            .into_iter()
            .collect();
    };
    let generation = deployment.metadata.generation.map(|g| g.to_string());
    status.workload_observed_generation = generation.clone();
    let mut actions = Vec::new();
    if recorded != generation.as_ref() {
        actions.push(Action::SetWorkloadGeneration { generation });
    }
    actions.extend(scale(snapshot, deployment, status));
    actions
}

/// The Deployment's new size under `scaleDown`, if it changes.
fn scale(snapshot: &Snapshot, deployment: &Deployment, status: &RolloutStatus) -> Option<Action> {
    let ro = &snapshot.rollout;
    let mode = ScaleDown::of(ro.spec.workload_ref.as_ref()?);
    let current = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let healthy = status.phase == Some(RolloutPhase::Healthy);
    let to = match mode {
        ScaleDown::Never => return None,
        ScaleDown::OnSuccess if healthy => 0,
        ScaleDown::OnSuccess => return None,
        ScaleDown::Progressively if healthy || current == 0 => 0,
        ScaleDown::Progressively => {
            let available: i32 = snapshot.replica_sets.iter().map(|rs| rs.available()).sum();
            (ro.spec.replicas_or_default() - available).max(0)
        }
    };
    (to != current).then(|| Action::ScaleDeployment {
        name: deployment.metadata.name.clone().unwrap_or_default(),
        from: current,
        to,
        resource_version: deployment.metadata.resource_version.clone(),
    })
}
