//! Replica math of a canary without traffic routing: how many pods the new
//! (canary) and stable ReplicaSets get for a desired weight, within maxSurge
//! and maxUnavailable. Same results as upstream's
//! `CalculateReplicaCountsForBasicCanary` (its golden tables are the tests).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::common::{ValueError, int_or_percent};

/// What the math needs to know of one ReplicaSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsCounts {
    /// spec.replicas
    pub spec: i32,
    /// status.availableReplicas
    pub available: i32,
}

/// Resolved maxSurge and maxUnavailable for `replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_surge: i32,
    pub max_unavailable: i32,
}

/// Upstream's default for both, stored without "%" and read as a percentage.
fn default_quarter() -> IntOrString {
    IntOrString::String("25".into())
}

/// maxSurge rounds up, maxUnavailable rounds down; if both are 0,
/// maxUnavailable becomes 1. maxUnavailable never exceeds `replicas`.
pub fn canary_limits(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<Limits, ValueError> {
    let surge = int_or_percent(max_surge.unwrap_or(&default_quarter()), replicas, true)?;
    let mut unavailable = int_or_percent(
        max_unavailable.unwrap_or(&default_quarter()),
        replicas,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok(Limits {
        max_surge: surge.max(0),
        max_unavailable: if replicas == 0 {
            0
        } else {
            unavailable.clamp(0, replicas)
        },
    })
}

/// Splits `replicas` (or `replicas + 1` when surge allows) into canary and
/// stable pods closest to `weight` percent. A weight of 1..99 never rounds the
/// canary to zero pods unless a single replica without surge forces it.
pub fn approximate_weighted_counts(replicas: i32, weight: i32, max_surge: i32) -> (i32, i32) {
    if replicas == 0 {
        return (0, 0);
    }
    let exact = f64::from(replicas * weight) / 100.0;
    let ceil = exact.ceil() as i32;
    let floor = exact.floor() as i32;
    // A split exactly halfway between two pod counts keeps only the larger canary.
    let tied = |total: i32| (f64::from(total) * (f64::from(weight) / 100.0)).fract() == 0.5;
    let zero_allowed = weight == 100 || weight == 0 || (replicas == 1 && max_surge == 0);
    let mut options: Vec<(i32, i32)> = Vec::with_capacity(4);
    if ceil < replicas || zero_allowed {
        options.push((ceil, replicas));
    }
    if !tied(replicas) && (floor != 0 || zero_allowed) {
        options.push((floor, replicas));
    }
    if max_surge > 0 {
        options.push((ceil, replicas + 1));
        if !tied(replicas + 1) && (floor != 0 || zero_allowed) {
            options.push((floor, replicas + 1));
        }
    }
    let delta = |(c, t): (i32, i32)| (f64::from(c * 100) / f64::from(t) - f64::from(weight)).abs();
    // Ties keep the earlier option, as upstream's strict comparison does.
    let best = options
        .into_iter()
        .reduce(|best, o| if delta(o) < delta(best) { o } else { best });
    match best {
        Some((canary, total)) => (canary, total - canary),
        None => (0, replicas),
    }
}

/// Inputs of [`basic_canary_counts`].
#[derive(Clone, Debug)]
pub struct CanaryInput<'a> {
    pub replicas: i32,
    pub weight: i32,
    pub limits: Limits,
    /// The ReplicaSet of the current template, if it exists.
    pub new_rs: Option<&'a RsCounts>,
    /// The stable ReplicaSet, when it exists and is not the new one.
    pub stable_rs: Option<&'a RsCounts>,
    /// The stable ReplicaSet exists and is the new one (fully promoted).
    pub stable_is_new: bool,
    /// Every other ReplicaSet of the rollout (older revisions), at any size.
    pub others: &'a [RsCounts],
}

/// Target spec.replicas for the new and stable ReplicaSets: scale up stable
/// first, then new, within replicas + maxSurge; scale down only once older
/// ReplicaSets are gone, and never below replicas - maxUnavailable available.
pub fn basic_canary_counts(input: &CanaryInput<'_>) -> (i32, i32) {
    let CanaryInput {
        replicas,
        weight,
        limits,
        new_rs,
        stable_rs,
        stable_is_new,
        others,
    } = *input;
    let (mut desired_new, mut desired_stable) =
        approximate_weighted_counts(replicas, weight, limits.max_surge);
    let mut new_count = new_rs.map_or(0, |r| r.spec);
    let mut stable_count = stable_rs.map_or(0, |r| r.spec);
    if stable_rs.is_none() {
        // No stable (first deploy, or new is stable): drive new to full size.
        desired_new = replicas;
        desired_stable = 0;
    }
    let max_total = replicas + limits.max_surge;
    let others_total: i32 = others.iter().map(|r| r.spec).sum();
    let total = others_total + new_count + stable_count;
    let mut scale_up = max_total - total;

    if let Some(stable) = stable_rs
        && stable.spec < desired_stable
        && scale_up > 0
    {
        if stable.spec + scale_up < desired_stable {
            stable_count = stable.spec + scale_up;
            scale_up = 0;
        } else {
            stable_count = desired_stable;
            scale_up -= desired_stable - stable.spec;
        }
    }
    if let Some(new) = new_rs
        && new.spec < desired_new
        && scale_up > 0
    {
        new_count = (new.spec + scale_up).min(desired_new);
    }
    if others_total > 0 {
        return (new_count, stable_count);
    }

    let min_available = replicas - limits.max_unavailable;
    let increasing = new_rs.is_none_or(|n| desired_new >= n.spec);
    let scalable_down = |rs: Option<&RsCounts>, ignore_availability: bool| match rs {
        None => 0,
        Some(r) if r.spec < r.available || ignore_availability => r.spec,
        Some(r) => r.available,
    };
    // Upstream counts the stable term even when stable is the new ReplicaSet.
    let stable_term = if stable_is_new { new_rs } else { stable_rs };
    let to_scale_down = scalable_down(new_rs, !increasing) + scalable_down(stable_term, increasing);
    if to_scale_down <= min_available {
        return (new_count, stable_count);
    }
    let budget = to_scale_down - min_available;
    let scale_down_to = |rs: Option<&RsCounts>, desired: i32, current: i32| match rs {
        Some(r) if r.spec > desired => desired.max(r.spec - budget),
        _ => current,
    };
    if !increasing {
        new_count = scale_down_to(new_rs, desired_new, new_count);
        let (n, s) = adjust_within_limits(
            new_rs,
            stable_term,
            new_count,
            stable_count,
            max_total,
            min_available,
        );
        new_count = n;
        stable_count = s;
    } else if stable_rs.is_some() {
        stable_count = scale_down_to(stable_rs, desired_stable, stable_count);
        let (s, n) = adjust_within_limits(
            stable_rs,
            new_rs,
            stable_count,
            new_count,
            max_total,
            min_available,
        );
        stable_count = s;
        new_count = n;
    }
    (new_count, stable_count)
}

/// Pulls the ReplicaSet being adjusted back within maxSurge, gives back what
/// availability needs, and takes any excess left from the draining one.
fn adjust_within_limits(
    drain: Option<&RsCounts>,
    adjust: Option<&RsCounts>,
    mut drain_count: i32,
    mut adjust_count: i32,
    max_total: i32,
    min_available: i32,
) -> (i32, i32) {
    let mut over = (adjust_count + drain_count - max_total).max(0);
    let mut available = drain.map_or(0, |d| d.available.min(drain_count));
    if let Some(adj) = adjust {
        adjust_count -= over;
        available += adj.available.min(adjust_count);
        let extra = (adj.available - adjust_count).max(0);
        let needed = (min_available - available).max(0);
        adjust_count += extra.min(needed);
        over = (adjust_count + drain_count - max_total).max(0);
        drain_count -= over;
    }
    (drain_count, adjust_count)
}

/// One older ReplicaSet as the scale-down of old revisions sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldRs {
    pub name: String,
    pub spec: i32,
    pub available: i32,
    pub revision: i64,
}

