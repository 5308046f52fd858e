//! One slice instance: a loaded library, its lifecycle state, and the call path into it.
//!
//! Invariants:
//! - `active` is true exactly while the state is ACTIVE and the slice pointer is live; a call
//!   increments `in_flight` and then re-checks `active` (both SeqCst), and deactivation clears
//!   `active` and then waits for `in_flight` to reach zero, so `stop` never runs concurrently with a call;
//! - the library is closed, and the host block freed, only when no code can be running in the
//!   library: not after a step timed out, nor with calls in flight, nor while threads the slice started
//!   still run (`pinned`); otherwise both are leaked, deliberately, and the log says so;
//! - lifecycle steps of the instance hold `steps`, so they never overlap.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aether_sdk::abi::{self, Bytes, RawResponse, StrRef};
use aether_sdk::{Response, Status};
use parking_lot::Mutex;

use crate::error::CallError;
use crate::host::HostBlock;
use crate::library::{EntryPoints, Library, SliceInfo};
use crate::InstanceId;
use vocab::Artifact;
use vocab::SliceState;

pub(crate) struct Instance {
    pub id: InstanceId,
    pub artifact: Artifact,
    pub artifact_text: String,
    pub info: SliceInfo,
    pub entry: EntryPoints,
    /// Held by each lifecycle step of this instance, so they never overlap.
    pub steps: Mutex<()>,
    state: Mutex<(SliceState, Option<String>)>,
    active: AtomicBool,
    in_flight: AtomicUsize,
    slice: AtomicPtr<c_void>,
    library: Mutex<Option<Library>>,
    host: Mutex<Option<HostBlock>>,
    pinned: AtomicBool,
}

