//! [`Engine`]: which message goes to which subscription next, when a failed one is tried again, when it
//! becomes a dead letter, and how far each subscription's cursor may move.
//!
//! Inputs: the applied messages of each topic (`messages/` puts and removals, with their versions), the
//! subscriptions this node runs ([`Engine::run`]: the competing ones on the leader, the broadcast ones of the
//! instances on this node), their stored cursors, delivery outcomes, the results of the engine's own writes,
//! and the time. Outputs ([`Engine::poll`]): deliveries to start and KV writes (cursor moves, dead letters).
//!
//! Invariants:
//! - a subscription's cursor `next` is the smallest version not yet done (acknowledged or dead-lettered), or
//!   one past the highest version seen when none is open; it only grows, and the stored cursor is written
//!   (compare-and-set on its version) only forward, at most every [`CURSOR_WRITE_EVERY_MS`];
//! - per lane at most one message is in flight or waiting on a retry or a dead letter, and it is the lane's
//!   oldest open message, so one publisher's messages reach a competing subscriber in publish order; a
//!   broadcast subscription has one lane (every message in order);
//! - at most `window` deliveries of a subscription are in flight, and one poll looks at most
//!   [`SCAN_MAX`] open messages of each;
//! - a message is done for a subscription only after its acknowledgement or once its dead letter is applied
//!   (or found already there), so a new leader resuming from the cursor loses nothing: it delivers again what
//!   was in flight (at least once, never lost);
//! - no clock or randomness: time is `now_ms` from the caller.

use super::record::Subscriber;
use crate::KvWrite;
use kvstore::{AetherKey, Name, NodeId, Revision};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Least time between two writes of one cursor.
pub const CURSOR_WRITE_EVERY_MS: u64 = 100;
/// Longest retry delay, however many attempts.
pub const BACKOFF_MS_MAX: u64 = 30_000;
/// How soon a delivery that found no instance is tried again (no attempt counted).
pub const NO_INSTANCE_RETRY_MS: u64 = 200;
/// How soon a dead letter whose write was lost is written again.
pub const DEAD_LETTER_RETRY_MS: u64 = 1_000;
/// Open messages one poll looks at per subscription.
pub const SCAN_MAX: usize = 512;
/// Deliveries in flight per competing subscription.
pub const WINDOW_COMPETING: usize = 64;

/// A subscription to run: its id, settings, stored cursor (`next` and KV version) and where it starts without
/// one.
pub type Wanted = (SubId, Settings, Option<(u64, Revision)>, Start);

/// One subscription as this node runs it: `node` is set for a broadcast subscription's own instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubId {
    pub topic: Name,
    pub subscriber: Subscriber,
    pub node: Option<NodeId>,
}

impl SubId {
    /// Its cursor's key.
    pub fn cursor_key(&self) -> AetherKey {
        AetherKey::Cursor {
            topic: self.topic.clone(),
            base: self.subscriber.base.clone(),
            method: self.subscriber.method.clone(),
            node: self.node.clone(),
        }
    }
}

/// How a subscription's deliveries are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Deliveries in flight at once (1 for broadcast).
    pub window: usize,
    /// One lane per publisher (competing) or one lane for all (broadcast).
    pub lane_per_publisher: bool,
}

/// Where a subscription starts when it has no stored cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message (a competing subscription).
    Oldest,
    /// Past every message applied so far.
    End,
    /// At this version (a broadcast instance's first start: the version its endpoint was registered at, so
    /// every message published once it served reaches it).
    From(u64),
}

/// What the engine knows of a message: enough to deliver it, the payload stays in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub id: Name,
    pub publisher: String,
    pub published_at_ms: u64,
    pub target: Option<Subscriber>,
    pub bytes: u64,
}

/// One delivery to start: the shell reads the payload at `messages/{topic}/{message_id}`, picks an instance
/// and calls it within `timeout_ms`, then reports with [`Engine::delivered`] under `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub token: u64,
    pub sub: SubId,
    pub version: u64,
    pub message_id: Name,
    pub publisher: String,
    pub published_at_ms: u64,
    pub attempt: u32,
    pub timeout_ms: u64,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Acked,
    /// Any other answer, or the deadline passed; the text says which.
    Failed(String),
    /// No instance to deliver to: tried again soon, no attempt counted.
    NoInstance,
}

/// Which of the engine's writes a result belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WriteTag {
    Cursor { sub: SubId, next: u64 },
    DeadLetter { sub: SubId, version: u64 },
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    Applied(Revision),
    /// A compare-and-set or guard found another version (for a dead letter: it exists already).
    Conflict,
    /// Not submitted, or no answer: it may or may not have applied.
    Lost,
}

