//! invoke: how a call finds a slice.
//!
//! Owns the pieces of the data plane that need no I/O: the HTTP route table ([`routes`]) shared by
//! the app port of every node; later the endpoint registry, load balancing and the forwarding
//! protocol. Invariant: nothing in this crate touches a socket, a thread or the clock.

pub mod routes;
