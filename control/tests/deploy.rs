//! Deployment end to end in one process: blueprints in the real kvstore, the leader's reconcile, every node's
//! step and fake containers, under node deaths, restarts, arrivals, failures and blueprint changes.

mod harness;

use control::cluster::{self, FAILED_RETIRE_AFTER_MS};
use control::lifecycle::{DesiredState, SliceState};
use control::node::ContainerState;
use harness::{artifact, node, Sim, ROUND_MS};
use kvstore::Artifact;
use proptest::prelude::*;
use std::collections::BTreeMap;

const SHOP: &str = r#"name = "shop"
[[slices]]
artifact = "org.aether.examples:orders:1.0.0"
instances = 2
depends_on = ["org.aether.examples:inventory:1.0.0", "org.aether.examples:pricing:1.0.0"]
[slices.config]
currency = "EUR"
[[slices]]
artifact = "org.aether.examples:inventory:1.0.0"
[[slices]]
artifact = "org.aether.examples:pricing:1.0.0"
depends_on = ["org.aether.examples:inventory:1.0.0"]
"#;

fn orders() -> Artifact {
    artifact("org.aether.examples:orders:1.0.0")
}

fn inventory() -> Artifact {
    artifact("org.aether.examples:inventory:1.0.0")
}

fn pricing() -> Artifact {
    artifact("org.aether.examples:pricing:1.0.0")
}

fn single(name: &str, artifact: &str, instances: u32) -> String {
    format!("name = \"{name}\"\n[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n")
}

#[test]
fn a_blueprint_deploys_to_active_instances_on_distinct_nodes() {
    let mut sim = Sim::new(3);
    sim.submit(SHOP);
    sim.settle();
    assert_eq!(sim.active_nodes(&orders()).len(), 2);
    assert_eq!(sim.active_nodes(&inventory()).len(), 1);
    assert_eq!(sim.active_nodes(&pricing()).len(), 1);
    assert_eq!(sim.keys("targets/").len(), 3);
    assert_eq!(sim.keys("endpoints/").len(), 4, "one `call` endpoint per active instance");
    assert_eq!(sim.keys("routes/"), ["routes/GET/inventory", "routes/GET/orders", "routes/GET/pricing"]);
    for (id, container) in &sim.containers {
        for (artifact, state) in container {
            assert_eq!(*state, ContainerState::Active, "{artifact} on {id}");
            assert!(sim.active_nodes(artifact).contains(id));
        }
    }
}

#[test]
fn dependents_are_placed_only_once_dependencies_are_active() {
    let mut sim = Sim::new(3);
    sim.submit(SHOP);
    sim.leader();
    let state = sim.state();
    assert_eq!(state.slices.keys().cloned().collect::<Vec<_>>(), vec![inventory()]);
    // Loading inventory is not enough.
    for id in sim.live() {
        sim.node_step(&id);
    }
    sim.leader();
    assert!(!sim.state().slices.contains_key(&pricing()));
    sim.settle();
    assert_eq!(sim.active_nodes(&pricing()).len(), 1);
}

#[test]
fn the_config_reaches_the_slice_record() {
    let mut sim = Sim::new(2);
    sim.submit(SHOP);
    sim.settle();
    let state = sim.state();
    let record = state.slices[&orders()].values().next().unwrap();
    assert_eq!(record.value.config["currency"], "EUR");
}

#[test]
fn a_dead_nodes_instances_are_replaced_on_survivors() {
    let mut sim = Sim::new(4);
    sim.submit(SHOP);
    sim.settle();
    let victim = sim.active_nodes(&orders())[0].clone();
    sim.kill(&victim);
    sim.settle();
    let hosts = sim.active_nodes(&orders());
    assert_eq!(hosts.len(), 2);
    assert!(!hosts.contains(&victim));
    let victim_prefix = format!("/{victim}:");
    assert!(sim.keys("endpoints/").iter().all(|k| !k.contains(&victim_prefix)));
    assert!(sim.keys("slices/").iter().all(|k| !k.starts_with(&format!("slices/{victim}/"))));
}

#[test]
fn a_node_arriving_only_fills_shortfalls() {
    let mut sim = Sim::new(1);
    sim.submit(&single("s", "g:a:1.0.0", 3));
    sim.settle();
    let a = artifact("g:a:1.0.0");
    assert_eq!(sim.active_nodes(&a), vec![node(0)]);
    let first = sim.state().slices[&a][&node(0)].clone();
    sim.start(node(1));
    sim.start(node(2));
    sim.start(node(3));
    sim.settle();
    assert_eq!(sim.active_nodes(&a).len(), 3);
    assert_eq!(sim.state().slices[&a][&node(0)], first, "the healthy instance was not touched");
}

