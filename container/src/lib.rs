//! container: loading, checking, starting, calling and unloading slice libraries on one node.
//!
//! A slice artifact `group:artifact:version` resolves to a file in a Maven-layout repository
//! folder. [`Container::load`] checks it against the checksum file beside it (and its signature, when
//! the config trusts keys; see [`integrity`]), writes the checked bytes to a private copy under a unique
//! name in the work folder (so two versions, or two instances of one version, are separate libraries
//! with separate state), loads that copy, and checks its ABI version and descriptor. [`Container::activate`] runs the slice's `start`, [`Container::deactivate`] its
//! `stop`, [`Container::unload`] closes the library (the steps are in the `lifecycle` module). Each step
//! runs with a timeout; a step that fails or times out leaves the instance FAILED with a reason, and the
//! node goes on. Steps of one instance never overlap; steps of different instances run side by side.
//!
//! Calls: [`SliceHandle::call`] runs a call on the caller's thread; [`Container::call_inline_in`] does
//! too, with a [`CallContext`] (deadline, hops, request id, caller, depth) the slice can read and its
//! nested calls carry on, leaving the deadline to the caller to enforce; [`Container::call_pooled`] runs
//! it on the worker pool and answers [`CallError::DeadlineExceeded`] when the slice takes too long (the
//! stuck worker is replaced). Slice-to-slice calls made through the host callbacks run inline on the
//! calling worker, so they never wait for a free worker: a pool of one serves `orders -> inventory +
//! pricing` (a call with a timeout of its own runs on the pool instead). A nested call whose callee has no
//! instance here goes to the node's [`RemoteCall`] hook, when one is set (see [`remote`]), with the
//! outer call's deadline. A slice's answer (any HTTP status, header fields, body) is checked as it is
//! taken back; a slice's panic is logged here with the node, artifact and request id.
//!
//! Also per instance: the slice's cluster state (`ctx.kv()`, through the [`state::SliceState`] the node
//! installs with [`Container::set_slice_state`]; see `host_kv`), and live config
//! ([`Container::reconfigure`], which the slice may refuse).
//!
//! Invariants: no panic crosses the library boundary in either direction; a library is closed only
//! when no code can be running in it, threads the slice started included (otherwise it is leaked, and
//! the log says so); lifecycle
//! transitions follow [`SliceState::can_become`] (the lifecycle shared with the control plane, in `vocab`).

mod error;
mod host;
mod host_kv;
mod instance;
pub mod integrity;
mod library;
mod lifecycle;
pub mod pool;
pub mod publish;
pub mod remote;
pub mod state;
mod step;

pub use error::{CallError, ContainerError};
pub use host::CALL_DEPTH_MAX;
pub use host_kv::KV_DEADLINE_DEFAULT;
pub use integrity::{IntegrityError, TrustedKeys};
pub use library::{RouteInfo, ScheduleInfo, SliceInfo, SubscriptionInfo};
pub use lifecycle::SLICE_THREADS_WAIT;
pub use pool::{PoolConfig, PoolStats};
pub use remote::{CallContext, RemoteCall};
pub use state::{SliceEntry, StateError};
pub use vocab::SliceState;
pub use vocab::{Artifact, ParseError};
pub use vocab::{Delivery, MissedRuns, Timing};

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aether_sdk::Response;
use parking_lot::RwLock;

use instance::Instance;
use pool::{PoolError, WorkerPool};

/// Identifies one loaded instance on this node (never reused while the container lives).
pub type InstanceId = u64;

/// Timeout of each lifecycle step.
#[derive(Clone, Debug)]
pub struct StepTimeouts {
    pub load: Duration,
    pub start: Duration,
    /// How long deactivation waits for calls in flight to finish.
    pub drain: Duration,
    pub stop: Duration,
    pub unload: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        StepTimeouts {
            load: Duration::from_secs(10),
            start: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            stop: Duration::from_secs(10),
            unload: Duration::from_secs(10),
        }
    }
}

/// Default copy folders are `{temp}/aether-slices-{pid}-{n}`; only those are removed when the container goes.
const TEMP_WORK_DIR_PREFIX: &str = "aether-slices-";

/// How a container is set up.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// Root of the Maven-layout repository artifacts are resolved in.
    pub repo: PathBuf,
    /// Where the private copies are made (each is deleted as soon as it is loaded). Created with mode
    /// 0700 when missing; [`Container::new`] refuses a symlink, a folder of another user, or one that
    /// group or others can write. A node uses `{data_dir}/loaded`.
    pub work_dir: PathBuf,
    /// Public keys whose signatures are accepted; when not empty, only signed libraries are loaded.
    pub trusted_keys: TrustedKeys,
    /// This node's id, given to slices.
    pub node_id: String,
    pub pool: PoolConfig,
    pub timeouts: StepTimeouts,
}

