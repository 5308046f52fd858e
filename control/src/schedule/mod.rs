//! Scheduled tasks: the task record (`schedules/{base}/{task}`) and every decision about it, without I/O.
//!
//! - [`cron`]: five-field cron expressions and their next due instant in a time zone;
//! - [`TaskRecord`]: the declared spec (artifact, method, timing, missed-run policy) and the run state (next
//!   due time, last run and its outcome, counters, pause, a pending trigger);
//! - [`spec_write`]: what a node serving the slice writes so the record matches the slice's descriptor;
//! - [`decide`]: what the leader does about one task now: wait, write (a skip, a reason to wait), or run;
//! - [`with_outcome`], [`paused`], [`triggered`]: the record after a call ended, after pause/resume, after a
//!   trigger request.
//!
//! Exactly once per due time: a run is recorded before its call by a compare-and-set of the record at the
//! version the decision read (the runtime also guards it with the leader record's version), with
//! `last_run.due_ms` and `next_due_ms` moved past the due time and `last_run.token` naming the attempt. Only
//! the process whose token the applied record shows makes the call, so two leaders (or one leader retrying) can
//! never both fire the same due time: one compare-and-set loses, and the winner's record no longer shows the due
//! time as pending. A run whose outcome write is lost still counts as run.
//!
//! Missed runs: due times more than [`ON_TIME_MS`] late, or more than one pending at once, were missed (no
//! leader, no quorum, no instance); the policy says what happens: `skip` goes on at the next due time after
//! now, `run-once` runs once for all of them, `run-all` runs the newest `limit` of them one after another.
//! Interval due times are `anchor_ms + k * interval`, from the record's creation, so a new leader computes the
//! same ones.

pub mod cron;

use crate::records::Record;
use crate::write::KvWrite;
use kvstore::{AetherKey, Artifact, Revision};
use serde::{Deserialize, Serialize};
pub use vocab::{MissedRuns, Timing};

pub use cron::{Cron, CronError};

/// A due time at most this late runs as an ordinary run; later, it was missed and the policy decides.
pub const ON_TIME_MS: u64 = 10_000;
/// Most due times one decision enumerates (a cron task missed over a long outage); older ones only count.
pub const PENDING_SCAN_MAX: u64 = 10_000;
/// Most missed runs `run-all` replays, whatever limit the slice declared.
pub const RUN_ALL_LIMIT_MAX: u32 = 1_000;

/// Checks a declared timing: an interval of at least 1 ms, or a cron expression and zone that parse.
pub fn check_timing(timing: &Timing) -> Result<(), CronError> {
    match timing {
        Timing::Interval { ms } if *ms == 0 => Err(CronError("an interval of 0 ms".to_owned())),
        Timing::Interval { .. } => Ok(()),
        Timing::Cron { expression, time_zone } => Cron::parse(expression, time_zone).map(drop),
    }
}

