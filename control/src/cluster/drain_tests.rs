//! The drain steps of the leader's reconcile, pass by pass on a KV the test advances by hand.

use super::{reconcile, ClusterState, Liveness};
use crate::blueprint;
use crate::duty::{Duty, DutyRecord};
use crate::lifecycle::SliceState;
use crate::records::{BlueprintRecord, Record, SliceRecord};
use crate::write::KvWrite;
use kvstore::{Command, KvState};

use super::test_support::{n, put};

fn blueprint(kv: &mut KvState, instances: u32, min_available: Option<u32>) {
    let budget = min_available.map(|m| format!("min_available = {m}\n")).unwrap_or_default();
    blueprint_with(kv, instances, &budget);
}

fn blueprint_with(kv: &mut KvState, instances: u32, extra: &str) {
    let toml = format!("name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = {instances}\n{extra}");
    let parsed = blueprint::parse(&toml, &|_| true).unwrap();
    put(kv, "blueprints/s", BlueprintRecord { toml, blueprint: parsed }.encode());
}

/// An ACTIVE record with its endpoint, or a record in `state` without one.
fn record(kv: &mut KvState, node: usize, state: SliceState, instance: u32) {
    super::test_support::slice(kv, node, "g:a:1.0.0", state, instance, 0);
}

fn duty(kv: &mut KvState, node: usize, state: Duty) {
    put(kv, &format!("nodes/n{node}/lifecycle"), DutyRecord::new(state, None, 0).encode());
}

fn run(kv: &KvState, live: &[usize]) -> Vec<KvWrite> {
    let liveness = Liveness::all_live(live.iter().map(|i| n(*i)));
    reconcile(&ClusterState::from_entries(kv.list("")), &liveness, 0)
}

/// Slice and lifecycle writes as short text (targets left out).
fn described(writes: &[KvWrite]) -> Vec<String> {
    let mut out = Vec::new();
    for write in writes.iter().map(KvWrite::unguarded) {
        let key = write.key().to_string();
        match write {
            KvWrite::Set { value, .. } if key.starts_with("slices/") => {
                let r = SliceRecord::decode(value).unwrap();
                out.push(format!("{key} {} desired {}", r.state, r.desired));
            }
            KvWrite::Set { value, .. } if key.starts_with("nodes/") => {
                let r = DutyRecord::decode(value).unwrap();
                out.push(format!("{key} {} waiting {}", r.state, r.waiting.is_some()));
            }
            KvWrite::Remove { .. } => out.push(format!("remove {key}")),
            _ => {}
        }
    }
    out
}

fn apply(kv: &mut KvState, writes: &[KvWrite]) {
    for write in writes {
        kv.apply_command(write.to_command(), &mut |_| {});
    }
}

fn waiting(kv: &KvState, node: usize) -> Option<String> {
    let entry = kv.get(&format!("nodes/n{node}/lifecycle").parse().unwrap())?;
    DutyRecord::decode(entry.value()).unwrap().waiting
}

#[test]
fn nothing_new_goes_to_a_node_that_is_not_on_duty() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 3, None);
    duty(&mut kv, 1, Duty::Joining);
    duty(&mut kv, 2, Duty::Decommissioned);
    duty(&mut kv, 3, Duty::OnDuty);
    let writes = described(&run(&kv, &[1, 2, 3, 4]));
    assert_eq!(writes, ["slices/n3/g:a:1.0.0 LOAD desired ACTIVE", "slices/n4/g:a:1.0.0 LOAD desired ACTIVE"]);
}

