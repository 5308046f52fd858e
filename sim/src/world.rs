//! The simulated cluster: replicas' cores, their key-value state machines, clients, a seeded network and
//! clock, and the fault schedule, all in one thread and driven by one event queue ordered by (time,
//! insertion order). Time is global microseconds; each replica's clock (`world/clock.rs`) runs at its own
//! rate (drift), is shifted by its own skew, and with process clocks counts from its process start.
//!
//! A run has two phases: a faulty phase (loss, duplication, delay spikes, symmetric, one-way and
//! non-transitive partitions, a coin-aware scheduler, crashes) where only safety is checked, then a healed
//! phase where every operation must complete within `liveness_ms` and every replica must catch up.
//! With the `size` fault class the network refuses any message over `message_bytes_max` (in both phases,
//! as a node's peer queue would) and written values carry filler, so the decided log and the snapshots
//! outgrow one message and catch-up only succeeds in pieces that fit.
//!
//! Every replica starts as the node starts one with an empty log, `Replica::fresh`: recovering, unless
//! every peer reports slot 0 (a brand-new cluster, which is how the run's cluster forms).
//!
//! Crashes come in two kinds. One loses the disk (a wiped data directory): the replica comes back with an
//! empty durable log, as `Replica::fresh` again, and these keep at most f replicas without their votes (down without a disk, or
//! recovering) at once, the bound under which `restarted` keeps the cluster live. The other keeps the
//! disk (`durable`): any replica, any number at a time, and the whole cluster at once (`cluster_crash`);
//! the replica comes back with `Replica::resume` from its durable log (`durable`) and its key-value
//! machine from the same snapshot and slots. Each replica's outputs are carried out a turn at a time, as
//! the node runtime does: the turn's records (decided slots, own round messages, snapshots) are written,
//! then its messages leave and its clients are answered. Some crashes land inside a turn: a prefix of its
//! records is written and nothing of it leaves (a torn tail loses only what nobody saw). Storage fails
//! too (`disk_errors`): a write fails inside a turn, and the shell stops as the node does, before the
//! turn's messages leave, then resumes recovering its vote floor; and some snapshots are written late,
//! after newer ones, and must be ignored by the disk.
//!
//! With `Faults::members` (five ids) the membership changes too: see `world/members.rs`.
//!
//! Safety checks run as things happen: every durable decision against every other replica's decision of
//! that slot (agreement), every decision against the replica's own previous slot (no gaps, no repeats),
//! every proposal, state and vote against what the same replica said before in that round, across
//! restarts and resumes (equivocation), and every resumed replica against the state machine rebuilt
//! from the same disk. Validity, linearizability and state convergence are checked at the end.
//!
//! Invariants: nothing here reads the real clock or a global random source; the same options replay the
//! same run event for event.

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};

use consensus::{
    Command, CommandId, CommandKind, Config, DecidedSlot, Decision, Input, Message, Replica, ReplicaId, Slot, TimerKind,
};

use crate::check::{HistoryEntry, Violation, ViolationKind};
use crate::durable::DurableLog;
use crate::kv::{KvMachine, KvResult};
use crate::options::Options;
use crate::rng::Rng;

mod bridged;
mod clients;
mod clock;
mod disk;
mod faults;
mod members;
mod network;
mod report;
mod turn;

const SETTLE_MS: u64 = 3_000;
/// How often a shell that sends before its records are synced (`ShellBroken::SendBeforeSync`) syncs.
const SYNC_EVERY_MS: u64 = 10;

enum Payload {
    Message(Message),
    Bytes(Vec<u8>),
}