/// A dead letter to write (the shell adds the payload from the store and the time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sub: SubId,
    pub version: u64,
    pub message_id: Name,
    pub publisher: String,
    pub published_at_ms: u64,
    pub attempts: u32,
    pub last_error: String,
}

/// What a poll asks of the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deliver(Delivery),
    /// Write the cursor: `write` is complete (compare-and-set on the stored version); the shell adds the
    /// leader guard to a competing subscription's.
    WriteCursor {
        tag: WriteTag,
        write: KvWrite,
    },
    /// Write this dead letter (create-only), then report under `tag`.
    WriteDeadLetter {
        tag: WriteTag,
        letter: DeadLetter,
    },
}

/// Counters of one subscription since this node started running it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotState {
    Ready { at_ms: u64 },
    InFlight { token: u64 },
    DeadLetterDue { at_ms: u64 },
    DeadLettering,
}

#[derive(Debug, Clone)]
struct Slot {
    state: SlotState,
    attempts: u32,
    last_error: String,
}

#[derive(Debug)]
struct Running {
    settings: Settings,
    /// Open messages (not done), by version.
    open: BTreeMap<u64, Slot>,
    /// One past the highest version this subscription has seen (its cursor when nothing is open).
    end: u64,
    in_flight: usize,
    /// The stored cursor: its `next` and KV version.
    stored: Option<(u64, Revision)>,
    writing: bool,
    written_at_ms: Option<u64>,
    counters: Counters,
}

impl Running {
    fn next(&self) -> u64 {
        self.open.keys().next().copied().unwrap_or(self.end)
    }
}

/// Messages of one topic, by version.
#[derive(Debug, Default)]
struct Topic {
    messages: BTreeMap<u64, MessageMeta>,
    bytes: u64,
    /// One past the highest version ever seen.
    end: u64,
}

/// The delivery decisions of one node. See the module documentation.
#[derive(Debug, Default)]
pub struct Engine {
    topics: BTreeMap<Name, Topic>,
    running: BTreeMap<SubId, Running>,
    tokens: HashMap<u64, (SubId, u64)>,
    next_token: u64,
}

