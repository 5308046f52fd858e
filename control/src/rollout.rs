//! Rollouts: changing the version of one or more slices while traffic moves from the old version to the new
//! one by a ratio, stored as `updates/{id}` ([`RolloutRecord`]).
//!
//! A rollout names artifacts (`group:artifact`) with the version the blueprint deploys (`from`) and the one to
//! move to (`to`). While it runs, the leader deploys `to` beside `from` (`from` keeps its full count, so a
//! rollback never waits for the old version to come back), and every node routes calls to either version by
//! the rollout's ratio ([`RolloutRecord::new_share`]). One ratio governs every artifact of a rollout, and a
//! request's side is chosen once where it enters the cluster, so a request that ran `orders` 2.0.0 also
//! calls `inventory` 2.0.0 when one rollout moves both.
//!
//! States ([`Phase`]) and who moves them:
//! - `DEPLOYING`: the leader places `to`; no traffic goes to it. It moves to `SHIFTING` once every `to` has
//!   its instances ACTIVE with endpoints.
//! - `SHIFTING`: traffic is split by `ratio`. With `approval = "auto"` the leader walks the `stages` (each a
//!   share held for `hold_ms`), then completes; with `"manual"` the operator sets the ratio, promotes to the
//!   next stage, completes or rolls back.
//! - `COMPLETING`: all traffic on `to`; the leader notes the blueprint record's version, then rewrites that
//!   blueprint so it names `to`, after which `from` is an old version like any other: retired once `to`
//!   serves (make before break). A blueprint posted meanwhile (its version moved, and it does not name `to`),
//!   deleted, or whose text cannot be rewritten ends the rollout ROLLED_BACK with the reason.
//! - `COMPLETED`: the blueprint names `to`; the record stays as history.
//! - `ROLLING_BACK`: all traffic on `from`; the leader retires `to`. `ROLLED_BACK` once no `to` record is
//!   left. An operator's rollback, a health threshold crossed, or a blueprint that changed under the rollout
//!   (re-posted with another version, or deleted) start it; `reason` says which.
//!
//! The transitions an operator asks for are the pure functions [`RolloutRecord::set_ratio`],
//! [`RolloutRecord::promote`], [`RolloutRecord::complete`] and [`RolloutRecord::rollback`]: the management
//! API applies them to the record it read and writes the result at that record's version, so an operator and
//! the leader never overwrite each other's step.
//!
//! Invariants: `ratio.new + ratio.old` is 100; `stage` indexes `stages` (or is 0 with none); a record decodes
//! to a value or an error for any bytes; every text field is bounded.

use crate::records::{Record, RecordError};
use kvstore::SemVer;
use kvstore::{ArtifactBase, Name};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most artifacts one rollout moves.
pub const ARTIFACTS_MAX: usize = 8;
/// Most stages one rollout walks.
pub const STAGES_MAX: usize = 16;
/// Longest `reason` kept, in bytes.
pub const REASON_BYTES_MAX: usize = 512;
/// Longest a stage may be held, in milliseconds (a week).
pub const HOLD_MS_MAX: u64 = 7 * 24 * 3_600_000;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Deploying,
    Shifting,
    Completing,
    Completed,
    RollingBack,
    RolledBack,
}

impl Phase {
    /// True until the rollout completed or was rolled back.
    pub fn active(self) -> bool {
        !matches!(self, Phase::Completed | Phase::RolledBack)
    }

    /// True while the `to` versions should run (they are placed and kept).
    pub fn runs_new(self) -> bool {
        matches!(self, Phase::Deploying | Phase::Shifting | Phase::Completing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploying => "DEPLOYING",
            Phase::Shifting => "SHIFTING",
            Phase::Completing => "COMPLETING",
            Phase::Completed => "COMPLETED",
            Phase::RollingBack => "ROLLING_BACK",
            Phase::RolledBack => "ROLLED_BACK",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the new version takes over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The operator (or the stages) move the ratio step by step.
    #[default]
    Rolling,
    /// Small shares first, each held a while: 5% for 2 minutes, 25% for 2 minutes, then 100%, unless
    /// stages are given.
    Canary,
    /// The full new set starts, then all traffic switches at once (and back at once while the old set is
    /// kept, `keep_old_ms`).
    BlueGreen,
}

/// Who moves a shifting rollout on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// The operator: `ratio`, `promote`, `complete`, `rollback`.
    #[default]
    Manual,
    /// The leader, stage by stage, as each stage's hold ends.
    Auto,
}

/// One step of the traffic shift: `percent` of the requests go to the new version for `hold_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub percent: u8,
    #[serde(default)]
    pub hold_ms: u64,
}

