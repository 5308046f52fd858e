//! The lifecycle steps of the container: load, activate (`start`), deactivate (drain, then `stop`), unload,
//! and the shutdown that runs them for every instance.
//!
//! Each step of an instance holds that instance's step lock, so the steps of one instance never overlap,
//! while steps of different instances run side by side (a slow `start` or a long drain holds up only its own
//! slice). Every step runs on a thread of its own named after the instance (see [`crate::step`]), so threads
//! a slice starts from its `start` or `stop` carry the instance in their name; before a library is closed
//! the container waits, at most [`SLICE_THREADS_WAIT`], for such threads to end, and keeps the library mapped
//! if any still runs (unmapping code a thread still runs would crash the node).
//!
//! Invariants: a step begins only from the states [`SliceState::can_become`] allows; a step that fails or
//! times out leaves the instance FAILED with a reason; a step that timed out, a drain that did not finish,
//! and a slice thread still running all pin the library, which is then leaked rather than closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::host::{HostBlock, HostCtx};
use crate::instance::Instance;
use crate::step::{run_step, step_thread_name, wait_for_slice_threads, StepOutcome};
use crate::{library, Artifact, Container, ContainerError, InstanceId, SliceState};

/// Longest an unload waits for threads the slice started (and did not join in `stop`) to end.
pub const SLICE_THREADS_WAIT: Duration = Duration::from_secs(2);