/// The delay before attempt `attempt + 1` after `attempt` failures: `backoff * 2^(attempt-1)`, capped.
pub fn backoff_ms(retry_backoff_ms: u64, attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(32);
    retry_backoff_ms.saturating_mul(1u64 << shift).min(BACKOFF_MS_MAX)
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// A fresh engine whose delivery tokens continue after `earlier`'s, so an outcome of a delivery the earlier
    /// one started can never be taken for one of the new engine's.
    pub fn succeeding(earlier: &Engine) -> Engine {
        Engine { next_token: earlier.next_token, ..Engine::default() }
    }

    /// A message was applied at `version`.
    pub fn message_put(&mut self, topic: &Name, version: u64, meta: MessageMeta) {
        let entry = self.topics.entry(topic.clone()).or_default();
        entry.end = entry.end.max(version + 1);
        entry.bytes += meta.bytes;
        if let Some(old) = entry.messages.insert(version, meta.clone()) {
            entry.bytes = entry.bytes.saturating_sub(old.bytes);
        }
        for (id, running) in self.running.iter_mut().filter(|(id, _)| id.topic == *topic) {
            if version >= running.next() && addressed_to(&meta, id) {
                running.open.entry(version).or_insert_with(fresh_slot);
            }
            running.end = running.end.max(version + 1);
        }
    }

    /// A message was removed (trimmed, or deleted by hand). One still in flight ends with its outcome.
    pub fn message_removed(&mut self, topic: &Name, version: u64) {
        if let Some(entry) = self.topics.get_mut(topic) {
            if let Some(old) = entry.messages.remove(&version) {
                entry.bytes = entry.bytes.saturating_sub(old.bytes);
            }
            if entry.messages.is_empty() && !self.running.keys().any(|id| id.topic == *topic) {
                self.topics.remove(topic);
            }
        }
        for (_, running) in self.running.iter_mut().filter(|(id, _)| id.topic == *topic) {
            if running.open.get(&version).is_some_and(|s| !matches!(s.state, SlotState::InFlight { .. })) {
                running.open.remove(&version);
            }
        }
    }

    /// Forgets every message (the store was replaced); the shell then puts them all again.
    pub fn clear_messages(&mut self) {
        self.topics.clear();
    }

    /// Messages and bytes of each topic as applied here.
    pub fn topic_sizes(&self) -> impl Iterator<Item = (&Name, usize, u64)> {
        self.topics.iter().map(|(name, t)| (name, t.messages.len(), t.bytes))
    }

    /// Messages and bytes of `topic` as applied here.
    pub fn topic_size(&self, topic: &Name) -> (usize, u64) {
        self.topics.get(topic).map_or((0, 0), |t| (t.messages.len(), t.bytes))
    }

    /// Messages of `topic` by version (for trims and the topic view).
    pub fn messages(&self, topic: &Name) -> impl Iterator<Item = (u64, &MessageMeta)> {
        self.topics.get(topic).into_iter().flat_map(|t| t.messages.iter().map(|(v, m)| (*v, m)))
    }

    /// Runs exactly the subscriptions in `wanted` (with their settings and stored cursors); the others stop
    /// (their in-flight outcomes are then ignored).
    pub fn run(&mut self, wanted: Vec<Wanted>) {
        let keep: BTreeSet<&SubId> = wanted.iter().map(|(id, ..)| id).collect();
        self.running.retain(|id, _| keep.contains(id));
        self.tokens.retain(|_, (id, _)| keep.contains(id));
        for (id, settings, stored, start) in wanted {
            if let Some(running) = self.running.get_mut(&id) {
                running.settings = settings;
                continue;
            }
            let topic_end = self.topics.get(&id.topic).map_or(0, |t| t.end);
            let from = match (stored, start) {
                (Some((next, _)), _) => next,
                (None, Start::Oldest) => 0,
                (None, Start::End) => topic_end,
                (None, Start::From(version)) => version,
            };
            let mut running = Running {
                settings,
                open: BTreeMap::new(),
                end: from.max(topic_end),
                in_flight: 0,
                stored,
                writing: false,
                written_at_ms: None,
                counters: Counters::default(),
            };
            for (version, meta) in self.topics.get(&id.topic).into_iter().flat_map(|t| t.messages.range(from..)) {
                if addressed_to(meta, &id) {
                    running.open.insert(*version, fresh_slot());
                }
            }
            self.running.insert(id, running);
        }
    }

    /// The subscriptions running here.
    pub fn running(&self) -> impl Iterator<Item = &SubId> {
        self.running.keys()
    }

    /// The cursor a running subscription has reached here, and its counters.
    pub fn progress(&self, id: &SubId) -> Option<(u64, Counters)> {
        self.running.get(id).map(|r| (r.next(), r.counters))
    }

    /// The stored cursor of a running subscription changed (a watch event; `None`: removed).
    pub fn cursor_stored(&mut self, id: &SubId, stored: Option<(u64, Revision)>) {
        let Some(running) = self.running.get_mut(id) else { return };
        running.stored = stored;
        // Another writer (an earlier leader's late write) moved it further: what is below is done.
        if let Some((next, _)) = stored {
            let below: Vec<u64> = running
                .open
                .range(..next)
                .filter(|(_, s)| !matches!(s.state, SlotState::InFlight { .. }))
                .map(|(v, _)| *v)
                .collect();
            for version in below {
                running.open.remove(&version);
            }
            running.end = running.end.max(next);
        }
    }

    /// A delivery ended.
    pub fn delivered(&mut self, token: u64, outcome: Outcome, now_ms: u64) {
        let Some((id, version)) = self.tokens.remove(&token) else { return };
        let Some(running) = self.running.get_mut(&id) else { return };
        running.in_flight = running.in_flight.saturating_sub(1);
        let Some(slot) = running.open.get_mut(&version) else { return };
        if slot.state != (SlotState::InFlight { token }) {
            return;
        }
        match outcome {
            Outcome::Acked => {
                running.open.remove(&version);
                running.counters.delivered += 1;
            }
            Outcome::NoInstance => {
                slot.attempts = slot.attempts.saturating_sub(1);
                slot.state = SlotState::Ready { at_ms: now_ms + NO_INSTANCE_RETRY_MS };
            }
            Outcome::Failed(error) => {
                running.counters.failed += 1;
                slot.last_error = error;
                slot.state = if slot.attempts >= running.settings.max_attempts {
                    SlotState::DeadLetterDue { at_ms: now_ms }
                } else {
                    SlotState::Ready { at_ms: now_ms + backoff_ms(running.settings.retry_backoff_ms, slot.attempts) }
                };
            }
        }
        if !self.topics.get(&id.topic).is_some_and(|t| t.messages.contains_key(&version)) {
            // Removed meanwhile: nothing left to deliver.
            if let Some(running) = self.running.get_mut(&id) {
                if running.open.get(&version).is_some_and(|s| matches!(s.state, SlotState::Ready { .. })) {
                    running.open.remove(&version);
                }
            }
        }
    }

    /// One of the engine's writes ended.
    pub fn written(&mut self, tag: WriteTag, result: WriteResult, now_ms: u64) {
        match tag {
            WriteTag::Cursor { sub, next } => {
                let Some(running) = self.running.get_mut(&sub) else { return };
                running.writing = false;
                if let WriteResult::Applied(version) = result {
                    if running.stored.is_none_or(|(_, at)| at < version) {
                        running.stored = Some((next, version));
                    }
                }
            }
            WriteTag::DeadLetter { sub, version } => {
                let Some(running) = self.running.get_mut(&sub) else { return };
                let Some(slot) = running.open.get_mut(&version) else { return };
                if slot.state != SlotState::DeadLettering {
                    return;
                }
                match result {
                    WriteResult::Applied(_) | WriteResult::Conflict => {
                        running.open.remove(&version);
                        running.counters.dead_lettered += 1;
                    }
                    WriteResult::Lost => slot.state = SlotState::DeadLetterDue { at_ms: now_ms + DEAD_LETTER_RETRY_MS },
                }
            }
        }
    }

    /// Deliveries to start and writes to make now.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, running) in &mut self.running {
            let Some(topic) = self.topics.get(&id.topic) else {
                cursor_action(id, running, now_ms, &mut actions);
                continue;
            };
            let started = scan(id, running, topic, now_ms, &mut self.next_token, &mut actions);
            for (token, version) in started {
                self.tokens.insert(token, (id.clone(), version));
            }
            cursor_action(id, running, now_ms, &mut actions);
        }
        actions
    }
}

