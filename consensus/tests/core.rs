//! Behaviour of the core in a small in-memory cluster driven by hand: ordering, duplicates,
//! back-pressure, catch-up through snapshots, restart recovery, and survival of arbitrary input.

use std::collections::VecDeque;

use consensus::{
    ClientCommand, CommandId, Config, Decision, Input, Message, Output, Phase, RejectReason, Replica, ReplicaId, Slot,
    TimerKind,
};
use proptest::prelude::*;

struct Cluster {
    replicas: Vec<Replica>,
    up: Vec<bool>,
    network: VecDeque<(usize, usize, Message)>,
    decisions: Vec<Vec<Decision>>,
    rejected: Vec<(usize, CommandId, RejectReason)>,
    round_messages_from: Vec<Vec<Slot>>,
    now_ms: u64,
}

impl Cluster {
    fn new(n: u8, tune: impl Fn(&mut Config)) -> Cluster {
        let replicas = (0..n)
            .map(|id| {
                let mut config = Config::new(n, ReplicaId(id), 99);
                tune(&mut config);
                Replica::new(config)
            })
            .collect();
        Cluster {
            replicas,
            up: vec![true; usize::from(n)],
            network: VecDeque::new(),
            decisions: vec![Vec::new(); usize::from(n)],
            rejected: Vec::new(),
            round_messages_from: vec![Vec::new(); usize::from(n)],
            now_ms: 0,
        }
    }

    fn input(&mut self, replica: usize, input: Input) {
        let mut out = Vec::new();
        self.replicas[replica].handle(self.now_ms, input, &mut out);
        self.outputs(replica, out);
    }

