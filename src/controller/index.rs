//! Cached objects grouped by keys computed from each one: the UID of their
//! controller owner, so a reconcile finds one Rollout's ReplicaSets and
//! AnalysisRuns, or the objects a Rollout names (an object may be in many
//! groups), so a change to a Service or a template finds its Rollouts,
//! without walking (and cloning) every cached object. With 10,000 Rollouts a scan per reconcile costs
//! more than the reconcile itself.
//!
//! The index follows the same watch events as the reflector store and, like
//! it, swaps in a relist only once it is complete. Feed it each event before
//! the store: whoever sees the store ready then finds the index complete
//! (the other way round, a reconcile right after a restart could find no
//! ReplicaSets at all and plan as for a first deploy). It only names objects;
//! they are read from the store and their owner checked again, so an index
//! a moment behind the store can omit an object but never return a wrong one.

use std::collections::{HashMap, HashSet};

use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher::Event;

/// An object's group, or None to leave it out.
pub type GroupOf<K> = fn(&K) -> Option<String>;

/// An object's groups (none: left out).
pub type GroupsOf<K> = fn(&K) -> Vec<String>;

/// How an index groups its objects: by one key or by several.
enum Grouping<K> {
    One(GroupOf<K>),
    Many(GroupsOf<K>),
}

// Not derived: derive would require K: Copy, and fn pointers are Copy anyway.
impl<K> Clone for Grouping<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Grouping<K> {}

impl<K> Grouping<K> {
    fn groups(self, obj: &K) -> Vec<String> {
        match self {
            Grouping::One(f) => f(obj).into_iter().collect(),
            Grouping::Many(f) => f(obj),
        }
    }
}

pub struct Index<K: Lookup<DynamicType = ()> + Resource + 'static> {
    inner: Arc<RwLock<Inner<K>>>,
    group_of: Grouping<K>,
}

impl<K: Lookup<DynamicType = ()> + Resource + 'static> Clone for Index<K> {
    fn clone(&self) -> Self {
        Index {
            inner: self.inner.clone(),
            group_of: self.group_of,
        }
    }
}

struct Inner<K: Lookup<DynamicType = ()> + Resource + 'static> {
    live: Groups<K>,
    /// A relist in progress: replaces `live` when done.
    relist: Option<Groups<K>>,
}

struct Groups<K: Lookup<DynamicType = ()> + Resource + 'static> {
    members: HashMap<String, HashSet<ObjectRef<K>>>,
    group_of: HashMap<ObjectRef<K>, Vec<String>>,
}

