//! `bench consensus-core`: three replicas in one thread over a zero-delay, in-order, in-memory network,
//! fault-free. Measures decided commands per second of CPU, messages per decided slot, and message delays
//! per decision (each message is one hop deeper than the one that caused it; with equal delays a FIFO
//! queue is exactly a unit-delay network, so hop depth is time in message delays).
//!
//! Envelope: per slot each replica broadcasts a proposal, a state and a vote to n - 1 peers, so
//! 3 * n * (n - 1) = 18 consensus messages for n = 3, and the decision lands 3 message delays after the
//! proposals. CPU per slot is dominated by cloning and comparing the batch (proposals carry the commands)
//! and, with the codec on, by encoding and validating them; per command cost should fall with batch size.

use std::collections::VecDeque;
use std::time::Instant;

use consensus::{
    decode_message, encode_message, ClientCommand, CommandId, Config, Input, Message, Output, Replica, ReplicaId,
};

const REPLICAS: usize = 3;
const PAYLOAD_BYTES: usize = 16;

#[derive(Clone, Debug)]
pub struct BenchRow {
    pub batch: usize,
    pub codec: bool,
    pub commands: u64,
    pub slots: u64,
    pub null_slots: u64,
    pub cpu_s: f64,
    pub consensus_messages: u64,
    pub forward_messages: u64,
    pub delays_per_slot: f64,
}

impl BenchRow {
    pub fn commands_per_cpu_s(&self) -> f64 {
        self.commands as f64 / self.cpu_s.max(1e-9)
    }

    pub fn consensus_messages_per_slot(&self) -> f64 {
        self.consensus_messages as f64 / self.slots.max(1) as f64
    }
}

struct Envelope {
    from: usize,
    to: usize,
    depth: u64,
    message: Message,
    bytes: Option<Vec<u8>>,
}

/// Runs one case: `commands` commands of `PAYLOAD_BYTES`, submitted to replica 0 in chunks of 1024
/// whenever its queue runs low (so queues stay a few batches deep, as under steady load).
pub fn run_case(batch: usize, commands: u64, codec: bool) -> BenchRow {
    let mut replicas: Vec<Replica> = (0..REPLICAS).map(|id| Replica::new(bench_config(id, batch, commands))).collect();
    let mut network = VecDeque::new();
    let mut row = BenchRow {
        batch,
        codec,
        commands,
        slots: 0,
        null_slots: 0,
        cpu_s: 0.0,
        consensus_messages: 0,
        forward_messages: 0,
        delays_per_slot: 0.0,
    };
    let mut decided_depths = Vec::new();
    let cpu_started = cpu_seconds();
    let refill_below = (4 * batch).max(1024);
    let mut submitted = 0u64;
    loop {
        if submitted < commands && replicas[0].queue_len() < refill_below {
            let chunk_end = (submitted + 1024).min(commands);
            let chunk = (submitted..chunk_end).map(command).collect();
            submitted = chunk_end;
            let mut out = Vec::new();
            replicas[0].handle(0, Input::Submit(chunk), &mut out);
            route(0, 0, out, &mut network, &mut row, codec, &mut decided_depths, &mut replicas);
        }
        let Some(envelope) = network.pop_front() else {
            break;
        };
        let message = match &envelope.bytes {
            Some(bytes) => decode_message(bytes).unwrap_or(envelope.message),
            None => envelope.message,
        };
        let mut out = Vec::new();
        let input = Input::Message { from: ReplicaId(envelope.from as u8), message };
        replicas[envelope.to].handle(0, input, &mut out);
        route(envelope.to, envelope.depth, out, &mut network, &mut row, codec, &mut decided_depths, &mut replicas);
    }
    row.cpu_s = cpu_seconds() - cpu_started;
    row.delays_per_slot = delays_per_slot(&decided_depths);
    row
}

