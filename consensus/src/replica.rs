//! `Replica`: one member of the cluster as a sans-IO state machine. It owns the pending queue, the
//! current slot's agreement, the decided log kept for catch-up, client sessions, the hybrid clock that
//! stamps commands, and the restart recovery.
//!
//! Invariants:
//! - Slots are decided and output strictly in order; `next_slot` is the first slot not yet output.
//! - The replica takes part (proposal, state, vote) only in `next_slot`, only in `Mode::Normal`, and only
//!   while `members` (the membership governing `next_slot`) contains it; it counts round messages only
//!   from the members of their slot, and serves catch-up to any peer.
//! - `members` is a function of the decided log below `next_slot` (genesis or snapshot membership, then
//!   every reconfiguration that applied, in order), so replicas in the same slot hold the same one.
//! - Every buffer is bounded by the `Config`; a message that does not fit a bound is dropped and counted.
//! - Nothing here reads a clock, a socket or a random source: time comes in as `now_ms`, and everything
//!   to do goes out as `Output`s, in order.
//! - A decided batch applies identically everywhere: duplicates (by the sessions) and expired commands
//!   (deadline below the batch's latest stamp) are filtered by the batch and the sessions alone.
//! - The queue never holds a command the sessions count as applied for long: a decided batch removes
//!   its commands, and a floor jump in the sessions removes the client's commands below it.

mod catchup;
mod clients;
mod membership;
mod recovery;
mod resume;
mod retransmit;
mod transfer;

pub use resume::{Resume, SnapshotRecord};

use std::collections::VecDeque;

use bytes::Bytes;

use crate::clock::HybridClock;
use crate::log::DecidedLog;
use crate::message::{Message, SessionRecord};
use crate::queue::PendingQueue;
use crate::sessions::Sessions;
use crate::slot::SlotAgreement;
use crate::types::{
    batch_time_ms, Broken, ClientCommand, Command, CommandId, Config, Decision, Members, ReplicaId, Slot, MEMBERS_MAX,
};

/// The timers a replica asks for. Arming a kind again replaces its previous deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Periodic: resend this slot's messages, report status, ask for catch-up.
    Retransmit,
    /// Propose the queue head (after `propose_delay_ms`).
    Propose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Back-pressure: the pending queue is at `queue_commands_max`. Retry later.
    QueueFull,
    /// This command id has applied already; the state machine holds its result.
    AlreadyApplied,
    /// The payload is over `payload_bytes_max`.
    TooLarge,
    /// The command outlived its deadline (`Config::command_ttl_ms` from its stamp) without being decided.
    /// From a decided batch it did not apply there; from a queue it was dropped here, but another replica
    /// may still hold it, so either way the outcome is "did not apply yet, and should not any more",
    /// not a guarantee: answer it as a timeout.
    Expired,
    /// A reconfiguration whose `expected` membership was not the current one when its batch applied
    /// (another change went first), or whose `next` is empty. It did not apply; read the membership again.
    MembershipChanged,
}

#[derive(Clone, Debug)]
pub enum Input {
    /// A message from peer `from`, as authenticated by the transport.
    Message { from: ReplicaId, message: Message },
    /// Client commands that reached this replica.
    Submit(Vec<ClientCommand>),
    /// A timer armed by `Output::SetTimer` fired.
    Timer(TimerKind),
    /// The shell's answer to `Output::TakeSnapshot`: the state machine's bytes at `next_slot`. It may
    /// come turns later (the shell serialises off its event loop); an answer to an ask that a newer ask
    /// replaced is ignored.
    SnapshotTaken { next_slot: Slot, state: Bytes },
    /// The process restarted: volatile state is gone. Same as building `Replica::restarted`.
    Restart { incarnation: u64 },
    /// The transport (re)connected to `peer`: frames in flight may have been lost, so the replica resends
    /// its messages of the current slot and its position to that peer.
    PeerConnected { peer: ReplicaId },
}

