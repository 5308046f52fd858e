//! Per-slice behaviour a blueprint may set beyond counts and config: how calls pick an instance, whether the
//! slice is single-active, and per-topic overrides of how its subscriptions are delivered.
//!
//! ```toml
//! [[slices]]
//! artifact = "org.aether.examples:inbox:1.0.0"
//! instances = 3
//! selection = "round-robin"     # local-first (default), round-robin, random, least-loaded
//! single_active = true          # only the lease holder serves (default: what the slice declares)
//! [slices.subscriptions.work]   # overrides for the slice's subscription to topic `work`
//! delivery = "broadcast"        # competing or broadcast (default: what the slice declares)
//! strategy = "least-loaded"     # competing only: round-robin (default) or least-loaded
//! max_attempts = 5              # deliveries tried before the message is dead-lettered (1..=100)
//! retry_backoff_ms = 100        # first retry delay, doubled per attempt (1..=600000)
//! timeout_ms = 10000            # one delivery's deadline (1..=300000)
//! ```
//!
//! Like `concurrency` and `[slices.kv]`, everything travels in the target record's config under reserved
//! `aether.` keys ([`SELECTION_KEY`], [`SINGLE_ACTIVE_KEY`], `aether.subscriptions.{topic}.{field}`), so the
//! records keep their shape; [`SliceBehaviour::from_config`] reads it back on the nodes, with defaults for
//! what is absent or out of range (a config no blueprint could hold).

use super::parse::Lines;
use super::{error, BlueprintError, BlueprintErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use toml::Spanned;
use vocab::{Delivery, Name, Selection};

/// Config key carrying `selection`.
pub const SELECTION_KEY: &str = "aether.selection";
/// Config key carrying `single_active`.
pub const SINGLE_ACTIVE_KEY: &str = "aether.single_active";
/// Prefix of the config keys carrying `[slices.subscriptions.{topic}]`: `aether.subscriptions.{topic}.{field}`.
pub const SUBSCRIPTIONS_PREFIX: &str = "aether.subscriptions.";

/// Deliveries of one message to one subscriber before it is dead-lettered, when nothing says otherwise.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 5;
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// First retry delay, doubled per attempt, when nothing says otherwise.
pub const RETRY_BACKOFF_MS_DEFAULT: u64 = 100;
pub const RETRY_BACKOFF_MS_LIMIT: u64 = 600_000;
/// One delivery's deadline when nothing says otherwise.
pub const DELIVERY_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const DELIVERY_TIMEOUT_MS_LIMIT: u64 = 300_000;

/// How a competing subscription picks the instance for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    LeastLoaded,
}

impl Strategy {
    pub fn word(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastLoaded => "least-loaded",
        }
    }

    fn parse(input: &str) -> Option<Strategy> {
        [Strategy::RoundRobin, Strategy::LeastLoaded].into_iter().find(|s| s.word() == input)
    }
}

/// The blueprint's overrides for one subscription; `None` fields keep what the slice declares or the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOverride {
    pub delivery: Option<Delivery>,
    pub strategy: Strategy,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub timeout_ms: u64,
}

/// What a target's config says about the slice's behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceBehaviour {
    pub selection: Selection,
    /// True when the blueprint turns single-active on (a slice that declares it is single-active anyway).
    pub single_active: bool,
    /// By topic name.
    pub subscriptions: BTreeMap<String, SubscriptionOverride>,
}

impl SliceBehaviour {
    /// Reads a target record's config; defaults for what is absent or out of range.
    pub fn from_config(config: &Map<String, Value>) -> SliceBehaviour {
        let selection = config.get(SELECTION_KEY).and_then(Value::as_str).and_then(|s| Selection::parse(s).ok());
        let single_active = config.get(SINGLE_ACTIVE_KEY).and_then(Value::as_bool).unwrap_or(false);
        let mut subscriptions: BTreeMap<String, SubscriptionOverride> = BTreeMap::new();
        for (key, value) in config.iter().filter_map(|(k, v)| Some((k.strip_prefix(SUBSCRIPTIONS_PREFIX)?, v))) {
            let Some((topic, field)) = key.rsplit_once('.') else { continue };
            if Name::parse(topic).is_err() {
                continue;
            }
            let entry = subscriptions.entry(topic.to_owned()).or_insert_with(SubscriptionOverride::defaults);
            match field {
                "delivery" => entry.delivery = value.as_str().and_then(|s| Delivery::parse(s).ok()),
                "strategy" => entry.strategy = value.as_str().and_then(Strategy::parse).unwrap_or_default(),
                "max_attempts" => {
                    let n = value.as_u64().filter(|n| (1..=u64::from(MAX_ATTEMPTS_LIMIT)).contains(n));
                    entry.max_attempts = n.and_then(|n| u32::try_from(n).ok()).unwrap_or(MAX_ATTEMPTS_DEFAULT);
                }
                "retry_backoff_ms" => {
                    let n = value.as_u64().filter(|n| (1..=RETRY_BACKOFF_MS_LIMIT).contains(n));
                    entry.retry_backoff_ms = n.unwrap_or(RETRY_BACKOFF_MS_DEFAULT);
                }
                "timeout_ms" => {
                    let n = value.as_u64().filter(|n| (1..=DELIVERY_TIMEOUT_MS_LIMIT).contains(n));
                    entry.timeout_ms = n.unwrap_or(DELIVERY_TIMEOUT_MS_DEFAULT);
                }
                _ => {}
            }
        }
        SliceBehaviour { selection: selection.unwrap_or_default(), single_active, subscriptions }
    }

