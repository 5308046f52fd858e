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
