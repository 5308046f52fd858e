//! The node's metrics: what the data plane records as calls run ([`Telemetry::record_call`]), what the
//! event loop measures once a second ([`Telemetry::summarise`]), and the [`Board`] that holds every node's
//! latest summary and history for the management API.
//!
//! Threads: `record_call` runs on the threads that run slice calls (a short lock per call);
//! `summarise` runs on the event loop once a second (two small `/proc` reads and a copy of the counters);
//! the management threads read the board, never the loop.
//!
//! A slow call is also logged (info) on the thread that ran it, so the line carries its request id.
//!
//! Invariants: the per-method table holds at most [`METHODS_TRACKED_MAX`] methods (calls of others are
//! counted in the totals only); at most [`SLOW_PER_SUMMARY_MAX`] slow calls wait for the next summary
//! (more are counted and dropped); a summary never encodes to more than [`SUMMARY_BYTES_MAX`].

pub mod process;
pub mod request_id;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemetry::summary::{ARTIFACT_BYTES_MAX, METHODS_MAX, NAME_BYTES_MAX, SLOW_PER_SUMMARY_MAX, SUMMARY_BYTES_MAX};
use telemetry::{Board, Histogram, MethodFigures, SlowCall, Summary};

/// Environment variable with the slow-call threshold in ms (default [`telemetry::SLOW_THRESHOLD_MS_DEFAULT`]).
pub const SLOW_CALL_ENV: &str = "AETHER_SLOW_CALL_MS";

/// The slow-call threshold `AETHER_SLOW_CALL_MS` sets, if it is set; an error names a bad value.
pub fn slow_threshold_from_env() -> Result<Option<u64>, String> {
    let Ok(text) = std::env::var(SLOW_CALL_ENV) else { return Ok(None) };
    match text.trim().parse::<u64>() {
        Ok(ms) if (1..=SLOW_CALL_MS_MAX).contains(&ms) => Ok(Some(ms)),
        _ => Err(format!("{SLOW_CALL_ENV}='{text}': give milliseconds from 1 to {SLOW_CALL_MS_MAX}")),
    }
}

/// Highest slow-call threshold, at start and as a live setting alike.
pub const SLOW_CALL_MS_MAX: u64 = 600_000;

/// Slice methods whose calls are tracked one by one.
pub const METHODS_TRACKED_MAX: usize = 1024;

#[derive(Default)]
struct MethodStats {
    calls: u64,
    errors: u64,
    latency: Histogram,
}

#[derive(Default)]
struct Calls {
    /// Artifact -> method -> figures (looked up by `&str`: a call allocates only for a new method).
    methods: BTreeMap<String, BTreeMap<String, MethodStats>>,
    tracked: usize,
    slow: Vec<SlowCall>,
    slow_dropped: u64,
}

impl Calls {
    /// The figures of `artifact`'s `method`, made on its first call while fewer than
    /// [`METHODS_TRACKED_MAX`] methods are tracked.
    fn stats_of(&mut self, artifact: &str, method: &str) -> Option<&mut MethodStats> {
        let known = self.methods.get(artifact).is_some_and(|m| m.contains_key(method));
        if !known {
            if self.tracked >= METHODS_TRACKED_MAX {
                return None;
            }
            self.tracked += 1;
            let methods = self.methods.entry(artifact.to_owned()).or_default();
            methods.insert(method.to_owned(), MethodStats::default());
        }
        self.methods.get_mut(artifact)?.get_mut(method)
    }
}

/// What the previous summary saw, for rates.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    cpu_ms: u64,
    calls: u64,
    errors: u64,
    slots: u64,
    null_slots: u64,
    phases: u64,
    slots_by_vote: u64,
}

/// What only the event loop knows, handed to [`Telemetry::summarise`].
pub struct LoopFigures {
    pub time_ms: u64,
    pub loop_lag: Histogram,
    pub peers: Vec<net::PeerStatus>,
    pub cluster_connections: u64,
    pub applied_slot: Option<u64>,
    pub consensus: Option<consensus::Stats>,
}

