//! Start failures end to end in one process: a slice that kills its node while starting, or whose start keeps
//! failing, is retried with growing pauses and then quarantined for its blueprint, with the count kept in the
//! KV; posting the blueprint again lifts the quarantine; a restarted cluster starts its ACTIVE slices again at
//! once.

mod harness;

use control::cluster::StartPolicy;
use control::lifecycle::SliceState;
use control::records::{Record, TargetRecord};
use harness::{artifact, node, Sim, ROUND_MS};
use kvstore::{Artifact, NodeId};
use std::collections::BTreeMap;

const KILLER: &str = "g:killer:1.0.0";

fn single(name: &str, artifact: &str, instances: u32) -> String {
    format!("name = \"{name}\"\n[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n")
}

fn target(sim: &Sim, a: &Artifact) -> TargetRecord {
    let entry = sim.kv.get(&format!("targets/{a}").parse().unwrap()).expect("a target record");
    TargetRecord::decode(entry.value()).unwrap()
}

/// Runs `rounds` rounds; a node that died is started again (empty) `restart_rounds` rounds later, like a
/// supervisor would. Returns the crashes as (round, node) and the most nodes down at once.
fn supervise(sim: &mut Sim, nodes: usize, rounds: usize, restart_rounds: usize) -> (Vec<(usize, NodeId)>, usize) {
    let mut down: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut crashes = Vec::new();
    let mut most_down = 0;
    for round in 0..rounds {
        for (id, since) in down.clone() {
            if round >= since + restart_rounds {
                sim.start(id.clone());
                down.remove(&id);
            }
        }
        let before = sim.live();
        sim.round();
        for i in 0..nodes {
            let id = node(i);
            if before.contains(&id) && !sim.containers.contains_key(&id) {
                crashes.push((round, id.clone()));
                down.insert(id, round);
            }
        }
        most_down = most_down.max(down.len());
    }
    (crashes, most_down)
}

fn check_quarantined_by_crashes(sim: &Sim, crashes: &[(usize, NodeId)], most_down: usize) {
    let a = artifact(KILLER);
    assert_eq!(crashes.len(), 2, "{crashes:?}");
    assert_eq!(most_down, 1, "never two nodes down at once: {crashes:?}");
    let failures = target(sim, &a).failures;
    assert!(failures.quarantined && failures.count == 2, "{failures:?}");
    let crashed = format!("crashed {} during start", crashes[1].1);
    assert_eq!(failures.reason.as_deref(), Some(crashed.as_str()));
    let records = &sim.state().slices[&a];
    let failed: Vec<_> = records.values().filter(|r| r.value.state == SliceState::Failed).collect();
    assert!(failed.iter().any(|r| r.value.error.as_deref() == Some(crashed.as_str())), "{records:#?}");
    assert!(records.values().all(|r| r.value.state == SliceState::Failed), "nothing else is placed: {records:#?}");
}

#[test]
fn a_slice_that_kills_its_node_in_start_costs_two_crashes_then_is_quarantined() {
    let mut sim = Sim::new(3);
    sim.policy = StartPolicy::default();
    sim.killers.insert(artifact(KILLER));
    sim.submit(&single("s", KILLER, 1));
    // Ten simulated minutes; the dead node is back after half a second and noticed dead by the leader first.
    let (crashes, most_down) = supervise(&mut sim, 3, 6_000, 5);
    check_quarantined_by_crashes(&sim, &crashes, most_down);
    // The second crash came only after the backoff of the first.
    let gap_ms = (crashes[1].0 - crashes[0].0) as u64 * ROUND_MS;
    assert!(gap_ms >= StartPolicy::default().backoff_ms(1), "{crashes:?}");
}

#[test]
fn a_node_back_before_the_leader_noticed_reports_its_own_crash() {
    let mut sim = Sim::new(3);
    sim.policy = StartPolicy::default();
    sim.killers.insert(artifact(KILLER));
    sim.submit(&single("s", KILLER, 1));
    // Restarted at once: the leader never sees the node gone; the node finds its start record and no slice.
    let (crashes, most_down) = supervise(&mut sim, 3, 6_000, 0);
    check_quarantined_by_crashes(&sim, &crashes, most_down);
}