#[derive(Clone, Debug)]
pub enum Output {
    Send {
        to: ReplicaId,
        message: Message,
    },
    Broadcast {
        message: Message,
    },
    /// Call back with `Input::Timer(kind)` at local time `at_ms` (replaces an earlier deadline).
    SetTimer {
        kind: TimerKind,
        at_ms: u64,
    },
    /// Apply this slot, in order.
    Decided(Decision),
    Rejected {
        id: CommandId,
        reason: RejectReason,
    },
    /// Snapshot the state machine as it is after every `Decided` output so far (they cover exactly the
    /// slots below `next_slot`) and answer with `Input::SnapshotTaken`. The log below it may be dropped.
    /// `sessions` are the replica's sessions at the same point, for a shell that stores the snapshot
    /// record itself (they are what `latest_snapshot` will report once the answer is in).
    TakeSnapshot {
        next_slot: Slot,
        sessions: Vec<SessionRecord>,
        /// The membership governing `next_slot`, for the same record.
        members: Members,
    },
    /// Replace the state machine with this snapshot; decisions continue at `next_slot`.
    InstallSnapshot {
        next_slot: Slot,
        state: Bytes,
    },
    /// The membership governs slots from `from_slot` on. Follows the `Decided` output of the slot that
    /// changed it (`from_slot - 1`), or an `InstallSnapshot` that brought a different membership.
    MembersChanged {
        from_slot: Slot,
        members: Members,
    },
    /// This replica is no longer a member from slot `at` on: it stops proposing and voting (it still
    /// serves catch-up). Reported once per removal.
    Removed {
        at: Slot,
    },
}

/// Counters for tests, benchmarks and metrics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub slots_by_vote: u64,
    pub slots_by_sync: u64,
    pub null_slots: u64,
    pub null_run_longest: u64,
    null_run: u64,
    pub phases_total: u64,
    /// `phases_histogram[k - 1]`: slots decided by voting in phase k (the last bucket: k >= 16).
    pub phases_histogram: [u64; 16],
    pub phases_max: u32,
    pub duplicates_filtered: u64,
    pub snapshots_installed: u64,
    pub snapshot_answers_ignored: u64,
    pub forwards_dropped_queue_full: u64,
    /// Commands re-forwarded on the retransmit timer.
    pub reforwarded: u64,
    /// Commands dropped from a decided batch because it was past their deadline.
    pub expired_at_apply: u64,
    /// Commands dropped from the queue because the local clock was past their deadline.
    pub expired_in_queue: u64,
    /// Queued commands removed because the sessions' floor jumped past them.
    pub purged_below_floor: u64,
    pub future_messages_dropped: u64,
    pub invalid_messages: u64,
    pub exhausted_slots: u64,
    pub snapshot_chunks_sent: u64,
    pub snapshot_chunks_received: u64,
    /// Transfers replaced by a newer snapshot before they completed.
    pub snapshot_transfers_restarted: u64,
    /// Transfers dropped after `snapshot_stall_ms` without progress.
    pub snapshot_transfers_stalled: u64,
}

#[derive(Clone, Debug)]
struct Recovery {
    incarnation: u64,
    /// First answer per id (`MEMBERS_MAX` long).
    reported: Vec<Option<Slot>>,
    /// The first slot this replica may vote in, once enough peers answered (see `recovery`).
    vote_floor: Option<Slot>,
    /// Only for a replica that started with an empty log ([`Replica::fresh`]), while no peer reported a
    /// slot past 0: who reported slot 0, and since when a majority has.
    new_cluster: Option<resume::NewCluster>,
}

#[derive(Clone, Debug)]
enum Mode {
    Normal,
    Recovering(Recovery),
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerTrack {
    seen_slot: Slot,
    reply_from: Option<Slot>,
    reply_at_ms: u64,
    request_at_ms: Option<u64>,
    /// When we last sent this peer a snapshot chunk.
    chunk_sent_at_ms: Option<u64>,
    /// The `next_slot` of the last `Status` this peer sent.
    status_slot: Option<Slot>,
}

pub struct Replica {
    config: Config,
    mode: Mode,
    next_slot: Slot,
    /// The membership governing `next_slot`.
    members: Members,
    /// Members the shell told a learner to ask for catch-up (besides `members`).
    ask: Members,
    slot_started_ms: u64,
    /// Resends of this slot's own messages so far; each waits twice as long as the one before (up to 16
    /// periods), so a slot that takes long with large proposals does not resend megabytes every period.
    resends_in_slot: u32,
    agreement: SlotAgreement,
    queue: PendingQueue,
    clock: HybridClock,
    sessions: Sessions,
    log: DecidedLog,
    future: Vec<(ReplicaId, Message)>,
    future_bytes: usize,
    replay: VecDeque<(ReplicaId, Message)>,
    peers: Vec<PeerTrack>,
    propose_armed: bool,
    snapshot_asked: Option<(Slot, Vec<SessionRecord>, Members)>,
    slots_since_snapshot: u64,
    transfer: Option<transfer::Transfer>,
    /// The encoded sessions of the snapshot we serve, by its slot: the start of its image (`transfer`).
    served_sessions: Option<(Slot, Bytes)>,
    stats: Stats,
}

impl Replica {
    /// A member of a brand-new cluster (or one whose votes are known to be gone from everyone's
    /// consideration): it may vote from slot 0.
    ///
    /// Panics if `config.me` is not a member of `config.members` (a configuration error, not input).
    pub fn new(config: Config) -> Replica {
        assert!(config.members.contains(config.me), "replica {} outside the cluster {}", config.me.0, config.members);
        Replica::build(config)
    }

