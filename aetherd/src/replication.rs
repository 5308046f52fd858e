//! The replicated control-plane store on one node: the Rabia replica (`consensus`), the state machine
//! (`kvstore`) and their durable log (`storage`), driven by the event loop.
//!
//! Client commands from management threads are wrapped in an envelope (`KV` or a read `BARRIER`), given
//! an id `(client = random per boot, seq)` (or the id the client's `Idempotency-Key` names), and
//! submitted; each waiter is answered when its command's slot applies, or when its deadline passes (504:
//! the command may still apply, until its consensus deadline, `[cluster] command_ttl_ms` after its
//! stamp, after which it no longer does). The node's own managers' writes wait that long (or until the core
//! decides or drops them), so a manager never acts on a view one of its writes may still change. Linearizable reads are barriers ordered through consensus and answered
//! from the store once applied; stale reads answer at once.
//!
//! What a failed write answers: 503 only when consensus never saw it (refused at the door, or still in the
//! turn's batch when the node stopped), so a retry is safe; 504 once it was handed to consensus (deadline,
//! shutdown, replication failure), because it may still apply. A retry under the same request id of a
//! write that applied is answered with the first attempt's result while this node holds it
//! (`answers`), else 409 `already_applied`; it never applies twice.
//!
//! Invariants:
//! - Every decided slot and every own round message (proposal, state, vote) is appended to the log and
//!   written to the kernel before any client hears about the slot or any peer sees the message
//!   (`end_turn`, run by the event loop once per turn, flushes the log before replies leave; the transport
//!   writes sockets after it).
//! - A storage failure anywhere in a turn stops the process from inside that turn
//!   (`Storage::fail_stop`), so none of the turn's messages or replies leave; the restart distrusts its
//!   own votes and recovers its vote floor.
//! - A replica votes at once after a restart only if its log holds everything it may have sent: not after
//!   a reboot without a clean stop, a storage failure, an unfinished recovery, or a log that shows lost
//!   records (a gap, own messages past the resumed slot); a node with an empty log starts as
//!   `Replica::fresh` (recovering unless the whole cluster is brand new).
//! - Client commands are batched per loop turn: one `Submit` per turn, so concurrent clients share forwards,
//!   proposals and log writes.
//! - The consensus core runs on wall-clock milliseconds at process start plus monotonic elapsed time
//!   (`now_ms`), so command stamps compare across nodes; the core keeps them monotonic across peers.
//! - The store applies decided slots in order, exactly once; a slot at or below the store's applied slot
//!   (a replay after restart, a catch-up of what the disk already had) is skipped.
//! - Snapshots the replica asks for are serialised off the loop (`snapshots`): the loop takes a view of
//!   the store at the asked slot and opens the log segment the snapshot will start from; the bytes come
//!   back on a later turn, go to the replica (which shares them with peers, never copying them whole) and,
//!   if it took them, to the disk.

mod answers;
mod restore;
#[cfg(test)]
mod tests;

use crate::snapshots::SnapshotWorker;
use crate::storage::{Recovered, Storage, StorageError};
use answers::{
    answer_read, fail, payload_digest, retried_by_id, reused_request_id, to_entry, write_answer, AppliedResults,
    Earlier, RESULTS_KEPT,
};
use consensus::{
    ClientCommand, CommandId, DecidedSlot, Decision, Input, Message, Output, RejectReason, Replica, ReplicaId,
};
use kvstore::{AetherKey, ApplyResult, Store};
use log::{debug, info, warn};
use mgmt::{ApiError, KvEntry};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Payload envelope tags.
const KV: u8 = 1;
const BARRIER: u8 = 2;
/// Log record kinds.
pub const RECORD_DECIDED: u8 = 1;
pub const RECORD_OWN_MESSAGE: u8 = 2;
/// The replica started recovering (it may not trust its own earlier votes) / finished recovering.
pub const RECORD_RECOVERY_STARTED: u8 = 3;
pub const RECORD_RECOVERY_FINISHED: u8 = 4;
/// How long a client waits for its command's slot.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long past its consensus deadline (`command_ttl_ms` after submission) an internal write still counts as
/// in flight when the core never said what became of it: the core answers `Expired` once its hybrid clock
/// passes the deadline, and a stale command can still be decided only within clock skew of it.
const INTERNAL_DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// Where a client write's outcome goes: a thread waiting on its channel, or a callback the event loop runs (a
/// deferred HTTP answer), which must not block. A callback dropped unanswered (the write never reached the
/// log, the node stopping) is answered 504 "may still apply", as a waiting thread that lost its channel is.
pub enum WriteReply {
    Channel(Sender<Result<u64, ApiError>>),
    Then(WriteThen),
}

