//! Identities, commands, decisions and the replica configuration: the plain values the core moves around.
//!
//! Invariants: a `CommandId` (client, sequence) names one client command for its whole life, across
//! retries and replicas; `Slot`s are decided in increasing order starting at 0; a `ReplicaId` is a
//! member's stable id, below `MEMBERS_MAX`; a `Members` set names ids below `MEMBERS_MAX` only (one bit
//! each), so every per-replica table is sized by `MEMBERS_MAX`; a reconfiguration is a `Command` whose
//! `kind` says so, never a payload a client could forge.

use rkyv::{Archive, Deserialize, Serialize};

/// How many member ids exist: `ReplicaId`s are `0..MEMBERS_MAX`.
pub const MEMBERS_MAX: usize = 64;

/// A member's stable id, below `MEMBERS_MAX`. Ids are not positions: a cluster may be `{0,3,4}`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u8);

impl ReplicaId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of member ids: bit i is `ReplicaId(i)`. The membership governing a slot is a function of the
/// decided log below it (see the crate documentation), so every replica taking part in a slot holds the
/// same `Members` for it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Members(u64);

impl Members {
    /// `{0, 1, .., n - 1}` (capped at `MEMBERS_MAX`).
    pub fn first(n: u8) -> Members {
        match u32::from(n) {
            0 => Members(0),
            n if n as usize >= MEMBERS_MAX => Members(u64::MAX),
            n => Members((1u64 << n) - 1),
        }
    }

    pub fn from_bits(bits: u64) -> Members {
        Members(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether `id` is a member (false for an id at or past `MEMBERS_MAX`).
    pub fn contains(self, id: ReplicaId) -> bool {
        id.index() < MEMBERS_MAX && self.0 & (1u64 << id.index()) != 0
    }

    /// This set plus `id` (unchanged for an id at or past `MEMBERS_MAX`).
    pub fn with(self, id: ReplicaId) -> Members {
        match id.index() < MEMBERS_MAX {
            true => Members(self.0 | (1u64 << id.index())),
            false => self,
        }
    }

    pub fn without(self, id: ReplicaId) -> Members {
        match id.index() < MEMBERS_MAX {
            true => Members(self.0 & !(1u64 << id.index())),
            false => self,
        }
    }

    pub fn union(self, other: Members) -> Members {
        Members(self.0 | other.0)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Member ids in increasing order.
    pub fn iter(self) -> impl Iterator<Item = ReplicaId> {
        (0..MEMBERS_MAX as u8).map(ReplicaId).filter(move |id| self.contains(*id))
    }

    /// A majority of the members: any two quorums of the same set intersect.
    pub fn quorum(self) -> usize {
        self.len() / 2 + 1
    }

    /// How many of `ids` are members.
    pub fn count_in(self, ids: impl IntoIterator<Item = ReplicaId>) -> usize {
        ids.into_iter().filter(|id| self.contains(*id)).count()
    }
}

impl std::fmt::Display for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, id) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", id.0)?;
        }
        f.write_str("}")
    }
}

/// What a command is to the core. Only the shell makes a `Reconfigure` (through
/// `ClientCommand::reconfigure`): a client's payload bytes can never turn into one.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Opaque to the core: the shell's state machine applies the payload.
    #[default]
    Client,
    /// Replace the membership `expected` by `next` from the slot after the one that decides it. Applies
    /// only if `expected` is the membership when the decided batch reaches it and `next` is non-empty;
    /// otherwise it is dropped and answered `RejectReason::MembershipChanged`. The payload is the
    /// shell's (names and addresses of the members), applied in the same slot.
    Reconfigure { expected: Members, next: Members },
}

/// A position in the replicated log.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u64);

impl Slot {
    pub fn next(self) -> Slot {
        Slot(self.0.saturating_add(1))
    }
}

/// A round of the binary agreement inside one slot, starting at 1.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phase(pub u32);

/// The identity of a client command: the client and its own sequence number. Two commands with the same
/// id are the same command (a retry) and apply at most once.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId {
    pub client: u64,
    pub seq: u64,
}

/// A command as the shell submits it: identity, kind and opaque payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCommand {
    pub id: CommandId,
    pub payload: Vec<u8>,
    pub kind: CommandKind,
}