enum Event {
    /// `epoch`: the network epoch it was sent in; a whole-cluster crash that resets every connection
    /// starts a new one, and deliveries of an older epoch are lost.
    Deliver {
        from: usize,
        to: usize,
        payload: Payload,
        epoch: u64,
    },
    Timer {
        replica: usize,
        kind: TimerKind,
        incarnation: u64,
        at_ms: u64,
    },
    ClientTick {
        client: usize,
        generation: u64,
    },
    Reply {
        client: usize,
        seq: u64,
        result: KvResult,
    },
    /// A crash that loses the disk (volatile restart), at most f impaired at a time.
    Crash,
    /// A crash that keeps the disk, of one replica chosen at random.
    DurableCrash,
    /// A storage write of one replica fails in its next turn.
    DiskError,
    /// The same, of this replica (a whole-cluster crash schedules one per replica).
    DurableCrashOf {
        replica: usize,
    },
    ClusterCrash,
    Restart {
        replica: usize,
    },
    Partition,
    Heal,
    /// `Faults::strand`: arm the lost forward and crash of the stranding replica.
    Strand,
    /// `Faults::bridged`: the non-transitive partition starts; the control plane's logic runs (`bridged`).
    Bridge,
    ControlTick,
    /// `Faults::members`: submit a random membership change.
    Reconfigure,
}

struct Scheduled {
    at_us: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.order) == (other.at_us, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: the heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.order).cmp(&(self.at_us, self.order))
    }
}

struct Node {
    core: Replica,
    kv: KvMachine,
    /// What survives a crash that keeps the disk.
    disk: DurableLog,
    /// While down: whether the disk survived (it comes back with `Replica::resume`) or not.
    disk_kept: bool,
    /// Only with `ShellBroken::SendBeforeSync`: the disk as of the last periodic sync, and when that was.
    synced: Option<(DurableLog, u64)>,
    /// A crash that keeps the disk is due in the middle of this replica's next turn.
    torn_next_turn: bool,
    /// A storage write fails in this replica's next turn.
    fail_write_next_turn: bool,
    /// Snapshots handed to a slow writer: they land on the disk at the given time, unless a crash comes
    /// first.
    late_snapshots: Vec<(u64, consensus::SnapshotRecord)>,
    up: bool,
    incarnation: u64,
    timers: [Option<u64>; 2],
    /// Client commands submitted here whose response this replica owes.
    waiting: BTreeSet<(u64, u64)>,
    /// The next slot this incarnation must apply (decisions must arrive in order, without gaps).
    expected_slot: Slot,
    skew_ms: u64,
    /// Clock rate in parts per million of real time (drift).
    rate_ppm: u64,
    /// What the clock read when this process started, and when (global time) that was.
    clock_base_ms: u64,
    clock_zero_us: u64,
    /// Crashed for good (`Faults::strand`): never restarted, not expected to converge.
    kept_down: bool,
}

struct Client {
    ops_left: u64,
    next_seq: u64,
    generation: u64,
    /// The operation in flight: (sequence, history index).
    current: Option<(u64, usize)>,
}

/// What one run found.
#[derive(Debug)]
pub struct RunReport {
    pub options: Options,
    pub violations: Vec<Violation>,
    pub slots_decided: u64,
    pub ops_completed: u64,
    pub messages_sent: u64,
    /// Messages refused at the sender for being over the transport's byte limit (`Faults::size`).
    pub messages_refused_oversize: u64,
    /// Snapshot chunks the replicas received, all replicas together.
    pub snapshot_chunks_received: u64,
    /// Crashes of either kind (each replica's part in a whole-cluster crash counts once).
    pub crashes: u64,
    /// Of those, crashes that kept the disk (the replica resumed from its durable log)...
    pub durable_crashes: u64,
    /// ...and of those, crashes in the middle of a turn, which lost a suffix of that turn's records.
    pub torn_crashes: u64,
    pub cluster_crashes: u64,
    /// Replicas rebuilt with `Replica::resume` (or `resume_recovering`, when they crashed mid-recovery).
    pub resumes: u64,
    /// Of those, resumes with own round messages of the open slot to restore...
    pub resumes_mid_slot: u64,
    /// ...and of those, resumes whose own messages reach phase 2 or later.
    pub resumes_past_phase_one: u64,
    pub null_slots: u64,
    pub phases_max: u32,
    /// Over the replicas alive at the end: phases summed over the slots they decided by voting.
    pub phases_total: u64,
    pub phases_histogram: [u64; 16],
    pub slots_by_vote: u64,
    pub null_run_longest: u64,
    pub snapshots_installed: u64,
    /// Storage writes that failed mid-turn (the replica stopped and resumed recovering).
    pub disk_errors: u64,
    /// Late snapshots that landed after a newer one.
    pub stale_snapshots: u64,
    /// With `Faults::bridged`: leadership claims, slice records written and removed by the control plane.
    pub control_counts: [u64; 3],
    /// With `Faults::members`: reconfigurations submitted, and membership changes decided.
    pub reconfigurations: [u64; 2],
    /// From the end of the faulty phase to the last operation's response.
    pub heal_to_done_ms: u64,
    /// The longest any operation waited for its response counted from when faults stopped (or from its
    /// invocation, if later): the liveness figure.
    pub op_wait_after_heal_ms_max: u64,
    pub end_ms: u64,
}

