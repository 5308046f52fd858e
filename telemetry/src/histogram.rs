//! A log-linear latency histogram: exact below 16, then 16 sub-buckets per power of two (at most 6.25%
//! relative error), up to 2^40 (values above are clamped there). Mergeable by adding counts, so the
//! cluster-wide latency of a method is the merge of every node's histogram, never an average of averages.
//!
//! Invariants: `counts.len() == BUCKETS`; `total` is the sum of `counts`; `max` is the largest value
//! recorded (clamped) and 0 when empty. A histogram built from wire buckets is checked against these.

use rkyv::{Archive, Deserialize, Serialize};

/// Sub-buckets per power of two (and the exact range below it).
const SUB: u64 = 16;
const SUB_BITS: u32 = 4;
/// Values are clamped to below 2^VALUE_BITS (for microseconds, about 12.7 days).
const VALUE_BITS: u32 = 40;
/// Number of buckets: the exact ones, then SUB per power of two from 2^4 to 2^39.
pub const BUCKETS: usize = (SUB as usize) * (1 + (VALUE_BITS - SUB_BITS) as usize);
/// The largest value a histogram keeps apart; larger ones count as this.
pub const VALUE_MAX: u64 = (1 << VALUE_BITS) - 1;

/// One non-empty bucket as it travels between nodes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub index: u16,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

/// The bucket a value falls in.
pub fn bucket_of(value: u64) -> usize {
    let v = value.min(VALUE_MAX);
    if v < SUB {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exponent - SUB_BITS)) & (SUB - 1);
    (SUB as usize) * (1 + (exponent - SUB_BITS) as usize) + sub as usize
}

/// The smallest and largest value of a bucket.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    let i = index.min(BUCKETS - 1) as u64;
    if i < SUB {
        return (i, i);
    }
    let exponent = (i / SUB - 1) as u32 + SUB_BITS;
    let sub = i % SUB;
    let width = 1u64 << (exponent - SUB_BITS);
    let low = (1u64 << exponent) + sub * width;
    (low, low + width - 1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, sum: 0, max: 0 }
    }

    pub fn record(&mut self, value: u64) {
        let v = value.min(VALUE_MAX);
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total = self.total.saturating_add(other.total);
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// What was recorded after `earlier`, a reading of the same counts taken before (bucket by bucket,
    /// never below zero: counts that restarted in between give what is left). The maximum is this one's,
    /// an upper bound.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let counts: Vec<u64> = self.counts.iter().zip(&earlier.counts).map(|(a, b)| a.saturating_sub(*b)).collect();
        let total = counts.iter().sum();
        Histogram { counts, total, sum: self.sum.saturating_sub(earlier.sum), max: self.max }
    }

    /// Sum of the recorded values (clamped ones count as [`VALUE_MAX`]).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding that rank, never above
    /// the largest value recorded; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = if q.is_finite() { q.clamp(0.0, 1.0) } else { 1.0 };
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_bounds(index).1.min(self.max);
            }
        }
        self.max
    }

    /// How many recorded values are at most `value` (counting whole buckets whose top is at most it).
    pub fn count_at_most(&self, value: u64) -> u64 {
        let mut n = 0;
        for (index, count) in self.counts.iter().enumerate() {
            if bucket_bounds(index).1 > value {
                break;
            }
            n += count;
        }
        n
    }

    /// The non-empty buckets, for the wire.
    pub fn buckets(&self) -> Vec<Bucket> {
        let nonzero = self.counts.iter().enumerate().filter(|(_, c)| **c > 0);
        nonzero.map(|(index, count)| Bucket { index: index as u16, count: *count }).collect()
    }

    /// A histogram from wire buckets and its max and sum; `None` when an index is out of range, repeats,
    /// a count is 0, or `max` is not in the last non-empty bucket.
    pub fn from_buckets(buckets: &[Bucket], sum: u64, max: u64) -> Option<Histogram> {
        let mut h = Histogram::new();
        let mut last: Option<usize> = None;
        for b in buckets {
            let index = usize::from(b.index);
            if index >= BUCKETS || b.count == 0 || last.is_some_and(|l| index <= l) {
                return None;
            }
            h.counts[index] = b.count;
            h.total = h.total.checked_add(b.count)?;
            last = Some(index);
        }
        match last {
            Some(l) if bucket_of(max) != l => return None,
            None if max != 0 || sum != 0 => return None,
            _ => {}
        }
        h.max = max;
        h.sum = sum;
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn since_is_what_was_recorded_in_between() {
        let mut h = Histogram::new();
        for v in 1..=100u64 {
            h.record(v);
        }
        let earlier = h.clone();
        for _ in 0..100 {
            h.record(5_000);
        }
        let window = h.since(&earlier);
        assert_eq!((window.count(), window.sum()), (100, 500_000));
        assert!(window.quantile(0.5) >= 5_000, "only the later values: {}", window.quantile(0.5));
        assert_eq!(earlier.since(&h).count(), 0, "a restarted count gives nothing, not a wrap");
    }

    #[test]
    fn buckets_tile_the_value_range() {
        let mut next = 0;
        for index in 0..BUCKETS {
            let (low, high) = bucket_bounds(index);
            assert_eq!(low, next, "bucket {index}");
            assert!(high >= low);
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high), index);
            next = high + 1;
        }
        assert_eq!(next, VALUE_MAX + 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_run_are_within_the_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= exact && got <= exact * 1.0625, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum(), 50_005_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }

    #[test]
    fn merged_histograms_equal_one_that_saw_everything() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in [3, 17, 900, 12_000, 5_000_000] {
            a.record(v);
            all.record(v);
        }
        for v in [1, 250_000, 250_001] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.count_at_most(900), 3, "900 shares its bucket (896..=927) with values above 900");
        assert_eq!(a.count_at_most(927), 4);
    }

    #[test]
    fn wire_buckets_are_checked() {
        let mut h = Histogram::new();
        h.record(40);
        h.record(7_000);
        let buckets = h.buckets();
        assert_eq!(Histogram::from_buckets(&buckets, h.sum(), h.max()), Some(h.clone()));
        let out_of_range = [Bucket { index: BUCKETS as u16, count: 1 }];
        assert_eq!(Histogram::from_buckets(&out_of_range, 0, 0), None);
        let unordered = [buckets[1], buckets[0]];
        assert_eq!(Histogram::from_buckets(&unordered, h.sum(), h.max()), None);
        let empty_bucket = [Bucket { index: 3, count: 0 }];
        assert_eq!(Histogram::from_buckets(&empty_bucket, 0, 3), None);
        assert_eq!(Histogram::from_buckets(&buckets, h.sum(), 1), None, "max outside the last bucket");
        let overflow = [Bucket { index: 1, count: u64::MAX }, Bucket { index: 2, count: 1 }];
        assert_eq!(Histogram::from_buckets(&overflow, 0, 2), None);
    }

    proptest! {
        #[test]
        fn a_value_lies_in_its_bucket(v in any::<u64>()) {
            let (low, high) = bucket_bounds(bucket_of(v));
            let v = v.min(VALUE_MAX);
            prop_assert!(low <= v && v <= high);
            prop_assert!(high - low <= low / 16 + 1);
        }
    }
}
