//! `GET /api/topics` as this node sees it: every topic that has messages or subscriptions, its size as
//! applied here, and per subscription its delivery settings, stored cursors, backlog, and the counts and
//! rates of the deliveries this node ran.

use control::blueprint::behaviour::SliceBehaviour;
use control::messaging::engine::Counters;
use control::messaging::subscribe::Subscriptions;
use control::messaging::{Engine, SubId};
use control::records::{Record, TargetRecord};
use kvstore::{AetherKey, Name, Revision};
use mgmt::{SubscriptionView, TopicView};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub fn topics(
    engine: &Engine,
    subscriptions: &Subscriptions,
    cursors: &BTreeMap<SubId, (u64, Revision)>,
    samples: &BTreeMap<SubId, VecDeque<(u64, Counters)>>,
    store: &kvstore::Store,
) -> Vec<TopicView> {
    let names: BTreeSet<&Name> =
        engine.topic_sizes().map(|(t, _, _)| t).chain(subscriptions.keys().map(|(t, _, _)| t)).collect();
    let mut out = Vec::new();
    for topic in names {
        let (messages, bytes) = engine.topic_size(topic);
        let versions: Vec<u64> = engine.messages(topic).map(|(v, _)| v).collect();
        let backlog = |from: u64| versions.len() - versions.partition_point(|v| *v < from);
        let mut view = TopicView { topic: topic.to_string(), messages, bytes, subscriptions: Vec::new() };
        for ((_, base, method), record) in subscriptions.iter().filter(|((t, _, _), _)| t == topic) {
            let ours = cursors
                .iter()
                .filter(|(id, _)| id.topic == *topic && id.subscriber.base == *base && id.subscriber.method == *method);
            let mut sub = SubscriptionView {
                artifact: record.value.artifact.to_string(),
                method: method.to_string(),
                delivery: record.value.delivery.word().to_owned(),
                ..SubscriptionView::default()
            };
            for (id, (next, _)) in ours {
                match &id.node {
                    None => sub.cursor = Some(*next),
                    Some(node) => drop(sub.node_cursors.insert(node.to_string(), *next)),
                }
            }
            let lowest = sub.cursor.into_iter().chain(sub.node_cursors.values().copied()).min().unwrap_or(0);
            sub.backlog = backlog(lowest);
            let target = store.get(&AetherKey::Target { artifact: record.value.artifact.clone() });
            let config = target.and_then(|e| TargetRecord::decode(e.value()).ok()).map(|t| t.config);
            sub.strategy = SliceBehaviour::from_config(&config.unwrap_or_default())
                .subscription(topic.as_str())
                .strategy
                .word()
                .to_owned();
            let rings = samples
                .iter()
                .filter(|(id, _)| id.topic == *topic && id.subscriber.base == *base && id.subscriber.method == *method);
            for (_, ring) in rings {
                add_rates(&mut sub, ring);
            }
            view.subscriptions.push(sub);
        }
        out.push(view);
    }
    out
}

/// Adds the counters of one running copy (this node's) and its rates over the samples kept.
fn add_rates(sub: &mut SubscriptionView, ring: &VecDeque<(u64, Counters)>) {
    let (Some((t0, first)), Some((t1, last))) = (ring.front(), ring.back()) else { return };
    sub.delivered += last.delivered;
    sub.failed += last.failed;
    sub.dead_lettered += last.dead_lettered;
    let seconds = (t1.saturating_sub(*t0) as f64 / 1000.0).max(1.0);
    let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / seconds * 10.0).round() / 10.0;
    sub.delivered_per_s += rate(first.delivered, last.delivered);
    sub.failed_per_s += rate(first.failed, last.failed);
    sub.dead_lettered_per_s += rate(first.dead_lettered, last.dead_lettered);
}
