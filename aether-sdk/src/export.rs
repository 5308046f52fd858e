//! The slice side of the boundary: the `extern "C"` shims [`export_slice!`](crate::export_slice)
//! puts behind the descriptor.
//!
//! Invariants: every shim runs the slice's code inside `catch_unwind`, so no panic ever unwinds into
//! the host; the instance pointer handed to the host is a `Box<S>` made by `start_shim` and freed
//! only by `stop_shim`; every buffer returned is an [`OwnedBuf`] freed by `free_shim`; a response
//! whose header fields may not cross the boundary never leaves the library (it becomes a 500).

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{self, Array, Bytes, HostApi, OwnedBuf, RawResponse, SliceDescriptor, StrRef};
use crate::codec::Request;
use crate::context::{Config, Context};
use crate::response::Response;
use crate::status::Status;
use crate::Slice;

/// The descriptor as a `static` in the slice library (raw pointers to `'static` data only).
#[repr(transparent)]
pub struct StaticDescriptor(SliceDescriptor);

// SAFETY: the descriptor is immutable and points only at `'static` data and functions.
unsafe impl Sync for StaticDescriptor {}

impl StaticDescriptor {
    /// The descriptor of slice type `S`, built at compile time.
    pub const fn new<S: Slice>() -> StaticDescriptor {
        StaticDescriptor(SliceDescriptor {
            abi_version: abi::ABI_VERSION,
            descriptor_size: std::mem::size_of::<SliceDescriptor>() as u32,
            name: StrRef::new(S::NAME),
            version: StrRef::new(S::VERSION),
            // The element types are `repr(transparent)` wrappers of the C types, so the casts keep layout.
            methods: Array { ptr: S::METHODS.as_ptr().cast(), len: S::METHODS.len() },
            routes: Array { ptr: S::ROUTES.as_ptr().cast(), len: S::ROUTES.len() },
            subscriptions: Array { ptr: S::SUBSCRIPTIONS.as_ptr().cast(), len: S::SUBSCRIPTIONS.len() },
            schedules: Array { ptr: S::SCHEDULES.as_ptr().cast(), len: S::SCHEDULES.len() },
            start: Some(start_shim::<S> as abi::StartFn),
            stop: Some(stop_shim::<S> as abi::StopFn),
            call: Some(call_shim::<S> as abi::CallFn),
            free: Some(free_shim as abi::FreeFn),
            reconfigure: Some(reconfigure_shim::<S> as abi::ReconfigureFn),
            flags: if S::SINGLE_ACTIVE { abi::slice_flags::SINGLE_ACTIVE } else { 0 },
        })
    }

    pub const fn as_ptr(&'static self) -> *const SliceDescriptor {
        &self.0
    }
}

/// Install, once per slice library, a panic hook that reports a panic with one line on stderr.
///
/// The standard hook looks up the current thread's handle, which registers a thread-local
/// destructor for this library on the calling (host) thread; the dynamic loader then cannot unmap
/// the library when it is unloaded. This hook touches no thread-local state: it writes straight to
/// file descriptor 2, with no lock.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            use std::io::Write;
            use std::os::fd::FromRawFd;
            let message = panic_message(info.payload());
            let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let line = format!("slice panicked{place}: {message}\n");
            // SAFETY: fd 2 is the process's stderr, open for its whole life; ManuallyDrop keeps
            // this File from closing it.
            let mut stderr = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
            let _ = stderr.write_all(line.as_bytes());
        }));
    });
}

/// Text of a panic payload (`&str` and `String` payloads; anything else gets a fixed text).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "panic with a non-text payload".to_owned()
}

/// Write `response` into an out-parameter of the ABI (ignored when null); used by slices and by the host.
/// A response whose header fields may not cross the boundary is replaced by a 500 error that says why.
///
/// # Safety
/// `out` is null or valid for writes.
pub unsafe fn write_response(out: *mut RawResponse, response: Response) {
    if out.is_null() {
        return;
    }
    let (status, payload) = match response.encode_payload() {
        Ok(payload) => (response.status.code(), payload),
        Err(e) => {
            let refused =
                Response::error(Status::INTERNAL_SERVER_ERROR, &format!("the slice's answer is refused: {e}"));
            // An error response built here has only its content type: it always encodes.
            (refused.status.code(), refused.encode_payload().unwrap_or_default())
        }
    };
    // SAFETY: `out` is non-null and valid for writes (caller contract); `write` does not drop the old value.
    unsafe { out.write(RawResponse { status, payload: OwnedBuf::from_vec(payload) }) };
}

