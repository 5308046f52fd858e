//! A slot that reaches the phase bound without a decision is counted once as exhausted, and the replica
//! proposes nothing more in it; a recovering replica proposes nothing; and the decided log never answers
//! "snapshot" for a slot it still holds.

use consensus::{Command, CommandId, Config, Input, Message, Output, Phase, Replica, ReplicaId, Slot};

fn command(client: u64, origin: u8) -> Command {
    Command {
        id: CommandId { client, seq: 0 },
        origin: ReplicaId(origin),
        timestamp_ms: 1,
        deadline_ms: u64::MAX,
        payload: vec![7; 8],
        kind: consensus::CommandKind::Client,
    }
}

fn from_peer(replica: &mut Replica, from: u8, message: Message, out: &mut Vec<Output>) {
    replica.handle(10, Input::Message { from: ReplicaId(from), message }, out);
}

fn proposals(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| {
            matches!(
                o,
                Output::Broadcast { message: Message::Proposal { .. } }
                    | Output::Send { message: Message::Proposal { .. }, .. }
            )
        })
        .count()
}

#[test]
fn a_slot_past_the_phase_bound_is_counted_once_and_proposes_nothing_more() {
    let mut config = Config::new(3, ReplicaId(0), 5);
    config.phases_max = 1;
    let mut r = Replica::new(config);
    let mut out = Vec::new();
    r.start(0, &mut out);
    // Our proposal (what peer 2 forwarded) and peer 1's differ: no majority proposal, our state is 0.
    from_peer(&mut r, 2, Message::Forward { commands: vec![command(1, 2)] }, &mut out);
    from_peer(&mut r, 1, Message::Proposal { slot: Slot(0), batch: vec![command(2, 1)] }, &mut out);
    assert_eq!(proposals(&out), 1, "{out:?}");
    // Peer 1 says 1: states are split, so both vote "?", and phase 1 ends on the coin; there is no phase 2.
    from_peer(&mut r, 1, Message::State { slot: Slot(0), phase: Phase(1), value: true, batch_digest: None }, &mut out);
    from_peer(&mut r, 1, Message::Vote { slot: Slot(0), phase: Phase(1), vote: None, batch_digest: None }, &mut out);
    assert_eq!(r.next_slot(), Slot(0), "nothing decided");
    assert_eq!(r.stats().exhausted_slots, 1);
    // More messages and commands for the exhausted slot count nothing again and propose nothing.
    out.clear();
    from_peer(&mut r, 1, Message::Vote { slot: Slot(0), phase: Phase(1), vote: None, batch_digest: None }, &mut out);
    from_peer(&mut r, 2, Message::Forward { commands: vec![command(3, 2)] }, &mut out);
    r.handle(20, Input::Timer(consensus::TimerKind::Propose), &mut out);
    assert_eq!(r.stats().exhausted_slots, 1);
    assert_eq!(proposals(&out), 0, "{out:?}");
}

#[test]
fn a_recovering_replica_proposes_nothing_even_when_its_propose_timer_fires() {
    // A wiped replica starts recovering (it does not take part until it knows its vote floor): commands
    // forwarded to it are queued, and a propose timer left from before sends no proposal.
    let mut config = Config::new(3, ReplicaId(0), 5);
    config.propose_delay_ms = 1_000;
    let mut r = Replica::fresh(config, 1);
    let mut out = Vec::new();
    r.start(0, &mut out);
    assert!(r.is_recovering());
    from_peer(&mut r, 1, Message::Forward { commands: vec![command(1, 1)] }, &mut out);
    r.handle(2_000, Input::Timer(consensus::TimerKind::Propose), &mut out);
    assert_eq!(proposals(&out), 0, "{out:?}");
}
