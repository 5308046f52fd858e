//! The DHT simulator's world: replicas, the seeded network, the client workload, faults, and the phases of
//! a run (faults and workload; quorum reads right after faults stop; convergence; the final checks).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use ::dht::{Config, Dht, MemStore, Message, OpId, Output, Ring, Version};

use super::{check, Destructive, DhtBroken, DhtOptions, DhtReport};
use crate::rng::Rng;

/// Step of the simulated clock.
const STEP_MS: u64 = 10;
/// Replicas tick this often.
const TICK_MS: u64 = 100;
/// How long the quorum reads after faults stop may take.
const READ_PHASE_MS: u64 = 10_000;

pub(super) struct Node {
    /// `None` while crashed.
    pub(super) dht: Option<Dht<MemStore>>,
    /// The store kept across a crash.
    kept: Option<MemStore>,
    pub(super) incarnation: u64,
    offset_ms: u64,
    tick_phase_ms: u64,
    restart_at_ms: Option<u64>,
    fresh_on_restart: bool,
}

impl Node {
    /// The replica's store, up or down.
    pub(super) fn store(&self) -> Option<&MemStore> {
        self.dht.as_ref().map(Dht::store).or(self.kept.as_ref())
    }
}

/// A message on the wire.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due_ms: u64,
    seq: u64,
    from: String,
    to: String,
    bytes: Vec<u8>,
}

/// One write the client issued.
pub(super) struct WriteRecord {
    pub(super) key: String,
    pub(super) version: Option<Version>,
    pub(super) acked: bool,
}

/// An operation the client waits for.
enum Pending {
    Write(u64),
    Read { key: String, responders: Vec<(String, Option<Version>)>, checked: bool },
}

/// A quorum read issued after faults stopped: who answered before it finished, and what it returned.
pub(super) struct CheckedRead {
    pub(super) key: String,
    pub(super) responders: Vec<String>,
    pub(super) returned: Option<Version>,
}

pub(super) struct World {
    pub(super) options: DhtOptions,
    config: Config,
    net_rng: Rng,
    client_rng: Rng,
    fault_rng: Rng,
    pub(super) now_ms: u64,
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) members: Vec<String>,
    /// The ring of `members`, as every replica computes it.
    pub(super) ring: Ring,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    blocked: BTreeSet<(String, String)>,
    partition_until_ms: u64,
    faults_on: bool,
    destructive_at_ms: u64,
    join_at_ms: u64,
    /// Once data may legitimately be missing from a quorum until anti-entropy restores it.
    pub(super) quorum_check_paused: bool,
    pub(super) writes: BTreeMap<u64, WriteRecord>,
    /// Each written value's write.
    pub(super) values: BTreeMap<Vec<u8>, u64>,
    pending: BTreeMap<(String, u64, OpId), Pending>,
    pub(super) checked_reads: Vec<CheckedRead>,
    pub(super) report: DhtReport,
}

