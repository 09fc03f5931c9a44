//! Decisions of a canary with traffic routing (nginx): pods are sized from
//! the weight (ceil(weight x replicas), setCanaryScale, minPodsPerReplicaSet,
//! dynamicStableScale), the weight moves only once the canary has the pods
//! for it, and the canary Ingresses carry it. Same rules as upstream's
//! `CalculateReplicaCountsForTrafficRoutedCanary` and `reconcileTrafficRouting`,
//! except that an abort always sends all traffic back to stable at once.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::networking::v1::Ingress;

use k8s_openapi::jiff::Timestamp;

use super::Action;
use super::replica_set;
use super::steps;
use crate::api::Rollout;
use crate::api::rollout::{
    CanaryStrategy, NginxTrafficRouting, RolloutStatus, SetCanaryScale, TrafficWeights,
    WeightDestination,
};
use crate::rollout::snapshot::{ReplicaSetExt, Snapshot};
use crate::traffic::nginx::{self, HeaderRoute, NginxError};

/// Upstream's defaults for abortScaleDownDelaySeconds and scaleDownDelaySeconds.
pub const DEFAULT_ABORT_SCALE_DOWN_DELAY: i32 = 30;
pub const DEFAULT_SCALE_DOWN_DELAY: i32 = 30;

/// The routing part of a canary spec.
#[derive(Clone, Copy, Debug)]
pub struct Routing<'a> {
    pub canary: &'a CanaryStrategy,
    pub nginx: &'a NginxTrafficRouting,
    /// trafficRouting.maxTrafficWeight (default 100): the whole of the traffic.
    pub max_weight: i32,
}

/// The Rollout's traffic routing, when it routes with nginx (the only
/// router this controller implements; others are refused before planning).
pub fn routing(ro: &Rollout) -> Option<Routing<'_>> {
    let canary = ro.spec.strategy.canary.as_ref()?;
    let tr = canary.traffic_routing.as_ref()?;
    Some(Routing {
        canary,
        nginx: tr.nginx.as_ref()?,
        max_weight: tr.max_traffic_weight.unwrap_or(100).max(1),
    })
}

/// ceil(weight x replicas / max): a weight never rounds to fewer pods than it needs.
pub fn weight_to_replicas(replicas: i32, weight: i32, max_weight: i32) -> i32 {
    let (r, w, m) = (
        i64::from(replicas),
        i64::from(weight),
        i64::from(max_weight),
    );
    ((w * r + m - 1).div_euclid(m)) as i32
}

