//! Node and cluster metrics without I/O: the latency histogram, the summary each node sends its peers
//! once a second, the per-node history ring, the board that holds every node's latest summary and
//! history, and the Prometheus rendering.
//!
//! What it owns: the formats and their bounds. What it must never do: read a clock, a file or a socket
//! (the daemon measures and passes figures and times in), or trust a summary that did not pass
//! [`summary::decode`].

pub mod board;
pub mod histogram;
pub mod history;
pub mod prometheus;
pub mod summary;

pub use board::{Board, Latest, MethodView, SLOW_CLUSTER_MAX, SLOW_THRESHOLD_MS_DEFAULT};
pub use histogram::Histogram;
pub use history::{Range, Ring, Sample, HISTORY_SAMPLES};
pub use summary::{
    decode, Connections, ConsensusFigures, InvocationTotals, LoopLag, MethodFigures, PeerTraffic, SlowCall, Summary,
    SummaryError,
};