#[test]
fn a_failing_start_is_retried_with_growing_pauses_then_quarantined() {
    let mut sim = Sim::new(6);
    sim.policy = StartPolicy { failures_max: 5, backoff_base_ms: 1_000, backoff_max_ms: 60_000 };
    let a = artifact("g:bad:1.0.0");
    sim.broken.insert(a.clone());
    sim.submit(&single("s", "g:bad:1.0.0", 1));
    let mut placed_at: Vec<u64> = Vec::new();
    let mut loads: BTreeMap<NodeId, u64> = BTreeMap::new();
    for _ in 0..3_000 {
        sim.round();
        for (id, record) in sim.state().slices.get(&a).into_iter().flatten() {
            if record.value.state == SliceState::Loading && loads.get(id) != Some(&record.value.since_ms) {
                loads.insert(id.clone(), record.value.since_ms);
                placed_at.push(record.value.since_ms);
            }
        }
    }
    assert_eq!(placed_at.len(), 5, "one placement per allowed failure: {placed_at:?}");
    let gaps: Vec<u64> = placed_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "the pauses grow: {gaps:?}");
    let failures = target(&sim, &a).failures;
    assert!(failures.quarantined && failures.count == 5, "{failures:?}");
    assert_eq!(failures.reason.as_deref(), Some("start failed"));
}

#[test]
fn posting_the_blueprint_again_lifts_the_quarantine() {
    let mut sim = Sim::new(2);
    sim.policy = StartPolicy { failures_max: 2, backoff_base_ms: 0, backoff_max_ms: 0 };
    let a = artifact("g:bad:1.0.0");
    sim.broken.insert(a.clone());
    sim.submit(&single("s", "g:bad:1.0.0", 1));
    for _ in 0..200 {
        sim.round();
    }
    assert!(target(&sim, &a).failures.quarantined);
    assert!(sim.active_nodes(&a).is_empty());
    sim.broken.clear();
    sim.submit(&single("s", "g:bad:1.0.0", 1));
    sim.now_ms += control::cluster::FAILED_RETIRE_AFTER_MS;
    sim.settle();
    assert_eq!(sim.active_nodes(&a).len(), 1);
    assert!(target(&sim, &a).failures.is_clear(), "{:?}", target(&sim, &a).failures);
}

#[test]
fn one_failure_is_forgotten_once_every_instance_is_active() {
    let mut sim = Sim::new(2);
    sim.policy = StartPolicy { failures_max: 2, backoff_base_ms: 500, backoff_max_ms: 500 };
    let a = artifact("g:flaky:1.0.0");
    sim.broken.insert(a.clone());
    sim.submit(&single("s", "g:flaky:1.0.0", 1));
    while !sim.state().slices.get(&a).into_iter().flatten().any(|(_, r)| r.value.state == SliceState::Failed) {
        sim.round();
    }
    sim.round();
    assert_eq!(target(&sim, &a).failures.count, 1);
    sim.broken.clear();
    sim.now_ms += control::cluster::FAILED_RETIRE_AFTER_MS;
    sim.settle();
    assert_eq!(sim.active_nodes(&a).len(), 1);
    assert!(target(&sim, &a).failures.is_clear(), "{:?}", target(&sim, &a).failures);
}

#[test]
fn a_whole_cluster_restart_serves_again_within_twenty_rounds() {
    let mut sim = Sim::new(2);
    sim.policy = StartPolicy::default();
    let a = artifact("g:a:1.0.0");
    sim.submit(&single("s", "g:a:1.0.0", 2));
    sim.settle();
    // Both nodes restart between two leader passes: the records say ACTIVE, the containers are empty.
    sim.start(node(0));
    sim.start(node(1));
    let mut rounds = 0;
    while sim.active_nodes(&a).len() < 2
        || sim.containers.values().any(|c| c.get(&a) != Some(&control::ContainerState::Active))
    {
        sim.round();
        rounds += 1;
        assert!(rounds < 20, "not serving again after {rounds} rounds: {:#?}", sim.state().slices);
    }
    assert_eq!(sim.active_nodes(&a), vec![node(0), node(1)], "each node starts its own instance again");
}

#[test]
fn without_a_limit_the_same_slice_crashes_node_after_node() {
    // The containment above is what stops the cascade: with no limit and no pause, the killer slice is
    // placed on the next node as soon as one dies, and the crashes go on.
    let mut sim = Sim::new(3);
    sim.policy = StartPolicy { failures_max: u32::MAX, backoff_base_ms: 0, backoff_max_ms: 0 };
    sim.killers.insert(artifact(KILLER));
    sim.submit(&single("s", KILLER, 1));
    let (crashes, most_down) = supervise(&mut sim, 3, 600, 5);
    assert!(crashes.len() > 10, "{crashes:?}");
    assert!(most_down >= 2, "two nodes down at once");
}
