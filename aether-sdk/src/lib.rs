//! `aether-sdk`: write slices, the units of business logic an Aether cluster runs.
//!
//! A slice is a `cdylib` that implements [`Slice`] and invokes [`export_slice!`] once. The macro
//! exports one symbol, [`abi::DESCRIPTOR_SYMBOL`], returning a C-layout [`abi::SliceDescriptor`]
//! that carries [`abi::ABI_VERSION`] first, the slice's name, version, methods, routes,
//! subscriptions and schedules, and the `start`/`stop`/`call`/`free`/`reconfigure` entry points. A
//! node refuses a library built against another ABI version and says which SDK to rebuild against.
//!
//! ```no_run
//! use aether_sdk::{Config, Context, Method, Request, Response, Route, Slice, Status};
//!
//! pub struct Hello {
//!     ctx: Context,
//! }
//!
//! impl Slice for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "1.0.0";
//!     const METHODS: &'static [Method] = &[Method::new("greet")];
//!     const ROUTES: &'static [Route] = &[Route::get("/hello/{name}", "greet")];
//!
//!     fn start(ctx: Context, _config: &Config) -> Result<Hello, aether_sdk::Error> {
//!         Ok(Hello { ctx })
//!     }
//!
//!     fn call(&self, _method: &str, request: &Request<'_>) -> Response {
//!         match request.param("name") {
//!             Some(name) => Response::text(format!("hello {name} from {}", self.ctx.node_id()))
//!                 .with_header("Cache-Control", "no-store"),
//!             None => Response::error(Status::BAD_REQUEST, "no name"),
//!         }
//!     }
//! }
//!
//! aether_sdk::export_slice!(Hello);
//! ```
//!
//! What a slice gets:
//! - a [`Request`]: HTTP method, path, query, header fields (case-insensitive lookup), path parameters
//!   and body (the byte layout is in [`codec`]);
//! - a [`Response`] to answer with: any [`Status`] from 100 to 599, header fields and a body, with
//!   helpers for JSON, `201 Created`, redirects, `204` and caching;
//! - a [`Context`]: calls to other slices ([`Context::call`], carrying the request id, deadline and
//!   depth, with a per-call timeout in [`Context::call_with`]), the [`Invocation`] being served, the
//!   slice's cluster state ([`Context::kv`]), live config and logging;
//! - [`Slice::reconfigure`], called when the blueprint changes the slice's config.
//!
//! With the `serde` feature, `Request::json` reads a body into any `T: Deserialize` and
//! `Response::to_json` answers any `T: Serialize`.
//!
//! Invariants this crate keeps on the slice side of the boundary:
//! - no panic unwinds into the host: every entry point catches it and answers with an error;
//! - buffers the slice returns are freed by the slice's own `free`, buffers the host returns by the host's;
//! - header fields that could split an HTTP message (CR, LF, NUL) never cross, in either direction;
//! - without features the crate depends on nothing but `std`, so slices build fast.
//!
//! See `SLICES.md` in the Aether repository for a walk-through.

pub mod abi;
pub mod codec;
mod context;
#[doc(hidden)]
pub mod export;
pub mod headers;
pub mod json;
pub mod kv;
mod response;
mod scope;
#[cfg(feature = "serde")]
mod serde_support;
mod status;
mod wire;

pub use codec::{encode_request, CodecError, Request, RequestBuilder, RequestParts};
pub use context::{Config, Context, Invocation, Level};
pub use kv::{Entry, Kv, KvError};
pub use response::{ContentType, Response};
pub use scope::{spawn_in_call, CallScope};
pub use status::Status;

use std::fmt;