    /// An empty replica at slot 0 under the genesis membership, in `Mode::Normal`.
    ///
    /// Panics if `config.me` is not below `MEMBERS_MAX` (a configuration error, not input).
    fn build(config: Config) -> Replica {
        assert!(config.me.index() < MEMBERS_MAX, "replica id {} is not below {MEMBERS_MAX}", config.me.0);
        Replica {
            mode: Mode::Normal,
            next_slot: Slot(0),
            members: config.members,
            ask: Members::default(),
            slot_started_ms: 0,
            resends_in_slot: 0,
            agreement: SlotAgreement::new(Slot(0), &config, config.members),
            queue: PendingQueue::new(config.queue_commands_max, config.queue_bytes_max),
            clock: HybridClock::default(),
            sessions: Sessions::new(config.clients_max, config.session_window),
            log: DecidedLog::with_tail(config.log_slots_max, config.log_bytes_max, config.log_tail_slots),
            future: Vec::new(),
            future_bytes: 0,
            replay: VecDeque::new(),
            peers: vec![PeerTrack::default(); MEMBERS_MAX],
            propose_armed: false,
            snapshot_asked: None,
            slots_since_snapshot: 0,
            transfer: None,
            served_sessions: None,
            stats: Stats::default(),
            config,
        }
    }

    /// A replica that ran before and lost its volatile state (votes included). It does not vote until it
    /// has learned from a majority of peers where the cluster is and caught up past every slot it might
    /// have voted in. `incarnation` must differ from every earlier one of this replica (a boot counter).
    pub fn restarted(config: Config, incarnation: u64) -> Replica {
        let recovering = config.broken != Broken::RestartWithoutRecovery;
        let mut replica = Replica::build(config);
        if recovering {
            replica.mode = Mode::Recovering(Recovery::new(incarnation));
        }
        replica
    }

    /// Arms the first timers (and starts recovery when restarted). Call once, before any `handle`.
    pub fn start(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.slot_started_ms = now_ms;
        self.arm_retransmit(now_ms, out);
        if let Mode::Recovering(recovery) = &self.mode {
            let incarnation = recovery.incarnation;
            out.push(Output::Broadcast { message: Message::RecoveryProbe { incarnation } });
        } else if self.agreement.is_active() {
            // Resumed inside a slot: what it already holds may be enough to move on (a one-replica cluster).
            self.drive(now_ms, out);
        }
    }

    pub fn next_slot(&self) -> Slot {
        self.next_slot
    }

    pub fn is_recovering(&self) -> bool {
        matches!(self.mode, Mode::Recovering(_))
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One line of internal state for failure reports.
    #[doc(hidden)]
    pub fn debug_line(&self) -> String {
        let mode = match &self.mode {
            Mode::Normal => "normal".to_string(),
            Mode::Recovering(r) => {
                format!("recovering(floor {:?}, reported {:?})", r.vote_floor.map(|s| s.0), r.reported)
            }
        };
        format!(
            "slot {} {mode} phase {} proposed {} decided {:?} exhausted {} queue {} future {} seen {:?} members {}",
            self.next_slot.0,
            self.agreement.phase(),
            self.agreement.has_proposed(),
            self.agreement.decided,
            self.agreement.exhausted,
            self.queue.len(),
            self.future.len(),
            self.peers.iter().take(8).map(|p| p.seen_slot.0).collect::<Vec<_>>(),
            self.members
        )
    }

    /// Feeds one input at local time `now_ms`; what to do goes to `out`, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Message { from, message } => self.on_message(now_ms, from, message, out),
            Input::Submit(commands) => self.on_submit(now_ms, commands, out),
            Input::Timer(TimerKind::Retransmit) => self.on_retransmit(now_ms, out),
            Input::Timer(TimerKind::Propose) => self.on_propose_timer(now_ms, out),
            Input::SnapshotTaken { next_slot, state } => self.on_snapshot_taken(next_slot, state),
            Input::PeerConnected { peer } => self.on_peer_connected(peer, out),
            Input::Restart { incarnation } => {
                let ask = self.ask.union(self.members);
                *self = Replica::restarted(self.config.clone(), incarnation);
                self.ask = ask;
                self.start(now_ms, out);
            }
        }
        while let Some((from, message)) = self.replay.pop_front() {
            self.on_message(now_ms, from, message, out);
        }
    }

