//! What the leader's pass tests share: node ids, raw KV puts, and slice records as nodes write them.

use crate::lifecycle::SliceState;
use crate::records::{Record, SliceRecord};
use kvstore::{Command, KvState, NodeId};
use serde_json::Map;

pub fn n(i: usize) -> NodeId {
    NodeId::parse(&format!("n{i}")).unwrap()
}

pub fn put(kv: &mut KvState, key: &str, value: Vec<u8>) {
    kv.apply_command(Command::Put { key: key.parse().unwrap(), value }, &mut |_| {});
}

/// A record of `artifact` on node `node` wanted ACTIVE and in `state` since `since_ms`; an ACTIVE one with the
/// endpoint of its method `get`, as its node registers it.
pub fn slice(kv: &mut KvState, node: usize, artifact: &str, state: SliceState, instance: u32, since_ms: u64) {
    let record = SliceRecord { state, ..SliceRecord::placed(instance, Map::new(), since_ms) };
    put(kv, &format!("slices/n{node}/{artifact}"), record.encode());
    if state == SliceState::Active {
        put(kv, &format!("endpoints/{artifact}/get/n{node}:{instance}"), b"{}".to_vec());
    }
}
