//! The periodic tick: resend this slot's own messages, report status, ask for missing batches, and greet
//! a peer that (re)connected.

use super::{broadcast_all, Mode, Output, Replica, TimerKind};
use crate::message::Message;
use crate::types::{ReplicaId, MEMBERS_MAX};

impl Replica {
    pub(super) fn on_retransmit(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.arm_retransmit(now_ms, out);
        out.push(Output::Broadcast { message: self.status_message() });
        self.ask_as_learner(out);
        self.resend_round_messages(now_ms, out);
        self.ask_for_missing(now_ms, out);
        self.reforward_old_commands(now_ms, out);
        self.tend_transfer(now_ms, out);
    }

    pub(super) fn arm_retransmit(&self, now_ms: u64, out: &mut Vec<Output>) {
        out.push(Output::SetTimer {
            kind: TimerKind::Retransmit,
            at_ms: now_ms.saturating_add(self.config.retransmit_ms.max(1)),
        });
    }

    /// Resends this slot's own messages once the slot has been open for a whole period (messages may
    /// have been lost), then after 2, 4, 8 and at most 16 more periods; or the recovery probe while a
    /// restarted replica still waits for answers.
    pub(super) fn resend_round_messages(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        match &self.mode {
            Mode::Recovering(recovery) if recovery.vote_floor.is_none() => {
                out.push(Output::Broadcast { message: Message::RecoveryProbe { incarnation: recovery.incarnation } });
            }
            Mode::Recovering(_) => {}
            Mode::Normal => {
                // The k-th resend (from 0) is due 2^k - 1 periods after the first, then every 16 periods.
                let k = u64::from(self.resends_in_slot);
                let periods = if k <= 4 { (1u64 << k) - 1 } else { 15 + 16 * (k - 4) };
                let due_ms = self.slot_started_ms.saturating_add(self.config.retransmit_ms.saturating_mul(periods + 1));
                if now_ms >= due_ms && self.agreement.is_active() {
                    self.resends_in_slot = self.resends_in_slot.saturating_add(1);
                    let mut messages = Vec::new();
                    self.agreement.own_messages(&mut messages);
                    broadcast_all(messages, out);
                }
            }
        }
    }

    /// Asks the most advanced peer for decisions when someone is ahead of us, or when we decided a
    /// batch we never received.
    pub(super) fn ask_for_missing(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let ahead = (0..self.peers.len())
            .filter(|i| self.peers[*i].seen_slot > self.next_slot)
            .max_by_key(|i| self.peers[*i].seen_slot);
        if let Some(peer) = ahead {
            self.request_sync(now_ms, ReplicaId(peer as u8), out);
        } else if self.agreement.decided == Some(true) || self.agreement.exhausted {
            out.push(Output::Broadcast { message: Message::SyncRequest { from_slot: self.next_slot } });
        }
    }

    pub(super) fn on_peer_connected(&self, peer: ReplicaId, out: &mut Vec<Output>) {
        if peer.index() >= MEMBERS_MAX || peer == self.config.me {
            return;
        }
        out.push(Output::Send { to: peer, message: self.status_message() });
        if let Mode::Recovering(recovery) = &self.mode {
            if recovery.vote_floor.is_none() {
                let incarnation = recovery.incarnation;
                out.push(Output::Send { to: peer, message: Message::RecoveryProbe { incarnation } });
            }
            return;
        }
        self.resend_to(peer, out);
    }

    /// A peer in our slot asked for it: it decided a batch it has not seen, so send it what we sent.
    pub(super) fn resend_to(&self, peer: ReplicaId, out: &mut Vec<Output>) {
        let mut messages = Vec::new();
        self.agreement.own_messages(&mut messages);
        out.extend(messages.into_iter().map(|message| Output::Send { to: peer, message }));
    }
}
