//! Version changes in the leader's pass: make-before-break on a re-posted blueprint, and rollouts moving
//! through their phases.

use super::rollouts::{rewrite_blueprint, HISTORY_MAX};
use super::*;
use crate::blueprint;
use crate::records::{BlueprintRecord, RouteRecord};
use crate::rollout::{Approval, Figures, Move, Phase, Plan, Ratio, RolloutRecord, Stage, Strategy, Thresholds};
use kvstore::{ApplyResult, ArtifactBase, KvState};

use super::test_support::{n, put};

fn post(kv: &mut KvState, toml: &str) {
    let parsed = blueprint::parse(toml, &|_| true).unwrap();
    let name = parsed.name.clone();
    put(kv, &format!("blueprints/{name}"), BlueprintRecord { toml: toml.to_owned(), blueprint: parsed }.encode());
}

fn shop(version: &str, instances: u32) -> String {
    format!("name = \"shop\"\n[[slices]]\nartifact = \"g:a:{version}\"\ninstances = {instances}\n")
}

/// A record of `artifact` on node `i` in `state`, with its endpoint when ACTIVE.
fn serving(kv: &mut KvState, i: usize, artifact: &str, state: SliceState, instance: u32) {
    super::test_support::slice(kv, i, artifact, state, instance, 0);
}

fn route(kv: &mut KvState, artifact: &str, method: &str) {
    let record = RouteRecord { artifact: Artifact::parse(artifact).unwrap(), method: Name::parse(method).unwrap() };
    put(kv, &format!("routes/GET/{method}"), record.encode());
}

fn pass(kv: &KvState, now_ms: u64) -> Vec<KvWrite> {
    let liveness = Liveness::all_live([n(1), n(2), n(3)]);
    reconcile(&ClusterState::from_entries(kv.list("")), &liveness, now_ms)
}

/// Applies the writes, as consensus would, and says what each did.
fn apply(kv: &mut KvState, writes: &[KvWrite]) -> Vec<String> {
    let mut done = Vec::new();
    for write in writes {
        if matches!(kv.apply_command(write.to_command(), &mut |_| {}), ApplyResult::Ok { .. }) {
            done.push(write.unguarded().to_string());
        }
    }
    done
}

/// One leader pass on `kv`, applied.
fn step(kv: &mut KvState, now_ms: u64) -> Vec<String> {
    let writes = pass(kv, now_ms);
    apply(kv, &writes)
}

fn delete(kv: &mut KvState, key: &str) {
    let key = key.parse().unwrap();
    let Some(version) = kv.get(&key).map(|e| e.version()) else { return };
    kv.apply_command(KvWrite::Remove { key, expected: version }.to_command(), &mut |_| {});
}

fn keys(writes: &[KvWrite]) -> Vec<String> {
    writes.iter().map(|w| w.key().to_string()).collect()
}

fn rollout(kv: &KvState, id: &str) -> RolloutRecord {
    RolloutRecord::decode(kv.get(&format!("updates/{id}").parse().unwrap()).unwrap().value()).unwrap()
}

fn slice(kv: &KvState, node: usize, artifact: &str) -> Option<SliceRecord> {
    kv.get(&format!("slices/n{node}/{artifact}").parse().unwrap()).map(|e| SliceRecord::decode(e.value()).unwrap())
}

fn start(kv: &mut KvState, id: &str, approval: Approval, stages: Vec<Stage>) {
    let plan = Plan {
        artifacts: vec![Move { base: ArtifactBase::parse("g:a").unwrap(), from: "1.0.0".into(), to: "2.0.0".into() }],
        blueprint: Name::parse("shop").unwrap(),
        strategy: Strategy::Rolling,
        instances: 0,
        stages: Some(stages),
        approval: Some(approval),
        thresholds: Thresholds::default(),
        keep_old_ms: None,
    };
    put(kv, &format!("updates/{id}"), RolloutRecord::start(plan, 0).unwrap().encode());
}

