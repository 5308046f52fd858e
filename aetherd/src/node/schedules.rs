//! The scheduler's shell: runs `control::schedule`'s decisions from the event loop and makes the calls.
//!
//! Every pass (each tick, while this node has quorum and is caught up):
//! - every node writes the task records of the slices it has loaded (`control::schedule::spec_write`), about
//!   once a second;
//! - the leader (the node the leader record names, at the version `managers::Leader` found it leading) removes
//!   records whose slice has no target, and for each task submits what `control::schedule::decide` says, every
//!   write guarded by the leader record's version. A run is a compare-and-set that names the attempt (a token
//!   unique to this process);
//! - every node calls the method of each run whose applied record shows one of its own tokens, on a thread of
//!   its own (never the loop), through `Dispatcher::call_any`, and writes the outcome back by compare-and-set.
//!
//! Invariants: a call is made only for a run record this process's write put in the store, once per token; at
//! most [`RUNS_IN_FLIGHT_MAX`] calls run at once (a run over the bound waits for a later pass, still recorded);
//! an attempt not seen applied within [`ATTEMPT_PENDING_MS`] lets the task be decided again (the store accepts
//! at most one of two attempts at one version, and whichever applies is called, as its token is still known).

use super::Node;
use crate::app::Dispatcher;
use control::records::Record;
use control::schedule::{self, Decision, TaskRecord};
use control::KvWrite;
use kvstore::{AetherKey, ArtifactBase, Revision, Store};
use log::{debug, info, warn};
use net::Ctx;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Most scheduled calls this node runs at once.
pub const RUNS_IN_FLIGHT_MAX: usize = 32;
/// How long a submitted run may stay unseen in the store before the task is decided again.
const ATTEMPT_PENDING_MS: u64 = 5_000;
/// How long an unseen attempt's token is remembered (its write may still apply, and must then be called).
const ATTEMPT_FORGET_MS: u64 = 60_000;
/// Deadline of one scheduled call.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// How often the spec writes are looked at.
const SPEC_EVERY: Duration = Duration::from_secs(1);
/// Most outcome writes kept waiting (each is tried a few times).
const OUTCOMES_MAX: usize = 1024;
const OUTCOME_TRIES_MAX: u32 = 10;

/// Where the scheduler's calls go: the app port's dispatcher, set once the app port runs.
pub type ScheduledCalls = Arc<OnceLock<Arc<Dispatcher>>>;

struct Attempt {
    key: AetherKey,
    submitted: Instant,
}

struct Finished {
    key: AetherKey,
    token: String,
    status: Option<u16>,
    duration_ms: u64,
    tries: u32,
}

/// The scheduler's state on one node.
pub struct Scheduler {
    calls: ScheduledCalls,
    /// Runs this process submitted and has not called, by token.
    attempts: BTreeMap<String, Attempt>,
    seq: u64,
    in_flight: Arc<AtomicUsize>,
    done_tx: mpsc::Sender<Finished>,
    done_rx: mpsc::Receiver<Finished>,
    outcomes: Vec<Finished>,
    spec_at: Option<Instant>,
    /// This process's start (wall ms), part of every token so a restarted node never reuses one.
    life_ms: u64,
}

impl Scheduler {
    pub fn new(calls: ScheduledCalls) -> Scheduler {
        let (done_tx, done_rx) = mpsc::channel();
        Scheduler {
            calls,
            attempts: BTreeMap::new(),
            seq: 0,
            in_flight: Arc::default(),
            done_tx,
            done_rx,
            outcomes: Vec::new(),
            spec_at: None,
            life_ms: crate::managers::wall_ms(),
        }
    }
}

fn entries(store: &Store) -> Vec<(AetherKey, Revision, TaskRecord)> {
    store
        .list("schedules/")
        .filter_map(|e| {
            let record = TaskRecord::decode(e.value()).map_err(|err| debug!("{}: {err}", e.key())).ok()?;
            Some((e.key().clone(), e.version(), record))
        })
        .collect()
}

impl Node {
    /// One scheduler pass; see the module documentation.
    pub(super) fn tick_schedules(&mut self, ctx: &mut Ctx<'_>) {
        let writes = self.schedule_writes();
        for write in writes {
            let command = write.to_command();
            self.drive(ctx, |r| r.submit_internal(&command));
        }
    }

