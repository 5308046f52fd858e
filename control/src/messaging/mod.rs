//! Messaging decisions without I/O: the stored records of topics, messages, cursors and dead letters
//! ([`record`]), the delivery engine ([`engine`]: order, lanes, retries, dead letters, cursors), the trim rule
//! ([`trim`]) and the subscription records ([`subscribe`]).
//!
//! The node (`aetherd::messaging`, `aetherd/src/node/messaging.rs`) feeds the engine from its store watches
//! and runs what it asks for: deliveries on its delivery threads, writes through consensus. Messages live in
//! the replicated store, so the decided log gives each topic one order: a message's order is its KV version.
//!
//! Invariants: as the crate's: decisions are functions of their inputs, time comes as `now_ms`, decoding
//! never panics, every collection read from input is bounded by the store that holds it.

pub mod engine;
pub mod record;
pub mod subscribe;
pub mod trim;

pub use engine::{Action, Delivery, Engine, MessageMeta, Outcome, Settings, Start, SubId, WriteResult, WriteTag};
pub use record::{CursorRecord, DeadLetterRecord, MessageRecord, Subscriber, SubscriptionRecord};