/// Counts one call in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Instance {
    pub fn new(id: InstanceId, artifact: Artifact, library: Library, host: HostBlock) -> Instance {
        Instance {
            id,
            artifact_text: artifact.to_string(),
            artifact,
            info: library.info.clone(),
            entry: library.entry,
            steps: Mutex::new(()),
            state: Mutex::new((SliceState::Loaded, None)),
            active: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            slice: AtomicPtr::new(std::ptr::null_mut()),
            library: Mutex::new(Some(library)),
            host: Mutex::new(Some(host)),
            pinned: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> (SliceState, Option<String>) {
        self.state.lock().clone()
    }

    /// Move to `to` if the state is one of `from` and the lifecycle allows it; returns the old state.
    pub fn begin(&self, from: &[SliceState], to: SliceState) -> Result<SliceState, SliceState> {
        let mut state = self.state.lock();
        let current = state.0;
        if !from.contains(&current) || !current.can_become(to) {
            return Err(current);
        }
        *state = (to, None);
        Ok(current)
    }

    pub fn set_state(&self, to: SliceState) {
        *self.state.lock() = (to, None);
    }

    pub fn fail(&self, reason: String) {
        log::warn!("slice {} ({}) FAILED: {reason}", self.artifact_text, self.id);
        *self.state.lock() = (SliceState::Failed, Some(reason));
    }

    pub fn host_api(&self) -> *const abi::HostApi {
        self.host.lock().as_ref().map_or(std::ptr::null(), HostBlock::api)
    }

    pub fn set_config(&self, pairs: Vec<(String, String)>) {
        if let Some(host) = self.host.lock().as_ref() {
            *host.ctx().config.write() = pairs;
        }
    }

    pub fn config(&self) -> Vec<(String, String)> {
        self.host.lock().as_ref().map(|h| h.ctx().config.read().clone()).unwrap_or_default()
    }

    /// Publish the started slice and open it for calls. Calls are open before the state reads ACTIVE, so
    /// whoever sees ACTIVE (a watch delivery waiting for the start to end) can call at once.
    pub fn open_for_calls(&self, slice: *mut c_void) {
        self.slice.store(slice, Ordering::SeqCst);
        self.active.store(true, Ordering::SeqCst);
        self.set_state(SliceState::Active);
    }

    /// Refuse new calls, wait up to `timeout` for calls in flight; returns the slice pointer when drained.
    pub fn close_for_calls(&self, timeout: Duration) -> Result<*mut c_void, usize> {
        self.active.store(false, Ordering::SeqCst);
        let until = Instant::now() + timeout;
        loop {
            let in_flight = self.in_flight.load(Ordering::SeqCst);
            if in_flight == 0 {
                return Ok(self.slice.swap(std::ptr::null_mut(), Ordering::SeqCst));
            }
            if Instant::now() >= until {
                return Err(in_flight);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Code may still run inside the library: never close it.
    pub fn pin(&self) {
        self.pinned.store(true, Ordering::SeqCst);
    }

    /// Whether the library can be closed: no call in flight, no abandoned step, no live slice.
    pub fn closable(&self) -> bool {
        !self.pinned.load(Ordering::SeqCst)
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.slice.load(Ordering::SeqCst).is_null()
    }

    pub fn take_library(&self) -> Option<Library> {
        self.library.lock().take()
    }

    /// Call `method` on this thread.
    pub fn call(&self, method: &str, request: &[u8]) -> Result<Response, CallError> {
        let _in_flight = self.enter()?;
        let slice = self.slice.load(Ordering::SeqCst);
        let mut raw = RawResponse::EMPTY;
        // SAFETY: `enter` succeeded, so the slice pointer is live and stays so until `_in_flight`
        // drops (deactivation waits for it); `method` and `request` outlive the call; `raw` is a
        // valid out-parameter. The slice's shim catches its own panics.
        unsafe { (self.entry.call)(slice, StrRef::new(method), Bytes::new(request), &mut raw) };
        self.take_response(method, raw)
    }

    fn enter(&self) -> Result<InFlight<'_>, CallError> {
        if self.active.load(Ordering::SeqCst) {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(&self.in_flight);
            if self.active.load(Ordering::SeqCst) {
                return Ok(guard);
            }
        }
        Err(CallError::NotActive { artifact: self.artifact_text.clone(), state: self.state().0 })
    }

    fn take_response(&self, method: &str, raw: RawResponse) -> Result<Response, CallError> {
        if raw.status == abi::status::PANICKED {
            let message = String::from_utf8_lossy(&self.take_buffer(raw.payload)).into_owned();
            self.log_panic(method, &message);
            return Err(CallError::Panicked {
                artifact: self.artifact_text.clone(),
                method: method.to_owned(),
                message,
            });
        }
        let decoded = self.with_buffer(raw.payload, |payload| match Status::from_code(raw.status) {
            Some(status) => Response::decode(status, payload).map_err(|e| e.to_string()),
            None => Err(format!("status {} is not an HTTP status", raw.status)),
        });
        decoded.map_err(|reason| CallError::BadResponse { artifact: self.artifact_text.clone(), reason })
    }

    /// A panic in the slice: its text goes to the log with the node, the artifact and the request id
    /// (callers only learn that the slice failed).
    fn log_panic(&self, method: &str, message: &str) {
        let node = self.host.lock().as_ref().map(|h| h.ctx().node_id.clone()).unwrap_or_default();
        let request_id = crate::remote::with_current(|c| c.request_id.clone());
        log::error!(
            "slice {} panicked in `{method}` on node {node} (request {}): {message}",
            self.artifact_text,
            request_id.as_deref().unwrap_or("-")
        );
    }

    /// Run `read` on a slice-owned buffer, then give it back to the slice's `free`.
    fn with_buffer<T>(&self, buf: abi::OwnedBuf, read: impl FnOnce(&[u8]) -> T) -> T {
        if buf.ptr.is_null() {
            return read(&[]);
        }
        // SAFETY: the slice wrote a valid buffer of `len` initialised bytes (ABI contract).
        let answer = read(unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) });
        // SAFETY: the buffer came from this library and is freed once, while it is loaded.
        unsafe { (self.entry.free)(buf) };
        answer
    }

    /// Offer `pairs` as the instance's new config. An ACTIVE instance's slice decides (its
    /// `reconfigure`, run on the calling thread as a call in flight, so deactivation waits for it); the
    /// host-side config changes only when it accepts. An instance not ACTIVE takes it for its next start.
    pub fn reconfigure(&self, pairs: Vec<(String, String)>) -> Result<(), String> {
        let Ok(_in_flight) = self.enter() else {
            self.set_config(pairs);
            return Ok(());
        };
        let Some(reconfigure) = self.entry.reconfigure else {
            self.set_config(pairs);
            return Ok(());
        };
        let bytes = aether_sdk::codec::encode_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| format!("the config cannot be encoded: {e}"))?;
        let slice = self.slice.load(Ordering::SeqCst);
        let mut error = RawResponse { status: abi::status::OK, payload: abi::OwnedBuf::EMPTY };
        // SAFETY: `enter` succeeded, so the slice pointer is live until `_in_flight` drops; the config
        // bytes outlive the call and `error` is a valid out-parameter.
        let status = unsafe { reconfigure(slice, Bytes::new(&bytes), &mut error) };
        let message = String::from_utf8_lossy(&self.take_buffer(error.payload)).into_owned();
        match status {
            abi::status::OK => {
                self.set_config(pairs);
                Ok(())
            }
            abi::status::PANICKED => {
                self.log_panic("reconfigure", &message);
                Err("the slice failed while reconfiguring (see the node's log)".to_owned())
            }
            _ if message.is_empty() => Err("the slice refused the new config".to_owned()),
            _ => Err(message),
        }
    }

    /// Copy a slice-owned buffer and give it back to the slice's `free`.
    pub fn take_buffer(&self, buf: abi::OwnedBuf) -> Vec<u8> {
        if buf.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the slice wrote a valid buffer of `len` initialised bytes (ABI contract).
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        // SAFETY: the buffer came from this library and is freed once, while it is loaded.
        unsafe { (self.entry.free)(buf) };
        bytes
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let library = self.library.get_mut().take();
        let host = self.host.get_mut().take();
        let closable = self.closable();
        if let Some(library) = library {
            if closable {
                let _ = library.close();
            } else {
                log::warn!("slice {} ({}): library left loaded, code may still run in it", self.artifact_text, self.id);
                library.leak();
            }
        }
        // Otherwise the host block stays allocated (HostBlock frees nothing on drop): the slice
        // may still reach it from a thread that never came back.
        if let Some(host) = host.filter(|_| closable) {
            host.free();
        }
    }
}
