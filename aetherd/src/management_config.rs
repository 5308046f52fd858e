//! The `[management]` config section and the start-time decision about management authentication.
//!
//! ```toml
//! [management]
//! key_file = "/etc/aether/admin.key"   # the first admin key (turns authentication on)
//! allow_unauthenticated = false        # serve beyond loopback without keys (not recommended)
//! allowed_origins = ["https://console.example.com"]  # browsers allowed to change state (CORS)
//! host_names = ["aether.internal"]     # extra Host names accepted on a loopback bind
//! ```
//!
//! Authentication is on when management listens beyond loopback (unless `allow_unauthenticated`) or when a
//! `key_file` is named. Its first admin key is the `key_file`'s content or, when none is named, a key
//! generated at first start into `{data_dir}/admin.key` (created exclusively, mode 0600). `--dev` never
//! authenticates, so a `--dev` node refuses a management address beyond loopback.
//!
//! Invariant: a secret file (the cluster secret, the key file) that its group or others can access stops
//! the node at start with one line naming the file and the `chmod 600` that fixes it, as ssh does.

use crate::config::NodeConfig;
use log::{info, warn};
use serde::Deserialize;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Shortest and longest accepted key in a key file.
const KEY_CHARS: std::ops::RangeInclusive<usize> = 16..=256;
/// Most entries in `allowed_origins` and in `host_names`.
const LIST_MAX: usize = 64;