    /// The settings of the subscription to `topic`: the blueprint's overrides, else the defaults.
    pub fn subscription(&self, topic: &str) -> SubscriptionOverride {
        self.subscriptions.get(topic).copied().unwrap_or_else(SubscriptionOverride::defaults)
    }
}

impl SubscriptionOverride {
    /// No delivery override, round-robin, and the default attempts, backoff and timeout.
    pub fn defaults() -> SubscriptionOverride {
        SubscriptionOverride {
            delivery: None,
            strategy: Strategy::RoundRobin,
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            retry_backoff_ms: RETRY_BACKOFF_MS_DEFAULT,
            timeout_ms: DELIVERY_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// `[slices.subscriptions.{topic}]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    delivery: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    retry_backoff_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
}

/// Checks `selection`, `single_active` and `[slices.subscriptions.*]` of slice `index` and adds them to its
/// config.
pub(super) fn add_to_config(
    index: usize,
    selection: Option<&Spanned<String>>,
    single_active: Option<&Spanned<bool>>,
    subscriptions: &BTreeMap<String, Spanned<RawSubscription>>,
    lines: &Lines,
    config: &mut Map<String, Value>,
) -> Result<(), BlueprintError> {
    let invalid = |span: std::ops::Range<usize>, name: &str, reason: String| {
        error(BlueprintErrorKind::InvalidValue, lines.of(span.start), format!("slices[{index}].{name}"), reason)
    };
    if let Some(raw) = selection {
        let parsed = Selection::parse(raw.get_ref()).map_err(|e| invalid(raw.span(), "selection", e.reason))?;
        config.insert(SELECTION_KEY.to_owned(), Value::from(parsed.word()));
    }
    if let Some(raw) = single_active {
        config.insert(SINGLE_ACTIVE_KEY.to_owned(), Value::from(*raw.get_ref()));
    }
    for (topic, raw) in subscriptions {
        let at = |field: &str| format!("subscriptions.{topic}.{field}");
        if let Err(e) = Name::parse_as(topic, "topic") {
            return Err(invalid(raw.span(), &format!("subscriptions.{topic}"), e.reason));
        }
        let key = |field: &str| format!("{SUBSCRIPTIONS_PREFIX}{topic}.{field}");
        let sub = raw.get_ref();
        if let Some(d) = &sub.delivery {
            let parsed = Delivery::parse(d.get_ref()).map_err(|e| invalid(d.span(), &at("delivery"), e.reason))?;
            config.insert(key("delivery"), Value::from(parsed.word()));
        }
        if let Some(s) = &sub.strategy {
            let parsed = Strategy::parse(s.get_ref()).ok_or_else(|| {
                invalid(s.span(), &at("strategy"), "expected `round-robin` or `least-loaded`".to_owned())
            })?;
            config.insert(key("strategy"), Value::from(parsed.word()));
        }
        let bounded = [
            ("max_attempts", &sub.max_attempts, u64::from(MAX_ATTEMPTS_LIMIT)),
            ("retry_backoff_ms", &sub.retry_backoff_ms, RETRY_BACKOFF_MS_LIMIT),
            ("timeout_ms", &sub.timeout_ms, DELIVERY_TIMEOUT_MS_LIMIT),
        ];
        for (field, value, limit) in bounded {
            let Some(value) = value else { continue };
            let n = *value.get_ref();
            if !(1..=limit as i64).contains(&n) {
                return Err(invalid(value.span(), &at(field), format!("must be between 1 and {limit}, found {n}")));
            }
            config.insert(key(field), Value::from(n));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(text: &str) -> Result<Map<String, Value>, BlueprintError> {
        crate::blueprint::parse(text, &|_| true).map(|b| b.slices[0].config.clone())
    }

    #[test]
    fn settings_reach_the_config_and_read_back() {
        let text = r#"
name = "b"
[[slices]]
artifact = "g:a:1.0.0"
selection = "least-loaded"
single_active = true
[slices.subscriptions.work]
delivery = "broadcast"
strategy = "least-loaded"
max_attempts = 3
retry_backoff_ms = 50
timeout_ms = 2000
"#;
        let behaviour = SliceBehaviour::from_config(&config_of(text).unwrap());
        assert_eq!(behaviour.selection, Selection::LeastLoaded);
        assert!(behaviour.single_active);
        let work = behaviour.subscription("work");
        assert_eq!(work.delivery, Some(Delivery::Broadcast));
        assert_eq!(work.strategy, Strategy::LeastLoaded);
        assert_eq!((work.max_attempts, work.retry_backoff_ms, work.timeout_ms), (3, 50, 2000));
        assert_eq!(behaviour.subscription("news"), SubscriptionOverride::defaults());
    }

    #[test]
    fn nothing_said_is_the_defaults() {
        let behaviour =
            SliceBehaviour::from_config(&config_of("name = \"b\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n").unwrap());
        assert_eq!(behaviour, SliceBehaviour::default());
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let cases = [
            ("selection = \"nearest\"", "slices[0].selection"),
            ("[slices.subscriptions.work]\ndelivery = \"fanout\"", "slices[0].subscriptions.work.delivery"),
            ("[slices.subscriptions.work]\nmax_attempts = 0", "slices[0].subscriptions.work.max_attempts"),
            ("[slices.subscriptions.work]\ntimeout_ms = 300001", "slices[0].subscriptions.work.timeout_ms"),
            ("[slices.subscriptions.work]\nstrategy = \"random\"", "slices[0].subscriptions.work.strategy"),
        ];
        for (extra, field) in cases {
            let text = format!("name = \"b\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n{extra}\n");
            let err = config_of(&text).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err:?}");
        }
    }
}
