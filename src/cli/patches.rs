//! What each verb patches, as upstream's plugin does: promote, abort, retry
//! and promote --full write the status subresource; pause and restart write
//! the spec; set image and undo replace the pod template, which for a
//! Rollout with `spec.workloadRef` is the referenced Deployment's.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::Rollout;
use crate::controller::patch::merge_diff;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::workload::{self, Target};
use crate::rollout::snapshot::ReplicaSetExt;

/// Why a verb cannot be applied to the object as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerbError {
    #[error("rollout '{0}' has nothing to promote: it is not paused and no update is in progress")]
    NothingToPromote(String),
    #[error("unable to find container named \"{container}\" in rollout '{rollout}'")]
    ContainerNotFound { rollout: String, container: String },
    #[error("rollout '{0}' has no pod template (spec.template)")]
    NoTemplate(String),
    #[error("unable to find specified revision {revision} in the history of rollout '{rollout}'")]
    RevisionNotFound { rollout: String, revision: i64 },
    #[error("no previous revision found for rollout '{0}'")]
    NoPreviousRevision(String),
    /// A workloadRef the plugin cannot follow (upstream's wording).
    #[error("rollout '{rollout}': {message}")]
    Workload { rollout: String, message: String },
}

/// Where a Rollout's pod template lives, for the verbs that change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateHome {
    /// spec.template of the Rollout itself.
    Rollout,
    /// spec.template of this Deployment (the Rollout's workloadRef).
    Deployment(String),
}

/// `set image` and `undo` change the Deployment a workloadRef names, as
/// upstream's plugin does (the Rollout has no template of its own).
pub fn template_home(ro: &Rollout) -> Result<TemplateHome, VerbError> {
    let rollout = ro.metadata.name.clone().unwrap_or_default();
    let message = match workload::target(ro) {
        None => return Ok(TemplateHome::Rollout),
        Some(Target::Deployment(name)) if !name.is_empty() => {
            return Ok(TemplateHome::Deployment(name.to_string()));
        }
        Some(Target::Deployment(_)) => "spec.workloadRef.name is empty".to_string(),
        Some(Target::NotImplemented(what)) => {
            format!("{what} is not supported by this version")
        }
        Some(Target::Invalid(message)) => message,
    };
    Err(VerbError::Workload { rollout, message })
}

/// The merge patch that turns a workload's pod template `current` into
/// `wanted` (`{"spec":{"template": diff}}`, fields `wanted` lacks removed);
/// None when they are equal.
pub fn template_patch(current: &PodTemplateSpec, wanted: &PodTemplateSpec) -> Option<Value> {
    let current = serde_json::to_value(current).unwrap_or(Value::Null);
    let wanted = serde_json::to_value(wanted).unwrap_or(Value::Null);
    merge_diff(&current, &wanted).map(|diff| json!({"spec": {"template": diff}}))
}

/// A change to send: to the spec (main resource) and/or the status
/// subresource, each a JSON merge patch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patches {
    pub spec: Option<Value>,
    pub status: Option<Value>,
}

/// `promote [--full]`. Without --full: unpause a manually paused rollout,
/// clear the pause conditions, or (canary, in the middle of a step such as
/// an analysis) move to the next step; after an inconclusive analysis also
/// clear controllerPause and move on. With --full: skip all remaining steps.
pub fn promote(ro: &Rollout, full: bool) -> Result<Patches, VerbError> {
    let name = ro.metadata.name.clone().unwrap_or_default();
    let status = ro.status.clone().unwrap_or_default();
    let unpause = ro.spec.paused.then(|| json!({"spec": {"paused": false}}));
    let updating = status.current_pod_hash != status.stable_rs;
    if full {
        let status_patch = updating.then(|| json!({"status": {"promoteFull": true}}));
        if unpause.is_none() && status_patch.is_none() {
            return Err(VerbError::NothingToPromote(name));
        }
        return Ok(Patches {
            spec: unpause,
            status: status_patch,
        });
    }
    let canary = ro.spec.strategy.canary.as_ref();
    let steps = canary.map_or(0, |c| c.steps.len()) as i32;
    let next = || (status.current_step_index.unwrap_or(0) + 1).min(steps);
    let inconclusive = status
        .canary
        .current_step_analysis_run_status
        .as_ref()
        .is_some_and(|r| r.status == "Inconclusive");
    let status_patch = if inconclusive
        && !status.pause_conditions.is_empty()
        && status.controller_pause
        && steps > 0
    {
        Some(
            json!({"status": {"pauseConditions": null, "controllerPause": false, "currentStepIndex": next()}}),
        )
    } else if !status.pause_conditions.is_empty() {
        Some(json!({"status": {"pauseConditions": null}}))
    } else if canary.is_some() && steps > 0 && updating {
        Some(json!({"status": {"pauseConditions": null, "currentStepIndex": next()}}))
    } else {
        None
    };
    if unpause.is_none() && status_patch.is_none() {
        return Err(VerbError::NothingToPromote(name));
    }
    Ok(Patches {
        spec: unpause,
        status: status_patch,
    })
}