/// The traffic split, in percent; `new + old` is 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    pub new: u8,
    pub old: u8,
}

impl Ratio {
    pub const OLD: Ratio = Ratio { new: 0, old: 100 };
    pub const NEW: Ratio = Ratio { new: 100, old: 0 };

    /// The split with `percent` on the new version (capped at 100).
    pub fn new_percent(percent: u8) -> Ratio {
        let new = percent.min(100);
        Ratio { new, old: 100 - new }
    }

    /// A split given as two weights (`{"new": 1, "old": 3}` is 25%), rounded to whole percent.
    pub fn from_weights(new: u64, old: u64) -> Result<Ratio, String> {
        let too_big = || "weights above 1000000 in total are refused".to_owned();
        let total = new.checked_add(old).ok_or_else(too_big)?;
        if total == 0 {
            return Err("the weights must not both be 0".to_owned());
        }
        if total > 1_000_000 {
            return Err(too_big());
        }
        let percent = (new * 100 + total / 2) / total;
        Ok(Ratio::new_percent(u8::try_from(percent).unwrap_or(100)))
    }
}

/// When the leader rolls back on its own: the new version's figures over the last `window_ms`, judged
/// against the old version's in the same window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Highest share of calls answered 5xx, from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Highest p99 latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Fewest calls of the new version in the window before it is judged.
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
}

fn default_window_ms() -> u64 {
    30_000
}

fn default_min_calls() -> u64 {
    20
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { max_error_rate: None, max_p99_ms: None, window_ms: default_window_ms(), min_calls: 20 }
    }
}

/// How long blue-green keeps the old set after an automatic switch, unless told: 5 minutes.
pub const KEEP_OLD_MS_DEFAULT: u64 = 300_000;

/// What an operator asks for when starting a rollout; `None` takes the strategy's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub artifacts: Vec<Move>,
    pub blueprint: Name,
    pub strategy: Strategy,
    pub instances: u32,
    pub stages: Option<Vec<Stage>>,
    pub approval: Option<Approval>,
    pub thresholds: Thresholds,
    pub keep_old_ms: Option<u64>,
}

/// One version's calls over the thresholds' window, merged over every node (the runtime measures them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub calls: u64,
    /// Calls answered 500 or more.
    pub errors: u64,
    pub p99_ms: u64,
}

impl Figures {
    fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.errors as f64 / self.calls as f64
    }
}

impl Thresholds {
    /// True when a threshold is set.
    pub fn judged(&self) -> bool {
        self.max_error_rate.is_some() || self.max_p99_ms.is_some()
    }

    /// Why the new version must go, judged on its window figures against the old version's in the same
    /// window: a threshold crossed by the new version counts only when the old one did no better (an outage
    /// of something both call fails both, and is not the new version's fault). `None` while it has fewer
    /// than `min_calls` calls in the window, or is within its thresholds.
    pub fn judge(&self, version: &str, new: &Figures, old: &Figures) -> Option<String> {
        if new.calls < self.min_calls.max(1) {
            return None;
        }
        let window_s = self.window_ms as f64 / 1000.0;
        if let Some(max) = self.max_error_rate {
            let (rate, old_rate) = (new.error_rate(), old.error_rate());
            if rate > max && rate > old_rate {
                return Some(format!(
                    "{version} answered {:.1}% of {} calls with errors over the last {window_s} s (the old version \
                     {:.1}%), above the {:.1}% allowed",
                    rate * 100.0,
                    new.calls,
                    old_rate * 100.0,
                    max * 100.0
                ));
            }
        }
        if let Some(max) = self.max_p99_ms {
            if new.p99_ms > max && (old.calls == 0 || new.p99_ms > old.p99_ms) {
                return Some(format!(
                    "{version} took {} ms at p99 over the last {window_s} s (the old version {} ms), above the {max} \
                     ms allowed",
                    new.p99_ms, old.p99_ms
                ));
            }
        }
        None
    }
}

