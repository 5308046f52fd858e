//! invoke: how a call finds a slice.
//!
//! Owns the pieces of the data plane that need no I/O, shared by the app port of every node and by
//! slice-to-slice calls:
//! - [`routes`]: the HTTP route table (`METHOD /path/{param}` -> target);
//! - [`registry`]: routes and endpoints as the replicated KV store holds them (`routes/...`,
//!   `endpoints/...`), kept current from watch events, the leases of single-active slices, and the choice
//!   of a target by each slice's selection strategy ([`selection`]: local-first, round-robin, random,
//!   least-loaded);
//! - [`protocol`]: the forwarding messages ([`InvokeRequest`], [`InvokeReply`]) carried in `Invoke` and
//!   `InvokeReply` frames, checked after decoding;
//! - [`versions`]: which version of a slice a call runs on (wanted versions, rollouts' ratios) and the
//!   pins a request carries so its whole chain of calls stays on one version set;
//! - [`forwarder`]: the table of forwarded calls in flight (ids, deadlines, peers) and the retry policy.
//!
//! Invariant: nothing in this crate touches a socket, a thread or the clock; time comes in as
//! `now_ms` arguments. Every table here has a fixed bound, and hitting it is an error the caller sees.

pub mod forwarder;
pub mod protocol;
pub mod registry;
pub mod routes;
pub mod selection;
pub mod versions;

pub use forwarder::{is_idempotent, Forwarder, ForwarderFull, PeerDownCall, CALLS_MAX_DEFAULT};
pub use protocol::{InvokeReply, InvokeRequest, ProtocolError, HOPS_MAX};
pub use registry::{
    artifact_base, Change, Endpoint, LeaseView, Registry, RegistryError, RouteTarget, Selector, Target,
};
pub use versions::{Pins, RolloutView, VersionTable};
