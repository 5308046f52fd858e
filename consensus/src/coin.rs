//! The common coin: one bit per (slot, phase), the same on every replica because it depends only on the
//! cluster's shared seed. It is a keyed mix (SplitMix64 finaliser), not a cryptographic PRF: it protects
//! against accidental lockstep, not against an adversary who knows the seed.

use crate::types::{Phase, Slot};

pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The coin for `(slot, phase)` under the cluster seed.
pub fn coin(seed: u64, slot: Slot, phase: Phase) -> bool {
    let keyed = mix64(seed ^ mix64(slot.0 ^ mix64(u64::from(phase.0))));
    keyed & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coin_is_deterministic_and_roughly_fair() {
        let ones = (0..10_000u64).filter(|s| coin(7, Slot(*s), Phase(1))).count();
        assert!((4_500..5_500).contains(&ones), "{ones}");
        assert_eq!(coin(7, Slot(3), Phase(2)), coin(7, Slot(3), Phase(2)));
    }
}
