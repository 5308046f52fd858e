//! Simulated clients: one operation at a time each, retried until answered, recorded for the
//! linearizability check.

use super::{Event, World};
use crate::check::HistoryEntry;
use crate::kv::{KvOp, KvResult};
use crate::options::ShellBroken;
use consensus::{ClientCommand, CommandId, Input};

impl World {
    pub(super) fn reply_later(&mut self, client: usize, seq: u64, result: KvResult) {
        let delay_us = self.net_rng.between(self.options.delay_us_min, self.options.delay_us_min * 4);
        self.schedule(self.now_us + delay_us, Event::Reply { client, seq, result });
    }

    pub(super) fn client_tick(&mut self, client: usize, generation: u64) {
        if self.clients[client].generation != generation {
            return;
        }
        if self.clients[client].current.is_none() {
            if self.clients[client].ops_left == 0 {
                return;
            }
            self.begin_operation(client);
        }
        self.submit_current(client);
        let retry_us = self.options.client_retry_ms * 1000;
        self.schedule(self.now_us + retry_us, Event::ClientTick { client, generation });
    }

    pub(super) fn begin_operation(&mut self, client: usize) {
        let key = self.client_rng.below(self.options.keys);
        let state = &mut self.clients[client];
        let seq = state.next_seq;
        state.next_seq += 1;
        state.ops_left -= 1;
        let op = if self.client_rng.chance(self.options.read_permille) {
            KvOp::Get { key }
        } else {
            KvOp::Put { key, value: ((client as u64) << 32) | seq }
        };
        self.clients[client].current = Some((seq, self.history.len()));
        let id = CommandId { client: client as u64, seq };
        self.submitted.insert(id, op.payload(self.options.value_pad_bytes));
        self.history.push(HistoryEntry { client: client as u64, op, invoke_us: self.now_us, response: None });
    }

    /// Sends the client's current operation to a random replica (a retry uses the same id), or, after a
    /// strand (`Faults::strand`), to the replica that missed the stranded forward.
    pub(super) fn submit_current(&mut self, client: usize) {
        let Some((seq, index)) = self.clients[client].current else {
            return;
        };
        let drawn = self.client_rng.below(self.nodes.len() as u64) as usize;
        let replica = self.stranded_peer.unwrap_or(drawn);
        if !self.nodes[replica].up {
            return;
        }
        let op = self.history[index].op;
        if let (ShellBroken::LocalReads, KvOp::Get { key }) = (self.options.shell_broken, op) {
            let value = self.nodes[replica].kv.read_local(key);
            self.reply_later(client, seq, value);
            return;
        }
        if let Some(result) = self.nodes[replica].kv.response(client as u64, seq) {
            self.reply_later(client, seq, result);
            return;
        }
        self.nodes[replica].waiting.insert((client as u64, seq));
        let payload = op.payload(self.options.value_pad_bytes);
        let command = ClientCommand::new(CommandId { client: client as u64, seq }, payload);
        self.run_core(replica, Input::Submit(vec![command]));
    }

    pub(super) fn client_reply(&mut self, client: usize, seq: u64, result: KvResult) {
        let state = &mut self.clients[client];
        let Some((current, index)) = state.current else {
            return;
        };
        if current != seq {
            return;
        }
        state.current = None;
        state.generation += 1;
        let generation = state.generation;
        self.history[index].response = Some((self.now_us.max(self.history[index].invoke_us + 1), result));
        let think_us = self.client_rng.below(50_000);
        self.schedule(self.now_us + think_us, Event::ClientTick { client, generation });
    }
}
