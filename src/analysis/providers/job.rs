//! The job provider: each measurement is a Kubernetes Job built from the
//! metric's spec, named, labelled and owned as upstream's. The Job completing
//! is Successful, failing is Failed; a pod stuck on an image it cannot pull
//! is Inconclusive (a person has to look). Terminating deletes the Job.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::info;

use super::error;
use crate::api::analysis::{AnalysisPhase, AnalysisRun, JobMetric, Measurement, Metric};

/// Label on the Job and its pods: the owning run's UID.
pub const RUN_UID_LABEL: &str = "analysisrun.argoproj.io/uid";
pub const RUN_NAME_ANNOTATION: &str = "analysisrun.argoproj.io/name";
pub const RUN_NAMESPACE_ANNOTATION: &str = "analysisrun.argoproj.io/namespace";
pub const METRIC_NAME_ANNOTATION: &str = "analysisrun.argoproj.io/metric-name";
/// Measurement metadata naming the Job.
pub const JOB_NAME_KEY: &str = "job-name";
pub const JOB_NAMESPACE_KEY: &str = "job-namespace";
const DNS_LABEL_LIMIT: usize = 63;
/// Container waiting reasons a Job never recovers from by itself.
const TERMINAL_WAITING_REASONS: [&str; 3] =
    ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// `<run-uid>.<metric>.<n>`, n = measurements taken so far + 1; the metric
/// name is shortened when the whole would exceed 63 characters.
pub fn job_name(run: &AnalysisRun, metric: &str) -> String {
    let uid = run.metadata.uid.as_deref().unwrap_or_default();
    let results = run.status.iter().flat_map(|s| &s.metric_results);
    let n = results
        .filter(|r| r.name == metric)
        .map(|r| r.count + r.error + 1)
        .next()
        .unwrap_or(1);
    let name = format!("{uid}.{metric}.{n}");
    if name.len() <= DNS_LABEL_LIMIT {
        return name;
    }
    let keep = metric
        .len()
        .saturating_sub(name.len() - DNS_LABEL_LIMIT)
        .min(metric.len());
    let mut cut = keep;
    while !metric.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{uid}.{}.{n}", &metric[..cut])
}

/// The Job for the next measurement of `metric`.
pub fn build(run: &AnalysisRun, metric: &Metric, spec: &JobMetric) -> Job {
    let uid = run.metadata.uid.clone().unwrap_or_default();
    let meta = spec.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(RUN_UID_LABEL.into(), uid.clone());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(RUN_NAME_ANNOTATION.into(), run.name_any());
    annotations.insert(
        RUN_NAMESPACE_ANNOTATION.into(),
        run.namespace().unwrap_or_default(),
    );
    annotations.insert(METRIC_NAME_ANNOTATION.into(), metric.name.clone());
    let mut job_spec = spec.spec.clone();
    // The pods carry the run's UID too, so they can be found from the run.
    job_spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(RUN_UID_LABEL.into(), uid);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(run, &metric.name)),
            namespace: run.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner(run).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(job_spec),
        status: None,
    }
}

fn owner(run: &AnalysisRun) -> Option<OwnerReference> {
    let mut o = run.controller_owner_ref(&())?;
    o.block_owner_deletion = Some(true);
    Some(o)
}

/// Starts a measurement: creates its Job (a Job of the same name this run
/// already created is taken over, as after a restart).
pub async fn run(
    client: &Client,
    run: &AnalysisRun,
    metric: &Metric,
    spec: &JobMetric,
) -> Measurement {
    let started = Timestamp::now();
    let job = build(run, metric, spec);
    let name = job.name_any();
    let ns = run.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => match api.get(&name).await {
            Ok(existing) if owned_by(&existing, run) => {
                info!(job = %name, "job already created by this run; taking it over");
            }
            Ok(_) => {
                return error(
                    started,
                    format!(
                        "job {ns}/{name} already exists and does not belong to this AnalysisRun"
                    ),
                );
            }
            Err(e) => return error(started, format!("job {ns}/{name}: {e}")),
        },
        Err(e) => return error(started, format!("creating job {ns}/{name}: {e}")),
    }
    info!(job = %name, namespace = %ns, "job created");
    Measurement {
        phase: AnalysisPhase::Running,
        message: None,
        started_at: Some(Time(started)),
        finished_at: None,
        value: None,
        metadata: Some(BTreeMap::from([
            (JOB_NAME_KEY.into(), name),
            (JOB_NAMESPACE_KEY.into(), ns),
        ])),
        // Looked at again at once, to catch Jobs that finish quickly.
        resume_at: Some(Time(started)),
    }
}

