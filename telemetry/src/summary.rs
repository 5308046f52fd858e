//! The once-a-second summary a node sends every peer (`FrameKind::Gossip`): its process figures, loop
//! lag, connections, traffic per peer, consensus rates, and per slice method calls, errors and a latency
//! histogram (counters since the node started), plus the slow calls recorded since its last summary.
//!
//! A summary from a peer is hostile input: [`decode`] refuses more than [`SUMMARY_BYTES_MAX`] bytes
//! before decoding, then checks every list against its bound, every text against its length, every
//! float for being finite and in range, every slow call's request id for being visible ASCII (as the node
//! that recorded it keeps them), and every histogram's buckets; only a summary that passes is
//! ever stored. Invariant: a stored summary satisfies [`Summary::check`].

use crate::histogram::{Bucket, Histogram, BUCKETS};
use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// Most bytes of an encoded summary.
pub const SUMMARY_BYTES_MAX: usize = 512 * 1024;
/// Most slice methods one summary describes (the busiest when there are more).
pub const METHODS_MAX: usize = 256;
/// Most peers one summary lists.
pub const PEERS_MAX: usize = 64;
/// Most slow calls one summary carries.
pub const SLOW_PER_SUMMARY_MAX: usize = 64;
/// Longest node id, method, request id; longest artifact text.
pub const NAME_BYTES_MAX: usize = 128;
pub const ARTIFACT_BYTES_MAX: usize = 512;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct LoopLag {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connections {
    pub management: u64,
    pub app: u64,
    pub cluster: u64,
}

/// Frames and bytes exchanged with one peer since this node started.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerTraffic {
    pub peer: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct ConsensusFigures {
    pub applied_slot: u64,
    /// Slots decided per second over the last interval.
    pub slots_per_sec: f64,
    /// Share of the slots decided in the last interval that were null (0..=1).
    pub null_share: f64,
    /// Mean voting phases per slot decided by vote in the last interval.
    pub phases_per_slot: f64,
    pub slots_total: u64,
    pub null_slots_total: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct InvocationTotals {
    pub calls: u64,
    pub errors: u64,
    pub calls_per_sec: f64,
    pub errors_per_sec: f64,
}

/// Calls of one slice method run on the node since it started.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MethodFigures {
    pub artifact: String,
    pub method: String,
    pub calls: u64,
    /// Answers with a status of 500 or more.
    pub errors: u64,
    /// Latency in microseconds: the non-empty buckets of a [`Histogram`], its sum and max.
    pub latency_buckets: Vec<Bucket>,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
}

impl MethodFigures {
    /// The latency histogram (empty if the buckets do not check, which [`Summary::check`] excludes).
    pub fn latency(&self) -> Histogram {
        Histogram::from_buckets(&self.latency_buckets, self.latency_sum_us, self.latency_max_us).unwrap_or_default()
    }
}

/// One call that took longer than the slow-call threshold.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct SlowCall {
    pub request_id: String,
    pub node: String,
    pub artifact: String,
    pub method: String,
    pub duration_us: u64,
    /// Wall-clock time the call ended, ms since the epoch.
    pub time_ms: u64,
    pub status: u16,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub node: String,
    /// Wall-clock time of the measurement, ms since the epoch.
    pub time_ms: u64,
    pub cpu_percent: f64,
    /// CPU time (user and system) the process used since it started, in ms.
    pub cpu_ms_total: u64,
    pub rss_bytes: u64,
    pub threads: u64,
    /// The cluster event loop's lag over the last interval.
    pub loop_lag: LoopLag,
    pub connections: Connections,
    pub peers: Vec<PeerTraffic>,
    pub consensus: ConsensusFigures,
    pub invocations: InvocationTotals,
    pub methods: Vec<MethodFigures>,
    /// Slow calls recorded since the node's previous summary.
    pub slow: Vec<SlowCall>,
}

/// Why a summary was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryError(pub String);

impl fmt::Display for SummaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics summary refused: {}", self.0)
    }
}

