//! Dereference: from the caches, and the few objects no cache holds, to the
//! snapshot a plan is made from.
//!
//! Cached: the Rollout, its ReplicaSets and AnalysisRuns, the Services,
//! Ingresses and analysis templates it names. Read by name: the Deployment
//! a workloadRef names, the pods of a pending restart, a Service or run the
//! cache has not shown yet (just created), and ClusterAnalysisTemplates when
//! they are not watched. Caching every Deployment and pod in the cluster
//! would cost far more than these few reads.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tracing::info;

use std::collections::BTreeMap;

use super::caches::{Caches, Lookup, resolve_templates, slim_service};
use super::memo::Memos;
use super::{Context, Error};
use crate::analysis::template::Templates;
use crate::api::Rollout;
use crate::api::analysis::{AnalysisRun, AnalysisTemplateSpec, ClusterAnalysisTemplate};
use crate::rollout::hash::{POD_TEMPLATE_HASH_LABEL, format_selector};
use crate::rollout::plan::restart::needs_restart;
use crate::rollout::plan::workload;
use crate::rollout::snapshot::{ReplicaSetExt, Snapshot};
use crate::rollout::template_match;

/// The snapshot a reconcile plans from: the caches (its cached ReplicaSets
/// and Services are given), the reads they cannot answer, and what earlier
/// reconciles learnt (a refused template, the ReplicaSet an undo goes back to).
pub(super) async fn snapshot(
    ctx: &Context,
    ro: Rollout,
    replica_sets: Vec<ReplicaSet>,
    services: Vec<Service>,
    now: Timestamp,
) -> Result<Snapshot, Error> {
    let snapshot = complete(ctx, ro, replica_sets, services, now).await?;
    // Boxed: inline, its future deepens every reconcile's stack.
    Box::pin(with_template_twin(&ctx.client, &ctx.memos, snapshot)).await
}

/// After a conflict: the Rollout and its ReplicaSets read from the API
/// server rather than the caches (which may lag behind our own writes), the
/// rest as `snapshot`. Only this Rollout's ReplicaSets are listed (by its
/// selector): a namespace with thousands of Rollouts must not be listed
/// whole on every conflict. None: the Rollout is gone.
pub(super) async fn fresh(
    ctx: &Context,
    ro: &Rollout,
    now: Timestamp,
) -> Result<Option<Snapshot>, Error> {
    let ns = ro.namespace().unwrap_or_default();
    let name = ro.name_any();
    let Some(ro) = Api::<Rollout>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(read_error(format!("Rollout {ns}/{name}")))?
    else {
        return Ok(None);
    };
    let replica_sets = list_replica_sets(&ctx.client, &ro).await?;
    // Services read afresh too (none given as cached).
    let snapshot = complete(ctx, ro, replica_sets, vec![], now).await?;
    Box::pin(with_template_twin(&ctx.client, &ctx.memos, snapshot))
        .await
        .map(Some)
}

/// The snapshot from the caches alone, without a read, when the Rollout
/// needs none (see `needs_reads`): for placing a waiting reconcile.
pub(super) fn cached(caches: &Caches, memos: &Memos, ro: &Rollout) -> Snapshot {
    let uid = ro.uid().unwrap_or_default();
    let (templates, _) = caches.templates(ro);
    Snapshot::new(ro.clone(), caches.replica_sets(&uid))
        .with_services(caches.services(ro))
        .with_analysis(caches.runs(&uid), templates)
        .with_ingresses(caches.ingresses(ro))
        .with_rejected(memos.rejected(ro))
        .with_template_twin(memos.known_twin(ro))
}

/// Whether the Rollout's snapshot needs reads beyond the caches: a
/// workloadRef's Deployment (it changes without our write), the pods of a
/// pending restart, ClusterAnalysisTemplates no cache holds.
pub(super) fn needs_reads(caches: &Caches, ro: &Rollout, now: Timestamp) -> bool {
    workload::deployment_name(ro).is_some()
        || needs_restart(ro, now)
        || !caches.templates(ro).1.is_empty()
}

/// Completes a snapshot from the caches and the reads they cannot answer.
async fn complete(
    ctx: &Context,
    ro: Rollout,
    replica_sets: Vec<ReplicaSet>,
    mut services: Vec<Service>,
    now: Timestamp,
) -> Result<Snapshot, Error> {
    let client = &ctx.client;
    let ns = ro.namespace().unwrap_or_default();
    let rejected = ctx.memos.rejected(&ro);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    for name in Snapshot::service_names(&ro) {
        if services.iter().any(|s| s.name_any() == name) {
            continue;
        }
        let read = svc_api.get_opt(&name).await;
        if let Some(mut svc) = read.map_err(read_error(format!("Service {ns}/{name}")))? {
            slim_service(&mut svc);
            services.push(svc);
        }
    }
    // The Deployment a workloadRef names (the planner reports it missing).
    let workload = match workload::deployment_name(&ro) {
        Some(name) => Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt(name)
            .await
            .map_err(read_error(format!("Deployment {ns}/{name}")))?
            .map(|mut d| {
                d.managed_fields_mut().clear();
                d
            }),
        None => None,
    };
    let pods = if needs_restart(&ro, now) {
        // A workloadRef Rollout may name no selector: the Deployment's.
        let selector = format_selector(workload::selector(&ro, workload.as_ref()).as_ref());
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(read_error(format!("pods {selector} in {ns}")))?
            .items
    } else {
        vec![]
    };
    let runs = runs(ctx, &ro).await?;
    let templates = templates(ctx, &ro).await?;
    let ingresses = ctx.caches.ingresses(&ro);
    Ok(Snapshot::new(ro, replica_sets)
        .with_services(services)
        .with_pods(pods)
        .with_analysis(runs, templates)
        .with_ingresses(ingresses)
        .with_workload(workload)
        .with_rejected(rejected))
}

