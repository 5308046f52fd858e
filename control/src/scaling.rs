//! Scaling: how many instances of a slice run when its blueprint's `instances` is not the last word.
//!
//! - [`ScaleRecord`] at `scaling/{artifact-base}`: an instance count set by the leader's controller
//!   (`by` = `"controller"`) or an operator (`POST /api/scale`, `by` = `"operator"`), with the reason. It
//!   applies to whatever version of the base its blueprint deploys, clamped to the slice's
//!   `min_instances..=max_instances`, for as long as the blueprint's own `instances` is the one it was set
//!   against (`blueprint_instances`): posting the blueprint with another count is the operator's new word
//!   and wins.
//! - [`ScalingConfig`] at `thresholds/scaling`: the controller's thresholds, changed at run time through
//!   `/api/controller/config`; absent fields take the defaults.
//! - [`decide`]: the controller's decision for one slice whose blueprint turns `autoscale` on, from the load
//!   the runtime measured ([`SliceLoad`]): one instance more when the CPU of the nodes running it or its
//!   call rate per instance is over the high mark, one fewer when both are under the low marks; never
//!   outside `min_instances..=max_instances`, never within `cooldown_ms` of the last change, and never while
//!   an instance is still warming up (ACTIVE for less than `warmup_ms`) or missing.
//!
//! Every function is pure; decoding never panics; every field is bounded.

use crate::records::{Record, RecordError};
use kvstore::Name;
use serde::{Deserialize, Serialize};

/// Longest `reason` kept, in bytes.
pub const REASON_BYTES_MAX: usize = 512;

/// Who set a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaledBy {
    Controller,
    Operator,
}

/// `scaling/{artifact-base}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRecord {
    pub instances: u32,
    pub by: ScaledBy,
    pub reason: String,
    /// When it was set, in milliseconds of the writer's clock.
    pub since_ms: u64,
    /// The blueprint that deploys the slice, and the `instances` it said when the scale was set.
    #[serde(with = "crate::text")]
    pub blueprint: Name,
    pub blueprint_instances: u32,
}

impl Record for ScaleRecord {
    const KIND: &'static str = "scale record";

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: ScaleRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })?;
        if record.reason.len() > REASON_BYTES_MAX {
            let reason = format!("reason is over {REASON_BYTES_MAX} bytes");
            return Err(RecordError { record: Self::KIND, reason });
        }
        Ok(record)
    }
}

impl ScaleRecord {
    /// The count that runs for a slice whose blueprint says `instances` within `min..=max`: this record's,
    /// clamped, while the blueprint still says what it said when the record was set; else `None`.
    pub fn applies(&self, blueprint: &Name, instances: u32, min: u32, max: u32) -> Option<u32> {
        (self.blueprint == *blueprint && self.blueprint_instances == instances)
            .then(|| self.instances.clamp(min.max(1), max.max(1)))
    }
}

/// The controller's thresholds (`thresholds/scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// Mean CPU (percent of one core's time, as `/api/metrics` reports) of the nodes running the slice above
    /// which it gets one more instance.
    pub cpu_high: f64,
    /// ... and below which (with the call rate also low) it gets one fewer.
    pub cpu_low: f64,
    /// Calls per second per instance above which it gets one more instance.
    pub calls_high: f64,
    /// ... and below which (with the CPU also low) it gets one fewer.
    pub calls_low: f64,
    /// Least time between two changes of one slice.
    pub cooldown_ms: u64,
    /// How long a new instance runs before its load counts.
    pub warmup_ms: u64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            cpu_high: 80.0,
            cpu_low: 20.0,
            calls_high: 500.0,
            calls_low: 50.0,
            cooldown_ms: 30_000,
            warmup_ms: 10_000,
        }
    }
}

impl Record for ScalingConfig {
    const KIND: &'static str = "scaling config";

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let config: ScalingConfig =
            serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })?;
        config.check().map_err(|reason| RecordError { record: Self::KIND, reason })?;
        Ok(config)
    }
}

impl ScalingConfig {
    /// Whether the marks are finite, in range and ordered (low below high), and the times at most an hour.
    pub fn check(&self) -> Result<(), String> {
        let marks = [self.cpu_high, self.cpu_low, self.calls_high, self.calls_low];
        if marks.iter().any(|m| !m.is_finite() || *m < 0.0) {
            return Err("every mark is a finite number of at least 0".to_owned());
        }
        if self.cpu_low >= self.cpu_high || self.calls_low >= self.calls_high {
            return Err("each low mark must be below its high mark".to_owned());
        }
        if self.cpu_high > 100_000.0 || self.calls_high > 1e9 {
            return Err("cpu_high is at most 100000 and calls_high at most 1e9".to_owned());
        }
        if self.cooldown_ms > 3_600_000 || self.warmup_ms > 3_600_000 {
            return Err("cooldown_ms and warmup_ms are at most 3600000".to_owned());
        }
        Ok(())
    }
}

/// What the runtime measured of one slice (all its ACTIVE instances) over the last seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SliceLoad {
    /// Mean CPU percent of the nodes that run an ACTIVE instance.
    pub cpu_percent: f64,
    /// Calls per second, all instances together.
    pub calls_per_sec: f64,
}

/// One slice as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaled {
    /// Instances running now (the target's count).
    pub instances: u32,
    pub min: u32,
    pub max: u32,
    /// Instances ACTIVE for at least the warm-up time.
    pub warm: u32,
    /// Nodes that can run an instance (live and ON_DUTY; one instance per node).
    pub placeable: u32,
    /// When the count last changed (the scale record's `since_ms`), if ever.
    pub last_change_ms: Option<u64>,
}

