//! The pure logic of deployment: blueprints, the slice lifecycle, and the KV records and the cluster and
//! node deployment managers. No I/O: state and time in, KV writes and node actions out.
pub mod blueprint;
pub mod cluster;
pub mod lifecycle;
pub mod node;
pub mod records;
mod text;
pub mod write;