/// The first due time strictly after `after_ms` of a task anchored at `anchor_ms`.
pub fn next_due(timing: &Timing, anchor_ms: u64, after_ms: u64) -> Option<u64> {
    match timing {
        Timing::Interval { ms } if *ms == 0 => None,
        Timing::Interval { ms } if after_ms < anchor_ms => Some(anchor_ms),
        Timing::Interval { ms } => anchor_ms.checked_add(((after_ms - anchor_ms) / ms + 1).checked_mul(*ms)?),
        Timing::Cron { expression, time_zone } => Cron::parse(expression, time_zone).ok()?.next_after(after_ms),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Recorded and called; no outcome written (yet, or the write was lost).
    Running,
    /// The method answered with a status below 400.
    Ok,
    /// It answered 400 or above, or the call failed.
    Failed,
}

/// One run of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// The due time the run is for (a trigger's: when it was asked for).
    pub due_ms: u64,
    pub started_ms: u64,
    /// The node that recorded it and makes the call.
    pub node: String,
    /// The attempt: only the process that chose it calls.
    pub token: String,
    /// Started by a trigger request rather than by the timing.
    #[serde(default)]
    pub trigger: bool,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `schedules/{base}/{task}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The artifact whose descriptor declared the task (the newest version that did).
    pub artifact: String,
    pub method: String,
    pub timing: Timing,
    pub missed: MissedRuns,
    /// Interval due times are `anchor_ms + k * interval`.
    pub anchor_ms: u64,
    #[serde(default)]
    pub paused: bool,
    /// The next due time not yet run (`None`: never due again).
    pub next_due_ms: Option<u64>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub failures: u64,
    /// Due times that passed without a run of their own.
    #[serde(default)]
    pub missed_runs: u64,
    /// Why a due run has not started (no ACTIVE instance), while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// A run-now request (when it was asked for), until a run takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_ms: Option<u64>,
}

impl Record for TaskRecord {
    const KIND: &'static str = "scheduled task record";
}

/// What a node serving the slice writes for one declared task: the record when absent, or its spec when the
/// descriptor changed (unless a newer version of the slice declared it: during a rolling update the newest
/// owns the spec). The run state is kept; a changed timing starts from a new anchor.
pub fn spec_write(
    key: AetherKey,
    current: Option<(&TaskRecord, Revision)>,
    artifact: &Artifact,
    spec: &crate::node::ScheduleSpec,
    now_ms: u64,
) -> Option<KvWrite> {
    let fresh = |anchor_ms: u64| TaskRecord {
        artifact: artifact.to_string(),
        method: spec.method.to_string(),
        timing: spec.timing.clone(),
        missed: spec.missed,
        anchor_ms,
        paused: false,
        next_due_ms: next_due(&spec.timing, anchor_ms, anchor_ms.saturating_sub(1)),
        last_run: None,
        runs: 0,
        failures: 0,
        missed_runs: 0,
        waiting: None,
        trigger_ms: None,
    };
    let Some((record, version)) = current else {
        // An interval task's first run is one interval after creation, a cron task's at its first due time.
        let mut record = fresh(now_ms);
        record.next_due_ms = next_due(&spec.timing, now_ms, now_ms);
        return Some(KvWrite::Set { key, expected: None, value: record.encode() });
    };
    let same = record.artifact == artifact.to_string()
        && record.method == spec.method.as_str()
        && record.timing == spec.timing
        && record.missed == spec.missed;
    let newer_declared = Artifact::parse(&record.artifact).is_ok_and(|theirs| theirs > *artifact);
    if same || newer_declared {
        return None;
    }
    let mut updated = record.clone();
    updated.artifact = artifact.to_string();
    updated.method = spec.method.to_string();
    updated.missed = spec.missed;
    if record.timing != spec.timing {
        updated.timing = spec.timing.clone();
        updated.anchor_ms = now_ms;
        updated.next_due_ms = next_due(&spec.timing, now_ms, now_ms);
    }
    Some(KvWrite::Set { key, expected: Some(version), value: updated.encode() })
}

/// What the leader does about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing before `until_ms` (`None`: nothing until the record changes).
    Wait { until_ms: Option<u64> },
    /// Write this record (missed runs skipped, a reason to wait); no call.
    Write(TaskRecord),
    /// Write this record (the run, recorded), then, once it is applied, call the method.
    Run(TaskRecord),
}

/// The due times from `next_ms` up to `now_ms`: how many, and the newest `keep` of them in order.
fn pending(record: &TaskRecord, next_ms: u64, now_ms: u64, keep: usize) -> (u64, Vec<u64>) {
    if let Timing::Interval { ms } = record.timing {
        let count = (now_ms - next_ms) / ms.max(1) + 1;
        let newest = next_ms + (count - 1) * ms;
        let kept = count.min(keep as u64);
        return (count, (0..kept).rev().map(|i| newest - i * ms).collect());
    }
    let (mut count, mut newest) = (0u64, std::collections::VecDeque::new());
    let mut at = Some(next_ms);
    while let Some(due) = at.filter(|&d| d <= now_ms && count < PENDING_SCAN_MAX) {
        count += 1;
        newest.push_back(due);
        if newest.len() > keep {
            newest.pop_front();
        }
        at = next_due(&record.timing, record.anchor_ms, due);
    }
    if at.is_some_and(|d| d <= now_ms) {
        // More than the scan bound: the rest only count (an interval-sized estimate is not worth it).
        count += 1;
    }
    (count, newest.into())
}

/// The decision for `record` at `now_ms`: `has_instance` says whether the slice has an ACTIVE instance
/// anywhere; `node` and `token` name this node and the attempt, should it run.
pub fn decide(record: &TaskRecord, now_ms: u64, has_instance: bool, node: &str, token: &str) -> Decision {
    let run = |mut next: TaskRecord, due_ms: u64, trigger: bool| {
        next.last_run = Some(LastRun {
            due_ms,
            started_ms: now_ms,
            node: node.to_owned(),
            token: token.to_owned(),
            trigger,
            outcome: Outcome::Running,
            status: None,
            duration_ms: None,
        });
        next.runs += 1;
        next.waiting = None;
        Decision::Run(next)
    };
    let due_now = record.trigger_ms.is_some() || record.next_due_ms.is_some_and(|n| n <= now_ms && !record.paused);
    if !due_now {
        return Decision::Wait { until_ms: if record.paused { None } else { record.next_due_ms } };
    }
    if !has_instance {
        let why = format!("no ACTIVE instance of {}", record.artifact);
        if record.waiting.as_deref() == Some(why.as_str()) {
            return Decision::Wait { until_ms: None };
        }
        return Decision::Write(TaskRecord { waiting: Some(why), ..record.clone() });
    }
    if let Some(asked_ms) = record.trigger_ms {
        return run(TaskRecord { trigger_ms: None, ..record.clone() }, asked_ms, true);
    }
    let Some(next_ms) = record.next_due_ms else { return Decision::Wait { until_ms: None } };
    let keep = match record.missed {
        MissedRuns::RunAll { limit } => limit.clamp(1, RUN_ALL_LIMIT_MAX) as usize,
        _ => 1,
    };
    let (count, newest) = pending(record, next_ms, now_ms, keep);
    let after = |due: u64| next_due(&record.timing, record.anchor_ms, due);
    let Some(&latest) = newest.last() else { return Decision::Wait { until_ms: Some(next_ms) } };
    let mut next = record.clone();
    if count == 1 && now_ms - next_ms <= ON_TIME_MS {
        next.next_due_ms = after(next_ms);
        return run(next, next_ms, false);
    }
    match record.missed {
        MissedRuns::Skip => {
            next.missed_runs += count;
            next.next_due_ms = after(now_ms.max(latest));
            Decision::Write(next)
        }
        MissedRuns::RunOnce => {
            next.missed_runs += count - 1;
            next.next_due_ms = after(latest);
            run(next, latest, false)
        }
        MissedRuns::RunAll { .. } => {
            let first = newest[0];
            next.missed_runs += count - newest.len() as u64;
            next.next_due_ms = newest.get(1).copied().or_else(|| after(first));
            run(next, first, false)
        }
    }
}

/// The record once the run `token` ended with HTTP `status` (`None`: the call failed) after `duration_ms`;
/// `None` when the record no longer shows that run as running (another run or the outcome replaced it).
pub fn with_outcome(record: &TaskRecord, token: &str, status: Option<u16>, duration_ms: u64) -> Option<TaskRecord> {
    let last = record.last_run.as_ref().filter(|r| r.token == token && r.outcome == Outcome::Running)?;
    let ok = status.is_some_and(|s| s < 400);
    let mut next = record.clone();
    next.last_run = Some(LastRun {
        outcome: if ok { Outcome::Ok } else { Outcome::Failed },
        status,
        duration_ms: Some(duration_ms),
        ..last.clone()
    });
    next.failures += u64::from(!ok);
    Some(next)
}

/// The record paused or resumed at `now_ms`. Due times that pass while paused are not missed runs: a resumed
/// task goes on at its next due time after now.
pub fn paused(record: &TaskRecord, pause: bool, now_ms: u64) -> TaskRecord {
    let mut next = record.clone();
    if record.paused && !pause {
        next.next_due_ms = next_due(&record.timing, record.anchor_ms, now_ms);
    }
    next.paused = pause;
    next
}

/// The record with a run-now request at `now_ms` (one request at a time: a second before the run keeps the first).
pub fn triggered(record: &TaskRecord, now_ms: u64) -> TaskRecord {
    TaskRecord { trigger_ms: record.trigger_ms.or(Some(now_ms)), ..record.clone() }
}

/// `2026-11-30T20:15:00Z` for Unix ms (with a fraction when it has one); the number itself when out of range.
pub fn rfc3339(ms: u64) -> String {
    let ts = i64::try_from(ms).ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
    ts.map_or_else(|| ms.to_string(), |t| t.to_string())
}

/// The removal of a task record whose slice has no target any more.
pub fn stale_removal(key: AetherKey, version: Revision) -> KvWrite {
    KvWrite::Remove { key, expected: version }
}

#[cfg(test)]
mod tests;