/// Two nodes serve 1.0.0 under the blueprint.
fn deployed_v1() -> KvState {
    let mut kv = KvState::new();
    post(&mut kv, &shop("1.0.0", 2));
    serving(&mut kv, 1, "g:a:1.0.0", SliceState::Active, 0);
    serving(&mut kv, 2, "g:a:1.0.0", SliceState::Active, 1);
    route(&mut kv, "g:a:1.0.0", "get");
    let writes = pass(&kv, 0);
    apply(&mut kv, &writes);
    kv
}

#[test]
fn a_reposted_version_replaces_the_old_one_only_once_it_serves() {
    let mut kv = deployed_v1();
    post(&mut kv, &shop("2.0.0", 2));
    let writes = pass(&kv, 1);
    let changed = keys(&writes);
    assert!(changed.contains(&"targets/g:a:2.0.0".to_owned()), "{changed:?}");
    assert!(changed.iter().filter(|k| k.starts_with("slices/") && k.ends_with("g:a:2.0.0")).count() == 2);
    assert!(!changed.iter().any(|k| k.contains("g:a:1.0.0") && !k.starts_with("targets/")), "{changed:?}");
    apply(&mut kv, &writes);
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Active));

    // One new instance serving is not enough: the old version stays.
    let placed: Vec<usize> = (1..=3).filter(|i| slice(&kv, *i, "g:a:2.0.0").is_some()).collect();
    serving(&mut kv, placed[0], "g:a:2.0.0", SliceState::Active, 0);
    let writes = pass(&kv, 2);
    assert!(!keys(&writes).iter().any(|k| k.contains("g:a:1.0.0")), "{:?}", keys(&writes));

    // Both serve: the old records are retired, their endpoints removed and the route moves to 2.0.0.
    serving(&mut kv, placed[1], "g:a:2.0.0", SliceState::Active, 1);
    let writes = pass(&kv, 3);
    apply(&mut kv, &writes);
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded));
    assert!(slice(&kv, 2, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded));
    assert!(kv.list("endpoints/g:a:1.0.0/").next().is_none());
    let route = RouteRecord::decode(kv.get(&"routes/GET/get".parse().unwrap()).unwrap().value()).unwrap();
    assert_eq!(route.artifact.to_string(), "g:a:2.0.0");
}

#[test]
fn a_route_the_new_version_lacks_stays_until_the_old_version_is_gone() {
    let mut kv = deployed_v1();
    route(&mut kv, "g:a:1.0.0", "legacy");
    post(&mut kv, &shop("2.0.0", 1));
    serving(&mut kv, 3, "g:a:2.0.0", SliceState::Active, 0);
    let writes = pass(&kv, 1);
    apply(&mut kv, &writes);
    assert!(kv.get(&"routes/GET/legacy".parse().unwrap()).is_some(), "kept while 1.0.0 records exist");
    delete(&mut kv, "slices/n1/g:a:1.0.0");
    delete(&mut kv, "slices/n2/g:a:1.0.0");
    let writes = pass(&kv, 2);
    apply(&mut kv, &writes);
    assert!(kv.get(&"routes/GET/legacy".parse().unwrap()).is_none());
}

#[test]
fn a_deleted_blueprint_still_retires_at_once() {
    let mut kv = deployed_v1();
    delete(&mut kv, "blueprints/shop");
    let writes = pass(&kv, 1);
    apply(&mut kv, &writes);
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded));
    assert!(kv.get(&"routes/GET/get".parse().unwrap()).is_none());
}

