//! Membership changes on small in-memory clusters: every message is delivered, timers fire on `tick`.

use bytes::Bytes;

use crate::message::{encode_message, DecidedSlot, Message};
use crate::replica::{Input, Output, RejectReason, Replica, Resume, SnapshotRecord, TimerKind};
use crate::types::{ClientCommand, Command, CommandId, CommandKind, Config, Members, ReplicaId, Slot, MEMBERS_MAX};

fn config(me: u8) -> Config {
    Config::new(3, ReplicaId(me), 7)
}

/// Replicas by id (`None`: no such replica), what each output, and the messages in flight.
struct Cluster {
    replicas: Vec<Option<Replica>>,
    outputs: Vec<Vec<Output>>,
    /// Round messages (proposal, state, vote) each replica sent, with their slot.
    round_slots: Vec<Vec<Slot>>,
    now_ms: u64,
    flight: Vec<(usize, usize, Message)>,
}

impl Cluster {
    fn new(replicas: Vec<Option<Replica>>) -> Cluster {
        let n = replicas.len();
        let mut cluster = Cluster {
            replicas,
            outputs: vec![Vec::new(); n],
            round_slots: vec![Vec::new(); n],
            now_ms: 0,
            flight: Vec::new(),
        };
        for id in 0..n {
            let mut out = Vec::new();
            if let Some(replica) = cluster.replicas[id].as_mut() {
                replica.start(0, &mut out);
            }
            cluster.route(id, out);
        }
        cluster.settle();
        cluster
    }

    /// Members {0,1,2} started with `Replica::new`, and learners at the other ids up to `n`.
    fn three_and_learners(n: usize, tune: impl Fn(&mut Config)) -> Cluster {
        let replicas = (0..n as u8)
            .map(|id| {
                let mut config = config(id);
                tune(&mut config);
                Some(match id < 3 {
                    true => Replica::new(config),
                    false => Replica::learner(config, 1, Members::first(3)),
                })
            })
            .collect();
        Cluster::new(replicas)
    }

    fn route(&mut self, from: usize, out: Vec<Output>) {
        for output in out {
            match &output {
                Output::Send { to, message } => self.flight.push((from, to.index(), message.clone())),
                Output::Broadcast { message } => {
                    for to in (0..self.replicas.len()).filter(|to| *to != from) {
                        self.flight.push((from, to, message.clone()));
                    }
                }
                Output::TakeSnapshot { next_slot, .. } => {
                    let state = Bytes::from(next_slot.0.to_le_bytes().to_vec());
                    self.input(from, Input::SnapshotTaken { next_slot: *next_slot, state });
                }
                _ => {}
            }
            if let Output::Send { message, .. } | Output::Broadcast { message } = &output {
                if let Some(slot) = message.round_slot() {
                    self.round_slots[from].push(slot);
                }
            }
            self.outputs[from].push(output);
        }
    }

    fn input(&mut self, to: usize, input: Input) {
        let mut out = Vec::new();
        if let Some(replica) = self.replicas[to].as_mut() {
            replica.handle(self.now_ms, input, &mut out);
        }
        self.route(to, out);
    }

    fn settle(&mut self) {
        while !self.flight.is_empty() {
            for (from, to, message) in std::mem::take(&mut self.flight) {
                self.input(to, Input::Message { from: ReplicaId(from as u8), message });
            }
        }
    }

    /// Fires every replica's retransmit timer `times` times, one period apart, delivering everything.
    fn tick(&mut self, times: usize) {
        for _ in 0..times {
            self.now_ms += 20;
            for id in 0..self.replicas.len() {
                self.input(id, Input::Timer(TimerKind::Retransmit));
            }
            self.settle();
        }
    }

    fn submit(&mut self, to: usize, commands: Vec<ClientCommand>) {
        self.input(to, Input::Submit(commands));
        self.settle();
    }

