//! This node's hands for deployment: the container work the node deployment manager (`control::node`) asks
//! for, done on worker threads because loading and starting a plugin may block for seconds; the lifecycle
//! settings taken from the environment (the leader's start-failure policy, the slice start timeout); and the
//! routes slices declare, read for the blueprint route check ([`DeclaredRoutes`]).
//!
//! The event loop owns the decisions; this module owns the container state map that feeds them. When the
//! loop starts an action it marks the artifact in progress at once (so `control::node::step` never asks
//! twice), queues the job here, and the result comes back to the loop as a command. [`WORKERS`] threads take
//! jobs in order, skipping jobs of an artifact that already has one running: the jobs of one artifact run
//! one after the other, in order, and a slow step (a drain, a hung `start`) holds up only its own artifact.
//!
//! A slice record may stand for several instances on this node (`copies`, from the blueprint's
//! `max_per_node`): the worker loads that many separate copies of the library, starts and stops them together,
//! and a resize starts or stops copies of a running slice one by one (a stopped copy finishes its calls
//! first; a copy that cannot start is unloaded, and the others serve on). Calls take turns among the ACTIVE
//! copies (the container's pick).
//!
//! Invariants: at most one job per artifact runs at a time, and one artifact's jobs run in the order queued;
//! a job's result always comes back (success or a failure with its reason), so no artifact stays "in progress"
//! forever; the loop never blocks on a job; stopping unloads every slice within a bound, and past it leaves
//! them loaded (the process is about to exit).

mod fetch;

pub use fetch::Provisioner;

use control::cluster::StartPolicy;
use control::node::{ContainerState, NodeAction, Reconfig, Resize, SliceInfo};
use kvstore::Artifact;
use log::{info, warn};
use parking_lot::{Condvar, Mutex};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Worker threads: lifecycle steps of this many artifacts may run at once. They start when jobs wait and end
/// after [`WORKER_IDLE`] without one, so an idle node runs none.
pub const WORKERS: usize = 4;
/// How long a worker waits for a job before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(30);
/// Longest the stop waits for slices to be stopped and unloaded before leaving them loaded.
pub const STOP_UNLOAD_BOUND: Duration = Duration::from_secs(10);

/// Start failures after which the leader quarantines an artifact (default 2).
pub const START_FAILURES_MAX_ENV: &str = "AETHER_START_FAILURES_MAX";
/// Pause after the first start failure of an artifact, in milliseconds; it doubles per failure (default 5000).
pub const START_BACKOFF_ENV: &str = "AETHER_START_BACKOFF_MS";
/// Longest a slice's `start` may take, in milliseconds (default 10000).
pub const START_TIMEOUT_ENV: &str = "AETHER_SLICE_START_TIMEOUT_MS";

/// Lifecycle settings from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub policy: StartPolicy,
    pub start_timeout: Option<Duration>,
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let number = |name: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            let Some(text) = lookup(name) else { return Ok(None) };
            match text.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!("{name}='{text}': expected a whole number from {min} to {max}")),
            }
        };
        let mut policy = StartPolicy::default();
        if let Some(n) = number(START_FAILURES_MAX_ENV, 1, 1000)? {
            policy.failures_max = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = number(START_BACKOFF_ENV, 0, 3_600_000)? {
            policy.backoff_base_ms = ms;
            policy.backoff_max_ms = policy.backoff_max_ms.max(ms);
        }
        let start_timeout = number(START_TIMEOUT_ENV, 100, 600_000)?.map(Duration::from_millis);
        Ok(Settings { policy, start_timeout })
    }
}

/// How a job ended.
#[derive(Debug)]
pub enum JobResult {
    /// The descriptor, and the copies loaded.
    Loaded(SliceInfo, u32),
    /// Started, with the copies that run.
    Active(u32),
    /// A resize to `asked` copies ended with `running` copies, and why not all when one could not start.
    Resized {
        asked: u32,
        running: u32,
        outcome: Result<(), String>,
    },
    Deactivated,
    Unloaded,
    Failed(String),
    /// The running slice's verdict on a new config (`Err`: its refusal).
    Reconfigured {
        config: Map<String, Value>,
        outcome: Result<(), String>,
    },
}

#[derive(Debug)]
pub struct JobDone {
    pub artifact: Artifact,
    pub result: JobResult,
}

/// Jobs waiting, artifacts with a job running, and whether the workers should end.
#[derive(Default)]
struct Queue {
    pending: VecDeque<NodeAction>,
    running: HashSet<Artifact>,
    stopping: bool,
    /// Worker threads alive, and those of them waiting for a job.
    workers: usize,
    idle: usize,
}