impl std::error::Error for SummaryError {}

fn bad(why: impl Into<String>) -> SummaryError {
    SummaryError(why.into())
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), SummaryError> {
    if text.len() > max {
        return Err(bad(format!("{field} has {} bytes, over {max}", text.len())));
    }
    Ok(())
}

fn check_named(field: &str, text: &str, max: usize) -> Result<(), SummaryError> {
    if text.is_empty() {
        return Err(bad(format!("{field} is empty")));
    }
    check_text(field, text, max)
}

fn check_float(field: &str, value: f64, max: f64) -> Result<(), SummaryError> {
    if !value.is_finite() || value < 0.0 || value > max {
        return Err(bad(format!("{field} is {value}, outside 0..={max}")));
    }
    Ok(())
}

impl Summary {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Checks every bound this module states.
    pub fn check(&self) -> Result<(), SummaryError> {
        check_named("node", &self.node, NAME_BYTES_MAX)?;
        check_float("cpu_percent", self.cpu_percent, 100.0 * 4096.0)?;
        check_float("consensus.slots_per_sec", self.consensus.slots_per_sec, 1e9)?;
        check_float("consensus.null_share", self.consensus.null_share, 1.0)?;
        check_float("consensus.phases_per_slot", self.consensus.phases_per_slot, 1e6)?;
        check_float("invocations.calls_per_sec", self.invocations.calls_per_sec, 1e12)?;
        check_float("invocations.errors_per_sec", self.invocations.errors_per_sec, 1e12)?;
        for (what, len, max) in [
            ("peers", self.peers.len(), PEERS_MAX),
            ("methods", self.methods.len(), METHODS_MAX),
            ("slow", self.slow.len(), SLOW_PER_SUMMARY_MAX),
        ] {
            if len > max {
                return Err(bad(format!("{len} {what}, over {max}")));
            }
        }
        for p in &self.peers {
            check_named("peers.peer", &p.peer, NAME_BYTES_MAX)?;
        }
        for m in &self.methods {
            check_named("methods.artifact", &m.artifact, ARTIFACT_BYTES_MAX)?;
            check_named("methods.method", &m.method, NAME_BYTES_MAX)?;
            if m.latency_buckets.len() > BUCKETS {
                return Err(bad(format!("{} latency buckets, over {BUCKETS}", m.latency_buckets.len())));
            }
            let Some(h) = Histogram::from_buckets(&m.latency_buckets, m.latency_sum_us, m.latency_max_us) else {
                return Err(bad(format!("the latency buckets of {} {} do not check", m.artifact, m.method)));
            };
            if h.count() != m.calls || m.errors > m.calls {
                return Err(bad(format!("{} {}: counts disagree", m.artifact, m.method)));
            }
        }
        for s in &self.slow {
            check_text("slow.request_id", &s.request_id, NAME_BYTES_MAX)?;
            if !s.request_id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("slow.request_id has characters other than visible ASCII"));
            }
            check_named("slow.node", &s.node, NAME_BYTES_MAX)?;
            check_named("slow.artifact", &s.artifact, ARTIFACT_BYTES_MAX)?;
            check_named("slow.method", &s.method, NAME_BYTES_MAX)?;
            if s.node != self.node {
                return Err(bad("a slow call names another node"));
            }
        }
        Ok(())
    }
}