#[test]
fn a_node_arriving_with_nothing_missing_changes_nothing() {
    let mut sim = Sim::new(3);
    sim.submit(SHOP);
    sim.settle();
    sim.start(node(7));
    assert!(sim.leader().is_empty());
}

#[test]
fn deleting_a_blueprint_removes_everything_it_placed() {
    let mut sim = Sim::new(3);
    sim.submit(SHOP);
    sim.submit(&single("other", "g:keep:1.0.0", 1));
    sim.settle();
    sim.delete("shop");
    sim.settle();
    assert_eq!(sim.keys("targets/"), ["targets/g:keep:1.0.0"]);
    assert_eq!(sim.keys("slices/").len(), 1);
    assert_eq!(sim.keys("routes/"), ["routes/GET/keep"]);
    assert_eq!(sim.keys("endpoints/").len(), 1);
    let held: usize = sim.containers.values().map(BTreeMap::len).sum();
    assert_eq!(held, 1);
}

#[test]
fn scaling_down_keeps_the_requested_count() {
    let mut sim = Sim::new(3);
    sim.submit(&single("s", "g:a:1.0.0", 3));
    sim.settle();
    sim.submit(&single("s", "g:a:1.0.0", 1));
    sim.settle();
    assert_eq!(sim.active_nodes(&artifact("g:a:1.0.0")).len(), 1);
    assert_eq!(sim.keys("slices/").len(), 1);
    assert_eq!(sim.keys("endpoints/").len(), 1);
}

#[test]
fn a_new_version_in_the_blueprint_replaces_the_old_one() {
    let mut sim = Sim::new(3);
    sim.submit(&single("s", "g:a:1.0.0", 2));
    sim.settle();
    sim.submit(&single("s", "g:a:1.1.0", 2));
    sim.settle();
    assert!(sim.active_nodes(&artifact("g:a:1.0.0")).is_empty());
    assert_eq!(sim.active_nodes(&artifact("g:a:1.1.0")).len(), 2);
    let route = sim.kv.get(&"routes/GET/a".parse().unwrap()).unwrap();
    assert!(String::from_utf8_lossy(route.value()).contains("g:a:1.1.0"));
    assert!(sim.keys("endpoints/").iter().all(|k| k.starts_with("endpoints/g:a:1.1.0/")));
}

#[test]
fn a_failing_slice_is_reported_then_retired_and_retried() {
    let mut sim = Sim::new(1);
    let a = artifact("g:bad:1.0.0");
    sim.broken.insert(a.clone());
    sim.submit(&single("s", "g:bad:1.0.0", 1));
    for _ in 0..10 {
        sim.round();
    }
    let record = sim.state().slices[&a][&node(0)].value.clone();
    assert_eq!(record.state, SliceState::Failed);
    assert_eq!(record.error.as_deref(), Some("start failed"));
    assert!(sim.keys("endpoints/").is_empty());
    // The failed record stays readable for a while, then is retired and placed again.
    sim.broken.clear();
    sim.now_ms += FAILED_RETIRE_AFTER_MS;
    sim.settle();
    assert_eq!(sim.active_nodes(&a), vec![node(0)]);
}

#[test]
fn a_restarted_node_recovers_its_instances() {
    let mut sim = Sim::new(2);
    sim.submit(&single("s", "g:a:1.0.0", 2));
    sim.settle();
    // Restarted between two leader passes: records say ACTIVE, the container is empty.
    sim.start(node(1));
    sim.settle();
    assert_eq!(sim.active_nodes(&artifact("g:a:1.0.0")).len(), 2);
    assert_eq!(sim.containers[&node(1)].get(&artifact("g:a:1.0.0")), Some(&ContainerState::Active));
}

#[test]
fn a_slice_the_container_holds_without_a_record_is_unloaded() {
    let mut sim = Sim::new(1);
    sim.containers.get_mut(&node(0)).unwrap().insert(artifact("g:stray:1.0.0"), ContainerState::Active);
    sim.settle();
    assert!(sim.containers[&node(0)].is_empty());
}