impl ContainerConfig {
    /// Defaults: one worker per core, a queue of 4,096 calls, up to 64 stuck workers replaced,
    /// 10 s per lifecycle step, no trusted keys, copies in a folder of this container's own under the
    /// system temporary folder (created 0700 and checked like any other; nodes set `work_dir`).
    pub fn new(repo: impl Into<PathBuf>, node_id: impl Into<String>) -> ContainerConfig {
        static CONTAINER_SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = CONTAINER_SEQ.fetch_add(1, Ordering::Relaxed);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        ContainerConfig {
            repo: repo.into(),
            work_dir: std::env::temp_dir().join(format!("{TEMP_WORK_DIR_PREFIX}{}-{}", std::process::id(), seq)),
            trusted_keys: TrustedKeys::default(),
            node_id: node_id.into(),
            pool: PoolConfig { workers, queue_max: 4096, abandoned_max: 64 },
            timeouts: StepTimeouts::default(),
        }
    }
}

/// One instance as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSummary {
    pub id: InstanceId,
    pub artifact: Artifact,
    pub state: SliceState,
    /// Why it FAILED, when it did.
    pub reason: Option<String>,
}

#[derive(Default)]
struct Registry {
    instances: HashMap<InstanceId, Arc<Instance>>,
    /// ACTIVE instances by artifact text, for slice-to-slice calls.
    active: HashMap<String, Vec<Arc<Instance>>>,
}

pub(crate) struct Shared {
    config: ContainerConfig,
    work_dir: Arc<library::WorkDir>,
    registry: RwLock<Registry>,
    pool: WorkerPool,
    next_id: AtomicU64,
    next_pick: AtomicUsize,
    /// Where nested calls go when the callee has no instance here.
    remote: RwLock<Option<Weak<dyn RemoteCall>>>,
    /// The node's cluster state for `ctx.kv()`; `None` until the node installs one.
    slice_state: RwLock<Option<Arc<dyn state::SliceState>>>,
    /// Where `ctx.publish` goes; `None` until the node installs it.
    publisher: RwLock<Option<Arc<dyn publish::Publish>>>,
}

impl Shared {
    /// An ACTIVE instance of `artifact`, rotating among several.
    pub(crate) fn find_active(&self, artifact: &str) -> Option<Arc<Instance>> {
        let registry = self.registry.read();
        let candidates = registry.active.get(artifact)?;
        let pick = self.next_pick.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1);
        candidates.get(pick).cloned()
    }

    /// The cluster state `ctx.kv()` reaches, when the node installed one.
    pub(crate) fn slice_state(&self) -> Option<Arc<dyn state::SliceState>> {
        self.slice_state.read().clone()
    }

    /// Where `ctx.publish` goes, when the node installed it.
    pub(crate) fn publisher(&self) -> Option<Arc<dyn publish::Publish>> {
        self.publisher.read().clone()
    }

    /// The remote-call hook, while its owner lives.
    pub(crate) fn remote(&self) -> Option<Arc<dyn RemoteCall>> {
        self.remote.read().as_ref().and_then(Weak::upgrade)
    }
}

/// A handle on one instance, cheap to clone, for calling it without a registry lookup.
#[derive(Clone)]
pub struct SliceHandle(Arc<Instance>);

impl SliceHandle {
    pub fn id(&self) -> InstanceId {
        self.0.id
    }

    pub fn artifact(&self) -> &Artifact {
        &self.0.artifact
    }

    pub fn info(&self) -> &SliceInfo {
        &self.0.info
    }

    pub fn state(&self) -> SliceState {
        self.0.state().0
    }

    /// Call `method` with encoded request bytes (see [`aether_sdk::codec`]) on this thread.
    pub fn call(&self, method: &str, request: &[u8]) -> Result<Response, CallError> {
        self.0.call(method, request)
    }

    /// The config the instance reads through its host (empty before it is loaded or after unload).
    pub fn config(&self) -> Vec<(String, String)> {
        self.0.config()
    }
}

impl std::fmt::Debug for SliceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SliceHandle({} #{})", self.0.artifact_text, self.0.id)
    }
}

/// The slice container of one node.
pub struct Container {
    shared: Arc<Shared>,
}

impl Container {
    pub fn new(config: ContainerConfig) -> Result<Container, ContainerError> {
        let work_dir = library::WorkDir::open(&config.work_dir)
            .map_err(|reason| ContainerError::WorkDir { path: config.work_dir.clone(), reason })?;
        let pool = WorkerPool::new(config.pool.clone());
        let shared = Arc::new(Shared {
            config,
            work_dir: Arc::new(work_dir),
            registry: RwLock::new(Registry::default()),
            pool,
            next_id: AtomicU64::new(1),
            next_pick: AtomicUsize::new(0),
            remote: RwLock::new(None),
            slice_state: RwLock::new(None),
            publisher: RwLock::new(None),
        });
        Ok(Container { shared })
    }