/// Decodes and checks a summary received from a peer.
pub fn decode(bytes: &[u8]) -> Result<Summary, SummaryError> {
    if bytes.len() > SUMMARY_BYTES_MAX {
        return Err(bad(format!("{} bytes, over {SUMMARY_BYTES_MAX}", bytes.len())));
    }
    let summary: Summary = wire::decode(bytes).map_err(|e| bad(e.to_string()))?;
    summary.check()?;
    Ok(summary)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(node: &str) -> Summary {
        let mut latency = Histogram::new();
        for v in [120, 480, 2_000] {
            latency.record(v);
        }
        Summary {
            node: node.into(),
            time_ms: 1_700_000_000_000,
            cpu_percent: 3.5,
            cpu_ms_total: 1234,
            rss_bytes: 50 << 20,
            threads: 40,
            loop_lag: LoopLag { p50_us: 20, p99_us: 300, max_us: 900 },
            connections: Connections { management: 2, app: 5, cluster: 2 },
            peers: vec![PeerTraffic {
                peer: "node-2".into(),
                frames_in: 10,
                frames_out: 11,
                bytes_in: 900,
                bytes_out: 1000,
            }],
            consensus: ConsensusFigures {
                applied_slot: 77,
                slots_per_sec: 4.0,
                null_share: 0.25,
                phases_per_slot: 1.0,
                slots_total: 80,
                null_slots_total: 20,
            },
            invocations: InvocationTotals { calls: 3, errors: 1, calls_per_sec: 3.0, errors_per_sec: 1.0 },
            methods: vec![MethodFigures {
                artifact: "org.aether.examples:echo:1.0.0".into(),
                method: "echo".into(),
                calls: 3,
                errors: 1,
                latency_buckets: latency.buckets(),
                latency_sum_us: latency.sum(),
                latency_max_us: latency.max(),
            }],
            slow: vec![SlowCall {
                request_id: "abc".into(),
                node: node.into(),
                artifact: "org.aether.examples:echo:1.0.0".into(),
                method: "echo".into(),
                duration_us: 2_000,
                time_ms: 1_700_000_000_000,
                status: 200,
            }],
        }
    }

    #[test]
    fn a_summary_round_trips() {
        let s = sample("node-1");
        assert_eq!(decode(&s.encode()), Ok(s.clone()));
        assert!(s.encode().len() < 2048, "a small summary stays small: {} bytes", s.encode().len());
    }

    #[test]
    fn summaries_out_of_bounds_are_refused() {
        let mut cases: Vec<(&str, Summary)> = Vec::new();
        let base = sample("node-1");
        cases.push(("empty node", Summary { node: String::new(), ..base.clone() }));
        cases.push(("long node", Summary { node: "n".repeat(NAME_BYTES_MAX + 1), ..base.clone() }));
        cases.push(("nan cpu", Summary { cpu_percent: f64::NAN, ..base.clone() }));
        cases.push(("negative rate", {
            let mut s = base.clone();
            s.invocations.calls_per_sec = -1.0;
            s
        }));
        cases.push(("share over 1", {
            let mut s = base.clone();
            s.consensus.null_share = 1.5;
            s
        }));
        cases.push(("too many peers", Summary { peers: vec![base.peers[0].clone(); PEERS_MAX + 1], ..base.clone() }));
        cases.push((
            "too many slow",
            Summary { slow: vec![base.slow[0].clone(); SLOW_PER_SUMMARY_MAX + 1], ..base.clone() },
        ));
        cases.push(("counts disagree", {
            let mut s = base.clone();
            s.methods[0].calls = 99;
            s
        }));
        cases.push(("bad bucket", {
            let mut s = base.clone();
            s.methods[0].latency_buckets.push(Bucket { index: u16::MAX, count: 1 });
            s
        }));
        cases.push(("request id with a newline and an escape", {
            let mut s = base.clone();
            s.slow[0].request_id = "r1\n\x1b[31m".into();
            s
        }));
        cases.push(("slow of another node", {
            let mut s = base.clone();
            s.slow[0].node = "node-9".into();
            s
        }));
        for (what, summary) in cases {
            assert!(decode(&summary.encode()).is_err(), "{what} must be refused");
        }
        assert!(decode(&vec![0u8; SUMMARY_BYTES_MAX + 1]).is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_and_never_pass_unchecked(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(s) = decode(&bytes) {
                prop_assert!(s.check().is_ok());
            }
        }

        #[test]
        fn flipped_bytes_of_a_real_summary_are_refused_or_checked(at in 0usize..1000, bit in 0u8..8) {
            let mut bytes = sample("node-1").encode();
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(s) = decode(&bytes) {
                prop_assert!(s.check().is_ok());
            }
        }
    }
}