struct Jobs {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Jobs {
    /// The next job whose artifact has none running, marked running; `None` once stopping, or when the
    /// worker waited [`WORKER_IDLE`] for one (it then ends, and is no longer counted).
    fn take(&self) -> Option<NodeAction> {
        let mut queue = self.queue.lock();
        loop {
            if queue.stopping {
                queue.workers = queue.workers.saturating_sub(1);
                return None;
            }
            let free = queue.pending.iter().position(|a| !queue.running.contains(artifact_of(a)));
            if let Some(action) = free.and_then(|at| queue.pending.remove(at)) {
                queue.running.insert(artifact_of(&action).clone());
                return Some(action);
            }
            queue.idle += 1;
            let waited = self.wake.wait_for(&mut queue, WORKER_IDLE);
            queue.idle -= 1;
            if waited.timed_out() && !queue.stopping {
                queue.workers = queue.workers.saturating_sub(1);
                return None;
            }
        }
    }

    fn finished(&self, artifact: &Artifact) {
        self.queue.lock().running.remove(artifact);
        self.wake.notify_all();
    }
}

fn artifact_of(action: &NodeAction) -> &Artifact {
    match action {
        NodeAction::Load { artifact, .. }
        | NodeAction::Activate { artifact, .. }
        | NodeAction::Deactivate { artifact }
        | NodeAction::Unload { artifact }
        | NodeAction::Reconfigure { artifact, .. }
        | NodeAction::Resize { artifact, .. } => artifact,
    }
}

/// The loop's side: the state map and the job queue.
pub struct Deployer {
    states: BTreeMap<Artifact, ContainerState>,
    infos: BTreeMap<Artifact, SliceInfo>,
    /// The last config offered to each artifact's running slice, and its verdict once answered.
    reconfigs: BTreeMap<Artifact, Reconfig>,
    /// The copies of each slice loaded.
    copies: BTreeMap<Artifact, u32>,
    /// The last resize asked of each slice, and its outcome once answered.
    resizes: BTreeMap<Artifact, Resize>,
    jobs: Arc<Jobs>,
    workers: Vec<JoinHandle<()>>,
    /// What a new worker thread runs with.
    spawn: Spawn,
    container: Arc<container::Container>,
    policy: StartPolicy,
}

/// What each worker thread gets.
struct Spawn {
    worker: Arc<Worker>,
    done: Arc<dyn Fn(JobDone) + Send + Sync>,
    next: usize,
}

impl Deployer {
    /// Starts the workers; `done` carries each result back to the event loop. With `provision`, a load first
    /// brings the library into the repository from the storage plane when the catalog says it must.
    pub fn start(
        container: Arc<container::Container>,
        policy: StartPolicy,
        provision: Option<Arc<Provisioner>>,
        done: impl Fn(JobDone) + Send + Sync + 'static,
    ) -> Result<Deployer, String> {
        let jobs = Arc::new(Jobs { queue: Mutex::new(Queue::default()), wake: Condvar::new() });
        let instances: Arc<Mutex<HashMap<Artifact, Vec<container::InstanceId>>>> = Arc::default();
        let worker = Arc::new(Worker { container: container.clone(), instances, provision });
        let spawn = Spawn { worker, done: Arc::new(done), next: 0 };
        Ok(Deployer {
            states: BTreeMap::new(),
            infos: BTreeMap::new(),
            reconfigs: BTreeMap::new(),
            copies: BTreeMap::new(),
            resizes: BTreeMap::new(),
            jobs,
            workers: Vec::new(),
            spawn,
            container,
            policy,
        })
    }

    pub fn states(&self) -> &BTreeMap<Artifact, ContainerState> {
        &self.states
    }

    pub fn infos(&self) -> &BTreeMap<Artifact, SliceInfo> {
        &self.infos
    }

    /// What runs besides the lifecycle states, for `control::node::step`.
    pub fn running(&self) -> control::node::Running<'_> {
        control::node::Running { reconfigs: &self.reconfigs, copies: &self.copies, resizes: &self.resizes }
    }

    /// Drops the answered offers for which `recorded(artifact, config)` holds (the slice record shows the
    /// verdict); offers in progress stay.
    pub fn forget_recorded_verdicts(&mut self, recorded: impl Fn(&Artifact, &Map<String, Value>) -> bool) {
        self.reconfigs.retain(|artifact, r| r.outcome.is_none() || !recorded(artifact, &r.config));
    }