    fn schedule_writes(&mut self) -> Vec<KvWrite> {
        let (Some(r), Some(d)) = (self.replication.as_ref(), self.deployment.as_ref()) else { return Vec::new() };
        if !self.membership.has_quorum() || !r.caught_up() {
            return Vec::new();
        }
        let store = r.store();
        let now_ms = crate::managers::wall_ms();
        let me = d.me.to_string();
        let s = &mut self.schedules;
        let mut writes = Vec::new();
        if s.spec_at.is_none_or(|at| at.elapsed() >= SPEC_EVERY) {
            s.spec_at = Some(Instant::now());
            writes.extend(spec_writes(store, d.deployer.infos(), now_ms));
        }
        // Lead only at the version the leadership pass found, and while the store still shows it.
        let leader = store.get(&AetherKey::ClusterLeader).map(|e| e.version());
        let leading = d.leader.lead_version().filter(|v| leader == Some(*v));
        s.drain_finished();
        let idle = s.attempts.is_empty() && s.outcomes.is_empty() && s.in_flight.load(Ordering::Relaxed) == 0;
        if leading.is_none() && idle {
            // A follower with no run of its own to call or report has nothing to read.
            return writes;
        }
        let records = entries(store);
        s.start_runs(&records);
        writes.extend(s.outcome_writes(&records));
        if let Some(version) = leading {
            let guard = |w: KvWrite| w.guarded(AetherKey::ClusterLeader, Some(version));
            writes.extend(s.leader_writes(store, &records, &me, now_ms).into_iter().map(guard));
        }
        writes
    }
}

/// The records the loaded slices declare, where the store differs.
fn spec_writes(store: &Store, infos: &BTreeMap<kvstore::Artifact, control::SliceInfo>, now_ms: u64) -> Vec<KvWrite> {
    let mut writes = Vec::new();
    for (artifact, info) in infos {
        for spec in &info.schedules {
            let key = AetherKey::Schedule { base: artifact.base().clone(), task: spec.task.clone() };
            let current = store.get(&key).map(|e| (TaskRecord::decode(e.value()), e.version()));
            let current = match current {
                Some((Ok(record), version)) => Some((record, version)),
                Some((Err(_), _)) => continue,
                None => None,
            };
            let current = current.as_ref().map(|(record, version)| (record, *version));
            writes.extend(schedule::spec_write(key, current, artifact, spec, now_ms));
        }
    }
    writes
}

impl Scheduler {
    fn token(&mut self, me: &str) -> String {
        self.seq += 1;
        format!("{me}-{}-{}", self.life_ms, self.seq)
    }

    /// The leader's writes: stale records removed, and each task's decision.
    fn leader_writes(
        &mut self,
        store: &Store,
        records: &[(AetherKey, Revision, TaskRecord)],
        me: &str,
        now_ms: u64,
    ) -> Vec<KvWrite> {
        let targets: BTreeSet<ArtifactBase> = store
            .list("targets/")
            .filter_map(|e| match e.key() {
                AetherKey::Target { artifact } => Some(artifact.base().clone()),
                _ => None,
            })
            .collect();
        let pending: Vec<AetherKey> = self
            .attempts
            .values()
            .filter(|a| a.submitted.elapsed() < Duration::from_millis(ATTEMPT_PENDING_MS))
            .map(|a| a.key.clone())
            .collect();
        let mut writes = Vec::new();
        let mut runs = Vec::new();
        for (key, version, record) in records {
            let AetherKey::Schedule { base, .. } = key else { continue };
            if !targets.contains(base) {
                writes.push(schedule::stale_removal(key.clone(), *version));
                continue;
            }
            if pending.contains(key) {
                continue;
            }
            let endpoints = format!("endpoints/{}/{}/", record.artifact, record.method);
            let has_instance = store.list(&endpoints).next().is_some();
            let token = self.token(me);
            match schedule::decide(record, now_ms, has_instance, me, &token) {
                Decision::Wait { .. } => {}
                Decision::Write(next) => {
                    writes.push(KvWrite::Set { key: key.clone(), expected: Some(*version), value: next.encode() })
                }
                Decision::Run(next) => {
                    runs.push((key.clone(), token));
                    writes.push(KvWrite::Set { key: key.clone(), expected: Some(*version), value: next.encode() });
                }
            }
        }
        for (key, token) in runs {
            self.attempts.insert(token, Attempt { key, submitted: Instant::now() });
        }
        writes
    }

