//! Client commands: admission at this replica, forwarding to every replica, the forwarded commands
//! other replicas send, and re-forwarding of commands that wait too long.

use super::{Output, RejectReason, Replica};
use crate::message::Message;
use crate::queue::PushError;
use crate::types::{Broken, ClientCommand, Command, CommandId};

impl Replica {
    pub(super) fn on_submit(&mut self, now_ms: u64, commands: Vec<ClientCommand>, out: &mut Vec<Output>) {
        let mut accepted = Vec::new();
        for command in commands {
            if let Some(reason) = self.admit(now_ms, command, &mut accepted) {
                out.push(Output::Rejected { id: reason.0, reason: reason.1 });
            }
        }
        for chunk in accepted.chunks(self.config.forward_commands_max.max(1)) {
            out.push(Output::Broadcast { message: Message::Forward { commands: chunk.to_vec() } });
        }
        self.maybe_propose(now_ms, out);
    }

    /// Queues a client command stamped with our clock, or says why not.
    pub(super) fn admit(
        &mut self,
        now_ms: u64,
        command: ClientCommand,
        accepted: &mut Vec<Command>,
    ) -> Option<(CommandId, RejectReason)> {
        let id = command.id;
        if command.payload.len() > self.config.payload_bytes_max {
            return Some((id, RejectReason::TooLarge));
        }
        if self.is_applied(id) {
            return Some((id, RejectReason::AlreadyApplied));
        }
        if self.queue.contains(id) {
            return None;
        }
        if self.queue_over_admission_share(command.payload.len()) {
            return Some((id, RejectReason::QueueFull));
        }
        let stamped = Command { id, origin: self.config.me, timestamp_ms: now_ms, payload: command.payload };
        match self.queue.push(stamped.clone()) {
            Ok(()) => {
                accepted.push(stamped);
                None
            }
            Err(PushError::AlreadyQueued) => None,
            Err(PushError::Full) => Some((id, RejectReason::QueueFull)),
        }
    }

    /// Client commands are admitted while the queue is below its share of the capacity (in commands and
    /// in bytes), so the commands every replica admits still fit in every queue; forwarded ones may fill it.
    pub(super) fn queue_over_admission_share(&self, payload_bytes: usize) -> bool {
        let n = self.config.n().max(1);
        let commands_max = (self.config.queue_commands_max / n).max(1);
        let bytes_max = self.config.queue_bytes_max / n;
        self.queue.len() >= commands_max || self.queue.bytes() + payload_bytes + 48 > bytes_max
    }

    pub(super) fn is_applied(&self, id: CommandId) -> bool {
        self.config.broken != Broken::NoDedupe && self.sessions.is_applied(id)
    }

    pub(super) fn enqueue_forwarded(&mut self, command: Command) {
        if self.is_applied(command.id) {
            return;
        }
        if self.queue.push(command) == Err(PushError::Full) {
            self.stats.forwards_dropped_queue_full += 1;
        }
    }

    pub(super) fn reforward_old_commands(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let Some(cutoff_ms) = now_ms.checked_sub(self.config.reforward_after_ms) else {
            return;
        };
        let old = self.queue.stamped_before(cutoff_ms, self.config.forward_commands_max);
        if !old.is_empty() {
            out.push(Output::Broadcast { message: Message::Forward { commands: old } });
        }
    }
}
