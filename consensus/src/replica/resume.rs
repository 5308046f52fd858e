//! Resuming a replica from its own durable log instead of from nothing.
//!
//! A shell that persists (before sending or acting on them) every decided slot and every round message the
//! replica sends of its open slot can rebuild the replica after a crash with everything that matters: the
//! latest snapshot (state machine bytes plus sessions), the decided slots after it, and its own proposal,
//! states and votes of the first undecided slot. Such a replica is not "restarted" in the sense of
//! [`Replica::restarted`]: it remembers what it voted, so it resends exactly that and never votes
//! differently in a round, and it may vote at once. That is what lets a whole cluster stop and start again
//! (where no replica would be left to answer a recovery probe).
//!
//! "Before sending" means durable against the crash the shell must survive: written to the kernel covers
//! a process crash, a power loss needs the records synced before the turn's messages leave. A torn tail
//! is harmless only if it loses nothing that left the replica (the simulator checks both).
//!
//! A log the replica started writing as [`Replica::restarted`] (its earlier disk was lost) holds none of
//! its earlier votes until the recovery finished; a shell that crashes before then resumes with
//! [`Replica::resume_recovering`], never as a voter.
//!
//! A log that proves records were lost is no ground for voting either: a decided slot after a gap (the
//! records between never reached the disk, or an older snapshot replaced a newer one), or an own round
//! message of a slot past the resumed one (this replica got further than what the log lets it rebuild,
//! so it may have voted in slots it no longer knows about). [`Replica::resume`] then comes back
//! recovering under `Resume::incarnation`, exactly like [`Replica::resume_recovering`].
//!
//! An empty log says nothing either way: a brand-new cluster, or a node whose whole data directory was
//! lost. [`Replica::fresh`] starts recovering. Every replica, recovering or not, broadcasts `Status`
//! each retransmit period; once every peer has reported slot 0 and none more, nothing was ever decided
//! (a decided slot leaves a majority past slot 0) and it votes from slot 0: every replica of a new
//! cluster starts this way, so that is how a cluster forms. A peer past slot 0 ends that for good and the
//! replica recovers its vote floor like a restarted one. What it does not cover: a replica that voted in
//! slot 0 and lost its whole disk while slot 0 was still undecided everywhere (see ARCHITECTURE.md,
//! durability). The cost: a brand-new cluster votes only once every configured replica has started.

//! Membership: a resumed replica takes the membership from its snapshot (else `Config::members`, the
//! genesis one) and replays the decided slots after it, reconfigurations included, so it ends with the
//! membership of its `next_slot` exactly as if it had decided them live. A log that missed later changes
//! (the cluster moved on while this replica was down) is fixed by catch-up, slot by slot; in the meantime
//! it votes only where that membership contains it, and a recovering one counts its floor over it (see
//! `recovery`).

//! Invariants: decided slots are taken in order from the snapshot's `next_slot` (or 0) with no gap (a
//! record after a gap is ignored: the disk lost it, catch-up from peers fills it); sessions end up exactly
//! as if the slots had been decided live; own messages of any slot other than the open one are ignored;
//! a resumed replica votes at once only if its log shows no sign of lost records.

use super::{Mode, Output, Recovery, Replica};
use crate::log::StoredSnapshot;
use crate::message::{DecidedSlot, Message, SessionRecord};
use crate::slot::SlotAgreement;
use crate::types::ReplicaId;

/// What a [`Replica::fresh`] knows about whether its cluster is brand new.
#[derive(Clone, Debug)]
pub(super) struct NewCluster {
    /// Peers that reported slot 0 (and, since no peer reported more, never more), by id.
    at_zero: Vec<bool>,
}
use crate::types::{Broken, Config, Members, Slot, MEMBERS_MAX};
use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

/// A snapshot as the shell stores it: the state machine after every slot below `next_slot`, and the
/// replica's sessions at that point (needed for duplicate detection to stay identical on every replica).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub next_slot: Slot,
    pub sessions: Vec<SessionRecord>,
    /// The membership governing `next_slot`.
    pub members: Members,
    pub state: Vec<u8>,
}

