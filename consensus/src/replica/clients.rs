//! Client commands: admission at this replica (stamped by the hybrid clock, with a deadline), forwarding
//! to every replica, the forwarded commands other replicas send, re-forwarding of commands that wait too
//! long, and dropping commands whose deadline passed.
//!
//! Re-forwarding goes by the local clock only: each queued command is due one `reforward_after_ms` after
//! this replica received (or last re-forwarded) it, whatever its origin's stamp says, so a command whose
//! origin died is spread again by whoever holds it; each tick sends at most `reforward_bytes_per_tick`.
//!
//! Expiry: a command's deadline is its stamp plus the origin's `command_ttl_ms`. The decided batch decides
//! it for everyone (see `Replica::apply_batch`); the queue drops it once our hybrid clock, which is never
//! below any stamp we have seen, is past it, so a stale command is not proposed again. A stale command can
//! thus be decided alone in a batch (its own stamp is the batch's time) only while a majority of replicas
//! still had clocks short of its deadline, that is within clock skew of it.

use super::{Output, RejectReason, Replica};
use crate::message::Message;
use crate::queue::PushError;
use crate::types::{Broken, ClientCommand, Command, CommandId, COMMAND_OVERHEAD_BYTES};

impl Replica {
    pub(super) fn on_submit(&mut self, now_ms: u64, commands: Vec<ClientCommand>, out: &mut Vec<Output>) {
        let mut accepted = Vec::new();
        for command in commands {
            if let Some(reason) = self.admit(now_ms, command, &mut accepted) {
                out.push(Output::Rejected { id: reason.0, reason: reason.1 });
            }
        }
        for chunk in accepted.chunks(self.config.forward_commands_max.max(1)) {
            out.push(Output::Broadcast { message: Message::Forward { commands: chunk.to_vec() } });
        }
        self.maybe_propose(now_ms, out);
    }

    /// Queues a client command stamped with our hybrid clock, or says why not.
    pub(super) fn admit(
        &mut self,
        now_ms: u64,
        command: ClientCommand,
        accepted: &mut Vec<Command>,
    ) -> Option<(CommandId, RejectReason)> {
        let id = command.id;
        if command.payload.len() > self.config.payload_bytes_max {
            return Some((id, RejectReason::TooLarge));
        }
        if self.is_applied(id) {
            return Some((id, RejectReason::AlreadyApplied));
        }
        if self.queue.contains(id) {
            return None;
        }
        if self.queue_over_admission_share(command.payload.len()) {
            return Some((id, RejectReason::QueueFull));
        }
        let timestamp_ms = self.clock.now(now_ms);
        let stamped = Command {
            id,
            origin: self.config.me,
            timestamp_ms,
            deadline_ms: timestamp_ms.saturating_add(self.config.command_ttl_ms),
            payload: command.payload,
            kind: command.kind,
        };
        match self.queue.push(stamped.clone(), self.reforward_due(now_ms)) {
            Ok(()) => {
                accepted.push(stamped);
                None
            }
            Err(PushError::AlreadyQueued) => None,
            Err(PushError::Full) => Some((id, RejectReason::QueueFull)),
        }
    }

    /// Client commands are admitted while the queue is below its share of the capacity (in commands and
    /// in bytes), so the commands every replica admits still fit in every queue; forwarded ones may fill it.
    pub(super) fn queue_over_admission_share(&self, payload_bytes: usize) -> bool {
        let n = self.members.len().max(1);
        let commands_max = (self.config.queue_commands_max / n).max(1);
        let bytes_max = self.config.queue_bytes_max / n;
        self.queue.len() >= commands_max || self.queue.bytes() + payload_bytes + COMMAND_OVERHEAD_BYTES > bytes_max
    }

    pub(super) fn is_applied(&self, id: CommandId) -> bool {
        self.config.broken != Broken::NoDedupe && self.sessions.is_applied(id)
    }

