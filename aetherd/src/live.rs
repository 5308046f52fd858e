//! Live settings: the node tunables that are safe to change while it runs, and the log levels, both read
//! from the replicated store (`config/...`, `loglevels/...`) and applied on every node within a loop tick
//! of the change being applied here, and at start (they are in the store, so they survive restarts).
//!
//! Settable keys ([`SETTABLE`]) and where each is read:
//! - `start_failures_max`, `start_backoff_ms`: the leader's start-failure policy
//!   (`control::cluster::quarantine`), read by the node's deployment manager on every reconcile;
//! - `call_deadline_ms`: the app port's request deadline and the dispatcher's call deadline;
//! - `slow_call_ms`: the slow-call threshold of the node's metrics (`AETHER_SLOW_CALL_MS` at start), handed
//!   to them through [`LiveSettings::on_change`].
//!
//! A per-node value (`config/nodes/{node}/{key}`) wins over the cluster-wide one (`config/{key}`), which
//! wins over the value the node started with (its environment or the built-in default).
//!
//! Invariants: an effective value is always within its key's range (out-of-range or unreadable stored
//! values are ignored with a warning); a hook runs only when its key's effective value changes.

use kvstore::{AetherKey, Store, WatchId};
use log::{info, warn, LevelFilter};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One live setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub description: &'static str,
}

/// Every setting an operator may change live.
pub const SETTABLE: [Setting; 4] = [
    Setting {
        key: "start_failures_max",
        min: 1,
        max: 1000,
        description: "start failures after which the leader quarantines an artifact",
    },
    Setting {
        key: "start_backoff_ms",
        min: 0,
        max: 3_600_000,
        description: "pause after a slice's first failed start before it is placed again (doubles per failure)",
    },
    Setting {
        key: "call_deadline_ms",
        min: 100,
        max: 600_000,
        description: "how long an app request waits for its slice before it is answered 504",
    },
    Setting {
        key: "slow_call_ms",
        min: 1,
        max: crate::metrics::SLOW_CALL_MS_MAX,
        description: "calls slower than this are kept as slow calls",
    },
];

/// Built-in default of `slow_call_ms`.
pub const SLOW_CALL_MS_DEFAULT: u64 = telemetry::SLOW_THRESHOLD_MS_DEFAULT;

type Hook = Box<dyn Fn(u64) + Send + Sync>;

/// The effective settings of this node, shared by the loop (which applies the store) and their readers.
pub struct LiveSettings {
    /// The values the node started with, in [`SETTABLE`] order.
    start: [u64; 4],
    effective: [AtomicU64; 4],
    hooks: Mutex<Vec<(usize, Hook)>>,
}

impl LiveSettings {
    /// Settings starting from `start` (in [`SETTABLE`] order), each clamped into its range.
    pub fn new(start: [u64; 4]) -> LiveSettings {
        let start: [u64; 4] = std::array::from_fn(|i| start[i].clamp(SETTABLE[i].min, SETTABLE[i].max));
        LiveSettings { start, effective: start.map(AtomicU64::new), hooks: Mutex::new(Vec::new()) }
    }

    fn index(key: &str) -> Option<usize> {
        SETTABLE.iter().position(|s| s.key == key)
    }

    /// The effective value of `key` (`None` for a key that is not settable).
    pub fn get(&self, key: &str) -> Option<u64> {
        Self::index(key).map(|i| self.effective[i].load(Ordering::Relaxed))
    }

    /// The value `key` started with: its default when nothing in the store overrides it.
    pub fn start_value(&self, key: &str) -> Option<u64> {
        Self::index(key).map(|i| self.start[i])
    }

    /// Run `hook` with the new value whenever `key`'s effective value changes.
    pub fn on_change(&self, key: &str, hook: impl Fn(u64) + Send + Sync + 'static) {
        if let Some(i) = Self::index(key) {
            self.hooks.lock().push((i, Box::new(hook)));
        }
    }