impl Container {
    /// LOADING -> LOADED: resolve, verify, copy, load and check `artifact`. A failed load leaves nothing
    /// behind.
    pub fn load(&self, artifact: &Artifact, config: Vec<(String, String)>) -> Result<InstanceId, ContainerError> {
        let path = self.shared.config.repo.join(artifact.repository_path());
        if !path.is_file() {
            return Err(ContainerError::NotInRepository { artifact: artifact.clone() });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let work_dir = self.shared.work_dir.clone();
        let keys = self.shared.config.trusted_keys.clone();
        let to_open = artifact.clone();
        let timeout = self.shared.config.timeouts.load;
        let opening = move || library::open(&to_open, &path, &work_dir, &keys);
        let library = match run_step(&step_thread_name(id, "load"), timeout, opening) {
            StepOutcome::Done(opened) => opened?,
            StepOutcome::Panicked(reason) => return Err(step_failed(artifact, "load", reason)),
            StepOutcome::TimedOut => return Err(timed_out(artifact, "load", timeout)),
        };
        let host = HostBlock::new(HostCtx {
            shared: Arc::downgrade(&self.shared),
            artifact: artifact.to_string(),
            artifact_shared: artifact.to_string().into(),
            instance: id,
            methods: library.info.methods.clone(),
            node_id: self.shared.config.node_id.clone(),
            config: RwLock::new(config),
        });
        let instance = Arc::new(Instance::new(id, artifact.clone(), library, host));
        self.shared.registry.write().instances.insert(id, instance);
        log::info!("slice {artifact} ({id}) LOADED");
        Ok(id)
    }

    /// LOADED -> ACTIVATING -> ACTIVE: run the slice's `start` with its config.
    pub fn activate(&self, id: InstanceId) -> Result<(), ContainerError> {
        let instance = self.instance(id)?;
        let _steps = instance.steps.lock();
        begin(&instance, &[SliceState::Loaded], SliceState::Activating, "activate")?;
        let timeout = self.shared.config.timeouts.start;
        match start_slice(&instance, timeout) {
            Ok(slice) => {
                instance.open_for_calls(slice.0);
                let mut registry = self.shared.registry.write();
                registry.active.entry(instance.artifact_text.clone()).or_default().push(Arc::clone(&instance));
                log::info!("slice {} ({id}) ACTIVE", instance.artifact_text);
                Ok(())
            }
            Err(error) => {
                instance.fail(error.to_string());
                Err(error)
            }
        }
    }

    /// ACTIVE -> DEACTIVATING -> LOADED: stop taking calls, wait for calls in flight, run `stop`.
    pub fn deactivate(&self, id: InstanceId) -> Result<(), ContainerError> {
        let instance = self.instance(id)?;
        let _steps = instance.steps.lock();
        begin(&instance, &[SliceState::Active], SliceState::Deactivating, "deactivate")?;
        self.remove_active(&instance);
        self.unwatch(&instance);
        let timeouts = &self.shared.config.timeouts;
        let result = instance.close_for_calls(timeouts.drain).map_err(|in_flight| {
            instance.pin();
            step_failed(
                &instance.artifact,
                "deactivate",
                format!("{in_flight} calls still in flight after {:?}", timeouts.drain),
            )
        });
        let result = result.and_then(|slice| stop_slice(&instance, SendPtr(slice), timeouts.stop));
        match result {
            Ok(()) => {
                instance.set_state(SliceState::Loaded);
                log::info!("slice {} ({id}) LOADED (deactivated)", instance.artifact_text);
                Ok(())
            }
            Err(error) => {
                instance.fail(error.to_string());
                Err(error)
            }
        }
    }

    /// LOADED or FAILED -> UNLOADING -> removed: close the library (or leave it loaded, logged, when
    /// code may still run in it).
    pub fn unload(&self, id: InstanceId) -> Result<(), ContainerError> {
        let instance = self.instance(id)?;
        let _steps = instance.steps.lock();
        begin(&instance, &[SliceState::Loaded, SliceState::Failed], SliceState::Unloading, "unload")?;
        self.shared.registry.write().instances.remove(&id);
        self.unwatch(&instance);
        let Some(library) = instance.take_library() else { return Ok(()) };
        if !instance.closable() {
            log::warn!("slice {} ({id}): unloaded but left mapped: code may still run in it", instance.artifact_text);
            library.leak();
            return Ok(());
        }
        let left = wait_for_slice_threads(id, SLICE_THREADS_WAIT);
        if left > 0 {
            log::warn!(
                "slice {} ({id}): unloaded but left mapped: {left} thread(s) it started still run after {:?}",
                instance.artifact_text,
                SLICE_THREADS_WAIT
            );
            instance.pin();
            library.leak();
            return Ok(());
        }
        let timeout = self.shared.config.timeouts.unload;
        let outcome = run_step(&step_thread_name(id, "unload"), timeout, move || library.close());
        log::info!("slice {} ({id}) unloaded", instance.artifact_text);
        match outcome {
            StepOutcome::Done(Ok(())) => Ok(()),
            StepOutcome::Done(Err(reason)) | StepOutcome::Panicked(reason) => {
                Err(step_failed(&instance.artifact, "unload", reason))
            }
            StepOutcome::TimedOut => Err(timed_out(&instance.artifact, "unload", timeout)),
        }
    }

    /// Load and activate in one go; on a failed start the instance is unloaded again.
    pub fn deploy(&self, artifact: &Artifact, config: Vec<(String, String)>) -> Result<InstanceId, ContainerError> {
        let id = self.load(artifact, config)?;
        if let Err(error) = self.activate(id) {
            let _ = self.unload(id);
            return Err(error);
        }
        Ok(id)
    }

    /// Deactivate (when active) and unload every instance, then stop the workers.
    pub fn shutdown(&self) {
        for summary in self.instances() {
            if summary.state == SliceState::Active {
                if let Err(e) = self.deactivate(summary.id) {
                    log::warn!("shutdown: {e}");
                }
            }
            if let Err(e) = self.unload(summary.id) {
                log::warn!("shutdown: {e}");
            }
        }
        self.shared.pool.shutdown();
    }
}

impl Container {
    /// The instance stops serving: the cluster state drops its watches (deliveries would find no one).
    fn unwatch(&self, instance: &Instance) {
        if let Some(state) = self.shared.slice_state() {
            state.unwatch_instance(&instance.artifact_text, instance.id);
        }
    }
}

fn begin(instance: &Instance, from: &[SliceState], to: SliceState, step: &'static str) -> Result<(), ContainerError> {
    instance.begin(from, to).map(|_| ()).map_err(|state| ContainerError::WrongState {
        artifact: instance.artifact.clone(),
        step,
        state,
    })
}

fn step_failed(artifact: &Artifact, step: &'static str, reason: String) -> ContainerError {
    ContainerError::StepFailed { artifact: artifact.clone(), step, reason }
}

fn timed_out(artifact: &Artifact, step: &'static str, timeout: Duration) -> ContainerError {
    ContainerError::StepTimedOut { artifact: artifact.clone(), step, timeout }
}

/// A raw pointer moved to a step thread.
struct SendPtr<T>(*mut T);

// SAFETY: the pointers moved this way (a slice instance, the host table) are made to be used from
// any thread by the ABI contract.
unsafe impl<T> Send for SendPtr<T> {}

/// What the slice's `start` said: status, instance pointer, error text.
type StartAnswer = (u32, SendPtr<std::ffi::c_void>, Vec<u8>);

fn start_slice(instance: &Arc<Instance>, timeout: Duration) -> Result<SendPtr<std::ffi::c_void>, ContainerError> {
    let config = instance.config();
    let pairs = config.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let config_bytes = aether_sdk::codec::encode_pairs(pairs)
        .map_err(|e| step_failed(&instance.artifact, "activate", format!("config: {e}")))?;
    let host = SendPtr(instance.host_api().cast_mut());
    let on_step = Arc::clone(instance);
    let outcome = run_step(&step_thread_name(instance.id, "start"), timeout, move || {
        let host = host;
        let mut slice = std::ptr::null_mut();
        let mut error = aether_sdk::abi::RawResponse::EMPTY;
        // SAFETY: the host table lives as long as the instance (which this closure holds); the
        // config bytes live for the call; `slice` and `error` are valid out-parameters.
        let status = unsafe {
            (on_step.entry.start)(
                host.0.cast_const(),
                aether_sdk::abi::Bytes::new(&config_bytes),
                &mut slice,
                &mut error,
            )
        };
        (status, SendPtr(slice), on_step.take_buffer(error.payload)) as StartAnswer
    });
    match outcome {
        StepOutcome::Done((aether_sdk::abi::status::OK, slice, _)) if !slice.0.is_null() => Ok(slice),
        StepOutcome::Done((aether_sdk::abi::status::PANICKED, _, message)) => {
            Err(step_failed(&instance.artifact, "start", format!("panicked: {}", String::from_utf8_lossy(&message))))
        }
        StepOutcome::Done((status, _, message)) => {
            Err(step_failed(&instance.artifact, "start", start_refusal(status, &message)))
        }
        StepOutcome::Panicked(reason) => Err(step_failed(&instance.artifact, "start", reason)),
        StepOutcome::TimedOut => {
            instance.pin();
            Err(timed_out(&instance.artifact, "start", timeout))
        }
    }
}

/// Why `start` gave no instance, in the slice's own words: operators read this, so no ABI status codes.
fn start_refusal(status: u32, message: &[u8]) -> String {
    match (status, message.is_empty()) {
        (_, false) => String::from_utf8_lossy(message).into_owned(),
        (aether_sdk::abi::status::OK, true) => "the slice reported success but gave no instance".to_owned(),
        (_, true) => "the slice refused to start without saying why".to_owned(),
    }
}

fn stop_slice(
    instance: &Arc<Instance>,
    slice: SendPtr<std::ffi::c_void>,
    timeout: Duration,
) -> Result<(), ContainerError> {
    let on_step = Arc::clone(instance);
    let outcome = run_step(&step_thread_name(instance.id, "stop"), timeout, move || {
        let slice = slice;
        let mut error = aether_sdk::abi::RawResponse::EMPTY;
        // SAFETY: `slice` came from this library's `start`, no call is in flight, and it is handed
        // back exactly once; `error` is a valid out-parameter.
        let status = unsafe { (on_step.entry.stop)(slice.0, &mut error) };
        (status, on_step.take_buffer(error.payload))
    });
    match outcome {
        StepOutcome::Done((aether_sdk::abi::status::OK, _)) => Ok(()),
        StepOutcome::Done((_, message)) => {
            Err(step_failed(&instance.artifact, "stop", format!("panicked: {}", String::from_utf8_lossy(&message))))
        }
        StepOutcome::Panicked(reason) => Err(step_failed(&instance.artifact, "stop", reason)),
        StepOutcome::TimedOut => {
            instance.pin();
            Err(timed_out(&instance.artifact, "stop", timeout))
        }
    }
}