#[test]
fn a_drain_places_the_replacement_first_and_retires_only_once_it_serves() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 2, None);
    record(&mut kv, 1, SliceState::Active, 0);
    record(&mut kv, 2, SliceState::Active, 1);
    let writes = run(&kv, &[1, 2, 3]);
    apply(&mut kv, &writes);
    assert!(described(&run(&kv, &[1, 2, 3])).is_empty(), "settled");
    duty(&mut kv, 1, Duty::Draining);
    // Pass 1: a replacement on n3; n1's record stays (the surge), and n1 is told why it waits.
    let writes = run(&kv, &[1, 2, 3]);
    assert_eq!(
        described(&writes),
        ["slices/n3/g:a:1.0.0 LOAD desired ACTIVE", "nodes/n1/lifecycle DRAINING waiting true"]
    );
    apply(&mut kv, &writes);
    assert!(waiting(&kv, 1).unwrap().contains("waiting for replacements"), "{:?}", waiting(&kv, 1));
    // The replacement is ACTIVE but its endpoint is not registered yet: still nothing retired.
    let replacement = SliceRecord::decode(kv.get(&"slices/n3/g:a:1.0.0".parse().unwrap()).unwrap().value()).unwrap();
    let active = SliceRecord { state: SliceState::Active, ..replacement.clone() };
    put(&mut kv, "slices/n3/g:a:1.0.0", active.encode());
    assert!(described(&run(&kv, &[1, 2, 3])).is_empty(), "no endpoint yet: nothing moves");
    // With its endpoint: n1's instance is retired, its endpoint removed (callers stop choosing it), and the
    // wait is cleared.
    put(&mut kv, &format!("endpoints/g:a:1.0.0/get/n3:{}", replacement.instance), b"{}".to_vec());
    let writes = run(&kv, &[1, 2, 3]);
    assert_eq!(
        described(&writes),
        [
            "slices/n1/g:a:1.0.0 ACTIVE desired UNLOADED",
            "nodes/n1/lifecycle DRAINING waiting false",
            "remove endpoints/g:a:1.0.0/get/n1:0"
        ]
    );
    apply(&mut kv, &writes);
    // The node removes its record: the leader writes DECOMMISSIONED.
    kv.apply_command(Command::Remove { key: "slices/n1/g:a:1.0.0".parse().unwrap() }, &mut |_| {});
    let writes = described(&run(&kv, &[1, 2, 3]));
    assert!(writes.contains(&"nodes/n1/lifecycle DECOMMISSIONED waiting false".to_owned()), "{writes:?}");
}

#[test]
fn a_drain_that_no_node_can_take_waits_and_says_why() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 3, None);
    for i in 1..=3 {
        record(&mut kv, i, SliceState::Active, u32::try_from(i).unwrap());
    }
    duty(&mut kv, 2, Duty::Draining);
    let writes = run(&kv, &[1, 2, 3]);
    assert_eq!(described(&writes), ["nodes/n2/lifecycle DRAINING waiting true"]);
    apply(&mut kv, &writes);
    assert!(waiting(&kv, 2).unwrap().contains("no ON_DUTY node can take a replacement"), "{:?}", waiting(&kv, 2));
    assert!(described(&run(&kv, &[1, 2, 3])).is_empty(), "the same reason is not written again");
    // A fourth node joins: the replacement goes there.
    let writes = described(&run(&kv, &[1, 2, 3, 4]));
    assert!(writes.contains(&"slices/n4/g:a:1.0.0 LOAD desired ACTIVE".to_owned()), "{writes:?}");
}

#[test]
fn two_leaving_nodes_never_take_the_slice_below_its_budget() {
    let mut kv = KvState::new();
    // Two instances wanted, three running (n3 already replaced one), two of them on leaving nodes.
    blueprint(&mut kv, 2, Some(2));
    record(&mut kv, 1, SliceState::Active, 0);
    record(&mut kv, 2, SliceState::Active, 1);
    record(&mut kv, 3, SliceState::Active, 2);
    duty(&mut kv, 1, Duty::ShuttingDown);
    duty(&mut kv, 2, Duty::ShuttingDown);
    // n3 serves alone among staying nodes: 1 of 2 ready, so neither leaving instance goes, and the
    // replacement goes to n4.
    let writes = described(&run(&kv, &[1, 2, 3, 4]));
    assert_eq!(
        writes,
        [
            "slices/n4/g:a:1.0.0 LOAD desired ACTIVE",
            "nodes/n1/lifecycle SHUTTING_DOWN waiting true",
            "nodes/n2/lifecycle SHUTTING_DOWN waiting true"
        ]
    );
    // n4 serves: both leaving instances may go, since 4 ACTIVE minus 2 still leaves the budget of 2.
    record(&mut kv, 4, SliceState::Active, 3);
    let writes = described(&run(&kv, &[1, 2, 3, 4]));
    assert_eq!(
        writes[..2],
        ["slices/n1/g:a:1.0.0 ACTIVE desired UNLOADED", "slices/n2/g:a:1.0.0 ACTIVE desired UNLOADED"]
    );
}