    /// The leader's start-failure policy: `base` (as the node started) with the live values.
    pub fn start_policy(&self, base: &control::cluster::StartPolicy) -> control::cluster::StartPolicy {
        let mut policy = *base;
        if let Some(n) = self.get("start_failures_max") {
            policy.failures_max = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = self.get("start_backoff_ms") {
            policy.backoff_base_ms = ms;
            policy.backoff_max_ms = base.backoff_max_ms.max(ms);
        }
        policy
    }

    /// Every setting's effective value.
    pub fn effective(&self) -> BTreeMap<&'static str, u64> {
        SETTABLE.iter().enumerate().map(|(i, s)| (s.key, self.effective[i].load(Ordering::Relaxed))).collect()
    }

    /// Apply the stored values: `mine` (this node's overrides) over `cluster` over the start values.
    /// Returns the keys whose effective value changed, with old and new value.
    pub fn apply(
        &self,
        cluster: &BTreeMap<String, u64>,
        mine: &BTreeMap<String, u64>,
    ) -> Vec<(&'static str, u64, u64)> {
        let mut changed = Vec::new();
        for (i, setting) in SETTABLE.iter().enumerate() {
            let wanted = mine.get(setting.key).or_else(|| cluster.get(setting.key)).copied().unwrap_or(self.start[i]);
            let value = wanted.clamp(setting.min, setting.max);
            let old = self.effective[i].swap(value, Ordering::Relaxed);
            if old != value {
                changed.push((setting.key, old, value));
                for (_, hook) in self.hooks.lock().iter().filter(|(at, _)| *at == i) {
                    hook(value);
                }
            }
        }
        changed
    }
}

/// A stored setting value: a decimal number within the key's range.
pub fn parse_value(key: &str, text: &[u8]) -> Result<u64, String> {
    let setting = SETTABLE.iter().find(|s| s.key == key).ok_or_else(|| format!("'{key}' is not a live setting"))?;
    let text = std::str::from_utf8(text).map_err(|_| format!("{key}: the stored value is not text"))?;
    match text.trim().parse::<u64>() {
        Ok(n) if (setting.min..=setting.max).contains(&n) => Ok(n),
        _ => Err(format!("{key} = '{text}': expected a whole number from {} to {}", setting.min, setting.max)),
    }
}

/// The stored log levels: the `default` entry, if any, and every target's.
pub fn log_levels(store: &Store) -> (Option<LevelFilter>, Vec<(String, LevelFilter)>) {
    let mut default = None;
    let mut targets = Vec::new();
    for entry in store.list("loglevels/") {
        let AetherKey::LogLevel { logger } = entry.key() else { continue };
        let text = String::from_utf8_lossy(entry.value());
        let Ok(level) = crate::logger::parse_level(text.trim()) else {
            warn!("loglevels/{logger}: '{text}' is not a level; ignored");
            continue;
        };
        match logger.as_str() {
            "default" => default = Some(level),
            target => targets.push((target.to_string(), level)),
        }
    }
    (default, targets)
}

/// Watches the store for live settings and applies them here.
pub struct LiveWatch {
    me: String,
    watches: Vec<WatchId>,
    started: bool,
}

impl LiveWatch {
    pub fn new(me: &str, store: &mut Store) -> LiveWatch {
        let watches = ["loglevels/", "config/"].iter().filter_map(|p| store.watch(p).ok()).collect();
        LiveWatch { me: me.to_string(), watches, started: false }
    }