/// What the shell read back from its durable log.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    pub snapshot: Option<SnapshotRecord>,
    /// Decided slots after the snapshot, in order (as the replica output them).
    pub decided: Vec<DecidedSlot>,
    /// Round messages this replica sent (proposal, states, votes), in the order it sent them.
    pub own_messages: Vec<Message>,
    /// A fresh boot counter, used if the log proves lost records and the replica must recover.
    pub incarnation: u64,
}

impl Recovery {
    pub(super) fn new(incarnation: u64) -> Recovery {
        Recovery { incarnation, reported: vec![None; MEMBERS_MAX], vote_floor: None, new_cluster: None }
    }
}

impl Replica {
    /// A replica rebuilt from its durable log (see the module documentation). The shell has already
    /// restored its state machine from the same snapshot and slots; no `Decided` output repeats them.
    pub fn resume(config: Config, resume: Resume) -> Replica {
        let mut replica = Replica::build(config);
        let mut lost = false;
        if let Some(snapshot) = resume.snapshot {
            replica.sessions.import(&snapshot.sessions);
            replica.next_slot = snapshot.next_slot;
            // An empty membership is none (a restored seed snapshot says nothing): keep the configured one.
            if !snapshot.members.is_empty() {
                replica.members = snapshot.members;
            }
            let (next_slot, sessions, members) = (snapshot.next_slot, snapshot.sessions, replica.members);
            let state = Bytes::from(snapshot.state);
            replica.log.store_snapshot(StoredSnapshot { next_slot, sessions, members, state });
        }
        for decided in resume.decided {
            if decided.slot != replica.next_slot {
                lost |= decided.slot > replica.next_slot;
                continue;
            }
            if let Some(batch) = &decided.batch {
                for command in batch {
                    replica.sessions.record(command.id, decided.slot);
                    super::membership::apply_change(&mut replica.members, command);
                }
            }
            replica.log.push(decided.slot, decided.batch);
            replica.next_slot = decided.slot.next();
        }
        replica.agreement = SlotAgreement::new(replica.next_slot, &replica.config, replica.members);
        let own_messages = match replica.config.broken {
            Broken::ResumeWithoutOwnMessages => &[][..],
            _ => &resume.own_messages[..],
        };
        lost |= resume.own_messages.iter().any(|m| m.round_slot().is_some_and(|s| s > replica.next_slot));
        if lost && !replica.alone() {
            // Votes it may have cast are gone: none of its own messages can be trusted to be all of them.
            replica.agreement = SlotAgreement::new(replica.next_slot, &replica.config, replica.members);
            replica.mode = Mode::Recovering(Recovery::new(resume.incarnation));
            return replica;
        }
        for message in own_messages {
            if message.round_slot() == Some(replica.next_slot) {
                replica.agreement.restore_own(message, &replica.config);
            }
        }
        replica.mode = Mode::Normal;
        replica
    }

    /// A replica with an empty log: recovering (it may be a node whose whole disk was lost), unless every
    /// peer reports slot 0 before any reports more (a brand-new cluster); see the module docs.
    pub fn fresh(config: Config, incarnation: u64) -> Replica {
        let mut replica = Replica::restarted(config, incarnation);
        if let Mode::Recovering(recovery) = &mut replica.mode {
            recovery.new_cluster = Some(NewCluster { at_zero: vec![false; MEMBERS_MAX] });
        }
        if replica.alone() {
            replica.mode = Mode::Normal;
        }
        replica
    }

    /// Whether this replica is the only member of its slot's membership (nobody could answer a probe).
    fn alone(&self) -> bool {
        self.members == Members::default().with(self.config.me)
    }

    /// Whether this replica still waits to learn if the cluster is brand new.
    pub fn awaits_new_cluster(&self) -> bool {
        matches!(&self.mode, Mode::Recovering(r) if r.new_cluster.is_some())
    }

