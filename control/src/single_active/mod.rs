//! Single-active slices: the lease that says which instance of a slice serves, as one node decides it.
//!
//! A slice is single-active when its descriptor or its blueprint says so. However many instances run, only
//! the holder of `leases/{group:artifact}` ([`LeaseRecord`]) serves. Every node with an ACTIVE instance of
//! the slice is a candidate and runs one [`Lease`] per slice base; the runtime feeds it the record as its
//! store holds it, whether it has an instance, and its own monotonic clock, and submits the write it asks for.
//!
//! - **Holding.** The holder renews by compare-and-set every [`LeaseTiming::renew_ms`], raising `renewal`
//!   (at most one renewal in flight). It serves until its last renewal *that applied* was **sent**
//!   [`LeaseTiming::serve_ms`] ago (`ttl - margin`); seeing its own renewal in the store is what extends it.
//! - **Taking over.** A candidate takes the lease (compare-and-set at the version it watched, `epoch + 1`)
//!   when the record is absent, released, or stayed at one version for [`LeaseTiming::ttl_ms`] on the
//!   candidate's own clock since it first saw that version. When several race, the first decided wins.
//! - **Releasing.** A holder whose instance fails or stops writes the record back without a holder (same
//!   epoch), so the next candidate takes it at once; it stops serving before it sends the release. The
//!   record is not removed, so epochs only grow.
//!
//! **Argument (never two serving at once).** Nobody compares clock values across nodes; only durations on
//! one node's clock are used, and clocks run at rates within `1 ± ρ` of real time. Let the holder `H` send a
//! renewal at real time `s` that applies at version `v`. `H` serves at most until `s + serve/(1-ρ)` (real
//! time). A taker `T` can only replace version `v` after it saw `v`, which was applied after `s`, and then
//! waited `ttl` on its clock: its take is sent after `s + ttl/(1+ρ)`, and becomes the holder (serves) only
//! when it sees its own take applied, later still. So the two never overlap while
//! `serve/(1-ρ) < ttl/(1+ρ)`, i.e. `serve/ttl < (1-ρ)/(1+ρ)`: with 600/800 that holds for any `ρ` under
//! 14%. A renewal that is sent but never applies extends nothing; a renewal decided late only starts the
//! takers' wait later. A released record was written after its holder stopped serving, and an absent record
//! means nobody served. A call the holder admitted just before its end may still run after it: that is what
//! the epoch is for; a slice writes it beside its side effects and refuses older ones.
//!
//! **Liveness.** A candidate whose node can write and whose record stays unrenewed for `ttl` sends a take;
//! one take among the racers applies, and its sender serves once it sees it.
//!
//! The model-checked test is in `model` (tests only): a simulated store with message delays, crashes,
//! partitions, instance failures and clocks at different rates, with broken variants that it catches.
//!
//! Invariants: decisions are a function of the inputs (no clock, no randomness); every write is a
//! compare-and-set at the version the decision saw; `serving` is `Some` only while this node's own lease
//! record, as last seen, names it.

#[cfg(test)]
mod model;

#[cfg(test)]
fn base() -> ArtifactBase {
    ArtifactBase::parse("org.aether.examples:ledger").expect("a valid base")
}

use crate::records::{Record, RecordError};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, ArtifactBase, Revision};
use serde::{Deserialize, Serialize};

/// How often a lease is renewed, how long a takeover waits, how long a holder serves past a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A renewal is sent this long after the previous one was sent.
    pub renew_ms: u64,
    /// A candidate takes over a record that stayed at one version this long on its own clock.
    pub ttl_ms: u64,
    /// The holder serves this long after sending its last renewal that applied (`ttl - margin`).
    pub serve_ms: u64,
}

/// The runtime's timing: renew every 200 ms, take over after 800 ms, serve 600 ms past a renewal sent.
pub const TIMING: LeaseTiming = LeaseTiming { renew_ms: 200, ttl_ms: 800, serve_ms: 600 };

impl LeaseTiming {
    /// Whether a holder surely stops before a taker starts with clocks within `rate_error` (e.g. 0.05) of
    /// real time; see the module's argument.
    pub fn is_safe_for(&self, rate_error: f64) -> bool {
        (self.serve_ms as f64) / (1.0 - rate_error) < (self.ttl_ms as f64) / (1.0 + rate_error)
    }
}