pub struct Telemetry {
    node: String,
    board: Arc<Board>,
    calls: Mutex<Calls>,
    /// Totals over every method, tracked or not.
    calls_total: AtomicU64,
    errors_total: AtomicU64,
    ports: Mutex<Vec<(&'static str, Arc<AtomicUsize>)>>,
    previous: Mutex<Previous>,
}

impl Telemetry {
    /// The metrics of node `node` in a cluster of `nodes`.
    pub fn new(node: &str, nodes: &[String]) -> Arc<Telemetry> {
        Arc::new(Telemetry {
            node: node.to_owned(),
            board: Arc::new(Board::new(node, nodes)),
            calls: Mutex::default(),
            calls_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            ports: Mutex::default(),
            previous: Mutex::default(),
        })
    }

    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Calls slower than `ms` are recorded as slow from now on (a plain setter for live configuration).
    pub fn set_slow_threshold_ms(&self, ms: u64) {
        self.board.set_slow_threshold_ms(ms);
    }

    /// Counts the open connections of HTTP port `name` (`management`, `app`) from its gauge.
    pub fn add_port(&self, name: &'static str, gauge: Arc<AtomicUsize>) {
        self.ports.lock().push((name, gauge));
    }

    /// A slice call that ran here took `duration` and answered `status` (500 and more count as errors).
    pub fn record_call(&self, artifact: &str, method: &str, duration: Duration, status: u16) {
        // Names past the summary's bounds would make every summary refused: such calls count in the totals only.
        let named = artifact.len() <= ARTIFACT_BYTES_MAX && !method.is_empty() && method.len() <= NAME_BYTES_MAX;
        let error = status >= 500;
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.calls_total.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        let slow = micros >= self.board.slow_threshold_ms().saturating_mul(1000);
        let mut calls = self.calls.lock();
        if let Some(stats) = named.then(|| calls.stats_of(artifact, method)).flatten() {
            stats.calls += 1;
            stats.errors += u64::from(error);
            stats.latency.record(micros);
        }
        if !slow || !named {
            return;
        }
        if calls.slow.len() >= SLOW_PER_SUMMARY_MAX {
            calls.slow_dropped += 1;
            return;
        }
        let entry = SlowCall {
            request_id: request_id::current().unwrap_or_default(),
            node: self.node.clone(),
            artifact: artifact.to_owned(),
            method: method.to_owned(),
            duration_us: micros,
            time_ms: crate::managers::wall_ms(),
            status,
        };
        calls.slow.push(entry);
        drop(calls);
        // On the thread that ran the call, so the line ends with its request id.
        log::info!("slow call: {artifact} {method} took {} ms and answered {status}", micros / 1000);
    }

