//! The ring: `PARTITIONS` partitions, each member placing `VIRTUAL_NODES` points; a partition's replicas are
//! the first `replication` distinct members clockwise from the partition's point. Hashing is a fixed
//! function of the bytes (never `std`'s randomised hasher), so every node computes the same ring.

use crate::NodeId;

/// The placement of partitions on the current members.
#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<NodeId>,
    replication: usize,
}

impl Ring {
    /// A ring over `members` (order does not matter; duplicates are ignored) with `replication` replicas per
    /// partition, capped by the number of members.
    pub fn new(members: &[NodeId], replication: usize) -> Ring {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        Ring { members, replication }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The partition a key belongs to.
    pub fn partition_of(key: &str) -> u32 {
        let _ = key;
        unimplemented!("ring")
    }

    /// The partition's replicas, the first being its primary; at most `replication` members.
    pub fn replicas(&self, partition: u32) -> Vec<NodeId> {
        let _ = (partition, self.replication);
        unimplemented!("ring")
    }
}
