//! The C-layout contract between `aetherd` and a slice library.
//!
//! Everything that crosses the library boundary is defined here and nowhere else. The host reads
//! [`SliceDescriptor::abi_version`] (the first field, at offset 0, in every ABI version) before it
//! touches anything else, and refuses the library unless it equals [`ABI_VERSION`]. Any change to a
//! type in this module that alters its layout or meaning must bump [`ABI_VERSION`].
//!
//! Ownership rules:
//! - [`StrRef`] and [`Bytes`] are borrowed: valid only for the duration of the call that receives them,
//!   except the descriptor's strings and arrays, which live as long as the library is loaded.
//! - An [`OwnedBuf`] is owned by whoever allocated it and must be given back to that side's `free`
//!   function: buffers a slice returns go to [`SliceDescriptor::free`], buffers the host returns go to
//!   [`HostApi::free`].
//! - No function on either side lets a panic unwind across the boundary.

use std::ffi::c_void;

/// Version of this contract. A library built against another version is refused at load.
pub const ABI_VERSION: u32 = 4;

/// The version of the SDK crate this contract comes from (named in the message a node gives when it
/// refuses a library built against another ABI version).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the one symbol a slice library exports: `extern "C" fn() -> *const SliceDescriptor`.
pub const DESCRIPTOR_SYMBOL: &str = "aether_slice_descriptor";

/// The same name, nul-terminated, as the dynamic loader wants it.
pub const DESCRIPTOR_SYMBOL_NUL: &[u8] = b"aether_slice_descriptor\0";

/// Signature of the exported descriptor function.
pub type DescriptorFn = unsafe extern "C" fn() -> *const SliceDescriptor;

/// Borrowed UTF-8 text: pointer and length, no terminator.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl StrRef {
    /// A reference to `text`; valid as long as `text` is.
    pub const fn new(text: &str) -> StrRef {
        StrRef { ptr: text.as_ptr(), len: text.len() }
    }

    /// The empty string (a dangling but non-null pointer, as Rust slices use).
    pub const EMPTY: StrRef = StrRef::new("");
}

/// Borrowed bytes: pointer and length.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl Bytes {
    /// A reference to `bytes`; valid as long as `bytes` is.
    pub const fn new(bytes: &[u8]) -> Bytes {
        Bytes { ptr: bytes.as_ptr(), len: bytes.len() }
    }
}

/// A heap buffer handed across the boundary. It is the raw parts of a `Vec<u8>` allocated by the
/// side that produced it, and goes back to that side's `free` function.
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl OwnedBuf {
    /// No buffer (nothing to free).
    pub const EMPTY: OwnedBuf = OwnedBuf { ptr: std::ptr::null_mut(), len: 0, cap: 0 };

    /// Give up ownership of `bytes`; it must come back through [`OwnedBuf::into_vec`] on this side.
    pub fn from_vec(bytes: Vec<u8>) -> OwnedBuf {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        OwnedBuf { ptr: bytes.as_mut_ptr(), len: bytes.len(), cap: bytes.capacity() }
    }

    /// Take back a buffer made by [`OwnedBuf::from_vec`].
    ///
    /// # Safety
    /// `self` must come from [`OwnedBuf::from_vec`] in this same library (same allocator), and must
    /// not be used again.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller guarantees these are the raw parts of a Vec<u8> made in this library.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }
}

/// Outcome codes of the lifecycle entry points (`start`, `stop`, `reconfigure`), and the one marker a
/// call's [`RawResponse::status`] may carry besides an HTTP status: [`status::PANICKED`].
pub mod status {
    /// The entry point did what was asked.
    pub const OK: u32 = 0;
    /// The slice refused (its `start` or `reconfigure` returned an error); the out-parameter's
    /// payload is the slice's message (UTF-8 text, not the response encoding).
    pub const REFUSED: u32 = 4;
    /// The slice's code panicked; the payload is the panic message (UTF-8 text, not the response
    /// encoding). Set only by the SDK's boundary guard, never an HTTP status (those are 100..=599).
    pub const PANICKED: u32 = 0xE001;
}