/// The cached runs of the Rollout, and a run its status names that the
/// cache has not shown yet (just created).
async fn runs(ctx: &Context, ro: &Rollout) -> Result<Vec<AnalysisRun>, Error> {
    let mut runs = ctx.caches.runs(&ro.uid().unwrap_or_default());
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
    let named = ro.status.iter().flat_map(|s| {
        [
            &s.canary.current_step_analysis_run_status,
            &s.canary.current_background_analysis_run_status,
            &s.blue_green.pre_promotion_analysis_run_status,
            &s.blue_green.post_promotion_analysis_run_status,
        ]
    });
    let names: Vec<String> = named.flatten().map(|r| r.name.clone()).collect();
    for name in names {
        if runs.iter().any(|r| r.name_any() == name) {
            continue;
        }
        let read = api.get_opt(&name).await;
        runs.extend(read.map_err(read_error(format!("AnalysisRun {ns}/{name}")))?);
    }
    Ok(runs)
}

/// The templates the Rollout refers to, from the caches; the
/// ClusterAnalysisTemplates no cache holds are read by name.
async fn templates(ctx: &Context, ro: &Rollout) -> Result<Templates, Error> {
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<ClusterAnalysisTemplate> = Api::all(ctx.client.clone());
    let mut read: BTreeMap<String, Option<AnalysisTemplateSpec>> = BTreeMap::new();
    // Each round reads what the last one found nested.
    loop {
        let (templates, not_cached) =
            resolve_templates(ro, |key| match ctx.caches.template(&ns, key) {
                Some(Lookup::NotCached) => match read.get(&key.1) {
                    Some(spec) => spec.clone().map(Lookup::Found),
                    None => Some(Lookup::NotCached),
                },
                other => other,
            });
        if not_cached.is_empty() {
            return Ok(templates);
        }
        for name in not_cached {
            let got = api.get_opt(&name).await;
            let got = got.map_err(read_error(format!("ClusterAnalysisTemplate {name}")))?;
            read.insert(name, got.map(|t| t.spec.template));
        }
    }
}

/// When no hash finds the template's ReplicaSet although the Rollout has
/// some, looks for one with the same template, the API server's defaults
/// applied (`template_match`: after an undo). The answer is remembered by
/// template hash, so a template costs one dry run and one list, not one
/// per reconcile.
async fn with_template_twin(
    client: &Client,
    memos: &Memos,
    snapshot: Snapshot,
) -> Result<Snapshot, Error> {
    let resolved = workload::resolve(&snapshot);
    let ro = resolved.as_ref().unwrap_or(&snapshot.rollout);
    let Some(template) = ro.spec.template.as_ref() else {
        return Ok(snapshot);
    };
    let collisions = ro.status.as_ref().and_then(|s| s.collision_count);
    let Some(hash) = template_match::unmatched_hash(&snapshot, template, collisions) else {
        return Ok(snapshot);
    };
    let twin = match memos.twin(&snapshot.rollout) {
        Some((of, twin)) if of == hash => twin,
        _ => {
            let twin = find_twin(client, ro, template).await?;
            if let Some(twin) = &twin {
                info!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), template_hash = %hash, replicaset_hash = %twin, "no ReplicaSet carries the template's hash, but this one has the same template once defaulted (an undo): going back to it");
            }
            memos.remember_twin(&snapshot.rollout, Some((hash.clone(), twin.clone())));
            twin
        }
    };
    Ok(snapshot.with_template_twin(twin.map(|t| (hash, t))))
}

/// The hash of the oldest ReplicaSet of `ro` whose template is `template`
/// once the API server has defaulted it (a server-side dry run of the
/// ReplicaSet this template would get). None when there is none, or the
/// API server refuses the template (the create says why, later).
async fn find_twin(
    client: &Client,
    ro: &Rollout,
    template: &PodTemplateSpec,
) -> Result<Option<String>, Error> {
    let ns = ro.namespace().unwrap_or_default();
    let probe = ReplicaSet {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ro.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            selector: ro.spec.selector.clone().unwrap_or_default(),
            template: Some(template.clone()),
            ..Default::default()
        }),
        status: None,
    };
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let defaulted = match Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .create(&dry_run, &probe)
        .await
    {
        Ok(rs) => rs.spec.and_then(|s| s.template),
        Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => None,
        Err(e) => return Err(read_error(format!("a dry run of a ReplicaSet in {ns}"))(e)),
    };
    let Some(defaulted) = defaulted else {
        return Ok(None);
    };
    let listed = list_replica_sets(client, ro).await?;
    let mut owned = Snapshot::new(ro.clone(), listed).replica_sets;
    // Upstream takes the oldest that matches.
    owned.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(owned
        .iter()
        .find(|rs| template_match::same_template(rs, &defaulted))
        .and_then(|rs| rs.pod_hash().map(str::to_string)))
}

/// The ReplicaSets that may be the Rollout's, read from the API server
/// (the cache keeps no pod templates).
async fn list_replica_sets(client: &Client, ro: &Rollout) -> Result<Vec<ReplicaSet>, Error> {
    let ns = ro.namespace().unwrap_or_default();
    // A workloadRef Rollout may name no selector.
    let selector = match format_selector(ro.spec.selector.as_ref()) {
        s if s.is_empty() || s == "<none>" => POD_TEMPLATE_HASH_LABEL.to_string(),
        s => format!("{s},{POD_TEMPLATE_HASH_LABEL}"),
    };
    Ok(Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(read_error(format!("ReplicaSets {selector} in {ns}")))?
        .items)
}

fn read_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Read { what, source }
}
