//! The control-plane store of Aether: typed keys and the replicated key-value state machine.
//!
//! It owns:
//! - [`AetherKey`] and its parts ([`NodeId`], [`Artifact`], [`ArtifactBase`], [`SemVer`], [`Name`],
//!   [`HttpMethod`], [`RoutePath`], [`UserPath`]): every key of the control plane, parsed once at the edge,
//!   each with one canonical string form (see [`key`] for the forms); the parts are parsed by `vocab`, the
//!   one home of names and coordinates, and re-exported here;
//! - [`Command`] and its byte encoding: what clients submit and consensus orders as opaque payloads;
//! - [`KvState`]: the replicated state (entries with versions, the revision, the applied slot) and how a
//!   decided batch changes it, one [`ApplyResult`] per command;
//! - [`Store`]: that state plus this node's prefix watches, and snapshots of it;
//! - [`data`]: the `data/` namespace of slice state, its scopes and the quota accounting of each scope.
//!
//! Invariants:
//! - applying is deterministic: the same batches in the same slots give the same state and results on every
//!   replica; all limits that affect results are constants of this crate or travel in the command itself (a
//!   bounded write's quota), never node configuration;
//! - no input panics: decoding a payload or a snapshot, and parsing a key, return errors for any bytes;
//! - a key's version is the store revision of its last write, so versions are unique and only grow;
//! - watch events reach each watcher in apply order, through bounded queues; overflow is a visible `Resync`.
//!
//! It must never: touch a socket, thread, clock, file or random source (the node runtime does I/O with the
//! bytes this crate produces); depend on the consensus crate (the runtime glues the two); or let a node-local
//! setting change what a command does.
//!
//! Sketch of use by the node runtime:
//!
//! ```
//! use kvstore::{AetherKey, ApplyResult, Command, Store, WatchEvent};
//!
//! let mut store = Store::default();
//! let routes = store.watch("routes/").unwrap();
//!
//! // A client request becomes a consensus payload.
//! let key: AetherKey = "routes/GET/echo/{msg}".parse().unwrap();
//! let payload = Command::Put { key: key.clone(), value: b"org.example:echo:1.0.0".to_vec() }.encode().unwrap();
//!
//! // Consensus decides slot 1 with that payload; every replica applies it and answers its own clients.
//! let results = store.apply(1, [&payload]).unwrap();
//! assert!(matches!(results[0], ApplyResult::Ok { .. }));
//!
//! // Components drain their watches on the same loop.
//! let events = store.drain_events(routes).unwrap();
//! assert!(matches!(&events[0], WatchEvent::Put { key: k, .. } if *k == key));
//!
//! // Snapshots go to disk or to a peer that is behind.
//! let bytes = store.snapshot().unwrap();
//! let restored = Store::from_snapshot(&bytes, Default::default()).unwrap();
//! assert_eq!(restored.state(), store.state());
//! ```

mod checksum;
mod command;
pub mod data;
mod error;
pub mod key;
mod revision;
mod route;
pub mod snapshot;
mod state;
mod store;
mod watch;

pub use command::{Command, COMMAND_BYTES_MAX, GUARDS_MAX, VALUE_BYTES_MAX};
pub use data::{DataPath, DataScope, Quota, ScopeUsage, DATA_PATH_BYTES_MAX};
pub use error::{Error, ParseError};
pub use key::{AetherKey, Namespace, UserPath, KEY_BYTES_MAX};
pub use revision::Revision;
pub use route::{HttpMethod, RoutePath, ROUTE_PATH_BYTES_MAX};
pub use state::{ApplyResult, Change, Entry, KvState, ENTRIES_MAX, STORE_BYTES_MAX};
pub use store::Store;
pub use vocab::{Artifact, ArtifactBase, SemVer, COORDINATE_BYTES_MAX, PRE_RELEASE_BYTES_MAX};
pub use vocab::{Name, NodeId, NAME_BYTES_MAX, NODE_ID_BYTES_MAX};
pub use watch::{ResyncReason, WatchEvent, WatchId, WatchLimits};
