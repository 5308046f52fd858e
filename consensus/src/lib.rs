//! Rabia (Pan et al., SOSP 2021) as a sans-IO state machine over opaque command batches.
//!
//! # What it owns
//! One replica of a leaderless replicated log. The shell (the node's event loop, or the simulator) feeds
//! it [`Input`]s with the current local time in milliseconds (`now_ms: u64`; any origin works, wall-clock
//! milliseconds make command stamps and deadlines meaningful across replicas) and
//! carries out the [`Output`]s in order: send or broadcast a [`Message`], arm a timer, apply a
//! [`Decision`], refuse a client command, take or install a snapshot. The crate never touches a socket,
//! a thread, a clock or a random source; the common coin is a keyed hash of the cluster's `coin_seed`
//! and (slot, phase), so every replica flips the same coin.
//!
//! # Protocol
//! Client commands are stamped by the receiving replica (its hybrid clock: `now_ms` made monotonic and
//! never below a stamp seen from any replica; and its id) and forwarded to every replica, whose pending
//! queues order them by (timestamp, origin, client, sequence). A replica re-forwards what it holds once
//! per `reforward_after_ms` of its own clock, within a byte budget per tick, and queues the commands of
//! the proposals it receives, so queues that missed a forward converge even when its origin died.
//! Each command carries a deadline (stamp plus `command_ttl_ms`): a decided batch drops the commands
//! whose deadline is below its latest stamp, identically everywhere, and queues drop them locally. Per slot, each
//! replica proposes a batch (its queue head, or the first proposal it received for the slot if it had not
//! proposed yet), then runs Rabia's randomized binary agreement on "a majority proposed the same batch":
//! decided 1 applies that batch, decided 0 is a null slot and the commands stay queued. Slots are decided
//! one at a time, in order (no pipelining). Fault-free with equal heads this is three message delays per
//! slot: proposal, state, vote. States and votes for 1 carry a 64-bit digest of the majority batch, so a
//! replica that decides 1 without having seen a majority of identical proposals can still pick the batch
//! out of the proposals it holds (its proposers may have restarted and forgotten it).
//!
//! A decided slot is never revisited; once decided, a replica moves on and answers peers still working on
//! that slot with the decision (catch-up), rather than with further votes.
//!
//! # Loss, duplication, reordering
//! Peers' messages are recorded first-come per (peer, slot, phase, round); duplicates and settled slots
//! are ignored. Every `retransmit_ms` a replica broadcasts `Status { next_slot, clock_ms }` and, if its
//! slot has been open for a period, resends its own messages of that slot unchanged. A peer behind us gets the decided
//! slots it lacks (or our latest snapshot when they were compacted); a peer ahead of us is asked for them.
//!
//! # Restart without persisted votes
//! A replica built with [`Replica::restarted`] has lost everything, including what it voted. It votes
//! again only from a *vote floor* on: it broadcasts `RecoveryProbe`, and once a majority of the cluster
//! (peers only) that are not themselves recovering reported their `next_slot`, the floor is the highest
//! reported plus two (with membership changes: a quorum of the membership of the replica's own
//! `next_slot` x reporting below x puts the floor at x + 1; see `replica/recovery.rs`). Until its own `next_slot` reaches the floor it only learns decisions (catch-up) and
//! forwards client commands. Why this is enough: before the crash it could have voted only in slots up to
//! its own `next_slot` s; having decided s - 1 means a majority V voted in s - 1, so each member of V had
//! `next_slot >= s - 1`; of the 2f peers at least f are in V, so any f + 1 answering peers include one of
//! them, and a replica that is not recovering never goes back below a `next_slot` it reached (a finished
//! recovery ends past its floor, which is past where it crashed). So s <= highest + 1 < floor.
//! A replica whose log is empty (new, or its disk was lost) starts with [`Replica::fresh`]: recovering like
//! this, unless every peer reports slot 0 (a brand-new cluster, where nothing was ever decided); and a
//! replica resumed from a log that shows lost records (a gap, own messages past its slot) recovers too.
//! Liveness caveat: if a majority loses its volatile state while the same slot is undecided, no replica
//! may vote there again and that slot stalls; with at most f replicas down or recovering at a time the
//! others always decide. Persisting votes would remove the caveat; we do not, and the simulator's crash
//! schedule respects that bound.
//!
//! # Membership changes
//! Members have stable ids ([`ReplicaId`], below [`MEMBERS_MAX`]); [`Config::members`] is the membership
//! at slot 0. A reconfiguration is a command of kind [`CommandKind::Reconfigure`] (made by the shell with
//! [`ClientCommand::reconfigure`], never from a client's bytes) inside an ordinary batch. When the batch
//! decided at slot s applies it (in batch order, only if its `expected` set is the membership at that
//! point and its `next` set is non-empty; otherwise it is dropped everywhere alike and refused with
//! [`RejectReason::MembershipChanged`]), `next` governs slot s + 1 on ([`Output::MembersChanged`]).
//! Why this is safe without any joint configuration: slots are decided one at a time, and a replica takes
//! part in slot s + 1 only after it decided every slot up to s, so the membership of s + 1 is a function
//! of the decided log below it, identical on every replica that takes part there; the agreement of a slot
//! runs entirely under one membership, with majorities of it, exactly as Rabia with a fixed membership.
//! Round messages for a slot the replica has not reached are buffered and judged (counted only from the
//! slot's members) once it gets there. A replica outside the membership of its `next_slot` (a learner,
//! [`Replica::learner`], or a removed member, [`Output::Removed`]) sends no proposal, state or vote; it
//! catches up from decided slots and snapshots (which carry the membership) and serves catch-up to
//! others. A learner takes part from the first slot whose membership contains it (past its recovery
//! floor). Liveness needs a majority of each slot's members up.
//!
//! # Duplicates, bounds, snapshots
//! A command id (client, sequence) applies at most once: sessions record applied ids as slots apply, so
//! duplicates are filtered out of [`Decision::batch`] identically on every replica, and a retried command
//! that already applied is refused with [`RejectReason::AlreadyApplied`]. Every queue and buffer has a
//! bound in [`Config`]; a full pending queue refuses client commands with [`RejectReason::QueueFull`].
//! Every `snapshot_every_slots` decisions the core asks the shell for a snapshot
//! ([`Output::TakeSnapshot`]); the answer ([`Input::SnapshotTaken`]) is the shell's "log compacted up to
//! this slot": the core then keeps decided batches only from there on, and serves older catch-up with the
//! snapshot bytes plus the sessions. The answer may come turns later (a shell serialises off its loop).
//! Catch-up messages fit a transport with a message size bound: a `SyncReply` holds at most
//! `sync_slots_max` slots and `sync_bytes_max` bytes (but at least one slot), and a snapshot travels in
//! `snapshot_chunk_bytes` chunks that the receiver pulls by (snapshot slot, offset), resuming after loss
//! and restarting on a newer snapshot. A replica that received a whole snapshot emits
//! [`Output::InstallSnapshot`].

