//! The DHT under the simulator: a small seeded world of its own (3 or 5 replicas, each a
//! `dht::Dht<MemStore>`) with message loss, delay, duplication, reordering, partitions, crashes that keep the
//! store and one that loses it, a member leaving for good and one joining, and a client workload of puts,
//! gets and deletes on a few keys (so writes conflict). After faults stop the checkers in `check` run:
//! acknowledged writes readable from any read quorum, convergence of every partition's replicas (and
//! hand-off from the rest) within a bound, no partition left under-replicated, no value a get returns or a
//! replica holds that was never written, and a quorum read leaving the replicas it heard from up to date.
//!
//! Invariants: a run is a pure function of its `DhtOptions` (seed included); a failing run prints one
//! replay line. The world drives replicas only through the `Dht` API and carries every message through
//! `Message::encode` / `Message::decode`.

mod check;
mod world;

use crate::rng::Rng;

/// A deliberately broken replica configuration the checkers must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtBroken {
    /// Writes acknowledged after one replica.
    W1,
    NoReadRepair,
    NoAntiEntropy,
}

impl DhtBroken {
    pub fn parse(text: &str) -> Result<DhtBroken, String> {
        match text {
            "w1" => Ok(DhtBroken::W1),
            "no-read-repair" => Ok(DhtBroken::NoReadRepair),
            "no-anti-entropy" => Ok(DhtBroken::NoAntiEntropy),
            other => Err(format!("unknown dht variant `{other}` (w1, no-read-repair, no-anti-entropy)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DhtBroken::W1 => "w1",
            DhtBroken::NoReadRepair => "no-read-repair",
            DhtBroken::NoAntiEntropy => "no-anti-entropy",
        }
    }
}

/// The one fault a run may have that destroys a replica's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destructive {
    /// A replica crashes and restarts with an empty store.
    FreshCrash,
    /// A member leaves for good (with its data).
    Leave,
}

/// Everything a run depends on; `draw` derives it from the seed.
#[derive(Debug, Clone)]
pub struct DhtOptions {
    pub seed: u64,
    pub nodes: u8,
    pub broken: Option<DhtBroken>,
    pub loss_permille: u64,
    pub dup_permille: u64,
    pub delay_ms_max: u64,
    pub partitions: bool,
    pub crashes: bool,
    pub skew_ms_max: u64,
    pub destructive: Option<Destructive>,
    pub join: bool,
    /// Anti-entropy every 20 s instead of every second, so read repair alone must fix what reads see.
    pub slow_anti_entropy: bool,
    /// How long faults and the client workload last.
    pub fault_ms: u64,
    pub keys: u64,
}

impl DhtOptions {
    pub fn draw(seed: u64, nodes: u8, broken: Option<DhtBroken>) -> DhtOptions {
        let mut rng = Rng::new(seed ^ 0xD47_0000_0000_0001);
        let destructive = match rng.below(3) {
            0 => None,
            1 => Some(Destructive::FreshCrash),
            _ => Some(Destructive::Leave),
        };
        DhtOptions {
            seed,
            nodes,
            broken,
            loss_permille: if rng.chance(750) { rng.between(10, 150) } else { 0 },
            dup_permille: if rng.chance(500) { rng.between(10, 100) } else { 0 },
            delay_ms_max: rng.between(1, 60),
            partitions: rng.chance(500),
            crashes: rng.chance(600),
            skew_ms_max: if rng.chance(500) { rng.between(1, 5_000) } else { 0 },
            destructive,
            join: rng.chance(400),
            slow_anti_entropy: rng.chance(300),
            fault_ms: rng.between(4_000, 12_000),
            keys: rng.between(5, 60),
        }
    }

    pub fn replay_line(&self) -> String {
        let broken = self.broken.map(|b| format!(" --broken {}", b.name())).unwrap_or_default();
        format!(
            "cargo run --release -p sim --bin aether-sim -- dht --seed {} --nodes {}{broken}",
            self.seed, self.nodes
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "loss {}‰, dup {}‰, delay ≤{} ms, partitions {}, crashes {}, skew ≤{} ms, destructive {:?}, join {}, slow anti-entropy {}, {} ms of faults, {} keys",
            self.loss_permille,
            self.dup_permille,
            self.delay_ms_max,
            self.partitions,
            self.crashes,
            self.skew_ms_max,
            self.destructive,
            self.join,
            self.slow_anti_entropy,
            self.fault_ms,
            self.keys
        )
    }

    /// The anti-entropy interval the replicas run.
    pub fn anti_entropy_interval_ms(&self) -> u64 {
        if self.slow_anti_entropy {
            20_000
        } else {
            1_000
        }
    }

    /// How long after faults stop the replicas have to converge.
    pub fn convergence_bound_ms(&self) -> u64 {
        3 * self.anti_entropy_interval_ms() + 10_000
    }
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct DhtReport {
    pub options: DhtOptions,
    pub ops: u64,
    pub acked: u64,
    pub repairs: u64,
    /// From faults stopping to every partition's replicas agreeing and reporting healthy.
    pub convergence_ms: u64,
    pub violations: Vec<String>,
}

/// Runs one seed.
pub fn run(options: DhtOptions) -> DhtReport {
    world::World::new(options).run()
}

/// Runs `seeds` seeds from `first_seed`; `nodes` None alternates 3 and 5.
pub fn run_seeds(
    first_seed: u64,
    seeds: u64,
    nodes: Option<u8>,
    broken: Option<DhtBroken>,
    mut on_report: impl FnMut(&DhtReport),
) {
    for seed in first_seed..first_seed.saturating_add(seeds) {
        let nodes = nodes.unwrap_or(if seed % 2 == 0 { 3 } else { 5 });
        on_report(&run(DhtOptions::draw(seed, nodes, broken)));
    }
}
