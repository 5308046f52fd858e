//! A seeded simulation of the lease core, checked on every simulated millisecond step.
//!
//! The world: one linearizable store (what consensus gives: compare-and-set on a versioned record) and three
//! nodes, each running [`Lease`] on its own clock. Clocks run at rates within `1 ± RATE_ERROR` of real time
//! and change rate at random moments; writes reach the store after a random delay (sometimes long: a slot
//! decided late) or are lost; each node sees the store's history after a random lag, never going back.
//! Faults in the first part of a run: crashes (the node restarts later with a fresh `Lease`, its writes in
//! flight may still apply), partitions (its writes are lost, its view freezes, it does not know), instance
//! failures (it stops being a candidate).
//!
//! Checked: at every step at most one node that is up serves, and the served epoch never goes back (safety);
//! once the faults stop, some node serves before the run ends (liveness). The broken timings (a holder that
//! serves as long as takers wait; takers that wait less than a holder serves) must each be caught by some
//! seed, which shows the check can fail.

use super::*;

const NODES: usize = 3;
const STEP_MS: u64 = 5;
const FAULTS_UNTIL_MS: u64 = 8_000;
const RUN_MS: u64 = 12_000;
const RATE_ERROR: f64 = 0.10;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    fn rate(&mut self) -> f64 {
        1.0 - RATE_ERROR + (self.below(10_001) as f64 / 10_000.0) * 2.0 * RATE_ERROR
    }
}

struct SimNode {
    name: String,
    lease: Lease,
    clock_ms: f64,
    rate: f64,
    up_at: Option<u64>,
    partitioned_until: u64,
    instance_back_at: u64,
    /// Index into the store's history of what this node sees.
    view: usize,
}

struct InFlight {
    arrives_at: u64,
    write: KvWrite,
}

/// A violation found, with when and what.
#[derive(Debug)]
struct Violation {
    seed: u64,
    at_ms: u64,
    what: String,
}

struct World {
    rng: Rng,
    now: u64,
    nodes: Vec<SimNode>,
    /// Every state the record went through, with when it was applied.
    history: Vec<(u64, Option<Versioned<LeaseRecord>>)>,
    in_flight: Vec<InFlight>,
    last_epoch_served: u64,
    timing: LeaseTiming,
}