/// A response coming back across the boundary: an HTTP status (100..=599) and a payload owned by the
/// side that wrote it, in the response encoding (header fields, then the body; see
/// [`crate::Response::encode_payload`]). With [`status::PANICKED`] (and in the error out-parameter of
/// the lifecycle entry points) the payload is plain UTF-8 text.
#[repr(C)]
#[derive(Debug)]
pub struct RawResponse {
    pub status: u32,
    pub payload: OwnedBuf,
}

impl RawResponse {
    /// The value the receiving side initialises its out-parameter with (500, no payload).
    pub const EMPTY: RawResponse = RawResponse { status: 500, payload: OwnedBuf::EMPTY };
}

/// `HTTP method + path pattern -> slice method`. Path patterns are `/`-separated segments, each a
/// literal or a `{name}` parameter.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RouteDescriptor {
    pub http_method: StrRef,
    pub path: StrRef,
    pub method: StrRef,
}

/// Messages on `topic` are delivered to `method`, as [`delivery`] says (version 4 on).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionDescriptor {
    pub topic: StrRef,
    pub method: StrRef,
    /// One of [`delivery`].
    pub delivery: u32,
}

/// How a topic's messages reach the instances of one subscribing slice.
pub mod delivery {
    /// Each message to one instance (the consumer group of the slice).
    pub const COMPETING: u32 = 0;
    /// Each message to every instance.
    pub const BROADCAST: u32 = 1;
}

/// `method` runs as the task `name`: every `interval_ms` milliseconds when `cron` is empty, else at
/// the times of the five-field cron expression `cron` in `time_zone` (empty: UTC). Runs missed while
/// the cluster could not run them follow `missed` (one of [`missed`]); `missed_limit` bounds
/// [`missed::RUN_ALL`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScheduleDescriptor {
    pub name: StrRef,
    pub interval_ms: u64,
    pub method: StrRef,
    pub cron: StrRef,
    pub time_zone: StrRef,
    pub missed: u32,
    pub missed_limit: u32,
}

/// What a schedule does about runs it missed (the cluster had no quorum or no instance).
pub mod missed {
    /// Forget them; run at the next time due.
    pub const SKIP: u32 = 0;
    /// Run once for all of them, then at the next time due.
    pub const RUN_ONCE: u32 = 1;
    /// Run each of them, at most `missed_limit`, the newest ones.
    pub const RUN_ALL: u32 = 2;
}

/// Bits of [`SliceDescriptor::flags`].
pub mod slice_flags {
    /// One instance serves at a time: the holder of the slice's lease (version 4 on).
    pub const SINGLE_ACTIVE: u32 = 1;
}

/// Borrowed array in the descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Array<T> {
    pub ptr: *const T,
    pub len: usize,
}

/// `start(host, config, &mut instance, &mut error) -> status`. On [`status::OK`] `*instance` is the
/// slice's instance pointer; otherwise `*error` may hold a message for the host to log.
pub type StartFn = unsafe extern "C" fn(
    host: *const HostApi,
    config: Bytes,
    instance: *mut *mut c_void,
    error: *mut RawResponse,
) -> u32;

/// `stop(instance, &mut error) -> status`: stops the instance and frees it, whatever the outcome.
pub type StopFn = unsafe extern "C" fn(instance: *mut c_void, error: *mut RawResponse) -> u32;

/// `reconfigure(instance, config, &mut error) -> status`: the instance gets a new config (encoded
/// like the one `start` got). [`status::OK`] accepts it; anything else refuses it, and `*error` may
/// hold the slice's message. The instance is live and calls may run at the same time.
pub type ReconfigureFn = unsafe extern "C" fn(instance: *const c_void, config: Bytes, error: *mut RawResponse) -> u32;

/// `call(instance, method, request, &mut response)`: `request` is encoded as in [`crate::codec`].
pub type CallFn =
    unsafe extern "C" fn(instance: *const c_void, method: StrRef, request: Bytes, response: *mut RawResponse);

/// Frees a buffer the same side returned.
pub type FreeFn = unsafe extern "C" fn(buf: OwnedBuf);

