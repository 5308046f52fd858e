//! Scheduled tasks over real processes (3 nodes, the `ticker` example on each), checked from the slice's own
//! records in its cluster state (`runs/{task}/{due ms}`, created once per run; a second run of a due time would
//! show under `duplicates/`):
//! - the per-minute cron task `minutely` runs exactly once per minute across a kill -9 of the leader: no minute
//!   twice, no minute missing from the first run to the last;
//! - the interval task `pulse` (every 2 s, missed runs: run all, the newest 3) misses its due times while two of
//!   the three nodes are down (no quorum), and once they are back runs exactly the newest 3 of them, in order,
//!   then goes on on time; the task's record counts the others as missed.
//!
//! An interval task is used for the no-quorum case so that the test takes about three minutes in all (the
//! minute boundaries dominate it).

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SETTLE: Duration = Duration::from_secs(30);
const BLUEPRINT: &str =
    "name = \"ticks\"\n[[slices]]\nartifact = \"org.aether.examples:ticker:1.0.0\"\ninstances = 3\n";
const MINUTE_MS: i64 = 60_000;
const PULSE_MS: i64 = 2_000;
/// How long before its first run a catch-up is decided, at most.
const SLACK_MS: i64 = 500;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn status(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/blueprints/ticks", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

/// `(due ms, ran ms)` of one recorded run.
type Run = (i64, i64);

/// Every recorded run of `task`, and the duplicate keys, read through `node`.
fn runs(c: &LocalCluster, node: usize, task: &str) -> Option<(Vec<Run>, Vec<String>)> {
    let answer = http(c.nodes[node].app, "GET", "/ticker/runs", b"").ok().filter(|a| a.status == 200)?;
    let json = answer.json();
    let pairs = json[task].as_array()?.iter().filter_map(|p| Some((p[0].as_i64()?, p[1].as_i64()?))).collect();
    let dups = json["duplicates"].as_array()?.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect();
    Some((pairs, dups))
}

/// `/api/scheduled-tasks/org.aether.examples:ticker/{rest}`, answered 200.
fn api(c: &LocalCluster, node: usize, method: &str, rest: &str) -> Value {
    let path = format!("/api/scheduled-tasks/org.aether.examples:ticker/{rest}");
    let answer = http(c.nodes[node].management, method, &path, b"").unwrap();
    assert_eq!(answer.status, 200, "{method} {path}: {}", answer.text());
    answer.json()
}

fn leader(c: &LocalCluster, node: usize) -> Option<String> {
    let answer = http(c.nodes[node].management, "GET", "/api/status", b"").ok()?;
    answer.json()["leader"].as_str().map(str::to_owned)
}

fn wait_runs(c: &LocalCluster, node: usize, task: &str, timeout: Duration, enough: impl Fn(&[(i64, i64)]) -> bool) {
    let mut last = None;
    let done = wait_for(timeout, || match runs(c, node, task) {
        Some((r, d)) => {
            let ok = enough(&r);
            last = Some((r, d));
            ok
        }
        None => false,
    });
    done.unwrap_or_else(|_| panic!("{task}: waited {timeout:?}; last seen {last:?}"));
}

#[test]
fn a_minutely_task_runs_once_a_minute_across_a_leader_kill_and_catches_up_after_no_quorum() {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let mut c = devcluster::start_with_examples(3, "schedules", aetherd, SETTLE).unwrap();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    wait_for(SETTLE, || (0..3).all(|i| fully_active(&status(&c, i)))).unwrap();

    // The first minute's run, then kill -9 the leader a few seconds after it; the next minute is the next
    // leader's.
    wait_runs(&c, 0, "minutely", Duration::from_secs(75), |r| !r.is_empty());
    let victim_id = leader(&c, 0).expect("a leader");
    let victim = c.nodes.iter().position(|n| n.id == victim_id).unwrap();
    c.kill(victim);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let kill_ms = now_ms();
    wait_runs(&c, survivors[0], "minutely", Duration::from_secs(75), |r| r.iter().any(|(due, _)| *due > kill_ms));
    let new_leader = leader(&c, survivors[0]).expect("a new leader");
    assert_ne!(new_leader, victim_id);

    // No quorum: stop the survivor that does not lead, for a while (several pulse due times), then bring both
    // stopped nodes back.
    let follower = *survivors.iter().find(|i| c.nodes[**i].id != new_leader).unwrap();
    let lead = *survivors.iter().find(|i| c.nodes[**i].id == new_leader).unwrap();
    c.kill(follower);
    let stopped_ms = now_ms();
    std::thread::sleep(Duration::from_secs(16));
    c.start_node(victim).unwrap();
    c.start_node(follower).unwrap();
    let back_ms = now_ms();
    // On time again: a pulse run that started within an interval of its due time, after the gap.
    wait_runs(&c, lead, "pulse", Duration::from_secs(60), |r| {
        r.iter().any(|(due, ran)| *due > back_ms && ran - due < PULSE_MS)
    });
    let (pulses, dups) = runs(&c, lead, "pulse").unwrap();
    assert!(dups.iter().all(|d| !d.starts_with("duplicates/pulse/")), "a pulse ran twice: {dups:?}");
    let last_before = pulses.iter().filter(|(_, ran)| *ran < stopped_ms).map(|(due, _)| *due).max().unwrap_or(0);
    let mut after: Vec<(i64, i64)> = pulses.iter().copied().filter(|(due, _)| *due > last_before).collect();
    let context = format!("last before {last_before}, stopped {stopped_ms}, back {back_ms}, runs after {after:?}");
    // A run recorded as the quorum went (its write submitted before the leader noticed, decided once the
    // nodes were back) is that due time's run, not a catch-up.
    if after.len() > 1 && after[0].0 == last_before + PULSE_MS && after[1].0 - after[0].0 > PULSE_MS {
        after.remove(0);
    }
    let dues: Vec<i64> = after.iter().map(|(due, _)| *due).collect();
    // Run-all with a limit of 3: when the leader could act again (at about the first catch-up run's start), the
    // due times pending were those after the last run before the outage; exactly the newest 3 of them ran, in
    // order, the older ones were missed, and from there on nothing is missing.
    let resumed = after.first().map(|(_, ran)| *ran).expect(&context);
    let mut newest = last_before + (resumed - last_before) / PULSE_MS * PULSE_MS;
    // The leader picks the pending due times a moment before the first catch-up run starts; when a due time
    // falls inside that moment it is not yet pending, and runs on time after the catch-up.
    if resumed - newest < SLACK_MS && dues.len() > 3 && dues[2] == newest - PULSE_MS {
        newest -= PULSE_MS;
    }
    let caught_up: Vec<i64> = dues.iter().copied().filter(|due| *due <= newest).collect();
    assert_eq!(caught_up, vec![newest - 2 * PULSE_MS, newest - PULSE_MS, newest], "{context}");
    assert!(caught_up[0] - last_before > PULSE_MS, "older missed due times are not run: {context}");
    assert!(after.iter().take(3).all(|(_, ran)| *ran >= back_ms), "{context}");
    for pair in dues.windows(2) {
        assert_eq!(pair[1] - pair[0], PULSE_MS, "{context}");
    }
    let hole = (caught_up[0] - last_before) / PULSE_MS - 1;
    let task = api(&c, lead, "GET", "pulse");
    assert!(task["missed_runs"].as_i64().unwrap_or(0) >= hole, "{hole} missed: {task}");
    assert_eq!(task["missed"], serde_json::json!({ "policy": "run-all", "limit": 3 }), "{task}");

    // Pause: no timed runs; a trigger still runs once, recorded as such; resume goes on.
    let paused = api(&c, lead, "POST", "pulse/pause");
    assert_eq!(paused["paused"], true, "{paused}");
    std::thread::sleep(Duration::from_millis(500));
    let count = |c: &LocalCluster| runs(c, lead, "pulse").map_or(0, |(r, _)| r.len());
    let held = count(&c);
    std::thread::sleep(Duration::from_millis(3 * PULSE_MS as u64));
    assert_eq!(count(&c), held, "a paused task ran");
    api(&c, lead, "POST", "pulse/trigger");
    wait_for(Duration::from_secs(10), || count(&c) == held + 1).unwrap();
    let task = api(&c, lead, "GET", "pulse");
    assert_eq!((task["last_run"]["trigger"].as_bool(), task["paused"].as_bool()), (Some(true), Some(true)), "{task}");
    api(&c, lead, "POST", "pulse/resume");
    wait_for(Duration::from_secs(10), || count(&c) >= held + 2).unwrap();
    let listed = http(c.nodes[lead].management, "GET", "/api/scheduled-tasks", b"").unwrap().json();
    let ids: Vec<&str> = listed["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["org.aether.examples:ticker/minutely", "org.aether.examples:ticker/pulse"], "{listed}");

    // Every minute from the first run to the last ran once: across the leader kill, and across the outage
    // (a minute missed in it runs once, late, as `run-once` says).
    let (minutes, dups) = runs(&c, lead, "minutely").unwrap();
    let dues: Vec<i64> = minutes.iter().map(|(due, _)| *due).collect();
    assert!(dups.iter().all(|d| !d.starts_with("duplicates/minutely/")), "a minute ran twice: {dups:?}");
    assert!(dues.iter().all(|d| d % MINUTE_MS == 0), "due times on the minute: {dues:?}");
    assert!(dues.len() >= 2 && dues.iter().any(|d| *d > kill_ms), "{dues:?}");
    for pair in dues.windows(2) {
        assert_eq!(pair[1] - pair[0], MINUTE_MS, "a minute missing between {} and {}: {dues:?}", pair[0], pair[1]);
    }
}