/// One artifact a rollout moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    #[serde(with = "crate::text")]
    pub base: ArtifactBase,
    pub from: String,
    pub to: String,
}

impl Move {
    /// `group:artifact:{from}`.
    pub fn from_artifact(&self) -> Option<kvstore::Artifact> {
        Some(self.base.clone().with_version(SemVer::parse(&self.from).ok()?))
    }

    /// `group:artifact:{to}`.
    pub fn to_artifact(&self) -> Option<kvstore::Artifact> {
        Some(self.base.clone().with_version(SemVer::parse(&self.to).ok()?))
    }
}

/// `updates/{id}`: one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub artifacts: Vec<Move>,
    /// The blueprint that deploys every `from`.
    #[serde(with = "crate::text")]
    pub blueprint: Name,
    #[serde(default)]
    pub strategy: Strategy,
    /// Instances of each new version (0: as many as the old version's blueprint asks for).
    #[serde(default)]
    pub instances: u32,
    #[serde(default)]
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// How long the old set is kept at 100% before an automatic completion (blue-green; 0: complete at
    /// once when the last stage's hold ends).
    #[serde(default)]
    pub keep_old_ms: u64,
    pub state: Phase,
    pub ratio: Ratio,
    /// Index of the current stage in `stages`.
    #[serde(default)]
    pub stage: u32,
    /// When `state` or `stage` last changed, in milliseconds of the writer's clock.
    pub since_ms: u64,
    pub created_ms: u64,
    /// Why the rollout ended the way it did, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While COMPLETING: the version of the blueprint record the leader found when completion began, so a
    /// blueprint posted meanwhile is told from the one to rewrite (stamped by the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint_version: Option<u64>,
}

impl Record for RolloutRecord {
    const KIND: &'static str = "rollout record";

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: RolloutRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })?;
        record.check().map_err(|reason| RecordError { record: Self::KIND, reason })?;
        Ok(record)
    }
}

