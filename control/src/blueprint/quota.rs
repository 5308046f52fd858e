//! Per-slice state quotas: a slice's `[slices.kv]` table in its blueprint, and how the nodes read it back.
//!
//! ```toml
//! [[slices]]
//! artifact = "org.example:cart:1.0.0"
//! [slices.kv]
//! max_bytes = 1048576   # default 16 MiB: relative keys plus values of the slice's data
//! max_keys = 1000       # default 10,000
//! ```
//!
//! The limits reach the nodes in the target record's config, as [`MAX_BYTES_KEY`] and [`MAX_KEYS_KEY`] (like
//! `aether.concurrency`), so nothing else in the records changes. A node puts them into every quota-bounded
//! write it submits for the slice ([`kvstore::Command::Bounded`]), where the state machine enforces them; a
//! redeploy with other limits applies to the next write. [`SliceQuota::from_config`] reads them back, with
//! the defaults for what is absent and for values no blueprint could hold.

use super::{error, BlueprintError, BlueprintErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

/// Config key carrying `[slices.kv] max_bytes`.
pub const MAX_BYTES_KEY: &str = "aether.kv.max_bytes";
/// Config key carrying `[slices.kv] max_keys`.
pub const MAX_KEYS_KEY: &str = "aether.kv.max_keys";
/// Bytes a slice may store when its blueprint says nothing.
pub const MAX_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// Keys a slice may store when its blueprint says nothing.
pub const MAX_KEYS_DEFAULT: u64 = 10_000;
/// Largest `max_bytes`: the whole store's limit (`kvstore::STORE_BYTES_MAX`).
pub const MAX_BYTES_LIMIT: u64 = kvstore::STORE_BYTES_MAX as u64;
/// Largest `max_keys`: the whole store's limit (`kvstore::ENTRIES_MAX`).
pub const MAX_KEYS_LIMIT: u64 = kvstore::ENTRIES_MAX as u64;

/// `[slices.kv]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKv {
    max_bytes: Option<Spanned<i64>>,
    max_keys: Option<Spanned<i64>>,
}

/// The state quota of one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceQuota {
    pub max_bytes: u64,
    pub max_keys: u64,
}

impl Default for SliceQuota {
    fn default() -> Self {
        SliceQuota { max_bytes: MAX_BYTES_DEFAULT, max_keys: MAX_KEYS_DEFAULT }
    }
}

impl SliceQuota {
    /// The quota in a target record's config; defaults for what is absent or out of range.
    pub fn from_config(config: &Map<String, Value>) -> SliceQuota {
        let read = |key: &str, limit: u64, default: u64| {
            config.get(key).and_then(Value::as_u64).filter(|n| (1..=limit).contains(n)).unwrap_or(default)
        };
        SliceQuota {
            max_bytes: read(MAX_BYTES_KEY, MAX_BYTES_LIMIT, MAX_BYTES_DEFAULT),
            max_keys: read(MAX_KEYS_KEY, MAX_KEYS_LIMIT, MAX_KEYS_DEFAULT),
        }
    }
}

/// Checks `[slices.kv]` of slice `index` and adds its limits to the slice's config.
pub(super) fn add_to_config(
    index: usize,
    kv: &RawKv,
    lines: &super::parse::Lines,
    config: &mut Map<String, Value>,
) -> Result<(), BlueprintError> {
    let fields = [
        (&kv.max_bytes, "max_bytes", MAX_BYTES_KEY, MAX_BYTES_LIMIT),
        (&kv.max_keys, "max_keys", MAX_KEYS_KEY, MAX_KEYS_LIMIT),
    ];
    for (value, name, key, limit) in fields {
        let Some(value) = value else { continue };
        let n = *value.get_ref();
        if !u64::try_from(n).is_ok_and(|n| (1..=limit).contains(&n)) {
            let reason = format!("must be between 1 and {limit}, found {n}");
            let line = lines.of(value.span().start);
            return Err(error(BlueprintErrorKind::InvalidValue, line, format!("slices[{index}].kv.{name}"), reason));
        }
        config.insert(key.to_owned(), Value::from(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kv: &str) -> Result<crate::Blueprint, BlueprintError> {
        let text = format!("name = \"shop\"\n[[slices]]\nartifact = \"org.example:cart:1.0.0\"\n{kv}");
        crate::blueprint::parse(&text, &|_| true)
    }

    #[test]
    fn the_limits_reach_the_config_and_read_back() {
        let bp = parse("[slices.kv]\nmax_bytes = 4096\nmax_keys = 3\n").unwrap();
        let quota = SliceQuota::from_config(&bp.slices[0].config);
        assert_eq!(quota, SliceQuota { max_bytes: 4096, max_keys: 3 });
        let only_keys = parse("[slices.kv]\nmax_keys = 7\n").unwrap();
        assert_eq!(SliceQuota::from_config(&only_keys.slices[0].config).max_bytes, MAX_BYTES_DEFAULT);
    }

    #[test]
    fn without_a_kv_table_the_defaults_apply_and_the_config_is_unchanged() {
        let bp = parse("").unwrap();
        assert!(bp.slices[0].config.is_empty());
        assert_eq!(SliceQuota::from_config(&bp.slices[0].config), SliceQuota::default());
    }

    #[test]
    fn bad_limits_name_the_field_and_line() {
        for (kv, field) in [
            ("[slices.kv]\nmax_bytes = 0\n", "slices[0].kv.max_bytes"),
            ("[slices.kv]\nmax_keys = -1\n", "slices[0].kv.max_keys"),
            ("[slices.kv]\nmax_keys = 99999999999\n", "slices[0].kv.max_keys"),
        ] {
            let err = parse(kv).unwrap_err();
            assert_eq!((err.kind, err.field.as_str(), err.line), (BlueprintErrorKind::InvalidValue, field, 5), "{kv}");
        }
        let err = parse("[slices.kv]\nmax_values = 3\n").unwrap_err();
        assert_eq!(err.kind, BlueprintErrorKind::UnknownKey);
    }
}