impl<K: Lookup<DynamicType = ()> + Resource + 'static> Default for Groups<K> {
    fn default() -> Self {
        Groups {
            members: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<K> Groups<K>
where
    K: Lookup<DynamicType = ()> + Resource + 'static,
{
    fn remove(&mut self, key: &ObjectRef<K>) {
        for group in self.group_of.remove(key).unwrap_or_default() {
            if let Some(set) = self.members.get_mut(&group) {
                set.remove(key);
                if set.is_empty() {
                    self.members.remove(&group);
                }
            }
        }
    }

    fn insert(&mut self, obj: &K, grouping: Grouping<K>) {
        let key = ObjectRef::from_obj(obj);
        self.remove(&key);
        let mut groups = grouping.groups(obj);
        groups.sort();
        groups.dedup();
        if groups.is_empty() {
            return;
        }
        for group in &groups {
            self.members
                .entry(group.clone())
                .or_default()
                .insert(key.clone());
        }
        self.group_of.insert(key, groups);
    }
}

/// The UID of the object's controller owner.
pub fn controller_uid<K: Resource>(obj: &K) -> Option<String> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

impl<K> Index<K>
where
    K: Lookup<DynamicType = ()> + Resource + 'static + Clone,
{
    /// Groups objects by the UID of their controller owner.
    pub fn by_owner() -> Self {
        Index::by(controller_uid::<K>)
    }

    pub fn by(group_of: GroupOf<K>) -> Self {
        Index::with(Grouping::One(group_of))
    }

    /// Puts each object in every group `groups_of` names.
    pub fn by_each(groups_of: GroupsOf<K>) -> Self {
        Index::with(Grouping::Many(groups_of))
    }

    fn with(group_of: Grouping<K>) -> Self {
        Index {
            inner: Arc::new(RwLock::new(Inner {
                live: Groups::default(),
                relist: None,
            })),
            group_of,
        }
    }

    /// Follows one watch event (call it for every event the store sees).
    pub fn apply(&self, event: &Event<K>) {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // groups are still usable, and the next relist rebuilds them.
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(obj) => inner.live.insert(obj, self.group_of),
            Event::Delete(obj) => inner.live.remove(&ObjectRef::from_obj(obj)),
            Event::Init => inner.relist = Some(Groups::default()),
            Event::InitApply(obj) => {
                if let Some(relist) = inner.relist.as_mut() {
                    relist.insert(obj, self.group_of);
                }
            }
            Event::InitDone => {
                if let Some(relist) = inner.relist.take() {
                    inner.live = relist;
                }
            }
        }
    }

    /// The cached objects of this group (read from the store, and their
    /// group checked again there).
    pub fn group(&self, store: &Store<K>, group: &str) -> Vec<Arc<K>> {
        let keys: Vec<ObjectRef<K>> = {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            inner
                .live
                .members
                .get(group)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default()
        };
        keys.iter()
            .filter_map(|k| store.get(k))
            .filter(|obj| self.group_of.groups(obj).iter().any(|g| g == group))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector;

    fn rs(name: &str, owner: Option<&str>) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some(name.into());
        rs.metadata.namespace = Some("ns".into());
        rs.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                kind: "Rollout".into(),
                name: "ro".into(),
                api_version: "argoproj.io/v1alpha1".into(),
                ..Default::default()
            }]
        });
        rs
    }

    fn names(v: Vec<Arc<ReplicaSet>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().filter_map(|r| r.metadata.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn follows_the_store_through_applies_deletes_and_relists() {
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        let index = Index::by_owner();
        let mut feed = |ev: Event<ReplicaSet>| {
            writer.apply_watcher_event(&ev);
            index.apply(&ev);
        };
        feed(Event::Init);
        feed(Event::InitApply(rs("a", Some("u1"))));
        feed(Event::InitApply(rs("b", Some("u2"))));
        feed(Event::InitApply(rs("orphan", None)));
        feed(Event::InitDone);
        assert_eq!(names(index.group(&store, "u1")), ["a"]);
        assert_eq!(names(index.group(&store, "u2")), ["b"]);

        // A new one, an adoption by another owner, a deletion.
        feed(Event::Apply(rs("c", Some("u1"))));
        feed(Event::Apply(rs("b", Some("u1"))));
        feed(Event::Delete(rs("a", Some("u1"))));
        assert_eq!(names(index.group(&store, "u1")), ["b", "c"]);
        assert!(index.group(&store, "u2").is_empty());

        // A relist drops what vanished meanwhile; until it is done the old
        // groups answer, as the store does.
        feed(Event::Init);
        feed(Event::InitApply(rs("c", Some("u1"))));
        assert_eq!(names(index.group(&store, "u1")), ["b", "c"]);
        feed(Event::InitDone);
        assert_eq!(names(index.group(&store, "u1")), ["c"]);
    }

    #[test]
    fn an_index_behind_the_store_never_returns_a_wrong_owner() {
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        let index = Index::by_owner();
        let ev = Event::Apply(rs("a", Some("u1")));
        writer.apply_watcher_event(&ev);
        index.apply(&ev);
        // The store has seen the adoption, the index not yet.
        writer.apply_watcher_event(&Event::Apply(rs("a", Some("u2"))));
        assert!(index.group(&store, "u1").is_empty());
    }

    #[test]
    fn an_object_in_several_groups_is_found_in_each_until_it_leaves_them() {
        fn labels(rs: &ReplicaSet) -> Vec<String> {
            rs.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect()
        }
        let labelled = |name: &str, keys: &[&str]| {
            let mut r = rs(name, None);
            r.metadata.labels = Some(
                keys.iter()
                    .map(|k| (k.to_string(), String::new()))
                    .collect(),
            );
            r
        };
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        let index = Index::by_each(labels);
        let mut feed = |ev: Event<ReplicaSet>| {
            writer.apply_watcher_event(&ev);
            index.apply(&ev);
        };
        feed(Event::Apply(labelled("a", &["x", "y"])));
        feed(Event::Apply(labelled("b", &["y"])));
        assert_eq!(names(index.group(&store, "x")), ["a"]);
        assert_eq!(names(index.group(&store, "y")), ["a", "b"]);
        feed(Event::Apply(labelled("a", &["z"])));
        assert!(index.group(&store, "x").is_empty());
        assert_eq!(names(index.group(&store, "y")), ["b"]);
        assert_eq!(names(index.group(&store, "z")), ["a"]);
        feed(Event::Delete(labelled("a", &["z"])));
        assert!(index.group(&store, "z").is_empty());
    }
}