#[test]
fn an_artifact_in_two_blueprints_belongs_to_the_first_by_name() {
    let mut sim = Sim::new(3);
    sim.submit(&single("b", "g:a:1.0.0", 3));
    sim.submit(&single("a", "g:a:1.0.0", 1));
    sim.settle();
    assert_eq!(sim.active_nodes(&artifact("g:a:1.0.0")).len(), 1);
    let conflicts = cluster::wanted_targets(&sim.state()).conflicts;
    assert_eq!(conflicts, [(kvstore::Name::parse("b").unwrap(), artifact("g:a:1.0.0"))]);
}

#[test]
fn a_larger_cluster_converges_with_an_even_spread() {
    let mut sim = Sim::new(12);
    for b in 0..8 {
        let mut toml = format!("name = \"app{b}\"\n");
        for s in 0..5 {
            toml += &format!("[[slices]]\nartifact = \"g:a{b}s{s}:1.0.0\"\ninstances = {}\n", 1 + (b + s) % 4);
        }
        sim.submit(&toml);
    }
    sim.settle();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for key in sim.keys("slices/") {
        *per_node.entry(key.split('/').nth(1).unwrap_or_default().to_owned()).or_default() += 1;
    }
    let (min, max) = (per_node.values().min().copied(), per_node.values().max().copied());
    assert_eq!(per_node.len(), 12);
    assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1, "{per_node:?}");
}

#[test]
fn no_live_node_means_no_writes() {
    let mut sim = Sim::new(2);
    sim.submit(SHOP);
    sim.settle();
    assert!(cluster::reconcile(&sim.state(), &cluster::Liveness::default(), sim.now_ms).is_empty());
}

/// A random set of blueprints: `(instances, min_instances, dependencies as a mask of earlier slices)` per
/// slice, per blueprint.
type Shape = Vec<Vec<(u32, u32, u8)>>;

fn shape() -> impl Strategy<Value = Shape> {
    let slice = (1u32..=3).prop_flat_map(|n| (Just(n), 0..=n, any::<u8>()));
    prop::collection::vec(prop::collection::vec(slice, 1..=3), 1..=2)
}

fn slice_artifact(b: usize, s: usize) -> String {
    format!("g:b{b}s{s}:1.0.0")
}

fn toml_of(b: usize, slices: &[(u32, u32, u8)]) -> String {
    let mut text = format!("name = \"bp{b}\"\n");
    for (s, (instances, min_instances, mask)) in slices.iter().enumerate() {
        let deps: Vec<String> =
            (0..s).filter(|d| mask & (1 << d) != 0).map(|d| format!("\"{}\"", slice_artifact(b, d))).collect();
        text += &format!("[[slices]]\nartifact = \"{}\"\n", slice_artifact(b, s));
        text +=
            &format!("instances = {instances}\nmin_instances = {min_instances}\ndepends_on = [{}]\n", deps.join(", "));
    }
    text
}

/// How many ACTIVE instances each artifact can have on `live` nodes (`min(instances, live)`), and whether
/// its dependencies reach their minimum, so that it must have that many. An artifact whose dependencies fell
/// below their minimum after it was placed keeps what it has but gets no new instances.
fn expected_active(shape: &Shape, live: usize) -> BTreeMap<Artifact, (usize, bool)> {
    let mut expected = BTreeMap::new();
    for (b, slices) in shape.iter().enumerate() {
        let mut ready_counts: Vec<usize> = Vec::new();
        for (s, (instances, _, mask)) in slices.iter().enumerate() {
            let ready = (0..s).filter(|d| mask & (1 << d) != 0).all(|d| ready_counts[d] >= slices[d].1 as usize);
            let cap = (*instances as usize).min(live);
            ready_counts.push(if ready { cap } else { 0 });
            expected.insert(artifact(&slice_artifact(b, s)), (cap, ready));
        }
    }
    expected
}

fn check_counts(sim: &Sim, shape: &Shape) -> Result<(), TestCaseError> {
    for (artifact, (cap, ready)) in expected_active(shape, sim.live().len()) {
        let hosts = sim.active_nodes(&artifact);
        if ready {
            prop_assert_eq!(hosts.len(), cap, "{}", artifact);
        } else {
            prop_assert!(hosts.len() <= cap, "{}", artifact);
        }
        prop_assert!(hosts.iter().all(|h| sim.live().contains(h)));
    }
    Ok(())
}

/// 64 cases by default, so the suite stays fast; `PROPTEST_CASES` asks for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

#[derive(Debug, Clone)]
enum Op {
    Leader,
    Step(usize),
    Kill(usize),
    Start(usize),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Leader),
        6 => (0usize..5).prop_map(Op::Step),
        1 => (0usize..5).prop_map(Op::Kill),
        1 => (0usize..5).prop_map(Op::Start),
        1 => Just(Op::Tick),
    ]
}

