//! Peers added and retired while the loop runs: a cluster's membership changes without a restart.
//!
//! A `PeerId` is an index into the peer table and is never reused for another node: adding a node that was
//! retired before revives its old entry (with its new address), adding a new one appends an entry. A retired
//! peer keeps its entry so every `PeerId` the handler holds stays meaningful, but it has no connection, no
//! dial scheduled, its handshakes are refused ("not in this node's peer list") and sends to it fail with
//! `SendError::UnknownPeer`.
//!
//! Invariants: a live (not retired) peer without a connection or a dial in flight has a dial scheduled, as
//! for configured peers; a retired peer has neither a connection nor a dial.

use crate::backoff::Backoff;
use crate::config::PeerSpec;
use crate::timers::TimerKind;
use crate::transport::{Peer, Transport};
use crate::PeerId;
use log::info;
use std::time::Instant;

impl Transport {
    /// Adds `spec` to the peers (or revives the retired entry of the same node, or updates a live one's
    /// address) and dials it. Returns its `PeerId`; `None` for this node's own id.
    pub fn add_peer(&mut self, spec: PeerSpec, now: Instant) -> Option<PeerId> {
        if spec.id == self.config.node_id {
            return None;
        }
        if let Some(pid) = self.peers.iter().position(|p| p.spec.id == spec.id) {
            let peer = &mut self.peers[pid];
            if !peer.retired && peer.spec.addr == spec.addr {
                return Some(pid);
            }
            info!("peer {} now at {} ({})", spec.id, spec.addr, if peer.retired { "added again" } else { "moved" });
            self.admission.forget_peer_ip(peer.spec.addr.ip());
            self.admission.add_peer_ip(spec.addr.ip());
            peer.spec = spec;
            peer.retired = false;
            peer.backoff.reset();
            if let Some(i) = peer.conn.or(peer.dialing) {
                self.close(i, "peer address changed");
            }
            self.schedule_dial_now(pid, now);
            return Some(pid);
        }
        info!("peer {} added at {}", spec.id, spec.addr);
        self.admission.add_peer_ip(spec.addr.ip());
        self.peers.push(Peer::new(spec, &self.config));
        let pid = self.peers.len() - 1;
        self.schedule_dial_now(pid, now);
        Some(pid)
    }

    /// Retires a peer: closes its connection, stops dialing it and refuses it from now on.
    pub fn retire_peer(&mut self, pid: PeerId) {
        let Some(peer) = self.peers.get_mut(pid) else { return };
        if peer.retired {
            return;
        }
        info!("peer {} retired", peer.spec.id);
        peer.retired = true;
        let ip = peer.spec.addr.ip();
        let open = [peer.conn, peer.dialing];
        self.admission.forget_peer_ip(ip);
        for i in open.into_iter().flatten() {
            self.close(i, "peer retired");
        }
    }

    pub fn is_retired(&self, pid: PeerId) -> bool {
        self.peers.get(pid).is_some_and(|p| p.retired)
    }

    fn schedule_dial_now(&mut self, pid: PeerId, now: Instant) {
        let peer = &mut self.peers[pid];
        if peer.conn.is_some() || peer.dialing.is_some() || peer.dial_scheduled {
            return;
        }
        peer.dial_scheduled = true;
        self.timers.set(now, TimerKind::Dial(pid));
    }
}

impl Peer {
    pub(crate) fn new(spec: PeerSpec, config: &crate::config::NetConfig) -> Peer {
        Peer {
            spec,
            retired: false,
            conn: None,
            dialing: None,
            dial_scheduled: false,
            backoff: Backoff::new(config.dial_backoff_min, config.dial_backoff_max),
            last_seen: None,
            connected_since: None,
            last_failure: None,
            traffic: crate::Traffic::default(),
        }
    }
}