impl Routing<'_> {
    /// minPodsPerReplicaSet (capped at replicas) for a ReplicaSet that has pods at all.
    fn min_pods(&self, count: i32, replicas: i32) -> i32 {
        match self.canary.min_pods_per_replica_set {
            Some(min) if count > 0 => count.max(min.min(replicas)),
            _ => count,
        }
    }

    /// abortScaleDownDelaySeconds: None when explicitly 0 (keep the canary).
    pub fn abort_delay(&self) -> Option<i32> {
        match self.canary.abort_scale_down_delay_seconds {
            Some(0) => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_ABORT_SCALE_DOWN_DELAY),
        }
    }

    /// Does an aborted canary keep its pods for abortScaleDownDelaySeconds?
    /// (With dynamicStableScale only when the delay is set explicitly.)
    pub fn delays_abort_scale_down(&self) -> bool {
        self.abort_delay().is_some()
            && !(self.canary.dynamic_stable_scale
                && self.canary.abort_scale_down_delay_seconds.is_none())
    }

    /// Canary and stable pod counts for the status being planned, and the
    /// traffic weights last recorded (`observed`): the stable keeps pods for
    /// the traffic it still has (dynamicStableScale), and otherwise stays at
    /// full size.
    pub fn counts(
        &self,
        replicas: i32,
        status: &RolloutStatus,
        observed: Option<&TrafficWeights>,
    ) -> (i32, i32) {
        let steps = self.canary.steps.as_slice();
        let max = self.max_weight;
        let promoted = status.stable_rs.is_none() || status.stable_rs == status.current_pod_hash;
        let (fixed, weight) = if status.promote_full || promoted {
            (None, max)
        } else {
            match canary_scale(self, steps, status) {
                Some(SetCanaryScale {
                    replicas: Some(r), ..
                }) => (Some(*r), 0),
                Some(SetCanaryScale {
                    weight: Some(w), ..
                }) => (None, *w),
                _ if status.abort => (None, 0),
                _ => (
                    None,
                    steps::set_weight(steps, status.current_step_index, max),
                ),
            }
        };
        let mut canary = fixed
            .unwrap_or_else(|| self.min_pods(weight_to_replicas(replicas, weight, max), replicas));
        if !self.canary.dynamic_stable_scale {
            return (canary, replicas);
        }
        let mut stable = weight_to_replicas(replicas, max - weight, max);
        if let Some(w) = observed {
            stable = stable.max(weight_to_replicas(replicas, w.stable.weight, max));
            if status.abort {
                // Not below the traffic it still has.
                canary = canary.max(weight_to_replicas(replicas, w.canary.weight, max));
            }
        }
        (
            self.min_pods(canary, replicas),
            self.min_pods(stable, replicas),
        )
    }

    /// The header route in force: the last setHeaderRoute at or before the
    /// current step (one without a match removes it). None outside an update
    /// and after an abort.
    pub fn header_route(&self, status: &RolloutStatus) -> Option<HeaderRoute> {
        let promoted = status.stable_rs.is_none() || status.stable_rs == status.current_pod_hash;
        // As upstream, a full promotion ends the managed routes at once.
        if promoted || status.abort || status.promote_full {
            return None;
        }
        let steps = self.canary.steps.as_slice();
        let index = status.current_step_index.unwrap_or(0).max(0) as usize;
        let upto = index.min(steps.len().saturating_sub(1));
        let route = steps
            .get(..=upto)?
            .iter()
            .rev()
            .find_map(|s| s.set_header_route.as_ref())?;
        let m = route.r#match.first()?;
        let value = m.header_value.as_ref();
        Some(HeaderRoute {
            name: m.header_name.clone(),
            exact: value.and_then(|v| v.exact.clone()),
            pattern: value.and_then(|v| v.regex.clone()),
        })
    }

    /// `status.canary.weights` for `weight` on the canary.
    pub fn weights(
        &self,
        weight: i32,
        canary_hash: Option<&str>,
        stable_hash: Option<&str>,
    ) -> TrafficWeights {
        TrafficWeights {
            canary: WeightDestination {
                weight,
                service_name: self.canary.canary_service.clone(),
                pod_template_hash: canary_hash.map(str::to_string),
            },
            stable: WeightDestination {
                weight: self.max_weight - weight,
                service_name: self.canary.stable_service.clone(),
                pod_template_hash: stable_hash.map(str::to_string),
            },
            additional: vec![],
            verified: None,
        }
    }

    /// Create or patch each canary Ingress so it carries `weight` and
    /// `header`. Missing stable Ingresses and foreign canary Ingresses are
    /// reported before planning ([`problem`]); here they are skipped.
    pub fn ingress_actions(
        &self,
        snap: &Snapshot,
        weight: i32,
        header: Option<&HeaderRoute>,
    ) -> Vec<Action> {
        let ro = &snap.rollout;
        let owned = nginx::owned_annotation_keys(self.nginx, &self.canary.steps);
        let name = ro.metadata.name.clone().unwrap_or_default();
        nginx::stable_ingresses(self.nginx)
            .into_iter()
            .filter_map(|stable_name| {
                let stable = snap.ingresses.get(&stable_name)?;
                let desired = nginx::desired(ro, self.nginx, stable, weight, header).ok()?;
                let canary_name = nginx::canary_ingress_name(&name, &stable_name);
                match snap.ingresses.get(&canary_name) {
                    None => Some(Action::CreateIngress(Box::new(desired))),
                    Some(current) => {
                        nginx::patch(current, &desired, &owned).map(|patch| Action::PatchIngress {
                            name: canary_name,
                            patch,
                        })
                    }
                }
            })
            .collect()
    }
}

