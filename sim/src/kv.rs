//! The simulated state machine: a key-value register store driven by decided batches, the same way the
//! real `kvstore` sits above consensus. It keeps each client's last response so a retried command that
//! already applied can be answered.
//!
//! Invariants: `apply` is deterministic, so replicas that applied the same decisions hold equal state;
//! `encode`/`decode` round-trip exactly (snapshots).

use std::collections::BTreeMap;

use consensus::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put { key: u64, value: u64 },
    Get { key: u64 },
}

impl KvOp {
    pub fn key(&self) -> u64 {
        match self {
            KvOp::Put { key, .. } | KvOp::Get { key } => *key,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (tag, key, value) = match self {
            KvOp::Put { key, value } => (1u8, *key, *value),
            KvOp::Get { key } => (2u8, *key, 0),
        };
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&key.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
        bytes
    }

    /// The command payload: the encoded operation, and for a write `pad` filler bytes standing for a large
    /// value (the machine keeps them, so its snapshots grow with them).
    pub fn payload(&self, pad: usize) -> Vec<u8> {
        let mut bytes = self.encode();
        if matches!(self, KvOp::Put { .. }) {
            bytes.resize(bytes.len() + pad, FILLER);
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<KvOp> {
        let key = u64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
        let value = u64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?);
        match bytes.first()? {
            1 => Some(KvOp::Put { key, value }),
            2 => Some(KvOp::Get { key }),
            _ => None,
        }
    }
}

/// What an operation returned: `None` for a put, the value read for a get.
pub type KvResult = Option<u64>;

const OP_BYTES: usize = 17;
const FILLER: u8 = 0xA5;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMachine {
    values: BTreeMap<u64, u64>,
    /// Per key: the filler bytes its last write carried (held, and written into snapshots).
    padding: BTreeMap<u64, usize>,
    /// Per client: the sequence number and result of its last applied command.
    last_response: BTreeMap<u64, (u64, KvResult)>,
    /// Per client: the filler bytes of its last applied command (held, and written into snapshots).
    client_padding: BTreeMap<u64, usize>,
}

impl KvMachine {
    pub fn apply(&mut self, command: &Command) {
        let Some(op) = KvOp::decode(&command.payload) else {
            return;
        };
        let result = match op {
            KvOp::Put { key, value } => {
                self.values.insert(key, value);
                self.padding.insert(key, command.payload.len().saturating_sub(OP_BYTES));
                None
            }
            KvOp::Get { key } => self.values.get(&key).copied(),
        };
        self.last_response.insert(command.id.client, (command.id.seq, result));
        self.client_padding.insert(command.id.client, command.payload.len().saturating_sub(OP_BYTES));
    }

    /// The result of `(client, seq)` if it is that client's last applied command.
    pub fn response(&self, client: u64, seq: u64) -> Option<KvResult> {
        match self.last_response.get(&client) {
            Some((last, result)) if *last == seq => Some(*result),
            _ => None,
        }
    }

    pub fn read_local(&self, key: u64) -> KvResult {
        self.values.get(&key).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        push_u64(&mut bytes, self.values.len() as u64);
        for (key, value) in &self.values {
            push_u64(&mut bytes, *key);
            push_u64(&mut bytes, *value);
            let pad = self.padding.get(key).copied().unwrap_or(0);
            push_u64(&mut bytes, pad as u64);
            bytes.resize(bytes.len() + pad.div_ceil(8) * 8, FILLER);
        }
        push_u64(&mut bytes, self.last_response.len() as u64);
        for (client, (seq, result)) in &self.last_response {
            push_u64(&mut bytes, *client);
            push_u64(&mut bytes, *seq);
            push_u64(&mut bytes, u64::from(result.is_some()));
            push_u64(&mut bytes, result.unwrap_or(0));
            let pad = self.client_padding.get(client).copied().unwrap_or(0);
            push_u64(&mut bytes, pad as u64);
            bytes.resize(bytes.len() + pad.div_ceil(8) * 8, FILLER);
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<KvMachine> {
        let mut words =
            bytes.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        let mut machine = KvMachine::default();
        for _ in 0..words.next()? {
            let (key, value, pad) = (words.next()?, words.next()?, words.next()?);
            machine.values.insert(key, value);
            machine.padding.insert(key, usize::try_from(pad).ok()?);
            for _ in 0..pad.div_ceil(8) {
                words.next()?;
            }
        }
        for _ in 0..words.next()? {
            let (client, seq, some, value) = (words.next()?, words.next()?, words.next()?, words.next()?);
            machine.last_response.insert(client, (seq, (some == 1).then_some(value)));
            let pad = words.next()?;
            machine.client_padding.insert(client, usize::try_from(pad).ok()?);
            for _ in 0..pad.div_ceil(8) {
                words.next()?;
            }
        }
        Some(machine)
    }
}

fn push_u64(bytes: &mut Vec<u8>, word: u64) {
    bytes.extend_from_slice(&word.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::{CommandId, ReplicaId};

    #[test]
    fn snapshot_round_trips() {
        let mut machine = KvMachine::default();
        let put = KvOp::Put { key: 3, value: 9 };
        machine.apply(&Command {
            id: CommandId { client: 1, seq: 4 },
            origin: ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload: put.payload(21),
            kind: Default::default(),
        });
        assert!(machine.encode().len() > 21, "the filler is kept");
        assert_eq!(KvMachine::decode(&machine.encode()), Some(machine.clone()));
        assert_eq!(machine.response(1, 4), Some(None));
        assert_eq!(machine.read_local(3), Some(9));
    }
}