fn fresh_slot() -> Slot {
    Slot { state: SlotState::Ready { at_ms: 0 }, attempts: 0, last_error: String::new() }
}

fn addressed_to(meta: &MessageMeta, id: &SubId) -> bool {
    meta.target.as_ref().is_none_or(|t| *t == id.subscriber)
}

/// Starts what may start among the open messages of one subscription, oldest first, one per lane.
fn scan(
    id: &SubId,
    running: &mut Running,
    topic: &Topic,
    now_ms: u64,
    next_token: &mut u64,
    actions: &mut Vec<Action>,
) -> Vec<(u64, u64)> {
    let mut lanes: HashSet<&str> = HashSet::new();
    let mut started = Vec::new();
    let settings = running.settings;
    for (version, slot) in running.open.iter_mut().take(SCAN_MAX) {
        let Some(meta) = topic.messages.get(version) else { continue };
        let lane = if settings.lane_per_publisher { meta.publisher.as_str() } else { "" };
        if !lanes.insert(lane) {
            continue;
        }
        match slot.state {
            SlotState::Ready { at_ms } if at_ms <= now_ms && running.in_flight < settings.window => {
                *next_token += 1;
                let token = *next_token;
                slot.attempts += 1;
                slot.state = SlotState::InFlight { token };
                running.in_flight += 1;
                started.push((token, *version));
                actions.push(Action::Deliver(Delivery {
                    token,
                    sub: id.clone(),
                    version: *version,
                    message_id: meta.id.clone(),
                    publisher: meta.publisher.clone(),
                    published_at_ms: meta.published_at_ms,
                    attempt: slot.attempts,
                    timeout_ms: settings.timeout_ms,
                }));
            }
            SlotState::DeadLetterDue { at_ms } if at_ms <= now_ms => {
                slot.state = SlotState::DeadLettering;
                actions.push(Action::WriteDeadLetter {
                    tag: WriteTag::DeadLetter { sub: id.clone(), version: *version },
                    letter: DeadLetter {
                        sub: id.clone(),
                        version: *version,
                        message_id: meta.id.clone(),
                        publisher: meta.publisher.clone(),
                        published_at_ms: meta.published_at_ms,
                        attempts: slot.attempts,
                        last_error: slot.last_error.clone(),
                    },
                });
            }
            _ => {}
        }
        if !settings.lane_per_publisher {
            break;
        }
    }
    started
}

/// The cursor write, when the cursor moved past the stored one and none is in flight or was written lately.
fn cursor_action(id: &SubId, running: &mut Running, now_ms: u64, actions: &mut Vec<Action>) {
    let next = running.next();
    let stored_next = running.stored.map(|(n, _)| n);
    let moved = stored_next.is_none_or(|stored| next > stored);
    let recent = running.written_at_ms.is_some_and(|at| now_ms < at + CURSOR_WRITE_EVERY_MS);
    if !moved || running.writing || recent {
        return;
    }
    running.writing = true;
    running.written_at_ms = Some(now_ms);
    let value = crate::records::Record::encode(&super::record::CursorRecord { next });
    let write = KvWrite::Set { key: id.cursor_key(), expected: running.stored.map(|(_, v)| v), value };
    actions.push(Action::WriteCursor { tag: WriteTag::Cursor { sub: id.clone(), next }, write });
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
