//! The pending queue: commands not yet decided, ordered by (timestamp, origin, client, sequence) so every
//! replica that holds the same commands proposes the same head.
//!
//! Invariants: at most `commands_max` commands and `bytes_max` bytes (`Command::size_bytes`); each
//! `CommandId` at most once; `order`, `index` and `deadlines` always hold exactly the same commands,
//! whose sizes sum to `bytes`; `due` holds every queued command's (due time, id) as its `index` entry
//! says, sorted by due time, and besides them stale pairs (of commands since removed, or re-due), which
//! are skipped and dropped when reached, and purged once they make `due` twice the command bound. Conflicts resolve towards the front of the order, the same way on every
//! replica, so queues that saw the same commands hold the same head: of two copies of one command
//! (a client retried at another replica) the earlier-ordered copy stays, and a full queue makes room for
//! an earlier-ordered command by evicting its last one.
//!
//! Besides the order, each command has a local due time for its next re-forward (set from the local
//! clock when it is queued, and pushed one period on every re-forward), and its deadline, so both the
//! commands due and the commands expired are found without scanning the queue. Due times come from a
//! clock that normally only moves forward, so `due` is a list appended at its end; removing a command
//! leaves its pair there (most commands are decided long before they are due), which costs nothing until
//! the pair is reached.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::{Command, CommandId, ReplicaId};

type QueueKey = (u64, ReplicaId, CommandId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    AlreadyQueued,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: QueueKey,
    due_ms: u64,
    deadline_ms: u64,
}

pub(crate) struct PendingQueue {
    order: BTreeMap<QueueKey, Command>,
    index: BTreeMap<CommandId, Entry>,
    due: VecDeque<(u64, CommandId)>,
    deadlines: BTreeSet<(u64, CommandId)>,
    commands_max: usize,
    bytes: usize,
    bytes_max: usize,
}

