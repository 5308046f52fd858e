use super::*;
use crate::node::ScheduleSpec;
use kvstore::{ArtifactBase, Command, KvState, Name};

const MIN: u64 = 60_000;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

fn spec(timing: Timing, missed: MissedRuns) -> ScheduleSpec {
    ScheduleSpec { task: Name::parse("t").unwrap(), method: Name::parse("tick").unwrap(), timing, missed }
}

fn minutely(missed: MissedRuns) -> ScheduleSpec {
    spec(Timing::Cron { expression: "* * * * *".into(), time_zone: "UTC".into() }, missed)
}

fn key() -> AetherKey {
    AetherKey::Schedule { base: ArtifactBase::parse("g:a").unwrap(), task: Name::parse("t").unwrap() }
}

fn artifact(v: &str) -> Artifact {
    Artifact::parse(&format!("g:a:{v}")).unwrap()
}

fn created(spec: &ScheduleSpec, now_ms: u64) -> TaskRecord {
    match spec_write(key(), None, &artifact("1.0.0"), spec, now_ms) {
        Some(KvWrite::Set { value, expected: None, .. }) => TaskRecord::decode(&value).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn ran(decision: Decision) -> TaskRecord {
    match decision {
        Decision::Run(r) => r,
        other => panic!("expected a run, got {other:?}"),
    }
}

#[test]
fn a_cron_task_runs_each_due_time_once_and_waits_between() {
    let record = created(&minutely(MissedRuns::Skip), T0 + 5_000);
    assert_eq!(record.next_due_ms, Some(T0 + MIN));
    assert_eq!(decide(&record, T0 + 30_000, true, "n1", "a"), Decision::Wait { until_ms: Some(T0 + MIN) });
    let run = ran(decide(&record, T0 + MIN + 20, true, "n1", "a"));
    let last = run.last_run.clone().unwrap();
    assert_eq!(
        (last.due_ms, last.outcome, run.runs, run.next_due_ms),
        (T0 + MIN, Outcome::Running, 1, Some(T0 + 2 * MIN))
    );
    // The same instant again, from the recorded run: nothing to do until the next minute.
    assert_eq!(decide(&run, T0 + MIN + 40, true, "n1", "b"), Decision::Wait { until_ms: Some(T0 + 2 * MIN) });
}

#[test]
fn interval_due_times_follow_the_anchor_whoever_leads() {
    let spec = spec(Timing::Interval { ms: 1_000 }, MissedRuns::Skip);
    let record = created(&spec, T0 + 300);
    assert_eq!(record.next_due_ms, Some(T0 + 1_300));
    let run = ran(decide(&record, T0 + 1_350, true, "n1", "a"));
    assert_eq!(run.next_due_ms, Some(T0 + 2_300));
    // Another leader, later but on time: the due time is the anchor's, not its clock's.
    let run = ran(decide(&run, T0 + 2_900, true, "n2", "b"));
    assert_eq!((run.last_run.unwrap().due_ms, run.next_due_ms), (T0 + 2_300, Some(T0 + 3_300)));
}

#[test]
fn two_leaders_deciding_from_one_version_fire_the_due_time_once() {
    let mut kv = KvState::new();
    let record = created(&minutely(MissedRuns::RunOnce), T0);
    kv.apply_command(Command::Put { key: key(), value: record.encode() }, &mut |_| {});
    let version = kv.get(&key()).unwrap().version();
    // The old leader and the new one both read the record at `version` and decide to run the same minute.
    let writes: Vec<KvWrite> = [("n1", "old"), ("n2", "new")]
        .iter()
        .map(|(node, token)| {
            let run = ran(decide(&record, T0 + MIN + 1_000, true, node, token));
            KvWrite::Set { key: key(), expected: Some(version), value: run.encode() }
        })
        .collect();
    for w in &writes {
        kv.apply_command(w.to_command(), &mut |_| {});
    }
    let applied = TaskRecord::decode(kv.get(&key()).unwrap().value()).unwrap();
    let last = applied.last_run.clone().unwrap();
    assert_eq!((last.token.as_str(), applied.runs), ("old", 1), "the second compare-and-set lost");
    // The loser, reading the applied record, sees the minute done and waits; its token is not there, so it
    // does not call.
    assert_eq!(decide(&applied, T0 + MIN + 2_000, true, "n2", "new2"), Decision::Wait { until_ms: Some(T0 + 2 * MIN) });
}

#[test]
fn an_outcome_lands_only_on_its_own_run() {
    let record = created(&minutely(MissedRuns::Skip), T0);
    let run = ran(decide(&record, T0 + MIN, true, "n1", "a"));
    assert!(with_outcome(&run, "other", Some(200), 5).is_none());
    let done = with_outcome(&run, "a", Some(500), 7).unwrap();
    let last = done.last_run.clone().unwrap();
    assert_eq!((last.outcome, last.status, last.duration_ms, done.failures), (Outcome::Failed, Some(500), Some(7), 1));
    assert!(with_outcome(&done, "a", Some(200), 5).is_none(), "written once");
    let ok = with_outcome(&run, "a", Some(204), 3).unwrap();
    assert_eq!((ok.last_run.unwrap().outcome, ok.failures), (Outcome::Ok, 0));
}

/// A record whose last run was at `T0 + MIN` and that then saw nothing until `now`.
fn missed_until(missed: MissedRuns, now_ms: u64) -> Decision {
    let record = created(&minutely(missed), T0);
    let run = ran(decide(&record, T0 + MIN, true, "n1", "a"));
    decide(&run, now_ms, true, "n1", "b")
}

#[test]
fn skip_goes_on_at_the_next_due_time_after_now() {
    // Minutes 2, 3, 4 passed without a run; at 4:30 the cluster is back.
    match missed_until(MissedRuns::Skip, T0 + 4 * MIN + 30_000) {
        Decision::Write(r) => {
            assert_eq!((r.missed_runs, r.next_due_ms, r.runs), (3, Some(T0 + 5 * MIN), 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_once_runs_once_for_all_missed_due_times() {
    let r = ran(missed_until(MissedRuns::RunOnce, T0 + 4 * MIN + 30_000));
    assert_eq!(
        (r.last_run.clone().unwrap().due_ms, r.missed_runs, r.next_due_ms),
        (T0 + 4 * MIN, 2, Some(T0 + 5 * MIN))
    );
    assert_eq!(decide(&r, T0 + 4 * MIN + 31_000, true, "n1", "c"), Decision::Wait { until_ms: Some(T0 + 5 * MIN) });
}

#[test]
fn run_all_runs_the_newest_limit_in_order() {
    // Minutes 2..=6 missed, limit 3: minutes 4, 5, 6 run one after another; 2 and 3 count as missed.
    let now = T0 + 6 * MIN + 30_000;
    let mut r = ran(missed_until(MissedRuns::RunAll { limit: 3 }, now));
    let mut dues = vec![r.last_run.clone().unwrap().due_ms];
    for token in ["c", "d"] {
        r = ran(decide(&r, now, true, "n1", token));
        dues.push(r.last_run.clone().unwrap().due_ms);
    }
    assert_eq!(dues, vec![T0 + 4 * MIN, T0 + 5 * MIN, T0 + 6 * MIN]);
    assert_eq!((r.missed_runs, r.runs), (2, 4));
    assert_eq!(decide(&r, now, true, "n1", "e"), Decision::Wait { until_ms: Some(T0 + 7 * MIN) });
}

#[test]
fn a_run_a_little_late_is_not_missed() {
    let r = ran(missed_until(MissedRuns::Skip, T0 + 2 * MIN + ON_TIME_MS));
    assert_eq!((r.last_run.unwrap().due_ms, r.missed_runs), (T0 + 2 * MIN, 0));
}

#[test]
fn without_an_instance_the_run_waits_and_says_why_once() {
    let record = created(&minutely(MissedRuns::RunOnce), T0);
    let waiting = match decide(&record, T0 + MIN, false, "n1", "a") {
        Decision::Write(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(waiting.waiting.as_deref(), Some("no ACTIVE instance of g:a:1.0.0"));
    assert_eq!(decide(&waiting, T0 + MIN + 50, false, "n1", "a"), Decision::Wait { until_ms: None });
    // The instance is back three minutes later: run-once runs once, and the reason is gone.
    let r = ran(decide(&waiting, T0 + 3 * MIN + 1_000, true, "n1", "b"));
    assert_eq!((r.last_run.unwrap().due_ms, r.missed_runs, r.waiting), (T0 + 3 * MIN, 2, None));
}

#[test]
fn pause_resume_and_trigger() {
    let record = created(&minutely(MissedRuns::RunAll { limit: 10 }), T0);
    let held = paused(&record, true, T0 + 10);
    assert_eq!(decide(&held, T0 + 5 * MIN, true, "n1", "a"), Decision::Wait { until_ms: None });
    // Resumed: the minutes that passed while paused are not missed runs.
    let resumed = paused(&held, false, T0 + 5 * MIN + 10);
    assert_eq!(resumed.next_due_ms, Some(T0 + 6 * MIN));
    assert_eq!(decide(&resumed, T0 + 5 * MIN + 20, true, "n1", "a"), Decision::Wait { until_ms: Some(T0 + 6 * MIN) });
    // A trigger runs now, once, even while paused, and leaves the timing alone.
    let asked = triggered(&held, T0 + 7 * MIN);
    assert_eq!(triggered(&asked, T0 + 7 * MIN + 5).trigger_ms, Some(T0 + 7 * MIN));
    let r = ran(decide(&asked, T0 + 7 * MIN + 40, true, "n1", "t"));
    let last = r.last_run.clone().unwrap();
    assert!(last.trigger && r.trigger_ms.is_none() && r.paused);
    assert_eq!((last.due_ms, r.next_due_ms, r.runs), (T0 + 7 * MIN, held.next_due_ms, 1));
    assert_eq!(decide(&r, T0 + 7 * MIN + 50, true, "n1", "u"), Decision::Wait { until_ms: None });
}

#[test]
fn the_spec_follows_the_newest_declaring_version_and_keeps_the_state() {
    let one = minutely(MissedRuns::Skip);
    let record = ran(decide(&created(&one, T0), T0 + MIN, true, "n1", "a"));
    let current = Some((&record, kvstore::Revision(7)));
    assert_eq!(spec_write(key(), current, &artifact("1.0.0"), &one, T0), None, "unchanged");
    let two = spec(Timing::Interval { ms: 5_000 }, MissedRuns::RunOnce);
    assert_eq!(spec_write(key(), current, &artifact("0.9.0"), &two, T0), None, "an older version does not write");
    let Some(KvWrite::Set { expected: Some(kvstore::Revision(7)), value, .. }) =
        spec_write(key(), current, &artifact("2.0.0"), &two, T0 + 2 * MIN)
    else {
        panic!("the newer version updates the spec by compare-and-set")
    };
    let updated = TaskRecord::decode(&value).unwrap();
    assert_eq!(
        (updated.artifact.as_str(), updated.runs, updated.next_due_ms),
        ("g:a:2.0.0", 1, Some(T0 + 2 * MIN + 5_000))
    );
}

#[test]
fn bad_timings_are_refused() {
    assert!(check_timing(&Timing::Interval { ms: 0 }).is_err());
    assert!(check_timing(&Timing::Cron { expression: "* * *".into(), time_zone: "UTC".into() }).is_err());
    assert!(check_timing(&Timing::Cron { expression: "* * * * *".into(), time_zone: "Nowhere/City".into() }).is_err());
    assert!(
        check_timing(&Timing::Cron { expression: "0 9 * * mon-fri".into(), time_zone: "Europe/Berlin".into() }).is_ok()
    );
}