//! # Driving it
//! ```
//! use consensus::{decode_message, ClientCommand, CommandId, Config, Input, Output, Replica, ReplicaId};
//!
//! // One replica of a one-member cluster, so the example decides on its own.
//! let mut replica = Replica::new(Config::new(1, ReplicaId(0), 0x5eed));
//! let mut out = Vec::new();
//! replica.start(0, &mut out);
//! let put = ClientCommand::new(CommandId { client: 9, seq: 1 }, b"put a 1".to_vec());
//! replica.handle(3, Input::Submit(vec![put]), &mut out);
//! let mut applied = Vec::new();
//! for output in out.drain(..) {
//!     match output {
//!         // Encode with `encode_message`, frame, and write to the peer (or every peer).
//!         Output::Send { .. } | Output::Broadcast { .. } => {}
//!         // Keep one deadline per kind; at `at_ms` feed `Input::Timer(kind)`.
//!         Output::SetTimer { .. } => {}
//!         // Apply in order; answer the clients whose commands are in the batch.
//!         Output::Decided(decision) => applied.extend(decision.batch.into_iter().flatten()),
//!         // Tell the client to back off, or answer a retry from the state machine.
//!         Output::Rejected { .. } => {}
//!         // Snapshot the state machine now and feed back `Input::SnapshotTaken`.
//!         Output::TakeSnapshot { .. } => {}
//!         // Replace the state machine with these bytes.
//!         Output::InstallSnapshot { .. } => {}
//!         // Who votes from `from_slot` on; this replica no longer does from `at` on.
//!         Output::MembersChanged { .. } | Output::Removed { .. } => {}
//!     }
//! }
//! assert_eq!(applied.len(), 1);
//! // Bytes from a peer: decode (validated), then `Input::Message { from, message }`.
//! assert!(decode_message(b"not an archive").is_err());
//! ```

mod clock;
mod coin;
mod log;
mod message;
mod queue;
mod replica;
mod sessions;
mod slot;
mod types;

pub use bytes::Bytes;
pub use coin::coin;
pub use message::{decode_message, encode_message, DecidedSlot, DecodeError, Message, SessionRecord};
pub use replica::{Input, Output, RejectReason, Replica, Resume, SnapshotRecord, Stats, TimerKind};
pub use types::{
    batch_time_ms, Broken, ClientCommand, Command, CommandId, CommandKind, Config, Decision, Members, Phase, ReplicaId,
    Slot, MEMBERS_MAX,
};
