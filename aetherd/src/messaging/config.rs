//! The `[messaging]` section of the node's config file: bounds of topics and messages, retention, delivery
//! threads.
//!
//! ```toml
//! [messaging]
//! max_message_bytes = 262144        # one message's payload (413 past it)
//! max_messages_per_topic = 100000   # messages a topic holds before publishes get 429 "topic full"
//! max_topic_bytes = 67108864        # payload bytes a topic holds before publishes get 429
//! retention_ms = 600000             # how long a message nobody must still take is kept
//! delivery_threads = 8              # threads that run deliveries on this node
//! ```
//!
//! Every node of a cluster should have the same section. Out-of-range values stop the node at start, and
//! the error names the file, line and field.

use serde::Deserialize;
use toml::Spanned;

/// The messaging settings of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagingConfig {
    pub max_message_bytes: u64,
    pub max_messages_per_topic: u64,
    pub max_topic_bytes: u64,
    pub retention_ms: u64,
    pub delivery_threads: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            max_message_bytes: 256 * 1024,
            max_messages_per_topic: 100_000,
            max_topic_bytes: 64 * 1024 * 1024,
            retention_ms: 600_000,
            delivery_threads: 8,
        }
    }
}

/// The raw section as the file has it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMessaging {
    max_message_bytes: Option<Spanned<u64>>,
    max_messages_per_topic: Option<Spanned<u64>>,
    max_topic_bytes: Option<Spanned<u64>>,
    retention_ms: Option<Spanned<u64>>,
    delivery_threads: Option<Spanned<u64>>,
}

/// Validates the section (the defaults for what it leaves out).
pub fn parse(
    raw: &RawMessaging,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> String,
) -> Result<MessagingConfig, String> {
    let d = MessagingConfig::default();
    let number = |value: &Option<Spanned<u64>>, field: &str, low: u64, high: u64, default: u64| match value {
        None => Ok(default),
        Some(v) if (low..=high).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(at(v.span(), field, format!("{} is not from {low} to {high}", v.get_ref()))),
    };
    // A message travels in one consensus command (at most 1 MiB with its key and framing).
    let max_message_bytes =
        number(&raw.max_message_bytes, "messaging.max_message_bytes", 1, 1_000_000, d.max_message_bytes)?;
    Ok(MessagingConfig {
        max_message_bytes,
        max_messages_per_topic: number(
            &raw.max_messages_per_topic,
            "messaging.max_messages_per_topic",
            1,
            1_000_000,
            d.max_messages_per_topic,
        )?,
        max_topic_bytes: number(&raw.max_topic_bytes, "messaging.max_topic_bytes", 1, 1 << 30, d.max_topic_bytes)?,
        retention_ms: number(&raw.retention_ms, "messaging.retention_ms", 1_000, 7 * 86_400_000, d.retention_ms)?,
        delivery_threads: number(&raw.delivery_threads, "messaging.delivery_threads", 1, 256, 8)? as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<MessagingConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default)]
            messaging: RawMessaging,
        }
        let raw: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(&raw.messaging, &|span, field, msg| format!("at {}: {field}: {msg}", span.start))
    }

    #[test]
    fn defaults_settings_and_refusals() {
        assert_eq!(parse_text("").unwrap(), MessagingConfig::default());
        let set = parse_text("[messaging]\nmax_messages_per_topic = 10\nretention_ms = 5000\n").unwrap();
        assert_eq!((set.max_messages_per_topic, set.retention_ms), (10, 5000));
        assert!(parse_text("[messaging]\nmax_message_bytes = 0\n").unwrap_err().contains("max_message_bytes"));
        assert!(parse_text("[messaging]\ndelivery_threads = 1000\n").unwrap_err().contains("delivery_threads"));
        assert!(parse_text("[messaging]\nretention = 3\n").is_err(), "unknown field");
    }
}