    /// The leader's start-failure policy on this node.
    pub fn policy(&self) -> &StartPolicy {
        &self.policy
    }

    /// Marks the artifact in progress and queues the job. A reconfigure leaves the container state as it is
    /// (the slice serves on while it decides) and is remembered as in progress instead.
    pub fn begin(&mut self, action: NodeAction) {
        let (artifact, state) = match &action {
            NodeAction::Reconfigure { artifact, config } => {
                self.reconfigs.insert(artifact.clone(), Reconfig { config: config.clone(), outcome: None });
                return self.queue_job(action);
            }
            // The slice serves on while copies start or stop; the resize is remembered as in progress.
            NodeAction::Resize { artifact, copies, .. } => {
                self.resizes.insert(artifact.clone(), Resize { copies: *copies, outcome: None });
                return self.queue_job(action);
            }
            NodeAction::Load { artifact, .. } => {
                self.resizes.remove(artifact);
                (artifact.clone(), ContainerState::Loading)
            }
            NodeAction::Activate { artifact, .. } => (artifact.clone(), ContainerState::Activating),
            NodeAction::Deactivate { artifact } => (artifact.clone(), ContainerState::Deactivating),
            NodeAction::Unload { artifact } => (artifact.clone(), ContainerState::Unloading),
        };
        self.reconfigs.remove(&artifact);
        self.states.insert(artifact, state);
        self.queue_job(action);
    }

    /// Queues a job, starting a worker when none waits for one and fewer than [`WORKERS`] run.
    fn queue_job(&mut self, action: NodeAction) {
        let start = {
            let mut queue = self.jobs.queue.lock();
            queue.pending.push_back(action);
            let start = queue.idle == 0 && queue.workers < WORKERS && !queue.stopping;
            queue.workers += usize::from(start);
            start
        };
        self.jobs.wake.notify_all();
        if !start {
            return;
        }
        let n = self.spawn.next;
        self.spawn.next += 1;
        let (jobs, done, worker) = (self.jobs.clone(), self.spawn.done.clone(), self.spawn.worker.clone());
        let spawned = std::thread::Builder::new().name(format!("deployer-{n}")).spawn(move || {
            while let Some(action) = jobs.take() {
                let artifact = artifact_of(&action).clone();
                let result = worker.run(action);
                jobs.finished(&artifact);
                done(result);
            }
        });
        self.workers.retain(|w| !w.is_finished());
        match spawned {
            Ok(handle) => self.workers.push(handle),
            Err(e) => {
                // The job waits for a worker the next job may start.
                self.jobs.queue.lock().workers -= 1;
                warn!("cannot start a deployer thread: {e}");
            }
        }
    }

    /// Records a job's result.
    pub fn finish(&mut self, done: JobDone) {
        match done.result {
            JobResult::Loaded(info, copies) => {
                self.infos.insert(done.artifact.clone(), info);
                self.copies.insert(done.artifact.clone(), copies);
                self.states.insert(done.artifact, ContainerState::Loaded);
            }
            JobResult::Resized { asked, running, outcome } => {
                self.copies.insert(done.artifact.clone(), running);
                // Only the answer to the resize still asked for counts (a later one replaced it).
                if let Some(current) = self.resizes.get_mut(&done.artifact).filter(|r| r.copies == asked) {
                    current.outcome = Some(outcome);
                }
            }
            JobResult::Active(copies) => {
                self.copies.insert(done.artifact.clone(), copies);
                self.states.insert(done.artifact, ContainerState::Active);
            }
            JobResult::Deactivated => {
                self.states.insert(done.artifact, ContainerState::Loaded);
            }
            JobResult::Unloaded => {
                self.states.remove(&done.artifact);
                self.infos.remove(&done.artifact);
                self.copies.remove(&done.artifact);
                self.resizes.remove(&done.artifact);
            }
            JobResult::Failed(reason) => {
                self.states.insert(done.artifact, ContainerState::Failed { reason });
            }
            JobResult::Reconfigured { config, outcome } => {
                // Only the verdict on the offer still current counts (a lifecycle step since drops it).
                if let Some(current) = self.reconfigs.get_mut(&done.artifact).filter(|r| r.config == config) {
                    current.outcome = Some(outcome);
                }
            }
        }
    }