/// The thread waiting for a write's outcome has gone.
#[derive(Debug)]
pub struct Gone;

/// The callback of a [`WriteReply::Then`]; called once.
pub struct WriteThen(Option<mgmt::WriteDone>);

impl WriteReply {
    pub fn then(done: mgmt::WriteDone) -> WriteReply {
        WriteReply::Then(WriteThen(Some(done)))
    }

    /// Hands over the outcome; never blocks. An error when the waiting thread is gone.
    pub fn send(self, answer: Result<u64, ApiError>) -> Result<(), Gone> {
        match self {
            WriteReply::Channel(channel) => channel.send(answer).map_err(|_| Gone),
            WriteReply::Then(mut then) => {
                if let Some(done) = then.0.take() {
                    done(answer);
                }
                Ok(())
            }
        }
    }
}

impl From<Sender<Result<u64, ApiError>>> for WriteReply {
    fn from(channel: Sender<Result<u64, ApiError>>) -> WriteReply {
        WriteReply::Channel(channel)
    }
}

impl Drop for WriteThen {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(ApiError::timeout("the node stopped before it answered the write; it may still apply")));
        }
    }
}

pub enum Waiter {
    /// A write of this node's own managers; its outcome only counts towards `internal_in_flight`.
    Internal,
    Write(WriteReply),
    /// A slice's write (`slice_state`): answered with the apply result itself.
    SliceWrite(Sender<Result<ApplyResult, ApiError>>),
    Get(AetherKey, Sender<Result<Option<KvEntry>, ApiError>>),
    /// At most `usize` entries under the prefix, in key order.
    List(String, usize, Sender<Result<Vec<KvEntry>, ApiError>>),
    /// One page of a listing, and whether more follow it.
    Page(mgmt::KvPage, Sender<Result<(Vec<KvEntry>, bool), ApiError>>),
    /// The whole store (a view sharing its values) and the last slot applied to it (`POST /api/backup`).
    Backup(Sender<Result<(u64, kvstore::KvState), ApiError>>),
}

struct Pending {
    waiter: Waiter,
    deadline: Instant,
    /// `payload_digest` of what this waiter submitted.
    digest: u64,
}

/// What the driver asks of the transport (and the node) after a turn.
pub enum Effect {
    Send(ReplicaId, Message),
    Broadcast(Message),
    Timer(consensus::TimerKind, u64),
    /// A reconfiguration applied: these members vote from the next slot on (the `nodes/members` record
    /// written in the same slot names them).
    MembersChanged,
    /// This node is no longer a member.
    Removed,
}

pub struct Replication {
    replica: Replica,
    store: Store,
    storage: Storage,
    client: u64,
    next_seq: u64,
    /// Waiters by command id; a retry under a request id still pending here waits beside the first.
    pending: HashMap<CommandId, Vec<Pending>>,
    /// Recent write results, for retries of writes that applied.
    results: AppliedResults,
    replies: Vec<Box<dyn FnOnce() + Send>>,
    /// The consensus clock: wall-clock milliseconds at process start, advanced by a monotonic clock, so
    /// stamps compare across nodes and restarts and never go backwards within a process.
    epoch: Instant,
    epoch_wall_ms: u64,
    internal_in_flight: usize,
    /// A recovery is recorded as started in the log and not yet as finished.
    recovery_logged: bool,
    /// Client commands of the current loop turn, submitted together at its end.
    batch: Vec<ClientCommand>,
    /// Own round messages already in the log: (slot, kind, phase), for the open slot only.
    persisted_own: Vec<(u64, u8, u32)>,
    /// The highest `next_slot` each peer reported (Status messages), to tell whether this node is behind.
    peer_next_slot: Vec<u64>,
    /// Serialises snapshots off the loop.
    snapshots: SnapshotWorker,
}

