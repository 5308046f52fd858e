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
//! Invariants: decided slots are taken in order from the snapshot's `next_slot` (or 0) with no gap (a
//! record after a gap is ignored: the disk lost it, catch-up from peers fills it); sessions end up exactly
//! as if the slots had been decided live; own messages of any slot other than the open one are ignored.

use super::{Mode, Recovery, Replica};
use crate::log::StoredSnapshot;
use crate::message::{DecidedSlot, Message, SessionRecord};
use crate::slot::SlotAgreement;
use crate::types::{Broken, Config, Slot};
use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

/// A snapshot as the shell stores it: the state machine after every slot below `next_slot`, and the
/// replica's sessions at that point (needed for duplicate detection to stay identical on every replica).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub next_slot: Slot,
    pub sessions: Vec<SessionRecord>,
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
}

impl Replica {
    /// A replica rebuilt from its durable log (see the module documentation). The shell has already
    /// restored its state machine from the same snapshot and slots; no `Decided` output repeats them.
    pub fn resume(config: Config, resume: Resume) -> Replica {
        let mut replica = Replica::new(config);
        if let Some(snapshot) = resume.snapshot {
            replica.sessions.import(&snapshot.sessions);
            replica.next_slot = snapshot.next_slot;
            let (next_slot, sessions, state) = (snapshot.next_slot, snapshot.sessions, snapshot.state);
            replica.log.store_snapshot(StoredSnapshot { next_slot, sessions, state: Bytes::from(state) });
        }
        for decided in resume.decided {
            if decided.slot != replica.next_slot {
                continue;
            }
            if let Some(batch) = &decided.batch {
                for command in batch {
                    replica.sessions.record(command.id, decided.slot);
                }
            }
            replica.log.push(decided.slot, decided.batch);
            replica.next_slot = decided.slot.next();
        }
        replica.agreement = SlotAgreement::new(replica.next_slot, &replica.config);
        let own_messages = match replica.config.broken {
            Broken::ResumeWithoutOwnMessages => &[][..],
            _ => &resume.own_messages[..],
        };
        for message in own_messages {
            if message.round_slot() == Some(replica.next_slot) {
                replica.agreement.restore_own(message, &replica.config);
            }
        }
        replica.mode = Mode::Normal;
        replica
    }

    /// A replica rebuilt from a durable log that it started writing as [`Replica::restarted`] and that
    /// does not show the recovery finished. Its earlier disk (and what it voted there) is gone, so it must
    /// not vote at once: it keeps what the log holds (snapshot, decided slots, sessions) but recovers again
    /// under `incarnation` (a fresh boot counter), with a new vote floor from its peers. A recovering
    /// replica sends no round messages, so the log's own messages are ignored. The shell records the
    /// recovery as finished once [`Replica::is_recovering`] turns false, in the same turn's records.
    pub fn resume_recovering(config: Config, resume: Resume, incarnation: u64) -> Replica {
        let n = config.n();
        let mut replica = Replica::resume(config, Resume { own_messages: Vec::new(), ..resume });
        replica.mode = Mode::Recovering(Recovery { incarnation, reported: vec![None; n], vote_floor: None });
        replica
    }

    /// The latest snapshot the replica holds (taken here or installed from a peer), for the shell to persist.
    pub fn latest_snapshot(&self) -> Option<SnapshotRecord> {
        self.log.snapshot.as_ref().map(|s| SnapshotRecord {
            next_slot: s.next_slot,
            sessions: s.sessions.clone(),
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
        ClientCommand { id: CommandId { client: 9, seq }, payload: vec![seq as u8] }
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
}