/// `leases/{group:artifact}`: who serves a single-active slice, and since which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The node whose instance serves; `None` once released.
    pub holder: Option<String>,
    /// `group:artifact:version` of the holder's instance (`None` once released).
    #[serde(default)]
    pub artifact: Option<String>,
    /// Grows by one with every change of holder; starts at 1.
    pub epoch: u64,
    /// Raised by every renewal, so each write of the holder is told apart.
    pub renewal: u64,
}

impl Record for LeaseRecord {
    const KIND: &'static str = "lease record";
}

/// Longest lease record read, in bytes.
pub const LEASE_RECORD_BYTES_MAX: usize = 1024;

impl LeaseRecord {
    /// Decodes a stored record, bounded in size.
    pub fn read(bytes: &[u8]) -> Result<LeaseRecord, RecordError> {
        if bytes.len() > LEASE_RECORD_BYTES_MAX {
            let reason = format!("{} bytes, over {LEASE_RECORD_BYTES_MAX}", bytes.len());
            return Err(RecordError { record: Self::KIND, reason });
        }
        LeaseRecord::decode(bytes)
    }
}

/// A write of ours in flight: which `renewal` it carries, at which epoch, and when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    epoch: u64,
    renewal: u64,
    sent_ms: u64,
}

/// One node's side of the lease of one single-active slice base.
#[derive(Clone, Debug)]
pub struct Lease {
    me: String,
    key: AetherKey,
    timing: LeaseTiming,
    /// The record version last seen, and when (this node's clock) it was first seen.
    watched: Option<(Option<Revision>, u64)>,
    /// The last write sent that may still apply.
    pending: Option<Pending>,
    /// Epoch held and until when this node serves it (its clock), from its last renewal that applied.
    held: Option<(u64, u64)>,
    /// Highest renewal number this node sent, so each of its writes carries a new one.
    renewal_sent: u64,
}

/// What the runtime knows when it runs [`Lease::step`].
#[derive(Clone, Copy, Debug)]
pub struct LeaseInput<'a> {
    /// This node's monotonic clock, in milliseconds.
    pub now_ms: u64,
    /// The lease record as this node's store holds it.
    pub record: Option<&'a Versioned<LeaseRecord>>,
    /// `group:artifact:version` of this node's ACTIVE instance of the slice, if it has one.
    pub instance: Option<&'a str>,
    /// Whether writes can go out now (quorum, caught up); without, nothing is sent and nothing taken.
    pub can_write: bool,
}

impl Lease {
    pub fn new(me: &str, base: ArtifactBase, timing: LeaseTiming) -> Lease {
        Lease {
            me: me.to_owned(),
            key: AetherKey::SliceLease { base },
            timing,
            watched: None,
            pending: None,
            held: None,
            renewal_sent: 0,
        }
    }

    pub fn key(&self) -> &AetherKey {
        &self.key
    }

    /// The epoch this node serves at `now_ms`, if it holds the lease and its last applied renewal is recent.
    pub fn serving(&self, now_ms: u64) -> Option<u64> {
        self.held.filter(|&(_, until)| now_ms < until).map(|(epoch, _)| epoch)
    }

    /// The epoch held and until when it is served (this node's clock), whatever the time now.
    pub fn held(&self) -> Option<(u64, u64)> {
        self.held
    }

    /// Take in the current view and decide the write to send, if any. See the module documentation.
    pub fn step(&mut self, input: LeaseInput<'_>) -> Option<KvWrite> {
        let now = input.now_ms;
        let version = input.record.map(|r| r.version);
        if self.watched.is_none_or(|(seen, _)| seen != version) {
            self.watched = Some((version, now));
        }
        if self.pending.is_some_and(|p| now.saturating_sub(p.sent_ms) >= self.timing.ttl_ms) {
            // Lost or refused: it extends nothing if it applies later (its renewal number is not waited on).
            self.pending = None;
        }
        let mine = input.record.filter(|r| r.value.holder.as_deref() == Some(self.me.as_str()));
        match mine {
            Some(record) => self.step_holder(input, record),
            None => {
                self.held = None;
                self.step_candidate(input)
            }
        }
    }