    /// Stops the workers (jobs not started are dropped; running ones finish within their step bounds), then
    /// stops and unloads every slice, giving up after `bound`: the process is about to exit, and a slice that
    /// hangs in `stop` must not hold the node past its stop timeout.
    pub fn stop(self, bound: Duration) {
        {
            let mut queue = self.jobs.queue.lock();
            queue.stopping = true;
            queue.pending.clear();
        }
        self.jobs.wake.notify_all();
        let container = self.container.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("slices-stop".into()).spawn(move || {
            for worker in self.workers {
                let _ = worker.join();
            }
            container.shutdown();
            let _ = tx.send(());
        });
        match spawned {
            Ok(_) => {
                if rx.recv_timeout(bound).is_err() {
                    warn!("slices not stopped and unloaded within {bound:?}; leaving them loaded");
                }
            }
            Err(e) => warn!("cannot start the slice stop thread ({e}); leaving slices loaded"),
        }
    }
}

/// A worker thread's side: the container and the instances (copies) of each artifact (shared by the workers;
/// an artifact's entry is only touched by the one job of that artifact running).
struct Worker {
    container: Arc<container::Container>,
    instances: Arc<Mutex<HashMap<Artifact, Vec<container::InstanceId>>>>,
    provision: Option<Arc<Provisioner>>,
}

impl Worker {
    fn run(&self, action: NodeAction) -> JobDone {
        let (artifact, result) = match action {
            NodeAction::Load { artifact, config, copies } => {
                let result = self.load(&artifact, &config, copies);
                (artifact, result)
            }
            NodeAction::Resize { artifact, copies, config } => {
                let result = self.resize(&artifact, &config, copies);
                (artifact, result)
            }
            NodeAction::Activate { artifact, config } => {
                let result = self.activate(&artifact, &config);
                (artifact, result)
            }
            NodeAction::Deactivate { artifact } => {
                let result = self.deactivate(&artifact);
                (artifact, result)
            }
            NodeAction::Unload { artifact } => {
                let result = self.unload(&artifact);
                (artifact, result)
            }
            NodeAction::Reconfigure { artifact, config } => {
                let outcome = self.container.reconfigure(&artifact.to_string(), config_pairs(&config));
                (artifact, JobResult::Reconfigured { config, outcome })
            }
        };
        match &result {
            JobResult::Failed(reason) => warn!("slice {artifact}: {reason}"),
            other => info!("slice {artifact}: {other:?}"),
        }
        JobDone { artifact, result }
    }

    fn load(&self, artifact: &Artifact, config: &Map<String, Value>, copies: u32) -> JobResult {
        if let Err(reason) = self.provision.as_ref().map_or(Ok(()), |p| p.ensure(artifact)) {
            return JobResult::Failed(reason);
        }
        let old = self.instances.lock().remove(artifact).unwrap_or_default();
        for id in old {
            let _ = self.container.unload(id);
        }
        // The first copy decides; a later one that cannot load leaves the record with fewer, which the
        // resize after ACTIVE asks for again and names.
        let mut loaded = Vec::new();
        for n in 0..copies.max(1) {
            match self.container.load(artifact, config_pairs(config)) {
                Ok(id) => loaded.push(id),
                Err(e) if n == 0 => return JobResult::Failed(e.to_string()),
                Err(e) => {
                    warn!("slice {artifact}: copy {} of {copies} did not load: {e}", n + 1);
                    break;
                }
            }
        }
        let first = loaded.first().copied();
        let count = u32::try_from(loaded.len()).unwrap_or(u32::MAX);
        self.instances.lock().insert(artifact.clone(), loaded);
        let Some(handle) = first.and_then(|id| self.container.handle(id)) else {
            return JobResult::Failed("the instance vanished after loading".into());
        };
        let info = handle.info();
        let routes = info.routes.iter().map(|r| (r.http_method.as_str(), r.path.as_str(), r.method.as_str()));
        let subscriptions = info.subscriptions.iter().map(|s| (s.topic.as_str(), s.method.as_str(), s.delivery));
        let schedules = info.schedules.iter().map(|s| (s.name.as_str(), s.method.as_str(), s.timing.clone(), s.missed));
        // A cron expression or time zone the scheduler cannot use fails the slice here, with the reason.
        let bad_timing = info.schedules.iter().find_map(|s| {
            control::schedule::check_timing(&s.timing).err().map(|e| format!("schedule `{}`: {e}", s.name))
        });
        if let Some(reason) = bad_timing {
            return JobResult::Failed(format!("descriptor declares a task that cannot run: {reason}"));
        }
        let parsed = SliceInfo::parse(routes, info.methods.iter().map(String::as_str))
            .and_then(|parsed| parsed.with_messaging(subscriptions, schedules, info.single_active));
        match parsed {
            Ok(info) => JobResult::Loaded(info, count),
            Err(e) => JobResult::Failed(format!("descriptor does not fit the control plane: {e}")),
        }
    }