impl PendingQueue {
    pub(crate) fn new(commands_max: usize, bytes_max: usize) -> PendingQueue {
        PendingQueue {
            order: BTreeMap::new(),
            index: BTreeMap::new(),
            due: VecDeque::new(),
            deadlines: BTreeSet::new(),
            commands_max,
            bytes: 0,
            bytes_max,
        }
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

    /// Whether `push` could take `command`: not queued yet, or queued as a later-ordered copy.
    pub(crate) fn improves(&self, command: &Command) -> bool {
        self.index.get(&command.id).is_none_or(|e| (command.timestamp_ms, command.origin, command.id) < e.key)
    }

    /// Queues `command`, due for re-forwarding at local time `due_ms`.
    pub(crate) fn push(&mut self, command: Command, due_ms: u64) -> Result<(), PushError> {
        let key = (command.timestamp_ms, command.origin, command.id);
        if let Some(existing) = self.index.get(&command.id) {
            if key >= existing.key {
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
        let deadline_ms = command.deadline_ms;
        self.index.insert(command.id, Entry { key, due_ms, deadline_ms });
        self.insert_due(due_ms, command.id);
        self.deadlines.insert((deadline_ms, command.id));
        self.order.insert(key, command);
        Ok(())
    }

    /// Records that `id` is due at `due_ms`, keeping `due` sorted (at its end, unless the clock went back),
    /// and purges stale pairs once they outnumber the bound.
    fn insert_due(&mut self, due_ms: u64, id: CommandId) {
        if self.due.len() >= 2 * self.commands_max.max(self.index.len()) {
            let index = &self.index;
            self.due.retain(|(due, id)| index.get(id).is_some_and(|e| e.due_ms == *due));
        }
        let at = self.due.partition_point(|&pair| pair < (due_ms, id));
        self.due.insert(at, (due_ms, id));
    }

    pub(crate) fn remove(&mut self, id: CommandId) {
        if let Some(entry) = self.index.remove(&id) {
            // Its pair in `due` goes stale: skipped when reached.
            self.deadlines.remove(&(entry.deadline_ms, id));
            if let Some(command) = self.order.remove(&entry.key) {
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

    /// Drops the commands of `client` with a sequence below `seq_floor`; returns how many.
    pub(crate) fn remove_client_below(&mut self, client: u64, seq_floor: u64) -> usize {
        let from = CommandId { client, seq: 0 };
        let to = CommandId { client, seq: seq_floor };
        let gone: Vec<CommandId> = self.index.range(from..to).map(|(id, _)| *id).collect();
        for id in &gone {
            self.remove(*id);
        }
        gone.len()
    }

    /// Drops the commands whose deadline is below `now_ms` and returns their ids.
    pub(crate) fn remove_expired(&mut self, now_ms: u64) -> Vec<CommandId> {
        let expired: Vec<CommandId> =
            self.deadlines.iter().take_while(|(deadline, _)| *deadline < now_ms).map(|(_, id)| *id).collect();
        for id in &expired {
            self.remove(*id);
        }
        expired
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

    /// The commands due for re-forwarding at local time `now_ms`, longest due first, up to `bytes_max`
    /// bytes (`Command::size_bytes`, at least one command); each taken one is next due at
    /// `now_ms + period_ms`.
    pub(crate) fn take_due(&mut self, now_ms: u64, period_ms: u64, bytes_max: usize) -> Vec<Command> {
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        while let Some(&(due_ms, id)) = self.due.front() {
            if due_ms > now_ms {
                break;
            }
            let Some(entry) = self.index.get(&id).filter(|e| e.due_ms == due_ms) else {
                // Stale: the command left the queue, or is due at another time.
                self.due.pop_front();
                continue;
            };
            let Some(command) = self.order.get(&entry.key) else {
                // Unreachable by the invariants; drop the stray pair rather than loop on it.
                self.due.pop_front();
                continue;
            };
            if !taken.is_empty() && bytes + command.size_bytes() > bytes_max {
                break;
            }
            bytes += command.size_bytes();
            taken.push(command.clone());
            self.due.pop_front();
            let next_ms = now_ms.saturating_add(period_ms.max(1));
            if let Some(entry) = self.index.get_mut(&id) {
                entry.due_ms = next_ms;
            }
            self.insert_due(next_ms, id);
        }
        taken
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
        Command {
            id: CommandId { client, seq: 0 },
            origin: ReplicaId(0),
            timestamp_ms,
            deadline_ms: timestamp_ms + 1_000,
            payload: vec![1],
            kind: crate::types::CommandKind::Client,
        }
    }

    impl PendingQueue {
        fn push0(&mut self, command: Command) -> Result<(), PushError> {
            self.push(command, 0)
        }
    }

    #[test]
    fn head_is_ordered_by_timestamp_and_queue_is_bounded() {
        let mut queue = PendingQueue::new(2, 1 << 20);
        assert_eq!(queue.push0(command(1, 50)), Ok(()));
        assert_eq!(queue.push0(command(2, 10)), Ok(()));
        assert_eq!(queue.push0(command(2, 10)), Err(PushError::AlreadyQueued));
        assert_eq!(queue.push0(command(3, 60)), Err(PushError::Full));
        assert_eq!(queue.push0(command(3, 0)), Ok(()), "an earlier command evicts the last");
        let head = queue.head(8, 1 << 20);
        assert_eq!(head.iter().map(|c| c.id.client).collect::<Vec<_>>(), vec![3, 2]);
        assert!(queue.improves(&command(2, 5)) && !queue.improves(&command(2, 10)));
        assert_eq!(queue.push0(command(2, 5)), Ok(()), "the earlier copy of a command wins");
        assert_eq!(queue.head(1, 1 << 20)[0].timestamp_ms, 0);
        assert_eq!(queue.head(2, 1 << 20)[1].timestamp_ms, 5);
        assert_eq!(queue.bytes(), 2 * command(0, 0).size_bytes());
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let mut queue = PendingQueue::new(100, 3 * command(0, 0).size_bytes());
        for client in 0..3 {
            assert_eq!(queue.push0(command(client, 10 + client)), Ok(()));
        }
        assert_eq!(queue.push0(command(9, 50)), Err(PushError::Full));
        assert_eq!(queue.push0(command(8, 1)), Ok(()), "an earlier command evicts the last");
        assert_eq!(queue.len(), 3);
        assert!(!queue.contains(CommandId { client: 2, seq: 0 }));
        queue.remove(CommandId { client: 8, seq: 0 });
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.bytes(), 2 * command(0, 0).size_bytes());
    }

    #[test]
    fn due_commands_are_taken_once_per_period_within_a_byte_budget() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for client in 0..10 {
            assert_eq!(queue.push(command(client, 500 - client), 100 + client), Ok(()));
        }
        assert!(queue.take_due(99, 50, 1 << 20).is_empty());
        let size = command(0, 0).size_bytes();
        let first = queue.take_due(200, 50, 3 * size);
        assert_eq!(first.iter().map(|c| c.id.client).collect::<Vec<_>>(), vec![0, 1, 2], "longest due first");
        let second = queue.take_due(200, 50, 100 * size);
        assert_eq!(second.len(), 7, "the rest, next tick");
        assert!(queue.take_due(249, 50, 100 * size).is_empty(), "each at most once per period");
        assert_eq!(queue.take_due(250, 50, 100 * size).len(), 10);
        assert_eq!(queue.take_due(400, 50, 1).len(), 1, "at least one command per tick");
    }

    #[test]
    fn removed_and_requeued_commands_are_due_once_and_stale_pairs_stay_bounded() {
        let mut queue = PendingQueue::new(4, 1 << 20);
        // Many commands come and go before they are due (the usual life of a command).
        for client in 0..100 {
            assert_eq!(queue.push(command(client, client), 100 + client), Ok(()));
            queue.remove(CommandId { client, seq: 0 });
            assert!(queue.due.len() <= 8, "stale pairs purged at twice the bound: {}", queue.due.len());
        }
        // One removed and queued again at the same due time is taken once, with the live ones, in due order.
        assert_eq!(queue.push(command(7, 7), 300), Ok(()));
        assert_eq!(queue.push(command(3, 3), 300), Ok(()));
        queue.remove(CommandId { client: 7, seq: 0 });
        assert_eq!(queue.push(command(7, 7), 300), Ok(()));
        assert_eq!(queue.push(command(8, 8), 250), Ok(()));
        let taken = queue.take_due(300, 50, 1 << 20);
        assert_eq!(taken.iter().map(|c| c.id.client).collect::<Vec<_>>(), vec![8, 3, 7]);
        assert!(queue.take_due(349, 50, 1 << 20).is_empty());
        assert_eq!(queue.take_due(350, 50, 1 << 20).len(), 3);
        // A due time earlier than the last one (the local clock went back) is still taken in order.
        queue.remove(CommandId { client: 8, seq: 0 });
        assert_eq!(queue.push(command(9, 9), 10), Ok(()));
        assert_eq!(queue.take_due(10, 50, 1 << 20).iter().map(|c| c.id.client).collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn expired_and_below_floor_commands_are_removed() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for client in 0..4 {
            assert_eq!(queue.push0(command(client, client * 1_000)), Ok(()));
        }
        assert_eq!(queue.remove_expired(1_000), vec![], "a deadline equal to now has not passed");
        assert_eq!(queue.remove_expired(2_500).len(), 2);
        assert_eq!(queue.len(), 2);
        let seqs = |client: u64, seq: u64| Command { id: CommandId { client, seq }, ..command(client, 9_000) };
        for seq in 0..5 {
            assert_eq!(queue.push0(seqs(7, seq)), Ok(()));
        }
        assert_eq!(queue.remove_client_below(7, 3), 3);
        assert!(queue.contains(CommandId { client: 7, seq: 3 }) && !queue.contains(CommandId { client: 7, seq: 2 }));
        assert_eq!(queue.len(), 4);
        assert_eq!(queue.bytes(), 4 * command(0, 0).size_bytes());
        assert!(queue.take_due(0, 1, 1 << 20).len() == 4, "the indexes hold exactly the queued commands");
    }

    #[test]
    fn the_head_stops_at_its_count_and_payload_budget_but_is_never_empty() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for client in 0..5 {
            let mut c = command(client, client);
            c.payload = vec![0; 10];
            assert_eq!(queue.push0(c), Ok(()));
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
    fn stale_due_pairs_are_purged_only_once_they_reach_twice_the_bound() {
        // A removed command leaves its pair in `due` (skipped when reached); the pairs are swept in one pass
        // once they number twice the queue's bound, so a push costs amortised constant time and the list
        // stays within that bound.
        let mut queue = PendingQueue::new(4, 1 << 20);
        for client in 0..8 {
            assert_eq!(queue.push0(command(client, client)), Ok(()));
            queue.remove(CommandId { client, seq: 0 });
            assert_eq!(queue.due.len(), client as usize + 1, "no sweep below the bound");
        }
        assert_eq!(queue.push0(command(8, 8)), Ok(()));
        assert_eq!(queue.due.len(), 1, "the eight stale pairs swept, the new one kept");
        assert_eq!(queue.head(8, 1 << 20).len(), 1);
    }

    #[test]
    fn commands_stamped_before_a_time_come_oldest_first() {
        let mut queue = PendingQueue::new(100, 1 << 20);
        for (client, at) in [(1, 30), (2, 10), (3, 20), (4, 40)] {
            assert_eq!(queue.push0(command(client, at)), Ok(()));
        }
        let stamped = |at, max| queue.stamped_before(at, max).iter().map(|c| c.id.client).collect::<Vec<_>>();
        assert_eq!(stamped(30, 8), vec![2, 3, 1], "at the cutoff is included");
        assert_eq!(stamped(29, 8), vec![2, 3]);
        assert_eq!(stamped(40, 2), vec![2, 3]);
        assert!(stamped(9, 8).is_empty());
    }
}
