//! Which peers this node hears, and whether it sees a quorum: the transport's view, for refusing requests
//! without a quorum and for routing calls to reachable nodes.
//!
//! A pure failure detector over what the transport reports (connected, time since the last frame; pings
//! keep that fresh every 100 ms): a peer is alive while connected and heard from within the suspicion
//! timeout. This view is private to the node and changes with every hiccup of one link, so nothing
//! cluster-wide is decided on it: who leads and which nodes are dead come from lease records replicated
//! through consensus (`managers::Leader`, `control::cluster::liveness`).

use std::time::Duration;

/// What changed at one evaluation, for logs and the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    NodeUp(String),
    NodeDown(String),
    QuorumGained,
    QuorumLost,
}

/// One peer as the transport reports it.
#[derive(Debug, Clone)]
pub struct PeerObservation {
    pub id: String,
    pub connected: bool,
    pub last_seen_ago: Option<Duration>,
}

pub struct Membership {
    me: String,
    /// Every voting node (this one included while it votes), sorted by id.
    nodes: Vec<String>,
    alive: Vec<bool>,
    suspicion: Duration,
    quorum: bool,
}

impl Membership {
    pub fn new(me: &str, nodes: &[String], suspicion: Duration) -> Membership {
        let mut nodes = nodes.to_vec();
        nodes.sort();
        nodes.dedup();
        let alive = nodes.iter().map(|n| n == me).collect();
        let mut membership = Membership { me: me.to_string(), nodes, alive, suspicion, quorum: false };
        membership.quorum = membership.majority_alive();
        membership
    }

    /// The voting nodes changed (a reconfiguration): keeps what is known of the ones that stay. The quorum
    /// is judged again at the next `observe`.
    pub fn set_nodes(&mut self, nodes: &[String]) {
        let mut next = nodes.to_vec();
        next.sort();
        next.dedup();
        let alive = next.iter().map(|n| *n == self.me || self.is_alive(n)).collect();
        self.nodes = next;
        self.alive = alive;
    }

    /// Re-evaluates from the transport's view; returns what changed, in a stable order.
    pub fn observe(&mut self, peers: &[PeerObservation]) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if *node == self.me {
                continue;
            }
            let seen = peers.iter().find(|p| p.id == *node);
            let alive = seen.is_some_and(|p| p.connected && p.last_seen_ago.is_some_and(|d| d <= self.suspicion));
            if alive != self.alive[i] {
                self.alive[i] = alive;
                events.push(if alive {
                    MembershipEvent::NodeUp(node.clone())
                } else {
                    MembershipEvent::NodeDown(node.clone())
                });
            }
        }
        let quorum = self.majority_alive();
        if quorum != self.quorum {
            self.quorum = quorum;
            events.push(if quorum { MembershipEvent::QuorumGained } else { MembershipEvent::QuorumLost });
        }
        events
    }

    fn majority_alive(&self) -> bool {
        self.alive.iter().filter(|a| **a).count() * 2 > self.nodes.len()
    }

    pub fn has_quorum(&self) -> bool {
        self.quorum
    }

    pub fn is_alive(&self, id: &str) -> bool {
        self.nodes.iter().position(|n| n == id).is_some_and(|i| self.alive[i])
    }

    /// Alive node ids, sorted.
    pub fn alive_nodes(&self) -> Vec<String> {
        self.nodes.iter().zip(&self.alive).filter(|(_, a)| **a).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        vec!["node-2".into(), "node-1".into(), "node-3".into()]
    }

    fn seen(id: &str, ms: u64) -> PeerObservation {
        PeerObservation { id: id.into(), connected: true, last_seen_ago: Some(Duration::from_millis(ms)) }
    }

    #[test]
    fn alone_there_is_no_quorum() {
        let m = Membership::new("node-2", &ids(), Duration::from_millis(500));
        assert!(!m.has_quorum());
    }

    #[test]
    fn a_silent_peer_is_suspected_and_the_quorum_holds() {
        let mut m = Membership::new("node-2", &ids(), Duration::from_millis(500));
        let events = m.observe(&[seen("node-1", 10), seen("node-3", 10)]);
        assert!(events.contains(&MembershipEvent::QuorumGained));
        let events = m.observe(&[seen("node-1", 900), seen("node-3", 10)]);
        assert_eq!(events, vec![MembershipEvent::NodeDown("node-1".into())]);
        assert!(m.has_quorum());
        assert!(!m.is_alive("node-1"));
    }

    #[test]
    fn minority_loses_quorum_and_leader() {
        let mut m = Membership::new("node-3", &ids(), Duration::from_millis(500));
        m.observe(&[seen("node-1", 10), seen("node-2", 10)]);
        let disconnected =
            PeerObservation { id: "node-1".into(), connected: false, last_seen_ago: Some(Duration::ZERO) };
        let events = m.observe(&[disconnected, seen("node-2", 5000)]);
        assert!(events.contains(&MembershipEvent::QuorumLost));
        assert_eq!(m.alive_nodes(), vec!["node-3".to_string()]);
    }

    #[test]
    fn a_single_node_cluster_is_its_own_quorum() {
        let m = Membership::new("dev", &["dev".to_string()], Duration::from_millis(500));
        assert!(m.has_quorum());
    }
}
