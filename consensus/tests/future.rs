//! Round messages for slots ahead of the replica's own are buffered within a window of slots and within
//! the message and byte bounds of the configuration, and counted when dropped; a slot decided in phase 1
//! lands in the first bucket of the phase histogram.

use consensus::{Command, CommandId, Config, Input, Message, Output, Replica, ReplicaId, Slot};

fn replica(configure: impl FnOnce(&mut Config)) -> Replica {
    let mut config = Config::new(3, ReplicaId(0), 5);
    configure(&mut config);
    let mut replica = Replica::new(config);
    replica.start(0, &mut Vec::new());
    replica
}

fn command(client: u64) -> Command {
    Command {
        id: CommandId { client, seq: 0 },
        origin: ReplicaId(1),
        timestamp_ms: 1,
        deadline_ms: u64::MAX,
        payload: vec![7; 8],
        kind: consensus::CommandKind::Client,
    }
}

fn proposal(slot: u64) -> Message {
    Message::Proposal { slot: Slot(slot), batch: vec![command(slot)] }
}

fn from_peer(replica: &mut Replica, from: u8, message: Message) -> Vec<Output> {
    let mut out = Vec::new();
    replica.handle(10, Input::Message { from: ReplicaId(from), message }, &mut out);
    out
}

#[test]
fn a_future_message_past_the_window_is_dropped_even_with_room() {
    let mut r = replica(|c| c.future_slots_window = 4);
    from_peer(&mut r, 1, proposal(3));
    assert_eq!(r.stats().future_messages_dropped, 0, "slot 3 is within four slots of slot 0");
    from_peer(&mut r, 1, proposal(5));
    assert_eq!(r.stats().future_messages_dropped, 1, "slot 5 is past the window");
}

#[test]
fn future_messages_over_the_count_bound_are_dropped() {
    let mut r = replica(|c| c.future_messages_max = 2);
    from_peer(&mut r, 1, proposal(1));
    from_peer(&mut r, 1, proposal(2));
    assert_eq!(r.stats().future_messages_dropped, 0);
    from_peer(&mut r, 2, proposal(1));
    assert_eq!(r.stats().future_messages_dropped, 1, "a third message with room for two");
}

#[test]
fn future_messages_over_the_byte_bound_are_dropped() {
    // A buffered message counts a fixed 32 bytes plus its commands: a proposal carrying one is over 32.
    let mut r = replica(|c| c.future_bytes_max = 32);
    from_peer(&mut r, 1, Message::Proposal { slot: Slot(1), batch: Vec::new() });
    assert_eq!(r.stats().future_messages_dropped, 0, "an empty proposal fits exactly");
    let mut r = replica(|c| c.future_bytes_max = 32);
    from_peer(&mut r, 2, proposal(1));
    assert_eq!(r.stats().future_messages_dropped, 1, "a message over the byte bound, with room for its count");
}

#[test]
fn a_slot_decided_in_phase_one_is_counted_in_the_first_bucket() {
    let mut r = replica(|_| ());
    let mut out = Vec::new();
    r.handle(10, Input::Message { from: ReplicaId(1), message: proposal(0) }, &mut out);
    r.handle(10, Input::Message { from: ReplicaId(2), message: proposal(0) }, &mut out);
    // Relay every message this replica broadcasts back as if both peers sent the same, until it decides.
    for _ in 0..8 {
        let sent: Vec<Message> = out
            .drain(..)
            .filter_map(|o| match o {
                Output::Broadcast { message } => Some(message),
                _ => None,
            })
            .collect();
        for message in sent {
            for peer in [1, 2] {
                r.handle(10, Input::Message { from: ReplicaId(peer), message: message.clone() }, &mut out);
            }
        }
        if r.next_slot() > Slot(0) {
            break;
        }
    }
    assert_eq!(r.next_slot(), Slot(1), "slot 0 decided");
    let stats = r.stats();
    assert_eq!((stats.slots_by_vote, stats.phases_max), (1, 1));
    assert_eq!(stats.phases_histogram[0], 1, "{:?}", stats.phases_histogram);
    assert_eq!(stats.exhausted_slots, 0);
}

#[test]
fn the_debug_line_names_the_slot_mode_and_queue() {
    let mut r = replica(|_| ());
    from_peer(&mut r, 1, Message::Forward { commands: vec![command(1)] });
    let line = r.debug_line();
    assert!(line.starts_with("slot 0 normal phase "), "{line}");
    assert!(line.contains(" queue 1 "), "{line}");
}
