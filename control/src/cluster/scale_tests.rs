//! Scaling in the leader's pass: counts set by scale records, and the controller's decisions.

use super::*;
use crate::blueprint;
use crate::records::BlueprintRecord;
use crate::scaling::{ScaleRecord, ScaledBy, SliceLoad};
use kvstore::{ApplyResult, KvState};

use super::test_support::{n, put};

fn post(kv: &mut KvState, extra: &str) {
    let toml =
        format!("name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 2\nmax_instances = 3\n{extra}");
    let parsed = blueprint::parse(&toml, &|_| true).unwrap();
    put(kv, "blueprints/shop", BlueprintRecord { toml, blueprint: parsed }.encode());
}

fn active(kv: &mut KvState, node: usize, instance: u32, since_ms: u64) {
    super::test_support::slice(kv, node, "g:a:1.0.0", SliceState::Active, instance, since_ms);
}

fn pass(kv: &mut KvState, now_ms: u64, cpu: f64) -> Vec<String> {
    let mut measured = Measured::default();
    measured.loads.insert(Artifact::parse("g:a:1.0.0").unwrap(), SliceLoad { cpu_percent: cpu, calls_per_sec: 1.0 });
    let liveness = Liveness::all_live([n(1), n(2), n(3)]);
    let state = ClusterState::from_entries(kv.list(""));
    let writes = reconcile_judged(&state, &liveness, now_ms, &StartPolicy::default(), &measured);
    let mut done = Vec::new();
    for write in writes {
        if matches!(kv.apply_command(write.to_command(), &mut |_| {}), ApplyResult::Ok { .. }) {
            done.push(write.key().to_string());
        }
    }
    done
}

fn target_instances(kv: &KvState) -> u32 {
    let entry = kv.get(&"targets/g:a:1.0.0".parse().unwrap()).unwrap();
    crate::records::TargetRecord::decode(entry.value()).unwrap().instances
}

fn scale(kv: &KvState) -> Option<ScaleRecord> {
    kv.get(&"scaling/g:a".parse().unwrap()).map(|e| ScaleRecord::decode(e.value()).unwrap())
}

#[test]
fn a_hot_autoscaled_slice_gets_an_instance_and_a_calm_one_loses_it() {
    let mut kv = KvState::new();
    post(&mut kv, "autoscale = true\n");
    active(&mut kv, 1, 0, 0);
    active(&mut kv, 2, 1, 0);
    pass(&mut kv, 100_000, 95.0);
    let record = scale(&kv).expect("the controller wrote a scale");
    assert_eq!((record.instances, record.by), (3, ScaledBy::Controller));
    assert!(record.reason.contains("CPU 95%"), "{}", record.reason);
    let placed = pass(&mut kv, 100_001, 95.0);
    assert_eq!(target_instances(&kv), 3);
    assert!(placed.contains(&"slices/n3/g:a:1.0.0".to_owned()), "{placed:?}");
    // Hot again, but at max_instances (3); calm within the cooldown changes nothing either.
    active(&mut kv, 3, 2, 100_001);
    assert!(!pass(&mut kv, 200_000, 95.0).iter().any(|k| k.starts_with("scaling/")));
    assert!(!pass(&mut kv, 110_000, 1.0).iter().any(|k| k.starts_with("scaling/")));
    // Calm after the cooldown: one fewer, never below min_instances (1).
    pass(&mut kv, 200_000, 1.0);
    assert_eq!(scale(&kv).unwrap().instances, 2);
    pass(&mut kv, 200_001, 1.0);
    assert_eq!(target_instances(&kv), 2);
}

#[test]
fn without_autoscale_load_changes_nothing() {
    let mut kv = KvState::new();
    post(&mut kv, "");
    active(&mut kv, 1, 0, 0);
    active(&mut kv, 2, 1, 0);
    assert!(!pass(&mut kv, 100_000, 95.0).iter().any(|k| k.starts_with("scaling/")));
}

#[test]
fn an_operators_scale_holds_until_the_blueprint_says_another_count() {
    let mut kv = KvState::new();
    post(&mut kv, "");
    let record = ScaleRecord {
        instances: 9,
        by: ScaledBy::Operator,
        reason: "by hand".into(),
        since_ms: 0,
        blueprint: Name::parse("shop").unwrap(),
        blueprint_instances: 2,
    };
    put(&mut kv, "scaling/g:a", record.encode());
    pass(&mut kv, 1, 0.0);
    assert_eq!(target_instances(&kv), 3, "clamped to max_instances");
    let toml = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 1\n";
    let parsed = blueprint::parse(toml, &|_| true).unwrap();
    put(&mut kv, "blueprints/shop", BlueprintRecord { toml: toml.to_owned(), blueprint: parsed }.encode());
    pass(&mut kv, 2, 0.0);
    assert_eq!(target_instances(&kv), 1, "the blueprint's new count wins");
}
