//! The messages replicas exchange, and their byte encoding (rkyv 0.8, validated with bytecheck).
//!
//! Invariants: `decode_message` never panics and never reads an archive before validating it; it copies
//! the input into an aligned buffer first because rkyv requires alignment. The sender of a message is not
//! part of it: the transport authenticates peers and tells the core who sent what.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Command, Members, Phase, Slot};

/// A decided slot as transferred during catch-up: the batch as decided, before duplicate removal.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DecidedSlot {
    pub slot: Slot,
    pub batch: Option<Vec<Command>>,
}

/// One client's duplicate-detection state, as carried inside snapshots.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub client: u64,
    /// Every sequence number below this one has applied.
    pub seq_floor: u64,
    /// Sequence numbers at or above `seq_floor` that have applied.
    pub applied_above: Vec<u64>,
    pub last_slot: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client commands spread to every replica so pending queues hold the same heads.
    Forward {
        commands: Vec<Command>,
    },
    /// The batch the sender proposes for `slot` (empty: it has nothing to propose).
    Proposal {
        slot: Slot,
        batch: Vec<Command>,
    },
    /// Round 1 of a phase: the sender's binary state. `batch_digest` names the batch a majority
    /// proposed when the sender knows it, so a replica that decides 1 can pick it out of the proposals it
    /// holds even if some of its proposers have since lost their state.
    State {
        slot: Slot,
        phase: Phase,
        value: bool,
        batch_digest: Option<u64>,
    },
    /// Round 2 of a phase: the sender's vote; `None` is "?". `batch_digest` as in `State`.
    Vote {
        slot: Slot,
        phase: Phase,
        vote: Option<bool>,
        batch_digest: Option<u64>,
    },
    /// Sent on the retransmit timer: the first slot the sender has not decided, and the sender's hybrid
    /// clock, so a replica whose own clock is behind the cluster's stamps its commands in step with it.
    Status {
        next_slot: Slot,
        clock_ms: u64,
    },
    /// Please send the decided slots from `from_slot` on (or a snapshot if they were compacted).
    SyncRequest {
        from_slot: Slot,
    },
    /// Consecutive decided slots, bounded in count and bytes (at least one).
    SyncReply {
        decisions: Vec<DecidedSlot>,
    },
    /// Part of the snapshot that covers every slot below `next_slot`, as an image of `image_len` bytes (its
    /// sessions, encoded, then the state machine's bytes), of which this carries `bytes` from `offset` on.
    /// `members` is the membership governing `next_slot` (every chunk carries it; the receiver takes the
    /// one of offset 0, and refuses an empty one there). A sender offers offset 0 to a peer behind its
    /// compacted log; the receiver asks for the rest with `SnapshotRequest`.
    SnapshotChunk {
        next_slot: Slot,
        image_len: u64,
        offset: u64,
        members: Members,
        bytes: Vec<u8>,
    },
    /// Please send the chunk of the snapshot at `next_slot` starting at `offset` (or the first chunk of a
    /// newer snapshot, when the sender no longer holds that one).
    SnapshotRequest {
        next_slot: Slot,
        offset: u64,
    },
    /// A restarted replica asks where the cluster is; `incarnation` tells replies apart from older ones.
    RecoveryProbe {
        incarnation: u64,
    },
    RecoveryReply {
        incarnation: u64,
        next_slot: Slot,
    },
}

impl Message {
    /// The slot a consensus-round message belongs to.
    pub fn round_slot(&self) -> Option<Slot> {
        match self {
            Message::Proposal { slot, .. } | Message::State { slot, .. } | Message::Vote { slot, .. } => Some(*slot),
            _ => None,
        }
    }
}

/// Why bytes did not decode into a `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "consensus message does not decode: {}", self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a message as an rkyv archive.
pub fn encode_message(message: &Message) -> Vec<u8> {
    match rkyv::to_bytes::<rkyv::rancor::Error>(message) {
        Ok(bytes) => bytes.into_vec(),
        // Serialising plain owned data into memory has no failure mode short of allocation failure.
        Err(error) => unreachable!("serialising a consensus message failed: {error}"),
    }
}

/// Validates and decodes an archive produced by `encode_message`. Never panics.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Message, rkyv::rancor::BoxedError>(&aligned)
        .map_err(|error| DecodeError { reason: format!("{} bytes, not a valid archive: {error}", bytes.len()) })
}