impl Replication {
    /// Builds the replica and the store from what the disk holds (empty on first start).
    /// `learner`: this node joins a running cluster and is not a voter yet; with an empty log it starts as a
    /// learner asking these members.
    pub fn new(
        config: consensus::Config,
        mut storage: Storage,
        recovered: Recovered,
        client: u64,
        learner: Option<consensus::Members>,
    ) -> Result<Replication, String> {
        let failed_stop = recovered.failed_stop.is_some();
        let (store, replica) = restore::restore(config, recovered, client, learner)?;
        let recovery_logged = replica.is_recovering();
        if recovery_logged {
            storage.append(replica.next_slot().0, RECORD_RECOVERY_STARTED, &[]);
            if let Err(e) = storage.flush() {
                storage.fail_stop(&e);
            }
        }
        if failed_stop {
            // The recovery is on record (and synced): a crash from here on resumes recovering anyway.
            if let Err(e) = storage.clear_failure_mark() {
                storage.fail_stop(&e);
            }
        }
        let peers = consensus::MEMBERS_MAX;
        Ok(Replication {
            recovery_logged,
            persisted_own: Vec::new(),
            batch: Vec::new(),
            peer_next_slot: vec![0; peers],
            snapshots: SnapshotWorker::start()?,
            replica,
            store,
            storage,
            client,
            next_seq: 0,
            pending: HashMap::new(),
            results: AppliedResults::new(RESULTS_KEPT),
            replies: Vec::new(),
            epoch: Instant::now(),
            epoch_wall_ms: crate::managers::wall_ms(),
            internal_in_flight: 0,
        })
    }

    /// The time the consensus core runs on (and its timers are armed in): see `epoch`.
    pub fn now_ms(&self) -> u64 {
        self.epoch_wall_ms.saturating_add(self.epoch.elapsed().as_millis() as u64)
    }

    pub fn start(&mut self) -> Result<Vec<Effect>, String> {
        let mut out = Vec::new();
        let now = self.now_ms();
        self.replica.start(now, &mut out);
        self.run(out)
    }

    pub fn handle(&mut self, input: Input) -> Result<Vec<Effect>, String> {
        if let Input::Message { from, message: Message::Status { next_slot, .. } } = &input {
            if let Some(seen) = self.peer_next_slot.get_mut(from.index()) {
                *seen = (*seen).max(next_slot.0);
            }
        }
        let mut out = Vec::new();
        let now = self.now_ms();
        self.collect_snapshots(now, &mut out)?;
        self.replica.handle(now, input, &mut out);
        self.run(out)
    }

    /// Feeds the replica the snapshots the worker finished, and hands the ones it took to the disk.
    fn collect_snapshots(&mut self, now: u64, out: &mut Vec<Output>) -> Result<(), String> {
        while let Some(taken) = self.snapshots.try_take() {
            let taken = taken?;
            let next_slot = consensus::Slot(taken.next_slot);
            self.replica.handle(now, Input::SnapshotTaken { next_slot, state: taken.state }, out);
            if self.replica.latest_snapshot_parts().map(|(slot, ..)| slot) != Some(next_slot) {
                debug!("a snapshot at slot {} was overtaken before it was ready", next_slot.0);
                continue;
            }
            info!(
                "snapshot at slot {}: {} bytes, serialised in {} ms off the loop",
                next_slot.0,
                taken.record.len(),
                taken.took.as_millis()
            );
            let finished = self.storage.finish_snapshot(next_slot.0, taken.record);
            self.durable(finished);
            if self.recovery_logged {
                // The snapshot drops older records: keep the recovery on record in the new segment.
                self.storage.append(next_slot.0, RECORD_RECOVERY_STARTED, &[]);
            }
        }
        Ok(())
    }

