//! The ring: `PARTITIONS` partitions, each member placing `VIRTUAL_NODES` points; a partition's replicas are
//! the first `replication` distinct members clockwise from the partition's point. Hashing is a fixed
//! function of the bytes (never `std`'s randomised hasher), so every node computes the same ring.
//!
//! A key's partition is the top 10 bits of its hash; partition `p` starts at point `p << 54` on the 64-bit
//! ring. The replica table is computed once per membership (`Ring::new`), so lookups are O(1).
//!
//! Invariants: the replicas of a partition are distinct members, `min(replication, members)` of them, and
//! depend only on the member set (not its order) and the replication factor.

use crate::{NodeId, PARTITIONS, VIRTUAL_NODES};

/// The fixed 64-bit hash of the DHT: FNV-1a over the bytes, then the splitmix64 finaliser so the top bits
/// (which pick the partition) are well mixed. Stable across builds, platforms and processes.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(hash)
}

/// The splitmix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bits of the hash that are not the partition number.
const PARTITION_SHIFT: u32 = 64 - PARTITIONS.trailing_zeros();

/// The placement of partitions on the current members.
#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<NodeId>,
    replication: usize,
    /// For each partition, indices into `members` of its replicas, primary first.
    table: Vec<Vec<usize>>,
}

impl Ring {
    /// A ring over `members` (order does not matter; duplicates are ignored) with `replication` replicas per
    /// partition, capped by the number of members.
    pub fn new(members: &[NodeId], replication: usize) -> Ring {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        let table = placement(&members, replication);
        Ring { members, replication, table }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The configured replication factor (before the cap by membership).
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// The partition a key belongs to.
    pub fn partition_of(key: &str) -> u32 {
        (hash64(key.as_bytes()) >> PARTITION_SHIFT) as u32
    }

    /// The partition's replicas, the first being its primary; at most `replication` members.
    pub fn replicas(&self, partition: u32) -> Vec<NodeId> {
        self.replica_ids(partition).cloned().collect()
    }

    /// The partition's replicas without copying them.
    pub fn replica_ids(&self, partition: u32) -> impl Iterator<Item = &NodeId> + '_ {
        let indices = self.table.get(partition as usize).map(Vec::as_slice).unwrap_or(&[]);
        indices.iter().filter_map(|index| self.members.get(*index))
    }

    /// Whether `node` is one of the partition's replicas.
    pub fn is_replica(&self, partition: u32, node: &str) -> bool {
        self.index_of(node).is_some_and(|index| self.holds(partition, index))
    }

    /// A member's position in `members()`, for repeated `holds` checks without string comparisons.
    pub fn index_of(&self, node: &str) -> Option<usize> {
        self.members.binary_search_by(|member| member.as_str().cmp(node)).ok()
    }

    /// Whether the member at `index` of `members()` is one of the partition's replicas.
    pub fn holds(&self, partition: u32, index: usize) -> bool {
        self.table.get(partition as usize).is_some_and(|replicas| replicas.contains(&index))
    }

    /// How many replicas each partition has: `min(replication, members)`.
    pub fn replica_count(&self) -> usize {
        self.replication.min(self.members.len())
    }
}

/// The replica table: for each partition, walk clockwise from its point collecting distinct members.
fn placement(members: &[NodeId], replication: usize) -> Vec<Vec<usize>> {
    let wanted = replication.min(members.len());
    let mut points: Vec<(u64, usize)> = Vec::with_capacity(members.len() * VIRTUAL_NODES as usize);
    for (index, member) in members.iter().enumerate() {
        for vnode in 0..VIRTUAL_NODES {
            let mut bytes = member.as_bytes().to_vec();
            bytes.push(b'#');
            bytes.extend_from_slice(&vnode.to_le_bytes());
            points.push((hash64(&bytes), index));
        }
    }
    points.sort_unstable();
    (0..PARTITIONS)
        .map(|partition| {
            let start = u64::from(partition) << PARTITION_SHIFT;
            let first = points.partition_point(|(point, _)| *point < start);
            let mut replicas = Vec::with_capacity(wanted);
            for step in 0..points.len() {
                if replicas.len() == wanted {
                    break;
                }
                let (_, member) = points[(first + step) % points.len()];
                if !replicas.contains(&member) {
                    replicas.push(member);
                }
            }
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn hash_is_fixed() {
        // Pinned: a change here moves every key to another partition (and every digest) on a rolling upgrade.
        assert_eq!(hash64(b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash64(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash64(b"node-1"), 0x1395_0d4e_f307_e655);
        assert_eq!(Ring::partition_of("artifact/a"), 165);
        assert_eq!(Ring::partition_of("key-0"), 629);
        assert_ne!(hash64(b"a"), hash64(b"b"));
    }

    #[test]
    fn partitions_cover_the_range() {
        let mut seen = vec![false; PARTITIONS as usize];
        for i in 0..100_000 {
            let p = Ring::partition_of(&format!("key-{i}"));
            assert!(p < PARTITIONS);
            seen[p as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn replicas_are_distinct_capped_and_order_independent() {
        let ring = Ring::new(&nodes(5), 3);
        let mut reversed = nodes(5);
        reversed.reverse();
        let other = Ring::new(&reversed, 3);
        for p in 0..PARTITIONS {
            let replicas = ring.replicas(p);
            assert_eq!(replicas.len(), 3);
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
            assert_eq!(replicas, other.replicas(p));
        }
        let small = Ring::new(&nodes(2), 3);
        assert!((0..PARTITIONS).all(|p| small.replicas(p).len() == 2));
        assert!(Ring::new(&[], 3).replicas(0).is_empty());
    }

    #[test]
    fn load_is_spread_and_a_join_moves_little() {
        let ring = Ring::new(&nodes(5), 3);
        let mut primaries = std::collections::BTreeMap::new();
        for p in 0..PARTITIONS {
            *primaries.entry(ring.replicas(p)[0].clone()).or_insert(0) += 1;
        }
        // 1024 / 5 = 205 on average; 150 virtual nodes keep every member within a generous band.
        assert!(primaries.values().all(|n| (120..300).contains(n)), "{primaries:?}");
        let grown = Ring::new(&nodes(6), 3);
        let moved = (0..PARTITIONS).filter(|p| ring.replicas(*p)[0] != grown.replicas(*p)[0]).count();
        assert!(moved < 350, "{moved} primaries moved");
    }
}
