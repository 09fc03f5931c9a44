//! Leader election on a `coordination.k8s.io` Lease, with the rules of
//! client-go's leader election (which upstream's controller uses), so that
//! of several controller replicas exactly one reconciles:
//!
//! - a candidate takes the lease when it is free, released, or when its
//!   record has not changed for `lease_duration` as measured by the
//!   candidate's own clock (no clock comparison across machines);
//! - the leader renews every `retry_period`, and stops leading if it could
//!   not renew for `renew_deadline` (shorter than the lease), so it has
//!   stopped writing before anyone else may take over;
//! - writes use the Lease's resourceVersion: of two candidates racing for a
//!   free lease one gets a conflict and stays standby;
//! - a leader that shuts down gracefully releases the lease, and a standby
//!   takes over at its next retry instead of waiting for expiry.
//!
//! [`decide`] is the pure rule; [`Elector`] is the shell that reads and
//! writes the Lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Leader election settings (upstream's flags and defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per process: the pod name plus a random suffix.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid leader election timing: need retry period ({retry:?}) < renew deadline ({renew:?}) < lease duration ({lease:?})"
    )]
    Timing {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
    #[error(
        "cannot create the leader lease {name}: namespace {namespace:?} not found (create it, set --leader-election-namespace, or run a single replica with --leader-elect=false)"
    )]
    NoNamespace { namespace: String, name: String },
    #[error("lost the leader lease {namespace}/{name}: {why}; stopping so a standby can lead")]
    Lost {
        namespace: String,
        name: String,
        why: String,
    },
}

impl Settings {
    pub fn validate(&self) -> Result<(), Error> {
        if self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration {
            Ok(())
        } else {
            Err(Error::Timing {
                lease: self.lease_duration,
                renew: self.renew_deadline,
                retry: self.retry_period,
            })
        }
    }
}

/// What a candidate last saw of the lease, and when (its own clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub spec: Option<LeaseSpec>,
    pub since: Instant,
}

impl Observed {
    /// Records `current`; the clock restarts only when the record changed
    /// (a renewal changes renewTime, so a live leader keeps restarting it).
    pub fn update(previous: Option<Observed>, current: Option<&LeaseSpec>, now: Instant) -> Self {
        match previous {
            Some(p) if p.spec.as_ref() == current => p,
            _ => Observed {
                spec: current.cloned(),
                since: now,
            },
        }
    }
}

/// What to do with the lease this round.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// There is no Lease yet: create it, held by us.
    Create(LeaseSpec),
    /// Write this record (renewal or takeover) over the one read.
    Write(LeaseSpec),
    /// Someone else holds a live lease.
    Standby { holder: String },
}

/// The rule. `observed` is the record just read (with how long it has been
/// unchanged); `wall` is only written into the record, never compared.
pub fn decide(
    observed: &Observed,
    me: &str,
    lease_duration: Duration,
    now: Instant,
    wall: Timestamp,
) -> Decision {
    let seconds = i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX);
    let held_by_us = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(acquired.unwrap_or(MicroTime(wall))),
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(spec) = &observed.spec else {
        return Decision::Create(held_by_us(None, 0));
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == me {
        return Decision::Write(held_by_us(spec.acquire_time.clone(), transitions));
    }
    // The holder's own duration counts: a released lease says 1 second.
    let holders_duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(lease_duration, Duration::from_secs);
    let expired = now.duration_since(observed.since) >= holders_duration;
    if holder.is_empty() || expired {
        return Decision::Write(held_by_us(None, transitions.saturating_add(1)));
    }
    Decision::Standby { holder }
}

/// The record a leader leaves behind when it stops: no holder, and a
/// 1-second duration so candidates that still see the old record act fast.
pub fn released(spec: &LeaseSpec, wall: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(wall)),
        acquire_time: Some(MicroTime(wall)),
        ..spec.clone()
    }
}

/// The shell: reads and writes one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    observed: Option<Observed>,
    /// The Lease as last read or written (for its resourceVersion).
    last: Option<Lease>,
    /// Whether the last attempt reached the API server (for `/readyz`).
    reachable: Arc<AtomicBool>,
}

/// The result of one attempt.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    Leading,
    Standby { holder: String },
}