    /// Submits a KV command for `waiter`, under `request` when the client named it (else a fresh id of
    /// this node's own); answers at once when it cannot be submitted.
    fn submit(
        &mut self,
        payload_kind: u8,
        body: Vec<u8>,
        waiter: Waiter,
        request: Option<CommandId>,
    ) -> Result<Vec<Effect>, String> {
        self.submit_as(payload_kind, body, waiter, request, None)
    }

    /// `submit`, as a reconfiguration `(expected, next)` of the consensus membership when one is given.
    fn submit_as(
        &mut self,
        payload_kind: u8,
        body: Vec<u8>,
        waiter: Waiter,
        request: Option<CommandId>,
        reconfigure: Option<(consensus::Members, consensus::Members)>,
    ) -> Result<Vec<Effect>, String> {
        let id = request.unwrap_or_else(|| {
            self.next_seq += 1;
            CommandId { client: self.client, seq: self.next_seq - 1 }
        });
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(payload_kind);
        payload.extend_from_slice(&body);
        let digest = payload_digest(&payload);
        let waiters = self.pending.entry(id).or_default();
        if waiters.iter().any(|p| p.digest != digest) {
            fail(waiter, reused_request_id());
            return Ok(Vec::new());
        }
        if matches!(waiter, Waiter::Internal) {
            self.internal_in_flight += 1;
        }
        let already_waiting = !waiters.is_empty();
        // A client gives up after its deadline (504: "may still apply"). The managers' own writes count as in
        // flight until the core decides or drops them, so a manager never acts on a view that one of its
        // writes may still change: a leader that stopped waiting after 5 s would place an instance again
        // while its first placement, still queued, could apply up to `command_ttl_ms` after its stamp.
        let wait = match waiter {
            Waiter::Internal => {
                Duration::from_millis(self.replica.config().command_ttl_ms).saturating_add(INTERNAL_DEADLINE_SLACK)
            }
            _ => CLIENT_DEADLINE,
        };
        waiters.push(Pending { waiter, deadline: Instant::now() + wait, digest });
        // Commands of one loop turn go to the replica together (one Forward, one proposal), at `end_turn`. A
        // retry of a command still waiting here waits for the same slot: it is queued already.
        if !already_waiting {
            self.batch.push(match reconfigure {
                Some((expected, next)) => ClientCommand::reconfigure(id, expected, next, payload),
                None => ClientCommand::new(id, payload),
            });
        }
        Ok(Vec::new())
    }

    /// Commands wait for the end of the turn.
    pub fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The end of an event-loop turn: submits the commands that arrived during it as one batch, then makes
    /// the turn's log records reach the kernel, and only then answers clients. The transport writes the
    /// turn's frames after this returns, so no message leaves before the records it depends on.
    pub fn end_turn(&mut self) -> Result<Vec<Effect>, String> {
        let effects = if self.batch.is_empty() {
            Vec::new()
        } else {
            let batch = std::mem::take(&mut self.batch);
            self.handle(Input::Submit(batch))?
        };
        self.end_of_turn()?;
        Ok(effects)
    }

    pub fn submit_write(&mut self, command: &kvstore::Command, reply: WriteReply) -> Result<Vec<Effect>, String> {
        self.submit_write_as(command, reply, None)
    }

    /// A write of `command` that is also a reconfiguration of the consensus membership from `expected` to
    /// `next`: both apply in the same slot, or neither (409 when the membership changed meanwhile).
    pub fn submit_reconfigure(
        &mut self,
        expected: consensus::Members,
        next: consensus::Members,
        command: &kvstore::Command,
        reply: WriteReply,
    ) -> Result<Vec<Effect>, String> {
        let body = command.encode().map_err(|e| format!("cannot encode a reconfiguration: {e}"))?;
        self.submit_as(KV, body, Waiter::Write(reply), None, Some((expected, next)))
    }

