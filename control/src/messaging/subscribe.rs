//! The subscription records: every node writes `topics/{topic}/{base}/{method}` for the subscriptions of the
//! slices it serves ([`subscription_writes`], part of the node's step), and the leader removes the records
//! whose artifact (that version) no longer has a target ([`stale_subscriptions`]): a newer version that still
//! declares the subscription writes its own record again on its next step (the cursor is another key and stays),
//! and one that dropped the subscription leaves no record behind to hold the topic's messages forever.
//!
//! Invariants: a record is created only when absent, and replaced only when it names this very artifact with
//! another delivery (a changed blueprint override) or an artifact that no target asks for any more (a version
//! that was replaced); so nodes serving two versions side by side never flip it back and forth.

use super::record::SubscriptionRecord;
use crate::blueprint::behaviour::SliceBehaviour;
use crate::node::SliceInfo;
use crate::records::Record;
use crate::write::Versioned;
use crate::KvWrite;
use kvstore::{AetherKey, Artifact, ArtifactBase, Name};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Subscription records by (topic, base, method).
pub type Subscriptions = BTreeMap<(Name, ArtifactBase, Name), Versioned<SubscriptionRecord>>;

/// The writes that make `existing` hold the subscriptions of the `serving` artifacts (with their target
/// configs, `configs`, whose blueprint may override the delivery).
pub fn subscription_writes<'a>(
    existing: &Subscriptions,
    configs: &BTreeMap<Artifact, Map<String, Value>>,
    serving: impl IntoIterator<Item = (&'a Artifact, &'a SliceInfo)>,
) -> Vec<KvWrite> {
    let mut writes = Vec::new();
    let mut claimed = BTreeSet::new();
    for (artifact, info) in serving {
        let behaviour = configs.get(artifact).map(SliceBehaviour::from_config).unwrap_or_default();
        for spec in &info.subscriptions {
            let slot = (spec.topic.clone(), artifact.base().clone(), spec.method.clone());
            if !claimed.insert(slot.clone()) {
                continue;
            }
            let delivery = behaviour.subscription(spec.topic.as_str()).delivery.unwrap_or(spec.delivery);
            let wanted = SubscriptionRecord { artifact: artifact.clone(), delivery };
            let expected = match existing.get(&slot) {
                None => None,
                Some(current) if current.value == wanted => continue,
                Some(current)
                    if current.value.artifact == *artifact || !configs.contains_key(&current.value.artifact) =>
                {
                    Some(current.version)
                }
                Some(_) => continue,
            };
            let (topic, base, method) = slot;
            let key = AetherKey::TopicSubscription { topic, base, method };
            writes.push(KvWrite::Set { key, expected, value: wanted.encode() });
        }
    }
    writes
}

/// Removals of the records whose artifact has no target in `targets`.
pub fn stale_subscriptions<'a>(
    existing: &Subscriptions,
    targets: impl IntoIterator<Item = &'a Artifact>,
) -> Vec<KvWrite> {
    let targets: BTreeSet<&Artifact> = targets.into_iter().collect();
    let stale = existing.iter().filter(|(_, record)| !targets.contains(&record.value.artifact));
    stale
        .map(|((topic, base, method), record)| KvWrite::Remove {
            key: AetherKey::TopicSubscription { topic: topic.clone(), base: base.clone(), method: method.clone() },
            expected: record.version,
        })
        .collect()
}

/// Adds one `topics/` entry to `subscriptions`; other keys are ignored.
pub fn insert(
    subscriptions: &mut Subscriptions,
    key: &AetherKey,
    value: &[u8],
    version: kvstore::Revision,
) -> Result<(), crate::records::RecordError> {
    if let AetherKey::TopicSubscription { topic, base, method } = key {
        let record = SubscriptionRecord::decode(value)?;
        subscriptions.insert((topic.clone(), base.clone(), method.clone()), Versioned { value: record, version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::SubscriptionSpec;
    use kvstore::Revision;
    use vocab::Delivery;

    fn info(delivery: Delivery) -> SliceInfo {
        let spec =
            SubscriptionSpec { topic: Name::parse("work").unwrap(), method: Name::parse("on_work").unwrap(), delivery };
        SliceInfo { subscriptions: vec![spec], ..SliceInfo::default() }
    }

    fn keyed(artifact: &Artifact, delivery: Delivery, version: u64) -> Subscriptions {
        let mut subs = Subscriptions::new();
        let record = SubscriptionRecord { artifact: artifact.clone(), delivery };
        let key = (Name::parse("work").unwrap(), artifact.base().clone(), Name::parse("on_work").unwrap());
        subs.insert(key, Versioned { value: record, version: Revision(version) });
        subs
    }

    #[test]
    fn created_once_and_overridden_by_the_blueprint() {
        let a = Artifact::parse("g:inbox:1.0.0").unwrap();
        let info = info(Delivery::Competing);
        let mut configs = BTreeMap::new();
        configs.insert(a.clone(), Map::new());
        let writes = subscription_writes(&Subscriptions::new(), &configs, [(&a, &info)]);
        assert!(matches!(&writes[..], [KvWrite::Set { expected: None, .. }]), "{writes:?}");
        assert!(subscription_writes(&keyed(&a, Delivery::Competing, 3), &configs, [(&a, &info)]).is_empty());
        let mut config = Map::new();
        config.insert("aether.subscriptions.work.delivery".into(), Value::from("broadcast"));
        configs.insert(a.clone(), config);
        let writes = subscription_writes(&keyed(&a, Delivery::Competing, 3), &configs, [(&a, &info)]);
        assert!(matches!(&writes[..], [KvWrite::Set { expected: Some(Revision(3)), .. }]), "{writes:?}");
    }

    #[test]
    fn a_record_of_another_served_version_stays_and_stale_versions_go() {
        let (v1, v2) = (Artifact::parse("g:inbox:1.0.0").unwrap(), Artifact::parse("g:inbox:2.0.0").unwrap());
        let info = info(Delivery::Competing);
        let mut configs = BTreeMap::new();
        configs.insert(v1.clone(), Map::new());
        configs.insert(v2.clone(), Map::new());
        let existing = keyed(&v1, Delivery::Competing, 3);
        assert!(subscription_writes(&existing, &configs, [(&v2, &info)]).is_empty(), "v1 still has a target");
        configs.remove(&v1);
        assert_eq!(subscription_writes(&existing, &configs, [(&v2, &info)]).len(), 1, "v1 is gone: v2 takes over");
        assert!(stale_subscriptions(&existing, [&v1, &v2]).is_empty(), "v1 still has a target");
        assert_eq!(stale_subscriptions(&existing, [&v2]).len(), 1, "v2 writes its own if it still subscribes");
        assert_eq!(stale_subscriptions(&existing, [&Artifact::parse("g:other:1.0.0").unwrap()]).len(), 1);
    }
}