/// The validated `[management]` section.
#[derive(Clone, Default)]
pub struct ManagementConfig {
    pub allow_unauthenticated: bool,
    pub key_file: Option<PathBuf>,
    /// The key file's key, read and checked at load.
    pub key: Option<String>,
    pub allowed_origins: Vec<String>,
    pub host_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagement {
    allow_unauthenticated: Option<bool>,
    key_file: Option<Spanned<String>>,
    allowed_origins: Option<Spanned<Vec<Spanned<String>>>>,
    host_names: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Validates the section; `at(span, field, message)` formats an error with the file and line;
/// `resolve` makes a relative path relative to the config file.
pub fn parse(
    raw: Option<RawManagement>,
    at: &dyn Fn(std::ops::Range<usize>, &str, String) -> String,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<ManagementConfig, String> {
    let Some(raw) = raw else { return Ok(ManagementConfig::default()) };
    let mut config =
        ManagementConfig { allow_unauthenticated: raw.allow_unauthenticated.unwrap_or(false), ..Default::default() };
    if let Some(file) = &raw.key_file {
        let path = resolve(file.get_ref());
        let key = read_key(&path).map_err(|m| at(file.span(), "management.key_file", m))?;
        config.key_file = Some(path);
        config.key = Some(key);
    }
    if let Some(list) = &raw.allowed_origins {
        if list.get_ref().len() > LIST_MAX {
            return Err(at(list.span(), "management.allowed_origins", format!("at most {LIST_MAX} origins")));
        }
        for origin in list.get_ref() {
            let checked =
                check_origin(origin.get_ref()).map_err(|m| at(origin.span(), "management.allowed_origins", m))?;
            config.allowed_origins.push(checked);
        }
    }
    if let Some(list) = &raw.host_names {
        if list.get_ref().len() > LIST_MAX {
            return Err(at(list.span(), "management.host_names", format!("at most {LIST_MAX} names")));
        }
        for name in list.get_ref() {
            let checked = check_host_name(name.get_ref()).map_err(|m| at(name.span(), "management.host_names", m))?;
            config.host_names.push(checked);
        }
    }
    Ok(config)
}

/// `scheme://host[:port]`, as browsers send it in `Origin`: no path, no trailing slash.
fn check_origin(origin: &str) -> Result<String, String> {
    let bad =
        || format!("'{origin}' is not an origin like \"https://console.example.com\" (scheme://host[:port], no path)");
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(bad());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if !rest.chars().all(ok) {
        return Err(bad());
    }
    Ok(origin.to_ascii_lowercase())
}

fn check_host_name(name: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':');
    if name.is_empty() || name.len() > 253 || !name.chars().all(ok) {
        return Err(format!("'{name}' is not a host name (letters, digits, '.', '-'; an IPv6 address in [])"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Refuses a secret file that its group or others can access, naming the fix.
pub fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<String, String> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let key = text.trim();
    if !KEY_CHARS.contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "key file {} must hold one key of {} to {} printable characters without spaces",
            path.display(),
            KEY_CHARS.start(),
            KEY_CHARS.end()
        ));
    }
    Ok(key.to_string())
}

/// How management guards itself on this node, deciding at start (and refusing to start when unsafe).
pub fn auth_config(config: &NodeConfig, dev: bool) -> Result<mgmt::AuthConfig, String> {
    let m = &config.management;
    let listen = config.listen_management;
    let beyond_loopback = !listen.ip().is_loopback();
    if dev && beyond_loopback {
        return Err(format!(
            "management on {listen} is reachable beyond this machine and --dev runs without authentication; \
             listen on 127.0.0.1, or use a config file (keys are then required)"
        ));
    }
    let enabled = m.key.is_some() || (beyond_loopback && !m.allow_unauthenticated);
    if beyond_loopback && !enabled {
        warn!(
            "management on {listen} is reachable beyond this machine WITHOUT authentication \
             ([management] allow_unauthenticated = true): anyone who can reach it controls the cluster"
        );
    }
    let bootstrap_key = match (&m.key, enabled) {
        (Some(key), _) => Some(key.clone()),
        (None, true) => Some(generated_admin_key(&config.data_dir)?),
        (None, false) => None,
    };
    if enabled {
        info!("management requires API keys (Authorization: Bearer <key>)");
    }
    Ok(mgmt::AuthConfig {
        enabled,
        bootstrap_key,
        secret: config.secret.clone(),
        allowed_origins: m.allowed_origins.clone(),
        host_names: m.host_names.clone(),
        listen,
    })
}

/// `{data_dir}/admin.key`: read if it exists (and is private), else created exclusively with mode 0600.
fn generated_admin_key(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("admin.key");
    if path.exists() {
        let key = read_key(&path)?;
        info!("the first admin key is in {}", path.display());
        return Ok(key);
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for the admin key: {e}"))?;
    let key = format!("aek_admin_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    // create_new is O_CREAT|O_EXCL: it never follows a symlink planted at the path.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    info!(
        "generated the first admin key into {} (mode 0600); send it as 'Authorization: Bearer <key>'",
        path.display()
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aether-mgmt-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn open_secret_files_are_refused_with_the_chmod() {
        let file = dir().join("key");
        std::fs::write(&file, "k".repeat(32)).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_key(&file).unwrap_err();
            assert!(err.contains(&format!("chmod 600 {}", file.display())), "{err}");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&file).unwrap(), "k".repeat(32));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_key(&file).is_ok());
    }

    #[test]
    fn short_or_spaced_keys_are_refused() {
        let file = dir().join("key");
        for text in ["short", "has a space in the middle of it", ""] {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(read_key(&file).unwrap_err().contains("printable"), "{text}");
        }
    }

    #[test]
    fn origins_and_host_names_are_checked() {
        assert_eq!(check_origin("https://Console.example.com:8443").unwrap(), "https://console.example.com:8443");
        for bad in ["console.example.com", "https://x/", "https://x/path", "ftp://x", "https://", "*"] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        assert!(check_host_name("aether.internal").is_ok());
        assert!(check_host_name("a b").is_err());
        assert!(check_host_name("").is_err());
    }

    fn node(listen: &str, management: ManagementConfig) -> NodeConfig {
        let mut config = crate::config::dev(dir());
        config.listen_management = listen.parse().unwrap();
        config.management = management;
        config
    }

    #[test]
    fn authentication_is_on_beyond_loopback_or_with_a_key_file() {
        let loopback = auth_config(&node("127.0.0.1:8080", ManagementConfig::default()), false).unwrap();
        assert!(!loopback.enabled && loopback.bootstrap_key.is_none());
        let keyed = ManagementConfig { key: Some("k".repeat(20)), ..Default::default() };
        let with_key = auth_config(&node("127.0.0.1:8080", keyed.clone()), false).unwrap();
        assert!(with_key.enabled);
        assert_eq!(with_key.bootstrap_key, Some("k".repeat(20)));
        let wide = node("0.0.0.0:8080", ManagementConfig::default());
        let generated = auth_config(&wide, false).unwrap();
        assert!(generated.enabled);
        assert!(wide.data_dir.join("admin.key").is_file());
        let explicit = ManagementConfig { allow_unauthenticated: true, ..Default::default() };
        assert!(!auth_config(&node("0.0.0.0:8080", explicit), false).unwrap().enabled);
        let explicit_with_key = ManagementConfig { allow_unauthenticated: true, ..keyed };
        assert!(auth_config(&node("0.0.0.0:8080", explicit_with_key), false).unwrap().enabled);
        let dev = auth_config(&node("0.0.0.0:8080", ManagementConfig::default()), true).unwrap_err();
        assert!(dev.contains("0.0.0.0:8080") && dev.contains("without authentication"), "{dev}");
        assert!(auth_config(&node("127.0.0.1:8080", ManagementConfig::default()), true).is_ok());
    }

    #[test]
    fn the_generated_admin_key_is_private_and_kept() {
        let data = dir();
        let first = generated_admin_key(&data).unwrap();
        let path = data.join("admin.key");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(first.starts_with("aek_admin_") && first.len() == 10 + 64, "{first}");
        assert_eq!(generated_admin_key(&data).unwrap(), first, "a restart keeps the key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(generated_admin_key(&data).unwrap_err().contains("chmod 600"));
    }
}