    /// The membership that votes in the replica's next slot.
    pub fn members(&self) -> consensus::Members {
        self.replica.members()
    }

    /// The first slot the replica has not decided.
    pub fn next_slot(&self) -> u64 {
        self.replica.next_slot().0
    }

    /// The next slot `replica` last reported (a learner's progress).
    pub fn peer_progress(&self, replica: ReplicaId) -> Option<u64> {
        self.replica.peer_next_slot(replica).map(|s| s.0)
    }

    /// A write under the client's own request id: retries of it apply it at most once.
    pub fn submit_write_once(
        &mut self,
        command: &kvstore::Command,
        request: mgmt::RequestKey,
        reply: WriteReply,
    ) -> Result<Vec<Effect>, String> {
        self.submit_write_as(command, reply, Some(CommandId { client: request.client, seq: request.seq }))
    }

    fn submit_write_as(
        &mut self,
        command: &kvstore::Command,
        reply: WriteReply,
        request: Option<CommandId>,
    ) -> Result<Vec<Effect>, String> {
        match command.encode() {
            Ok(bytes) => self.submit(KV, bytes, Waiter::Write(reply), request),
            Err(e) => {
                let _ = reply.send(Err(ApiError::new(413, "too_large", e.to_string())));
                Ok(Vec::new())
            }
        }
    }

    /// Submits a slice's write (`slice_state`); the waiter gets the apply result, or an error once it is
    /// late or the node stops (as [`Replication::submit_write`]'s).
    pub fn submit_slice_write(
        &mut self,
        command: &kvstore::Command,
        reply: Sender<Result<ApplyResult, ApiError>>,
    ) -> Result<Vec<Effect>, String> {
        match command.encode() {
            Ok(bytes) => self.submit(KV, bytes, Waiter::SliceWrite(reply), None),
            Err(e) => {
                let _ = reply.send(Err(ApiError::new(413, "too_large", e.to_string())));
                Ok(Vec::new())
            }
        }
    }

    /// Submits a write of this node's own managers (deployment); nobody waits for its answer.
    pub fn submit_internal(&mut self, command: &kvstore::Command) -> Result<Vec<Effect>, String> {
        match command.encode() {
            Ok(bytes) => self.submit(KV, bytes, Waiter::Internal, None),
            Err(e) => {
                warn!("dropping an internal write to {}: {e}", command.key());
                Ok(Vec::new())
            }
        }
    }

    /// While this replica recovers its vote floor, the cluster must decide a couple of slots past where it
    /// was for the recovery to end; in an idle cluster nothing would. A no-op (a read barrier nobody waits
    /// for) from time to time makes sure something is decided.
    pub fn nudge_recovery(&mut self) -> Result<Vec<Effect>, String> {
        if !self.replica.is_recovering() || self.internal_in_flight > 0 {
            return Ok(Vec::new());
        }
        self.submit(BARRIER, Vec::new(), Waiter::Internal, None)
    }

    /// Internal writes submitted and not yet decided (or expired).
    pub fn internal_in_flight(&self) -> usize {
        self.internal_in_flight
    }

    pub fn submit_read(&mut self, waiter: Waiter) -> Result<Vec<Effect>, String> {
        self.submit(BARRIER, Vec::new(), waiter, None)
    }

    /// Answers a read from the local replica, now.
    pub fn read_now(&self, waiter: Waiter) {
        answer_read(&self.store, waiter);
    }

    /// Fails waiters whose deadline passed.
    pub fn expire(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.pending.retain(|_, waiters| {
            if waiters.iter().all(|p| p.deadline > now) {
                return true;
            }
            let (late, waiting): (Vec<Pending>, Vec<Pending>) = waiters.drain(..).partition(|p| p.deadline <= now);
            expired.extend(late);
            *waiters = waiting;
            !waiters.is_empty()
        });
        for p in expired {
            self.settle(p.waiter, Err(ApiError::timeout("not decided in time; a write may still apply")));
        }
    }