    fn activate(&self, artifact: &Artifact, config: &Map<String, Value>) -> JobResult {
        let copies = self.copies(artifact);
        if copies.is_empty() {
            return JobResult::Failed("not loaded".into());
        }
        // As for loading: the first copy decides, a later one that cannot start is unloaded.
        for (n, id) in copies.into_iter().enumerate() {
            match self.start(id, config) {
                Ok(()) => {}
                Err(reason) if n == 0 => return JobResult::Failed(reason),
                Err(reason) => {
                    warn!("slice {artifact}: copy {} did not start: {reason}", n + 1);
                    self.drop_copy(artifact, id);
                    let _ = self.container.unload(id);
                }
            }
        }
        JobResult::Active(u32::try_from(self.copies(artifact).len()).unwrap_or(u32::MAX))
    }

    fn start(&self, id: container::InstanceId, config: &Map<String, Value>) -> Result<(), String> {
        self.container.set_config(id, config_pairs(config)).map_err(|e| e.to_string())?;
        self.container.activate(id).map_err(|e| e.to_string())
    }

    /// Stops every copy; the first failure is the result, and the other copies are stopped all the same.
    fn deactivate(&self, artifact: &Artifact) -> JobResult {
        let copies = self.copies(artifact);
        if copies.is_empty() {
            return JobResult::Failed("not loaded".into());
        }
        let failures = copies.into_iter().filter_map(|id| self.container.deactivate(id).err());
        match failures.map(|e| e.to_string()).next() {
            None => JobResult::Deactivated,
            Some(reason) => JobResult::Failed(reason),
        }
    }

    /// Starts new copies (loaded from the library, with the record's config) or stops and unloads the newest
    /// ones until `asked` run. A copy that cannot start is unloaded, the others serve on, and the outcome says
    /// why.
    fn resize(&self, artifact: &Artifact, config: &Map<String, Value>, asked: u32) -> JobResult {
        let wanted = usize::try_from(asked.max(1)).unwrap_or(usize::MAX);
        let ended = |running: usize, outcome: Result<(), String>| JobResult::Resized {
            asked,
            running: u32::try_from(running).unwrap_or(u32::MAX),
            outcome,
        };
        loop {
            let running = self.copies(artifact);
            if running.is_empty() {
                return ended(0, Err("not loaded".into()));
            }
            if running.len() == wanted {
                return ended(running.len(), Ok(()));
            }
            if let (true, Some(&id)) = (running.len() > wanted, running.last()) {
                self.drop_copy(artifact, id);
                let _ = self.container.deactivate(id);
                if let Err(e) = self.container.unload(id) {
                    warn!("slice {artifact}: unloading a copy left the library mapped: {e}");
                }
                continue;
            }
            let id = match self.container.load(artifact, config_pairs(config)) {
                Ok(id) => id,
                Err(e) => return ended(running.len(), Err(format!("copy {} of {asked}: {e}", running.len() + 1))),
            };
            if let Err(reason) = self.start(id, config) {
                let _ = self.container.unload(id);
                return ended(running.len(), Err(format!("copy {} of {asked}: {reason}", running.len() + 1)));
            }
            self.instances.lock().entry(artifact.clone()).or_default().push(id);
        }
    }

    fn drop_copy(&self, artifact: &Artifact, id: container::InstanceId) {
        if let Some(copies) = self.instances.lock().get_mut(artifact) {
            copies.retain(|c| *c != id);
        }
    }

    fn copies(&self, artifact: &Artifact) -> Vec<container::InstanceId> {
        self.instances.lock().get(artifact).cloned().unwrap_or_default()
    }

    fn unload(&self, artifact: &Artifact) -> JobResult {
        let removed = self.instances.lock().remove(artifact).unwrap_or_default();
        for id in removed {
            if matches!(self.container.state(id), Some((container::SliceState::Active, _))) {
                let _ = self.container.deactivate(id);
            }
            if let Err(e) = self.container.unload(id) {
                warn!("slice {artifact}: unload left the library mapped: {e}");
            }
        }
        JobResult::Unloaded
    }
}

/// Most artifacts whose declared routes [`DeclaredRoutes`] remembers; past it, it starts over.
const DECLARED_ROUTES_KEPT_MAX: usize = 1024;