impl ClientCommand {
    /// An ordinary command: the state machine applies `payload`.
    pub fn new(id: CommandId, payload: Vec<u8>) -> ClientCommand {
        ClientCommand { id, payload, kind: CommandKind::Client }
    }

    /// A membership change from `expected` to `next`, carrying the shell's own `payload`.
    pub fn reconfigure(id: CommandId, expected: Members, next: Members, payload: Vec<u8>) -> ClientCommand {
        ClientCommand { id, payload, kind: CommandKind::Reconfigure { expected, next } }
    }
}

/// A command inside the cluster: stamped by the replica that received it (`origin`) with that replica's
/// hybrid clock (`timestamp_ms`, wall-clock milliseconds kept monotonic and never below a stamp the replica
/// has seen, so stamps of different replicas compare), which orders the pending queues so replicas usually
/// propose the same head. `deadline_ms` is the stamp plus the origin's `command_ttl_ms`: a decided batch
/// whose latest stamp is past it drops the command on every replica alike (see `Decision`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub origin: ReplicaId,
    pub timestamp_ms: u64,
    pub deadline_ms: u64,
    pub payload: Vec<u8>,
    pub kind: CommandKind,
}

/// What a command's fixed fields cost in memory and on the wire, roughly.
pub(crate) const COMMAND_OVERHEAD_BYTES: usize = 56;

impl Command {
    /// What the command costs in memory and on the wire, roughly: payload plus fixed fields.
    pub fn size_bytes(&self) -> usize {
        self.payload.len() + COMMAND_OVERHEAD_BYTES
    }

    /// Whether a batch whose time is `batch_time_ms` drops this command. A deadline below the stamp
    /// counts as the stamp, so the latest-stamped command of a batch never expires in it.
    pub fn expired_at(&self, batch_time_ms: u64) -> bool {
        self.deadline_ms.max(self.timestamp_ms) < batch_time_ms
    }
}

/// The latest stamp in a batch (0 when empty). A decided batch's time is this over its fresh commands:
/// a function of the batch and the sessions alone, so every replica that applies the batch drops the
/// same expired commands, whatever its own clock says.
pub fn batch_time_ms(batch: &[Command]) -> u64 {
    batch.iter().map(|c| c.timestamp_ms).max().unwrap_or(0)
}

/// One decided slot, delivered in slot order. `batch: None` is a null slot (nothing applies);
/// `Some(commands)` lists the commands to apply in order, duplicates of earlier commands already removed,
/// and so are expired commands (deadline below the latest stamp among the batch's fresh commands; they
/// are answered with `RejectReason::Expired` and never recorded as applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub slot: Slot,
    pub batch: Option<Vec<Command>>,
}

/// Deliberately wrong behaviours that the simulator's checkers must catch. Never set outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Broken {
    #[default]
    Nothing,
    /// Decide as soon as a majority of states agree, skipping the vote round.
    DecideAfterFirstRound,
    /// No duplicate detection: a retried command is queued and applied again.
    NoDedupe,
    /// A restarted replica votes at once instead of syncing past the slots it may have voted in.
    RestartWithoutRecovery,
    /// Each replica flips its own coin instead of the common one.
    LocalCoin,
    /// `Replica::resume` ignores the replica's own messages of the open slot, so a resumed replica may
    /// propose, state or vote differently in a round it already spoke in.
    ResumeWithoutOwnMessages,
    /// Re-forward queued commands whose origin's stamp is older than our raw local clock by the period
    /// (no per-command receive time, every tick) instead of by local receive time.
    ReforwardByOriginStamp,
    /// Commands of peers' proposals never join the local queue.
    ProposalsNotQueued,
    /// Both of the above: the queue as it was when stamps were process-relative.
    ProcessClockQueue,
    /// Catch-up ignores its byte bounds: a sync reply carries up to `sync_slots_max` slots whatever their
    /// size, and a snapshot goes out as one chunk. A transport that refuses large messages then never lets
    /// a lagging replica catch up.
    UnboundedSyncReply,
    /// A peer behind slots the log dropped at its hard bound (no snapshot covers them) gets nothing, and
    /// no snapshot is asked for it: with a log resumed over its bound, the cluster can stall for good.
    NoSnapshotForLostSlots,
    /// A replica adopts a reconfiguration as soon as it sees it in a peer's proposal, inside the slot
    /// that may decide it (or not), instead of after the slot decided it.
    MembersFromProposal,
}