impl World {
    pub(super) fn new(options: DhtOptions) -> World {
        let mut rng = Rng::new(options.seed);
        let mut config = Config {
            anti_entropy_interval_ms: options.anti_entropy_interval_ms(),
            op_timeout_ms: 2_000,
            ..Config::default()
        };
        match options.broken {
            Some(DhtBroken::W1) => config.write_quorum = 1,
            Some(DhtBroken::NoReadRepair) => config.read_repair = false,
            Some(DhtBroken::NoAntiEntropy) => config.anti_entropy = false,
            None => {}
        }
        let report =
            DhtReport { options: options.clone(), ops: 0, acked: 0, repairs: 0, convergence_ms: 0, violations: vec![] };
        let mut world = World {
            config,
            net_rng: rng.fork(),
            client_rng: rng.fork(),
            fault_rng: rng.fork(),
            now_ms: 0,
            nodes: BTreeMap::new(),
            members: Vec::new(),
            ring: Ring::new(&[], 3),
            queue: BinaryHeap::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            partition_until_ms: 0,
            faults_on: true,
            destructive_at_ms: 0,
            join_at_ms: 0,
            quorum_check_paused: false,
            writes: BTreeMap::new(),
            values: BTreeMap::new(),
            pending: BTreeMap::new(),
            checked_reads: Vec::new(),
            report,
            options,
        };
        let latest_ms = world.options.fault_ms.saturating_sub(500);
        world.destructive_at_ms = world.fault_rng.between(500, latest_ms) / STEP_MS * STEP_MS;
        world.join_at_ms = world.fault_rng.between(500, latest_ms) / STEP_MS * STEP_MS;
        let names: Vec<String> = (1..=world.options.nodes).map(|i| format!("node-{i}")).collect();
        for name in &names {
            world.add_node(name);
        }
        world.members = names;
        world.ring = Ring::new(&world.members, world.config.replication);
        for name in world.members.clone() {
            world.with_node(&name, |dht, now, members, out| dht.set_members(members, now, out));
        }
        world
    }

    fn add_node(&mut self, name: &str) {
        let offset_ms = self.fault_rng.below(self.options.skew_ms_max + 1);
        let tick_phase_ms = self.fault_rng.below(TICK_MS / STEP_MS) * STEP_MS;
        let dht = Dht::new(name.to_string(), self.config.clone(), MemStore::new());
        let node = Node {
            dht: Some(dht),
            kept: None,
            incarnation: 0,
            offset_ms,
            tick_phase_ms,
            restart_at_ms: None,
            fresh_on_restart: false,
        };
        self.nodes.insert(name.to_string(), node);
    }

    pub(super) fn run(mut self) -> DhtReport {
        while self.now_ms < self.options.fault_ms {
            self.faults();
            self.client();
            self.step();
            if !self.quorum_check_paused && self.now_ms.is_multiple_of(TICK_MS) && !check::quorum(&mut self) {
                // One finding is enough; the check stays off so the report is not flooded.
                self.quorum_check_paused = true;
            }
        }
        self.heal();
        let heal_ms = self.now_ms;
        self.read_phase();
        self.converge(heal_ms);
        let _ = check::quorum(&mut self);
        check::stored_values(&mut self);
        self.report.repairs = self
            .nodes
            .values()
            .filter_map(|node| node.dht.as_ref())
            .map(|dht| dht.stats().read_repairs + dht.stats().anti_entropy_repairs)
            .sum();
        self.report
    }

    /// Advances the clock one step: due messages, then ticks, then restarts.
    fn step(&mut self) {
        self.now_ms += STEP_MS;
        while self.queue.peek().is_some_and(|Reverse(m)| m.due_ms <= self.now_ms) {
            let Some(Reverse(message)) = self.queue.pop() else { break };
            self.deliver(message);
        }
        for name in self.nodes.keys().cloned().collect::<Vec<_>>() {
            let phase = self.nodes[&name].tick_phase_ms;
            if self.now_ms % TICK_MS == phase {
                self.with_node(&name, |dht, now, _, out| dht.tick(now, out));
            }
            if self.nodes[&name].restart_at_ms.is_some_and(|at| at <= self.now_ms) {
                self.restart(&name);
            }
        }
    }

    /// Runs `f` on a live replica with its clock, then carries out its outputs.
    fn with_node(&mut self, name: &str, f: impl FnOnce(&mut Dht<MemStore>, u64, &[String], &mut Vec<Output>)) {
        let Some(node) = self.nodes.get_mut(name) else { return };
        let now = self.now_ms + node.offset_ms;
        let incarnation = node.incarnation;
        let Some(dht) = node.dht.as_mut() else { return };
        let mut out = Vec::new();
        f(dht, now, &self.members, &mut out);
        self.absorb(name, incarnation, out);
    }

