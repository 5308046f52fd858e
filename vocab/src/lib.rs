//! The shared vocabulary of Aether: the values that both the control plane and the slice container speak of,
//! each with the one parser that decides what is valid.
//!
//! It owns:
//! - [`Artifact`], [`ArtifactBase`], [`SemVer`]: slice coordinates `group:artifact:version` and their place
//!   in a Maven-layout repository;
//! - [`NodeId`], [`Name`] and the key-segment check they share;
//! - [`SliceState`] and the allowed steps of the slice lifecycle;
//! - [`Selection`]: how a call picks an instance of a slice;
//! - [`Delivery`], [`MissedRuns`], [`Timing`]: how a slice subscribes to topics and declares scheduled tasks;
//! - [`ParseError`], which names the part of the input that is wrong.
//!
//! Invariants: a value exists only if its parser accepted it, so a coordinate or name accepted at one edge
//! (blueprint, upload, KV key, dev-mode flag) is accepted everywhere else; no parser panics on any input.
//!
//! It must never depend on anything but std and serde: `kvstore`, `control` and `container` sit above it,
//! and `container` must not learn about the cluster through it.

pub mod artifact;
mod error;
pub mod lifecycle;
pub mod messaging;
pub mod name;
pub mod selection;

pub use artifact::{Artifact, ArtifactBase, SemVer, COORDINATE_BYTES_MAX, PRE_RELEASE_BYTES_MAX};
pub use error::ParseError;
pub use lifecycle::{can_transition, SliceState};
pub use messaging::{Delivery, MissedRuns, Timing};
pub use name::{Name, NodeId, NAME_BYTES_MAX, NODE_ID_BYTES_MAX};
pub use selection::Selection;