    pub fn config(&self) -> &ContainerConfig {
        &self.shared.config
    }

    /// State of an instance and, when FAILED, why; `None` once unloaded.
    pub fn state(&self, id: InstanceId) -> Option<(SliceState, Option<String>)> {
        self.shared.registry.read().instances.get(&id).map(|i| i.state())
    }

    pub fn instances(&self) -> Vec<InstanceSummary> {
        let registry = self.shared.registry.read();
        let mut all: Vec<InstanceSummary> = registry
            .instances
            .values()
            .map(|i| {
                let (state, reason) = i.state();
                InstanceSummary { id: i.id, artifact: i.artifact.clone(), state, reason }
            })
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    pub fn handle(&self, id: InstanceId) -> Option<SliceHandle> {
        self.shared.registry.read().instances.get(&id).cloned().map(SliceHandle)
    }

    /// An ACTIVE instance of `artifact` (text `group:artifact:version`); several ACTIVE instances of one
    /// artifact (copies) take turns.
    pub fn find_active(&self, artifact: &str) -> Option<SliceHandle> {
        self.shared.find_active(artifact).map(SliceHandle)
    }

    /// Whether an instance of `artifact` is ACTIVE, without taking a turn of [`Container::find_active`].
    pub fn has_active(&self, artifact: &str) -> bool {
        self.shared.registry.read().active.get(artifact).is_some_and(|c| !c.is_empty())
    }

    /// Replace the config an instance reads through its host (the next `start` gets it too).
    pub fn set_config(&self, id: InstanceId, pairs: Vec<(String, String)>) -> Result<(), ContainerError> {
        self.instance(id)?.set_config(pairs);
        Ok(())
    }

    /// Call an ACTIVE instance of `artifact` on this thread.
    pub fn call(&self, artifact: &str, method: &str, request: &[u8]) -> Result<Response, CallError> {
        let target = self.find_active(artifact).ok_or_else(|| CallError::NoInstance { artifact: artifact.into() })?;
        target.call(method, request)
    }

    /// Install (or clear) the hook nested calls use when the callee has no instance on this node.
    /// The container keeps a weak reference: the hook works while its owner keeps it alive.
    pub fn set_remote(&self, remote: Option<&Arc<dyn RemoteCall>>) {
        *self.shared.remote.write() = remote.map(Arc::downgrade);
    }

    /// Install the node's cluster state, which slices reach through `ctx.kv()`. Until one is installed,
    /// every kv call answers `Unavailable` ("no cluster state on this node").
    pub fn set_slice_state(&self, state: Arc<dyn state::SliceState>) {
        *self.shared.slice_state.write() = Some(state);
    }

    /// Install the node's publish path, which slices reach through `ctx.publish`. Until one is installed,
    /// every publish answers 503.
    pub fn set_publisher(&self, publisher: Arc<dyn publish::Publish>) {
        *self.shared.publisher.write() = Some(publisher);
    }

    /// Call on the worker pool, answering [`CallError::DeadlineExceeded`] after `deadline`.
    pub fn call_with_deadline(
        &self,
        target: &SliceHandle,
        method: &str,
        request: Vec<u8>,
        deadline: Duration,
    ) -> Result<Response, CallError> {
        self.call_with_context(target, method, request, deadline, 0)
    }

    /// [`Container::call_with_deadline`] for a call that arrived after `hops` cluster hops: nested
    /// calls it makes through the [`RemoteCall`] hook see the deadline and the hops.
    pub fn call_with_context(
        &self,
        target: &SliceHandle,
        method: &str,
        request: Vec<u8>,
        deadline: Duration,
        hops: u8,
    ) -> Result<Response, CallError> {
        self.call_pooled(target, method, request, deadline, CallContext::with_deadline(None, hops))
    }

    /// Call on the worker pool within `deadline`, as part of `context` (its request id, caller, depth
    /// and hops; its deadline becomes now plus `deadline`).
    pub fn call_pooled(
        &self,
        target: &SliceHandle,
        method: &str,
        request: Vec<u8>,
        deadline: Duration,
        context: CallContext,
    ) -> Result<Response, CallError> {
        run_pooled(&self.shared, Arc::clone(&target.0), method, request, deadline, context)
    }

    /// Call on this thread, as part of a call that arrived after `hops` cluster hops and whose caller
    /// waits until `deadline` (see [`Container::call_inline_in`]).
    pub fn call_inline(
        &self,
        target: &SliceHandle,
        method: &str,
        request: &[u8],
        deadline: Instant,
        hops: u8,
    ) -> Result<Response, CallError> {
        self.call_inline_in(target, method, request, CallContext::with_deadline(Some(deadline), hops))
    }

    /// Call on this thread as part of `context`: the slice reads its request id, deadline, caller and
    /// depth, and nested calls it makes (here or through the [`RemoteCall`] hook) carry them on. The call
    /// counts as in flight for deactivation like any other, and a panic on the way (the slice's own are
    /// caught at its boundary) is an error, not an unwind. Nothing here enforces the deadline: the
    /// caller owns it (the app port's handler threads run under a watchdog that answers 504 and replaces
    /// a thread stuck past it).
    pub fn call_inline_in(
        &self,
        target: &SliceHandle,
        method: &str,
        request: &[u8],
        context: CallContext,
    ) -> Result<Response, CallError> {
        let answer = catch_unwind(AssertUnwindSafe(|| remote::with_context(context, || target.call(method, request))));
        answer.unwrap_or_else(|payload| {
            Err(CallError::Panicked {
                artifact: target.0.artifact_text.clone(),
                method: method.to_owned(),
                message: aether_sdk::export::panic_message(payload.as_ref()),
            })
        })
    }

    /// Offer `config` to every instance of `artifact` (`group:artifact:version`) on this node, one after
    /// the other, each within the start timeout: each
    /// ACTIVE one's slice accepts or refuses it in its `reconfigure` hook (see
    /// `aether_sdk::Slice::reconfigure`), and the config an instance reads through its host changes only
    /// where it was accepted; an instance not ACTIVE takes it for its next start. `Err` carries every
    /// refusal (`instance N: message`); the instances that accepted keep the new config.
    pub fn reconfigure(&self, artifact: &str, config: Vec<(String, String)>) -> Result<(), String> {
        let mut targets: Vec<Arc<Instance>> =
            self.shared.registry.read().instances.values().filter(|i| i.artifact_text == artifact).cloned().collect();
        targets.sort_by_key(|i| i.id);
        let timeout = self.shared.config.timeouts.start;
        let refusals: Vec<String> = targets
            .iter()
            .filter_map(|instance| {
                // On a step thread, so a slice whose hook never returns costs its caller `timeout`, not
                // forever (the hook counts as a call in flight, so deactivation waits for it as for one).
                let (on_step, pairs) = (Arc::clone(instance), config.clone());
                let name = step::step_thread_name(instance.id, "reconfig");
                let outcome = match step::run_step(&name, timeout, move || on_step.reconfigure(pairs)) {
                    step::StepOutcome::Done(outcome) => outcome,
                    step::StepOutcome::Panicked(why) => Err(format!("the host failed while reconfiguring: {why}")),
                    step::StepOutcome::TimedOut => Err(format!("reconfigure did not return within {timeout:?}")),
                };
                match &outcome {
                    Ok(()) => log::info!("slice {artifact} ({}): new config accepted", instance.id),
                    Err(why) => log::warn!("slice {artifact} ({}): new config refused: {why}", instance.id),
                }
                outcome.err().map(|why| format!("instance {}: {why}", instance.id))
            })
            .collect();
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(refusals.join("; "))
        }
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    fn instance(&self, id: InstanceId) -> Result<Arc<Instance>, ContainerError> {
        self.shared.registry.read().instances.get(&id).cloned().ok_or(ContainerError::NoSuchInstance { id })
    }

    fn remove_active(&self, instance: &Instance) {
        let mut registry = self.shared.registry.write();
        if let Some(list) = registry.active.get_mut(&instance.artifact_text) {
            list.retain(|i| i.id != instance.id);
            if list.is_empty() {
                registry.active.remove(&instance.artifact_text);
            }
        }
    }
}

/// Run a call of `target` on the pool of `shared` within `deadline`, as part of `context`.
pub(crate) fn run_pooled(
    shared: &Shared,
    target: Arc<Instance>,
    method: &str,
    request: Vec<u8>,
    deadline: Duration,
    mut context: CallContext,
) -> Result<Response, CallError> {
    let artifact = target.artifact_text.clone();
    context.deadline = Instant::now().checked_add(deadline);
    let job_method = method.to_owned();
    let job = move || remote::with_context(context, || target.call(&job_method, &request));
    match shared.pool.run(deadline, job) {
        Ok(answer) => answer,
        Err(PoolError::Deadline { .. }) => {
            Err(CallError::DeadlineExceeded { artifact, method: method.to_owned(), deadline })
        }
        Err(PoolError::Overloaded { queue_max }) => Err(CallError::Overloaded { queue_max }),
        Err(PoolError::Panicked(message)) => Err(CallError::Panicked { artifact, method: method.to_owned(), message }),
        Err(PoolError::ShuttingDown) => Err(CallError::ShuttingDown),
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shared.pool.shutdown();
        let dir = &self.shared.config.work_dir;
        let own_temp = dir.parent() == Some(std::env::temp_dir().as_path())
            && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP_WORK_DIR_PREFIX));
        if own_temp {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
