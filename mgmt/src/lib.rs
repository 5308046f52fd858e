//! The management API on :8080: small HTTP (the `httpd` crate), JSON in and out, stable paths under `/api/...`,
//! and the cluster's artifact repository in Maven's layout under `/repository/...` (`repository`).
//!
//! What it owns: parsing and validating requests, routing, status codes and the JSON shapes of answers.
//! What it must never do: touch the node's state directly. Every answer comes from the [`Backend`], which
//! the daemon implements by sending a command to its event loop and waiting for the reply with a timeout.
//!
//! Every request enters through [`serve`], which applies the guard of the `auth` module (browser safety, API keys and
//! roles) before routing.
//!
//! Invariants: every error is `{"error": "...", "detail": "..."}` with a meaningful status (400 bad input,
//! 403 forbidden, 404 absent, 405 wrong method, 409 conflict, 413 too large, 422 an upload that is no slice
//! library of its coordinates, 503 not ready or no quorum, 504 timeout); no handler panics on any input.

mod api;
mod auth;
pub mod backup;
mod blueprint_checks;
mod blueprint_status;
mod deploy;
mod dht;
mod error;
mod events;
mod health;
mod idempotency;
mod keys;
mod kv;
pub mod later;
mod listings;
mod live;
mod maven_metadata;
mod members;
mod messaging;
mod methods;
mod metrics;
mod nodes;
mod openapi;
mod repository;
mod repository_path;
mod rollouts;
mod scaling;
mod schedules;
mod server;
mod upload;
mod validate;

#[cfg(test)]
mod repository_tests;
#[cfg(test)]
mod rollouts_tests;
#[cfg(test)]
mod routes_tests;
#[cfg(test)]
mod test_backend;

pub use api::{route, ArtifactUpload, Backend, ClusterView, FaultSpec, MemberView, NodeStatus, PeerView, WriteDone};
pub use auth::{access_for, screen, serve, Access, Auth, AuthConfig, Role, ROUTES};
pub use dht::DhtView;
pub use error::ApiError;
pub use events::{parse_since, EventSince, EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX};
pub use idempotency::{request_key, RequestKey, IDEMPOTENCY_KEY_BYTES_MAX};
pub use keys::KeyRecord;
pub use kv::{base64, KvEntry, KvPage, LIST_ENTRIES_MAX, LIST_VALUE_BYTES_MAX};
pub use listings::ArtifactInfo;
pub use live::{Setting, LEVELS};
pub use maven_metadata::is_snapshot;
pub use messaging::{Published, SubscriptionView, TopicView};
pub use methods::allowed as allowed_methods;
pub use openapi::OPENAPI_YAML;
pub use repository_path::{Checksum, RepoPath};
pub use server::{
    body_limit, http_config, is_kv_write, Request, Response, Server, StreamBody, ARTIFACT_BYTES_MAX, BODY_BYTES_MAX,
};
pub use validate::{DryRuns, DRY_RUNS_MAX};