    /// Queues a command another replica holds (forwarded, or in its proposal), unless it applied already
    /// or its deadline passed by our clock. Its stamp moves our clock forward.
    pub(super) fn enqueue_forwarded(&mut self, now_ms: u64, command: Command) {
        self.clock.observe(now_ms, command.timestamp_ms);
        if self.is_applied(command.id) || command.expired_at(self.clock.now(now_ms)) {
            return;
        }
        if self.queue.push(command, self.reforward_due(now_ms)) == Err(PushError::Full) {
            self.stats.forwards_dropped_queue_full += 1;
        }
    }

    fn reforward_due(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.config.reforward_after_ms.max(1))
    }

    /// Drops queued commands whose deadline our clock has passed, answering them as expired.
    pub(super) fn drop_expired(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let now = self.clock.now(now_ms);
        for id in self.queue.remove_expired(now) {
            self.stats.expired_in_queue += 1;
            out.push(Output::Rejected { id, reason: RejectReason::Expired });
        }
    }

    /// On the retransmit tick: drops expired commands, then forwards again the commands due (held a whole
    /// period since we received or last forwarded them), within the byte budget.
    pub(super) fn reforward_old_commands(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.drop_expired(now_ms, out);
        let due = if self.config.broken.reforwards_by_origin_stamp() {
            let Some(cutoff_ms) = now_ms.checked_sub(self.config.reforward_after_ms) else {
                return;
            };
            self.queue.stamped_before(cutoff_ms, self.config.forward_commands_max)
        } else {
            let (period, budget) = (self.config.reforward_after_ms, self.config.reforward_bytes_per_tick);
            self.queue.take_due(now_ms, period, budget)
        };
        self.stats.reforwarded += due.len() as u64;
        for chunk in due.chunks(self.config.forward_commands_max.max(1)) {
            out.push(Output::Broadcast { message: Message::Forward { commands: chunk.to_vec() } });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::DecidedSlot;
    use crate::replica::{Input, TimerKind};
    use crate::types::{Config, Phase, ReplicaId, Slot};

    fn config(me: u8) -> Config {
        Config::new(3, ReplicaId(me), 7)
    }

    fn stamped(client: u64, seq: u64, origin: u8, timestamp_ms: u64) -> Command {
        Command {
            id: CommandId { client, seq },
            origin: ReplicaId(origin),
            timestamp_ms,
            deadline_ms: timestamp_ms + 30_000,
            payload: vec![1; 8],
            kind: crate::types::CommandKind::Client,
        }
    }

    fn forwarded_ids(out: &[Output]) -> Vec<CommandId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Broadcast { message: Message::Forward { commands } } => Some(commands.iter().map(|c| c.id)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn tick(replica: &mut Replica, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        replica.handle(now_ms, Input::Timer(TimerKind::Retransmit), &mut out);
        out
    }

    fn message(replica: &mut Replica, now_ms: u64, from: u8, message: Message) -> Vec<Output> {
        let mut out = Vec::new();
        replica.handle(now_ms, Input::Message { from: ReplicaId(from), message }, &mut out);
        out
    }

    fn started(me: u8, now_ms: u64) -> Replica {
        let mut replica = Replica::new(config(me));
        replica.start(now_ms, &mut Vec::new());
        replica
    }

    #[test]
    fn a_command_whose_origin_died_is_reforwarded_by_local_receive_time() {
        // The origin's clock is hours ahead of ours: its stamp says nothing about how long we held it.
        let mut replica = started(1, 1_000);
        let command = stamped(5, 0, 0, 7_200_000);
        message(&mut replica, 1_000, 0, Message::Forward { commands: vec![command.clone()] });
        let period = replica.config.reforward_after_ms;
        assert!(forwarded_ids(&tick(&mut replica, 1_000 + period / 2)).is_empty(), "too early");
        let out = tick(&mut replica, 1_000 + period + 1);
        assert_eq!(forwarded_ids(&out), vec![command.id], "held a whole period by our clock: forwarded again");
    }

    #[test]
    fn a_queued_command_is_reforwarded_at_most_once_per_period() {
        let mut replica = started(1, 1_000);
        let command = stamped(5, 0, 0, 0);
        message(&mut replica, 1_000, 0, Message::Forward { commands: vec![command.clone()] });
        let period = replica.config.reforward_after_ms;
        let retransmit = replica.config.retransmit_ms;
        let mut forwards = Vec::new();
        let mut now = 1_000;
        while now <= 1_000 + 3 * period {
            now += retransmit;
            if !forwarded_ids(&tick(&mut replica, now)).is_empty() {
                forwards.push(now);
            }
        }
        assert!(!forwards.is_empty(), "never forwarded again");
        assert!(forwards.windows(2).all(|w| w[1] - w[0] >= period), "forwarded at {forwards:?}, period {period}");
        assert!(forwards.len() <= 3, "forwarded at {forwards:?}");
    }

    #[test]
    fn commands_of_received_proposals_are_queued_after_a_null_slot() {
        let mut replica = started(1, 0);
        let mine = stamped(1, 0, 1, 10);
        message(&mut replica, 0, 2, Message::Forward { commands: vec![mine.clone()] });
        let theirs = stamped(2, 0, 0, 20);
        message(&mut replica, 0, 0, Message::Proposal { slot: Slot(0), batch: vec![theirs.clone()] });
        message(&mut replica, 0, 2, Message::Proposal { slot: Slot(0), batch: vec![stamped(3, 0, 2, 30)] });
        for from in [0, 2] {
            let state = Message::State { slot: Slot(0), phase: Phase(1), value: false, batch_digest: None };
            message(&mut replica, 0, from, state);
        }
        let mut out = Vec::new();
        for from in [0, 2] {
            let vote = Message::Vote { slot: Slot(0), phase: Phase(1), vote: Some(false), batch_digest: None };
            out.extend(message(&mut replica, 0, from, vote));
        }
        assert!(out.iter().any(|o| matches!(o, Output::Decided(d) if d.slot == Slot(0) && d.batch.is_none())));
        let next: Vec<CommandId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Broadcast { message: Message::Proposal { slot: Slot(1), batch } } => {
                    Some(batch.iter().map(|c| c.id).collect::<Vec<_>>())
                }
                _ => None,
            })
            .next()
            .unwrap_or_default();
        assert!(next.contains(&theirs.id) && next.contains(&mine.id), "slot 1 proposes {next:?}");
        assert_eq!(replica.queue_len(), 3);
    }

    #[test]
    fn queued_commands_below_a_moved_session_floor_are_purged() {
        let mut config = config(1);
        config.session_window = 2;
        let mut replica = Replica::new(config);
        replica.start(0, &mut Vec::new());
        message(&mut replica, 0, 0, Message::Forward { commands: vec![stamped(5, 0, 0, 10)] });
        assert_eq!(replica.queue_len(), 1);
        // Sequences 1..=3 apply; the window of 2 overflows and the floor moves past sequence 0.
        let batch = (1..=3).map(|seq| stamped(5, seq, 0, 20)).collect();
        let decisions = vec![DecidedSlot { slot: Slot(0), batch: Some(batch) }];
        message(&mut replica, 0, 0, Message::SyncReply { decisions });
        assert!(replica.is_applied(CommandId { client: 5, seq: 0 }));
        assert_eq!(replica.queue_len(), 0, "a command the sessions count as applied stays queued");
        assert_eq!(replica.stats().purged_below_floor, 1);
    }

    #[test]
    fn a_second_copy_of_a_command_in_a_decided_batch_is_filtered_and_counted() {
        let mut replica = Replica::new(config(1));
        replica.start(0, &mut Vec::new());
        let batch = vec![stamped(5, 1, 0, 20), stamped(5, 1, 0, 20), stamped(5, 2, 0, 20)];
        let decisions = vec![DecidedSlot { slot: Slot(0), batch: Some(batch) }];
        let out = message(&mut replica, 0, 0, Message::SyncReply { decisions });
        let applied: Vec<CommandId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Decided(d) => Some(d.batch.iter().flatten().map(|c| c.id).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(applied, vec![CommandId { client: 5, seq: 1 }, CommandId { client: 5, seq: 2 }]);
        assert_eq!(replica.stats().duplicates_filtered, 1);
        assert_eq!(replica.stats().slots_by_sync, 1);
    }

    #[test]
    fn admission_takes_a_payload_and_a_queue_share_exactly_at_their_bounds() {
        let mut config = config(1);
        config.payload_bytes_max = 16;
        // A third of the queue's bytes (three members): room for exactly two 16-byte commands.
        config.queue_bytes_max = 3 * 2 * (16 + crate::types::COMMAND_OVERHEAD_BYTES);
        let mut replica = Replica::new(config);
        replica.start(0, &mut Vec::new());
        let mut submit = |seq: u64, bytes: usize| {
            let mut out = Vec::new();
            let command = crate::types::ClientCommand::new(CommandId { client: 9, seq }, vec![0; bytes]);
            replica.handle(10, Input::Submit(vec![command]), &mut out);
            out.iter()
                .filter_map(|o| match o {
                    Output::Rejected { id, reason } => Some((id.seq, *reason)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(submit(1, 17), vec![(1, RejectReason::TooLarge)]);
        assert_eq!(submit(2, 16), vec![], "a payload at its bound");
        assert_eq!(submit(3, 16), vec![], "the second fills the byte share exactly");
        assert_eq!(submit(4, 1), vec![(4, RejectReason::QueueFull)]);
    }

    #[test]
    fn forwards_dropped_on_a_full_queue_are_counted() {
        let mut config = config(1);
        config.queue_commands_max = 2;
        let mut replica = Replica::new(config);
        replica.start(0, &mut Vec::new());
        let commands = (0..3).map(|seq| stamped(5, seq, 0, 10)).collect();
        message(&mut replica, 10, 0, Message::Forward { commands });
        assert_eq!(replica.queue_len(), 2);
        assert_eq!(replica.stats().forwards_dropped_queue_full, 1);
    }

    #[test]
    fn a_snapshot_nobody_asked_for_is_counted_and_ignored() {
        let mut replica = Replica::new(config(1));
        replica.start(0, &mut Vec::new());
        let state = crate::Bytes::from_static(b"state");
        replica.handle(0, Input::SnapshotTaken { next_slot: Slot(5), state }, &mut Vec::new());
        assert_eq!(replica.stats().snapshot_answers_ignored, 1);
    }

    #[test]
    fn a_repeated_catch_up_request_is_answered_again_once_its_period_has_passed() {
        let mut replica = Replica::new(config(1));
        replica.start(0, &mut Vec::new());
        let decisions = (0..3).map(|slot| DecidedSlot { slot: Slot(slot), batch: None }).collect();
        message(&mut replica, 0, 0, Message::SyncReply { decisions });
        assert_eq!(replica.next_slot(), Slot(3));
        let period = replica.config.retransmit_ms.max(replica.config.snapshot_retry_ms);
        let mut replies = |now_ms: u64| {
            let out = message(&mut replica, now_ms, 2, Message::SyncRequest { from_slot: Slot(0) });
            out.iter().filter(|o| matches!(o, Output::Send { message: Message::SyncReply { .. }, .. })).count()
        };
        assert_eq!(replies(100), 1);
        assert_eq!(replies(100 + period - 1), 0, "the reply may still be on its way");
        assert_eq!(replies(100 + period), 1);
    }

    #[test]
    fn reforwarding_sends_at_most_the_byte_budget_per_tick() {
        let mut config = config(1);
        let size = stamped(0, 0, 0, 0).size_bytes();
        config.reforward_bytes_per_tick = 10 * size;
        let mut replica = Replica::new(config);
        replica.start(0, &mut Vec::new());
        let commands: Vec<Command> = (0..25).map(|seq| stamped(5, seq, 0, 100)).collect();
        message(&mut replica, 0, 0, Message::Forward { commands });
        let period = replica.config.reforward_after_ms;
        let sent: Vec<usize> = (0..3).map(|i| forwarded_ids(&tick(&mut replica, period + i)).len()).collect();
        assert_eq!(sent, vec![10, 10, 5], "25 due commands over three ticks of a 10-command budget");
        assert!(forwarded_ids(&tick(&mut replica, period + 3)).is_empty());
        assert_eq!(replica.stats().reforwarded, 25);
    }

    /// Two replicas whose clocks disagree by an hour apply the same decided batch: the command the batch's
    /// time (its latest stamp) has outlived is dropped at both, the fresh one applies at both.
    #[test]
    fn a_decided_batch_drops_the_same_expired_commands_at_every_replica() {
        let old = stamped(1, 0, 0, 1_000);
        let fresh = stamped(2, 0, 2, 1_000 + old.deadline_ms);
        let batch = vec![old.clone(), fresh.clone()];
        for (me, now_ms) in [(1u8, 0u64), (2, 3_600_000)] {
            let mut replica = started(me, now_ms);
            let decisions = vec![DecidedSlot { slot: Slot(0), batch: Some(batch.clone()) }];
            let out = message(&mut replica, now_ms, 0, Message::SyncReply { decisions });
            let applied: Vec<CommandId> = out
                .iter()
                .filter_map(|o| match o {
                    Output::Decided(d) => d.batch.clone(),
                    _ => None,
                })
                .flatten()
                .map(|c| c.id)
                .collect();
            assert_eq!(applied, vec![fresh.id], "replica {me}");
            let expired = out
                .iter()
                .any(|o| matches!(o, Output::Rejected { id, reason: RejectReason::Expired } if *id == old.id));
            assert!(expired, "replica {me} answers the expired command");
            assert!(!replica.is_applied(old.id), "an expired command is not recorded as applied");
        }
    }

    /// A command twice in one decided batch applies once, whether the batch is small (scanned) or large
    /// (a set), and so does one that applied in an earlier slot.
    #[test]
    fn a_command_repeated_in_a_batch_or_applied_before_applies_once() {
        for size in [3u64, 40] {
            let mut replica = started(1, 0);
            let first = DecidedSlot { slot: Slot(0), batch: Some(vec![stamped(9, 0, 0, 10)]) };
            let mut batch: Vec<Command> = (0..size).map(|seq| stamped(5, seq, 0, 10)).collect();
            batch.push(stamped(5, 1, 2, 11));
            batch.push(stamped(9, 0, 2, 11));
            batch.insert(1, stamped(5, size - 1, 2, 11));
            let second = DecidedSlot { slot: Slot(1), batch: Some(batch) };
            let out = message(&mut replica, 0, 0, Message::SyncReply { decisions: vec![first, second] });
            let applied: Vec<Vec<CommandId>> = out
                .iter()
                .filter_map(|o| match o {
                    Output::Decided(d) => Some(d.batch.iter().flatten().map(|c| c.id).collect()),
                    _ => None,
                })
                .collect();
            let mut expected = vec![CommandId { client: 5, seq: 0 }, CommandId { client: 5, seq: size - 1 }];
            expected.extend((1..size - 1).map(|seq| CommandId { client: 5, seq }));
            assert_eq!(applied, vec![vec![CommandId { client: 9, seq: 0 }], expected], "batch of {size}");
            assert_eq!(replica.stats.duplicates_filtered, 3, "batch of {size}");
        }
    }

    /// A stale command alone in a batch is its own batch time, so only queues can stop it: once our clock
    /// (pushed forward by a newer stamp, though the local clock is far behind) is past its deadline, it
    /// is dropped from the queue and never proposed.
    #[test]
    fn a_stale_command_is_dropped_from_the_queue_and_not_proposed() {
        let mut replica = started(1, 5);
        let stale = stamped(1, 0, 0, 1_000);
        message(&mut replica, 5, 0, Message::Forward { commands: vec![stale.clone()] });
        assert_eq!(replica.queue_len(), 1);
        let newer = stamped(2, 0, 2, stale.deadline_ms + 1);
        message(&mut replica, 10, 2, Message::Forward { commands: vec![newer.clone()] });
        let out = tick(&mut replica, 20);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Rejected { id, reason: RejectReason::Expired } if *id == stale.id)));
        assert_eq!(replica.queue_len(), 1);
        message(&mut replica, 30, 0, Message::Forward { commands: vec![stale.clone()] });
        assert_eq!(replica.queue_len(), 1, "forwarded again, it is not queued again");
        let mut out = Vec::new();
        replica.handle(40, Input::Submit(vec![]), &mut out);
        let proposed: Vec<CommandId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Broadcast { message: Message::Proposal { batch, .. } } => Some(batch.iter().map(|c| c.id)),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!proposed.contains(&stale.id), "proposed {proposed:?}");
    }

    #[test]
    fn commands_are_stamped_monotonically_never_below_a_seen_stamp() {
        let mut replica = started(1, 50_000);
        message(&mut replica, 50_000, 0, Message::Forward { commands: vec![stamped(1, 0, 0, 9_000_000)] });
        let mut stamps = Vec::new();
        for (seq, now_ms) in [(1u64, 50_010u64), (2, 10), (3, 60_000)] {
            let mut out = Vec::new();
            let submit = ClientCommand::new(CommandId { client: 7, seq }, vec![seq as u8]);
            replica.handle(now_ms, Input::Submit(vec![submit]), &mut out);
            for o in out {
                if let Output::Broadcast { message: Message::Forward { commands } } = o {
                    stamps.extend(commands.iter().map(|c| (c.timestamp_ms, c.deadline_ms - c.timestamp_ms)));
                }
            }
        }
        assert_eq!(stamps.len(), 3);
        assert!(stamps.iter().all(|(t, ttl)| *t >= 9_000_000 && *ttl == replica.config.command_ttl_ms), "{stamps:?}");
        assert!(stamps.windows(2).all(|w| w[0].0 <= w[1].0), "{stamps:?}");
    }

    /// A replica that resumed from its log serves catch-up from the batches as they applied (duplicates
    /// and expired commands removed). A duplicate with the latest stamp must not make the raw batch drop
    /// a command the applied batch keeps.
    #[test]
    fn a_batch_filters_the_same_raw_or_as_applied_when_a_duplicate_has_the_latest_stamp() {
        let old = stamped(1, 0, 0, 1_000);
        let late_retry = stamped(2, 0, 2, old.deadline_ms + 5_000);
        let first = DecidedSlot { slot: Slot(0), batch: Some(vec![late_retry.clone()]) };
        let raw = DecidedSlot { slot: Slot(1), batch: Some(vec![old.clone(), late_retry.clone()]) };
        let mut outcomes = Vec::new();
        for second in [raw.clone(), DecidedSlot { slot: Slot(1), batch: Some(vec![old.clone()]) }] {
            let mut replica = started(1, 0);
            let out = message(&mut replica, 0, 0, Message::SyncReply { decisions: vec![first.clone(), second] });
            let applied: Vec<Vec<CommandId>> = out
                .iter()
                .filter_map(|o| match o {
                    Output::Decided(d) => Some(d.batch.iter().flatten().map(|c| c.id).collect()),
                    _ => None,
                })
                .collect();
            outcomes.push(applied);
        }
        assert_eq!(outcomes[0], vec![vec![late_retry.id], vec![old.id]]);
        assert_eq!(outcomes[0], outcomes[1]);
    }

    /// A replica whose clock is hours behind and that sees no commands (its peers are idle) would stamp
    /// commands that every peer takes as long expired; peers' clocks in `Status` keep it in step.
    #[test]
    fn a_replica_with_a_clock_far_behind_stamps_in_step_after_a_peer_status() {
        let mut replica = started(1, 10);
        message(&mut replica, 10, 2, Message::Status { next_slot: Slot(0), clock_ms: 7_200_000 });
        let mut out = Vec::new();
        let submit = ClientCommand::new(CommandId { client: 7, seq: 0 }, vec![1]);
        replica.handle(20, Input::Submit(vec![submit]), &mut out);
        let stamp = out.iter().find_map(|o| match o {
            Output::Broadcast { message: Message::Forward { commands } } => commands.first().map(|c| c.timestamp_ms),
            _ => None,
        });
        assert!(stamp.is_some_and(|s| s >= 7_200_000), "stamped {stamp:?}");
    }
}