pub fn abort() -> Value {
    json!({"status": {"abort": true}})
}

pub fn retry() -> Value {
    json!({"status": {"abort": false}})
}

pub fn pause() -> Value {
    json!({"spec": {"paused": true}})
}

/// `restart [--in D]`: pods older than `at` are replaced.
pub fn restart(at: Timestamp) -> Value {
    json!({"spec": {"restartAt": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}})
}

/// `set image CONTAINER=IMAGE` (`*` for every container): the template with
/// the image changed in containers, initContainers and ephemeralContainers.
pub fn set_image(
    name: &str,
    template: &PodTemplateSpec,
    container: &str,
    image: &str,
) -> Result<PodTemplateSpec, VerbError> {
    let mut t = template.clone();
    let mut found = false;
    if let Some(spec) = t.spec.as_mut() {
        let mut set = |ctr_name: &str, ctr_image: &mut Option<String>| {
            if container == "*" || ctr_name == container {
                *ctr_image = Some(image.to_string());
                found = true;
            }
        };
        for c in spec.init_containers.iter_mut().flatten() {
            set(&c.name, &mut c.image);
        }
        for c in spec.containers.iter_mut() {
            set(&c.name, &mut c.image);
        }
        for c in spec.ephemeral_containers.iter_mut().flatten() {
            set(&c.name, &mut c.image);
        }
    }
    if !found {
        return Err(VerbError::ContainerNotFound {
            rollout: name.to_string(),
            container: container.to_string(),
        });
    }
    Ok(t)
}

