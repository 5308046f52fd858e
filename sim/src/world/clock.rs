//! Each replica's clock and its timers, and the stranded-command scenario that process clocks used to turn into a stall.
//!
//! A replica's clock reads `clock_base_ms + skew_ms + (now - clock_zero_us) * rate`: the base is what it
//! read when its process started (with `Faults::clock`, hours apart between replicas at the first start,
//! and zero after every restart), the skew a fixed shift and the rate its drift. Without `Faults::clock`
//! base and zero stay 0, and the clock runs on across restarts. Timers armed at a local time fire at the
//! first global instant the clock reads it.
//!
//! The strand (`Faults::strand`): the replica whose clock is furthest ahead, at `strand_at_ms`,
//! loses the first turn in which it forwards client commands to one peer (everything of that turn to
//! that peer), then crashes and stays down; from then on clients submit at that peer. It waits for a
//! turn where fewer than f other replicas are without their votes, since it takes one away for good.

use super::{lost_votes, Event, Input, Message, Node, TimerKind, World};

impl World {
    /// The replica's clock now.
    pub(super) fn local_ms(&self, replica: usize) -> u64 {
        let node = &self.nodes[replica];
        let elapsed_us = u128::from(self.now_us.saturating_sub(node.clock_zero_us));
        let local_us = elapsed_us * u128::from(node.rate_ppm) / 1_000_000;
        (local_us / 1000) as u64 + node.skew_ms + node.clock_base_ms
    }

    pub(super) fn set_timer(&mut self, replica: usize, kind: TimerKind, at_ms: u64) {
        let node = &mut self.nodes[replica];
        node.timers[timer_index(kind)] = Some(at_ms);
        let at_us = node_time_us(node, at_ms);
        let incarnation = node.incarnation;
        self.schedule(at_us, Event::Timer { replica, kind, incarnation, at_ms });
    }

    pub(super) fn fire_timer(&mut self, replica: usize, kind: TimerKind, incarnation: u64, at_ms: u64) {
        let node = &mut self.nodes[replica];
        let slot = &mut node.timers[timer_index(kind)];
        if !node.up || node.incarnation != incarnation || *slot != Some(at_ms) {
            return;
        }
        *slot = None;
        self.run_core(replica, Input::Timer(kind));
    }

    /// A restarted process: with process clocks its clock starts again from zero.
    pub(super) fn restart_clock(&mut self, replica: usize) {
        if self.options.faults.clock {
            let node = &mut self.nodes[replica];
            node.clock_base_ms = 0;
            node.clock_zero_us = self.now_us;
        }
    }

    pub(super) fn arm_strand(&mut self) {
        if self.healed_at_us.is_some() || self.strand.is_some() {
            return;
        }
        let n = self.nodes.len();
        let origin = (0..n).max_by_key(|i| self.nodes[*i].clock_base_ms).unwrap_or(0);
        let peer = (origin + 1 + self.fault_rng.below(n as u64 - 1) as usize) % n;
        self.strand = Some((origin, peer));
    }

    /// Whether this turn of `replica` is the stranding one: it forwards client commands. Returns the
    /// peer that must not hear of it.
    pub(super) fn strands_this_turn(&mut self, replica: usize, sends: &[(Option<usize>, Message)]) -> Option<usize> {
        let (origin, peer) = self.strand?;
        let forwards = sends.iter().any(|(_, m)| matches!(m, Message::Forward { commands } if !commands.is_empty()));
        // Staying down for good counts against the f replicas that may be without their votes.
        let f = self.votes_lost_max();
        let impaired = (0..self.nodes.len()).filter(|i| *i != replica && lost_votes(&self.nodes[*i])).count();
        (origin == replica && forwards && impaired < f && self.healed_at_us.is_none()).then_some(peer)
    }

    /// The stranding replica crashes right after its turn and stays down; from now on clients submit at
    /// the peer that missed the forward.
    pub(super) fn strand_crash(&mut self, replica: usize) {
        self.stranded_peer = self.strand.map(|(_, peer)| peer);
        self.strand = None;
        self.crash(replica, false);
        self.nodes[replica].kept_down = true;
    }
}

/// The first global instant at which the node's clock reads `at_ms`.
pub(super) fn node_time_us(node: &Node, at_ms: u64) -> u64 {
    let offset_ms = node.skew_ms + node.clock_base_ms;
    let local_us = u128::from(at_ms.saturating_sub(offset_ms)) * 1000;
    let elapsed_us = local_us.saturating_mul(1_000_000).div_ceil(u128::from(node.rate_ppm));
    u64::try_from(elapsed_us).unwrap_or(u64::MAX).saturating_add(node.clock_zero_us)
}

fn timer_index(kind: TimerKind) -> usize {
    match kind {
        TimerKind::Retransmit => 0,
        TimerKind::Propose => 1,
    }
}
