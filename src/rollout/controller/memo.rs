//! Answers of the API server a reconcile keeps for the next ones of the same
//! Rollout, so as not to ask again each time. Nothing here is state: a
//! restarted controller does without it (one refused create, or one dry
//! run, is made again).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::api::Rollout;

#[derive(Debug, Default)]
struct Memo {
    /// The pod-template hash whose ReplicaSet the API server last refused,
    /// and why (see `Snapshot::with_rejected`).
    rejected: Option<(String, String)>,
    /// A template hash no ReplicaSet carries, and the hash of the
    /// ReplicaSet with the same template, if one has it (see
    /// `dereference::with_template_twin`).
    twin: Option<(String, Option<String>)>,
}

/// The memos by Rollout UID; a deleted Rollout's go with it.
#[derive(Default)]
pub(super) struct Memos(Mutex<HashMap<String, Memo>>);

impl Memos {
    pub fn rejected(&self, ro: &Rollout) -> Option<(String, String)> {
        let uid = ro.metadata.uid.as_deref()?;
        lock(&self.0).get(uid)?.rejected.clone()
    }

    /// Remembers a refusal of the Rollout's ReplicaSet (None: forgets it).
    pub fn remember_rejected(&self, ro: &Rollout, rejected: Option<(String, String)>) {
        self.update(ro, |memo| memo.rejected = rejected);
    }

    pub fn twin(&self, ro: &Rollout) -> Option<(String, Option<String>)> {
        let uid = ro.metadata.uid.as_deref()?;
        lock(&self.0).get(uid)?.twin.clone()
    }

    pub fn remember_twin(&self, ro: &Rollout, twin: Option<(String, Option<String>)>) {
        self.update(ro, |memo| memo.twin = twin);
    }

    /// The template twin remembered for the Rollout's current template, if
    /// any (no reads).
    pub fn known_twin(&self, ro: &Rollout) -> Option<(String, String)> {
        let (of, twin) = self.twin(ro)?;
        Some((of, twin?))
    }

    fn update(&self, ro: &Rollout, change: impl FnOnce(&mut Memo)) {
        let Some(uid) = ro.metadata.uid.as_deref() else {
            return;
        };
        let mut memos = lock(&self.0);
        let mut memo = memos.remove(uid).unwrap_or_default();
        change(&mut memo);
        if memo.rejected.is_some() || memo.twin.is_some() {
            memos.insert(uid.to_string(), memo);
        }
    }

    pub fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }

    pub fn retain(&self, live: &HashSet<String>) {
        lock(&self.0).retain(|uid, _| live.contains(uid));
    }
}

/// A poisoned lock still guards consistent data: every critical section is
/// a single map operation.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_and_a_twin_are_kept_apart_and_forgotten_when_cleared() {
        let memos = Memos::default();
        let mut ro = Rollout::new("r", Default::default());
        ro.metadata.uid = Some("u".into());
        memos.remember_rejected(&ro, Some(("h".into(), "no".into())));
        memos.remember_twin(&ro, Some(("h2".into(), None)));
        assert_eq!(memos.rejected(&ro), Some(("h".into(), "no".into())));
        assert_eq!(memos.known_twin(&ro), None, "no twin found for h2");
        memos.remember_twin(&ro, Some(("h2".into(), Some("h1".into()))));
        assert_eq!(memos.known_twin(&ro), Some(("h2".into(), "h1".into())));
        memos.remember_rejected(&ro, None);
        memos.remember_twin(&ro, None);
        assert!(lock(&memos.0).is_empty());
        memos.remember_rejected(&ro, Some(("h".into(), "no".into())));
        memos.retain(&HashSet::new());
        assert!(lock(&memos.0).is_empty());
    }
}
