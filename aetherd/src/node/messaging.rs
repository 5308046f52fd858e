//! The loop's side of pub-sub: publishes in flight, the store watches that feed the delivery engine
//! (`control::messaging::Engine`), and carrying out what the engine asks: deliveries handed to the delivery
//! threads, cursor and dead-letter writes, and (on the leader) trims and the removal of stale subscription
//! records.
//!
//! What it owns: the watches on `messages/`, `topics/` and `cursors/`; the map of message ids to versions;
//! the publishes and writes in flight (each with its own reply channel, looked at every turn); the counts
//! of deliveries in flight per instance (least-loaded); the rate samples of `GET /api/topics`.
//!
//! Invariants: nothing here waits; a topic's bound is checked against its applied messages plus this node's
//! publishes in flight (other nodes' in-flight publishes may overshoot it: the store's own limits are the
//! hard stop); the engine acts only while this node is in a quorum; competing subscriptions run
//! only on the node the leader record names, and every write they make (cursors, dead letters, trims,
//! removals) is guarded on that record's version.

use super::Node;
use crate::messaging::{Job, MessagingConfig, MessagingRequest, PublishRequest};
use container::publish::PublishError;
use control::blueprint::behaviour::{SliceBehaviour, Strategy};
use control::messaging::engine::{Counters, DeadLetter, WINDOW_COMPETING};
use control::messaging::subscribe::{self, Subscriptions};
use control::messaging::trim::{trims, TopicCursors};
use control::messaging::{
    Action, CursorRecord, DeadLetterRecord, Delivery, Engine, MessageMeta, MessageRecord, Outcome, Settings, Start,
    SubId, Subscriber, WriteResult, WriteTag,
};
use control::records::{LeaderRecord, Record, TargetRecord};
use control::KvWrite;
use kvstore::{AetherKey, ApplyResult, Name, NodeId, Revision, WatchEvent, WatchId};
use log::{info, warn};
use mgmt::ApiError;
use net::Ctx;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

/// Publishes one node keeps in flight at most (more are 503 at once).
const PUBLISHES_IN_FLIGHT_MAX: usize = 8192;
/// Trims submitted per tick, and in flight, at most.
const TRIMS_PER_TICK: usize = 512;
const TRIMS_IN_FLIGHT_MAX: usize = 2048;
/// Rate samples kept per subscription (one a second).
const RATE_SAMPLES: usize = 11;

type Answer = Receiver<Result<ApplyResult, ApiError>>;

struct InFlightPublish {
    topic: Name,
    bytes: u64,
    id: String,
    answer: Answer,
    reply: mpsc::Sender<Result<String, PublishError>>,
}

/// The loop's messaging state. See the module documentation.
pub struct Messaging {
    config: MessagingConfig,
    me: Option<NodeId>,
    boot: u64,
    seq: u64,
    engine: Engine,
    watches: Vec<WatchId>,
    /// `(topic, id)` -> version of every message applied here.
    versions: HashMap<(Name, Name), u64>,
    subscriptions: Subscriptions,
    cursors: BTreeMap<SubId, (u64, Revision)>,
    publishes: Vec<InFlightPublish>,
    in_flight: HashMap<Name, (u64, u64)>,
    writes: Vec<(WriteTag, Answer)>,
    trims: HashMap<(Name, u64), Answer>,
    others: Vec<Answer>,
    /// Delivery token -> (artifact, node), and deliveries in flight per (artifact, node).
    deliveries: HashMap<u64, (String, String)>,
    load: HashMap<(String, String), usize>,
    strategies: HashMap<SubId, Strategy>,
    turn: HashMap<SubId, usize>,
    /// The leader record's version while this node leads.
    leading: Option<Revision>,
    samples: BTreeMap<SubId, VecDeque<(u64, Counters)>>,
    sampled_at_ms: u64,
    cleaned_at_ms: u64,
    pool: Arc<crate::messaging::DeliveryPool>,
    events: Arc<crate::events::EventLog>,
}