    /// For a [`Replica::fresh`] one: notes a peer's position; a peer past slot 0 ends the wait for a new
    /// cluster, and every peer at slot 0 ends it with votes from slot 0.
    pub(super) fn note_new_cluster(&mut self, now_ms: u64, from: ReplicaId, message: &Message, out: &mut Vec<Output>) {
        let me = self.config.me.index();
        let Mode::Recovering(recovery) = &mut self.mode else { return };
        let Some(new) = recovery.new_cluster.as_mut() else { return };
        let their_next = match message {
            Message::Status { next_slot, .. } => *next_slot,
            Message::RecoveryReply { incarnation, next_slot } if *incarnation == recovery.incarnation => *next_slot,
            _ => return,
        };
        if their_next.0 > 0 || self.next_slot.0 > 0 {
            recovery.new_cluster = None;
            return;
        }
        if let Some(at_zero) = new.at_zero.get_mut(from.index()) {
            *at_zero = true;
        }
        let members = self.members;
        if members.iter().all(|id| id.index() == me || new.at_zero.get(id.index()).is_some_and(|at| *at)) {
            recovery.new_cluster = None;
            recovery.vote_floor = Some(self.next_slot);
            self.finish_recovery_if_past_floor(now_ms, out);
        }
    }

    /// A replica rebuilt from a durable log that it started writing as [`Replica::restarted`] and that
    /// does not show the recovery finished. Its earlier disk (and what it voted there) is gone, so it must
    /// not vote at once: it keeps what the log holds (snapshot, decided slots, sessions) but recovers again
    /// under `incarnation` (a fresh boot counter), with a new vote floor from its peers. A recovering
    /// replica sends no round messages, so the log's own messages are ignored. The shell records the
    /// recovery as finished once [`Replica::is_recovering`] turns false, in the same turn's records.
    pub fn resume_recovering(config: Config, resume: Resume, incarnation: u64) -> Replica {
        let mut replica = Replica::resume(config, Resume { own_messages: Vec::new(), ..resume });
        replica.mode = Mode::Recovering(Recovery::new(incarnation));
        replica
    }

    /// The latest snapshot the replica holds (taken here or installed from a peer), for the shell to persist.
    pub fn latest_snapshot(&self) -> Option<SnapshotRecord> {
        self.log.snapshot.as_ref().map(|s| SnapshotRecord {
            next_slot: s.next_slot,
            sessions: s.sessions.clone(),
            members: s.members,
            state: s.state.to_vec(),
        })
    }