    fn on_message(&mut self, now_ms: u64, from: ReplicaId, message: Message, out: &mut Vec<Output>) {
        if from.index() >= MEMBERS_MAX || from == self.config.me || !self.fits(&message) {
            self.stats.invalid_messages += 1;
            return;
        }
        if self.is_recovering() {
            self.note_new_cluster(now_ms, from, &message, out);
        }
        match message {
            Message::Forward { commands } => {
                commands.into_iter().for_each(|c| self.enqueue_forwarded(now_ms, c));
                self.maybe_propose(now_ms, out);
            }
            Message::Proposal { .. } | Message::State { .. } | Message::Vote { .. } => {
                self.on_round_message(now_ms, from, message, out)
            }
            Message::Status { next_slot, clock_ms } => {
                self.clock.observe(now_ms, clock_ms);
                self.on_status(now_ms, from, next_slot, out)
            }
            Message::SyncRequest { from_slot } => self.reply_sync(now_ms, from, from_slot, out),
            Message::SyncReply { decisions } => self.on_sync_reply(now_ms, decisions, out),
            Message::SnapshotChunk { next_slot, image_len, offset, members, bytes } => {
                let chunk = transfer::Chunk { next_slot, image_len, offset, members, bytes };
                self.on_snapshot_chunk(now_ms, from, chunk, out)
            }
            Message::SnapshotRequest { next_slot, offset } => {
                self.on_snapshot_request(now_ms, from, next_slot, offset, out)
            }
            Message::RecoveryProbe { incarnation } => self.on_recovery_probe(from, incarnation, out),
            Message::RecoveryReply { incarnation, next_slot } => {
                self.on_recovery_reply(now_ms, from, incarnation, next_slot, out)
            }
        }
    }

    /// Whether a peer's message is within every size bound of our configuration.
    fn fits(&self, message: &Message) -> bool {
        let c = &self.config;
        let batch_fits = |batch: &[Command]| {
            batch.len() <= c.batch_commands_max && batch.iter().all(|x| x.payload.len() <= c.payload_bytes_max)
        };
        match message {
            Message::Forward { commands } => {
                commands.len() <= c.forward_commands_max
                    && commands.iter().all(|x| x.payload.len() <= c.payload_bytes_max)
            }
            Message::Proposal { batch, .. } => batch_fits(batch),
            Message::State { phase, .. } | Message::Vote { phase, .. } => phase.0 >= 1 && phase.0 <= c.phases_max,
            Message::SyncReply { decisions } => {
                decisions.len() <= c.sync_slots_max
                    && decisions.iter().all(|d| d.batch.as_deref().is_none_or(batch_fits))
            }
            _ => true,
        }
    }

    fn on_round_message(&mut self, now_ms: u64, from: ReplicaId, message: Message, out: &mut Vec<Output>) {
        let Some(slot) = message.round_slot() else {
            return;
        };
        self.note_peer_slot(from, slot);
        if slot < self.next_slot {
            // Settled here. A state beyond phase 1 shows the peer is still working on it (the fault-free
            // path ends in phase 1, so this costs nothing there): send it the decision now rather than
            // on its next `Status`.
            if matches!(message, Message::State { phase, .. } if phase.0 >= 2) {
                self.reply_sync(now_ms, from, slot, out);
            }
            return;
        }
        if slot > self.next_slot {
            self.buffer_future(from, message);
            if slot.0 >= self.next_slot.0.saturating_add(2) {
                self.request_sync(now_ms, from, out);
            }
            return;
        }
        if !self.takes_part() || !self.members.contains(from) {
            return;
        }
        let from_index = from.index();
        let adopted = match message {
            Message::Proposal { batch, .. } => {
                // Whatever the slot decides, the proposal's commands join our queue: heads that differ
                // (a forward that never reached us, a proposer whose origin died) converge by the next slot.
                self.clock.observe(now_ms, batch_time_ms(&batch));
                if !self.config.broken.proposals_not_queued() {
                    for command in &batch {
                        if self.queue.improves(command) {
                            self.enqueue_forwarded(now_ms, command.clone());
                        }
                    }
                }
                if self.config.broken == Broken::MembersFromProposal {
                    self.adopt_members_early(&batch, out);
                }
                let adopt = (!self.agreement.has_proposed()).then(|| batch.clone());
                self.agreement.on_proposal(from_index, batch);
                adopt
            }
            Message::State { phase, value, batch_digest, .. } => {
                self.agreement.learn_digest(batch_digest);
                self.agreement.on_state(from_index, phase, value, &self.config);
                None
            }
            Message::Vote { phase, vote, batch_digest, .. } => {
                self.agreement.learn_digest(batch_digest);
                self.agreement.on_vote(from_index, phase, vote, &self.config);
                None
            }
            _ => None,
        };
        self.propose(now_ms, adopted, out);
        self.drive(now_ms, out);
    }

