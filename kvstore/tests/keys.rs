//! Property tests of key parsing and printing.

mod common;

use kvstore::{AetherKey, Artifact, SemVer};
use proptest::prelude::*;

proptest! {
    #[test]
    fn parse_of_print_is_identity(key in common::key()) {
        prop_assert_eq!(AetherKey::parse(&key.to_string()), Ok(key));
    }

    #[test]
    fn print_of_parse_is_identity(key in common::key()) {
        let text = key.to_string();
        let reparsed = AetherKey::parse(&text).map(|k| k.to_string());
        prop_assert_eq!(reparsed, Ok(text));
    }

    #[test]
    fn keys_start_with_their_namespace_prefix(key in common::key()) {
        prop_assert!(key.to_string().starts_with(key.namespace().prefix()));
    }

    #[test]
    fn artifacts_round_trip(artifact in common::artifact()) {
        prop_assert_eq!(Artifact::parse(&artifact.to_string()), Ok(artifact));
    }

    #[test]
    fn version_order_is_consistent_with_equality(a in common::semver(), b in common::semver()) {
        prop_assert_eq!(a == b, a.cmp(&b) == std::cmp::Ordering::Equal);
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
    }

    #[test]
    fn random_strings_never_panic_and_parse_only_canonically(input in "\\PC{0,80}") {
        if let Ok(key) = AetherKey::parse(&input) {
            prop_assert_eq!(&key.to_string(), &input);
        }
        let _ = SemVer::parse(&input);
        let _ = Artifact::parse(&input);
    }

    #[test]
    fn key_shaped_strings_never_panic_and_parse_only_canonically(
        input in "(blueprints|slices|targets|endpoints|routes|versions|nodes|topics|user)/[a-zA-Z0-9.:/{}_-]{0,40}"
    ) {
        if let Ok(key) = AetherKey::parse(&input) {
            prop_assert_eq!(&key.to_string(), &input);
        }
    }

    #[test]
    fn mutated_keys_never_panic_and_parse_only_canonically(
        key in common::key(),
        position in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec!["/", ":", ".", "..", "0", "-", "//", "é", ""]),
        delete in 0usize..3,
    ) {
        let text = key.to_string();
        let chars: Vec<char> = text.chars().collect();
        let at = position.index(chars.len() + 1);
        let end = (at + delete).min(chars.len());
        let mutated: String = chars[..at].iter().chain(insert.chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        if let Ok(parsed) = AetherKey::parse(&mutated) {
            prop_assert_eq!(&parsed.to_string(), &mutated);
        }
    }
}