#[test]
fn the_budget_holds_back_a_retirement_when_instances_are_not_all_active() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 1, Some(1));
    record(&mut kv, 1, SliceState::Active, 0);
    record(&mut kv, 2, SliceState::Activating, 1);
    duty(&mut kv, 1, Duty::Draining);
    // The replacement on n2 is still starting: the only ACTIVE instance stays.
    let writes = described(&run(&kv, &[1, 2]));
    assert_eq!(writes, ["nodes/n1/lifecycle DRAINING waiting true"]);
}

#[test]
fn a_starting_record_on_a_leaving_node_goes_at_once() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 1, None);
    record(&mut kv, 1, SliceState::Loading, 0);
    duty(&mut kv, 1, Duty::Draining);
    let writes = described(&run(&kv, &[1, 2]));
    assert_eq!(
        writes[..2],
        ["slices/n2/g:a:1.0.0 LOAD desired ACTIVE", "slices/n1/g:a:1.0.0 LOADING desired UNLOADED"]
    );
}

#[test]
fn an_activated_node_receives_placements_again() {
    let mut kv = KvState::new();
    blueprint(&mut kv, 2, None);
    record(&mut kv, 1, SliceState::Active, 0);
    duty(&mut kv, 2, Duty::Decommissioned);
    assert!(described(&run(&kv, &[1, 2])).iter().all(|w| !w.starts_with("slices/n2")));
    duty(&mut kv, 2, Duty::OnDuty);
    assert_eq!(described(&run(&kv, &[1, 2])), ["slices/n2/g:a:1.0.0 LOAD desired ACTIVE"]);
}

#[test]
fn a_drain_onto_a_second_copy_waits_until_the_copy_runs() {
    let mut kv = KvState::new();
    blueprint_with(&mut kv, 2, "max_per_node = 2\n");
    record(&mut kv, 1, SliceState::Active, 0);
    record(&mut kv, 2, SliceState::Active, 1);
    put(&mut kv, "endpoints/g:a:1.0.0/get/n1:0", b"{}".to_vec());
    put(&mut kv, "endpoints/g:a:1.0.0/get/n2:1", b"{}".to_vec());
    duty(&mut kv, 2, Duty::Draining);
    // Pass 1: no free node, so n1 is asked for a second copy; n2's instance stays.
    let writes = run(&kv, &[1, 2]);
    apply(&mut kv, &writes);
    let on_1 = |kv: &KvState| SliceRecord::decode(kv.get(&"slices/n1/g:a:1.0.0".parse().unwrap()).unwrap().value());
    assert_eq!(on_1(&kv).unwrap().copies, 2);
    // Asked for, not running yet: nothing retired, however many passes.
    for _ in 0..3 {
        let writes = described(&run(&kv, &[1, 2]));
        assert!(!writes.iter().any(|w| w.contains("desired UNLOADED")), "{writes:?}");
    }
    // n1 says two run: n2's instance goes.
    let running = SliceRecord { running: Some(2), ..on_1(&kv).unwrap() };
    put(&mut kv, "slices/n1/g:a:1.0.0", running.encode());
    let writes = described(&run(&kv, &[1, 2]));
    assert!(writes.contains(&"slices/n2/g:a:1.0.0 ACTIVE desired UNLOADED".to_owned()), "{writes:?}");
}