    fn absorb(&mut self, from: &str, incarnation: u64, out: Vec<Output>) {
        for output in out {
            match output {
                Output::Send { to, message } => {
                    if to == from {
                        self.report.violations.push(format!("{from} sent a message to itself"));
                        continue;
                    }
                    if let Message::Put { op, entry, .. } = &message {
                        if let Some(Pending::Write(id)) = self.pending.get(&(from.to_string(), incarnation, *op)) {
                            if let Some(write) = self.writes.get_mut(id) {
                                write.version.get_or_insert(entry.version);
                            }
                        }
                    }
                    self.transmit(from, &to, message.encode());
                }
                Output::Done { op, result } => self.done(from, incarnation, op, result),
            }
        }
    }

    fn transmit(&mut self, from: &str, to: &str, bytes: Vec<u8>) {
        let copies = if self.faults_on && self.net_rng.chance(self.options.dup_permille) { 2 } else { 1 };
        for _ in 0..copies {
            if self.faults_on && self.net_rng.chance(self.options.loss_permille) {
                continue;
            }
            let due_ms = self.now_ms + self.net_rng.between(1, self.options.delay_ms_max);
            self.seq += 1;
            let message =
                InFlight { due_ms, seq: self.seq, from: from.to_string(), to: to.to_string(), bytes: bytes.clone() };
            self.queue.push(Reverse(message));
        }
    }

