//! Property tests of the command encoding: round trips, and no panic on any input.

mod common;

use kvstore::{Command, Error};
use proptest::prelude::*;

proptest! {
    #[test]
    fn decode_of_encode_is_identity(command in common::command_on(common::key())) {
        let bytes = command.encode().unwrap();
        prop_assert_eq!(Command::decode(&bytes), Ok(command));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn arbitrary_archives_behind_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = vec![0xAE, 1];
        bytes.extend_from_slice(&body);
        if let Err(err) = Command::decode(&bytes) {
            prop_assert!(matches!(err, Error::MalformedCommand { .. }), "unexpected error {}", err);
        }
    }

    #[test]
    fn damaged_encodings_never_panic(
        command in common::command_on(common::key()),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = command.encode().unwrap();
        let len = bytes.len();
        for (index, mask) in flips {
            bytes[index.index(len)] ^= mask;
        }
        if let Ok(decoded) = Command::decode(&bytes) {
            // Whatever survives damage is still a valid command that encodes again.
            prop_assert!(decoded.encode().is_ok());
        }
    }
}