    /// This node's summary now; also stored on this node's board. Called once a second on the loop.
    pub fn summarise(&self, figures: LoopFigures) -> Summary {
        let now = Instant::now();
        let process = process::sample();
        let (methods, slow, slow_dropped) = self.take_calls();
        if slow_dropped > 0 {
            log::warn!(
                "{slow_dropped} slow calls were not recorded in the last second (at most {SLOW_PER_SUMMARY_MAX})"
            );
        }
        let calls = self.calls_total.load(Ordering::Relaxed);
        let errors = self.errors_total.load(Ordering::Relaxed);
        let stats = figures.consensus.unwrap_or_default();
        let slots = stats.slots_by_vote + stats.slots_by_sync;
        let mut previous = self.previous.lock();
        let seconds = previous.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        let rate =
            |now: u64, before: u64| if seconds > 0.0 { now.saturating_sub(before) as f64 / seconds } else { 0.0 };
        let slot_delta = slots.saturating_sub(previous.slots);
        let vote_delta = stats.slots_by_vote.saturating_sub(previous.slots_by_vote);
        let ratio = |n: u64, d: u64| if d > 0 { n as f64 / d as f64 } else { 0.0 };
        let summary = Summary {
            node: self.node.clone(),
            time_ms: figures.time_ms,
            cpu_percent: rate(process.cpu_ms, previous.cpu_ms) / 10.0,
            cpu_ms_total: process.cpu_ms,
            rss_bytes: process.rss_bytes,
            threads: process.threads,
            loop_lag: telemetry::LoopLag {
                p50_us: figures.loop_lag.quantile(0.5),
                p99_us: figures.loop_lag.quantile(0.99),
                max_us: figures.loop_lag.max(),
            },
            connections: self.connections(figures.cluster_connections),
            peers: figures.peers.iter().take(telemetry::summary::PEERS_MAX).map(peer_traffic).collect(),
            consensus: telemetry::ConsensusFigures {
                applied_slot: figures.applied_slot.unwrap_or(0),
                slots_per_sec: rate(slots, previous.slots),
                null_share: ratio(stats.null_slots.saturating_sub(previous.null_slots), slot_delta).min(1.0),
                phases_per_slot: ratio(stats.phases_total.saturating_sub(previous.phases), vote_delta),
                slots_total: slots,
                null_slots_total: stats.null_slots,
            },
            invocations: telemetry::InvocationTotals {
                calls,
                errors,
                calls_per_sec: rate(calls, previous.calls),
                errors_per_sec: rate(errors, previous.errors),
            },
            methods,
            slow,
        };
        *previous = Previous {
            at: Some(now),
            cpu_ms: process.cpu_ms,
            calls,
            errors,
            slots,
            null_slots: stats.null_slots,
            phases: stats.phases_total,
            slots_by_vote: stats.slots_by_vote,
        };
        drop(previous);
        let summary = fit(summary);
        if let Err(e) = self.board.accept(summary.clone(), figures.time_ms) {
            log::warn!("own {e}");
        }
        summary
    }

    /// The method figures (busiest first when there are too many) and the slow calls since last time.
    fn take_calls(&self) -> (Vec<MethodFigures>, Vec<SlowCall>, u64) {
        let mut calls = self.calls.lock();
        let mut methods: Vec<MethodFigures> = calls
            .methods
            .iter()
            .flat_map(|(artifact, methods)| methods.iter().map(move |(method, s)| (artifact, method, s)))
            .map(|(artifact, method, s)| MethodFigures {
                artifact: artifact.clone(),
                method: method.clone(),
                calls: s.calls,
                errors: s.errors,
                latency_buckets: s.latency.buckets(),
                latency_sum_us: s.latency.sum(),
                latency_max_us: s.latency.max(),
            })
            .collect();
        if methods.len() > METHODS_MAX {
            methods.sort_by_key(|m| std::cmp::Reverse(m.calls));
            methods.truncate(METHODS_MAX);
        }
        let slow = std::mem::take(&mut calls.slow);
        let dropped = std::mem::take(&mut calls.slow_dropped);
        (methods, slow, dropped)
    }

