//! The `[artifacts]` section of the node's config file: which slice libraries this node agrees to load.
//!
//! ```toml
//! [artifacts]
//! trusted_keys = ["<ed25519 public key: 64 hex digits or base64>", ...]
//! max_bytes = 67108864   # the largest library an upload may carry (default 64 MiB)
//! ```
//!
//! With no keys (the default) a library is loaded when it matches its checksum file; with keys, it must
//! also carry a signature by one of them (see `container::integrity`). Invariant: a key that does not
//! parse, or a `max_bytes` outside [`MAX_BYTES_MIN`, `MAX_BYTES_MAX`], stops the node at start, with the
//! file, line and field. The management port's body limit for uploads follows `max_bytes`.

use serde::Deserialize;
use toml::Spanned;

/// The raw section as the file has it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawArtifacts {
    trusted_keys: Option<Spanned<Vec<Spanned<String>>>>,
    max_bytes: Option<Spanned<u64>>,
}

/// The validated section.
#[derive(Clone, Debug)]
pub struct ArtifactsConfig {
    pub trusted_keys: container::TrustedKeys,
    /// The largest library an upload may carry, in bytes.
    pub max_bytes: usize,
}

impl Default for ArtifactsConfig {
    fn default() -> ArtifactsConfig {
        ArtifactsConfig { trusted_keys: container::TrustedKeys::default(), max_bytes: mgmt::ARTIFACT_BYTES_MAX }
    }
}

/// The smallest `max_bytes` (no slice library is smaller).
pub const MAX_BYTES_MIN: u64 = 4096;
/// The largest `max_bytes`: what the container reads of a library, and what an upload may hold in memory.
pub const MAX_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Most trusted keys (each load tries them in turn).
const TRUSTED_KEYS_MAX: usize = 64;

/// Validates the section; `at(span, field, message)` formats an error naming the file and line.
pub fn parse(
    raw: &RawArtifacts,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> String,
) -> Result<ArtifactsConfig, String> {
    let max_bytes = match &raw.max_bytes {
        Some(bytes) if !(MAX_BYTES_MIN..=MAX_BYTES_MAX).contains(bytes.get_ref()) => {
            let message = format!("{} bytes; from {MAX_BYTES_MIN} to {MAX_BYTES_MAX}", bytes.get_ref());
            return Err(at(bytes.span(), "artifacts.max_bytes", message));
        }
        Some(bytes) => *bytes.get_ref() as usize,
        None => mgmt::ARTIFACT_BYTES_MAX,
    };
    let field = "artifacts.trusted_keys";
    let Some(keys) = &raw.trusted_keys else {
        return Ok(ArtifactsConfig { max_bytes, ..ArtifactsConfig::default() });
    };
    if keys.get_ref().len() > TRUSTED_KEYS_MAX {
        return Err(at(keys.span(), field, format!("{} keys; at most {TRUSTED_KEYS_MAX}", keys.get_ref().len())));
    }
    for key in keys.get_ref() {
        container::TrustedKeys::parse(&[key.get_ref()]).map_err(|m| at(key.span(), field, m))?;
    }
    let texts: Vec<&str> = keys.get_ref().iter().map(|k| k.get_ref().as_str()).collect();
    let trusted_keys = container::TrustedKeys::parse(&texts).map_err(|m| at(keys.span(), field, m))?;
    Ok(ArtifactsConfig { trusted_keys, max_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ArtifactsConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default)]
            artifacts: RawArtifacts,
        }
        let raw: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        parse(&raw.artifacts, &|span, field, msg| format!("at {}: {field}: {msg}", span.start))
    }

    #[test]
    fn keys_in_hex_or_base64_and_refusals() {
        assert!(parse_text("").unwrap().trusted_keys.is_empty());
        assert!(parse_text("[artifacts]\n").unwrap().trusted_keys.is_empty());
        // The ed25519 public key of the all-zero seed, in hex and in base64.
        let hex = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
        let b64 = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
        let both = parse_text(&format!("[artifacts]\ntrusted_keys = [\"{hex}\", \"{b64}\"]\n")).unwrap();
        assert_eq!(both.trusted_keys.len(), 2);
        let bad = parse_text("[artifacts]\ntrusted_keys = [\"nope\"]\n").unwrap_err();
        assert!(bad.contains("artifacts.trusted_keys"), "{bad}");
        assert!(parse_text("[artifacts]\ntrusted_key = []\n").is_err(), "unknown field");
    }

    #[test]
    fn max_bytes_defaults_to_64_mib_and_is_bounded() {
        assert_eq!(parse_text("").unwrap().max_bytes, 64 * 1024 * 1024);
        assert_eq!(parse_text("[artifacts]\nmax_bytes = 100000\n").unwrap().max_bytes, 100_000);
        let small = parse_text("[artifacts]\nmax_bytes = 10\n").unwrap_err();
        assert!(small.contains("artifacts.max_bytes"), "{small}");
        assert!(parse_text("[artifacts]\nmax_bytes = 1000000000000\n").is_err());
        assert!(parse_text("[artifacts]\nmax_bytes = -1\n").is_err());
    }
}