    fn put(&mut self, to: usize, seq: u64) {
        self.submit(to, vec![ClientCommand::new(CommandId { client: 1, seq }, vec![seq as u8])]);
    }

    fn replica(&self, id: usize) -> &Replica {
        self.replicas[id].as_ref().expect("a replica at this id")
    }
}

fn change(seq: u64, expected: Members, next: Members) -> ClientCommand {
    ClientCommand::reconfigure(CommandId { client: 99, seq }, expected, next, b"names".to_vec())
}

fn set(ids: &[u8]) -> Members {
    ids.iter().fold(Members::default(), |m, id| m.with(ReplicaId(*id)))
}

#[test]
fn members_are_a_set_of_ids_with_majority_quorums() {
    let three = Members::first(3);
    assert_eq!(three.bits(), 0b111);
    assert_eq!(three.len(), 3);
    assert_eq!(three.quorum(), 2);
    assert_eq!(three.with(ReplicaId(3)).with(ReplicaId(4)).quorum(), 3);
    assert_eq!(three.with(ReplicaId(3)).quorum(), 3, "four members need three");
    assert!(three.contains(ReplicaId(2)) && !three.contains(ReplicaId(3)));
    assert!(!Members::from_bits(u64::MAX).contains(ReplicaId(MEMBERS_MAX as u8)), "no id past the bound");
    assert_eq!(three.with(ReplicaId(200)), three);
    assert_eq!(three.without(ReplicaId(1)).iter().collect::<Vec<_>>(), vec![ReplicaId(0), ReplicaId(2)]);
    assert_eq!(set(&[0, 3, 63]).to_string(), "{0,3,63}");
    assert_eq!(Members::default().to_string(), "{}");
    assert!(Members::first(0).is_empty());
    assert_eq!(Members::first(64).len(), 64);
}

#[test]
fn a_reconfiguration_governs_from_the_slot_after_the_one_that_decided_it() {
    let mut cluster = Cluster::three_and_learners(4, |_| {});
    cluster.put(0, 1);
    let four = set(&[0, 1, 2, 3]);
    cluster.submit(1, vec![change(1, Members::first(3), four)]);
    for id in 0..3 {
        let replica = cluster.replica(id);
        assert_eq!(replica.members(), four, "replica {id}");
        let outputs = &cluster.outputs[id];
        let decided = outputs
            .iter()
            .position(|o| matches!(o, Output::Decided(d) if d.batch.as_ref().is_some_and(|b| b.iter().any(|c| c.id.client == 99))))
            .expect("the change is in a decision");
        let Output::Decided(decision) = &outputs[decided] else { unreachable!() };
        assert!(
            matches!(outputs[decided + 1], Output::MembersChanged { from_slot, members } if from_slot == decision.slot.next() && members == four),
            "replica {id}: {:?}",
            &outputs[decided..]
        );
    }
}

#[test]
fn a_batch_with_two_changes_applies_the_first_and_rejects_the_second() {
    let mut replica = Replica::new(Config::new(1, ReplicaId(0), 1));
    let mut out = Vec::new();
    replica.start(0, &mut out);
    let one = Members::first(1);
    let changes = vec![
        change(1, one, set(&[0, 1, 2])),
        change(2, one, set(&[0, 5])),
        change(3, set(&[0, 1, 2]), Members::default()),
    ];
    let mut out = Vec::new();
    replica.handle(1, Input::Submit(changes), &mut out);
    let decided: Vec<CommandId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Decided(d) => d.batch.clone(),
            _ => None,
        })
        .flatten()
        .map(|c| c.id)
        .collect();
    assert_eq!(decided, vec![CommandId { client: 99, seq: 1 }], "only the first stays in the decision");
    let rejected: Vec<(u64, RejectReason)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Rejected { id, reason } => Some((id.seq, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejected,
        vec![(2, RejectReason::MembershipChanged), (3, RejectReason::MembershipChanged)],
        "a stale expected set and an empty next set are refused"
    );
    assert_eq!(replica.members(), set(&[0, 1, 2]));
}