impl Broken {
    pub(crate) fn reforwards_by_origin_stamp(self) -> bool {
        matches!(self, Broken::ReforwardByOriginStamp | Broken::ProcessClockQueue)
    }

    pub(crate) fn proposals_not_queued(self) -> bool {
        matches!(self, Broken::ProposalsNotQueued | Broken::ProcessClockQueue)
    }
}

/// Everything a replica is told at construction. Sizes are limits: hitting one is a handled event.
#[derive(Clone, Debug)]
pub struct Config {
    /// The membership at slot 0 (the cluster's genesis), and the one a replica resumes with when no
    /// snapshot says otherwise; later slots' memberships follow from the decided reconfigurations.
    /// Quorums are majorities of a slot's members; 2f + 1 members tolerate f crashes.
    pub members: Members,
    pub me: ReplicaId,
    /// Shared by the whole cluster; keys the common coin.
    pub coin_seed: u64,
    pub batch_commands_max: usize,
    pub batch_bytes_max: usize,
    /// Pending queue capacity. Client commands are refused (back-pressure) once the queue holds
    /// `queue_commands_max / members` (the current membership's size); forwarded commands may fill it.
    pub queue_commands_max: usize,
    /// Pending queue capacity in bytes (`Command::size_bytes`), shared the same way as the count.
    pub queue_bytes_max: usize,
    pub payload_bytes_max: usize,
    /// Commands in one `Forward` message at most.
    pub forward_commands_max: usize,
    /// Period of the retransmit timer: resends, status and catch-up requests.
    pub retransmit_ms: u64,
    /// How long a replica holding commands waits before proposing, so forwarded commands can spread.
    pub propose_delay_ms: u64,
    /// A queued command is forwarded again once it has sat this long (by the local clock) since this
    /// replica received or last forwarded it: at most once per period per command.
    pub reforward_after_ms: u64,
    /// Bytes (`Command::size_bytes`) re-forwarded per retransmit tick, at most (at least one command).
    pub reforward_bytes_per_tick: usize,
    /// Lifetime of a command from its stamp: `deadline_ms = timestamp_ms + command_ttl_ms`. Past it, a
    /// replica drops the command from its queue, and a decided batch whose latest stamp is past it drops
    /// it everywhere. Must exceed how long the shell waits for an answer, with margin.
    pub command_ttl_ms: u64,
    /// Ask the shell for a snapshot every this many decided slots.
    pub snapshot_every_slots: u64,
    /// Decided slots kept in memory for catch-up, at most.
    pub log_slots_max: usize,
    /// Bytes of decided batches kept in memory for catch-up, at most.
    pub log_bytes_max: usize,
    /// Decided slots kept below a snapshot when it compacts the log (at most a quarter of `log_slots_max`
    /// and of `log_bytes_max`), so a peer that was a little behind when the snapshot was taken catches up
    /// from the log instead of fetching the snapshot. 0 compacts to the snapshot's slot exactly.
    pub log_tail_slots: usize,
    /// Decided slots in one catch-up reply, at most.
    pub sync_slots_max: usize,
    /// Bytes of decided batches in one catch-up reply, at most (a reply always carries at least one slot,
    /// so a single batch over this bound still goes through: batches are bounded by `batch_bytes_max`).
    pub sync_bytes_max: usize,
    /// Bytes of snapshot state in one `SnapshotChunk` message, at most.
    pub snapshot_chunk_bytes: usize,
    /// A snapshot transfer announcing more bytes than this is refused (the receiver's buffer bound).
    pub snapshot_bytes_max: usize,
    /// A receiver asks again for the chunk it waits for after this long without one; a sender offers the
    /// first chunk of its snapshot to a lagging peer at most this often while no chunk went out, and
    /// repeats a sync reply for the same starting slot at most this often.
    pub snapshot_retry_ms: u64,
    /// A transfer with no progress for this long is dropped; the next catch-up starts a new one.
    pub snapshot_stall_ms: u64,
    /// Messages for future slots kept until the replica gets there, at most.
    pub future_messages_max: usize,
    /// Bytes of commands inside those messages, at most.
    pub future_bytes_max: usize,
    /// How many slots ahead a message may be and still be kept.
    pub future_slots_window: u64,
    /// Phases in one slot, at most; beyond it the replica stops voting there and waits for catch-up.
    pub phases_max: u32,
    /// Client sessions (for duplicate detection) kept, at most; the least recently used is evicted.
    pub clients_max: usize,
    /// Per client, how far out of order sequence numbers may apply and still be recognised as duplicates.
    pub session_window: u64,
    #[doc(hidden)]
    pub broken: Broken,
}