    /// Fails every waiter because the node is stopping or its replication failed (`why`). A write consensus
    /// has seen may still be decided at the peers: 504, never 503, so a client does not take it for refused.
    /// Commands still in the turn's batch never reached consensus, and a read changes nothing: 503.
    pub fn fail_all(&mut self, why: &str) {
        let unsubmitted: HashSet<CommandId> = self.batch.drain(..).map(|c| c.id).collect();
        let pending: Vec<(CommandId, Pending)> =
            self.pending.drain().flat_map(|(id, waiters)| waiters.into_iter().map(move |p| (id, p))).collect();
        for (id, p) in pending {
            let written = matches!(p.waiter, Waiter::Write(_) | Waiter::SliceWrite(_));
            let error = if written && !unsubmitted.contains(&id) {
                ApiError::timeout(format!("{why}; the write was submitted and may still apply"))
            } else {
                ApiError::unavailable(format!("{why}; nothing was submitted"))
            };
            self.settle(p.waiter, Err(error));
        }
    }

    /// Fails a waiter, keeping the count of internal writes right.
    fn settle(&mut self, waiter: Waiter, error: Result<(), ApiError>) {
        if matches!(waiter, Waiter::Internal) {
            self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
        }
        if let Err(e) = error {
            fail(waiter, e);
        }
    }

    pub fn applied_slot(&self) -> Option<u64> {
        self.store.applied_slot()
    }

    /// The replica's counters (slots, null slots, phases) for metrics.
    pub fn consensus_stats(&self) -> &consensus::Stats {
        self.replica.stats()
    }

    pub fn pending_commands(&self) -> usize {
        self.replica.queue_len()
    }

    /// The replica id this node runs as.
    pub fn me(&self) -> ReplicaId {
        self.replica.config().me
    }

    /// Not recovering, and not behind what any peer reported (one slot of slack: the open slot).
    pub fn caught_up(&self) -> bool {
        let furthest = self.peer_next_slot.iter().copied().max().unwrap_or(0);
        !self.replica.is_recovering() && self.replica.next_slot().0 + 1 >= furthest
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn close(self) {
        self.storage.close();
    }

    /// Carries out the core's outputs in order (an output may feed the core again), then ends the turn.
    fn run(&mut self, mut out: Vec<Output>) -> Result<Vec<Effect>, String> {
        let mut effects = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let output =
                std::mem::replace(&mut out[i], Output::SetTimer { kind: consensus::TimerKind::Retransmit, at_ms: 0 });
            i += 1;
            if let Some(more) = self.carry_out(output, &mut effects)? {
                out.extend(more);
            }
        }
        Ok(effects)
    }

    fn carry_out(&mut self, output: Output, effects: &mut Vec<Effect>) -> Result<Option<Vec<Output>>, String> {
        match output {
            Output::Send { to, message } => {
                self.persist_own(&message);
                effects.push(Effect::Send(to, message));
            }
            Output::Broadcast { message } => {
                self.persist_own(&message);
                effects.push(Effect::Broadcast(message));
            }
            Output::SetTimer { kind, at_ms } => effects.push(Effect::Timer(kind, at_ms)),
            Output::Decided(decision) => self.apply(decision)?,
            Output::Rejected { id, reason } => self.rejected(id, reason),
            Output::TakeSnapshot { next_slot, sessions, members } => {
                self.take_snapshot(next_slot.0, sessions, members)?
            }
            Output::MembersChanged { from_slot, members } => {
                info!("consensus members from slot {}: {members}", from_slot.0);
                effects.push(Effect::MembersChanged);
            }
            Output::Removed { at } => {
                warn!("this node is no longer a consensus member from slot {}", at.0);
                effects.push(Effect::Removed);
            }
            Output::InstallSnapshot { next_slot, state } => self.install(next_slot.0, &state)?,
        }
        Ok(None)
    }