pub struct World {
    options: Options,
    now_us: u64,
    order: u64,
    events: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    history: Vec<HistoryEntry>,
    submitted: BTreeMap<CommandId, Vec<u8>>,
    decided: BTreeMap<Slot, (usize, Option<Vec<CommandId>>)>,
    violations: Vec<Violation>,
    net_rng: Rng,
    client_rng: Rng,
    fault_rng: Rng,
    /// `cut[from][to]`: messages on that directed link are dropped (partitions, possibly one-way).
    cut: Vec<Vec<bool>>,
    /// What each replica sent per (replica, slot, phase, round), across incarnations, to catch a
    /// replica that says two different things in one round (the restart rule exists to prevent it).
    said: HashMap<(usize, u64, u32, u8), u64>,
    healed_at_us: Option<u64>,
    all_done_at_us: Option<u64>,
    incarnations: u64,
    messages_sent: u64,
    messages_refused_oversize: u64,
    crashes: u64,
    durable_crashes: u64,
    torn_crashes: u64,
    cluster_crashes: u64,
    resumes: u64,
    resumes_mid_slot: u64,
    resumes_past_phase_one: u64,
    net_epoch: u64,
    snapshots_installed: u64,
    /// `Faults::strand` armed: (stranding replica, peer whose forward is lost).
    strand: Option<(usize, usize)>,
    /// After the strand: the peer that missed the forward, where clients now submit.
    stranded_peer: Option<usize>,
    disk_errors: u64,
    stale_snapshots: u64,
    /// `Faults::bridged`: the control plane on top, and the pair of replicas that cannot talk.
    control: Option<crate::leader::Control>,
    bridge: Option<(usize, usize)>,
    members: members::Track,
}

/// Runs one seed's simulation and checks it.
pub fn run(options: Options) -> RunReport {
    let mut world = World::new(options);
    world.start();
    world.run_events();
    world.finish()
}

impl World {
    fn new(options: Options) -> World {
        let mut rng = Rng::new(options.seed);
        let net_rng = rng.fork();
        let client_rng = rng.fork();
        let mut fault_rng = rng.fork();
        let mut clock_rng = rng.fork();
        let nodes = (0..options.replicas)
            .map(|id| {
                let skew_ms = fault_rng.below(options.skew_ms_max + 1);
                let rate_ppm = if options.faults.skew { fault_rng.between(950_000, 1_050_000) } else { 1_000_000 };
                let clock_base_ms = clock_rng.below(options.clock_offset_ms_max + 1);
                let config = replica_config(&options, id);
                let core = match members::starts_as_learner(&options, id) {
                    true => Replica::learner(config, 0, members::genesis(&options)),
                    false => Replica::fresh(config, 0),
                };
                Node {
                    core,
                    kv: KvMachine::default(),
                    // `fresh` records that it is recovering, as the node does.
                    disk: DurableLog::recovering(),
                    disk_kept: true,
                    torn_next_turn: false,
                    fail_write_next_turn: false,
                    late_snapshots: Vec::new(),
                    synced: None,
                    up: true,
                    incarnation: 0,
                    timers: [None, None],
                    waiting: BTreeSet::new(),
                    expected_slot: Slot(0),
                    skew_ms,
                    rate_ppm,
                    clock_base_ms,
                    clock_zero_us: 0,
                    kept_down: false,
                }
            })
            .collect();
        let clients = (0..options.clients)
            .map(|_| Client { ops_left: options.ops_per_client, next_seq: 1, generation: 0, current: None })
            .collect();
        World {
            cut: vec![vec![false; usize::from(options.replicas)]; usize::from(options.replicas)],
            members: members::Track::new(&options),
            said: HashMap::new(),
            options,
            now_us: 0,
            order: 0,
            events: BinaryHeap::new(),
            nodes,
            clients,
            history: Vec::new(),
            submitted: BTreeMap::new(),
            decided: BTreeMap::new(),
            violations: Vec::new(),
            net_rng,
            client_rng,
            fault_rng,
            healed_at_us: None,
            all_done_at_us: None,
            incarnations: 0,
            messages_sent: 0,
            messages_refused_oversize: 0,
            crashes: 0,
            durable_crashes: 0,
            torn_crashes: 0,
            cluster_crashes: 0,
            resumes: 0,
            resumes_mid_slot: 0,
            resumes_past_phase_one: 0,
            net_epoch: 0,
            snapshots_installed: 0,
            strand: None,
            stranded_peer: None,
            disk_errors: 0,
            stale_snapshots: 0,
            control: None,
            bridge: None,
        }
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.order += 1;
        self.events.push(Scheduled { at_us: at_us.max(self.now_us), order: self.order, event });
    }