    fn step_holder(&mut self, input: LeaseInput<'_>, record: &Versioned<LeaseRecord>) -> Option<KvWrite> {
        let now = input.now_ms;
        let lease = &record.value;
        if let Some(p) = self.pending.filter(|p| p.epoch == lease.epoch && p.renewal == lease.renewal) {
            self.held = Some((lease.epoch, p.sent_ms + self.timing.serve_ms));
            self.pending = None;
        }
        if self.held.is_some_and(|(epoch, _)| epoch != lease.epoch) || input.instance.is_none() {
            self.held = None;
        }
        if !input.can_write {
            return None;
        }
        if input.instance.is_none() {
            // Serving stopped above, before the release goes out: the next candidate takes over at once.
            self.pending = None;
            let released = LeaseRecord { holder: None, artifact: None, epoch: lease.epoch, renewal: lease.renewal };
            return Some(self.write(record.version, &released));
        }
        let last_sent = self.pending.map(|p| p.sent_ms).or(self.held.map(|(_, until)| until - self.timing.serve_ms));
        if self.pending.is_some() || last_sent.is_some_and(|at| now.saturating_sub(at) < self.timing.renew_ms) {
            return None;
        }
        // A record naming this node that it holds no renewal of (say, from before a restart) is renewed too:
        // the compare-and-set applies only if nobody took it meanwhile.
        self.send(now, Some(record.version), lease.epoch, input.instance, lease.renewal)
    }

    fn step_candidate(&mut self, input: LeaseInput<'_>) -> Option<KvWrite> {
        let now = input.now_ms;
        if !input.can_write || input.instance.is_none() || self.pending.is_some() {
            return None;
        }
        let Some(record) = input.record else { return self.send(now, None, 1, input.instance, 0) };
        let lease = &record.value;
        let unchanged_ms = self.watched.map_or(0, |(_, since)| now.saturating_sub(since));
        if lease.holder.is_some() && unchanged_ms < self.timing.ttl_ms {
            return None;
        }
        self.send(now, Some(record.version), lease.epoch + 1, input.instance, lease.renewal)
    }

    /// A compare-and-set naming this node as holder at `epoch`, remembered as pending.
    fn send(
        &mut self,
        now: u64,
        expected: Option<Revision>,
        epoch: u64,
        instance: Option<&str>,
        renewal_seen: u64,
    ) -> Option<KvWrite> {
        let renewal = renewal_seen.max(self.renewal_sent) + 1;
        self.renewal_sent = renewal;
        self.pending = Some(Pending { epoch, renewal, sent_ms: now });
        let value =
            LeaseRecord { holder: Some(self.me.clone()), artifact: instance.map(str::to_owned), epoch, renewal };
        Some(KvWrite::Set { key: self.key.clone(), expected, value: value.encode() })
    }