/// A request the record's state does not allow (answered 409 by the management API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RolloutRecord {
    /// Whether the fields are consistent: 1..=[`ARTIFACTS_MAX`] distinct artifacts with valid, different
    /// versions, at most [`STAGES_MAX`] stages of at most 100% held at most [`HOLD_MS_MAX`], a ratio summing
    /// to 100, thresholds in range.
    pub fn check(&self) -> Result<(), String> {
        if self.artifacts.is_empty() || self.artifacts.len() > ARTIFACTS_MAX {
            return Err(format!("a rollout moves 1 to {ARTIFACTS_MAX} artifacts, not {}", self.artifacts.len()));
        }
        for (i, moved) in self.artifacts.iter().enumerate() {
            let from = SemVer::parse(&moved.from).map_err(|e| format!("{}: from: {e}", moved.base))?;
            let to = SemVer::parse(&moved.to).map_err(|e| format!("{}: to: {e}", moved.base))?;
            if from == to {
                return Err(format!("{}: the new version is the one deployed ({from})", moved.base));
            }
            if self.artifacts[..i].iter().any(|m| m.base == moved.base) {
                return Err(format!("{} is named twice", moved.base));
            }
        }
        if self.stages.is_empty() || self.stages.len() > STAGES_MAX {
            return Err(format!("1 to {STAGES_MAX} stages, not {}", self.stages.len()));
        }
        if let Some(stage) = self.stages.iter().find(|s| s.percent > 100 || s.hold_ms > HOLD_MS_MAX) {
            return Err(format!(
                "a stage is 0 to 100 percent held at most {HOLD_MS_MAX} ms, not {} percent for {} ms",
                stage.percent, stage.hold_ms
            ));
        }
        if self.stages.windows(2).any(|w| w[1].percent < w[0].percent) {
            return Err("stages must not lower the new version's share".to_owned());
        }
        if u16::from(self.ratio.new) + u16::from(self.ratio.old) != 100 {
            return Err("ratio.new + ratio.old must be 100".to_owned());
        }
        if usize::try_from(self.stage).map_or(true, |s| s >= self.stages.len().max(1)) {
            return Err(format!("stage {} does not exist", self.stage));
        }
        if self.keep_old_ms > HOLD_MS_MAX {
            return Err(format!("keep_old_ms is at most {HOLD_MS_MAX}"));
        }
        let t = &self.thresholds;
        if t.max_error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err("thresholds.max_error_rate is between 0 and 1".to_owned());
        }
        if t.window_ms == 0 || t.window_ms > 3_600_000 {
            return Err("thresholds.window_ms is 1 to 3600000".to_owned());
        }
        if self.reason.as_ref().is_some_and(|r| r.len() > REASON_BYTES_MAX) {
            return Err(format!("reason is at most {REASON_BYTES_MAX} bytes"));
        }
        Ok(())
    }

    /// The share of requests (percent) the new versions get now: the ratio while shifting, all once
    /// completing, none before or after.
    pub fn new_share(&self) -> u8 {
        match self.state {
            Phase::Shifting => self.ratio.new,
            Phase::Completing | Phase::Completed => 100,
            Phase::Deploying | Phase::RollingBack | Phase::RolledBack => 0,
        }
    }

    /// The stages this rollout walks: the given ones, else its strategy's.
    pub fn default_stages(strategy: Strategy) -> Vec<Stage> {
        match strategy {
            Strategy::Rolling => vec![
                Stage { percent: 10, hold_ms: 60_000 },
                Stage { percent: 50, hold_ms: 60_000 },
                Stage { percent: 100, hold_ms: 0 },
            ],
            Strategy::Canary => vec![
                Stage { percent: 5, hold_ms: 120_000 },
                Stage { percent: 25, hold_ms: 120_000 },
                Stage { percent: 100, hold_ms: 0 },
            ],
            Strategy::BlueGreen => vec![Stage { percent: 100, hold_ms: 0 }],
        }
    }

    /// A new rollout in `DEPLOYING`, with its strategy's defaults where the operator gave nothing: stages
    /// ([`RolloutRecord::default_stages`]), approval (automatic for a canary, manual otherwise) and
    /// `keep_old_ms` ([`KEEP_OLD_MS_DEFAULT`] for blue-green, else 0). Checked ([`RolloutRecord::check`]).
    pub fn start(plan: Plan, now_ms: u64) -> Result<RolloutRecord, String> {
        let stages = plan.stages.unwrap_or_else(|| RolloutRecord::default_stages(plan.strategy));
        let approval = plan.approval.unwrap_or(match plan.strategy {
            Strategy::Canary => Approval::Auto,
            Strategy::Rolling | Strategy::BlueGreen => Approval::Manual,
        });
        let keep_old_ms = plan.keep_old_ms.unwrap_or(match plan.strategy {
            Strategy::BlueGreen => KEEP_OLD_MS_DEFAULT,
            Strategy::Rolling | Strategy::Canary => 0,
        });
        let record = RolloutRecord {
            artifacts: plan.artifacts,
            blueprint: plan.blueprint,
            strategy: plan.strategy,
            instances: plan.instances,
            stages,
            approval,
            thresholds: plan.thresholds,
            keep_old_ms,
            state: Phase::Deploying,
            ratio: Ratio::OLD,
            stage: 0,
            since_ms: now_ms,
            created_ms: now_ms,
            reason: None,
            blueprint_version: None,
        };
        record.check()?;
        Ok(record)
    }

    fn refuse_unless_running(&self, what: &str) -> Result<(), Refused> {
        if !self.state.active() {
            return Err(Refused(format!("the rollout is {}; it cannot {what}", self.state)));
        }
        if self.state == Phase::RollingBack {
            return Err(Refused(format!("the rollout is rolling back; it cannot {what}")));
        }
        Ok(())
    }

    /// The operator sets the split (the record keeps it while shifting; set while deploying, it applies once
    /// the new versions serve).
    pub fn set_ratio(&self, ratio: Ratio, now_ms: u64) -> Result<RolloutRecord, Refused> {
        self.refuse_unless_running("change its ratio")?;
        if self.state == Phase::Completing {
            return Err(Refused("the rollout is completing; all traffic is on the new version".to_owned()));
        }
        Ok(RolloutRecord { ratio, since_ms: now_ms, reason: None, ..self.clone() })
    }

    /// The current stage's share when the ratio is below it (a manual rollout starts at 0%), else the next
    /// stage's (100% past the last stage).
    pub fn promote(&self, now_ms: u64) -> Result<RolloutRecord, Refused> {
        self.refuse_unless_running("be promoted")?;
        if self.state != Phase::Shifting {
            return Err(Refused(format!("the rollout is {}; only a shifting rollout is promoted", self.state)));
        }
        let at = usize::try_from(self.stage).unwrap_or(usize::MAX);
        if let Some(stage) = self.stages.get(at).filter(|s| self.ratio.new < s.percent) {
            return Ok(RolloutRecord { ratio: Ratio::new_percent(stage.percent), since_ms: now_ms, ..self.clone() });
        }
        let next = at.saturating_add(1);
        let (stage, percent) = match self.stages.get(next) {
            Some(stage) => (next, stage.percent),
            None => (self.stages.len().saturating_sub(1), 100),
        };
        let stage = u32::try_from(stage).unwrap_or(0);
        Ok(RolloutRecord { stage, ratio: Ratio::new_percent(percent), since_ms: now_ms, ..self.clone() })
    }

    /// All traffic to the new versions, and the blueprint rewritten to name them.
    pub fn complete(&self, now_ms: u64) -> Result<RolloutRecord, Refused> {
        self.refuse_unless_running("complete")?;
        if self.state == Phase::Deploying {
            return Err(Refused("the new versions do not serve yet; the rollout cannot complete".to_owned()));
        }
        Ok(RolloutRecord {
            state: Phase::Completing,
            ratio: Ratio::NEW,
            since_ms: now_ms,
            blueprint_version: None,
            ..self.clone()
        })
    }

    /// All traffic back to the old versions, and the new ones retired.
    pub fn rollback(&self, reason: &str, now_ms: u64) -> Result<RolloutRecord, Refused> {
        if !self.state.active() || self.state == Phase::RollingBack {
            return Err(Refused(format!("the rollout is {}; there is nothing to roll back", self.state)));
        }
        // From COMPLETING too, until the blueprint names the new versions (then the rollout is COMPLETED); a
        // rollback that races the leader's rewrite of the blueprint loses to it.
        Ok(RolloutRecord {
            state: Phase::RollingBack,
            ratio: Ratio::OLD,
            since_ms: now_ms,
            reason: Some(crate::duty::cut(reason, REASON_BYTES_MAX)),
            ..self.clone()
        })
    }

    /// The move of `base`, when this rollout moves it.
    pub fn moving(&self, base: &ArtifactBase) -> Option<&Move> {
        self.artifacts.iter().find(|m| m.base == *base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record() -> RolloutRecord {
        RolloutRecord {
            artifacts: vec![Move {
                base: ArtifactBase::parse("g:a").unwrap(),
                from: "1.0.0".into(),
                to: "2.0.0".into(),
            }],
            blueprint: Name::parse("shop").unwrap(),
            strategy: Strategy::Rolling,
            instances: 0,
            stages: vec![Stage { percent: 10, hold_ms: 5 }, Stage { percent: 50, hold_ms: 5 }],
            approval: Approval::Manual,
            thresholds: Thresholds::default(),
            keep_old_ms: 0,
            state: Phase::Shifting,
            ratio: Ratio::new_percent(10),
            stage: 0,
            since_ms: 0,
            created_ms: 0,
            reason: None,
            blueprint_version: None,
        }
    }

    #[test]
    fn a_record_round_trips_and_is_checked() {
        let r = record();
        assert_eq!(RolloutRecord::decode(&r.encode()).unwrap(), r);
        let bad = RolloutRecord { ratio: Ratio { new: 60, old: 60 }, ..r.clone() };
        assert!(RolloutRecord::decode(&bad.encode()).is_err());
        let same = RolloutRecord {
            artifacts: vec![Move {
                base: ArtifactBase::parse("g:a").unwrap(),
                from: "1.0.0".into(),
                to: "1.0.0".into(),
            }],
            ..r.clone()
        };
        assert!(same.check().unwrap_err().contains("the new version is the one deployed"));
        let lowering = RolloutRecord {
            stages: vec![Stage { percent: 50, hold_ms: 0 }, Stage { percent: 5, hold_ms: 0 }],
            ..r.clone()
        };
        assert!(lowering.check().is_err());
        let no_stage = RolloutRecord { stage: 2, ..r };
        assert!(no_stage.check().is_err());
        for bytes in [&b""[..], b"{}", b"[]", b"{\"artifacts\":7}"] {
            assert!(RolloutRecord::decode(bytes).is_err());
        }
    }

    #[test]
    fn promote_walks_the_stages_then_goes_to_all() {
        let manual = RolloutRecord { ratio: Ratio::OLD, ..record() };
        let first = manual.promote(1).unwrap();
        assert_eq!((first.stage, first.ratio.new), (0, 10), "a manual rollout at 0% goes to its first stage");
        let r = record();
        let next = r.promote(7).unwrap();
        assert_eq!((next.stage, next.ratio.new, next.since_ms), (1, 50, 7));
        let last = next.promote(8).unwrap();
        assert_eq!((last.stage, last.ratio.new), (1, 100));
        assert!(last.check().is_ok());
    }

    #[test]
    fn operator_steps_follow_the_state() {
        let r = record();
        let back = r.rollback("bad", 3).unwrap();
        assert_eq!((back.state, back.new_share()), (Phase::RollingBack, 0));
        assert!(back.rollback("again", 4).is_err());
        assert!(back.promote(4).is_err());
        assert!(back.set_ratio(Ratio::NEW, 4).is_err());
        let done = r.complete(5).unwrap();
        assert_eq!((done.state, done.new_share()), (Phase::Completing, 100));
        assert_eq!(done.rollback("late", 6).unwrap().state, Phase::RollingBack, "until the blueprint is rewritten");
        let deploying = RolloutRecord { state: Phase::Deploying, ..r.clone() };
        assert!(deploying.complete(1).is_err());
        assert_eq!(deploying.new_share(), 0);
        assert_eq!(deploying.set_ratio(Ratio::new_percent(30), 1).unwrap().ratio.new, 30);
    }

    #[test]
    fn thresholds_judge_the_new_version_against_the_old_one() {
        let t = Thresholds { max_error_rate: Some(0.05), max_p99_ms: Some(100), window_ms: 10_000, min_calls: 20 };
        let healthy = Figures { calls: 100, errors: 1, p99_ms: 20 };
        assert_eq!(t.judge("v2", &Figures { calls: 19, errors: 19, p99_ms: 900 }, &healthy), None, "too few calls");
        assert_eq!(t.judge("v2", &healthy, &healthy), None);
        let failing = Figures { calls: 100, errors: 10, p99_ms: 20 };
        assert!(t.judge("v2", &failing, &healthy).unwrap().contains("10.0% of 100 calls"));
        assert_eq!(t.judge("v2", &failing, &Figures { calls: 100, errors: 30, p99_ms: 20 }), None, "both fail");
        let slow = Figures { calls: 100, errors: 0, p99_ms: 150 };
        assert!(t.judge("v2", &slow, &healthy).unwrap().contains("150 ms at p99"));
        assert!(t.judge("v2", &slow, &Figures::default()).is_some(), "no old calls to compare with");
        assert!(!Thresholds::default().judged());
    }

    #[test]
    fn weights_become_percent() {
        assert_eq!(Ratio::from_weights(1, 3).unwrap(), Ratio { new: 25, old: 75 });
        assert_eq!(Ratio::from_weights(1, 0).unwrap(), Ratio::NEW);
        assert!(Ratio::from_weights(0, 0).is_err());
        assert!(Ratio::from_weights(u64::MAX, 1).unwrap_err().contains("above 1000000"), "an overflow is too big");
    }
}