#[test]
fn a_removed_member_reports_it_once_and_stops_voting() {
    let mut cluster = Cluster::three_and_learners(3, |_| {});
    cluster.put(0, 1);
    cluster.submit(0, vec![change(1, Members::first(3), set(&[0, 1]))]);
    let removed: Vec<Slot> = cluster.outputs[2]
        .iter()
        .filter_map(|o| match o {
            Output::Removed { at } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 1, "reported once: {removed:?}");
    let at = removed[0];
    for seq in 2..6 {
        cluster.put(seq as usize % 2, seq);
        cluster.tick(2);
    }
    assert!(cluster.replica(0).next_slot() >= Slot(at.0 + 4), "the two members go on deciding");
    assert!(cluster.round_slots[2].iter().all(|slot| *slot < at), "no round message from {at:?} on");
    assert_eq!(cluster.replica(2).next_slot(), cluster.replica(0).next_slot(), "it still learns decisions");
    assert!(cluster.outputs[1].iter().all(|o| !matches!(o, Output::Removed { .. })));
}

#[test]
fn a_learner_catches_up_from_a_snapshot_then_votes() {
    let mut cluster = Cluster::three_and_learners(4, |config| {
        config.snapshot_every_slots = 2;
        config.log_slots_max = 2;
    });
    for seq in 1..8 {
        cluster.put(0, seq);
    }
    // Snapshot offers are paced by `snapshot_retry_ms` (200 ms): ten periods cover a few.
    cluster.tick(30);
    let learner = cluster.replica(3);
    assert!(learner.stats().snapshots_installed >= 1, "the learner installed a snapshot");
    assert_eq!(learner.next_slot(), cluster.replica(0).next_slot());
    assert!(cluster.round_slots[3].is_empty(), "a learner sends no round message");
    assert_eq!(cluster.replica(0).peer_next_slot(ReplicaId(3)), Some(learner.next_slot()));
    let four = set(&[0, 1, 2, 3]);
    cluster.submit(0, vec![change(1, Members::first(3), four)]);
    cluster.tick(3);
    let joined = cluster.replica(3).next_slot();
    assert_eq!(cluster.replica(3).members(), four);
    cluster.put(3, 100);
    cluster.tick(3);
    assert!(cluster.round_slots[3].iter().any(|slot| *slot >= joined), "it votes once a member");
    assert!(cluster.replica(0).next_slot() > joined);
}

#[test]
fn snapshots_carry_the_membership_both_ways() {
    let members = set(&[0, 2, 5]);
    let snapshot = SnapshotRecord { next_slot: Slot(9), sessions: Vec::new(), members, state: vec![1, 2] };
    let replica = Replica::resume(config(0), Resume { snapshot: Some(snapshot.clone()), ..Resume::default() });
    assert_eq!(replica.members(), members);
    assert_eq!(replica.latest_snapshot(), Some(snapshot));
    let chunk = Message::SnapshotChunk { next_slot: Slot(9), image_len: 2, offset: 0, members, bytes: vec![1, 2] };
    assert_eq!(crate::message::decode_message(&encode_message(&chunk)), Ok(chunk));
}

#[test]
fn a_snapshot_chunk_without_members_is_refused() {
    let mut replica = Replica::learner(config(3), 1, Members::first(3));
    let chunk = Message::SnapshotChunk {
        next_slot: Slot(9),
        image_len: 2,
        offset: 0,
        members: Members::default(),
        bytes: vec![1, 2],
    };
    let mut out = Vec::new();
    replica.handle(0, Input::Message { from: ReplicaId(0), message: chunk }, &mut out);
    assert_eq!(replica.stats().invalid_messages, 1);
    assert_eq!(replica.next_slot(), Slot(0));
}

#[test]
fn resume_replays_a_membership_change_from_the_log() {
    let next = set(&[0, 1, 2, 3]);
    let reconfigure = Command {
        id: CommandId { client: 99, seq: 1 },
        origin: ReplicaId(1),
        timestamp_ms: 5,
        deadline_ms: 30_005,
        payload: Vec::new(),
        kind: CommandKind::Reconfigure { expected: Members::first(3), next },
    };
    let decided =
        vec![DecidedSlot { slot: Slot(0), batch: None }, DecidedSlot { slot: Slot(1), batch: Some(vec![reconfigure]) }];
    let replica = Replica::resume(config(3), Resume { decided: decided.clone(), ..Resume::default() });
    assert_eq!(replica.members(), next, "a learner resumed past its admission is a member");
    assert_eq!(replica.next_slot(), Slot(2));
    let before = Replica::resume(config(3), Resume { decided: decided[..1].to_vec(), ..Resume::default() });
    assert_eq!(before.members(), Members::first(3));
}

#[test]
fn round_messages_from_non_members_and_ids_past_the_bound_do_not_count() {
    let mut replica = Replica::new(config(0));
    let mut out = Vec::new();
    replica.start(0, &mut out);
    let proposal = || Message::Proposal { slot: Slot(0), batch: Vec::new() };
    let mut out = Vec::new();
    replica.handle(1, Input::Message { from: ReplicaId(MEMBERS_MAX as u8), message: proposal() }, &mut out);
    assert_eq!(replica.stats().invalid_messages, 1);
    // Proposals from two non-members would be a quorum of three if they counted.
    for from in [3, 4] {
        replica.handle(1, Input::Message { from: ReplicaId(from), message: proposal() }, &mut out);
    }
    let states = out.iter().filter(|o| matches!(o, Output::Broadcast { message: Message::State { .. } })).count();
    assert_eq!(states, 0, "no quorum of members proposed: {out:?}");
}

#[test]
fn a_recovering_replica_counts_its_floor_over_the_membership_of_its_slot() {
    let members = set(&[0, 3, 4]);
    let snapshot = SnapshotRecord { next_slot: Slot(5), sessions: Vec::new(), members, state: vec![1] };
    let mut replica =
        Replica::resume_recovering(config(0), Resume { snapshot: Some(snapshot), ..Resume::default() }, 4);
    let mut out = Vec::new();
    replica.start(0, &mut out);
    let reply = |slot| Message::RecoveryReply { incarnation: 4, next_slot: Slot(slot) };
    // Ids 1 and 2 were members at genesis, not at slot 5: their answers are no quorum.
    for from in [1, 2] {
        replica.handle(1, Input::Message { from: ReplicaId(from), message: reply(3) }, &mut out);
    }
    assert!(replica.debug_line().contains("floor None"), "{}", replica.debug_line());
    // Member 3 answering at our own slot does not count (it may have seen slot 5 decided) ...
    replica.handle(1, Input::Message { from: ReplicaId(3), message: reply(5) }, &mut out);
    replica.handle(1, Input::Message { from: ReplicaId(4), message: reply(4) }, &mut out);
    assert!(replica.debug_line().contains("floor None"), "{}", replica.debug_line());
    // ... and its first answer stays its answer: a later, lower one is ignored.
    replica.handle(1, Input::Message { from: ReplicaId(3), message: reply(2) }, &mut out);
    assert!(replica.debug_line().contains("floor None"), "{}", replica.debug_line());
    let mut fresh = Replica::resume_recovering(
        config(0),
        Resume {
            snapshot: Some(SnapshotRecord { next_slot: Slot(5), sessions: Vec::new(), members, state: vec![1] }),
            ..Resume::default()
        },
        4,
    );
    fresh.start(0, &mut out);
    for from in [3, 4] {
        fresh.handle(1, Input::Message { from: ReplicaId(from), message: reply(4) }, &mut out);
    }
    assert!(fresh.debug_line().contains("floor Some(6)"), "{}", fresh.debug_line());
    assert!(fresh.is_recovering(), "it still learns slot 5 before it votes");
}