/// Scale-down of older ReplicaSets (neither new nor stable): first their
/// pods that are not available (nothing is lost), then, newest revision
/// first, as many as availability allows. Returns (name, new spec) pairs for
/// those that change.
pub fn scale_down_old(
    old: &[OldRs],
    total_available: i32,
    replicas: i32,
    max_unavailable: i32,
) -> Vec<(String, i32)> {
    let mut targets: Vec<(String, i32)> = Vec::new();
    let mut sizes: Vec<OldRs> = old.iter().filter(|r| r.spec > 0).cloned().collect();
    for r in &mut sizes {
        if r.spec != r.available {
            let to = r.available.clamp(0, r.spec);
            targets.push((r.name.clone(), to));
            r.spec = to;
        }
    }
    let mut budget = total_available - (replicas - max_unavailable);
    sizes.sort_by_key(|r| std::cmp::Reverse(r.revision));
    for r in sizes.iter().filter(|r| r.spec > 0) {
        if budget <= 0 {
            break;
        }
        let to = if r.spec > budget { r.spec - budget } else { 0 };
        budget -= r.spec - to;
        match targets.iter_mut().find(|(n, _)| *n == r.name) {
            Some(t) => t.1 = to,
            None => targets.push((r.name.clone(), to)),
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of upstream's TestApproximateWeightedNewStableReplicaCounts:
    /// (replicas, weight, maxSurge) -> (canary, stable).
    const GOLDEN: &[(i32, i32, i32, i32, i32)] = &[
        (0, 0, 0, 0, 0),
        (0, 50, 0, 0, 0),
        (0, 100, 0, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 50, 1, 0, 0),
        (0, 100, 1, 0, 0),
        (1, 0, 0, 0, 1),
        (1, 1, 0, 0, 1),
        (1, 49, 0, 0, 1),
        (1, 50, 0, 1, 0),
        (1, 99, 0, 1, 0),
        (1, 100, 0, 1, 0),
        (1, 0, 1, 0, 1),
        (1, 1, 1, 1, 1),
        (1, 49, 1, 1, 1),
        (1, 50, 1, 1, 1),
        (1, 99, 1, 1, 1),
        (1, 100, 1, 1, 0),
        (2, 0, 0, 0, 2),
        (2, 1, 0, 1, 1),
        (2, 50, 0, 1, 1),
        (2, 99, 0, 1, 1),
        (2, 100, 0, 2, 0),
        (2, 0, 1, 0, 2),
        (2, 1, 1, 1, 2),
        (2, 50, 1, 1, 1),
        (2, 99, 1, 2, 1),
        (2, 100, 1, 2, 0),
        (3, 10, 0, 1, 2),
        (3, 25, 0, 1, 2),
        (3, 33, 0, 1, 2),
        (3, 34, 0, 1, 2),
        (3, 49, 0, 1, 2),
        (3, 50, 0, 2, 1),
        (3, 10, 1, 1, 3),
        (3, 25, 1, 1, 3),
        (3, 33, 1, 1, 2),
        (3, 34, 1, 1, 2),
        (3, 49, 1, 2, 2),
        (3, 50, 1, 2, 2),
        (10, 0, 1, 0, 10),
        (10, 1, 0, 1, 9),
        (10, 14, 0, 1, 9),
        (10, 15, 0, 2, 8),
        (10, 16, 0, 2, 8),
        (10, 99, 0, 9, 1),
        (10, 100, 1, 10, 0),
        (10, 0, 1, 0, 10),
        (10, 1, 1, 1, 10),
        (10, 18, 1, 2, 9),
        (10, 19, 1, 2, 9),
        (10, 20, 1, 2, 8),
        (10, 23, 1, 2, 8),
        (10, 24, 1, 3, 8),
        (10, 25, 1, 3, 8),
        (10, 99, 1, 10, 1),
        (10, 100, 1, 10, 0),
    ];

    #[test]
    fn approximate_matches_upstream_golden_table() {
        for &(replicas, weight, surge, canary, stable) in GOLDEN {
            assert_eq!(
                approximate_weighted_counts(replicas, weight, surge),
                (canary, stable),
                "replicas={replicas} weight={weight} maxSurge={surge}"
            );
        }
    }

    fn rs(spec: i32, available: i32) -> RsCounts {
        RsCounts { spec, available }
    }

    /// Upstream's TestCalculateReplicaCountsForCanary, basic (no traffic
    /// routing) rows: (replicas, weight, surge, unavailable, stable spec/avail,
    /// canary spec/avail, older spec/avail, promoteFull) -> (stable, canary).
    #[allow(clippy::type_complexity)]
    const BASIC: &[(
        i32,
        i32,
        &str,
        &str,
        (i32, i32),
        (i32, i32),
        Option<(i32, i32)>,
        bool,
        i32,
        i32,
    )] = &[
        (10, 100, "3", "0", (7, 8), (6, 3), None, false, 7, 6),
        (10, 20, "2", "0", (10, 10), (0, 0), None, false, 10, 2),
        (10, 20, "20%", "0", (10, 10), (0, 0), None, false, 10, 2),
        (10, 20, "20%", "0", (10, 10), (2, 2), None, false, 8, 2),
        (10, 30, "2", "0", (10, 10), (0, 0), None, false, 10, 2),
        (10, 20, "0", "2", (10, 10), (0, 0), None, false, 8, 0),
        (10, 20, "0", "20%", (10, 10), (0, 0), None, false, 8, 0),
        (10, 30, "0", "2", (10, 10), (0, 0), None, false, 8, 0),
        (10, 50, "2", "1", (10, 10), (0, 0), None, false, 9, 2),
        (10, 0, "1", "1", (10, 10), (1, 1), None, false, 10, 0),
        (10, 100, "1", "1", (1, 1), (10, 10), None, false, 0, 10),
        (1, 20, "1", "0", (1, 1), (0, 0), None, false, 1, 1),
        (1, 90, "1", "0", (1, 1), (0, 0), None, false, 1, 1),
        (10, 30, "1", "0", (1, 1), (0, 0), Some((3, 3)), false, 7, 1),
        (10, 30, "0", "3", (8, 5), (4, 4), None, false, 7, 3),
        (10, 100, "1", "0", (10, 2), (10, 8), None, false, 2, 9),
        (10, 30, "0", "1", (8, 6), (4, 2), Some((3, 3)), false, 8, 4),
        (10, 5, "0", "1", (10, 10), (0, 0), None, false, 9, 0),
        (10, 5, "0", "1", (9, 9), (0, 0), None, false, 9, 1),
        (10, 10, "0%", "0%", (10, 10), (0, 0), None, false, 9, 0),
        (10, 20, "20%", "0", (10, 10), (0, 0), None, false, 10, 2),
        (4, 100, "1", "0", (4, 1), (0, 0), None, false, 4, 1),
        (3, 99, "0", "2", (3, 3), (0, 0), None, false, 1, 0),
        (3, 99, "0", "2", (1, 1), (0, 0), None, false, 1, 2),
        (4, 100, "1", "0", (4, 1), (1, 1), None, false, 3, 1),
        (4, 0, "1", "0", (0, 0), (4, 4), None, false, 1, 4),
        (4, 0, "1", "0", (1, 0), (4, 4), None, false, 1, 4),
        (4, 0, "1", "0", (1, 1), (4, 4), None, false, 1, 3),
        (4, 1, "4", "4", (4, 4), (0, 0), None, true, 0, 4),
        (4, 1, "3", "0", (4, 4), (0, 0), None, true, 4, 3),
    ];

    fn ios(s: &str) -> IntOrString {
        match s.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(s.into()),
        }
    }

    #[test]
    fn basic_canary_matches_upstream_table() {
        for (i, row) in BASIC.iter().enumerate() {
            let &(
                replicas,
                weight,
                surge,
                unavail,
                stable,
                canary,
                older,
                promote_full,
                want_stable,
                want_canary,
            ) = row;
            let limits = canary_limits(Some(&ios(surge)), Some(&ios(unavail)), replicas).unwrap();
            let stable = rs(stable.0, stable.1);
            let canary = rs(canary.0, canary.1);
            let others: Vec<RsCounts> = older.map(|(s, a)| rs(s, a)).into_iter().collect();
            let got = basic_canary_counts(&CanaryInput {
                replicas,
                weight: if promote_full { 100 } else { weight },
                limits,
                new_rs: Some(&canary),
                stable_rs: Some(&stable),
                stable_is_new: false,
                others: &others,
            });
            assert_eq!(got, (want_canary, want_stable), "row {} {:?}", i + 1, row);
        }
    }

    #[test]
    fn new_deployment_without_stable_goes_to_full_size() {
        let limits =
            canary_limits(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(1)), 10).unwrap();
        let new = rs(9, 9);
        let got = basic_canary_counts(&CanaryInput {
            replicas: 10,
            weight: 10,
            limits,
            new_rs: Some(&new),
            stable_rs: None,
            stable_is_new: true,
            others: &[],
        });
        assert_eq!(got, (10, 0));
    }

    #[test]
    fn limits_round_and_fall_back() {
        let l = canary_limits(None, None, 10).unwrap();
        assert_eq!(
            l,
            Limits {
                max_surge: 3,
                max_unavailable: 2
            }
        );
        let l = canary_limits(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 10).unwrap();
        assert_eq!(
            l,
            Limits {
                max_surge: 0,
                max_unavailable: 1
            }
        );
        let l = canary_limits(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(50)), 3).unwrap();
        assert_eq!(l.max_unavailable, 3, "capped at replicas");
        assert!(canary_limits(Some(&IntOrString::String("x%".into())), None, 3).is_err());
    }

    #[test]
    fn old_replica_sets_drop_unavailable_pods_then_newest_first() {
        let old = vec![
            OldRs {
                name: "a".into(),
                spec: 2,
                available: 2,
                revision: 1,
            },
            OldRs {
                name: "b".into(),
                spec: 3,
                available: 1,
                revision: 2,
            },
        ];
        // 10 replicas, 1 unavailable allowed, 10 available in total.
        let got = scale_down_old(&old, 10, 10, 1);
        // b loses its 2 unavailable pods for free, then 1 more from the newest (b).
        assert_eq!(got, vec![("b".into(), 0)]);
        let got = scale_down_old(&old, 11, 10, 1);
        assert_eq!(got, vec![("b".into(), 0), ("a".into(), 1)]);
        assert!(scale_down_old(&old, 9, 10, 1).iter().all(|(n, _)| n == "b"));
    }
}
