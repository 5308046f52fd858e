//! A deterministic simulator for the consensus core: many replicas in one thread under a seeded network
//! (delay, loss, duplication, reordering, symmetric and one-way partitions, a scheduler that knows the
//! coin), clock skew and drift, process clocks that start hours apart and restart at zero, a command
//! stranded by a lost forward and its origin's death (`strand`), crashes that lose everything (`Replica::restarted`), and crashes that keep
//! the disk, of one replica or of the whole cluster, some torn in the middle of a turn (`Replica::resume`
//! from the durable log kept in `durable`). Checkers cover agreement, validity, equivocation, liveness
//! after faults stop, state convergence, and linearizability of a key-value register workload; `leader` runs
//! the control plane's lease and leader logic on top and checks that no healthy node's instance is moved. `bench`
//! holds the fault-free consensus-core benchmark. `dht` is a small world of its own for the storage plane's
//! replicas (`dht::Dht`), with its own faults, membership changes and checkers.
//!
//! Invariants: a run is a pure function of its `Options` (seed included); a failing run prints one line
//! that replays it. The simulator is a second shell around `consensus`, the node runtime being the first;
//! it builds replicas with the core's constructors and drives them only through `Replica::handle`.

pub mod bench;
pub mod check;
pub mod dht;
pub mod durable;
pub mod kv;
pub mod leader;
pub mod linearizability;
pub mod options;
pub mod rng;
pub mod world;

pub use check::{Violation, ViolationKind};
pub use options::{Faults, Options, ShellBroken};
pub use world::{run, RunReport};

/// Runs `seeds` consecutive seeds from `first_seed`, calling `on_report` after each.
pub fn run_seeds(
    first_seed: u64,
    seeds: u64,
    replicas: u8,
    faults: Faults,
    mut configure: impl FnMut(&mut Options),
    mut on_report: impl FnMut(&RunReport),
) {
    for seed in first_seed..first_seed.saturating_add(seeds) {
        let mut options = Options::draw(seed, replicas, faults);
        configure(&mut options);
        let report = run(options);
        on_report(&report);
    }
}
