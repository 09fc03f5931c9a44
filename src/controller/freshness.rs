//! Whether a cache has caught up with a reconcile's own writes.
//!
//! A reconcile that plans from a cached copy older than what it wrote last
//! time would only meet a conflict (and read everything afresh), or worse,
//! act twice. So each reconcile records the versions its writes produced,
//! per object, and the next one waits until the cache shows them.
//!
//! Resource versions are etcd revisions, which only grow: the API server
//! documents them as opaque, but every server in use serves integers, and
//! upstream Argo Rollouts compares them as such since v1.10. A version that
//! does not parse is taken as fresh (a stale plan then meets a conflict and
//! is made again from a fresh read); the generation, which the API server
//! documents as increasing, is compared in every case.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// An object as a write (or a fresh read) left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub uid: String,
    pub resource_version: String,
    /// 0 for kinds without one.
    pub generation: i64,
}

impl Version {
    /// None for an object without a uid or version (never stored).
    pub fn of(meta: &ObjectMeta) -> Option<Version> {
        Some(Version {
            uid: meta.uid.clone()?,
            resource_version: meta.resource_version.clone()?,
            generation: meta.generation.unwrap_or(0),
        })
    }
}

/// Per owner (the object a reconcile is about, by any key), per object uid:
/// the newest version the owner's last reconcile produced.
#[derive(Default)]
pub struct Freshness(Mutex<HashMap<String, HashMap<String, Version>>>);

impl Freshness {
    /// Records what one reconcile of `owner` wrote or read afresh, oldest
    /// first. It replaces the record of the reconcile before, which found
    /// the cache caught up with it (or it would not have run).
    pub fn record(&self, owner: &str, versions: impl IntoIterator<Item = Version>) {
        let mut newest: HashMap<String, Version> = HashMap::new();
        for v in versions {
            match newest.get_mut(&v.uid) {
                Some(seen) => {
                    let generation = seen.generation.max(v.generation);
                    if !older(&v.resource_version, &seen.resource_version) {
                        *seen = v;
                    }
                    seen.generation = generation;
                }
                None => {
                    newest.insert(v.uid.clone(), v);
                }
            }
        }
        let mut map = lock(&self.0);
        if newest.is_empty() {
            map.remove(owner);
        } else {
            map.insert(owner.to_string(), newest);
        }
    }

    /// Whether the cached copy `cached` of an object is older than what
    /// `owner`'s last reconcile wrote to it. Once it is not, the record of
    /// that object is dropped.
    pub fn is_behind(&self, owner: &str, cached: &ObjectMeta) -> bool {
        let Some(uid) = cached.uid.as_deref() else {
            return false;
        };
        let mut map = lock(&self.0);
        let Some(objects) = map.get_mut(owner) else {
            return false;
        };
        let Some(written) = objects.get(uid) else {
            return false;
        };
        let generation = cached.generation.unwrap_or(0);
        let version = cached.resource_version.as_deref().unwrap_or_default();
        if generation < written.generation || older(version, &written.resource_version) {
            return true;
        }
        objects.remove(uid);
        if objects.is_empty() {
            map.remove(owner);
        }
        false
    }

    pub fn forget(&self, owner: &str) {
        lock(&self.0).remove(owner);
    }

    /// Forgets the owners not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        lock(&self.0).retain(|owner, _| live.contains(owner));
    }
}

/// Whether version `a` is older than `b`; false when either does not parse.
fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// A poisoned lock still guards consistent data: every critical section is
/// a single map operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, version: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(version.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    fn version(uid: &str, version: &str, generation: i64) -> Version {
        Version::of(&meta(uid, version, generation)).expect("complete")
    }

    #[test]
    fn a_cache_is_behind_until_it_shows_the_newest_version_written() {
        let f = Freshness::default();
        // A ReplicaSet scaled (generation 2 at 20), then someone else's
        // status write (21) seen by the same reconcile's second write (22).
        f.record("ro", [version("rs", "20", 2), version("rs", "22", 2)]);
        assert!(f.is_behind("ro", &meta("rs", "10", 1)), "before our write");
        assert!(
            f.is_behind("ro", &meta("rs", "21", 2)),
            "between our writes"
        );
        assert!(!f.is_behind("ro", &meta("rs", "22", 2)));
        // Caught up once: the record is gone, a later copy is not compared.
        assert!(!f.is_behind("ro", &meta("rs", "5", 1)));
    }

    #[test]
    fn a_newer_copy_from_someone_else_is_fresh() {
        let f = Freshness::default();
        f.record("ro", [version("ro", "100", 3)]);
        assert!(!f.is_behind("ro", &meta("ro", "105", 3)));
        assert!(!f.is_behind("other", &meta("ro", "1", 1)), "per owner");
    }

    #[test]
    fn a_version_that_does_not_parse_falls_back_to_the_generation() {
        let f = Freshness::default();
        f.record("ro", [version("rs", "opaque-b", 4)]);
        assert!(f.is_behind("ro", &meta("rs", "opaque-a", 3)), "older spec");
        assert!(!f.is_behind("ro", &meta("rs", "opaque-a", 4)));
        f.record("ro", [version("rs", "12", 4)]);
        assert!(!f.is_behind("ro", &meta("rs", "x", 4)), "cached one opaque");
    }

    #[test]
    fn records_are_replaced_per_reconcile_and_forgotten_with_their_owner() {
        let f = Freshness::default();
        f.record("a", [version("rs1", "10", 1)]);
        f.record("a", [version("rs2", "11", 1)]);
        assert!(!f.is_behind("a", &meta("rs1", "1", 1)), "replaced");
        assert!(f.is_behind("a", &meta("rs2", "1", 1)));
        f.record("b", [version("rs3", "12", 1)]);
        f.retain(&HashSet::from(["b".to_string()]));
        assert!(!f.is_behind("a", &meta("rs2", "1", 1)));
        f.forget("b");
        assert!(!f.is_behind("b", &meta("rs3", "1", 1)));
        f.record("c", []);
        assert!(lock(&f.0).is_empty(), "an empty record keeps nothing");
    }
}