/// `undo [--to-revision N]`: the template of revision N (default: the one
/// before the newest), without the hash label; None when the Rollout's
/// template already is that one.
pub fn undo(
    ro: &Rollout,
    replica_sets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<Option<PodTemplateSpec>, VerbError> {
    let name = ro.metadata.name.clone().unwrap_or_default();
    let template = revision_template(&name, replica_sets, to_revision)?;
    let current = ro
        .spec
        .template
        .clone()
        .ok_or_else(|| VerbError::NoTemplate(name.clone()))?;
    Ok((current != template).then_some(template))
}

/// The pod template of revision N of a Rollout (default: the one before the
/// newest), from its ReplicaSet, without the hash label. For a workloadRef
/// Rollout this goes into the Deployment, as upstream's undo does.
pub fn revision_template(
    name: &str,
    replica_sets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<PodTemplateSpec, VerbError> {
    let mut by_revision: Vec<&ReplicaSet> =
        replica_sets.iter().filter(|rs| rs.revision() > 0).collect();
    by_revision.sort_by_key(|rs| std::cmp::Reverse(rs.revision()));
    let target = match to_revision.filter(|r| *r > 0) {
        Some(revision) => by_revision
            .iter()
            .find(|rs| rs.revision() == revision)
            .ok_or(VerbError::RevisionNotFound {
                rollout: name.to_string(),
                revision,
            })?,
        None => by_revision
            .get(1)
            .ok_or_else(|| VerbError::NoPreviousRevision(name.to_string()))?,
    };
    let mut template = target
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::rollout::{
        CanaryStep, CanaryStrategy, PauseCondition, RolloutAnalysisRunStatus, RolloutSpec,
        RolloutStatus, RolloutStrategy,
    };

    fn canary(steps: usize, status: RolloutStatus) -> Rollout {
        let mut ro = Rollout::new(
            "web",
            RolloutSpec {
                strategy: RolloutStrategy {
                    canary: Some(CanaryStrategy {
                        steps: vec![CanaryStep::default(); steps],
                        ..Default::default()
                    }),
                    blue_green: None,
                },
                template: Some(template("app:1")),
                ..Default::default()
            },
        );
        ro.status = Some(status);
        ro
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        image: Some("proxy:1".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        }
    }

    fn updating() -> RolloutStatus {
        RolloutStatus {
            current_pod_hash: Some("new".into()),
            stable_rs: Some("old".into()),
            current_step_index: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn promote_patches_what_upstream_patches() {
        let mut paused_status = updating();
        paused_status.pause_conditions = vec![PauseCondition {
            reason: "CanaryPauseStep".into(),
            start_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        }];
        paused_status.controller_pause = true;
        let p = promote(&canary(4, paused_status.clone()), false).unwrap();
        assert_eq!(p.status, Some(json!({"status": {"pauseConditions": null}})));
        assert_eq!(p.spec, None);

        // In the middle of a step (an analysis): the next step.
        let p = promote(&canary(4, updating()), false).unwrap();
        assert_eq!(
            p.status,
            Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 2}}))
        );

        // After an inconclusive analysis: also controllerPause.
        let mut s = paused_status.clone();
        s.canary.current_step_analysis_run_status = Some(RolloutAnalysisRunStatus {
            name: "r".into(),
            status: "Inconclusive".into(),
            message: None,
        });
        let p = promote(&canary(4, s), false).unwrap();
        assert_eq!(
            p.status,
            Some(
                json!({"status": {"pauseConditions": null, "controllerPause": false, "currentStepIndex": 2}})
            )
        );

        // A manual pause: the spec.
        let mut ro = canary(4, paused_status);
        ro.spec.paused = true;
        let p = promote(&ro, false).unwrap();
        assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));

        let p = promote(&canary(4, updating()), true).unwrap();
        assert_eq!(p.status, Some(json!({"status": {"promoteFull": true}})));

        // Settled: nothing to promote.
        let settled = RolloutStatus {
            current_pod_hash: Some("a".into()),
            stable_rs: Some("a".into()),
            current_step_index: Some(4),
            ..Default::default()
        };
        let e = promote(&canary(4, settled.clone()), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rollout 'web' has nothing to promote: it is not paused and no update is in progress"
        );
        assert!(promote(&canary(4, settled), true).is_err());
    }

    #[test]
    fn set_image_changes_the_named_container_or_all() {
        let t = template("app:1");
        let one = set_image("web", &t, "app", "app:2").unwrap();
        let images: Vec<_> = one
            .spec
            .unwrap()
            .containers
            .into_iter()
            .map(|c| c.image.unwrap())
            .collect();
        assert_eq!(images, ["app:2", "proxy:1"]);
        let all = set_image("web", &t, "*", "x:9").unwrap();
        assert!(
            all.spec
                .unwrap()
                .containers
                .iter()
                .all(|c| c.image.as_deref() == Some("x:9"))
        );
        assert_eq!(
            set_image("web", &t, "nope", "x").unwrap_err().to_string(),
            "unable to find container named \"nope\" in rollout 'web'"
        );
    }

    #[test]
    fn undo_takes_the_previous_or_named_revision_without_the_hash_label() {
        let rs = |revision: i64, image: &str| {
            let mut t = template(image);
            t.metadata
                .as_mut()
                .unwrap()
                .labels
                .as_mut()
                .unwrap()
                .insert(POD_TEMPLATE_HASH_LABEL.into(), format!("h{revision}"));
            let mut r = ReplicaSet::default();
            r.metadata.annotations = Some(
                [(
                    "rollout.argoproj.io/revision".to_string(),
                    revision.to_string(),
                )]
                .into(),
            );
            r.spec = Some(ReplicaSetSpec {
                template: Some(t),
                ..Default::default()
            });
            r
        };
        let ro = canary(0, RolloutStatus::default()); // at app:1
        let rss = vec![rs(1, "app:0"), rs(2, "app:1"), rs(3, "app:1b")];
        // Default: the one before the newest (revision 2) — already current.
        assert_eq!(undo(&ro, &rss, None).unwrap(), None);
        let back = undo(&ro, &rss, Some(1)).unwrap().unwrap();
        assert_eq!(
            back.spec.unwrap().containers[0].image.as_deref(),
            Some("app:0")
        );
        assert!(
            !back
                .metadata
                .unwrap()
                .labels
                .unwrap()
                .contains_key(POD_TEMPLATE_HASH_LABEL)
        );
        assert_eq!(
            undo(&ro, &rss, Some(7)).unwrap_err().to_string(),
            "unable to find specified revision 7 in the history of rollout 'web'"
        );
        assert!(matches!(
            undo(&ro, &rss[..1], None),
            Err(VerbError::NoPreviousRevision(_))
        ));
    }

    fn with_workload_ref(api_version: &str, kind: &str, name: &str) -> Rollout {
        let mut ro = canary(0, RolloutStatus::default());
        ro.spec.template = None;
        ro.spec.workload_ref = Some(crate::api::rollout::ObjectRef {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(name.into()),
            scale_down: None,
        });
        ro
    }

    #[test]
    fn a_workload_ref_sends_template_changes_to_the_deployment() {
        assert_eq!(
            template_home(&canary(0, RolloutStatus::default())),
            Ok(TemplateHome::Rollout)
        );
        let ro = with_workload_ref("apps/v1", "Deployment", "web-deploy");
        assert_eq!(
            template_home(&ro),
            Ok(TemplateHome::Deployment("web-deploy".into()))
        );
        assert_eq!(
            template_home(&with_workload_ref("apps/v1", "StatefulSet", "x"))
                .unwrap_err()
                .to_string(),
            "rollout 'web': workload of type apps/StatefulSet is not supported"
        );
        assert!(template_home(&with_workload_ref("apps/v1", "Deployment", "")).is_err());

        // set image: only the container's image changes in the Deployment.
        let current = template("app:1");
        let updated = set_image("web", &current, "app", "app:2").unwrap();
        assert_eq!(
            template_patch(&current, &updated),
            Some(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2"},
                {"name": "sidecar", "image": "proxy:1"}
            ]}}}}))
        );
        assert_eq!(template_patch(&current, &current), None);
    }

    #[test]
    fn undo_of_a_workload_ref_replaces_the_deployment_template() {
        let mut old = template("app:0");
        old.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .extend([(POD_TEMPLATE_HASH_LABEL.to_string(), "h1".to_string())]);
        let rs = |revision: i64, t: PodTemplateSpec| {
            let mut r = ReplicaSet::default();
            r.metadata.annotations = Some(
                [(
                    "rollout.argoproj.io/revision".to_string(),
                    revision.to_string(),
                )]
                .into(),
            );
            r.spec = Some(ReplicaSetSpec {
                template: Some(t),
                ..Default::default()
            });
            r
        };
        // The Deployment now has an annotation revision 1 did not have.
        let mut current = template("app:1");
        current.metadata.as_mut().unwrap().annotations =
            Some([("team".to_string(), "a".to_string())].into());
        let rss = vec![rs(1, old), rs(2, current.clone())];
        let target = revision_template("web", &rss, None).unwrap();
        assert_eq!(
            template_patch(&current, &target),
            Some(json!({"spec": {"template": {
                "metadata": {"annotations": null},
                "spec": {"containers": [
                    {"name": "app", "image": "app:0"},
                    {"name": "sidecar", "image": "proxy:1"}
                ]}
            }}}))
        );
        assert!(matches!(
            revision_template("web", &rss, Some(9)),
            Err(VerbError::RevisionNotFound { revision: 9, .. })
        ));
    }
}