#[allow(clippy::too_many_arguments)]
fn route(
    from: usize,
    depth: u64,
    out: Vec<Output>,
    network: &mut VecDeque<Envelope>,
    row: &mut BenchRow,
    codec: bool,
    decided_depths: &mut Vec<u64>,
    replicas: &mut [Replica],
) {
    let mut work: VecDeque<Output> = out.into();
    while let Some(output) = work.pop_front() {
        match output {
            Output::Send { to, message } => send(from, to.index(), depth, message, network, row, codec),
            Output::Broadcast { message } => {
                for to in (0..REPLICAS).filter(|to| *to != from) {
                    send(from, to, depth, message.clone(), network, row, codec);
                }
            }
            Output::Decided(decision) => {
                if from == 0 {
                    row.slots += 1;
                    row.null_slots += u64::from(decision.batch.is_none());
                    decided_depths.push(depth);
                }
            }
            Output::MembersChanged { .. } | Output::Removed { .. } => {}
            Output::TakeSnapshot { next_slot, .. } => {
                let mut more = Vec::new();
                let input = Input::SnapshotTaken { next_slot, state: consensus::Bytes::new() };
                replicas[from].handle(0, input, &mut more);
                work.extend(more);
            }
            Output::SetTimer { .. } | Output::Rejected { .. } | Output::InstallSnapshot { .. } => {}
        }
    }
}

fn send(
    from: usize,
    to: usize,
    depth: u64,
    message: Message,
    network: &mut VecDeque<Envelope>,
    row: &mut BenchRow,
    codec: bool,
) {
    match message {
        Message::Forward { .. } => row.forward_messages += 1,
        _ => row.consensus_messages += 1,
    }
    let bytes = codec.then(|| encode_message(&message));
    network.push_back(Envelope { from, to, depth: depth + 1, message, bytes });
}

/// Average hops between consecutive decisions (slots run back to back).
fn delays_per_slot(depths: &[u64]) -> f64 {
    match (depths.first(), depths.last()) {
        (Some(first), Some(last)) if depths.len() > 1 => (last - first) as f64 / (depths.len() - 1) as f64,
        _ => 0.0,
    }
}

fn command(index: u64) -> ClientCommand {
    ClientCommand::new(CommandId { client: index % 64, seq: index / 64 }, vec![7; PAYLOAD_BYTES])
}

fn bench_config(id: usize, batch: usize, commands: u64) -> Config {
    let mut config = Config::new(REPLICAS as u8, ReplicaId(id as u8), 42);
    config.batch_commands_max = batch;
    config.queue_commands_max = (commands as usize + 1) * REPLICAS;
    config.snapshot_every_slots = 512;
    config.log_slots_max = 1024;
    config
}

/// This thread's CPU time from the scheduler (Linux), falling back to a monotonic clock elsewhere.
fn cpu_seconds() -> f64 {
    let from_schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()));
    match from_schedstat {
        Some(ns) => ns as f64 / 1e9,
        None => {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_secs_f64()
        }
    }
}

/// Runs every case and prints the table. `commands_scale` multiplies the default command counts.
pub fn run_table(commands_override: Option<u64>) -> Vec<BenchRow> {
    println!("consensus-core: {REPLICAS} replicas, one thread, zero-delay in-order network, fault-free, {PAYLOAD_BYTES}-byte payloads");
    println!(
        "{:>6} {:>6} {:>9} {:>8} {:>6} {:>14} {:>12} {:>10} {:>12}",
        "batch", "codec", "commands", "slots", "null", "cmds/cpu-s", "msgs/slot", "fwd/slot", "delays/slot"
    );
    let mut rows = Vec::new();
    for batch in [1usize, 16, 256] {
        let commands = commands_override.unwrap_or(match batch {
            1 => 20_000,
            16 => 160_000,
            _ => 256_000,
        });
        for codec in [false, true] {
            let row = run_case(batch, commands, codec);
            println!(
                "{:>6} {:>6} {:>9} {:>8} {:>6} {:>14.0} {:>12.2} {:>10.2} {:>12.2}",
                row.batch,
                if row.codec { "rkyv" } else { "off" },
                row.commands,
                row.slots,
                row.null_slots,
                row.commands_per_cpu_s(),
                row.consensus_messages_per_slot(),
                row.forward_messages as f64 / row.slots.max(1) as f64,
                row.delays_per_slot
            );
            rows.push(row);
        }
    }
    println!("Rabia's fault-free path is 3 message delays per slot (proposal, state, vote).");
    rows
}
