//! The message codec: round trips, and arbitrary or damaged bytes never panic the decoder.

use consensus::{decode_message, encode_message, Command, CommandId, DecidedSlot, Message, Phase, ReplicaId, Slot};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    (any::<u64>(), any::<u64>(), any::<u8>(), any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(client, seq, origin, timestamp_ms, deadline_ms, payload)| Command {
            id: CommandId { client, seq },
            origin: ReplicaId(origin),
            timestamp_ms,
            deadline_ms,
            payload,
            kind: consensus::CommandKind::Client,
        })
}

fn batch() -> impl Strategy<Value = Vec<Command>> {
    proptest::collection::vec(command(), 0..6)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        batch().prop_map(|commands| Message::Forward { commands }),
        (any::<u64>(), batch()).prop_map(|(slot, batch)| Message::Proposal { slot: Slot(slot), batch }),
        (any::<u64>(), any::<u32>(), any::<bool>(), any::<Option<u64>>()).prop_map(
            |(slot, phase, value, batch_digest)| Message::State {
                slot: Slot(slot),
                phase: Phase(phase),
                value,
                batch_digest
            }
        ),
        (any::<u64>(), any::<u32>(), any::<Option<bool>>(), any::<Option<u64>>()).prop_map(
            |(slot, phase, vote, batch_digest)| Message::Vote {
                slot: Slot(slot),
                phase: Phase(phase),
                vote,
                batch_digest
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(slot, clock_ms)| Message::Status { next_slot: Slot(slot), clock_ms }),
        any::<u64>().prop_map(|slot| Message::SyncRequest { from_slot: Slot(slot) }),
        proptest::collection::vec((any::<u64>(), proptest::option::of(batch())), 0..4).prop_map(|decided| {
            Message::SyncReply {
                decisions: decided.into_iter().map(|(slot, batch)| DecidedSlot { slot: Slot(slot), batch }).collect(),
            }
        }),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64), any::<u64>()).prop_map(
            |(slot, bytes, offset)| Message::SnapshotChunk {
                next_slot: Slot(slot),
                image_len: offset.saturating_add(bytes.len() as u64),
                offset,
                members: consensus::Members::first(3),
                bytes,
            }
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(slot, offset)| Message::SnapshotRequest { next_slot: Slot(slot), offset }),
        any::<u64>().prop_map(|incarnation| Message::RecoveryProbe { incarnation }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(incarnation, slot)| Message::RecoveryReply { incarnation, next_slot: Slot(slot) }),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(message in message()) {
        let bytes = encode_message(&message);
        prop_assert_eq!(decode_message(&bytes), Ok(message));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message(&bytes);
    }

    #[test]
    fn damaged_messages_never_panic(message in message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = encode_message(&message);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] ^= value;
        }
        let _ = decode_message(&bytes);
        let keep = cut % (bytes.len() + 1);
        let _ = decode_message(&bytes[..keep]);
    }
}

#[test]
fn empty_and_misaligned_input_is_an_error_not_a_panic() {
    assert!(decode_message(&[]).is_err());
    let bytes = encode_message(&Message::Status { next_slot: Slot(7), clock_ms: 9 });
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    assert_eq!(decode_message(&shifted[1..]), Ok(Message::Status { next_slot: Slot(7), clock_ms: 9 }));
}
