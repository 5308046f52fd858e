//! A peer's message over any size bound of the receiving replica's configuration is ignored whole, and a
//! message exactly at the bounds is taken: forwards, proposals, round messages' phases and catch-up replies.

use consensus::{Command, CommandId, Config, DecidedSlot, Input, Message, Output, Phase, Replica, ReplicaId, Slot};

fn replica() -> Replica {
    let mut config = Config::new(3, ReplicaId(0), 5);
    config.forward_commands_max = 2;
    config.batch_commands_max = 2;
    config.payload_bytes_max = 4;
    config.sync_slots_max = 2;
    config.phases_max = 4;
    let mut replica = Replica::new(config);
    replica.start(0, &mut Vec::new());
    replica
}

fn command(client: u64, payload_bytes: usize) -> Command {
    Command {
        id: CommandId { client, seq: 0 },
        origin: ReplicaId(1),
        timestamp_ms: 1,
        deadline_ms: u64::MAX,
        payload: vec![7; payload_bytes],
        kind: consensus::CommandKind::Client,
    }
}

fn from_peer(replica: &mut Replica, message: Message) -> Vec<Output> {
    let mut out = Vec::new();
    replica.handle(10, Input::Message { from: ReplicaId(1), message }, &mut out);
    out
}

/// The batch this replica proposed in `out`, if it proposed.
fn proposed(out: &[Output]) -> Option<Vec<Command>> {
    out.iter().find_map(|o| match o {
        Output::Broadcast { message: Message::Proposal { batch, .. } } => Some(batch.clone()),
        _ => None,
    })
}

#[test]
fn forwards_over_the_count_or_payload_bound_are_dropped() {
    let mut r = replica();
    from_peer(&mut r, Message::Forward { commands: vec![command(1, 1), command(2, 1), command(3, 1)] });
    assert_eq!(r.queue_len(), 0, "three commands in a forward of at most two");
    from_peer(&mut r, Message::Forward { commands: vec![command(4, 5)] });
    assert_eq!(r.queue_len(), 0, "a payload over four bytes");
    from_peer(&mut r, Message::Forward { commands: vec![command(5, 4), command(6, 0)] });
    assert_eq!(r.queue_len(), 2, "both at the bounds");
}

#[test]
fn proposals_over_the_batch_bounds_are_not_adopted() {
    let mut r = replica();
    let too_many = vec![command(1, 1), command(2, 1), command(3, 1)];
    assert_eq!(proposed(&from_peer(&mut r, Message::Proposal { slot: Slot(0), batch: too_many })), None);
    let too_big = vec![command(4, 5)];
    assert_eq!(proposed(&from_peer(&mut r, Message::Proposal { slot: Slot(0), batch: too_big })), None);
    // At the bounds the peer's proposal is taken, and this replica (with nothing queued) proposes it too.
    let fits = vec![command(5, 4), command(6, 4)];
    let out = from_peer(&mut r, Message::Proposal { slot: Slot(0), batch: fits.clone() });
    assert_eq!(proposed(&out), Some(fits));
}

#[test]
fn catch_up_replies_over_the_slot_or_batch_bounds_are_dropped() {
    let mut r = replica();
    let null = |slot| DecidedSlot { slot: Slot(slot), batch: None };
    from_peer(&mut r, Message::SyncReply { decisions: vec![null(0), null(1), null(2)] });
    assert_eq!(r.next_slot(), Slot(0), "three slots in a reply of at most two");
    let big = DecidedSlot { slot: Slot(1), batch: Some(vec![command(1, 5)]) };
    from_peer(&mut r, Message::SyncReply { decisions: vec![null(0), big] });
    assert_eq!(r.next_slot(), Slot(0), "a decided batch over the payload bound");
    let crowded = DecidedSlot { slot: Slot(1), batch: Some(vec![command(1, 1), command(2, 1), command(3, 1)]) };
    from_peer(&mut r, Message::SyncReply { decisions: vec![null(0), crowded] });
    assert_eq!(r.next_slot(), Slot(0), "a decided batch over the command bound");
    let fits = DecidedSlot { slot: Slot(1), batch: Some(vec![command(1, 4), command(2, 4)]) };
    let out = from_peer(&mut r, Message::SyncReply { decisions: vec![null(0), fits] });
    assert_eq!(r.next_slot(), Slot(2));
    let applied: usize = out
        .iter()
        .filter_map(|o| match o {
            Output::Decided(d) => Some(d.batch.as_ref().map_or(0, Vec::len)),
            _ => None,
        })
        .sum();
    assert_eq!(applied, 2);
}

#[test]
fn round_messages_outside_the_phase_bounds_are_counted_invalid() {
    let mut r = replica();
    let state = |phase| Message::State { slot: Slot(0), phase: Phase(phase), value: true, batch_digest: None };
    let vote = |phase| Message::Vote { slot: Slot(0), phase: Phase(phase), vote: Some(true), batch_digest: None };
    for (message, invalid) in [
        (state(0), true),
        (state(5), true),
        (state(1), false),
        (state(4), false),
        (vote(0), true),
        (vote(5), true),
        (vote(1), false),
        (vote(4), false),
    ] {
        let before = r.stats().invalid_messages;
        let shown = format!("{message:?}");
        from_peer(&mut r, message);
        assert_eq!(r.stats().invalid_messages - before, u64::from(invalid), "{shown}");
    }
}

#[test]
fn a_proposal_from_a_replica_outside_the_membership_is_not_adopted() {
    let mut r = replica();
    let batch = vec![command(1, 1)];
    let mut out = Vec::new();
    let message = Message::Proposal { slot: Slot(0), batch: batch.clone() };
    r.handle(10, Input::Message { from: ReplicaId(3), message: message.clone() }, &mut out);
    assert_eq!(proposed(&out), None, "replica 3 is not among the three members");
    assert_eq!(proposed(&from_peer(&mut r, message)), Some(batch), "replica 1 is");
}

#[test]
fn an_empty_proposal_from_a_peer_is_not_adopted_over_queued_commands() {
    // Proposing waits for its timer, so the peer's proposal comes first.
    let mut config = Config::new(3, ReplicaId(0), 5);
    config.propose_delay_ms = 1_000;
    let mut r = Replica::new(config);
    r.start(0, &mut Vec::new());
    from_peer(&mut r, Message::Forward { commands: vec![command(1, 1)] });
    assert_eq!(r.queue_len(), 1);
    let out = from_peer(&mut r, Message::Proposal { slot: Slot(0), batch: Vec::new() });
    assert_eq!(proposed(&out), Some(vec![command(1, 1)]), "its own head, not the peer's empty batch");
}