/// Business logic the node runs. One value of the implementing type is one running instance: it
/// is made by [`Slice::start`], serves [`Slice::call`] from many threads at once, and is consumed by
/// [`Slice::stop`].
pub trait Slice: Sized + Send + Sync + 'static {
    /// Artifact id, e.g. `"echo"`.
    const NAME: &'static str;
    /// Semantic version; must match the version in the artifact coordinates.
    const VERSION: &'static str;
    /// Every method [`Slice::call`] accepts; calls to any other method are refused before `call`.
    const METHODS: &'static [Method];
    /// HTTP routes served by this slice's methods.
    const ROUTES: &'static [Route] = &[];
    /// Topics whose messages are delivered to a method.
    const SUBSCRIPTIONS: &'static [Subscription] = &[];
    /// Methods the cluster runs on a timer.
    const SCHEDULES: &'static [Schedule] = &[];
    /// True for a single-active slice: however many instances run, only the one holding the
    /// slice's lease serves calls, deliveries and schedules; the others stand by and one of them
    /// takes over when the holder's node dies or the instance fails. The blueprint may turn it on
    /// for a slice that says `false` (`single_active = true`), never off for one that says `true`.
    const SINGLE_ACTIVE: bool = false;

    /// Make a running instance. `ctx` stays usable until `stop` returns.
    fn start(ctx: Context, config: &Config) -> Result<Self, Error>;

    /// Called once no call is in flight any more, before the instance is dropped.
    fn stop(self) {}

    /// The blueprint changed this slice's config while the instance runs. Return `Ok` to accept it:
    /// from then on [`Context::config`] answers the new values. Return an error to refuse it: the
    /// instance keeps its old config and the refusal is reported. Calls may run at the same time.
    /// The default accepts every config (a slice that reads its config only in `start` then keeps
    /// what it read there, while `Context::config` answers the new values).
    fn reconfigure(&self, config: &Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// Answer one call to `method` (always one of [`Slice::METHODS`]).
    fn call(&self, method: &str, request: &Request<'_>) -> Response;
}

/// Why a slice could not start, or refused a new config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error { message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A method name in [`Slice::METHODS`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Method(abi::StrRef);

// SAFETY: points only at `'static` immutable text.
unsafe impl Sync for Method {}
// SAFETY: as above.
unsafe impl Send for Method {}

impl Method {
    pub const fn new(name: &'static str) -> Method {
        Method(abi::StrRef::new(name))
    }

    pub fn name(&self) -> &'static str {
        // SAFETY: made only by `Method::new` from a `&'static str`.
        unsafe { context_str(self.0) }
    }
}

/// `HTTP method + path pattern -> slice method`, e.g. `Route::get("/echo/{msg}", "echo")`.
/// Path segments are literals or `{name}` parameters, which reach the slice as [`Request::param`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Route(abi::RouteDescriptor);

// SAFETY: points only at `'static` immutable text.
unsafe impl Sync for Route {}
// SAFETY: as above.
unsafe impl Send for Route {}

impl Route {
    pub const fn new(http_method: &'static str, path: &'static str, method: &'static str) -> Route {
        Route(abi::RouteDescriptor {
            http_method: abi::StrRef::new(http_method),
            path: abi::StrRef::new(path),
            method: abi::StrRef::new(method),
        })
    }

    pub const fn get(path: &'static str, method: &'static str) -> Route {
        Route::new("GET", path, method)
    }

    pub const fn post(path: &'static str, method: &'static str) -> Route {
        Route::new("POST", path, method)
    }

    pub const fn put(path: &'static str, method: &'static str) -> Route {
        Route::new("PUT", path, method)
    }

    pub const fn delete(path: &'static str, method: &'static str) -> Route {
        Route::new("DELETE", path, method)
    }
}

/// Messages on `topic` go to `method`: each message to one instance ([`Subscription::competing`],
/// also [`Subscription::new`]) or to every instance ([`Subscription::broadcast`]). The blueprint may
/// override the delivery per topic. A message arrives as a `POST` request whose body is the message
/// and whose header fields say where it came from (see SLICES.md, "Messaging"); any 2xx answer
/// acknowledges it, anything else (or no answer in time) is retried, then dead-lettered.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Subscription(abi::SubscriptionDescriptor);

// SAFETY: points only at `'static` immutable text.
unsafe impl Sync for Subscription {}
// SAFETY: as above.
unsafe impl Send for Subscription {}

impl Subscription {
    /// Competing delivery: each message to one instance of this slice.
    pub const fn new(topic: &'static str, method: &'static str) -> Subscription {
        Subscription::competing(topic, method)
    }