fn run(sim: &mut Sim, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Leader => {
                sim.leader();
            }
            Op::Step(i) => {
                sim.node_step(&node(*i));
            }
            Op::Kill(i) if sim.live().len() > 1 => sim.kill(&node(*i)),
            Op::Kill(_) => {}
            Op::Start(i) => sim.start(node(*i)),
            Op::Tick => sim.now_ms += 20 * ROUND_MS,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reconcile_is_deterministic_and_idempotent(
        shape in shape(),
        nodes in 1usize..=5,
        ops in prop::collection::vec(op(), 0..60),
        delete_first in any::<bool>(),
    ) {
        let mut sim = Sim::new(nodes);
        for (b, slices) in shape.iter().enumerate() {
            sim.submit(&toml_of(b, slices));
        }
        run(&mut sim, &ops);
        if delete_first {
            sim.delete("bp0");
        }
        let state = sim.state();
        let writes = cluster::reconcile(&state, &sim.liveness(), sim.now_ms);
        prop_assert_eq!(&cluster::reconcile(&state, &sim.liveness(), sim.now_ms), &writes);
        prop_assert_eq!(sim.apply(&writes), writes.len(), "every write applies against the state it was computed on");
        let again = cluster::reconcile(&sim.state(), &sim.liveness(), sim.now_ms);
        prop_assert!(again.is_empty(), "second pass wrote {:#?}", again);
    }

    #[test]
    fn deployments_converge_heal_and_clean_up(
        shape in shape(),
        nodes in 1usize..=5,
        ops in prop::collection::vec(op(), 0..30),
    ) {
        let mut sim = Sim::new(nodes);
        for (b, slices) in shape.iter().enumerate() {
            sim.submit(&toml_of(b, slices));
        }
        run(&mut sim, &ops);
        sim.settle();
        check_counts(&sim, &shape)?;

        if sim.live().len() > 1 {
            let victim = sim.live()[0].clone();
            sim.kill(&victim);
            sim.settle();
            check_counts(&sim, &shape)?;
            let victim_prefix = format!("slices/{victim}/");
            prop_assert!(sim.keys("slices/").iter().all(|k| !k.starts_with(&victim_prefix)));
        }

        for b in 0..shape.len() {
            sim.delete(&format!("bp{b}"));
        }
        sim.settle();
        prop_assert!(sim.keys("slices/").is_empty());
        prop_assert!(sim.keys("targets/").is_empty());
        prop_assert!(sim.keys("endpoints/").is_empty());
        prop_assert!(sim.keys("routes/").is_empty());
        prop_assert!(sim.containers.values().all(BTreeMap::is_empty));
    }

    #[test]
    fn every_record_write_follows_the_lifecycle(
        shape in shape(),
        nodes in 1usize..=4,
        ops in prop::collection::vec(op(), 0..80),
        quarantine in any::<bool>(),
    ) {
        let mut sim = Sim::new(nodes);
        if quarantine {
            sim.policy = cluster::StartPolicy { failures_max: 1, ..cluster::StartPolicy::default() };
        }
        for (b, slices) in shape.iter().enumerate() {
            sim.submit(&toml_of(b, slices));
        }
        let mut before = sim.state().slices;
        for op in ops {
            let live = sim.live();
            run(&mut sim, std::slice::from_ref(&op));
            let after = sim.state().slices;
            for (artifact, by_node) in &after {
                for (id, record) in by_node {
                    let Some(old) = before.get(artifact).and_then(|b| b.get(id)) else {
                        prop_assert_eq!(record.value.state, SliceState::Load);
                        continue;
                    };
                    let (from, to) = (old.value.state, record.value.state);
                    // A restarted node places its lost ACTIVE instance again, as a fresh LOAD record.
                    let recreated = (from, to) == (SliceState::Active, SliceState::Load);
                    // The leader marks a start that a dead node left behind FAILED when it quarantines.
                    let crashed = matches!(op, Op::Leader) && !live.contains(id) && to == SliceState::Failed;
                    prop_assert!(
                        from == to || recreated || crashed || control::lifecycle::can_transition(from, to),
                        "{} -> {}",
                        from,
                        to
                    );
                    let retired = old.value.desired == DesiredState::Unloaded;
                    let still_retired = record.value.desired == DesiredState::Unloaded;
                    prop_assert!(!retired || still_retired, "a retired record came back");
                }
            }
            before = after;
        }
    }
}
