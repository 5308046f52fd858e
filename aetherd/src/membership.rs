//! Who is alive, whether this node is in a quorum, and who leads the control plane.
//!
//! A pure failure detector over what the transport reports (connected, time since the last frame; pings
//! keep that fresh every 100 ms): a peer is alive while connected and heard from within the suspicion
//! timeout. The leader is the smallest alive node id, but only while this node sees a quorum: every node
//! that sees the same live set names the same leader without exchanging a message, and a node in a
//! minority names none. The leader is not a consensus leader (Rabia has none); it runs the cluster-wide
//! managers, which act only through consensus, so two nodes briefly both believing they lead is safe.

use std::time::Duration;

/// What changed at one evaluation, for logs and the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    NodeUp(String),
    NodeDown(String),
    QuorumGained,
    QuorumLost,
    LeaderChanged(Option<String>),
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
    /// Every configured node, this one included, sorted by id.
    nodes: Vec<String>,
    alive: Vec<bool>,
    suspicion: Duration,
    quorum: bool,
    leader: Option<String>,
}

impl Membership {
    pub fn new(me: &str, nodes: &[String], suspicion: Duration) -> Membership {
        let mut nodes = nodes.to_vec();
        nodes.sort();
        nodes.dedup();
        let alive = nodes.iter().map(|n| n == me).collect();
        let mut membership = Membership { me: me.to_string(), nodes, alive, suspicion, quorum: false, leader: None };
        membership.quorum = membership.majority_alive();
        membership.leader = membership.pick_leader();
        membership
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
        let leader = self.pick_leader();
        if leader != self.leader {
            self.leader = leader.clone();
            events.push(MembershipEvent::LeaderChanged(leader));
        }
        events
    }

    fn majority_alive(&self) -> bool {
        self.alive.iter().filter(|a| **a).count() * 2 > self.nodes.len()
    }

    fn pick_leader(&self) -> Option<String> {
        if !self.majority_alive() {
            return None;
        }
        self.nodes.iter().zip(&self.alive).find(|(_, alive)| **alive).map(|(id, _)| id.clone())
    }

    pub fn has_quorum(&self) -> bool {
        self.quorum
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.as_deref() == Some(self.me.as_str())
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
    fn alone_there_is_no_quorum_and_no_leader() {
        let m = Membership::new("node-2", &ids(), Duration::from_millis(500));
        assert!(!m.has_quorum());
        assert_eq!(m.leader(), None);
    }

    #[test]
    fn smallest_alive_id_leads_and_takes_over_when_it_leaves() {
        let mut m = Membership::new("node-2", &ids(), Duration::from_millis(500));
        let events = m.observe(&[seen("node-1", 10), seen("node-3", 10)]);
        assert!(events.contains(&MembershipEvent::QuorumGained));
        assert_eq!(m.leader(), Some("node-1"));
        let events = m.observe(&[seen("node-1", 900), seen("node-3", 10)]);
        assert_eq!(
            events,
            vec![MembershipEvent::NodeDown("node-1".into()), MembershipEvent::LeaderChanged(Some("node-2".into()))]
        );
        assert!(m.is_leader());
        assert!(m.has_quorum());
    }

    #[test]
    fn minority_loses_quorum_and_leader() {
        let mut m = Membership::new("node-3", &ids(), Duration::from_millis(500));
        m.observe(&[seen("node-1", 10), seen("node-2", 10)]);
        let disconnected =
            PeerObservation { id: "node-1".into(), connected: false, last_seen_ago: Some(Duration::ZERO) };
        let events = m.observe(&[disconnected, seen("node-2", 5000)]);
        assert!(events.contains(&MembershipEvent::QuorumLost));
        assert!(events.contains(&MembershipEvent::LeaderChanged(None)));
        assert_eq!(m.alive_nodes(), vec!["node-3".to_string()]);
    }

    #[test]
    fn a_single_node_cluster_leads_itself() {
        let m = Membership::new("dev", &["dev".to_string()], Duration::from_millis(500));
        assert!(m.has_quorum());
        assert!(m.is_leader());
    }
}