fn owned_by(job: &Job, run: &AnalysisRun) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == run.metadata.uid.as_ref())
}

/// The Job behind an in-flight measurement.
fn job_ref(m: &Measurement, default_ns: &str) -> Result<(String, String), String> {
    let meta = m.metadata.as_ref();
    let name = meta
        .and_then(|md| md.get(JOB_NAME_KEY))
        .filter(|n| !n.is_empty())
        .ok_or("job metadata reference missing")?;
    let ns = meta
        .and_then(|md| md.get(JOB_NAMESPACE_KEY))
        .filter(|n| !n.is_empty())
        .map_or(default_ns, |n| n.as_str());
    Ok((ns.to_string(), name.clone()))
}

/// Looks at an in-flight measurement's Job.
pub async fn resume(client: &Client, run: &AnalysisRun, mut m: Measurement) -> Measurement {
    let started = m.started_at.as_ref().map_or(Timestamp::now(), |t| t.0);
    let (ns, name) = match job_ref(&m, &run.namespace().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return fail(m, e),
    };
    let job = match Api::<Job>::namespaced(client.clone(), &ns).get(&name).await {
        Ok(j) => j,
        Err(e) => return fail(m, format!("job {ns}/{name}: {e}")),
    };
    let now = Timestamp::now();
    if let Some(phase) = job_phase(&job) {
        info!(job = %name, phase = phase.as_str(), "job finished");
        m.phase = phase;
        m.finished_at = Some(Time(now));
        return m;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await;
    match pods {
        Ok(pods) => {
            if let Some(problem) = pod_problem(&pods.items) {
                m.phase = AnalysisPhase::Inconclusive;
                m.message = Some(problem);
                m.finished_at = Some(Time(now));
                return m;
            }
        }
        Err(e) => return fail(m, format!("listing pods of job {ns}/{name}: {e}")),
    }
    m.resume_at = Some(Time(now + resume_delay(started, now)));
    m
}

/// Ends an in-flight measurement early: its Job is deleted.
pub async fn terminate(client: &Client, run: &AnalysisRun, mut m: Measurement) -> Measurement {
    let (ns, name) = match job_ref(&m, &run.namespace().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return fail(m, e),
    };
    if let Err(e) = delete(client, &ns, &name).await {
        return fail(m, e);
    }
    info!(job = %name, "job terminated");
    m.phase = AnalysisPhase::Inconclusive;
    m.finished_at = Some(Time(Timestamp::now()));
    m
}

/// Deletes the Jobs of measurements no longer kept in the status.
pub async fn garbage_collect(client: &Client, run: &AnalysisRun, dropped: &[Measurement]) {
    let default_ns = run.namespace().unwrap_or_default();
    for m in dropped {
        if let Ok((ns, name)) = job_ref(m, &default_ns)
            && let Err(e) = delete(client, &ns, &name).await
        {
            tracing::warn!(job = %name, error = %e, "could not garbage-collect job");
        }
    }
}

async fn delete(client: &Client, ns: &str, name: &str) -> Result<(), String> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    match Api::<Job>::namespaced(client.clone(), ns)
        .delete(name, &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!("deleting job {ns}/{name}: {e}")),
    }
}

fn fail(m: Measurement, message: String) -> Measurement {
    let started = m.started_at.as_ref().map_or(Timestamp::now(), |t| t.0);
    Measurement {
        metadata: m.metadata,
        ..error(started, message)
    }
}

/// Successful once the Job is Complete, Failed once it Failed.
pub fn job_phase(job: &Job) -> Option<AnalysisPhase> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if holds("Failed") {
        Some(AnalysisPhase::Failed)
    } else if holds("Complete") {
        Some(AnalysisPhase::Successful)
    } else {
        None
    }
}