/// What a slice library describes about itself. `abi_version` must stay the first field forever.
#[repr(C)]
pub struct SliceDescriptor {
    pub abi_version: u32,
    /// `size_of::<SliceDescriptor>()` as the slice saw it, a second guard against layout drift.
    pub descriptor_size: u32,
    pub name: StrRef,
    pub version: StrRef,
    pub methods: Array<StrRef>,
    pub routes: Array<RouteDescriptor>,
    pub subscriptions: Array<SubscriptionDescriptor>,
    pub schedules: Array<ScheduleDescriptor>,
    pub start: Option<StartFn>,
    pub stop: Option<StopFn>,
    pub call: Option<CallFn>,
    pub free: Option<FreeFn>,
    /// Optional: a library without it accepts every new config (version 3 on).
    pub reconfigure: Option<ReconfigureFn>,
    /// [`slice_flags`] bits (version 4 on).
    pub flags: u32,
}

/// Host callback: call `method` of the active slice `artifact` (`group:artifact:version`) with a
/// request in the request encoding, waiting at most `timeout_ms` (0: no timeout of its own, only the
/// deadline of the call it is part of, or the node's call deadline).
pub type HostCallFn = unsafe extern "C" fn(
    ctx: *const c_void,
    artifact: StrRef,
    method: StrRef,
    request: Bytes,
    timeout_ms: u64,
    response: *mut RawResponse,
);

/// Host callback: log `message` at `level` (see [`log_level`]) under the calling slice's name.
pub type HostLogFn = unsafe extern "C" fn(ctx: *const c_void, level: u32, message: StrRef);

/// Host callback: read config `key`; returns 1 and fills `value` when present, 0 when absent.
pub type HostConfigFn = unsafe extern "C" fn(ctx: *const c_void, key: StrRef, value: *mut OwnedBuf) -> u32;

/// What the host knows about the call running on the calling thread: its request id, its deadline,
/// the slice that made it and how deep in a chain of slice-to-slice calls it is. The two buffers are
/// host-owned (give them back to [`HostApi::free`]); empty when unknown.
#[repr(C)]
#[derive(Debug)]
pub struct RawInvocation {
    /// 1 when the call has a deadline, 0 when it has none (or no call runs on the thread).
    pub has_deadline: u32,
    /// Slice-to-slice calls between the client's request and this call (0: called from HTTP, a
    /// forwarded HTTP call, a watch or a schedule).
    pub depth: u32,
    /// Milliseconds left until the deadline (0: already past).
    pub remaining_ms: u64,
    /// The request id (`X-Request-Id`) of the client request this call serves.
    pub request_id: OwnedBuf,
    /// `group:artifact:version` of the calling slice, for a slice-to-slice call.
    pub caller: OwnedBuf,
    /// The epoch of the lease this instance of a single-active slice holds (0: none, or not
    /// single-active). It grows with every change of holder (version 4 on).
    pub lease_epoch: u64,
}

impl RawInvocation {
    pub const EMPTY: RawInvocation = RawInvocation {
        has_deadline: 0,
        depth: 0,
        remaining_ms: 0,
        request_id: OwnedBuf::EMPTY,
        caller: OwnedBuf::EMPTY,
        lease_epoch: 0,
    };
}

/// Host callback: fill `out` with the invocation running on the calling thread.
pub type HostInvocationFn = unsafe extern "C" fn(ctx: *const c_void, out: *mut RawInvocation);

/// The operations of [`HostKvFn`].
pub mod kv_op {
    /// `key` -> payload `u8 found, u64 LE version, value` (found 0: nothing after it).
    pub const GET: u32 = 1;
    /// `key`, `value` -> payload `u64 LE version`.
    pub const PUT: u32 = 2;
    /// `key` -> payload `u8 existed`.
    pub const DELETE: u32 = 3;
    /// `key`, `expected` (when `has_expected`), `value` -> payload `u64 LE version`.
    pub const COMPARE_AND_SET: u32 = 4;
    /// `key` as the prefix, `limit` -> payload `u32 LE count`, then per entry `u32 LE key length, key,
    /// u64 LE version, u32 LE value length, value`.
    pub const LIST: u32 = 5;
    /// `key` as the prefix, `value` as the method name -> empty payload.
    pub const WATCH: u32 = 6;
}