    /// Apply what changed in the store since the last call (everything, the first time).
    pub fn poll(&mut self, store: &mut Store, settings: &LiveSettings) {
        let ready: Vec<WatchId> = store.ready_watches().filter(|id| self.watches.contains(id)).collect();
        let mut changed = !self.started;
        for id in ready {
            changed |= !store.drain_events(id).unwrap_or_default().is_empty();
        }
        if !changed {
            return;
        }
        self.started = true;
        let (default, targets) = log_levels(store);
        let before = crate::logger::levels();
        crate::logger::set_levels(default, targets);
        let after = crate::logger::levels();
        if after != before {
            let targets = if after.targets.is_empty() { "no targets".to_string() } else { describe(&after.targets) };
            info!("log levels: default {}, {targets}", after.default.to_string().to_lowercase());
        }
        let (cluster, mine) = self.config(store);
        for (key, old, new) in settings.apply(&cluster, &mine) {
            info!("setting {key}: {old} -> {new}");
        }
    }

    fn config(&self, store: &Store) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let (mut cluster, mut mine) = (BTreeMap::new(), BTreeMap::new());
        for entry in store.list("config/") {
            let (target, section) = match entry.key() {
                AetherKey::Config { section } => (&mut cluster, section),
                AetherKey::NodeConfig { node, section } if node.as_str() == self.me => (&mut mine, section),
                _ => continue,
            };
            match parse_value(section.as_str(), entry.value()) {
                Ok(value) => {
                    target.insert(section.to_string(), value);
                }
                Err(e) => warn!("{}: {e}; ignored", entry.key()),
            }
        }
        (cluster, mine)
    }
}

fn describe(targets: &[(String, LevelFilter)]) -> String {
    targets.iter().map(|(t, l)| format!("{t}={}", l.to_string().to_lowercase())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_node_value_wins_over_the_cluster_value_over_the_start_value() {
        let settings = LiveSettings::new([2, 5000, 10_000, SLOW_CALL_MS_DEFAULT]);
        let seen = Arc::new(AtomicU64::new(0));
        let hook = Arc::clone(&seen);
        settings.on_change("call_deadline_ms", move |v| hook.store(v, Ordering::SeqCst));
        let changed = settings.apply(&map(&[("call_deadline_ms", 3000)]), &map(&[]));
        assert_eq!(changed, [("call_deadline_ms", 10_000, 3000)]);
        assert_eq!(seen.load(Ordering::SeqCst), 3000);
        settings.apply(&map(&[("call_deadline_ms", 3000)]), &map(&[("call_deadline_ms", 700)]));
        assert_eq!(settings.get("call_deadline_ms"), Some(700));
        assert!(settings.apply(&map(&[("call_deadline_ms", 3000)]), &map(&[("call_deadline_ms", 700)])).is_empty());
        settings.apply(&map(&[]), &map(&[]));
        assert_eq!((settings.get("call_deadline_ms"), seen.load(Ordering::SeqCst)), (Some(10_000), 10_000));
        assert_eq!(settings.get("nonsense"), None);
    }

    #[test]
    fn the_start_policy_follows_the_live_values() {
        let base = control::cluster::StartPolicy { failures_max: 2, backoff_base_ms: 5000, backoff_max_ms: 300_000 };
        let settings = LiveSettings::new([2, 5000, 10_000, SLOW_CALL_MS_DEFAULT]);
        assert_eq!(settings.start_policy(&base), base);
        settings.apply(&map(&[("start_failures_max", 7), ("start_backoff_ms", 600_000)]), &map(&[]));
        let policy = settings.start_policy(&base);
        assert_eq!((policy.failures_max, policy.backoff_base_ms, policy.backoff_max_ms), (7, 600_000, 600_000));
        assert_eq!(policy.backoff_ms(1), 600_000);
    }

    #[test]
    fn stored_values_are_range_checked() {
        assert_eq!(parse_value("start_failures_max", b"3"), Ok(3));
        assert!(parse_value("start_failures_max", b"0").is_err());
        assert!(parse_value("call_deadline_ms", b"99").is_err());
        assert!(parse_value("call_deadline_ms", b"1e3").is_err());
        assert!(parse_value("colour", b"1").is_err());
        let settings = LiveSettings::new([0, 0, 1, 0]);
        assert_eq!(settings.get("start_failures_max"), Some(1), "start values are clamped too");
    }
}