    /// The latest snapshot's slot, sessions and shared state bytes, without copying the state.
    pub fn latest_snapshot_parts(&self) -> Option<(Slot, &[SessionRecord], &Bytes)> {
        self.log.snapshot.as_ref().map(|s| (s.next_slot, &s.sessions[..], &s.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{Input, Output};
    use crate::types::{ClientCommand, CommandId, ReplicaId};

    fn config(me: u8) -> Config {
        Config::new(3, ReplicaId(me), 7)
    }

    /// Runs three replicas with instant delivery until `slots` are decided everywhere; returns what replica 0
    /// output (decisions and messages it sent).
    fn run(replicas: &mut [Replica], submit: Vec<ClientCommand>) -> (Vec<DecidedSlot>, Vec<Message>) {
        let mut queue: Vec<(usize, Input)> = vec![(0, Input::Submit(submit))];
        let (mut decided, mut sent) = (Vec::new(), Vec::new());
        let mut steps = 0;
        while let Some((to, input)) = queue.pop() {
            steps += 1;
            assert!(steps < 10_000, "no progress");
            let mut out = Vec::new();
            replicas[to].handle(0, input, &mut out);
            for output in out {
                match output {
                    Output::Broadcast { message } => {
                        if to == 0 && message.round_slot().is_some() {
                            sent.push(message.clone());
                        }
                        for peer in (0..3).filter(|p| *p != to) {
                            queue.insert(
                                0,
                                (peer, Input::Message { from: ReplicaId(to as u8), message: message.clone() }),
                            );
                        }
                    }
                    Output::Send { to: peer, message } => {
                        queue.insert(0, (peer.index(), Input::Message { from: ReplicaId(to as u8), message }));
                    }
                    Output::Decided(d) if to == 0 => decided.push(DecidedSlot { slot: d.slot, batch: d.batch }),
                    _ => {}
                }
            }
        }
        (decided, sent)
    }

    fn command(seq: u64) -> ClientCommand {
        ClientCommand::new(CommandId { client: 9, seq }, vec![seq as u8])
    }

    #[test]
    fn resumed_replica_continues_after_its_last_decided_slot_and_keeps_sessions() {
        let mut replicas: Vec<Replica> = (0..3).map(|i| Replica::new(config(i))).collect();
        let (decided, _) = run(&mut replicas, vec![command(1), command(2)]);
        assert!(!decided.is_empty());
        let last = decided.last().map(|d| d.slot).unwrap_or_default();
        let resumed = Replica::resume(config(0), Resume { decided: decided.clone(), ..Resume::default() });
        assert_eq!(resumed.next_slot(), last.next());
        assert!(!resumed.is_recovering());
        assert!(resumed.sessions.is_applied(CommandId { client: 9, seq: 1 }));
        // A retry of an applied command is refused, as on a replica that never stopped.
        let mut resumed = resumed;
        let mut out = Vec::new();
        resumed.handle(0, Input::Submit(vec![command(1)]), &mut out);
        assert!(out.iter().any(|o| matches!(o, Output::Rejected { .. })));
    }

    #[test]
    fn own_messages_of_the_open_slot_are_resent_unchanged() {
        let mut replica = Replica::new(config(0));
        let mut out = Vec::new();
        replica.handle(0, Input::Submit(vec![command(1)]), &mut out);
        replica.handle(1, Input::Timer(crate::replica::TimerKind::Propose), &mut out);
        let sent: Vec<Message> = out
            .iter()
            .filter_map(|o| match o {
                Output::Broadcast { message } if message.round_slot().is_some() => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert!(!sent.is_empty(), "the replica proposed");
        let resumed = Replica::resume(config(0), Resume { own_messages: sent.clone(), ..Resume::default() });
        let mut again = Vec::new();
        resumed.agreement.own_messages(&mut again);
        assert_eq!(again, sent);
    }

    #[test]
    fn a_replica_that_crashed_while_recovering_resumes_recovering() {
        let decided = vec![DecidedSlot { slot: Slot(0), batch: None }];
        let resume = Resume { decided, ..Resume::default() };
        let mut replica = Replica::resume_recovering(config(2), resume, 5);
        assert_eq!(replica.next_slot(), Slot(1));
        assert!(replica.is_recovering());
        let mut out = Vec::new();
        replica.start(0, &mut out);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Broadcast { message: Message::RecoveryProbe { incarnation: 5 } })));
        // It neither proposes nor takes part in its open slot until a majority of peers told it where the
        // cluster is.
        out.clear();
        replica.handle(1, Input::Submit(vec![command(1)]), &mut out);
        let proposal = Message::Proposal { slot: Slot(1), batch: Vec::new() };
        replica.handle(2, Input::Message { from: ReplicaId(0), message: proposal }, &mut out);
        assert!(out.iter().all(|o| !matches!(o, Output::Broadcast { message } if message.round_slot().is_some())));
    }

    #[test]
    fn a_gap_in_the_decided_records_stops_the_replay() {
        let decided = vec![DecidedSlot { slot: Slot(0), batch: None }, DecidedSlot { slot: Slot(2), batch: None }];
        let resumed = Replica::resume(config(1), Resume { decided, ..Resume::default() });
        assert_eq!(resumed.next_slot(), Slot(1));
    }

    #[test]
    fn a_gap_followed_by_own_messages_past_the_resumed_slot_resumes_recovering() {
        let decided = (0..6).map(|s| DecidedSlot { slot: Slot(s), batch: None }).collect();
        let vote = Message::Vote { slot: Slot(9), phase: crate::types::Phase(1), vote: Some(true), batch_digest: None };
        let resumed = Replica::resume(config(1), Resume { decided, own_messages: vec![vote], ..Resume::default() });
        assert_eq!(resumed.next_slot(), Slot(6));
        assert!(resumed.is_recovering(), "own votes of slot 9 prove records were lost: it must not vote at once");
    }

    #[test]
    fn a_gap_in_the_decided_records_resumes_recovering_and_records_below_the_log_do_not() {
        let null = |s| DecidedSlot { slot: Slot(s), batch: None };
        let gap = vec![null(0), null(1), null(3)];
        let resumed = Replica::resume(config(1), Resume { decided: gap, ..Resume::default() });
        assert_eq!(resumed.next_slot(), Slot(2));
        assert!(resumed.is_recovering(), "slot 3 without slot 2: records were lost");
        // A record repeated below where the log stands (written twice around a crash) loses nothing.
        let repeated = vec![null(0), null(1), null(1), null(2)];
        let resumed = Replica::resume(config(1), Resume { decided: repeated, ..Resume::default() });
        assert_eq!(resumed.next_slot(), Slot(3));
        assert!(!resumed.is_recovering());
    }

    fn status(replica: &mut Replica, now_ms: u64, from: u8, next_slot: u64) {
        let message = Message::Status { next_slot: Slot(next_slot), clock_ms: 0 };
        replica.handle(now_ms, Input::Message { from: ReplicaId(from), message }, &mut Vec::new());
    }

    #[test]
    fn a_fresh_replica_votes_once_every_peer_reports_slot_zero() {
        let mut replica = Replica::fresh(config(0), 1);
        assert!(replica.is_recovering() && replica.awaits_new_cluster());
        status(&mut replica, 0, 1, 0);
        assert!(replica.is_recovering(), "one peer of two is not every peer");
        status(&mut replica, 10, 2, 0);
        assert!(!replica.is_recovering(), "a brand-new cluster forms");
        assert!(!replica.awaits_new_cluster());
    }

    #[test]
    fn a_fresh_replica_counts_no_reply_of_another_incarnation_and_none_once_it_decided_slots() {
        let reply = |replica: &mut Replica, from: u8, incarnation: u64| {
            let message = Message::RecoveryReply { incarnation, next_slot: Slot(0) };
            replica.handle(0, Input::Message { from: ReplicaId(from), message }, &mut Vec::new());
        };
        let mut replica = Replica::fresh(config(0), 2);
        reply(&mut replica, 1, 1);
        reply(&mut replica, 2, 1);
        assert!(replica.awaits_new_cluster(), "replies to an earlier boot's probe say nothing now");
        reply(&mut replica, 1, 2);
        reply(&mut replica, 2, 2);
        assert!(!replica.is_recovering());
        // A fresh replica that already holds decided slots is in a cluster that decided them: not new.
        let mut replica = Replica::fresh(config(0), 1);
        let decisions = vec![DecidedSlot { slot: Slot(0), batch: None }];
        let message = Message::SyncReply { decisions };
        replica.handle(0, Input::Message { from: ReplicaId(1), message }, &mut Vec::new());
        assert_eq!(replica.next_slot(), Slot(1));
        status(&mut replica, 10, 1, 0);
        status(&mut replica, 20, 2, 0);
        assert!(replica.is_recovering());
    }

    #[test]
    fn a_fresh_replica_in_a_cluster_that_decided_slots_recovers() {
        let mut replica = Replica::fresh(config(0), 1);
        status(&mut replica, 0, 2, 0);
        status(&mut replica, 100, 1, 3);
        status(&mut replica, 1000, 2, 0);
        status(&mut replica, 2000, 1, 0);
        assert!(replica.is_recovering(), "a peer past slot 0 means the cluster decided slots: recover the floor");
        assert!(!replica.awaits_new_cluster());
    }
}