/// Outcome codes of [`HostKvFn`] (the [`RawResponse::status`] it writes). Errors carry a payload:
/// `VERSION_MISMATCH`: `u8 has_current, u64 LE current`; `TOO_LARGE` and `QUOTA_EXCEEDED`: `u64 LE
/// limit`, then the name of what is over (UTF-8); `INVALID` and `UNAVAILABLE`: the message (UTF-8);
/// `TIMEOUT`: nothing.
pub mod kv_status {
    pub const OK: u32 = 0;
    pub const VERSION_MISMATCH: u32 = 1;
    pub const TOO_LARGE: u32 = 2;
    pub const QUOTA_EXCEEDED: u32 = 3;
    pub const INVALID: u32 = 4;
    pub const UNAVAILABLE: u32 = 5;
    pub const TIMEOUT: u32 = 6;
}

/// One cluster-state operation, as [`HostKvFn`] receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawKvRequest {
    /// One of [`kv_op`].
    pub op: u32,
    /// 1 when `expected` holds a version (compare-and-set on a present key), 0 for "only if absent".
    pub has_expected: u32,
    pub expected: u64,
    /// Most entries a list answers.
    pub limit: u64,
    /// The key, or the prefix for list and watch.
    pub key: StrRef,
    /// The value to write, or the method name for watch.
    pub value: Bytes,
}

/// Host callback: run one cluster-state operation for the calling slice; the answer's status is one
/// of [`kv_status`] and its payload is laid out as [`kv_op`] and [`kv_status`] say. Blocks the calling
/// thread until the answer or the call's deadline.
pub type HostKvFn = unsafe extern "C" fn(ctx: *const c_void, request: *const RawKvRequest, out: *mut RawResponse);

/// Host callback: publish `message` to `topic`; the response tells whether it was accepted.
pub type HostPublishFn =
    unsafe extern "C" fn(ctx: *const c_void, topic: StrRef, message: Bytes, response: *mut RawResponse);

/// The deadline and cluster hops of the call running on a thread, as the host hands them out to be
/// carried into another thread (see [`HostApi::call_scope`] and [`HostApi::enter_scope`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCallScope {
    /// 1 when the call has a deadline, 0 when it has none (no call, or a call without one).
    pub has_deadline: u32,
    /// Cluster hops of the call's causal chain so far.
    pub hops: u32,
    /// Milliseconds left until the deadline when the scope was taken (0: already past).
    pub remaining_ms: u64,
}

/// Host callback: write the scope of the call running on this thread into `scope` (no deadline and
/// no hops on a thread that runs no call).
pub type HostCallScopeFn = unsafe extern "C" fn(ctx: *const c_void, scope: *mut RawCallScope);

/// Slice code run by [`HostEnterScopeFn`]; it must not unwind.
pub type ScopeBodyFn = unsafe extern "C" fn(data: *mut c_void);

/// Host callback: run `body(data)` on this thread with `scope` as the thread's call scope, and
/// restore the thread's previous scope when `body` returns.
pub type HostEnterScopeFn =
    unsafe extern "C" fn(ctx: *const c_void, scope: RawCallScope, body: ScopeBodyFn, data: *mut c_void);

/// Log levels on the wire.
pub mod log_level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// The callbacks the host gives a slice in `start`. The table stays valid until `stop` returns, and
/// every function in it may be called from any thread.
#[repr(C)]
pub struct HostApi {
    pub abi_version: u32,
    /// Opaque host state passed back as the first argument of every callback.
    pub ctx: *const c_void,
    /// Id of the node the slice runs on.
    pub node_id: StrRef,
    pub call: HostCallFn,
    pub log: HostLogFn,
    pub config: HostConfigFn,
    pub publish: HostPublishFn,
    /// Frees buffers the host returned (`call`, `publish` and `kv` payloads, `config` values, invocation texts).
    pub free: FreeFn,
    /// The scope (deadline, hops) of the call running on the calling thread.
    pub call_scope: HostCallScopeFn,
    /// Runs slice code under a scope taken with `call_scope`, typically on a thread the slice started.
    pub enter_scope: HostEnterScopeFn,
    /// The invocation (request id, deadline, caller, depth) of the call running on the calling thread.
    pub invocation: HostInvocationFn,
    /// The slice's cluster state (`ctx.kv()`).
    pub kv: HostKvFn,
}