/// Write plain text with a lifecycle status (or [`abi::status::PANICKED`]) into an out-parameter.
///
/// # Safety
/// `out` is null or valid for writes.
pub unsafe fn write_text(out: *mut RawResponse, status: u32, text: String) {
    if out.is_null() {
        return;
    }
    // SAFETY: `out` is non-null and valid for writes (caller contract).
    unsafe { out.write(RawResponse { status, payload: OwnedBuf::from_vec(text.into_bytes()) }) };
}

/// # Safety
/// `out` is null or valid for writes.
unsafe fn write_panic(out: *mut RawResponse, payload: Box<dyn Any + Send>) {
    let message = panic_message(payload.as_ref());
    // Dropping a payload can itself panic; keep that inside the library too.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    // SAFETY: forwarded caller contract.
    unsafe { write_text(out, abi::status::PANICKED, message) };
}

/// # Safety
/// Called by the host per the ABI: `host` valid until `stop` returns, `config` valid for the call,
/// `instance` and `error` valid for writes.
pub unsafe extern "C" fn start_shim<S: Slice>(
    host: *const HostApi,
    config: Bytes,
    instance: *mut *mut c_void,
    error: *mut RawResponse,
) -> u32 {
    install_panic_hook();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `host` is null or valid until `stop` returns (ABI contract).
        let host_version = unsafe { host.as_ref() }.map(|h| h.abi_version);
        if host_version.is_some_and(|v| v != abi::ABI_VERSION) {
            return Err(format!("host speaks slice ABI {host_version:?}, this slice {}", abi::ABI_VERSION));
        }
        // SAFETY: `config` is valid for the call (ABI contract).
        let config_bytes = unsafe { bytes_from(config) };
        let config = Config::parse(config_bytes).map_err(|e| e.to_string())?;
        // SAFETY: `host` stays valid until `stop` returns (ABI contract).
        let ctx = unsafe { Context::from_host(host) };
        S::start(ctx, &config).map_err(|e| e.to_string())
    }));
    match outcome {
        Ok(Ok(slice)) if !instance.is_null() => {
            // SAFETY: `instance` is non-null and valid for writes (ABI contract).
            unsafe { instance.write(Box::into_raw(Box::new(slice)).cast()) };
            abi::status::OK
        }
        Ok(Ok(_)) => abi::status::REFUSED,
        // SAFETY: `error` is null or valid for writes (ABI contract).
        Ok(Err(message)) => unsafe { step_failed(error, Ok(message)) },
        // SAFETY: as above.
        Err(payload) => unsafe { step_failed(error, Err(payload)) },
    }
}

/// The status of a lifecycle step that did not succeed, with the slice's refusal text or its panic written
/// into `error`.
///
/// # Safety
/// `error` is null or valid for writes.
unsafe fn step_failed(error: *mut RawResponse, failure: Result<String, Box<dyn Any + Send>>) -> u32 {
    match failure {
        Ok(message) => {
            // SAFETY: forwarded caller contract.
            unsafe { write_text(error, abi::status::REFUSED, message) };
            abi::status::REFUSED
        }
        Err(payload) => {
            // SAFETY: forwarded caller contract.
            unsafe { write_panic(error, payload) };
            abi::status::PANICKED
        }
    }
}

/// # Safety
/// `instance` came from `start_shim::<S>` and is not used again; `error` is null or valid for writes.
pub unsafe extern "C" fn stop_shim<S: Slice>(instance: *mut c_void, error: *mut RawResponse) -> u32 {
    if instance.is_null() {
        return abi::status::OK;
    }
    // SAFETY: `instance` is the `Box<S>` made by `start_shim::<S>`, handed back exactly once.
    let slice = unsafe { Box::from_raw(instance.cast::<S>()) };
    match catch_unwind(AssertUnwindSafe(move || slice.stop())) {
        Ok(()) => abi::status::OK,
        // SAFETY: `error` is null or valid for writes (ABI contract).
        Err(payload) => unsafe { step_failed(error, Err(payload)) },
    }
}