    fn write(&self, version: Revision, value: &LeaseRecord) -> KvWrite {
        KvWrite::Set { key: self.key.clone(), expected: Some(version), value: value.encode() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(value: LeaseRecord, version: u64) -> Versioned<LeaseRecord> {
        Versioned { value, version: Revision(version) }
    }

    fn written(write: &KvWrite) -> LeaseRecord {
        match write {
            KvWrite::Set { value, .. } => LeaseRecord::read(value).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    const ARTIFACT: &str = "org.aether.examples:ledger:1.0.0";

    fn input(now_ms: u64, record: Option<&Versioned<LeaseRecord>>) -> LeaseInput<'_> {
        LeaseInput { now_ms, record, instance: Some(ARTIFACT), can_write: true }
    }

    #[test]
    fn an_absent_lease_is_taken_at_epoch_one_and_served_once_seen() {
        let mut lease = Lease::new("node-1", base(), TIMING);
        let take = lease.step(input(0, None)).unwrap();
        assert!(matches!(&take, KvWrite::Set { expected: None, .. }));
        let record = versioned(written(&take), 5);
        assert_eq!((record.value.epoch, record.value.holder.as_deref()), (1, Some("node-1")));
        assert_eq!(lease.serving(10), None, "not before it is seen applied");
        assert_eq!(lease.step(input(10, Some(&record))), None);
        assert_eq!(lease.serving(10), Some(1));
        assert_eq!(lease.serving(TIMING.serve_ms - 1), Some(1));
        assert_eq!(lease.serving(TIMING.serve_ms), None, "counted from when the take was sent");
    }

    #[test]
    fn the_holder_renews_every_renew_period_and_extends_only_on_its_own_renewal() {
        let mut lease = Lease::new("node-1", base(), TIMING);
        let record = versioned(written(&lease.step(input(0, None)).unwrap()), 1);
        assert_eq!(lease.step(input(5, Some(&record))), None);
        assert_eq!(lease.step(input(150, Some(&record))), None);
        let renewal = lease.step(input(200, Some(&record))).unwrap();
        assert!(matches!(&renewal, KvWrite::Set { expected: Some(Revision(1)), .. }));
        assert_eq!(lease.step(input(250, Some(&record))), None, "one renewal in flight");
        let renewed = versioned(written(&renewal), 2);
        assert_eq!(renewed.value.epoch, 1);
        lease.step(input(300, Some(&renewed)));
        assert_eq!(lease.serving(799), Some(1));
        assert_eq!(lease.serving(800), None);
    }

    #[test]
    fn a_candidate_waits_a_ttl_of_unchanged_version_then_takes_the_next_epoch() {
        let mut lease = Lease::new("node-2", base(), TIMING);
        let other = LeaseRecord { holder: Some("node-1".into()), artifact: None, epoch: 4, renewal: 9 };
        let at_1 = versioned(other.clone(), 1);
        assert_eq!(lease.step(input(1000, Some(&at_1))), None);
        let at_2 = versioned(LeaseRecord { renewal: 10, ..other }, 2);
        assert_eq!(lease.step(input(1700, Some(&at_2))), None, "a renewal restarts the wait");
        assert_eq!(lease.step(input(2499, Some(&at_2))), None);
        let take = lease.step(input(2500, Some(&at_2))).unwrap();
        assert!(matches!(&take, KvWrite::Set { expected: Some(Revision(2)), .. }));
        assert_eq!(written(&take).epoch, 5);
        assert_eq!(lease.serving(2500), None);
    }

    #[test]
    fn a_holder_without_its_instance_releases_and_the_next_takes_at_once() {
        let mut holder = Lease::new("node-1", base(), TIMING);
        let record = versioned(written(&holder.step(input(0, None)).unwrap()), 1);
        holder.step(input(1, Some(&record)));
        let gone = LeaseInput { instance: None, ..input(50, Some(&record)) };
        let release = holder.step(gone).unwrap();
        assert_eq!(holder.serving(50), None, "stops before the release is sent");
        let released = versioned(written(&release), 2);
        assert_eq!((released.value.holder.as_deref(), released.value.epoch), (None, 1));
        let mut next = Lease::new("node-2", base(), TIMING);
        let take = next.step(input(60, Some(&released))).unwrap();
        assert_eq!(written(&take).epoch, 2);
    }

    #[test]
    fn a_holder_that_sees_another_holder_stops_and_nothing_goes_out_without_writes() {
        let mut lease = Lease::new("node-1", base(), TIMING);
        let record = versioned(written(&lease.step(input(0, None)).unwrap()), 1);
        lease.step(input(1, Some(&record)));
        let taken = versioned(LeaseRecord { holder: Some("node-2".into()), artifact: None, epoch: 2, renewal: 1 }, 2);
        lease.step(input(2, Some(&taken)));
        assert_eq!(lease.serving(2), None);
        let mut cut_off = Lease::new("node-3", base(), TIMING);
        assert_eq!(cut_off.step(LeaseInput { can_write: false, ..input(0, None) }), None);
    }

    #[test]
    fn timing_is_safe_for_five_percent_clock_rates_and_bad_timings_are_not() {
        assert!(TIMING.is_safe_for(0.05));
        assert!(TIMING.is_safe_for(0.13));
        assert!(!LeaseTiming { serve_ms: 800, ..TIMING }.is_safe_for(0.01));
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(LeaseRecord::read(b"nope").is_err());
        assert!(LeaseRecord::read(&vec![b' '; LEASE_RECORD_BYTES_MAX + 1]).is_err());
    }
}
