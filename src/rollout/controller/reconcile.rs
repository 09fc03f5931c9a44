//! One reconcile of a Rollout, as a pipeline:
//!
//! 1. dereference: the caches (and the few reads they cannot answer) to a
//!    snapshot (`dereference`);
//! 2. plan: validation first (an invalid spec plans the InvalidSpec
//!    condition and nothing else), then the decisions (`crate::rollout::plan`,
//!    pure);
//! 3. apply: the plan's writes, the status last (`crate::rollout::apply`),
//!    and its Events;
//! 4. record: the versions written, so that the next reconcile waits for
//!    the caches to show them (`crate::controller::freshness`).
//!
//! A reconcile plans again at most once for each of three reasons, in one
//! bounded loop (`plan_and_apply`): after creating the new ReplicaSet (from
//! what the API server returned), after the API server refused it (knowing
//! why), and after a conflict (from a fresh read).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::caches::{slim_replica_set, slim_rollout};
use super::{Context, Error, dereference};
use crate::api::Rollout;
use crate::controller::freshness::Version;
use crate::controller::requeue_since;
use crate::rollout::apply::{Applied, ApplyError, apply};
use crate::rollout::plan::{Plan, after_create, events, plan};
use crate::rollout::snapshot::Snapshot;

/// A settled rollout is still looked at this often, so a missed watch
/// event cannot leave it stale for long.
const RESYNC: Duration = Duration::from_secs(300);

/// How soon to look again at a Rollout whose cached copy is behind our own
/// write, should its watch event not come.
const BEHIND_RETRY: Duration = Duration::from_secs(2);

pub(super) async fn reconcile(ro: &Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let uid = ro.uid().unwrap_or_default();
    if ro.meta().deletion_timestamp.is_some() {
        ctx.forget(&uid);
        return Ok(Requeue::await_change());
    }
    ctx.caches.synced().await?;
    // Our last writes to this Rollout, its ReplicaSets or its Services have
    // not reached the cache yet: a plan from the older copies would only
    // meet a conflict (and a re-read). The watch events of those writes
    // bring the Rollout back; the requeue is a safety net.
    let replica_sets = ctx.caches.replica_sets(&uid);
    let services = ctx.caches.services(ro);
    if behind(ctx, ro, &replica_sets, &services) {
        debug!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), "cache behind our own write; waiting for it");
        return Ok(Requeue::requeue(BEHIND_RETRY));
    }
    let (now, planned_at) = (Timestamp::now(), Instant::now());
    let snapshot = dereference::snapshot(ctx, (**ro).clone(), replica_sets, services, now).await?;
    let mut versions = Vec::new();
    let planned = plan_and_apply(ctx, snapshot, now, &mut versions).await;
    // Also after a failure: what was written is written.
    ctx.freshness.record(&uid, versions);
    let Some(plan) = planned? else {
        debug!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), "the Rollout is gone");
        return Ok(Requeue::await_change());
    };
    ctx.backoff.succeeded(&ObjectRef::from_obj(&**ro));
    Ok(requeue_since(
        planned_at,
        plan.requeue_after.unwrap_or(RESYNC).min(RESYNC),
    ))
}

/// Whether the cached Rollout, or one of its cached ReplicaSets or
/// Services, is older than what the last reconcile wrote to it.
fn behind(ctx: &Context, ro: &Rollout, replica_sets: &[ReplicaSet], services: &[Service]) -> bool {
    let uid = ro.uid().unwrap_or_default();
    std::iter::once(&ro.metadata)
        .chain(replica_sets.iter().map(|rs| &rs.metadata))
        .chain(services.iter().map(|svc| &svc.metadata))
        .any(|meta| ctx.freshness.is_behind(&uid, meta))
}

/// Why a reconcile plans again; each at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replan {
    /// The new ReplicaSet was created: plan from what the API server
    /// returned (`after_create`), so it is scaled in the same reconcile.
    Created,
    /// The API server refused the pod template: plan knowing it, which
    /// reports InvalidSpec and creates nothing.
    Rejected,
    /// Someone changed what the plan was based on, or the caches lag
    /// behind our own writes: plan from the API server itself.
    Conflict,
}

/// Plans and applies, and plans again as `Replan` says, at most once per
/// reason. Every version written or read afresh is added to `versions`.
/// The last plan applied; None when the Rollout turned out to be gone.
pub(super) async fn plan_and_apply(
    ctx: &Context,
    mut snapshot: Snapshot,
    now: Timestamp,
    versions: &mut Vec<Version>,
) -> Result<Option<Plan>, Error> {
    let mut replanned: Vec<Replan> = Vec::new();
    loop {
        let ro = &snapshot.rollout;
        let plan = plan(&snapshot, now);
        if !plan.actions.is_empty() {
            debug!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), actions = ?plan.actions, "plan");
        }
        let mut applied = Applied::default();
        let result = apply(&ctx.client, ro, &plan, &mut applied).await;
        versions.append(&mut applied.versions);
        let may = |reason| !replanned.contains(&reason);
        let (reason, next) = match result {
            Ok(()) => {
                ctx.publish(ro, &plan.events);
                let created = applied.created.take().and_then(|mut created| {
                    let mut rollout = applied.rollout.take().unwrap_or_else(|| ro.clone());
                    slim_rollout(&mut rollout);
                    slim_replica_set(&mut created);
                    after_create(&snapshot, &plan, rollout, created)
                });
                match created {
                    Some(next) if may(Replan::Created) => {
                        debug!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), "created the new ReplicaSet; planning again from what the API server returned");
                        (Replan::Created, next)
                    }
                    _ => return Ok(Some(plan)),
                }
            }
            Err(error) => {
                // What was done is done: the plan made after this failure
                // finds it so and would never report it.
                let done = plan.actions.get(..applied.done).unwrap_or_default();
                ctx.publish(ro, &events::for_actions(&snapshot, done));
                match error {
                    ApplyError::Rejected { name, hash, detail } if may(Replan::Rejected) => {
                        warn!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), replicaset = %name, %detail, "the API server refused the ReplicaSet");
                        let rejected = Some((hash, detail));
                        ctx.memos.remember_rejected(ro, rejected.clone());
                        (Replan::Rejected, snapshot.clone().with_rejected(rejected))
                    }
                    ApplyError::Conflict { what } if may(Replan::Conflict) => {
                        debug!(rollout = %ro.name_any(), namespace = ro.namespace().unwrap_or_default(), %what, "conflict; planning again from a fresh read");
                        let Some(fresh) = dereference::fresh(ctx, ro, now).await? else {
                            return Ok(None);
                        };
                        versions.extend(Version::of(&fresh.rollout.metadata));
                        (Replan::Conflict, fresh)
                    }
                    error => return Err(error.into()),
                }
            }
        };
        replanned.push(reason);
        snapshot = next;
    }
}
