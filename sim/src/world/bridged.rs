//! The non-transitive partition (`Faults::bridged`): one pair of replicas cannot talk from `bridge_at_ms`
//! until faults stop, while every other link works, and the control plane's leader logic on top
//! (`crate::leader`), fed with the decided slots and ticked every [`TICK_MS`].

use super::{Event, World};
use crate::check::ViolationKind;
use crate::leader::{Control, NodeView, CLIENT_BASE};
use crate::options::ShellBroken;
use consensus::{ClientCommand, Command, CommandId, Input, Slot};

const TICK_MS: u64 = 20;
/// The control plane runs only where the core's catch-up log holds a few of its commands (a guarded
/// write is a few hundred bytes, the register workload's 17): with the smallest drawn log a slot of them
/// outgrows the log, and catch-up then waits for a snapshot, which is the core's concern, not this one.
const CONTROL_LOG_BYTES_MIN: usize = 4096;

impl World {
    pub(super) fn start_bridged(&mut self) {
        if !self.options.faults.bridged {
            return;
        }
        self.schedule(self.options.bridge_at_ms * 1000, Event::Bridge);
        if self.options.log_bytes_max < CONTROL_LOG_BYTES_MIN {
            return;
        }
        let broken = self.options.shell_broken == ShellBroken::PrivateLiveness;
        let command_ttl_ms = self.nodes.first().map_or(0, |n| n.core.config().command_ttl_ms);
        self.control = Some(Control::new(self.nodes.len(), broken, command_ttl_ms));
        self.schedule(0, Event::ControlTick);
    }

    pub(super) fn bridge(&mut self) {
        let n = self.nodes.len() as u64;
        if self.healed_at_us.is_some() || n < 3 {
            return;
        }
        let a = self.fault_rng.below(n);
        let b = (a + 1 + self.fault_rng.below(n - 1)) % n;
        self.bridge = Some((a as usize, b as usize));
    }

    /// True when the link between `from` and `to` is the one cut by the non-transitive partition.
    pub(super) fn bridged(&self, from: usize, to: usize) -> bool {
        self.bridge.is_some_and(|(a, b)| (a, b) == (from, to) || (b, a) == (from, to))
    }

    /// Runs every replica's control-plane logic; stops once faults stop (only safety is checked).
    pub(super) fn control_tick(&mut self) {
        let Some(mut control) = self.control.take() else { return };
        if self.healed_at_us.is_some() {
            self.control = Some(control);
            return;
        }
        let furthest = control.next_slot();
        let mut submissions = Vec::new();
        for replica in 0..self.nodes.len() {
            let node = &self.nodes[replica];
            let heard = (0..self.nodes.len())
                .filter(|&x| x == replica || (self.nodes[x].up && !self.cut[x][replica] && !self.bridged(x, replica)))
                .collect();
            let view = NodeView { up: node.up, caught_up: node.expected_slot.0 + 1 >= furthest, heard };
            let local_ms = self.local_ms(replica);
            for (seq, payload) in control.tick(replica, local_ms, &view) {
                submissions.push((replica, seq, payload));
            }
        }
        self.control = Some(control);
        for (replica, seq, payload) in submissions {
            let id = CommandId { client: CLIENT_BASE + replica as u64, seq };
            self.submitted.insert(id, payload.clone());
            self.run_core(replica, Input::Submit(vec![ClientCommand::new(id, payload)]));
        }
        self.schedule(self.now_us + TICK_MS * 1000, Event::ControlTick);
    }

    /// A command the core refused (queue full): it will never be decided.
    pub(super) fn control_rejected(&mut self, id: CommandId) {
        if let Some(control) = self.control.as_mut() {
            control.settled(id);
        }
    }

    /// A slot's first durable decision, to the control plane (which applies slots in order).
    pub(super) fn control_decided(&mut self, slot: Slot, batch: Option<&[Command]>) {
        let Some(control) = self.control.as_mut() else { return };
        let up: Vec<bool> = self.nodes.iter().map(|n| n.up).collect();
        for violation in control.on_decided(slot.0, batch, self.now_us, &up) {
            self.violate(ViolationKind::HealthyInstanceMoved, violation);
        }
    }
}
