//! The pending queue: commands not yet decided, ordered by (timestamp, origin, client, sequence) so every
//! replica that holds the same commands proposes the same head.
//!
//! Invariants: at most `commands_max` commands and `bytes_max` bytes (`Command::size_bytes`); each
//! `CommandId` at most once; `index` and `order` always hold exactly the same commands, whose sizes sum
//! to `bytes`. Conflicts resolve towards the front of the order, the same way on every
//! replica, so queues that saw the same commands hold the same head: of two copies of one command
//! (a client retried at another replica) the earlier-ordered copy stays, and a full queue makes room for
//! an earlier-ordered command by evicting its last one.

use std::collections::BTreeMap;

use crate::types::{Command, CommandId, ReplicaId};

type QueueKey = (u64, ReplicaId, CommandId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    AlreadyQueued,
}

pub(crate) struct PendingQueue {
    order: BTreeMap<QueueKey, Command>,
    index: BTreeMap<CommandId, QueueKey>,
    commands_max: usize,
    bytes: usize,
    bytes_max: usize,
}

impl PendingQueue {
    pub(crate) fn new(commands_max: usize, bytes_max: usize) -> PendingQueue {
        PendingQueue { order: BTreeMap::new(), index: BTreeMap::new(), commands_max, bytes: 0, bytes_max }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn contains(&self, id: CommandId) -> bool {
        self.index.contains_key(&id)
    }

    pub(crate) fn push(&mut self, command: Command) -> Result<(), PushError> {
        let key = (command.timestamp_ms, command.origin, command.id);
        if let Some(existing) = self.index.get(&command.id) {
            if key >= *existing {
                return Err(PushError::AlreadyQueued);
            }
            self.remove(command.id);
        }
        let size = command.size_bytes();
        while self.order.len() >= self.commands_max || self.bytes + size > self.bytes_max {
            match self.order.last_key_value() {
                Some((last, evicted)) if key < *last => {
                    let id = evicted.id;
                    self.remove(id);
                }
                _ => return Err(PushError::Full),
            }
        }
        self.bytes += size;
        self.index.insert(command.id, key);
        self.order.insert(key, command);
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: CommandId) {
        if let Some(key) = self.index.remove(&id) {
            if let Some(command) = self.order.remove(&key) {
                self.bytes -= command.size_bytes();
            }
        }
    }

    /// Drops every command for which `keep` says no.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(CommandId) -> bool) {
        let gone: Vec<CommandId> = self.index.keys().copied().filter(|id| !keep(*id)).collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// The head of the queue, at most `commands_max` commands and `bytes_max` payload bytes (always at
    /// least one command when the queue is not empty).
    pub(crate) fn head(&self, commands_max: usize, bytes_max: usize) -> Vec<Command> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for command in self.order.values() {
            let size = command.payload.len();
            if !batch.is_empty() && (batch.len() >= commands_max || bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            batch.push(command.clone());
        }
        batch
    }

    /// Commands stamped at or before `timestamp_ms`, oldest first, at most `count_max`.
    pub(crate) fn stamped_before(&self, timestamp_ms: u64, count_max: usize) -> Vec<Command> {
        self.order
            .values()
            .take_while(|command| command.timestamp_ms <= timestamp_ms)
            .take(count_max)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(client: u64, timestamp_ms: u64) -> Command {
        Command { id: CommandId { client, seq: 0 }, origin: ReplicaId(0), timestamp_ms, payload: vec![1] }
    }

    #[test]
    fn head_is_ordered_by_timestamp_and_queue_is_bounded() {
        let mut queue = PendingQueue::new(2, 1 << 20);
        assert_eq!(queue.push(command(1, 50)), Ok(()));
        assert_eq!(queue.push(command(2, 10)), Ok(()));
        assert_eq!(queue.push(command(2, 10)), Err(PushError::AlreadyQueued));
        assert_eq!(queue.push(command(3, 60)), Err(PushError::Full));
        assert_eq!(queue.push(command(3, 0)), Ok(()), "an earlier command evicts the last");
        let head = queue.head(8, 1 << 20);
        assert_eq!(head.iter().map(|c| c.id.client).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(queue.push(command(2, 5)), Ok(()), "the earlier copy of a command wins");
        assert_eq!(queue.head(1, 1 << 20)[0].timestamp_ms, 0);
        assert_eq!(queue.head(2, 1 << 20)[1].timestamp_ms, 5);
        assert_eq!(queue.bytes(), 2 * command(0, 0).size_bytes());
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let mut queue = PendingQueue::new(100, 3 * command(0, 0).size_bytes());
        for client in 0..3 {
            assert_eq!(queue.push(command(client, 10 + client)), Ok(()));
        }
        assert_eq!(queue.push(command(9, 50)), Err(PushError::Full));
        assert_eq!(queue.push(command(8, 1)), Ok(()), "an earlier command evicts the last");
        assert_eq!(queue.len(), 3);
        assert!(!queue.contains(CommandId { client: 2, seq: 0 }));
        queue.remove(CommandId { client: 8, seq: 0 });
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.bytes(), 2 * command(0, 0).size_bytes());
    }

    #[test]
    fn the_head_stops_at_its_count_and_payload_budget_but_is_never_empty() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for client in 0..5 {
            let mut c = command(client, client);
            c.payload = vec![0; 10];
            assert_eq!(queue.push(c), Ok(()));
        }
        let clients = |batch: Vec<Command>| batch.iter().map(|c| c.id.client).collect::<Vec<_>>();
        assert_eq!(clients(queue.head(2, 1 << 20)), vec![0, 1]);
        assert_eq!(clients(queue.head(8, 30)), vec![0, 1, 2], "exactly at the budget fits");
        assert_eq!(clients(queue.head(8, 29)), vec![0, 1]);
        assert_eq!(clients(queue.head(8, 1 << 20)), vec![0, 1, 2, 3, 4]);
        assert_eq!(clients(queue.head(8, 0)), vec![0], "one command even over the budget");
        assert_eq!(clients(queue.head(0, 0)), vec![0]);
        assert!(PendingQueue::new(4, 1 << 20).head(8, 1 << 20).is_empty());
    }

    #[test]
    fn commands_stamped_before_a_time_come_oldest_first() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for (client, at) in [(1, 30), (2, 10), (3, 20), (4, 40)] {
            assert_eq!(queue.push(command(client, at)), Ok(()));
        }
        let stamped = |at, max| queue.stamped_before(at, max).iter().map(|c| c.id.client).collect::<Vec<_>>();
        assert_eq!(stamped(30, 8), vec![2, 3, 1], "at the cutoff is included");
        assert_eq!(stamped(29, 8), vec![2, 3]);
        assert_eq!(stamped(40, 2), vec![2, 3]);
        assert!(stamped(9, 8).is_empty());
    }
}