/// Why a Job's pods will never run, if they won't (an image that cannot be
/// pulled), in upstream's wording.
pub fn pod_problem(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let all = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        all.filter_map(|cs: &ContainerStatus| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            TERMINAL_WAITING_REASONS.contains(&reason).then(|| {
                format!(
                    "Pod {}, container {} has terminal error ({reason}): {}",
                    pod.name_any(),
                    cs.name,
                    waiting.message.as_deref().unwrap_or_default()
                )
            })
        })
        .next()
    })
}

/// Upstream's growing delay between looks: sqrt(2 * seconds running).
fn resume_delay(started: Timestamp, now: Timestamp) -> Duration {
    let elapsed = (now.as_millisecond() - started.as_millisecond()).max(0) as f64 / 1000.0;
    Duration::from_secs_f64((2.0 * elapsed).sqrt().max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::{AnalysisRunSpec, AnalysisRunStatus, MetricResult};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PodStatus};

    fn run_with(uid: &str, counts: Option<(i32, i32)>) -> AnalysisRun {
        let mut run = AnalysisRun::new("run", AnalysisRunSpec::default());
        run.metadata.namespace = Some("ns".into());
        run.metadata.uid = Some(uid.into());
        if let Some((count, err)) = counts {
            run.status = Some(AnalysisRunStatus {
                metric_results: vec![MetricResult {
                    name: "check".into(),
                    phase: AnalysisPhase::Running,
                    measurements: vec![],
                    message: None,
                    count,
                    successful: 0,
                    failed: 0,
                    inconclusive: 0,
                    error: err,
                    consecutive_error: 0,
                    consecutive_success: 0,
                    dry_run: false,
                    metadata: None,
                }],
                ..Default::default()
            });
        }
        run
    }

    const UID: &str = "3f1a6c2e-1111-2222-3333-444455556666";

    #[test]
    fn jobs_are_named_by_run_uid_metric_and_measurement_number() {
        assert_eq!(
            job_name(&run_with(UID, None), "check"),
            format!("{UID}.check.1")
        );
        assert_eq!(
            job_name(&run_with(UID, Some((2, 1))), "check"),
            format!("{UID}.check.4")
        );
        let long = "a-very-long-metric-name-that-does-not-fit";
        let name = job_name(&run_with(UID, None), long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&format!("{UID}.a-very")) && name.ends_with(".1"));
    }

    #[test]
    fn the_job_is_labelled_annotated_and_owned_by_the_run() {
        let run = run_with(UID, None);
        let metric = Metric {
            name: "check".into(),
            ..Default::default()
        };
        let job = build(&run, &metric, &JobMetric::default());
        assert_eq!(
            job.labels().get(RUN_UID_LABEL).map(String::as_str),
            Some(UID)
        );
        assert_eq!(
            job.annotations()
                .get(METRIC_NAME_ANNOTATION)
                .map(String::as_str),
            Some("check")
        );
        let owner = &job.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("AnalysisRun", UID)
        );
        assert_eq!(owner.controller, Some(true));
        let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels.get(RUN_UID_LABEL).map(String::as_str), Some(UID));
    }

    fn job_with(conditions: &[(&str, &str)]) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| JobCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn job_conditions_decide_the_measurement() {
        assert_eq!(job_phase(&job_with(&[])), None);
        assert_eq!(
            job_phase(&job_with(&[("Complete", "True")])),
            Some(AnalysisPhase::Successful)
        );
        assert_eq!(
            job_phase(&job_with(&[("FailureTarget", "True"), ("Failed", "True")])),
            Some(AnalysisPhase::Failed)
        );
        assert_eq!(job_phase(&job_with(&[("Complete", "False")])), None);
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_reported() {
        let pod = |reason: &str| Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("not found".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_problem(&[pod("ContainerCreating")]), None);
        assert_eq!(
            pod_problem(&[pod("ContainerCreating"), pod("ImagePullBackOff")]).as_deref(),
            Some("Pod p, container c has terminal error (ImagePullBackOff): not found")
        );
    }

    #[test]
    fn looks_at_a_running_job_less_often_as_it_runs_longer() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        assert_eq!(resume_delay(t0, t0), Duration::from_secs(1));
        assert_eq!(resume_delay(t0, at(50)), Duration::from_secs(10));
    }
}
