//! What the data plane says about its own health: whether the app port can serve, and which slice
//! instances are saturated (every permit of their bulkhead held by a call past its deadline).
//!
//! A [`HealthWatch`] thread looks every [`WATCH_EVERY`]:
//! - the app port's serving flag (read by `/health/ready`) is true only while the port has at least one
//!   live handler thread (whether it accepts connections is the server's own flag);
//! - an instance that becomes saturated, or recovers, is an event: a log line, and a [`SliceHealth`]
//!   handed to the sink (the node runtime records it in the replicated store, where `/api/slices` reads
//!   it); while it stays saturated the sink gets it again every [`REASSERT_EVERY`], so a reader can
//!   tell a live report from one left behind by a node that died.
//!
//! Invariants: the sink is called from this thread only, never with the bulkheads' locks held; the
//! thread ends when the watch is stopped (at most one period later).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dispatch::Dispatcher;

/// How often the watch looks.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often a saturated instance is reported again.
pub const REASSERT_EVERY: Duration = Duration::from_secs(10);

/// A saturation report about one artifact's instance on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceHealth {
    pub node: String,
    pub artifact: String,
    /// False: the instance serves again (or is gone).
    pub saturated: bool,
    pub stuck: usize,
    pub permits: usize,
}

/// Where saturation reports go.
pub type HealthSink = Arc<dyn Fn(&SliceHealth) + Send + Sync>;
/// The sink, set once the node runtime can take reports.
type SinkSlot = Arc<parking_lot::Mutex<Option<HealthSink>>>;

/// Inputs the watch reads the port's state from.
pub(super) struct PortProbe {
    /// Live handler threads now.
    pub live_handlers: Box<dyn Fn() -> usize + Send>,
}

/// The running watch; stops when dropped.
pub(super) struct HealthWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ready: Arc<AtomicBool>,
    sink: SinkSlot,
}

impl HealthWatch {
    pub fn start(dispatcher: Arc<Dispatcher>, probe: PortProbe) -> Result<HealthWatch, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(true));
        let sink: SinkSlot = Arc::default();
        let (thread_stop, thread_ready, thread_sink) = (Arc::clone(&stop), Arc::clone(&ready), Arc::clone(&sink));
        let thread = std::thread::Builder::new()
            .name("app-health".into())
            .spawn(move || watch(&dispatcher, &probe, &thread_sink, &thread_stop, &thread_ready))
            .map_err(|e| format!("cannot start the app port's health watch: {e}"))?;
        Ok(HealthWatch { stop, thread: Some(thread), ready, sink })
    }

    /// Where saturation reports go from now on.
    pub fn set_sink(&self, sink: HealthSink) {
        *self.sink.lock() = Some(sink);
    }

    /// True while the port has a live handler.
    pub fn serving_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(dispatcher: &Dispatcher, probe: &PortProbe, sink: &SinkSlot, stop: &AtomicBool, ready: &AtomicBool) {
    // Saturated artifacts, with when they were last reported.
    let mut saturated: BTreeMap<String, Instant> = BTreeMap::new();
    let mut was_ready = true;
    while !stop.load(Ordering::SeqCst) {
        let live = (probe.live_handlers)();
        let now_ready = live > 0;
        if now_ready != was_ready {
            if now_ready {
                log::info!("app port: serving again ({live} live handlers)");
            } else {
                log::warn!("app port: cannot serve: no live handler thread");
            }
            was_ready = now_ready;
        }
        ready.store(now_ready, Ordering::SeqCst);
        let views = dispatcher.bulkheads().views();
        let mut seen = Vec::new();
        for view in views.iter().filter(|v| v.saturated) {
            seen.push(view.artifact.clone());
            let due = saturated.get(&view.artifact).is_none_or(|at| at.elapsed() >= REASSERT_EVERY);
            if !due {
                continue;
            }
            if !saturated.contains_key(&view.artifact) {
                log::warn!(
                    "slice {} is saturated: all {} of its calls in flight are stuck past their deadline; its calls \
                     are refused until they return",
                    view.artifact,
                    view.stuck
                );
            }
            saturated.insert(view.artifact.clone(), Instant::now());
            report(dispatcher, sink, &view.artifact, true, view.stuck, view.permits);
        }
        let recovered: Vec<String> = saturated.keys().filter(|a| !seen.contains(a)).cloned().collect();
        for artifact in recovered {
            saturated.remove(&artifact);
            let view = views.iter().find(|v| v.artifact == artifact);
            log::info!("slice {artifact} serves again: its stuck calls returned");
            report(dispatcher, sink, &artifact, false, view.map_or(0, |v| v.stuck), view.map_or(0, |v| v.permits));
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

fn report(dispatcher: &Dispatcher, sink: &SinkSlot, artifact: &str, saturated: bool, stuck: usize, permits: usize) {
    let sink = sink.lock().clone();
    if let Some(sink) = sink {
        let node = dispatcher.node_id.clone();
        sink(&SliceHealth { node, artifact: artifact.to_owned(), saturated, stuck, permits });
    }
}