impl World {
    fn new(seed: u64, timing: LeaseTiming) -> World {
        let mut rng = Rng(seed);
        let nodes = (0..NODES)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                SimNode {
                    lease: Lease::new(&name, base(), timing),
                    name,
                    clock_ms: rng.below(1_000_000) as f64,
                    rate: rng.rate(),
                    up_at: None,
                    partitioned_until: 0,
                    instance_back_at: rng.below(300),
                    view: 0,
                }
            })
            .collect();
        World { rng, now: 0, nodes, history: vec![(0, None)], in_flight: Vec::new(), last_epoch_served: 0, timing }
    }

    fn faults_allowed(&self) -> bool {
        self.now < FAULTS_UNTIL_MS
    }

    fn inject_faults(&mut self, i: usize) {
        if !self.faults_allowed() {
            return;
        }
        let now = self.now;
        let rng = &mut self.rng;
        let node = &mut self.nodes[i];
        if node.up_at.is_none() && rng.chance(400) {
            node.up_at = Some(now + 200 + rng.below(2_000));
        }
        if rng.chance(400) {
            node.partitioned_until = now + 100 + rng.below(2_000);
        }
        if rng.chance(200) {
            node.instance_back_at = now + 100 + rng.below(1_500);
        }
        if rng.chance(2_000) {
            node.rate = rng.rate();
        }
    }

    fn restart_if_due(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if node.up_at.is_some_and(|at| now >= at) {
            node.up_at = None;
            node.lease = Lease::new(&node.name, base(), self.timing);
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|w| w.arrives_at <= now);
        self.in_flight = later;
        for w in due {
            self.apply(w.write);
        }
    }

    fn apply(&mut self, write: KvWrite) {
        let current = self.history.last().and_then(|(_, r)| r.clone());
        let KvWrite::Set { expected, value, .. } = write else { panic!("the lease core only sets") };
        if current.as_ref().map(|r| r.version) != expected {
            return;
        }
        let version = Revision(self.history.len() as u64);
        let value = LeaseRecord::read(&value).expect("the core writes valid records");
        self.history.push((self.now, Some(Versioned { value, version })));
    }

    fn step_node(&mut self, i: usize) {
        self.restart_if_due(i);
        self.inject_faults(i);
        let now = self.now;
        let lag = self.rng.below(60);
        let long_delay = self.faults_allowed() && self.rng.chance(20_000);
        let delay = if long_delay { self.rng.below(1_500) } else { self.rng.below(40) };
        let node = &mut self.nodes[i];
        node.clock_ms += STEP_MS as f64 * node.rate;
        if node.up_at.is_some() {
            return;
        }
        let partitioned = now < node.partitioned_until;
        if !partitioned {
            let visible = self.history.iter().rposition(|(at, _)| *at + lag <= now).unwrap_or(0);
            node.view = node.view.max(visible);
        }
        let record = self.history[node.view].1.clone();
        let has_instance = now >= node.instance_back_at;
        let input = LeaseInput {
            now_ms: node.clock_ms as u64,
            record: record.as_ref(),
            instance: has_instance.then_some("g:a:1.0.0"),
            can_write: true,
        };
        if let Some(write) = node.lease.step(input) {
            if !partitioned {
                self.in_flight.push(InFlight { arrives_at: now + delay, write });
            }
        }
    }

    fn check(&mut self, seed: u64) -> Result<(), Violation> {
        let serving: Vec<(String, u64)> = self
            .nodes
            .iter()
            .filter(|n| n.up_at.is_none())
            .filter_map(|n| n.lease.serving(n.clock_ms as u64).map(|e| (n.name.clone(), e)))
            .collect();
        let at_ms = self.now;
        if serving.len() > 1 {
            return Err(Violation { seed, at_ms, what: format!("two serving at once: {serving:?}") });
        }
        if let Some((name, epoch)) = serving.first() {
            if *epoch < self.last_epoch_served {
                let what = format!("{name} serves epoch {epoch} after epoch {} was served", self.last_epoch_served);
                return Err(Violation { seed, at_ms, what });
            }
            self.last_epoch_served = *epoch;
        }
        Ok(())
    }

    fn run(seed: u64, timing: LeaseTiming) -> Result<(), Violation> {
        let mut world = World::new(seed, timing);
        let mut served_after_faults = false;
        while world.now < RUN_MS {
            world.now += STEP_MS;
            world.deliver();
            for i in 0..NODES {
                world.step_node(i);
            }
            world.check(seed)?;
            if world.now > FAULTS_UNTIL_MS + 1_500 {
                served_after_faults |= world.nodes.iter().any(|n| n.lease.serving(n.clock_ms as u64).is_some());
            }
        }
        if !served_after_faults {
            return Err(Violation { seed, at_ms: world.now, what: "nobody served after the faults stopped".into() });
        }
        Ok(())
    }
}

fn first_violation(seeds: std::ops::Range<u64>, timing: LeaseTiming) -> Option<Violation> {
    seeds.into_iter().find_map(|seed| World::run(seed, timing).err())
}

#[test]
fn never_two_holders_serve_and_a_live_candidate_ends_up_holding() {
    assert!(TIMING.is_safe_for(RATE_ERROR));
    if let Some(v) = first_violation(0..2_000, TIMING) {
        panic!("seed {} at {} ms: {}", v.seed, v.at_ms, v.what);
    }
}

#[test]
fn a_holder_serving_until_the_ttl_is_caught() {
    let broken = LeaseTiming { serve_ms: TIMING.ttl_ms, ..TIMING };
    let found = first_violation(0..400, broken);
    assert!(found.as_ref().is_some_and(|v| v.what.contains("two serving")), "{found:?}");
}

#[test]
fn a_taker_waiting_less_than_the_holder_serves_is_caught() {
    let broken = LeaseTiming { ttl_ms: TIMING.serve_ms / 2, ..TIMING };
    let found = first_violation(0..400, broken);
    assert!(found.as_ref().is_some_and(|v| v.what.contains("two serving")), "{found:?}");
}
