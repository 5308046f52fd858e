//! The `[tls]` section of the node's config: the PEM certificate chain and private key that put TLS on
//! the management and app ports.
//!
//! Invariants: both keys are required when the section is present, paths are resolved against the
//! config file's folder, and both files must be readable at start (their contents are checked when the
//! ports start, and again at each reload on SIGHUP, which keeps the old certificate on failure).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
}

/// The files named by `[tls]`, if the section is there; `path` and `text` are the config file's, for
/// messages.
pub fn files(path: &Path, text: &str, raw: Option<RawTls>) -> Result<Option<httpd::TlsFiles>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let check = |value: &Spanned<String>, field: &str| {
        let file = resolve(path, value.get_ref());
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => Ok(file),
            Ok(_) => Err(format!(
                "{}: line {}: {field}: {} is not a file",
                path.display(),
                line_of(text, value),
                file.display()
            )),
            Err(e) => {
                Err(format!("{}: line {}: {field}: {}: {e}", path.display(), line_of(text, value), file.display()))
            }
        }
    };
    let cert_file = check(&raw.cert_file, "tls.cert_file")?;
    let key_file = check(&raw.key_file, "tls.key_file")?;
    Ok(Some(httpd::TlsFiles { cert_file, key_file }))
}

fn line_of(text: &str, value: &Spanned<String>) -> usize {
    text.as_bytes().iter().take(value.span().start).filter(|&&b| b == b'\n').count() + 1
}

fn resolve(config_path: &Path, file: &str) -> PathBuf {
    let file = PathBuf::from(file);
    match config_path.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        tls: Option<RawTls>,
    }

    #[test]
    fn files_resolve_next_to_the_config_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("aether-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), "c").unwrap();
        std::fs::write(dir.join("key.pem"), "k").unwrap();
        let config = dir.join("node.toml");
        let text = "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n";
        let doc: Doc = toml::from_str(text).unwrap();
        let found = files(&config, text, doc.tls).unwrap().unwrap();
        assert_eq!((found.cert_file, found.key_file), (dir.join("cert.pem"), dir.join("key.pem")));
        let missing = "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"nope.pem\"\n";
        let doc: Doc = toml::from_str(missing).unwrap();
        let err = files(&config, missing, doc.tls).err().unwrap();
        assert!(err.contains("line 3: tls.key_file") && err.contains("nope.pem"), "{err}");
        assert!(toml::from_str::<Doc>("[tls]\ncert_file = \"c\"\n").is_err(), "both keys are required");
        let doc: Doc = toml::from_str("").unwrap();
        assert!(files(&config, "", doc.tls).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