    fn connections(&self, cluster: u64) -> telemetry::Connections {
        let ports = self.ports.lock();
        let of =
            |name: &str| ports.iter().filter(|(n, _)| *n == name).map(|(_, g)| g.load(Ordering::Relaxed) as u64).sum();
        telemetry::Connections { management: of("management"), app: of("app"), cluster }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Telemetry({})", self.node)
    }
}

fn peer_traffic(p: &net::PeerStatus) -> telemetry::PeerTraffic {
    telemetry::PeerTraffic {
        peer: p.id.clone(),
        frames_in: p.traffic.frames_in,
        frames_out: p.traffic.frames_out,
        bytes_in: p.traffic.bytes_in,
        bytes_out: p.traffic.bytes_out,
    }
}

/// `summary` trimmed until it encodes within [`SUMMARY_BYTES_MAX`]: the least busy methods go first.
fn fit(mut summary: Summary) -> Summary {
    while summary.encode().len() > SUMMARY_BYTES_MAX && !summary.methods.is_empty() {
        summary.methods.sort_by_key(|m| std::cmp::Reverse(m.calls));
        let keep = summary.methods.len() / 2;
        summary.methods.truncate(keep);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(time_ms: u64) -> LoopFigures {
        LoopFigures {
            time_ms,
            loop_lag: Histogram::new(),
            peers: Vec::new(),
            cluster_connections: 2,
            applied_slot: Some(5),
            consensus: None,
        }
    }

    #[test]
    fn calls_are_counted_per_method_and_slow_ones_kept_once() {
        let t = Telemetry::new("node-1", &["node-1".into(), "node-2".into()]);
        t.set_slow_threshold_ms(100);
        {
            let _id = request_id::Scope::enter("req-1");
            t.record_call("g:a:1.0.0", "slow", Duration::from_millis(150), 200);
        }
        t.record_call("g:a:1.0.0", "fast", Duration::from_micros(300), 200);
        t.record_call("g:a:1.0.0", "fast", Duration::from_micros(500), 503);
        let s = t.summarise(figures(1_000));
        assert_eq!((s.invocations.calls, s.invocations.errors), (3, 1));
        let fast = s.methods.iter().find(|m| m.method == "fast").unwrap();
        assert_eq!((fast.calls, fast.errors, fast.latency().max()), (2, 1, 500));
        assert_eq!(s.slow.len(), 1);
        assert_eq!((s.slow[0].request_id.as_str(), s.slow[0].method.as_str()), ("req-1", "slow"));
        assert_eq!(s.connections.cluster, 2);
        let next = t.summarise(figures(2_000));
        assert!(next.slow.is_empty(), "a slow call goes out once");
        assert_eq!(next.methods.len(), 2, "method counters are cumulative");
        assert_eq!(t.board().slow(10).len(), 1);
        assert!(telemetry::decode(&next.encode()).is_ok());
    }

    #[test]
    fn slow_calls_waiting_for_a_summary_are_bounded() {
        let t = Telemetry::new("node-1", &["node-1".into()]);
        t.set_slow_threshold_ms(1);
        for _ in 0..(SLOW_PER_SUMMARY_MAX + 5) {
            t.record_call("g:a:1.0.0", "m", Duration::from_millis(2), 200);
        }
        assert_eq!(t.summarise(figures(1)).slow.len(), SLOW_PER_SUMMARY_MAX);
    }

    #[test]
    fn tracked_methods_are_bounded_and_a_summary_carries_the_busiest() {
        let t = Telemetry::new("node-1", &["node-1".into()]);
        for i in 0..(METHODS_TRACKED_MAX + 10) {
            t.record_call("g:a:1.0.0", &format!("m{i}"), Duration::from_micros(10), 200);
        }
        t.record_call("g:a:1.0.0", "m7", Duration::from_micros(10), 200);
        assert_eq!(t.calls.lock().tracked, METHODS_TRACKED_MAX);
        let s = t.summarise(figures(1));
        assert_eq!(s.invocations.calls, METHODS_TRACKED_MAX as u64 + 11);
        assert_eq!(s.methods.len(), METHODS_MAX);
        assert_eq!((s.methods[0].method.as_str(), s.methods[0].calls), ("m7", 2), "the busiest first");
    }

    #[test]
    fn names_past_the_summary_bounds_count_in_the_totals_only() {
        let t = Telemetry::new("node-1", &["node-1".into()]);
        t.set_slow_threshold_ms(1);
        t.record_call("g:a:1.0.0", &"m".repeat(NAME_BYTES_MAX + 1), Duration::from_millis(5), 200);
        let s = t.summarise(figures(1));
        assert_eq!((s.invocations.calls, s.methods.len(), s.slow.len()), (1, 0, 0));
        assert_eq!(t.board().own().map(|own| own.time_ms), Some(1), "the summary stays acceptable");
    }
}
