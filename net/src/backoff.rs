//! Redial pacing: exponential backoff with jitter from a seeded PRNG, so restarts of many nodes do not
//! synchronise their dials, and a test run replays the same delays.

use std::time::Duration;

/// splitmix64: a tiny, good-enough PRNG step for jitter (not for secrets).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, current: min }
    }

    /// The next delay: the current step with ±25% jitter; the step then doubles up to the maximum.
    pub fn next_delay(&mut self, rng: &mut u64) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let quarter_us = (base.as_micros() / 4) as u64;
        if quarter_us == 0 {
            return base;
        }
        let jitter_us = splitmix64(rng) % (2 * quarter_us + 1);
        base - Duration::from_micros(quarter_us) + Duration::from_micros(jitter_us)
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut rng = 7;
        let delays: Vec<_> = (0..8).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays[0] >= Duration::from_millis(75) && delays[0] <= Duration::from_millis(125));
        for d in &delays[4..] {
            assert!(*d >= Duration::from_millis(750) && *d <= Duration::from_millis(1250), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(125));
    }
}