    fn start(&mut self) {
        for replica in 0..self.nodes.len() {
            let mut out = Vec::new();
            let local_ms = self.local_ms(replica);
            self.nodes[replica].core.start(local_ms, &mut out);
            self.apply_outputs(replica, out);
        }
        for client in 0..self.clients.len() {
            let at_us = self.client_rng.below(20_000);
            self.schedule(at_us, Event::ClientTick { client, generation: 0 });
        }
        if self.options.faults.partition {
            self.schedule(self.options.partition_every_ms * 1000, Event::Partition);
        }
        if self.options.faults.crash {
            self.schedule(self.options.crash_every_ms * 1000, Event::Crash);
        }
        if self.options.faults.durable {
            self.schedule(self.options.durable_crash_every_ms * 1000, Event::DurableCrash);
        }
        if self.options.faults.cluster_crash {
            self.schedule(self.options.cluster_crash_at_ms * 1000, Event::ClusterCrash);
        }
        if self.options.faults.strand {
            self.schedule(self.options.strand_at_ms * 1000, Event::Strand);
        }
        if self.options.faults.disk_errors {
            self.schedule(self.options.disk_error_every_ms * 1000, Event::DiskError);
        }
        if self.members.on {
            self.schedule(self.options.crash_every_ms * 1000, Event::Reconfigure);
        }
        self.schedule(self.options.faulty_ms * 1000, Event::Heal);
        self.start_bridged();
    }

    fn run_events(&mut self) {
        while let Some(next) = self.events.pop() {
            self.now_us = next.at_us;
            if self.should_stop() {
                return;
            }
            self.dispatch(next.event);
        }
    }

    /// Stops once everything completed and converged, or when a liveness bound ran out.
    fn should_stop(&mut self) -> bool {
        let Some(healed_at_us) = self.healed_at_us else {
            return false;
        };
        let all_done = self.clients.iter().all(|c| c.ops_left == 0 && c.current.is_none());
        if !all_done {
            if self.now_us > healed_at_us + self.options.liveness_ms * 1000 {
                self.report_stuck_operations();
                return true;
            }
            return false;
        }
        let done_at_us = *self.all_done_at_us.get_or_insert(self.now_us);
        if self.converged() {
            return true;
        }
        if self.now_us > done_at_us + SETTLE_MS * 1000 {
            self.report_unconverged();
            return true;
        }
        false
    }

