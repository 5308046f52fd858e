//! Per-node history: one compact sample per summary, the last [`HISTORY_SAMPLES`] (two hours at one a
//! second) in a ring, and the downsampling that answers the longer ranges.
//!
//! Invariants: a ring never holds more than its capacity; samples are in increasing `time_ms` order (a
//! sample not newer than the last one is dropped, so a replayed or reordered summary cannot bend the
//! series).

use std::collections::VecDeque;

/// Samples kept per node: two hours at one a second.
pub const HISTORY_SAMPLES: usize = 7200;

/// One point of a node's history (36 bytes of figures).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub time_ms: u64,
    pub rss_bytes: u64,
    pub cpu_percent: f32,
    pub calls_per_sec: f32,
    pub errors_per_sec: f32,
    pub loop_lag_p99_ms: f32,
    pub slots_per_sec: f32,
}

/// A range the history route answers, with its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    M5,
    M15,
    H1,
    H2,
}

impl Range {
    pub fn parse(text: &str) -> Option<Range> {
        match text {
            "5m" => Some(Range::M5),
            "15m" => Some(Range::M15),
            "1h" => Some(Range::H1),
            "2h" => Some(Range::H2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::M5 => "5m",
            Range::M15 => "15m",
            Range::H1 => "1h",
            Range::H2 => "2h",
        }
    }

    pub fn span_ms(self) -> u64 {
        match self {
            Range::M5 => 5 * 60_000,
            Range::M15 => 15 * 60_000,
            Range::H1 => 3_600_000,
            Range::H2 => 7_200_000,
        }
    }

    /// One point per step: at most 300 points per node whatever the range.
    pub fn step_ms(self) -> u64 {
        match self {
            Range::M5 => 1_000,
            Range::M15 => 5_000,
            Range::H1 => 15_000,
            Range::H2 => 30_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ring {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring::new(HISTORY_SAMPLES)
    }
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring { samples: VecDeque::with_capacity(capacity.min(64)), capacity: capacity.max(1) }
    }

    /// Appends `sample` unless it is not newer than the last one; drops the oldest past the capacity.
    pub fn push(&mut self, sample: Sample) -> bool {
        if self.samples.back().is_some_and(|last| last.time_ms >= sample.time_ms) {
            return false;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        true
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples of the last `range` before `now_ms`, one per step, oldest first: each point is the mean
    /// of the samples in its step (the loop lag its maximum, RSS its last value), stamped with the last
    /// sample's time.
    pub fn query(&self, range: Range, now_ms: u64) -> Vec<Sample> {
        let since = now_ms.saturating_sub(range.span_ms());
        let step = range.step_ms();
        let mut points: Vec<Sample> = Vec::new();
        let mut bucket: Vec<Sample> = Vec::new();
        let mut bucket_key = None;
        for s in self.samples.iter().filter(|s| s.time_ms > since) {
            let key = s.time_ms / step;
            if bucket_key.is_some_and(|k| k != key) {
                points.push(mean(&bucket));
                bucket.clear();
            }
            bucket_key = Some(key);
            bucket.push(*s);
        }
        if !bucket.is_empty() {
            points.push(mean(&bucket));
        }
        points
    }
}

fn mean(samples: &[Sample]) -> Sample {
    let n = samples.len().max(1) as f32;
    let avg = |f: fn(&Sample) -> f32| samples.iter().map(f).sum::<f32>() / n;
    let last = samples.last().copied().unwrap_or_default();
    Sample {
        time_ms: last.time_ms,
        rss_bytes: last.rss_bytes,
        cpu_percent: avg(|s| s.cpu_percent),
        calls_per_sec: avg(|s| s.calls_per_sec),
        errors_per_sec: avg(|s| s.errors_per_sec),
        loop_lag_p99_ms: samples.iter().map(|s| s.loop_lag_p99_ms).fold(0.0, f32::max),
        slots_per_sec: avg(|s| s.slots_per_sec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_ms: u64, calls: f32) -> Sample {
        Sample { time_ms, calls_per_sec: calls, loop_lag_p99_ms: calls, ..Sample::default() }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_in_order() {
        let mut ring = Ring::new(3);
        for t in 1..=5 {
            assert!(ring.push(at(t * 1000, t as f32)));
        }
        assert!(!ring.push(at(5000, 9.0)), "a sample not newer than the last is dropped");
        assert!(!ring.push(at(1000, 9.0)));
        assert_eq!(ring.len(), 3);
        let times: Vec<u64> = ring.query(Range::M5, 6000).iter().map(|s| s.time_ms).collect();
        assert_eq!(times, [3000, 4000, 5000]);
    }

    #[test]
    fn a_full_two_hour_ring_stays_bounded_and_downsamples() {
        let mut ring = Ring::default();
        let start = 1_000_000_000u64;
        for i in 0..(HISTORY_SAMPLES as u64 + 500) {
            ring.push(at(start + i * 1000, (i % 10) as f32));
        }
        assert_eq!(ring.len(), HISTORY_SAMPLES);
        let now = start + (HISTORY_SAMPLES as u64 + 500) * 1000;
        for range in [Range::M5, Range::M15, Range::H1, Range::H2] {
            let points = ring.query(range, now);
            assert!(points.len() <= 301 && points.len() >= 180, "{range:?}: {}", points.len());
            assert!(points.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
        }
        let wide = ring.query(Range::H2, now);
        // Each 30 s step holds three full 0..9 cycles: mean 4.5, lag max 9.
        assert!((wide[5].calls_per_sec - 4.5).abs() < 1e-3, "{:?}", wide[5]);
        assert_eq!(wide[5].loop_lag_p99_ms, 9.0);
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(Range::parse("15m"), Some(Range::M15));
        for bad in ["", "5M", "3m", "2h ", "1d"] {
            assert_eq!(Range::parse(bad), None, "{bad}");
        }
    }
}