    /// Records an own round message the first time it is sent (resends are byte-identical, so recording
    /// them again would only grow the log while a slot is stuck).
    fn persist_own(&mut self, message: &Message) {
        let Some(slot) = message.round_slot() else { return };
        let identity = match message {
            Message::Proposal { .. } => (slot.0, 0u8, 0u32),
            Message::State { phase, .. } => (slot.0, 1, phase.0),
            Message::Vote { phase, .. } => (slot.0, 2, phase.0),
            _ => return,
        };
        if self.persisted_own.iter().any(|(s, ..)| *s != slot.0) {
            self.persisted_own.retain(|(s, ..)| *s == slot.0);
        }
        if self.persisted_own.contains(&identity) {
            return;
        }
        self.persisted_own.push(identity);
        self.storage.append(slot.0, RECORD_OWN_MESSAGE, &consensus::encode_message(message));
    }

    fn apply(&mut self, decision: Decision) -> Result<(), String> {
        let slot = decision.slot.0;
        let record = DecidedSlot { slot: decision.slot, batch: decision.batch.clone() };
        self.storage.append(slot, RECORD_DECIDED, &wire::encode(&record));
        let rotated = self.storage.maybe_rotate();
        self.durable(rotated);
        if self.store.applied_slot().is_some_and(|applied| slot <= applied) {
            return Ok(());
        }
        let batch = decision.batch.unwrap_or_default();
        let kv_payloads: Vec<&[u8]> =
            batch.iter().filter(|c| c.payload.first() == Some(&KV)).map(|c| &c.payload[1..]).collect();
        let results = self.store.apply(slot, kv_payloads).map_err(|e| format!("slot {slot} does not apply: {e}"))?;
        let mut results = results.into_iter();
        for command in &batch {
            let result = if command.payload.first() == Some(&KV) { results.next() } else { None };
            let waiters = self.pending.remove(&command.id).unwrap_or_default();
            let kept = result.as_ref().filter(|_| retried_by_id(command.id));
            if waiters.is_empty() && kept.is_none() {
                continue;
            }
            let digest = payload_digest(&command.payload);
            if let Some(result) = kept {
                self.results.record(command.id, digest, result.clone());
            }
            for p in waiters {
                if p.digest == digest {
                    self.answer(p.waiter, result.clone());
                } else {
                    // The id applied with another payload: this waiter's request did not apply.
                    self.settle(p.waiter, Err(reused_request_id()));
                }
            }
        }
        Ok(())
    }

    fn answer(&mut self, waiter: Waiter, result: Option<ApplyResult>) {
        let store = &self.store;
        match (waiter, result) {
            (Waiter::Internal, result) => {
                self.internal_in_flight = self.internal_in_flight.saturating_sub(1);
                if let Some(ApplyResult::Malformed { reason }) = result {
                    warn!("an internal write was malformed: {reason}");
                }
            }
            (Waiter::Write(reply), Some(result)) => {
                let answer = write_answer(result);
                self.replies.push(Box::new(move || drop(reply.send(answer))));
            }
            (Waiter::SliceWrite(reply), Some(result)) => {
                self.replies.push(Box::new(move || drop(reply.send(Ok(result)))));
            }
            (Waiter::Write(reply), None) => {
                let answer = Err(ApiError::new(500, "internal", "a write was decided without a result"));
                self.replies.push(Box::new(move || drop(reply.send(answer))));
            }
            (read, _) => {
                // Reads are answered from the store as of this slot, after the log is flushed.
                match read {
                    Waiter::Get(key, reply) => {
                        let entry = store.get(&key).map(to_entry);
                        self.replies.push(Box::new(move || drop(reply.send(Ok(entry)))));
                    }
                    Waiter::List(prefix, limit, reply) => {
                        let entries: Vec<KvEntry> = store.list(&prefix).take(limit).map(to_entry).collect();
                        self.replies.push(Box::new(move || drop(reply.send(Ok(entries)))));
                    }
                    Waiter::Page(page, reply) => {
                        let answer = answers::page(store, &page);
                        self.replies.push(Box::new(move || drop(reply.send(Ok(answer)))));
                    }
                    Waiter::Backup(reply) => {
                        let taken = (store.applied_slot().unwrap_or(0), store.snapshot_view());
                        self.replies.push(Box::new(move || drop(reply.send(Ok(taken)))));
                    }
                    Waiter::Write(_) | Waiter::SliceWrite(_) | Waiter::Internal => {}
                }
            }
        }
    }

