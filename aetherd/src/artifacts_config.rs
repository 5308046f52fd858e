//! The `[artifacts]` section of the node's config file: which slice libraries this node agrees to load.
//!
//! ```toml
//! [artifacts]
//! trusted_keys = ["<ed25519 public key: 64 hex digits or base64>", ...]
//! ```
//!
//! With no keys (the default) a library is loaded when it matches its checksum file; with keys, it must
//! also carry a signature by one of them (see `container::integrity`). Invariant: a key that does not
//! parse stops the node at start, with the file, line and field.

use serde::Deserialize;
use toml::Spanned;

/// The raw section as the file has it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawArtifacts {
    trusted_keys: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The validated section.
#[derive(Clone, Debug, Default)]
pub struct ArtifactsConfig {
    pub trusted_keys: container::TrustedKeys,
}

/// Most trusted keys (each load tries them in turn).
const TRUSTED_KEYS_MAX: usize = 64;

/// Validates the section; `at(span, field, message)` formats an error naming the file and line.
pub fn parse(
    raw: &RawArtifacts,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> String,
) -> Result<ArtifactsConfig, String> {
    let field = "artifacts.trusted_keys";
    let Some(keys) = &raw.trusted_keys else { return Ok(ArtifactsConfig::default()) };
    if keys.get_ref().len() > TRUSTED_KEYS_MAX {
        return Err(at(keys.span(), field, format!("{} keys; at most {TRUSTED_KEYS_MAX}", keys.get_ref().len())));
    }
    for key in keys.get_ref() {
        container::TrustedKeys::parse(&[key.get_ref()]).map_err(|m| at(key.span(), field, m))?;
    }
    let texts: Vec<&str> = keys.get_ref().iter().map(|k| k.get_ref().as_str()).collect();
    let trusted_keys = container::TrustedKeys::parse(&texts).map_err(|m| at(keys.span(), field, m))?;
    Ok(ArtifactsConfig { trusted_keys })
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
}
