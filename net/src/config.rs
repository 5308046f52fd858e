//! What the transport needs to know: who this node is, the shared secret, where to listen, the peer table,
//! the bounds and timings of every connection, and the TLS settings when the cluster port runs TLS.

use crate::tls::ClusterTls;
use std::net::SocketAddr;
use std::time::Duration;

/// One other node of the cluster, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub id: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub node_id: String,
    pub cluster: String,
    pub secret: Vec<u8>,
    pub listen: SocketAddr,
    /// Every other node (never this one). A peer's index in this list is its `PeerId`.
    pub peers: Vec<PeerSpec>,
    pub frame_len_max: usize,
    /// Messages larger than this go out in fragments of this size (bulk frames, reassembled on arrival).
    pub fragment_bytes: usize,
    /// Largest message, fragmented or not, a peer may send or announce.
    pub message_len_max: usize,
    /// Bytes queued for one peer before `send` refuses more.
    pub queue_bytes_max: usize,
    pub dial_backoff_min: Duration,
    pub dial_backoff_max: Duration,
    /// A connection not authenticated (TLS included) this long after it opened is closed.
    pub handshake_timeout: Duration,
    /// A ping goes to a peer that has heard nothing from us for this long.
    pub keepalive_interval: Duration,
    /// A connection that has received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Inbound connections still handshaking, at most: the handshake budget. A full budget refuses
    /// strangers; a connection from a configured peer's address takes the place of a pending one.
    pub handshaking_max: usize,
    /// Inbound connections still handshaking from one source address, at most (plus one per configured
    /// peer at that address).
    pub handshaking_per_ip_max: usize,
    /// Seeds the dial jitter.
    pub seed: u64,
    /// Mutual TLS on every cluster connection, both directions, when set.
    pub tls: Option<ClusterTls>,
}

impl NetConfig {
    /// A config with the default bounds and timings.
    pub fn new(node_id: &str, cluster: &str, secret: &[u8], listen: SocketAddr, peers: Vec<PeerSpec>) -> NetConfig {
        NetConfig {
            node_id: node_id.to_string(),
            cluster: cluster.to_string(),
            secret: secret.to_vec(),
            listen,
            peers,
            frame_len_max: wire::FRAME_LEN_MAX_DEFAULT,
            fragment_bytes: 1024 * 1024,
            message_len_max: 512 * 1024 * 1024,
            queue_bytes_max: 64 * 1024 * 1024,
            dial_backoff_min: Duration::from_millis(50),
            dial_backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(2),
            handshaking_max: 64,
            handshaking_per_ip_max: 4,
            seed: 0x5eed,
            tls: None,
        }
    }
}