    /// Each message to one instance of this slice (the slice's instances compete for messages).
    pub const fn competing(topic: &'static str, method: &'static str) -> Subscription {
        Subscription(abi::SubscriptionDescriptor {
            topic: abi::StrRef::new(topic),
            method: abi::StrRef::new(method),
            delivery: abi::delivery::COMPETING,
        })
    }

    /// Each message to every instance of this slice.
    pub const fn broadcast(topic: &'static str, method: &'static str) -> Subscription {
        Subscription(abi::SubscriptionDescriptor {
            topic: abi::StrRef::new(topic),
            method: abi::StrRef::new(method),
            delivery: abi::delivery::BROADCAST,
        })
    }
}

/// What a schedule does about runs it missed while the cluster could not run them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// Forget them; run at the next time due (the default).
    Skip,
    /// Run once for all of them, then at the next time due.
    RunOnce,
    /// Run each of them, up to this many (the newest).
    RunAll(u32),
}

/// `method` runs on a timer as the task `name`, on one instance, started by the cluster's leader;
/// each run is recorded in the cluster before it starts, so a run never happens twice.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Schedule(abi::ScheduleDescriptor);

// SAFETY: points only at `'static` immutable text.
unsafe impl Sync for Schedule {}
// SAFETY: as above.
unsafe impl Send for Schedule {}

impl Schedule {
    /// Every `interval_ms` milliseconds.
    pub const fn every_ms(name: &'static str, interval_ms: u64, method: &'static str) -> Schedule {
        Schedule(abi::ScheduleDescriptor {
            name: abi::StrRef::new(name),
            interval_ms,
            method: abi::StrRef::new(method),
            cron: abi::StrRef::new(""),
            time_zone: abi::StrRef::new(""),
            missed: abi::missed::SKIP,
            missed_limit: 0,
        })
    }

    /// At the times of a five-field cron expression (`minute hour day-of-month month day-of-week`,
    /// with ranges, steps, lists and names), in UTC unless [`Schedule::in_time_zone`] says otherwise.
    pub const fn cron(name: &'static str, expression: &'static str, method: &'static str) -> Schedule {
        Schedule(abi::ScheduleDescriptor {
            name: abi::StrRef::new(name),
            interval_ms: 0,
            method: abi::StrRef::new(method),
            cron: abi::StrRef::new(expression),
            time_zone: abi::StrRef::new(""),
            missed: abi::missed::SKIP,
            missed_limit: 0,
        })
    }

    /// The time zone a cron expression is read in: an IANA name (`"Europe/Berlin"`) or `"UTC"`.
    pub const fn in_time_zone(self, time_zone: &'static str) -> Schedule {
        let mut d = self.0;
        d.time_zone = abi::StrRef::new(time_zone);
        Schedule(d)
    }

    /// What to do about missed runs (default [`Missed::Skip`]).
    pub const fn on_missed(self, missed: Missed) -> Schedule {
        let mut d = self.0;
        let (code, limit) = match missed {
            Missed::Skip => (abi::missed::SKIP, 0),
            Missed::RunOnce => (abi::missed::RUN_ONCE, 0),
            Missed::RunAll(limit) => (abi::missed::RUN_ALL, limit),
        };
        d.missed = code;
        d.missed_limit = limit;
        Schedule(d)
    }
}

/// # Safety
/// `text` was made from a `&'static str`.
unsafe fn context_str(text: abi::StrRef) -> &'static str {
    // SAFETY: forwarded caller contract.
    unsafe { context::str_from(text) }
}

/// Export `$slice` (a type implementing [`Slice`]) as this library's slice. Use once per crate, at
/// its root; the full example is in the [crate docs](crate).
#[macro_export]
macro_rules! export_slice {
    ($slice:ty) => {
        /// The slice descriptor the host looks up by name.
        #[unsafe(no_mangle)]
        pub extern "C" fn aether_slice_descriptor() -> *const $crate::abi::SliceDescriptor {
            static DESCRIPTOR: $crate::export::StaticDescriptor = $crate::export::StaticDescriptor::new::<$slice>();
            DESCRIPTOR.as_ptr()
        }
    };
}