impl Messaging {
    pub fn new(
        config: MessagingConfig,
        me: &str,
        pool: Arc<crate::messaging::DeliveryPool>,
        events: Arc<crate::events::EventLog>,
        store: &mut kvstore::Store,
    ) -> Messaging {
        let boot = crate::managers::wall_ms() ^ u64::from(std::process::id()).rotate_left(40);
        let mut messaging = Messaging {
            config,
            me: NodeId::parse(me).ok(),
            boot: boot & 0xffff_ffff,
            seq: 0,
            engine: Engine::new(),
            watches: Vec::new(),
            versions: HashMap::new(),
            subscriptions: Subscriptions::new(),
            cursors: BTreeMap::new(),
            publishes: Vec::new(),
            in_flight: HashMap::new(),
            writes: Vec::new(),
            trims: HashMap::new(),
            others: Vec::new(),
            deliveries: HashMap::new(),
            load: HashMap::new(),
            strategies: HashMap::new(),
            turn: HashMap::new(),
            leading: None,
            samples: BTreeMap::new(),
            sampled_at_ms: 0,
            cleaned_at_ms: 0,
            pool,
            events,
        };
        for prefix in ["messages/", "topics/", "cursors/"] {
            match store.watch(prefix) {
                Ok(id) => messaging.watches.push(id),
                Err(e) => warn!("messaging: cannot watch {prefix}: {e}"),
            }
        }
        messaging.relist(store);
        messaging
    }

    /// Reads messages, subscriptions and cursors again (at start, and when a watch lagged).
    fn relist(&mut self, store: &kvstore::Store) {
        self.engine = Engine::succeeding(&self.engine);
        self.versions.clear();
        self.subscriptions.clear();
        self.cursors.clear();
        self.deliveries.clear();
        self.load.clear();
        for entry in store.list("topics/").chain(store.list("cursors/")).chain(store.list("messages/")) {
            self.apply(&WatchEvent::Put {
                key: entry.key().clone(),
                value: entry.value().to_vec(),
                version: entry.version(),
            });
        }
    }

    fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Put { key: AetherKey::Message { topic, id }, value, version } => {
                match MessageRecord::decode(value) {
                    Ok(record) => {
                        let meta = MessageMeta {
                            id: id.clone(),
                            publisher: record.publisher,
                            published_at_ms: record.published_at_ms,
                            target: record.target,
                            bytes: record.payload.len() as u64,
                        };
                        self.versions.insert((topic.clone(), id.clone()), version.0);
                        self.engine.message_put(topic, version.0, meta);
                    }
                    Err(e) => warn!("messaging: {topic}/{id}: {e}"),
                }
            }
            WatchEvent::Removed { key: AetherKey::Message { topic, id }, .. } => {
                if let Some(version) = self.versions.remove(&(topic.clone(), id.clone())) {
                    self.engine.message_removed(topic, version);
                }
            }
            WatchEvent::Put { key: key @ AetherKey::TopicSubscription { topic, base, method }, value, version } => {
                if let Err(e) = subscribe::insert(&mut self.subscriptions, key, value, *version) {
                    warn!("messaging: {topic}/{base}/{method}: {e}");
                }
            }
            WatchEvent::Removed { key: AetherKey::TopicSubscription { topic, base, method }, .. } => {
                self.subscriptions.remove(&(topic.clone(), base.clone(), method.clone()));
            }
            WatchEvent::Put { key: AetherKey::Cursor { topic, base, method, node }, value, version } => {
                let id = sub_id(topic, base, method, node.clone());
                if let Ok(record) = CursorRecord::decode(value) {
                    self.cursors.insert(id.clone(), (record.next, *version));
                    self.engine.cursor_stored(&id, Some((record.next, *version)));
                }
            }
            WatchEvent::Removed { key: AetherKey::Cursor { topic, base, method, node }, .. } => {
                let id = sub_id(topic, base, method, node.clone());
                self.cursors.remove(&id);
                self.engine.cursor_stored(&id, None);
            }
            _ => {}
        }
    }
}

