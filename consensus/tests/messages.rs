//! What the message types tell their users beyond the bytes: which slot a round message belongs to, and
//! a decode failure that says what was wrong.

use consensus::{decode_message, DecidedSlot, Message, Phase, Slot};

#[test]
fn only_round_messages_belong_to_a_slot() {
    let round = [
        Message::Proposal { slot: Slot(3), batch: Vec::new() },
        Message::State { slot: Slot(3), phase: Phase(1), value: true, batch_digest: Some(9) },
        Message::Vote { slot: Slot(3), phase: Phase(2), vote: None, batch_digest: None },
    ];
    for message in &round {
        assert_eq!(message.round_slot(), Some(Slot(3)), "{message:?}");
    }
    let other = [
        Message::Forward { commands: Vec::new() },
        Message::Status { next_slot: Slot(3), clock_ms: 7 },
        Message::SyncRequest { from_slot: Slot(3) },
        Message::SyncReply { decisions: vec![DecidedSlot { slot: Slot(3), batch: None }] },
        Message::SnapshotChunk {
            next_slot: Slot(3),
            image_len: 10,
            offset: 0,
            members: consensus::Members::first(3),
            bytes: vec![0; 10],
        },
        Message::SnapshotRequest { next_slot: Slot(3), offset: 0 },
        Message::RecoveryProbe { incarnation: 3 },
        Message::RecoveryReply { incarnation: 3, next_slot: Slot(3) },
    ];
    for message in &other {
        assert_eq!(message.round_slot(), None, "{message:?}");
    }
}

#[test]
fn a_decode_error_names_the_input_size_and_the_cause() {
    let error = decode_message(&[0xff; 7]).unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("consensus message does not decode: 7 bytes"), "{text}");
    assert!(text.len() > "consensus message does not decode: 7 bytes, not a valid archive: ".len(), "{text}");
}