    fn deliver(&mut self, message: InFlight) {
        if self.blocked.contains(&(message.from.clone(), message.to.clone())) {
            return;
        }
        let decoded = match Message::decode(&message.bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.report.violations.push(format!("a message from {} does not decode: {error}", message.from));
                return;
            }
        };
        let Some(node) = self.nodes.get(&message.to) else { return };
        if let Message::GetReply { op, entry, .. } = &decoded {
            if let Some(Pending::Read { responders, .. }) =
                self.pending.get_mut(&(message.to.clone(), node.incarnation, *op))
            {
                if !responders.iter().any(|(r, _)| *r == message.from) {
                    responders.push((message.from.clone(), entry.as_ref().map(|e| e.version)));
                }
            }
        }
        let from = message.from;
        self.with_node(&message.to, |dht, now, _, out| dht.handle(&from, decoded, now, out));
    }

    fn done(&mut self, node: &str, incarnation: u64, op: OpId, result: Result<Option<Vec<u8>>, ::dht::DhtError>) {
        let Some(pending) = self.pending.remove(&(node.to_string(), incarnation, op)) else {
            self.report.violations.push(format!("{node} finished operation {op} that nobody started"));
            return;
        };
        match pending {
            Pending::Write(id) => {
                if result.is_ok() {
                    self.report.acked += 1;
                    if let Some(write) = self.writes.get_mut(&id) {
                        write.acked = true;
                        if write.version.is_none() {
                            self.report.violations.push(format!("write {id} acknowledged without sending a Put"));
                        }
                    }
                }
            }
            Pending::Read { key, responders, checked } => {
                let value = match result {
                    Ok(value) => value,
                    Err(error) => {
                        if checked {
                            self.report
                                .violations
                                .push(format!("a read of {key} after faults stopped failed: {error}"));
                        }
                        return;
                    }
                };
                let mut returned = responders.iter().filter_map(|(_, v)| *v).max();
                if let Some(value) = &value {
                    match self.values.get(value).and_then(|id| self.writes.get(id)) {
                        Some(write) if write.key == key => returned = returned.max(write.version),
                        _ => {
                            let shown = String::from_utf8_lossy(value);
                            self.report
                                .violations
                                .push(format!("a get of {key} returned {shown:?}, never written to it"));
                        }
                    }
                }
                if checked {
                    let responders = responders.into_iter().map(|(r, _)| r).collect();
                    self.checked_reads.push(CheckedRead { key, responders, returned });
                }
            }
        }
    }

    /// Maybe one client operation, through a random live member.
    fn client(&mut self) {
        if !self.client_rng.chance(200) {
            return;
        }
        let live: Vec<String> =
            self.members.iter().filter(|m| self.nodes.get(*m).is_some_and(|n| n.dht.is_some())).cloned().collect();
        if live.is_empty() {
            return;
        }
        let via = live[self.client_rng.below(live.len() as u64) as usize].clone();
        let key = format!("key-{}", self.client_rng.below(self.options.keys));
        match self.client_rng.below(20) {
            0..=9 => {
                let id = self.writes.len() as u64 + 1;
                let value = format!("{key}#{id}").into_bytes();
                self.values.insert(value.clone(), id);
                self.writes.insert(id, WriteRecord { key: key.clone(), version: None, acked: false });
                self.start(&via, Pending::Write(id), |dht, now, out| dht.put(&key, value, now, out));
            }
            10..=16 => {
                let pending = Pending::Read { key: key.clone(), responders: vec![], checked: false };
                self.start(&via, pending, |dht, now, out| dht.get(&key, now, out));
            }
            _ => {
                let id = self.writes.len() as u64 + 1;
                self.writes.insert(id, WriteRecord { key: key.clone(), version: None, acked: false });
                self.start(&via, Pending::Write(id), |dht, now, out| dht.delete(&key, now, out));
            }
        }
    }

    /// Starts an operation: the pending record goes in before the outputs are carried out, because a
    /// quorum of one finishes inside the call.
    fn start(
        &mut self,
        via: &str,
        pending: Pending,
        f: impl FnOnce(&mut Dht<MemStore>, u64, &mut Vec<Output>) -> OpId,
    ) {
        let Some(node) = self.nodes.get_mut(via) else { return };
        let now = self.now_ms + node.offset_ms;
        let incarnation = node.incarnation;
        let Some(dht) = node.dht.as_mut() else { return };
        let mut out = Vec::new();
        let op = f(dht, now, &mut out);
        self.report.ops += 1;
        self.pending.insert((via.to_string(), incarnation, op), pending);
        self.absorb(via, incarnation, out);
    }

    fn faults(&mut self) {
        let now = self.now_ms;
        if now >= self.partition_until_ms && !self.blocked.is_empty() {
            self.blocked.clear();
        }
        if self.options.partitions && self.blocked.is_empty() && self.fault_rng.chance(4) {
            self.partition();
        }
        let down = self.nodes.values().filter(|n| n.dht.is_none()).count();
        if self.options.crashes && down == 0 && self.fault_rng.chance(5) {
            if let Some(victim) = self.random_live_member() {
                let restart_ms = self.fault_rng.between(100, 2_000);
                self.crash(&victim, restart_ms, false);
            }
        }
        if now == self.destructive_at_ms {
            match self.options.destructive {
                Some(Destructive::FreshCrash) => {
                    if let Some(victim) = self.random_live_member() {
                        self.quorum_check_paused = true;
                        let restart_ms = self.fault_rng.between(100, 2_000);
                        self.crash(&victim, restart_ms, true);
                    }
                }
                Some(Destructive::Leave) => self.leave(),
                None => {}
            }
        }
        if now == self.join_at_ms && self.options.join {
            self.join();
        }
    }

    fn random_live_member(&mut self) -> Option<String> {
        let live: Vec<String> =
            self.members.iter().filter(|m| self.nodes.get(*m).is_some_and(|n| n.dht.is_some())).cloned().collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.fault_rng.below(live.len() as u64) as usize].clone())
    }

    fn partition(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let side: Vec<bool> = names.iter().map(|_| self.fault_rng.chance(500)).collect();
        for (a, side_a) in names.iter().zip(&side) {
            for (b, side_b) in names.iter().zip(&side) {
                if side_a != side_b {
                    self.blocked.insert((a.clone(), b.clone()));
                }
            }
        }
        self.partition_until_ms = self.now_ms + self.fault_rng.between(200, 3_000);
    }

    fn crash(&mut self, name: &str, restart_ms: u64, fresh: bool) {
        let Some(node) = self.nodes.get_mut(name) else { return };
        let Some(dht) = node.dht.take() else { return };
        node.kept = Some(dht.into_store());
        node.restart_at_ms = Some(self.now_ms + restart_ms);
        node.fresh_on_restart = fresh;
        let incarnation = node.incarnation;
        self.pending.retain(|(n, i, _), _| !(n == name && *i == incarnation));
    }

    fn restart(&mut self, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else { return };
        let kept = node.kept.take().unwrap_or_default();
        let store = if node.fresh_on_restart { MemStore::new() } else { kept };
        node.dht = Some(Dht::new(name.to_string(), self.config.clone(), store));
        node.incarnation += 1;
        node.restart_at_ms = None;
        node.fresh_on_restart = false;
        self.with_node(name, |dht, now, members, out| dht.set_members(members, now, out));
    }

    /// A member leaves for good: every replica drops it from the ring, and it stops.
    fn leave(&mut self) {
        let Some(victim) = self.random_live_member() else { return };
        self.quorum_check_paused = true;
        self.nodes.remove(&victim);
        self.pending.retain(|(n, _, _), _| *n != victim);
        self.members.retain(|m| *m != victim);
        self.announce_members();
    }

    fn join(&mut self) {
        let name = format!("node-{}", self.options.nodes + 1);
        self.quorum_check_paused = true;
        self.add_node(&name);
        self.members.push(name);
        self.announce_members();
    }

    fn announce_members(&mut self) {
        self.ring = Ring::new(&self.members, self.config.replication);
        for name in self.nodes.keys().cloned().collect::<Vec<_>>() {
            self.with_node(&name, |dht, now, members, out| dht.set_members(members, now, out));
        }
    }

    /// Faults stop: the network turns reliable (delays stay) and every crashed replica restarts.
    fn heal(&mut self) {
        self.faults_on = false;
        self.blocked.clear();
        for name in self.nodes.keys().cloned().collect::<Vec<_>>() {
            if self.nodes[&name].dht.is_none() {
                self.restart(&name);
            }
        }
    }

    /// One quorum read of every key, at once; then the repairs settle and the replicas each read heard
    /// from must hold what it returned.
    fn read_phase(&mut self) {
        for index in 0..self.options.keys {
            let key = format!("key-{index}");
            let Some(via) = self.random_live_member() else { return };
            let pending = Pending::Read { key: key.clone(), responders: vec![], checked: true };
            self.start(&via, pending, |dht, now, out| dht.get(&key, now, out));
        }
        let until = self.now_ms + READ_PHASE_MS;
        while self.now_ms < until && self.pending.values().any(|p| matches!(p, Pending::Read { checked: true, .. })) {
            self.step();
        }
        if self.pending.values().any(|p| matches!(p, Pending::Read { checked: true, .. })) {
            self.report
                .violations
                .push(format!("reads after faults stopped still unfinished after {READ_PHASE_MS} ms"));
        }
        // Repairs are on the wire; let them land (delays are at most `delay_ms_max`).
        let settle = self.now_ms + self.options.delay_ms_max + 2 * STEP_MS;
        while self.now_ms < settle {
            self.step();
        }
        check::read_repair(self);
    }

    /// Runs until the replicas converge and report healthy, or the bound passes.
    fn converge(&mut self, heal_ms: u64) {
        let bound = self.options.convergence_bound_ms();
        loop {
            if self.now_ms.is_multiple_of(TICK_MS) {
                match check::converged(self) {
                    None => {
                        self.report.convergence_ms = self.now_ms - heal_ms;
                        return;
                    }
                    Some(why) if self.now_ms - heal_ms >= bound => {
                        self.report.violations.push(format!("not converged {bound} ms after faults stopped: {why}"));
                        self.report.convergence_ms = self.now_ms - heal_ms;
                        return;
                    }
                    Some(_) => {}
                }
            }
            self.step();
        }
    }
}