    fn rejected(&mut self, id: CommandId, reason: RejectReason) {
        for p in self.pending.remove(&id).unwrap_or_default() {
            let error = match reason {
                RejectReason::QueueFull => ApiError::unavailable("the consensus queue is full; retry shortly"),
                RejectReason::TooLarge => ApiError::new(413, "too_large", "the command is over the payload limit"),
                RejectReason::Expired => ApiError::timeout("the command expired before it was decided"),
                RejectReason::MembershipChanged => ApiError::new(
                    409,
                    "membership_changed",
                    "the cluster's members changed before this change applied; read them again and retry",
                ),
                RejectReason::AlreadyApplied => match self.results.earlier(id, p.digest) {
                    Earlier::Same(result) => {
                        let result = Some(result.clone());
                        self.answer(p.waiter, result);
                        continue;
                    }
                    Earlier::Different => reused_request_id(),
                    Earlier::Unknown => ApiError::new(
                        409,
                        "already_applied",
                        "this request applied earlier; this node no longer holds its result",
                    ),
                },
            };
            self.settle(p.waiter, Err(error));
        }
    }

    /// Hands a view of the store at `next_slot` (every `Decided` so far applied) to the snapshot worker,
    /// after opening the log segment the snapshot will start from.
    fn take_snapshot(
        &mut self,
        next_slot: u64,
        sessions: Vec<consensus::SessionRecord>,
        members: consensus::Members,
    ) -> Result<(), String> {
        let begun = self.storage.begin_snapshot(next_slot);
        self.durable(begun);
        self.snapshots.submit(next_slot, sessions, members, self.store.snapshot_view())
    }

    fn install(&mut self, next_slot: u64, state: &[u8]) -> Result<(), String> {
        if self.store.applied_slot().is_some_and(|applied| applied + 1 >= next_slot) {
            return Ok(());
        }
        let started = Instant::now();
        self.store
            .install_snapshot(state)
            .map_err(|e| format!("snapshot for slot {next_slot} does not install: {e}"))?;
        // Durable before any later slot is recorded: the log below it never existed on this node.
        let Some(snapshot) = self.replica.latest_snapshot() else { return Ok(()) };
        let written = self.storage.snapshot_now(snapshot.next_slot.0, &wire::encode(&snapshot));
        self.durable(written);
        if self.recovery_logged {
            self.storage.append(snapshot.next_slot.0, RECORD_RECOVERY_STARTED, &[]);
        }
        info!(
            "installed a snapshot from a peer at slot {next_slot}: {} bytes, {} ms (this node serves no slot meanwhile)",
            state.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// The outcome of a storage call; a failure stops the process here, inside the turn, so nothing the
    /// turn produced leaves (see `Storage::fail_stop`).
    fn durable<T>(&self, result: Result<T, StorageError>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => self.storage.fail_stop(&e),
        }
    }

    /// Log records reach the kernel before anyone hears about them.
    fn end_of_turn(&mut self) -> Result<(), String> {
        if self.recovery_logged && !self.replica.is_recovering() {
            self.recovery_logged = false;
            self.storage.append(self.replica.next_slot().0, RECORD_RECOVERY_FINISHED, &[]);
            info!("recovery finished at slot {}: this node votes again", self.replica.next_slot().0);
        }
        let flushed = self.storage.flush();
        self.durable(flushed);
        for reply in self.replies.drain(..) {
            reply();
        }
        Ok(())
    }
}