/// The library file's size and modification time: a changed file is read again.
type FileStamp = (u64, Option<std::time::SystemTime>);
/// `(HTTP method, path pattern)` of each route a descriptor declares.
type Routes = Vec<(String, String)>;

/// The routes slices declare, for the management API's blueprint route check: read by loading the library
/// into the container without starting it (nothing of the slice runs but what loading a library runs, as
/// for any deployment), taking the routes from its checked descriptor, and unloading it. Kept per artifact
/// and library file, so a blueprint post loads each library at most once while it is unchanged.
pub struct DeclaredRoutes {
    container: Arc<container::Container>,
    repository: std::path::PathBuf,
    kept: Mutex<HashMap<Artifact, (FileStamp, Routes)>>,
}

impl DeclaredRoutes {
    pub fn new(container: Arc<container::Container>, repository: std::path::PathBuf) -> DeclaredRoutes {
        DeclaredRoutes { container, repository, kept: Mutex::default() }
    }

    /// `(HTTP method, path pattern)` of every route the artifact's descriptor declares.
    pub fn routes(&self, artifact: &Artifact) -> Result<Routes, String> {
        let path = self.repository.join(artifact.repository_path());
        let meta = std::fs::metadata(&path).map_err(|_| format!("{artifact} is not in this node's repository"))?;
        let stamp = (meta.len(), meta.modified().ok());
        if let Some((kept_stamp, routes)) = self.kept.lock().get(artifact) {
            if *kept_stamp == stamp {
                return Ok(routes.clone());
            }
        }
        let id = self.container.load(artifact, Vec::new()).map_err(|e| e.to_string())?;
        let routes = self.container.handle(id).map(|handle| {
            let declared = handle.info().routes.iter();
            declared.map(|r| (r.http_method.clone(), r.path.clone())).collect::<Vec<_>>()
        });
        if let Err(e) = self.container.unload(id) {
            warn!("slice {artifact}: unloading after reading its routes: {e}");
        }
        let routes = routes.ok_or_else(|| "the instance vanished after loading".to_owned())?;
        let mut kept = self.kept.lock();
        if kept.len() >= DECLARED_ROUTES_KEPT_MAX {
            kept.clear();
        }
        kept.insert(artifact.clone(), (stamp, routes.clone()));
        Ok(routes)
    }
}

/// Slice config values as the container takes them: strings as they are, other JSON as its text.
fn config_pairs(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let pairs: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| pairs.get(name).cloned())
    }

    #[test]
    fn lifecycle_settings_default_and_parse() {
        assert_eq!(settings(&[]).unwrap(), Settings { policy: StartPolicy::default(), start_timeout: None });
        let set = settings(&[(START_FAILURES_MAX_ENV, "3"), (START_BACKOFF_ENV, "250"), (START_TIMEOUT_ENV, "1500")])
            .unwrap();
        assert_eq!((set.policy.failures_max, set.policy.backoff_base_ms), (3, 250));
        assert_eq!(set.start_timeout, Some(Duration::from_millis(1500)));
        for bad in [(START_FAILURES_MAX_ENV, "0"), (START_BACKOFF_ENV, "soon"), (START_TIMEOUT_ENV, "5")] {
            let error = settings(&[bad]).unwrap_err();
            assert!(error.starts_with(bad.0), "{error}");
        }
    }

    #[test]
    fn one_artifacts_jobs_wait_for_each_other_but_not_for_other_artifacts() {
        let jobs = Jobs { queue: Mutex::new(Queue::default()), wake: Condvar::new() };
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        let b = Artifact::parse("g:b:1.0.0").unwrap();
        {
            let mut queue = jobs.queue.lock();
            queue.pending.push_back(NodeAction::Deactivate { artifact: a.clone() });
            queue.pending.push_back(NodeAction::Unload { artifact: a.clone() });
            queue.pending.push_back(NodeAction::Load { artifact: b.clone(), config: Map::new(), copies: 1 });
        }
        assert_eq!(jobs.take(), Some(NodeAction::Deactivate { artifact: a.clone() }));
        // `a` is busy: its Unload waits, and `b` goes first.
        assert_eq!(jobs.take(), Some(NodeAction::Load { artifact: b.clone(), config: Map::new(), copies: 1 }));
        jobs.finished(&a);
        assert_eq!(jobs.take(), Some(NodeAction::Unload { artifact: a }));
        jobs.queue.lock().stopping = true;
        assert_eq!(jobs.take(), None);
    }
}