#[test]
fn a_manual_rollout_deploys_beside_the_old_version_and_keeps_its_ratio() {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 10, hold_ms: 0 }]);
    let writes = pass(&kv, 1);
    apply(&mut kv, &writes);
    assert_eq!(rollout(&kv, "r1").state, Phase::Deploying);
    let placed: Vec<usize> = (1..=3).filter(|i| slice(&kv, *i, "g:a:2.0.0").is_some()).collect();
    assert_eq!(placed.len(), 2, "as many as the blueprint asks for");
    for (instance, node) in placed.iter().enumerate() {
        serving(&mut kv, *node, "g:a:2.0.0", SliceState::Active, instance as u32);
    }
    let writes = pass(&kv, 2);
    apply(&mut kv, &writes);
    let r = rollout(&kv, "r1");
    assert_eq!((r.state, r.ratio, r.new_share()), (Phase::Shifting, Ratio::OLD, 0), "manual: no traffic yet");
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Active), "the old keeps serving");
    // Nothing more happens by itself, however long.
    assert!(!keys(&pass(&kv, 10_000_000)).iter().any(|k| k.starts_with("updates/")));
}

#[test]
fn automatic_stages_complete_and_the_blueprint_names_the_new_version() {
    let mut kv = deployed_v1();
    let stages = vec![Stage { percent: 20, hold_ms: 100 }, Stage { percent: 100, hold_ms: 50 }];
    start(&mut kv, "r1", Approval::Auto, stages);
    let writes = pass(&kv, 1);
    apply(&mut kv, &writes);
    let placed: Vec<usize> = (1..=3).filter(|i| slice(&kv, *i, "g:a:2.0.0").is_some()).collect();
    for (instance, node) in placed.into_iter().enumerate() {
        serving(&mut kv, node, "g:a:2.0.0", SliceState::Active, instance as u32);
    }
    step(&mut kv, 1_000);
    assert_eq!((rollout(&kv, "r1").state, rollout(&kv, "r1").ratio.new), (Phase::Shifting, 20));
    step(&mut kv, 1_050);
    assert_eq!(rollout(&kv, "r1").ratio.new, 20, "held 100 ms");
    step(&mut kv, 1_100);
    assert_eq!((rollout(&kv, "r1").stage, rollout(&kv, "r1").ratio.new), (1, 100));
    step(&mut kv, 1_150);
    assert_eq!(rollout(&kv, "r1").state, Phase::Completing);
    step(&mut kv, 1_175);
    assert!(rollout(&kv, "r1").blueprint_version.is_some(), "the blueprint's version is noted first");
    let done = step(&mut kv, 1_200);
    assert!(done.iter().any(|w| w.contains("blueprints/shop")), "{done:?}");
    step(&mut kv, 1_250);
    assert_eq!(rollout(&kv, "r1").state, Phase::Completed);
    let record = BlueprintRecord::decode(kv.get(&"blueprints/shop".parse().unwrap()).unwrap().value()).unwrap();
    assert!(record.toml.contains("g:a:2.0.0") && !record.toml.contains("g:a:1.0.0"), "{}", record.toml);
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded), "old retired");
}

#[test]
fn a_rollback_retires_the_new_version_and_ends_once_it_is_gone() {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
    step(&mut kv, 1);
    let placed: Vec<usize> = (1..=3).filter(|i| slice(&kv, *i, "g:a:2.0.0").is_some()).collect();
    serving(&mut kv, placed[0], "g:a:2.0.0", SliceState::Active, 0);
    let back = rollout(&kv, "r1").rollback("operator", 2).unwrap();
    put(&mut kv, "updates/r1", back.encode());
    step(&mut kv, 3);
    assert!(slice(&kv, placed[0], "g:a:2.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded));
    assert_eq!(rollout(&kv, "r1").state, Phase::RollingBack, "a new record is still there");
    for node in &placed {
        delete(&mut kv, &format!("slices/n{node}/g:a:2.0.0"));
    }
    step(&mut kv, 4);
    let r = rollout(&kv, "r1");
    assert_eq!((r.state, r.reason.as_deref()), (Phase::RolledBack, Some("operator")));
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Active));
}

#[test]
fn a_blueprint_changed_under_a_rollout_rolls_it_back() {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
    post(&mut kv, &shop("3.0.0", 2));
    step(&mut kv, 1);
    let r = rollout(&kv, "r1");
    assert_eq!(r.state, Phase::RollingBack);
    assert!(r.reason.unwrap().contains("no longer deploys"));
}

