//! Several instances of a slice on one node (`max_per_node`), end to end in one process: the leader spreads
//! instances over nodes before it doubles them up, never puts more than `max_per_node` on a node, takes copies
//! away before whole records when the count goes down, and the nodes' containers follow each record's
//! `copies`.

mod harness;

use harness::{artifact, node, Sim};
use kvstore::NodeId;
use std::collections::BTreeMap;

fn blueprint(instances: u32, max_per_node: u32) -> String {
    format!(
        "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = {instances}\nmax_per_node = {max_per_node}\n"
    )
}

fn copies(sim: &Sim) -> BTreeMap<NodeId, u32> {
    sim.active_copies(&artifact("g:a:1.0.0"))
}

fn total(sim: &Sim) -> u32 {
    copies(sim).values().sum()
}

#[test]
fn instances_beyond_the_node_count_double_up_within_max_per_node() {
    let mut sim = Sim::new(2);
    sim.submit(&blueprint(5, 3));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 3), (node(1), 2)]));
    assert_eq!(sim.keys("slices/").len(), 2, "one record per node");
    assert_eq!(sim.keys("endpoints/").len(), 2, "one endpoint per node and method");

    // More than fits: six run, not seven.
    sim.submit(&blueprint(7, 3));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 3), (node(1), 3)]));
}

#[test]
fn going_down_takes_copies_before_records() {
    let mut sim = Sim::new(2);
    sim.submit(&blueprint(6, 3));
    sim.settle();
    assert_eq!(total(&sim), 6);
    sim.submit(&blueprint(2, 3));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1), (node(1), 1)]), "both nodes keep serving");
    sim.submit(&blueprint(1, 3));
    sim.settle();
    assert_eq!(total(&sim), 1);
    assert_eq!(sim.keys("slices/").len(), 1);
}

#[test]
fn new_nodes_are_used_before_copies_and_a_dead_nodes_instances_double_up_on_survivors() {
    let mut sim = Sim::new(3);
    sim.submit(&blueprint(3, 2));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1), (node(1), 1), (node(2), 1)]), "spread first");
    sim.kill(&node(2));
    sim.settle();
    assert_eq!(total(&sim), 3, "{:?}", copies(&sim));
    assert!(copies(&sim).values().all(|n| *n <= 2));
    sim.kill(&node(1));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 2)]), "one node holds at most max_per_node");
}

#[test]
fn without_max_per_node_a_node_runs_one_instance() {
    let mut sim = Sim::new(1);
    sim.submit("name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 3\n");
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1)]));
}

#[test]
fn a_lower_max_per_node_brings_copies_down_and_places_the_rest_elsewhere() {
    let mut sim = Sim::new(3);
    sim.submit(&blueprint(4, 2));
    sim.settle();
    assert_eq!(total(&sim), 4);
    sim.kill(&node(2));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 2), (node(1), 2)]));
    // Posted again with max_per_node 1: two nodes run one each, and node-2, back, takes the third.
    sim.start(node(2));
    sim.submit(&blueprint(4, 1));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1), (node(1), 1), (node(2), 1)]));
}

#[test]
fn a_copy_that_cannot_start_leaves_the_others_serving_and_the_rest_goes_elsewhere() {
    let mut sim = Sim::new(2);
    sim.copies_max.insert(node(0), 1);
    sim.submit(&blueprint(3, 2));
    sim.settle();
    // node-0 was asked for two and runs one, saying why; node-1 takes the third.
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1), (node(1), 2)]));
    let state = sim.state();
    let on_0 = &state.slices[&artifact("g:a:1.0.0")][&node(0)].value;
    assert_eq!(on_0.state, control::lifecycle::SliceState::Active, "the copy that runs serves on");
    assert!(on_0.copies_refused.as_deref().is_some_and(|r| r.contains("only 1 copies")), "{on_0:?}");
    // Stable: more rounds change nothing and nothing fails.
    for _ in 0..50 {
        sim.round();
    }
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1), (node(1), 2)]));
}

#[test]
fn a_single_node_that_cannot_start_a_second_copy_keeps_serving_with_one() {
    let mut sim = Sim::new(1);
    sim.copies_max.insert(node(0), 1);
    sim.submit(&blueprint(2, 2));
    sim.settle();
    assert_eq!(copies(&sim), BTreeMap::from([(node(0), 1)]));
    let failed = sim.state().slices.values().flatten().filter(|(_, r)| r.value.error.is_some()).count();
    assert_eq!(failed, 0, "no record failed");
}