    fn converged(&self) -> bool {
        let end = self.decided.keys().next_back().map_or(Slot(0), |s| s.next());
        self.nodes.iter().all(|n| n.kept_down || (n.up && n.expected_slot == end))
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, payload, epoch } => self.deliver(from, to, payload, epoch),
            Event::Timer { replica, kind, incarnation, at_ms } => self.fire_timer(replica, kind, incarnation, at_ms),
            Event::ClientTick { client, generation } => self.client_tick(client, generation),
            Event::Reply { client, seq, result } => self.client_reply(client, seq, result),
            Event::Crash => self.crash_one(),
            Event::DurableCrash => self.durable_crash_any(),
            Event::DiskError => self.disk_error_any(),
            Event::DurableCrashOf { replica } => self.durable_crash(replica),
            Event::ClusterCrash => self.cluster_crash(),
            Event::Restart { replica } => self.restart(replica),
            Event::Partition => self.repartition(),
            Event::Heal => self.heal(),
            Event::Strand => self.arm_strand(),
            Event::Bridge => self.bridge(),
            Event::ControlTick => self.control_tick(),
            Event::Reconfigure => self.reconfigure(),
        }
    }

    fn run_core(&mut self, replica: usize, input: Input) {
        if !self.nodes[replica].up {
            return;
        }
        let local_ms = self.local_ms(replica);
        let mut out = Vec::new();
        self.nodes[replica].core.handle(local_ms, input, &mut out);
        self.apply_outputs(replica, out);
    }

    fn on_decided(&mut self, replica: usize, decision: Decision, replies: &mut Vec<(usize, u64, KvResult)>) {
        let node = &mut self.nodes[replica];
        if decision.slot != node.expected_slot {
            let detail = format!(
                "replica {replica} applied slot {} but its next slot was {}",
                decision.slot.0, node.expected_slot.0
            );
            self.violate(ViolationKind::Agreement, detail);
        }
        self.nodes[replica].expected_slot = decision.slot.next();
        // A reconfiguration's payload is the shell's (member names), not a key-value command.
        for command in decision.batch.iter().flatten().filter(|c| c.kind == CommandKind::Client) {
            let node = &mut self.nodes[replica];
            node.kv.apply(command);
            let key = (command.id.client, command.id.seq);
            if node.waiting.remove(&key) {
                if let Some(result) = node.kv.response(key.0, key.1) {
                    replies.push((key.0 as usize, key.1, result));
                }
            }
        }
    }

    /// Agreement: every durable decision of a slot names the same commands. A decision counts once its
    /// record is durable (from then on the replica may tell it to peers and clients); one computed in a
    /// turn that crashed before its record was written may rest on the replica's own unsent vote, which
    /// it is free to cast differently after resuming, so it binds nobody.
    fn check_agreement(&mut self, replica: usize, decided: &DecidedSlot) {
        let ids = decided.batch.as_ref().map(|b| b.iter().map(|c| c.id).collect::<Vec<_>>());
        match self.decided.get(&decided.slot) {
            Some((first, seen)) if *seen != ids => {
                let detail = format!(
                    "slot {} decided {:?} on replica {first} but {:?} on replica {replica}",
                    decided.slot.0, seen, ids
                );
                self.violate(ViolationKind::Agreement, detail);
            }
            Some(_) => {}
            None => {
                self.decided.insert(decided.slot, (replica, ids));
                self.control_decided(decided.slot, decided.batch.as_deref());
            }
        }
    }
}

/// Whether a replica's votes are unknown to itself: down with its disk lost, or recovering (also after a
/// crash in the middle of recovering, or a failed write, which resume it recovering).
fn lost_votes(node: &Node) -> bool {
    match node.up {
        // A write due to fail stops it and brings it back recovering.
        true => node.core.is_recovering() || node.fail_write_next_turn,
        false => !node.disk_kept || node.disk.is_recovering(),
    }
}

fn batch_fingerprint(batch: &[Command]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for command in batch {
        (command.id, command.origin, command.timestamp_ms, command.deadline_ms, &command.payload).hash(&mut hasher);
    }
    batch.len().hash(&mut hasher);
    hasher.finish()
}

fn coin_seed(options: &Options) -> u64 {
    options.seed.rotate_left(17) ^ 0xC011
}

fn replica_config(options: &Options, id: u8) -> Config {
    let mut config = Config::new(options.replicas, ReplicaId(id), coin_seed(options));
    config.members = members::genesis(options);
    config.batch_commands_max = options.batch_commands_max;
    config.propose_delay_ms = options.propose_delay_ms;
    config.queue_commands_max = options.queue_commands_max;
    config.snapshot_every_slots = options.snapshot_every_slots;
    config.log_slots_max = (options.snapshot_every_slots * 2) as usize;
    config.log_tail_slots = options.log_tail_slots();
    config.queue_bytes_max = options.queue_bytes_max;
    config.log_bytes_max = options.log_bytes_max;
    config.broken = options.broken;
    network::fit_to_message_limit(options, &mut config);
    config
}