    /// Calls every run whose applied record shows a token of ours.
    fn start_runs(&mut self, records: &[(AetherKey, Revision, TaskRecord)]) {
        // A token whose run the applied store shows, still not started (every call slot busy, no dispatcher
        // yet), is kept however long that takes: the run is recorded, so it must be called. Only tokens of
        // writes that never applied are forgotten.
        let recorded: std::collections::HashSet<&str> = records
            .iter()
            .filter_map(|(_, _, r)| r.last_run.as_ref())
            .filter(|last| last.outcome == schedule::Outcome::Running)
            .map(|last| last.token.as_str())
            .collect();
        self.attempts.retain(|token, a| {
            recorded.contains(token.as_str()) || a.submitted.elapsed() < Duration::from_millis(ATTEMPT_FORGET_MS)
        });
        for (key, _, record) in records {
            let Some(last) = record.last_run.as_ref() else { continue };
            if last.outcome != schedule::Outcome::Running || !self.attempts.contains_key(&last.token) {
                continue;
            }
            if self.in_flight.load(Ordering::Relaxed) >= RUNS_IN_FLIGHT_MAX {
                warn!("{key}: {RUNS_IN_FLIGHT_MAX} scheduled calls already running; the run starts later");
                return;
            }
            let Some(dispatcher) = self.calls.get().cloned() else { return };
            self.attempts.remove(&last.token);
            self.spawn_call(dispatcher, key.clone(), record.clone(), last.clone());
        }
    }

    fn spawn_call(&self, dispatcher: Arc<Dispatcher>, key: AetherKey, record: TaskRecord, run: schedule::LastRun) {
        let (in_flight, done) = (Arc::clone(&self.in_flight), self.done_tx.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new().name("scheduled-run".into()).spawn({
            let in_flight = Arc::clone(&in_flight);
            move || {
                let started = Instant::now();
                let status = call(&dispatcher, &key, &record, &run);
                let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                match status {
                    Some(s) if s < 400 => debug!("{key}: the run for {} answered {s} in {duration_ms} ms", run.due_ms),
                    _ => info!("{key}: the run for {} failed: {status:?} after {duration_ms} ms", run.due_ms),
                }
                let _ = done.send(Finished { key, token: run.token, status, duration_ms, tries: 0 });
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        });
        if let Err(e) = spawned {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            warn!("a scheduled run could not start a thread: {e}");
        }
    }

    /// Takes the finished calls' results (a call sends its result before it stops counting as in flight).
    fn drain_finished(&mut self) {
        while let Ok(finished) = self.done_rx.try_recv() {
            if self.outcomes.len() < OUTCOMES_MAX {
                self.outcomes.push(finished);
            } else {
                warn!("{}: {OUTCOMES_MAX} outcomes already waiting; this one is not written", finished.key);
            }
        }
    }

    /// The outcome writes of finished calls, each by compare-and-set on the record that still shows its run.
    fn outcome_writes(&mut self, records: &[(AetherKey, Revision, TaskRecord)]) -> Vec<KvWrite> {
        let mut writes = Vec::new();
        self.outcomes.retain_mut(|f| {
            let Some((_, version, record)) = records.iter().find(|(k, _, _)| *k == f.key) else { return false };
            let Some(next) = schedule::with_outcome(record, &f.token, f.status, f.duration_ms) else { return false };
            f.tries += 1;
            writes.push(KvWrite::Set { key: f.key.clone(), expected: Some(*version), value: next.encode() });
            f.tries < OUTCOME_TRIES_MAX
        });
        writes
    }
}

/// Makes one run's call; its HTTP status, `None` when it could not be made.
fn call(dispatcher: &Dispatcher, key: &AetherKey, record: &TaskRecord, run: &schedule::LastRun) -> Option<u16> {
    let AetherKey::Schedule { task, .. } = key else { return None };
    let path = format!("/schedules/{task}");
    let (due_text, due_ms, run_number) =
        (schedule::rfc3339(run.due_ms), run.due_ms.to_string(), record.runs.to_string());
    let headers = [
        ("X-Aether-Task", task.as_str()),
        ("X-Aether-Scheduled-For", due_text.as_str()),
        ("X-Aether-Scheduled-For-Ms", due_ms.as_str()),
        ("X-Aether-Run", run_number.as_str()),
    ];
    let parts =
        aether_sdk::codec::RequestParts { method: "POST", path: &path, headers: &headers, ..Default::default() };
    let request = match parts.encode() {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!("{key}: the run's request does not encode: {e}");
            return None;
        }
    };
    let call = crate::app::Call {
        artifact: &record.artifact,
        method: &record.method,
        request: request.into(),
        idempotent: false,
        hops: 0,
        deadline: Instant::now() + CALL_DEADLINE,
        request_id: Some(Arc::from(run.token.as_str())),
        caller: None,
        depth: 0,
        pins: dispatcher.entry_pins(),
    };
    Some(dispatcher.call_any(&call).status)
}