    fn buffer_future(&mut self, from: ReplicaId, message: Message) {
        let within_window = message
            .round_slot()
            .is_some_and(|slot| slot.0 <= self.next_slot.0.saturating_add(self.config.future_slots_window));
        let size = message_bytes(&message);
        let full = self.future.len() >= self.config.future_messages_max
            || self.future_bytes + size > self.config.future_bytes_max;
        if !within_window || full {
            self.stats.future_messages_dropped += 1;
            return;
        }
        self.future_bytes += size;
        self.future.push((from, message));
    }

    fn maybe_propose(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if !self.takes_part() || self.agreement.has_proposed() || self.queue.is_empty() || self.propose_armed {
            return;
        }
        if self.config.propose_delay_ms == 0 {
            self.propose(now_ms, None, out);
            self.drive(now_ms, out);
            return;
        }
        self.propose_armed = true;
        out.push(Output::SetTimer {
            kind: TimerKind::Propose,
            at_ms: now_ms.saturating_add(self.config.propose_delay_ms),
        });
    }

    fn on_propose_timer(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.propose_armed = false;
        if !self.queue.is_empty() {
            self.propose(now_ms, None, out);
            self.drive(now_ms, out);
        }
    }

    /// Proposes once per slot: a peer's non-empty proposal when one triggered us (so heads converge),
    /// otherwise the head of our queue (possibly empty) once what expired by our clock is gone from it.
    fn propose(&mut self, now_ms: u64, adopted: Option<Vec<Command>>, out: &mut Vec<Output>) {
        if !self.takes_part() || self.agreement.has_proposed() || self.agreement.exhausted {
            return;
        }
        self.drop_expired(now_ms, out);
        let batch = match adopted {
            Some(batch) if !batch.is_empty() => batch,
            _ => self.queue.head(self.config.batch_commands_max, self.config.batch_bytes_max),
        };
        let mut messages = Vec::new();
        self.agreement.propose(batch, &mut messages);
        broadcast_all(messages, out);
    }

    /// Advances the current slot's agreement and commits its outcome once known.
    fn drive(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let was_exhausted = self.agreement.exhausted;
        let mut messages = Vec::new();
        self.agreement.advance(&self.config, &mut messages);
        broadcast_all(messages, out);
        if self.agreement.exhausted && !was_exhausted {
            self.stats.exhausted_slots += 1;
        }
        let Some(outcome) = self.agreement.take_outcome() else {
            return;
        };
        let phases = self.agreement.phase();
        self.stats.slots_by_vote += 1;
        self.stats.phases_total += u64::from(phases);
        let bucket = (phases.max(1) as usize - 1).min(self.stats.phases_histogram.len() - 1);
        self.stats.phases_histogram[bucket] += 1;
        self.stats.phases_max = self.stats.phases_max.max(phases);
        self.commit(now_ms, outcome, out);
    }

    /// Outputs the decision of `next_slot` and moves to the next slot.
    fn commit(&mut self, now_ms: u64, outcome: Option<Vec<Command>>, out: &mut Vec<Output>) {
        let slot = self.next_slot;
        let mut members = self.members;
        let applied = outcome.as_ref().map(|batch| self.apply_batch(now_ms, slot, batch, &mut members, out));
        self.count_null(outcome.is_none());
        self.log.push(slot, outcome);
        out.push(Output::Decided(Decision { slot, batch: applied }));
        self.set_members(slot.next(), members, out);
        self.slots_since_snapshot += 1;
        self.maybe_ask_snapshot(slot.next(), out);
        self.advance_to(now_ms, slot.next(), out);
    }