/// The setCanaryScale in force (upstream's UseSetCanaryScale): the last one
/// at or before the current step, unless it is matchTrafficWeight; none
/// after an abort (unless the canary is kept: abortScaleDownDelaySeconds 0).
fn canary_scale<'a>(
    routing: &Routing<'a>,
    steps: &'a [crate::api::rollout::CanaryStep],
    status: &RolloutStatus,
) -> Option<&'a SetCanaryScale> {
    if status.abort && routing.abort_delay().is_some() {
        return None;
    }
    let index = usize::try_from(status.current_step_index?).ok()?;
    if index >= steps.len() {
        return None;
    }
    let scale = steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_canary_scale.as_ref())?;
    (!scale.match_traffic_weight).then_some(scale)
}

/// Canary Ingresses this Rollout owns that the spec no longer asks for
/// (traffic routing removed): deleted, unlike upstream, which leaves them.
pub fn leftover_ingresses(snap: &Snapshot) -> Vec<Action> {
    let wanted = Snapshot::ingress_names(&snap.rollout);
    snap.ingresses
        .values()
        .filter(|i| {
            let name = i.metadata.name.clone().unwrap_or_default();
            !wanted.contains(&name) && nginx::check_owner(&snap.rollout, i).is_ok()
        })
        .map(|i| Action::DeleteIngress {
            name: i.metadata.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// What stops the routing from working, as an InvalidSpec message: a stable
/// Ingress that does not exist or has no rule for the stable Service, or a
/// canary Ingress that another object controls.
pub fn problem(snap: &Snapshot) -> Option<String> {
    let ro = &snap.rollout;
    let routing = routing(ro)?;
    let name = ro.metadata.name.clone().unwrap_or_default();
    let single = routing.nginx.stable_ingresses.is_empty();
    let field = if single {
        "spec.strategy.canary.trafficRouting.nginx.stableIngress"
    } else {
        "spec.strategy.canary.trafficRouting.nginx.stableIngresses"
    };
    nginx::stable_ingresses(routing.nginx)
        .into_iter()
        .find_map(|stable_name| {
            let invalid = |detail: String| {
                format!(
                    "The Rollout {name:?} is invalid: {field}: Invalid value: {stable_name:?}: {detail}"
                )
            };
            let Some(stable) = snap.ingresses.get(&stable_name) else {
                return Some(invalid(format!(
                    "ingress.networking.k8s.io {stable_name:?} not found"
                )));
            };
            let canary_name = nginx::canary_ingress_name(&name, &stable_name);
            let result = nginx::desired(ro, routing.nginx, stable, 0, None).and_then(|_| {
                snap.ingresses
                    .get(&canary_name)
                    .map_or(Ok(()), |c: &Ingress| nginx::check_owner(ro, c))
            });
            match result {
                Err(e @ NginxError::NoStableRule { .. }) => Some(invalid(e.to_string())),
                Err(e @ NginxError::ForeignCanary(_)) => {
                    Some(format!("The Rollout {name:?} cannot route traffic: {e}"))
                }
                Ok(()) => None,
            }
        })
}

/// Older ReplicaSets (neither canary nor stable), newest first, within
/// `budget` pods (available pods above replicas - maxUnavailable). One that
/// served traffic (the update completed, or it already has a deadline)
/// keeps its pods for scaleDownDelaySeconds, except with
/// dynamicStableScale; an intermediate canary that never became stable has
/// no traffic and goes to 0 at once.
pub fn scale_down_old(
    r: Routing<'_>,
    mut others: Vec<&ReplicaSet>,
    promoted: bool,
    mut budget: i32,
    replicas: i32,
    now: Timestamp,
    timers: &mut Vec<Timestamp>,
) -> Vec<Action> {
    let mut out = Vec::new();
    if budget <= 0 {
        return out;
    }
    others.sort_by_key(|rs| std::cmp::Reverse(rs.revision()));
    let mut delay = replica_set::Delay::new(
        r.canary
            .scale_down_delay_seconds
            .unwrap_or(DEFAULT_SCALE_DOWN_DELAY),
        r.canary.scale_down_delay_revision_limit,
    );
    for rs in others.into_iter().filter(|rs| rs.spec_replicas() > 0) {
        if budget <= 0 {
            break;
        }
        let served = promoted || replica_set::has_scale_down_deadline(rs);
        if served && !r.canary.dynamic_stable_scale && delay.keep(rs, now, &mut out, timers) {
            continue;
        }
        budget -= rs.spec_replicas();
        out.push(replica_set::scale_to(rs, 0, replicas));
    }
    out
}