/// The controller's decision for one autoscaled slice: the new count and why, or `None` to leave it.
pub fn decide(slice: &Scaled, load: &SliceLoad, config: &ScalingConfig, now_ms: u64) -> Option<(u32, String)> {
    if slice.last_change_ms.is_some_and(|at| now_ms < at.saturating_add(config.cooldown_ms)) {
        return None;
    }
    // Instances that cannot be placed (more than nodes) never warm up; they do not hold changes back.
    if slice.warm < slice.instances.min(slice.placeable) {
        return None;
    }
    let per_instance = load.calls_per_sec / f64::from(slice.instances.max(1));
    let hot_cpu = load.cpu_percent > config.cpu_high;
    let hot_calls = per_instance > config.calls_high;
    let (from, min, max) = (slice.instances, slice.min.max(1), slice.max.max(1));
    let ceiling = max.min(slice.placeable.max(min));
    if (hot_cpu || hot_calls) && from < ceiling {
        let why = if hot_cpu {
            format!("CPU {:.0}% on the nodes running it, over {:.0}%", load.cpu_percent, config.cpu_high)
        } else {
            format!("{per_instance:.0} calls/s per instance, over {:.0}", config.calls_high)
        };
        let bound = if ceiling < max { format!("{ceiling} nodes") } else { format!("max {max}") };
        return Some((from + 1, format!("{why}: {from} -> {} instances ({bound})", from + 1)));
    }
    let cold = load.cpu_percent < config.cpu_low && per_instance < config.calls_low;
    if cold && from > min {
        let why = format!(
            "CPU {:.0}% (under {:.0}%) and {per_instance:.0} calls/s per instance (under {:.0})",
            load.cpu_percent, config.cpu_low, config.calls_low
        );
        return Some((from - 1, format!("{why}: {from} -> {} instances (min {min})", from - 1)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(instances: u32) -> Scaled {
        Scaled { instances, min: 1, max: 4, warm: instances, placeable: 5, last_change_ms: Some(0) }
    }

    #[test]
    fn load_scales_up_and_calm_scales_down_within_the_bounds() {
        let config = ScalingConfig::default();
        let hot = SliceLoad { cpu_percent: 95.0, calls_per_sec: 10.0 };
        let (to, why) = decide(&slice(2), &hot, &config, 60_000).unwrap();
        assert_eq!(to, 3);
        assert!(why.contains("CPU 95%") && why.contains("2 -> 3"), "{why}");
        assert_eq!(decide(&slice(4), &hot, &config, 60_000), None, "at max");
        let busy = SliceLoad { cpu_percent: 10.0, calls_per_sec: 2_000.0 };
        assert_eq!(decide(&slice(2), &busy, &config, 60_000).map(|d| d.0), Some(3), "1000 calls/s each");
        let calm = SliceLoad { cpu_percent: 5.0, calls_per_sec: 10.0 };
        assert_eq!(decide(&slice(2), &calm, &config, 60_000).map(|d| d.0), Some(1));
        assert_eq!(decide(&slice(1), &calm, &config, 60_000), None, "never below min");
        let between = SliceLoad { cpu_percent: 50.0, calls_per_sec: 10.0 };
        assert_eq!(decide(&slice(2), &between, &config, 60_000), None);
    }

    #[test]
    fn cooldown_and_warmup_hold_changes_back() {
        let config = ScalingConfig::default();
        let hot = SliceLoad { cpu_percent: 95.0, calls_per_sec: 0.0 };
        assert_eq!(decide(&slice(2), &hot, &config, 29_999), None, "cooling down");
        let warming = Scaled { warm: 1, ..slice(2) };
        assert_eq!(decide(&warming, &hot, &config, 60_000), None, "an instance is still warming up");
        let never = Scaled { last_change_ms: None, ..slice(2) };
        assert!(decide(&never, &hot, &config, 0).is_some());
    }

    #[test]
    fn a_count_above_the_nodes_neither_grows_nor_freezes() {
        let config = ScalingConfig::default();
        let hot = SliceLoad { cpu_percent: 95.0, calls_per_sec: 0.0 };
        let three_nodes = Scaled { placeable: 3, ..slice(3) };
        assert_eq!(decide(&three_nodes, &hot, &config, 60_000), None, "every node runs one already");
        // Set to 4 by hand on 3 nodes: 3 warm instances are all there can be, so the calm scales it down.
        let over = Scaled { instances: 4, warm: 3, placeable: 3, ..slice(4) };
        let calm = SliceLoad { cpu_percent: 1.0, calls_per_sec: 0.0 };
        assert_eq!(decide(&over, &calm, &config, 60_000).map(|d| d.0), Some(3));
    }

    #[test]
    fn a_scale_applies_while_the_blueprint_count_is_unchanged() {
        let shop = Name::parse("shop").unwrap();
        let record = ScaleRecord {
            instances: 9,
            by: ScaledBy::Operator,
            reason: "test".into(),
            since_ms: 0,
            blueprint: shop.clone(),
            blueprint_instances: 2,
        };
        assert_eq!(record.applies(&shop, 2, 1, 4), Some(4), "clamped to max");
        assert_eq!(record.applies(&shop, 3, 1, 4), None, "the blueprint says another count now");
        assert_eq!(record.applies(&Name::parse("other").unwrap(), 2, 1, 4), None);
        assert_eq!(ScaleRecord::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn configs_are_checked() {
        assert!(ScalingConfig::decode(b"{}").is_ok());
        assert!(ScalingConfig::decode(br#"{"cpu_low": 90}"#).is_err());
        assert!(ScalingConfig::decode(br#"{"cpu_high": -1}"#).is_err());
        assert!(ScalingConfig::decode(br#"{"cooldown": 1}"#).is_err());
        assert!(ScalingConfig::decode(br#"{"cpu_high": 1e400}"#).is_err());
    }
}