    fn count_null(&mut self, null: bool) {
        if null {
            self.stats.null_slots += 1;
            self.stats.null_run += 1;
            self.stats.null_run_longest = self.stats.null_run_longest.max(self.stats.null_run);
        } else {
            self.stats.null_run = 0;
        }
    }

    /// Removes the batch from the queue and returns the commands that apply: seen for the first time and
    /// not past their deadline at the batch's time. Both tests read only the batch and the sessions, so
    /// every replica filters the same commands. The batch's time is the latest stamp among its fresh
    /// commands (first copies of ids not applied before): that command never expires itself, so the
    /// filtered batch has the same time and filters to itself, which matters because a replica that
    /// resumed from its log serves catch-up from filtered batches. Expired commands are answered as such
    /// and not recorded, exactly as a replica resuming from its log records only what applied.
    /// Reconfigurations among them apply in order against `members` (see `membership`), which ends as the
    /// membership of the next slot.
    fn apply_batch(
        &mut self,
        now_ms: u64,
        slot: Slot,
        batch: &[Command],
        members: &mut Members,
        out: &mut Vec<Output>,
    ) -> Vec<Command> {
        let mut fresh: Vec<&Command> = Vec::with_capacity(batch.len());
        // A second copy within the batch: found by scanning the fresh commands so far in the usual small
        // batch, by a set in a large one (a copy whose id applied earlier is caught as applied either way).
        let mut seen = (batch.len() > DEDUPE_SCAN_MAX).then(std::collections::BTreeSet::new);
        for command in batch {
            self.queue.remove(command.id);
            let repeated = self.config.broken != Broken::NoDedupe
                && match &mut seen {
                    Some(seen) => !seen.insert(command.id),
                    None => fresh.iter().any(|c| c.id == command.id),
                };
            if self.is_applied(command.id) || repeated {
                self.stats.duplicates_filtered += 1;
                continue;
            }
            fresh.push(command);
        }
        let time_ms = fresh.iter().map(|c| c.timestamp_ms).max().unwrap_or(0);
        self.clock.observe(now_ms, batch_time_ms(batch));
        let mut applied = Vec::with_capacity(fresh.len());
        for command in fresh {
            if command.expired_at(time_ms) {
                self.stats.expired_at_apply += 1;
                out.push(Output::Rejected { id: command.id, reason: RejectReason::Expired });
                continue;
            }
            if !membership::apply_change(members, command) {
                out.push(Output::Rejected { id: command.id, reason: RejectReason::MembershipChanged });
                continue;
            }
            if let Some(seq_floor) = self.sessions.record(command.id, slot) {
                self.stats.purged_below_floor += self.queue.remove_client_below(command.id.client, seq_floor) as u64;
            }
            applied.push(command.clone());
        }
        applied
    }

    fn advance_to(&mut self, now_ms: u64, next_slot: Slot, out: &mut Vec<Output>) {
        self.next_slot = next_slot;
        self.slot_started_ms = now_ms;
        self.resends_in_slot = 0;
        self.agreement = SlotAgreement::new(next_slot, &self.config, self.members);
        self.propose_armed = false;
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.future)
            .into_iter()
            .filter(|(_, m)| m.round_slot().is_some_and(|s| s >= next_slot))
            .partition(|(_, m)| m.round_slot() == Some(next_slot));
        self.future_bytes = later.iter().map(|(_, m)| message_bytes(m)).sum();
        self.future = later;
        self.replay.extend(ready);
        self.settle_vote_floor();
        self.finish_recovery_if_past_floor(now_ms, out);
        self.maybe_propose(now_ms, out);
    }
}

/// Batches up to this many commands look for repeated ids by scanning (cheaper than a set at this size).
const DEDUPE_SCAN_MAX: usize = 32;

/// Memory a buffered round message holds, roughly.
fn message_bytes(message: &Message) -> usize {
    match message {
        Message::Proposal { batch, .. } => 32 + batch.iter().map(Command::size_bytes).sum::<usize>(),
        _ => 32,
    }
}

impl Replica {
    /// Our position and our hybrid clock, for the retransmit tick and a peer that (re)connected.
    fn status_message(&self) -> Message {
        Message::Status { next_slot: self.next_slot, clock_ms: self.clock.last() }
    }
}

fn broadcast_all(messages: Vec<Message>, out: &mut Vec<Output>) {
    out.extend(messages.into_iter().map(|message| Output::Broadcast { message }));
}