/// # Safety
/// `instance` came from `start_shim::<S>` and is not yet stopped; `config` is valid for the call;
/// `error` is null or valid for writes.
pub unsafe extern "C" fn reconfigure_shim<S: Slice>(
    instance: *const c_void,
    config: Bytes,
    error: *mut RawResponse,
) -> u32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` is a live `Box<S>` from `start_shim::<S>` (ABI contract).
        let slice = unsafe { &*instance.cast::<S>() };
        // SAFETY: `config` is valid for the call (ABI contract).
        let config = Config::parse(unsafe { bytes_from(config) }).map_err(|e| e.to_string())?;
        slice.reconfigure(&config).map_err(|e| e.to_string())
    }));
    match outcome {
        Ok(Ok(())) => abi::status::OK,
        // SAFETY: `error` is null or valid for writes (ABI contract).
        Ok(Err(message)) => unsafe { step_failed(error, Ok(message)) },
        // SAFETY: as above.
        Err(payload) => unsafe { step_failed(error, Err(payload)) },
    }
}

/// # Safety
/// `instance` came from `start_shim::<S>` and is not yet stopped; `method` and `request` are valid
/// for the call; `response` is valid for writes.
pub unsafe extern "C" fn call_shim<S: Slice>(
    instance: *const c_void,
    method: StrRef,
    request: Bytes,
    response: *mut RawResponse,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` is a live `Box<S>` from `start_shim::<S>` (ABI contract).
        let slice = unsafe { &*instance.cast::<S>() };
        // SAFETY: `method` and `request` are valid for the call (ABI contract).
        let (method, request) =
            unsafe { (bytes_from(Bytes { ptr: method.ptr, len: method.len }), bytes_from(request)) };
        dispatch(slice, method, request)
    }));
    match outcome {
        // SAFETY: `response` is valid for writes (ABI contract).
        Ok(answer) => unsafe { write_response(response, answer) },
        // SAFETY: as above.
        Err(payload) => unsafe { write_panic(response, payload) },
    }
}

fn dispatch<S: Slice>(slice: &S, method: &[u8], request: &[u8]) -> Response {
    let Some(method) = S::METHODS.iter().map(|m| m.name()).find(|m| m.as_bytes() == method) else {
        let shown = String::from_utf8_lossy(method);
        return Response::error(Status::NOT_FOUND, &format!("{} has no method `{shown}`", S::NAME));
    };
    match Request::parse(request) {
        Ok(request) => slice.call(method, &request),
        Err(e) => Response::error(Status::BAD_REQUEST, &e.to_string()),
    }
}

/// # Safety
/// `buf` was returned by this library and is freed once.
pub unsafe extern "C" fn free_shim(buf: OwnedBuf) {
    // SAFETY: `buf` is an `OwnedBuf::from_vec` of this library (ABI contract); dropping a Vec<u8> does not panic.
    drop(unsafe { buf.into_vec() });
}

/// # Safety
/// `bytes` points to `len` readable bytes that outlive the returned slice.
unsafe fn bytes_from<'a>(bytes: Bytes) -> &'a [u8] {
    if bytes.len == 0 || bytes.ptr.is_null() {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(response: Response) -> (u32, Response) {
        let mut raw = RawResponse::EMPTY;
        // SAFETY: `raw` is a valid out-parameter; its payload is taken back below, in this library.
        unsafe { write_response(&mut raw, response) };
        let status = raw.status;
        // SAFETY: the payload was made by `OwnedBuf::from_vec` here and is taken back once.
        let payload = unsafe { raw.payload.into_vec() };
        let decoded = Response::decode(Status::from_code(status).unwrap(), &payload).unwrap();
        (status, decoded)
    }

    #[test]
    fn an_answer_with_hostile_header_bytes_never_leaves_the_slice() {
        let (status, answer) = written(Response::found("/ok").with_header("X-Fine", "yes"));
        assert_eq!((status, answer.header("location"), answer.header("x-fine")), (302, Some("/ok"), Some("yes")));

        let split = Response::text("hi").with_header("Set-Cookie", "a=1\r\nX-Injected: 1");
        let (status, answer) = written(split);
        assert_eq!(status, 500);
        assert!(answer.body_text().contains("the slice's answer is refused"), "{}", answer.body_text());
        assert_eq!(answer.header("x-injected"), None);
        assert_eq!(answer.header("set-cookie"), None);
        let (status, _) = written(Response::text("hi").with_header("Bad Name", "v"));
        assert_eq!(status, 500);
    }
}