fn sub_id(topic: &Name, base: &kvstore::ArtifactBase, method: &Name, node: Option<NodeId>) -> SubId {
    SubId { topic: topic.clone(), subscriber: Subscriber { base: base.clone(), method: method.clone() }, node }
}

/// An answer waiting in `rx`: `None` while there is none yet.
fn poll_answer(rx: &Answer) -> Option<Result<ApplyResult, ApiError>> {
    match rx.try_recv() {
        Ok(answer) => Some(answer),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(ApiError::timeout("the node dropped the write"))),
    }
}

fn write_result(answer: Result<ApplyResult, ApiError>) -> WriteResult {
    match answer {
        Ok(ApplyResult::Ok { version }) => WriteResult::Applied(version),
        Ok(ApplyResult::VersionMismatch { .. }) => WriteResult::Conflict,
        _ => WriteResult::Lost,
    }
}

fn publish_error(status: u16, detail: impl Into<String>) -> PublishError {
    PublishError { status, detail: detail.into() }
}

impl Node {
    /// Turns messaging on (once, at start).
    pub fn with_messaging(mut self, config: MessagingConfig, pool: Arc<crate::messaging::DeliveryPool>) -> Node {
        if let Some(r) = self.replication.as_mut() {
            let events = Arc::clone(&self.data.events);
            self.messaging = Some(Messaging::new(config, &self.config.node_id, pool, events, r.store_mut()));
        }
        self
    }