impl Config {
    /// Defaults sized for a LAN cluster.
    pub fn new(replica_count: u8, me: ReplicaId, coin_seed: u64) -> Config {
        Config {
            members: Members::first(replica_count),
            me,
            coin_seed,
            batch_commands_max: 256,
            batch_bytes_max: 1 << 20,
            queue_commands_max: 65_536,
            queue_bytes_max: 64 << 20,
            payload_bytes_max: 64 * 1024,
            forward_commands_max: 1024,
            retransmit_ms: 20,
            propose_delay_ms: 0,
            reforward_after_ms: 100,
            reforward_bytes_per_tick: 1 << 20,
            command_ttl_ms: 30_000,
            snapshot_every_slots: 4096,
            log_slots_max: 16_384,
            log_bytes_max: 256 << 20,
            log_tail_slots: 2048,
            sync_slots_max: 64,
            sync_bytes_max: 16 << 20,
            snapshot_chunk_bytes: 4 << 20,
            snapshot_bytes_max: 1 << 30,
            snapshot_retry_ms: 200,
            snapshot_stall_ms: 5_000,
            future_messages_max: 4096,
            future_bytes_max: 16 << 20,
            future_slots_window: 8,
            phases_max: 512,
            clients_max: 65_536,
            session_window: 1024,
            broken: Broken::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u8]) -> Members {
        ids.iter().fold(Members::default(), |m, id| m.with(ReplicaId(*id)))
    }

    #[test]
    fn member_sets_add_remove_and_join_and_ignore_ids_past_the_bound() {
        assert_eq!(Members::from_bits(0b101).bits(), 0b101);
        assert_eq!(Members::from_bits(0b101), set(&[0, 2]));
        assert_eq!(set(&[0, 1]).with(ReplicaId(1)), set(&[0, 1]), "adding a member changes nothing");
        assert_eq!(set(&[0, 1]).without(ReplicaId(1)), set(&[0]));
        assert_eq!(set(&[0]).without(ReplicaId(1)), set(&[0]));
        let past = ReplicaId(MEMBERS_MAX as u8);
        assert_eq!(set(&[0]).with(past), set(&[0]));
        assert_eq!(set(&[0]).without(past), set(&[0]));
        assert_eq!(set(&[63]).with(ReplicaId(63)).len(), 1, "the last id fits");
        assert_eq!(set(&[0, 1]).union(set(&[1, 2])), set(&[0, 1, 2]));
        assert_eq!(set(&[0, 2]).count_in([0, 1, 2, 3].map(ReplicaId)), 2);
        assert_eq!(set(&[]).count_in([0, 1].map(ReplicaId)), 0);
    }

    fn stamped(timestamp_ms: u64, deadline_ms: u64) -> Command {
        Command {
            id: CommandId { client: 1, seq: timestamp_ms },
            origin: ReplicaId(0),
            timestamp_ms,
            deadline_ms,
            payload: Vec::new(),
            kind: CommandKind::Client,
        }
    }

    #[test]
    fn a_command_expires_in_a_batch_only_past_its_deadline_or_stamp() {
        assert!(!stamped(5, 10).expired_at(10), "at its deadline it still applies");
        assert!(stamped(5, 10).expired_at(11));
        assert!(!stamped(12, 10).expired_at(12), "a deadline below the stamp counts as the stamp");
        assert_eq!(batch_time_ms(&[stamped(5, 0), stamped(9, 0), stamped(7, 0)]), 9);
        assert_eq!(batch_time_ms(&[]), 0);
    }
}
