//! The hybrid clock that stamps commands: the shell's clock (wall-clock milliseconds in a real node, any
//! origin in tests), made monotonic, and pushed forward to the highest stamp seen from any replica, from
//! where it keeps ticking at the local rate.
//!
//! Invariants: `now` never returns less than it returned before, nor less than any stamp passed to
//! `observe`; a local clock that jumps backwards counts as standing still; a local clock far behind
//! the cluster's adopts the cluster's time as soon as it sees one stamp and then advances with its own
//! elapsed time. Replicas exchange their clocks in `Status` messages as well as in command stamps, so
//! a replica that sees no commands still keeps up. A restart forgets all of it (the shell's wall clock anchors the new life).

#[derive(Clone, Debug, Default)]
pub(crate) struct HybridClock {
    /// Added to the local reading: backward jumps of the local clock, and how far the cluster is ahead.
    offset_ms: u64,
    /// The last local reading, to notice backward jumps.
    last_local_ms: u64,
    /// The last time returned (and floor for the next).
    last_ms: u64,
}

impl HybridClock {
    /// The current hybrid time at local reading `local_ms`.
    pub(crate) fn now(&mut self, local_ms: u64) -> u64 {
        // A backward jump (and nothing else) raises the offset by its size.
        self.offset_ms = self.offset_ms.saturating_add(self.last_local_ms.saturating_sub(local_ms));
        self.last_local_ms = local_ms;
        self.last_ms = self.last_ms.max(local_ms.saturating_add(self.offset_ms));
        self.last_ms
    }

    /// The last time `now` returned (or a stamp `observe` took in).
    pub(crate) fn last(&self) -> u64 {
        self.last_ms
    }

    /// Takes in a stamp from another replica: from now on the clock reads at least that, and ticks on
    /// from there.
    pub(crate) fn observe(&mut self, local_ms: u64, stamp_ms: u64) {
        let now = self.now(local_ms);
        // A stamp ahead of us (and nothing else) raises the offset by how far ahead it is.
        self.offset_ms = self.offset_ms.saturating_add(stamp_ms.saturating_sub(now));
        self.last_ms = now.max(stamp_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_clock_stays_monotonic_when_the_local_clock_jumps_backwards() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.now(5_000), 5_000);
        assert_eq!(clock.now(1_000), 5_000, "a backward jump stands still");
        assert_eq!(clock.now(1_250), 5_250, "then advances by local elapsed time");
        let mut readings = Vec::new();
        for local in [9_000, 2, 3, 8_999, 0, u64::MAX / 2, 7] {
            readings.push(clock.now(local));
        }
        assert!(readings.windows(2).all(|w| w[0] <= w[1]), "{readings:?}");
    }

    #[test]
    fn hybrid_clock_far_behind_adopts_a_seen_stamp_and_ticks_on_from_it() {
        let mut clock = HybridClock::default();
        clock.now(10);
        clock.observe(20, 3_600_000);
        assert_eq!(clock.now(20), 3_600_000);
        assert_eq!(clock.now(520), 3_600_500, "keeps ticking at the local rate");
        clock.observe(600, 1_000);
        assert_eq!(clock.now(600), 3_600_580, "an older stamp changes nothing");
        assert!(clock.now(0) >= 3_600_580);
    }

    #[test]
    fn last_reports_the_latest_time_given_out_or_taken_in_without_advancing() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.last(), 0);
        clock.now(7_000);
        assert_eq!(clock.last(), 7_000);
        clock.now(6_000);
        assert_eq!(clock.last(), 7_000, "a backward jump stands still");
        clock.observe(6_500, 42_000);
        assert_eq!(clock.last(), 42_000, "a stamp from ahead is the time now");
        assert_eq!(clock.last(), 42_000, "reading it does not tick");
        clock.observe(6_600, 10);
        assert_eq!(clock.last(), 42_100, "an old stamp leaves the local ticking");
        assert_eq!(clock.now(6_600), clock.last());
    }

    #[test]
    fn a_repeated_reading_or_a_stamp_equal_to_now_changes_nothing() {
        let mut clock = HybridClock::default();
        clock.now(1_000);
        clock.observe(1_000, 5_000);
        assert_eq!((clock.now(1_000), clock.now(1_000)), (5_000, 5_000));
        clock.observe(1_000, 5_000);
        assert_eq!(clock.now(1_001), 5_001);
        assert_eq!(clock.now(1_501), 5_501, "ticks at the local rate after equal readings and stamps");
    }
}