    pub(super) fn messaging_request(&mut self, ctx: &mut Ctx<'_>, request: MessagingRequest) {
        match request {
            MessagingRequest::Publish(publish) => self.publish(ctx, publish),
            MessagingRequest::Delivered { token, outcome } => {
                if let Some(m) = self.messaging.as_mut() {
                    if let Some((artifact, node)) = m.deliveries.remove(&token) {
                        let key = (artifact, node);
                        if let Some(n) = m.load.get_mut(&key) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    m.engine.delivered(token, outcome, crate::managers::wall_ms());
                }
                self.pump_messaging(ctx);
            }
            MessagingRequest::Topics(reply) => drop(reply.send(self.topic_views())),
        }
    }

    fn publish(&mut self, ctx: &mut Ctx<'_>, request: PublishRequest) {
        let PublishRequest { publisher, topic, payload, target, reply } = request;
        let checked = self.check_publish(&topic, payload.len() as u64);
        let (topic, id) = match checked {
            Ok(checked) => checked,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let Ok(id_name) = Name::parse_as(&id, "message id") else {
            return drop(reply.send(Err(publish_error(500, format!("message id `{id}` is not a name")))));
        };
        let bytes = payload.len() as u64;
        let record = MessageRecord { publisher, published_at_ms: crate::managers::wall_ms(), target, payload };
        let key = AetherKey::Message { topic: topic.clone(), id: id_name };
        let command = kvstore::Command::CompareAndSet { key, expected: None, value: record.encode() };
        let (tx, rx) = mpsc::channel();
        self.drive(ctx, |r| r.submit_slice_write(&command, tx));
        if let Some(m) = self.messaging.as_mut() {
            let counts = m.in_flight.entry(topic.clone()).or_default();
            counts.0 += 1;
            counts.1 += bytes;
            m.publishes.push(InFlightPublish { topic, bytes, id, answer: rx, reply });
        }
    }

    /// The topic and a new message id, or why the publish is refused before anything is submitted.
    fn check_publish(&mut self, topic: &str, bytes: u64) -> Result<(Name, String), PublishError> {
        let topic = Name::parse_as(topic, "topic").map_err(|e| publish_error(400, e.to_string()))?;
        if let Some(e) = self.unavailable_without_quorum() {
            return Err(publish_error(503, e.detail));
        }
        let Some(m) = self.messaging.as_mut() else {
            return Err(publish_error(503, "messaging is not running on this node"));
        };
        if bytes > m.config.max_message_bytes {
            let limit = m.config.max_message_bytes;
            return Err(publish_error(413, format!("the message is {bytes} bytes, over the limit of {limit}")));
        }
        if m.publishes.len() >= PUBLISHES_IN_FLIGHT_MAX {
            return Err(publish_error(503, "too many publishes in flight on this node; try again"));
        }
        let (count, size) = m.engine.topic_size(&topic);
        let (pending, pending_bytes) = m.in_flight.get(&topic).copied().unwrap_or_default();
        let full_count = count as u64 + pending >= m.config.max_messages_per_topic;
        let full_bytes = size + pending_bytes + bytes > m.config.max_topic_bytes;
        if full_count || full_bytes {
            let detail = format!(
                "topic full: `{topic}` holds {count} messages ({size} bytes), {pending} more in flight; the limits are \
                 {} messages and {} bytes",
                m.config.max_messages_per_topic, m.config.max_topic_bytes
            );
            return Err(publish_error(429, detail));
        }
        m.seq += 1;
        let me = self.config.node_id.as_str();
        Ok((topic, format!("{me}-{:08x}-{}", m.boot, m.seq)))
    }

    /// Every tick: what the node runs, trims and clean-ups on the leader, rate samples, then a pump.
    pub(super) fn tick_messaging(&mut self, ctx: &mut Ctx<'_>) {
        let now = crate::managers::wall_ms();
        // Quorum, not "caught up": the engine acts on applied state only and its writes are compare-and-set, so a
        // node a few slots behind under load keeps delivering rather than restarting its subscriptions.
        let able = self.membership.has_quorum();
        let (Some(m), Some(r)) = (self.messaging.as_mut(), self.replication.as_ref()) else { return };
        let store = r.store();
        m.leading = leading(store, m.me.as_ref()).filter(|_| able);
        let wanted = if able { wanted(m, store, &self.data.registry) } else { Vec::new() };
        m.engine.run(wanted);
        if now >= m.sampled_at_ms + 1000 {
            m.sampled_at_ms = now;
            sample(m, now);
        }
        let mut submits: Vec<(kvstore::Command, mpsc::Sender<Result<ApplyResult, ApiError>>)> = Vec::new();
        if let Some(guard) = m.leading {
            submit_trims(m, now, guard, &mut submits);
            if now >= m.cleaned_at_ms + 1000 {
                m.cleaned_at_ms = now;
                let targets: Vec<kvstore::Artifact> = store
                    .list("targets/")
                    .filter_map(|e| match e.key() {
                        AetherKey::Target { artifact } => Some(artifact.clone()),
                        _ => None,
                    })
                    .collect();
                for write in subscribe::stale_subscriptions(&m.subscriptions, targets.iter()) {
                    info!("messaging: removing {} (no target of its artifact)", write.key());
                    let (tx, rx) = mpsc::channel();
                    m.others.push(rx);
                    submits.push((write.guarded(AetherKey::ClusterLeader, Some(guard)).to_command(), tx));
                }
            }
        }
        for (command, tx) in submits {
            self.drive(ctx, |r| r.submit_slice_write(&command, tx));
        }
        self.pump_messaging(ctx);
    }

    /// Drains the watches and the answers in flight, then starts what the engine asks for.
    pub(super) fn pump_messaging(&mut self, ctx: &mut Ctx<'_>) {
        let now = crate::managers::wall_ms();
        let (Some(m), Some(r)) = (self.messaging.as_mut(), self.replication.as_mut()) else { return };
        let mut events = Vec::new();
        for id in &m.watches {
            events.extend(r.store_mut().drain_events(*id).unwrap_or_default());
        }
        if events.iter().any(|e| matches!(e, WatchEvent::Resync { .. })) {
            warn!("messaging: a store watch lagged; reading topics, cursors and messages again");
            m.relist(r.store());
        } else {
            for event in &events {
                m.apply(event);
            }
        }
        settle_publishes(m);
        settle_writes(m, now);
        let store = r.store();
        let actions = m.engine.poll(now);
        let mut submits = Vec::new();
        for action in actions {
            match action {
                Action::Deliver(delivery) => {
                    start_delivery(m, store, &self.data.registry, &self.data.calls, delivery, now)
                }
                Action::WriteCursor { tag, write } => {
                    let write = guard(&tag, write, m.leading);
                    let (tx, rx) = mpsc::channel();
                    m.writes.push((tag, rx));
                    submits.push((write.to_command(), tx));
                }
                Action::WriteDeadLetter { tag, letter } => match dead_letter(m, store, &letter, now) {
                    Some(write) => {
                        let write = guard(&tag, write, m.leading);
                        let (tx, rx) = mpsc::channel();
                        m.writes.push((tag, rx));
                        submits.push((write.to_command(), tx));
                    }
                    None => m.engine.written(tag, WriteResult::Conflict, now),
                },
            }
        }
        for (command, tx) in submits {
            self.drive(ctx, |r| r.submit_slice_write(&command, tx));
        }
    }

    fn topic_views(&self) -> Vec<mgmt::TopicView> {
        let (Some(m), Some(r)) = (self.messaging.as_ref(), self.replication.as_ref()) else { return Vec::new() };
        crate::messaging::view::topics(&m.engine, &m.subscriptions, &m.cursors, &m.samples, r.store())
    }
}

/// The leader record's version when it names this node.
fn leading(store: &kvstore::Store, me: Option<&NodeId>) -> Option<Revision> {
    let entry = store.get(&AetherKey::ClusterLeader)?;
    let record = LeaderRecord::decode(entry.value()).ok()?;
    (Some(&record.node) == me).then(|| entry.version())
}

/// The subscriptions this node runs now: every competing one on the leader, and the broadcast ones of the
/// instances this node serves.
fn wanted(
    m: &mut Messaging,
    store: &kvstore::Store,
    registry: &parking_lot::RwLock<invoke::Registry>,
) -> Vec<control::messaging::engine::Wanted> {
    let registry = registry.read();
    let mut out = Vec::new();
    m.strategies.clear();
    for ((topic, base, method), record) in &m.subscriptions {
        let target = store.get(&AetherKey::Target { artifact: record.value.artifact.clone() });
        let config = target.and_then(|e| TargetRecord::decode(e.value()).ok()).map(|t| t.config).unwrap_or_default();
        let behaviour = SliceBehaviour::from_config(&config).subscription(topic.as_str());
        let competing = record.value.delivery == vocab::Delivery::Competing;
        let node = if competing {
            if m.leading.is_none() {
                continue;
            }
            None
        } else {
            let Some(me) = m.me.as_ref() else { continue };
            let artifact = record.value.artifact.to_string();
            if !registry.endpoints(&artifact, method.as_str()).iter().any(|e| e.node == me.as_str()) {
                continue;
            }
            Some(me.clone())
        };
        let settings = Settings {
            max_attempts: behaviour.max_attempts,
            retry_backoff_ms: behaviour.retry_backoff_ms,
            timeout_ms: behaviour.timeout_ms,
            window: if competing { WINDOW_COMPETING } else { 1 },
            lane_per_publisher: competing,
        };
        let id = sub_id(topic, base, method, node);
        m.strategies.insert(id.clone(), behaviour.strategy);
        let stored = m.cursors.get(&id).copied();
        let start = match (&id.node, competing) {
            (Some(me), false) => {
                endpoint_version(store, &record.value.artifact, method, me).map_or(Start::End, Start::From)
            }
            _ => Start::Oldest,
        };
        out.push((id, settings, stored, start));
    }
    out
}

/// The version at which `node`'s endpoint of `artifact`'s `method` was registered: when its instance began
/// to serve, so a broadcast subscription without a cursor starts there.
fn endpoint_version(store: &kvstore::Store, artifact: &kvstore::Artifact, method: &Name, node: &NodeId) -> Option<u64> {
    let prefix = format!("endpoints/{artifact}/{method}/");
    let mine = store.list(&prefix).filter(|e| matches!(e.key(), AetherKey::Endpoint { node: n, .. } if n == node));
    mine.map(|e| e.version().0).min()
}

fn guard(tag: &WriteTag, write: KvWrite, leading: Option<Revision>) -> KvWrite {
    let sub = match tag {
        WriteTag::Cursor { sub, .. } | WriteTag::DeadLetter { sub, .. } => sub,
    };
    match (sub.node.is_none(), leading) {
        (true, Some(version)) => write.guarded(AetherKey::ClusterLeader, Some(version)),
        // A competing subscription's write without leadership must not apply.
        (true, None) => write.guarded(AetherKey::ClusterLeader, Some(Revision(0))),
        (false, _) => write,
    }
}

fn settle_publishes(m: &mut Messaging) {
    let mut i = 0;
    while i < m.publishes.len() {
        let Some(answer) = poll_answer(&m.publishes[i].answer) else {
            i += 1;
            continue;
        };
        let p = m.publishes.swap_remove(i);
        if let Some(counts) = m.in_flight.get_mut(&p.topic) {
            counts.0 = counts.0.saturating_sub(1);
            counts.1 = counts.1.saturating_sub(p.bytes);
            if counts.0 == 0 {
                m.in_flight.remove(&p.topic);
            }
        }
        let result = match answer {
            Ok(ApplyResult::Ok { .. }) => Ok(p.id),
            Ok(ApplyResult::StoreFull) => Err(publish_error(429, "topic full: the cluster's store is full")),
            Ok(other) => Err(publish_error(500, format!("the message was not stored: {other:?}"))),
            Err(e) => Err(publish_error(e.status, e.detail)),
        };
        let _ = p.reply.send(result);
    }
}

fn settle_writes(m: &mut Messaging, now: u64) {
    let mut i = 0;
    while i < m.writes.len() {
        match poll_answer(&m.writes[i].1) {
            None => i += 1,
            Some(answer) => {
                let (tag, _) = m.writes.swap_remove(i);
                m.engine.written(tag, write_result(answer), now);
            }
        }
    }
    m.trims.retain(|_, rx| poll_answer(rx).is_none());
    m.others.retain(|rx| poll_answer(rx).is_none());
}

/// The leader's trims of this tick, bounded.
fn submit_trims(
    m: &mut Messaging,
    now: u64,
    guard: Revision,
    submits: &mut Vec<(kvstore::Command, mpsc::Sender<Result<ApplyResult, ApiError>>)>,
) {
    let topics: Vec<Name> = m.engine.topic_sizes().map(|(t, _, _)| t.clone()).collect();
    let mut budget = TRIMS_PER_TICK.min(TRIMS_IN_FLIGHT_MAX.saturating_sub(m.trims.len()));
    for topic in topics {
        if budget == 0 {
            return;
        }
        let cursors = topic_cursors(m, &topic);
        let versions = trims(m.engine.messages(&topic), &cursors, now, m.config.retention_ms, budget + m.trims.len());
        let ids: Vec<(u64, Name)> = m
            .engine
            .messages(&topic)
            .filter(|(v, _)| versions.binary_search(v).is_ok())
            .map(|(v, meta)| (v, meta.id.clone()))
            .collect();
        for (version, id) in ids {
            if budget == 0 || m.trims.contains_key(&(topic.clone(), version)) {
                continue;
            }
            budget -= 1;
            let write =
                KvWrite::Remove { key: AetherKey::Message { topic: topic.clone(), id }, expected: Revision(version) };
            let (tx, rx) = mpsc::channel();
            m.trims.insert((topic.clone(), version), rx);
            submits.push((write.guarded(AetherKey::ClusterLeader, Some(guard)).to_command(), tx));
        }
    }
}

/// The stored cursors of `topic`'s subscriptions.
fn topic_cursors(m: &Messaging, topic: &Name) -> TopicCursors {
    let mut cursors = TopicCursors::default();
    for ((t, base, method), record) in &m.subscriptions {
        if t != topic {
            continue;
        }
        let id = sub_id(t, base, method, None);
        match record.value.delivery {
            vocab::Delivery::Competing => cursors.competing.push(m.cursors.get(&id).map_or(0, |(n, _)| *n)),
            vocab::Delivery::Broadcast => {
                let nodes = m
                    .cursors
                    .iter()
                    .filter(|(k, _)| k.topic == id.topic && k.subscriber == id.subscriber && k.node.is_some())
                    .map(|(_, (n, _))| *n)
                    .collect();
                cursors.broadcast.push(nodes);
            }
        }
    }
    cursors
}

/// Hands one delivery to the delivery threads, or reports at once why it cannot start.
fn start_delivery(
    m: &mut Messaging,
    store: &kvstore::Store,
    registry: &parking_lot::RwLock<invoke::Registry>,
    calls: &crate::forward::Calls,
    delivery: Delivery,
    now: u64,
) {
    let sub = &delivery.sub;
    let key = (sub.topic.clone(), sub.subscriber.base.clone(), sub.subscriber.method.clone());
    let Some(record) = m.subscriptions.get(&key) else {
        return m.engine.delivered(delivery.token, Outcome::NoInstance, now);
    };
    let artifact = record.value.artifact.to_string();
    let message = store.get(&AetherKey::Message { topic: sub.topic.clone(), id: delivery.message_id.clone() });
    let Some(payload) = message.and_then(|e| MessageRecord::decode(e.value()).ok()).map(|r| r.payload) else {
        // Gone (trimmed or deleted): nothing left to deliver.
        return m.engine.delivered(delivery.token, Outcome::Acked, now);
    };
    let node = match &sub.node {
        Some(node) => Some(node.to_string()),
        None => pick(m, registry, calls, sub, &artifact),
    };
    let Some(node) = node else {
        return m.engine.delivered(delivery.token, Outcome::NoInstance, now);
    };
    let Ok(request) = encode(&delivery, &payload) else {
        return m.engine.delivered(delivery.token, Outcome::Failed("the delivery does not encode".into()), now);
    };
    let job = Job {
        token: delivery.token,
        node: node.clone(),
        artifact: artifact.clone(),
        method: sub.subscriber.method.to_string(),
        request,
        deadline: std::time::Instant::now() + std::time::Duration::from_millis(delivery.timeout_ms),
    };
    match m.pool.submit(job) {
        Ok(()) => {
            *m.load.entry((artifact.clone(), node.clone())).or_default() += 1;
            m.deliveries.insert(delivery.token, (artifact, node));
        }
        Err(_) => m.engine.delivered(delivery.token, Outcome::NoInstance, now),
    }
}

/// The instance a competing delivery goes to: round-robin or least-loaded among the live endpoints; for a
/// single-active subscriber only the lease holder's (none while nobody holds it: the delivery waits).
fn pick(
    m: &mut Messaging,
    registry: &parking_lot::RwLock<invoke::Registry>,
    calls: &crate::forward::Calls,
    sub: &SubId,
    artifact: &str,
) -> Option<String> {
    let registry = registry.read();
    let alive = calls.alive.read();
    let me = m.me.as_ref().map(NodeId::as_str);
    let holder = registry.lease_of(artifact).map(|lease| lease.holder.as_deref());
    let mut nodes: Vec<&str> = registry
        .endpoints(artifact, sub.subscriber.method.as_str())
        .iter()
        .map(|e| e.node.as_str())
        .filter(|n| Some(*n) == me || alive.contains(*n))
        .filter(|n| holder.is_none_or(|holder| holder == Some(*n)))
        .collect();
    nodes.dedup();
    if nodes.is_empty() {
        return None;
    }
    let chosen = match m.strategies.get(sub).copied().unwrap_or_default() {
        Strategy::LeastLoaded => {
            nodes.iter().min_by_key(|n| m.load.get(&(artifact.to_owned(), (**n).to_owned())).copied().unwrap_or(0))
        }
        Strategy::RoundRobin => {
            let turn = m.turn.entry(sub.clone()).or_default();
            *turn = turn.wrapping_add(1);
            nodes.get(*turn % nodes.len())
        }
    };
    chosen.map(|n| (*n).to_owned())
}

/// The request a subscriber gets: `POST /topics/{topic}` with the payload and the message's header fields.
fn encode(delivery: &Delivery, payload: &[u8]) -> Result<Vec<u8>, aether_sdk::codec::CodecError> {
    let path = format!("/topics/{}", delivery.sub.topic);
    let (attempt, at) = (delivery.attempt.to_string(), delivery.published_at_ms.to_string());
    let headers = [
        ("X-Aether-Topic", delivery.sub.topic.as_str()),
        ("X-Aether-Message-Id", delivery.message_id.as_str()),
        ("X-Aether-Publisher", delivery.publisher.as_str()),
        ("X-Aether-Attempt", attempt.as_str()),
        ("X-Aether-Published-At", at.as_str()),
    ];
    aether_sdk::codec::RequestParts {
        method: "POST",
        path: &path,
        headers: &headers,
        body: payload,
        ..Default::default()
    }
    .encode()
}

/// The dead letter's write (create-only), or `None` when the message is gone (nothing left to keep).
fn dead_letter(m: &Messaging, store: &kvstore::Store, letter: &DeadLetter, now: u64) -> Option<KvWrite> {
    let sub = &letter.sub;
    let message = store.get(&AetherKey::Message { topic: sub.topic.clone(), id: letter.message_id.clone() })?;
    let payload = MessageRecord::decode(message.value()).ok()?.payload;
    let key = (sub.topic.clone(), sub.subscriber.base.clone(), sub.subscriber.method.clone());
    let artifact =
        m.subscriptions.get(&key).map_or_else(|| sub.subscriber.base.to_string(), |r| r.value.artifact.to_string());
    let id = dead_letter_id(letter);
    let record = DeadLetterRecord {
        id: id.to_string(),
        topic: sub.topic.to_string(),
        subscriber: control::messaging::record::DeadSubscriber {
            artifact: artifact.clone(),
            method: sub.subscriber.method.to_string(),
        },
        message_id: letter.message_id.to_string(),
        publisher: letter.publisher.clone(),
        published_at_ms: letter.published_at_ms,
        attempts: letter.attempts,
        last_error: letter.last_error.clone(),
        failed_at_ms: now,
        payload_base64: control::messaging::record::base64_encode(&payload),
    };
    warn!(
        "messaging: message {} of {} dead-lettered for {artifact}: {}",
        letter.message_id, sub.topic, letter.last_error
    );
    let data = serde_json::json!({
        "id": record.id, "topic": record.topic, "artifact": artifact, "method": record.subscriber.method,
        "message_id": record.message_id, "attempts": record.attempts, "last_error": record.last_error,
    });
    m.events.record(now, m.events.me(), "message_dead_lettered", data);
    Some(KvWrite::Set { key: AetherKey::DeadLetter { id }, expected: None, value: record.encode() })
}

/// One dead letter per (message, subscription): the message id and a hash of the subscription, so a second
/// leader writing it again finds it there.
fn dead_letter_id(letter: &DeadLetter) -> Name {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in letter.sub.subscriber.to_string().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let text = format!("{}-{:016x}", letter.message_id, hash);
    Name::parse_as(&text, "dead letter id").unwrap_or_else(|_| letter.message_id.clone())
}

/// Records each running subscription's counters once a second, for the rates.
fn sample(m: &mut Messaging, now: u64) {
    let running: Vec<SubId> = m.engine.running().cloned().collect();
    m.samples.retain(|id, _| running.contains(id));
    for id in running {
        if let Some((_, counters)) = m.engine.progress(&id) {
            let ring = m.samples.entry(id).or_default();
            ring.push_back((now, counters));
            while ring.len() > RATE_SAMPLES {
                ring.pop_front();
            }
        }
    }
}