    fn outputs(&mut self, from: usize, out: Vec<Output>) {
        for output in out {
            match output {
                Output::Send { to, message } => self.send(from, to.index(), message),
                Output::Broadcast { message } => {
                    for to in (0..self.replicas.len()).filter(|to| *to != from) {
                        self.send(from, to, message.clone());
                    }
                }
                Output::Decided(decision) => self.decisions[from].push(decision),
                Output::Rejected { id, reason } => self.rejected.push((from, id, reason)),
                Output::TakeSnapshot { next_slot, .. } => {
                    let state = consensus::Bytes::from(next_slot.0.to_le_bytes().to_vec());
                    self.input(from, Input::SnapshotTaken { next_slot, state });
                }
                Output::InstallSnapshot { next_slot, .. } => {
                    self.decisions[from].retain(|d| d.slot < next_slot);
                }
                Output::SetTimer { .. } | Output::MembersChanged { .. } | Output::Removed { .. } => {}
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        if let Some(slot) = message.round_slot() {
            self.round_messages_from[from].push(slot);
        }
        self.network.push_back((from, to, message));
    }

    fn submit(&mut self, replica: usize, client: u64, seq: u64) {
        let command = ClientCommand::new(CommandId { client, seq }, vec![client as u8, seq as u8]);
        self.input(replica, Input::Submit(vec![command]));
    }

    fn run(&mut self) {
        while let Some((from, to, message)) = self.network.pop_front() {
            if self.up[to] && self.up[from] {
                self.input(to, Input::Message { from: ReplicaId(from as u8), message });
            }
        }
    }

    fn tick(&mut self) {
        self.now_ms += 1_000;
        for replica in 0..self.replicas.len() {
            if self.up[replica] {
                self.input(replica, Input::Timer(TimerKind::Retransmit));
            }
        }
        self.run();
    }

    fn applied(&self, replica: usize) -> Vec<CommandId> {
        self.decisions[replica].iter().flat_map(|d| d.batch.iter().flatten().map(|c| c.id)).collect()
    }
}

#[test]
fn submitted_commands_are_decided_in_the_same_order_everywhere() {
    let mut cluster = Cluster::new(3, |_| {});
    for seq in 0..20 {
        cluster.submit((seq % 3) as usize, 1, seq);
        cluster.run();
    }
    assert_eq!(cluster.applied(0).len(), 20);
    assert_eq!(cluster.decisions[0], cluster.decisions[1]);
    assert_eq!(cluster.decisions[1], cluster.decisions[2]);
}

#[test]
fn a_retried_command_applies_once_and_is_then_refused() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.submit(0, 7, 1);
    cluster.submit(1, 7, 1);
    cluster.run();
    assert_eq!(cluster.applied(2), vec![CommandId { client: 7, seq: 1 }]);
    cluster.submit(2, 7, 1);
    cluster.run();
    assert_eq!(cluster.applied(2).len(), 1);
    assert!(cluster.rejected.contains(&(2, CommandId { client: 7, seq: 1 }, RejectReason::AlreadyApplied)));
}

#[test]
fn a_full_queue_pushes_back_on_clients() {
    let mut cluster = Cluster::new(3, |config| config.queue_commands_max = 6);
    cluster.up[1] = false;
    cluster.up[2] = false;
    for seq in 0..5 {
        cluster.submit(0, 1, seq);
    }
    cluster.run();
    let refused = cluster.rejected.iter().filter(|r| r.2 == RejectReason::QueueFull).count();
    assert_eq!(refused, 3, "two admitted (6 / 3 replicas), three refused");
    assert!(cluster.decisions[0].is_empty(), "no quorum, no decision");
}

#[test]
fn a_lagging_replica_catches_up_from_a_snapshot_after_compaction() {
    let mut cluster = Cluster::new(3, |config| {
        config.snapshot_every_slots = 4;
        config.log_slots_max = 4;
    });
    cluster.up[2] = false;
    for seq in 0..30 {
        cluster.submit(0, 1, seq);
        cluster.run();
    }
    assert_eq!(cluster.replicas[2].next_slot(), Slot(0));
    cluster.up[2] = true;
    for _ in 0..5 {
        cluster.tick();
    }
    assert_eq!(cluster.replicas[2].next_slot(), cluster.replicas[0].next_slot());
    assert!(cluster.replicas[2].stats().snapshots_installed >= 1);
}

#[test]
fn a_replica_a_little_behind_a_snapshot_catches_up_from_the_log_tail() {
    // Replica 2 misses the last few slots before the others compact their logs with a snapshot. With a tail
    // it catches up from their logs; compacting to the snapshot's slot exactly sends it the whole snapshot.
    for (tail, snapshots) in [(8, 0), (0, 1)] {
        let mut cluster = Cluster::new(3, |config| {
            config.snapshot_every_slots = 16;
            config.log_slots_max = 64;
            config.log_tail_slots = tail;
        });
        for seq in 0..12 {
            cluster.submit(0, 1, seq);
            cluster.run();
        }
        cluster.up[2] = false;
        for seq in 12..18 {
            cluster.submit(0, 1, seq);
            cluster.run();
        }
        let (ahead, behind) = (cluster.replicas[0].next_slot().0, cluster.replicas[2].next_slot().0);
        assert!(behind < 16 && ahead > 16, "replica 2 at {behind}, the others at {ahead}, past the snapshot at 16");
        cluster.up[2] = true;
        for _ in 0..10 {
            cluster.tick();
        }
        assert_eq!(cluster.replicas[2].next_slot(), cluster.replicas[0].next_slot(), "tail {tail}");
        assert_eq!(cluster.replicas[2].stats().snapshots_installed, snapshots, "tail {tail}");
    }
}

#[test]
fn a_restarted_replica_does_not_vote_before_its_floor() {
    let mut cluster = Cluster::new(3, |_| {});
    for seq in 0..5 {
        cluster.submit(0, 1, seq);
        cluster.run();
    }
    let before = cluster.replicas[0].next_slot();
    let config = cluster.replicas[2].config().clone();
    cluster.replicas[2] = Replica::restarted(config, 1);
    cluster.decisions[2].clear();
    cluster.round_messages_from[2].clear();
    let mut out = Vec::new();
    cluster.replicas[2].start(cluster.now_ms, &mut out);
    cluster.outputs(2, out);
    cluster.run();
    assert!(cluster.replicas[2].is_recovering());
    for seq in 5..12 {
        cluster.submit(0, 1, seq);
        cluster.run();
        cluster.tick();
    }
    let floor = Slot(before.0 + 2);
    assert!(
        cluster.round_messages_from[2].iter().all(|slot| *slot >= floor),
        "voted below the floor {floor:?}: {:?}",
        cluster.round_messages_from[2]
    );
    assert!(!cluster.replicas[2].is_recovering());
    assert_eq!(cluster.replicas[2].next_slot(), cluster.replicas[0].next_slot());
}

fn arbitrary_input() -> impl Strategy<Value = (u8, Input)> {
    let message = prop_oneof![
        (0u64..6, 0u32..5, any::<bool>(), proptest::option::of(0u64..3)).prop_map(|(s, p, value, batch_digest)| {
            Message::State { slot: Slot(s), phase: Phase(p), value, batch_digest }
        }),
        (0u64..6, 0u32..5, any::<Option<bool>>(), proptest::option::of(0u64..3)).prop_map(
            |(s, p, vote, batch_digest)| Message::Vote { slot: Slot(s), phase: Phase(p), vote, batch_digest }
        ),
        (0u64..6, 0u64..4).prop_map(|(s, c)| Message::Proposal {
            slot: Slot(s),
            batch: vec![consensus::Command {
                id: CommandId { client: c, seq: 0 },
                origin: ReplicaId(1),
                timestamp_ms: c,
                deadline_ms: c + 30_000,
                payload: vec![],
                kind: consensus::CommandKind::Client,
            }],
        }),
        (0u64..8).prop_map(|s| Message::Status { next_slot: Slot(s), clock_ms: s * 1_000 }),
        (0u64..8).prop_map(|s| Message::SyncRequest { from_slot: Slot(s) }),
        (0u64..8, any::<bool>()).prop_map(|(s, null)| Message::SyncReply {
            decisions: vec![consensus::DecidedSlot { slot: Slot(s), batch: (!null).then(Vec::new) }],
        }),
        (0u64..8, 0u64..3, 0u64..3).prop_map(|(s, offset, len)| Message::SnapshotChunk {
            next_slot: Slot(s),
            image_len: 2,
            offset,
            members: consensus::Members::first(3),
            bytes: vec![7; len as usize],
        }),
        (0u64..8, 0u64..3).prop_map(|(s, offset)| Message::SnapshotRequest { next_slot: Slot(s), offset }),
        (0u64..3).prop_map(|incarnation| Message::RecoveryProbe { incarnation }),
        (0u64..3, 0u64..8).prop_map(|(incarnation, s)| Message::RecoveryReply { incarnation, next_slot: Slot(s) }),
    ];
    prop_oneof![
        (0u8..5, message).prop_map(|(from, message)| (from, Input::Message { from: ReplicaId(from), message })),
        (0u64..4).prop_map(|c| (0, Input::Submit(vec![ClientCommand::new(CommandId { client: c, seq: 1 }, vec![1])]))),
        Just((0, Input::Timer(TimerKind::Retransmit))),
        Just((0, Input::Timer(TimerKind::Propose))),
        (0u64..8).prop_map(|s| (0, Input::SnapshotTaken { next_slot: Slot(s), state: consensus::Bytes::new() })),
        Just((0, Input::Restart { incarnation: 5 })),
        (0u8..5).prop_map(|peer| (0, Input::PeerConnected { peer: ReplicaId(peer) })),
    ]
}

proptest! {
    #[test]
    fn arbitrary_input_sequences_never_panic(inputs in proptest::collection::vec(arbitrary_input(), 0..200), restarted in any::<bool>()) {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut replica = if restarted { Replica::restarted(config, 1) } else { Replica::new(config) };
        let mut out = Vec::new();
        replica.start(0, &mut out);
        let mut last: Option<Slot> = None;
        for (now_ms, (_, input)) in inputs.into_iter().enumerate() {
            if matches!(input, Input::Restart { .. }) {
                last = None;
            }
            let mut out = Vec::new();
            replica.handle(now_ms as u64, input, &mut out);
            for output in out {
                match output {
                    Output::Decided(decision) => {
                        prop_assert!(last.is_none_or(|l| decision.slot == l.next()), "decisions out of order");
                        last = Some(decision.slot);
                    }
                    Output::InstallSnapshot { next_slot, .. } => {
                        prop_assert!(last.is_none_or(|l| next_slot > l), "snapshot went backwards");
                        last = Some(Slot(next_slot.0.wrapping_sub(1)));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn null_slots_and_the_longest_run_of_them_are_counted_as_decided() {
    // Every replica proposes a different command at once: the slot's proposals differ, so some slots
    // decide null before each command gets its own.
    let mut cluster = Cluster::new(3, |_| {});
    for round in 0..10 {
        for replica in 0..3 {
            cluster.submit(replica, replica as u64, round);
        }
        cluster.run();
    }
    for _ in 0..20 {
        cluster.tick();
    }
    assert_eq!(cluster.applied(0).len(), 30, "every command applied");
    for replica in 0..3 {
        let nulls: Vec<bool> = cluster.decisions[replica].iter().map(|d| d.batch.is_none()).collect();
        let longest = nulls.split(|null| !null).map(<[bool]>::len).max().unwrap_or(0);
        let stats = cluster.replicas[replica].stats();
        let count = nulls.iter().filter(|null| **null).count() as u64;
        assert!(count > 0, "the scenario decides some slots null");
        assert_eq!((stats.null_slots, stats.null_run_longest), (count, longest as u64));
    }
}