impl Elector {
    /// `reachable` is set after every attempt: whether it reached the API
    /// server (what `/readyz` reports).
    pub fn new(client: Client, settings: Settings, reachable: Arc<AtomicBool>) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
            last: None,
            reachable,
        }
    }

    /// Reads the Lease, decides, writes if needed. A write conflict (someone
    /// else wrote in between) counts as standby.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let result = self.attempt().await;
        self.reachable.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.settings.lease_name).await?;
        let now = Instant::now();
        let observed = Observed::update(
            self.observed.take(),
            current.as_ref().and_then(|l| l.spec.as_ref()),
            now,
        );
        let decision = decide(
            &observed,
            &self.settings.identity,
            self.settings.lease_duration,
            now,
            Timestamp::now(),
        );
        self.observed = Some(observed);
        let written = match decision {
            Decision::Standby { holder } => {
                self.last = current;
                return Ok(Attempt::Standby { holder });
            }
            Decision::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.lease_name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Write(spec) => {
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.lease_name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                // Our own write is the record a standby now watches age.
                self.observed = Some(Observed {
                    spec: lease.spec.clone(),
                    since: Instant::now(),
                });
                self.last = Some(lease);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                debug!(lease = %self.settings.lease_name, "lease changed under us; standing by");
                Ok(Attempt::Standby {
                    holder: "<changed concurrently>".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (graceful shutdown), if we still hold it.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.last.take() else {
            return;
        };
        let Some(spec) = lease.spec.as_ref() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        lease.spec = Some(released(spec, Timestamp::now()));
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.settings.lease_name, "released the leader lease"),
            Err(e) => {
                warn!(lease = %self.settings.lease_name, error = %e, "could not release the leader lease; it expires by itself")
            }
        }
    }

    /// Waits until this process leads (true), or `stop` fires (false).
    /// Errors that retrying cannot fix end it.
    pub async fn acquire(&mut self, stop: impl Future<Output = ()>) -> Result<bool, Error> {
        let mut stop = std::pin::pin!(stop);
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    info!(
                        lease = %self.settings.lease_name,
                        namespace = %self.settings.namespace,
                        identity = %self.settings.identity,
                        "became leader"
                    );
                    return Ok(true);
                }
                Ok(Attempt::Standby { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.settings.lease_name, %holder, "standing by: another controller leads");
                        last_holder = Some(holder);
                    }
                }
                // Creating in a namespace that does not exist.
                Err(kube::Error::Api(e))
                    if e.code == 404 && e.message.starts_with("namespaces ") =>
                {
                    return Err(Error::NoNamespace {
                        namespace: self.settings.namespace.clone(),
                        name: self.settings.lease_name.clone(),
                    });
                }
                Err(e) => {
                    warn!(lease = %self.settings.lease_name, error = %e, "cannot read or write the leader lease")
                }
            }
            tokio::select! {
                _ = &mut stop => return Ok(false),
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// While leading: renews every retry period; returns when the lease is
    /// lost (taken by another, or not renewed within the renew deadline).
    pub async fn hold(&mut self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let left = self
                .settings
                .renew_deadline
                .saturating_sub(renewed.elapsed());
            let why = match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {
                    renewed = Instant::now();
                    continue;
                }
                Ok(Ok(Attempt::Standby { holder })) => {
                    return self.lost(format!("now held by {holder}"));
                }
                Ok(Err(e)) => format!("renewal failed: {e}"),
                Err(_) => "renewal timed out".to_string(),
            };
            if renewed.elapsed() >= self.settings.renew_deadline {
                return self.lost(format!(
                    "not renewed within {:?} ({why})",
                    self.settings.renew_deadline
                ));
            }
            warn!(lease = %self.settings.lease_name, %why, "could not renew the leader lease; retrying");
        }
    }

    fn lost(&mut self, why: String) -> Error {
        // Our record is stale: never "release" what is no longer ours.
        self.last = None;
        Error::Lost {
            namespace: self.settings.namespace.clone(),
            name: self.settings.lease_name.clone(),
            why,
        }
    }
}

/// A process identity that differs between restarts of the same pod.
pub fn identity(pod_name: Option<&str>) -> String {
    let host = pod_name
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "rollouts-controller".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}_{:x}{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::from_second(0).unwrap())),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    fn wall() -> Timestamp {
        Timestamp::from_second(1_000).unwrap()
    }

    #[test]
    fn no_lease_is_created_held_by_us() {
        let t0 = Instant::now();
        let o = Observed::update(None, None, t0);
        let Decision::Create(s) = decide(&o, "me", LEASE, t0, wall()) else {
            panic!("expected create");
        };
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn a_live_lease_of_another_means_standby_until_it_stops_changing_for_the_lease_duration() {
        let t0 = Instant::now();
        let o = Observed::update(None, Some(&spec("other", 10)), t0);
        let standby = Decision::Standby {
            holder: "other".into(),
        };
        assert_eq!(decide(&o, "me", LEASE, t0, wall()), standby);
        // The other renews at t0+10s: the clock restarts.
        let o = Observed::update(
            Some(o),
            Some(&spec("other", 20)),
            t0 + LEASE - Duration::from_secs(5),
        );
        assert_eq!(decide(&o, "me", LEASE, t0 + LEASE, wall()), standby);
        // Unchanged for a full lease duration since then: expired, we take it.
        let later = t0 + LEASE - Duration::from_secs(5) + LEASE;
        let o = Observed::update(Some(o), Some(&spec("other", 20)), later);
        let Decision::Write(s) = decide(&o, "me", LEASE, later, wall()) else {
            panic!("expected takeover");
        };
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.lease_transitions, Some(4), "a new holder counts");
        assert_eq!(s.acquire_time, Some(MicroTime(wall())));
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time() {
        let t0 = Instant::now();
        let o = Observed::update(None, Some(&spec("me", 10)), t0);
        let Decision::Write(s) = decide(&o, "me", LEASE, t0, wall()) else {
            panic!("expected renewal");
        };
        assert_eq!(s.renew_time, Some(MicroTime(wall())));
        assert_eq!(s.acquire_time, spec("me", 10).acquire_time);
        assert_eq!(s.lease_transitions, Some(3), "same holder");
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let free = released(&spec("other", 10), wall());
        assert_eq!(free.holder_identity, None);
        assert_eq!(free.lease_duration_seconds, Some(1));
        let o = Observed::update(None, Some(&free), t0);
        assert!(matches!(
            decide(&o, "me", LEASE, t0, wall()),
            Decision::Write(s) if s.holder_identity.as_deref() == Some("me")
        ));
    }

    #[test]
    fn timings_must_nest() {
        let s = |lease, renew, retry| Settings {
            namespace: "n".into(),
            lease_name: "l".into(),
            identity: "i".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        };
        assert!(s(15, 10, 2).validate().is_ok());
        assert!(s(10, 10, 2).validate().is_err());
        assert!(s(15, 10, 10).validate().is_err());
    }
}