#[test]
fn a_new_version_that_cannot_start_rolls_the_rollout_back() {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Auto, vec![Stage { percent: 50, hold_ms: 0 }]);
    let policy = StartPolicy { backoff_base_ms: 0, failures_max: 1, ..StartPolicy::default() };
    let liveness = Liveness::all_live([n(1), n(2), n(3)]);
    for now in 1..6 {
        let writes = reconcile_with(&ClusterState::from_entries(kv.list("")), &liveness, now * 100, &policy);
        apply(&mut kv, &writes);
        for node in 1..=3 {
            if let Some(record) = slice(&kv, node, "g:a:2.0.0").filter(|r| r.state == SliceState::Load) {
                let failed = SliceRecord {
                    state: SliceState::Failed,
                    failed_in: Some(SliceState::Loading),
                    error: Some("boom".into()),
                    ..record
                };
                put(&mut kv, &format!("slices/n{node}/g:a:2.0.0"), failed.encode());
            }
        }
    }
    let r = rollout(&kv, "r1");
    assert_eq!(r.state, Phase::RollingBack, "{r:?}");
    assert!(r.reason.unwrap().contains("failed to start"));
}

#[test]
fn the_blueprint_rewrite_changes_every_plain_mention() {
    let toml = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n[[slices]]\nartifact = 'g:b:1.0.0'\n\
                depends_on = [\"g:a:1.0.0\"]\n";
    let parsed = blueprint::parse(toml, &|_| true).unwrap();
    let record = BlueprintRecord { toml: toml.to_owned(), blueprint: parsed };
    let mut kv = KvState::new();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
    let r = rollout(&kv, "r1");
    let rewritten = rewrite_blueprint(&record, &r).unwrap();
    assert!(rewritten.toml.contains("depends_on = [\"g:a:2.0.0\"]"), "{}", rewritten.toml);
    let b = Move { base: ArtifactBase::parse("g:b").unwrap(), from: "1.0.0".into(), to: "1.1.0".into() };
    let both = RolloutRecord { artifacts: vec![r.artifacts[0].clone(), b], ..r.clone() };
    assert!(rewrite_blueprint(&record, &both).unwrap().toml.contains("'g:b:1.1.0'"));
    let elsewhere = Move { base: ArtifactBase::parse("g:c").unwrap(), from: "1.0.0".into(), to: "2.0.0".into() };
    assert!(rewrite_blueprint(&record, &RolloutRecord { artifacts: vec![elsewhere], ..r }).is_err());
}

#[test]
fn finished_rollouts_past_the_history_bound_are_removed() {
    let mut kv = deployed_v1();
    for i in 0..HISTORY_MAX + 2 {
        start(&mut kv, &format!("r{i}"), Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
        let done = RolloutRecord { state: Phase::RolledBack, since_ms: i as u64, ..rollout(&kv, &format!("r{i}")) };
        put(&mut kv, &format!("updates/r{i}"), done.encode());
    }
    let removed: Vec<String> = keys(&pass(&kv, 1)).into_iter().filter(|k| k.starts_with("updates/")).collect();
    assert_eq!(removed, ["updates/r0", "updates/r1"]);
}

#[test]
fn a_new_version_over_its_thresholds_is_rolled_back() {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
    let thresholds = Thresholds { max_error_rate: Some(0.1), ..Thresholds::default() };
    let shifting =
        RolloutRecord { state: Phase::Shifting, ratio: Ratio::new_percent(50), thresholds, ..rollout(&kv, "r1") };
    put(&mut kv, "updates/r1", shifting.encode());
    let judged = |kv: &mut KvState, new_errors: u64| {
        let mut measured = Measured::default();
        let health = &mut measured.health;
        health.insert(Artifact::parse("g:a:1.0.0").unwrap(), Figures { calls: 100, errors: 0, p99_ms: 5 });
        health.insert(Artifact::parse("g:a:2.0.0").unwrap(), Figures { calls: 100, errors: new_errors, p99_ms: 5 });
        let liveness = Liveness::all_live([n(1), n(2), n(3)]);
        let writes = reconcile_judged(
            &ClusterState::from_entries(kv.list("")),
            &liveness,
            5,
            &StartPolicy::default(),
            &measured,
        );
        apply(kv, &writes);
    };
    judged(&mut kv, 10);
    assert_eq!(rollout(&kv, "r1").state, Phase::Shifting, "10% is within the threshold");
    judged(&mut kv, 30);
    let r = rollout(&kv, "r1");
    assert_eq!((r.state, r.new_share()), (Phase::RollingBack, 0));
    assert!(r.reason.unwrap().contains("30.0% of 100 calls"));
}

/// A manual rollout shifting at 50%, then completed by the operator and noted by the leader.
fn completing() -> KvState {
    let mut kv = deployed_v1();
    start(&mut kv, "r1", Approval::Manual, vec![Stage { percent: 50, hold_ms: 0 }]);
    let shifting = RolloutRecord { state: Phase::Shifting, ratio: Ratio::new_percent(50), ..rollout(&kv, "r1") };
    put(&mut kv, "updates/r1", shifting.complete(1).unwrap().encode());
    step(&mut kv, 2);
    assert!(rollout(&kv, "r1").blueprint_version.is_some());
    kv
}

#[test]
fn a_blueprint_posted_while_completing_is_never_rewritten_over() {
    let mut kv = completing();
    post(&mut kv, &shop("1.0.0", 3));
    let done = step(&mut kv, 3);
    assert!(!done.iter().any(|w| w.contains("blueprints/")), "{done:?}");
    let r = rollout(&kv, "r1");
    assert_eq!(r.state, Phase::RolledBack);
    assert!(r.reason.unwrap().contains("posted again"));
    let record = BlueprintRecord::decode(kv.get(&"blueprints/shop".parse().unwrap()).unwrap().value()).unwrap();
    assert!(record.toml.contains("g:a:1.0.0"), "the operator's blueprint stands");
}

#[test]
fn a_blueprint_deleted_while_completing_ends_the_rollout() {
    let mut kv = completing();
    delete(&mut kv, "blueprints/shop");
    step(&mut kv, 3);
    let r = rollout(&kv, "r1");
    assert_eq!(r.state, Phase::RolledBack);
    assert!(r.reason.unwrap().contains("changed while the rollout completed"));
}

#[test]
fn an_old_version_kept_serving_keeps_its_target() {
    let mut kv = deployed_v1();
    post(&mut kv, &shop("2.0.0", 2));
    step(&mut kv, 1);
    assert!(kv.get(&"targets/g:a:1.0.0".parse().unwrap()).is_some(), "1.0.0 still serves, so its target stays");
    for (instance, node) in
        (1..=3).filter(|i| slice(&kv, *i, "g:a:2.0.0").is_some()).collect::<Vec<_>>().into_iter().enumerate()
    {
        serving(&mut kv, node, "g:a:2.0.0", SliceState::Active, instance as u32);
    }
    step(&mut kv, 2);
    assert!(kv.get(&"targets/g:a:1.0.0".parse().unwrap()).is_none(), "retired with its records");
}

#[test]
fn another_blueprints_version_of_the_base_is_no_successor() {
    let mut kv = deployed_v1();
    let other = "name = \"other\"\n[[slices]]\nartifact = \"g:a:3.0.0\"\ninstances = 1\n";
    post(&mut kv, other);
    step(&mut kv, 1);
    delete(&mut kv, "blueprints/shop");
    step(&mut kv, 2);
    assert!(slice(&kv, 1, "g:a:1.0.0").is_some_and(|r| r.desired == DesiredState::Unloaded), "retired at once");
}
