//! The `[cluster_tls]` config section: mutual TLS on the cluster port. Reads the cluster CA, this node's
//! certificate chain and its private key (PEM) and builds the transport's TLS settings.
//!
//! Invariants:
//! - All three files are named or the section is absent; relative paths are relative to the config file.
//! - Nothing starts with a file that is unreadable, holds no PEM item of the right kind, has a key that does
//!   not match the certificate, or (for the key) is readable by group or others.
//! - Reloading reads the same paths again and yields new settings or an error; the running ones stay.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTls {
    ca_file: String,
    cert_file: String,
    key_file: String,
}

/// Where the PEM files are, and the settings built from them.
#[derive(Clone, Debug)]
pub struct ClusterTlsSettings {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub tls: net::ClusterTls,
}

/// Resolves and loads the section (`None` when absent); the error names the field and the file.
pub fn from_raw(config_path: &Path, raw: Option<RawClusterTls>) -> Result<Option<ClusterTlsSettings>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let resolve = |file: &str| {
        let file = PathBuf::from(file);
        if file.is_relative() {
            dir.join(file)
        } else {
            file
        }
    };
    let (ca_file, cert_file, key_file) = (resolve(&raw.ca_file), resolve(&raw.cert_file), resolve(&raw.key_file));
    let tls = load(&ca_file, &cert_file, &key_file)?;
    Ok(Some(ClusterTlsSettings { ca_file, cert_file, key_file, tls }))
}

impl ClusterTlsSettings {
    /// Reads the files again (certificates renewed on disk).
    pub fn reload(&self) -> Result<net::ClusterTls, String> {
        load(&self.ca_file, &self.cert_file, &self.key_file)
    }
}

/// Reloads the files on every SIGHUP (on a thread of its own) and hands new settings to the transport;
/// connections opened afterwards use them. A failed reload is logged and the running settings stay.
pub fn reload_on_sighup<C: Send + 'static>(
    settings: ClusterTlsSettings,
    handle: net::NetHandle<C>,
) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    std::thread::Builder::new()
        .name("cluster-tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match settings.reload() {
                    Ok(tls) => {
                        if handle.set_tls(tls).is_err() {
                            return;
                        }
                        log::info!("cluster TLS certificates reloaded from {}", settings.cert_file.display());
                    }
                    Err(e) => log::error!("cluster TLS reload failed, keeping the current certificates: {e}"),
                }
            }
        })
        .map_err(|e| format!("cannot start the SIGHUP thread: {e}"))?;
    Ok(())
}

fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<net::ClusterTls, String> {
    let ca = certificates(ca_file).map_err(|m| format!("cluster_tls.ca_file: {m}"))?;
    let chain = certificates(cert_file).map_err(|m| format!("cluster_tls.cert_file: {m}"))?;
    let key = private_key(key_file).map_err(|m| format!("cluster_tls.key_file: {m}"))?;
    net::ClusterTls::new(ca, chain, key).map_err(|m| format!("cluster_tls: {m}"))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    check_private(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{} holds no usable private key: {e}", path.display()))
}

/// A private key readable by group or others stops the node, as ssh does with keys.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{} is readable by group or others; run `chmod 600 {}`", path.display(), path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("aether-cluster-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_ca_and_node(d: &Path, key_mode: u32) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["node-1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(d.join("node.pem"), cert.pem()).unwrap();
        std::fs::write(d.join("node.key"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(d.join("node.key"), std::fs::Permissions::from_mode(key_mode)).unwrap();
    }

    fn raw() -> RawClusterTls {
        RawClusterTls { ca_file: "ca.pem".into(), cert_file: "node.pem".into(), key_file: "node.key".into() }
    }

    #[test]
    fn loads_relative_paths_and_reloads() {
        let d = dir("ok");
        write_ca_and_node(&d, 0o600);
        let settings = from_raw(&d.join("aetherd.toml"), Some(raw())).unwrap().unwrap();
        assert_eq!(settings.key_file, d.join("node.key"));
        settings.reload().unwrap();
        assert!(from_raw(&d.join("aetherd.toml"), None).unwrap().is_none());
    }

    #[test]
    fn refuses_a_readable_key_a_missing_file_and_a_non_pem_file() {
        let d = dir("bad");
        write_ca_and_node(&d, 0o644);
        let err = from_raw(&d.join("aetherd.toml"), Some(raw())).unwrap_err();
        assert!(err.contains("chmod 600") && err.contains("cluster_tls.key_file"), "{err}");
        std::fs::set_permissions(d.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(d.join("ca.pem"), "not pem").unwrap();
        let err = from_raw(&d.join("aetherd.toml"), Some(raw())).unwrap_err();
        assert!(err.contains("cluster_tls.ca_file") && err.contains("no CERTIFICATE"), "{err}");
        write_ca_and_node(&d, 0o600);
        std::fs::remove_file(d.join("node.pem")).unwrap();
        let err = from_raw(&d.join("aetherd.toml"), Some(raw())).unwrap_err();
        assert!(err.contains("cluster_tls.cert_file") && err.contains("cannot read"), "{err}");
        // A key that does not belong to the certificate.
        write_ca_and_node(&d, 0o600);
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(d.join("node.key"), other.serialize_pem()).unwrap();
        let err = from_raw(&d.join("aetherd.toml"), Some(raw())).unwrap_err();
        assert!(err.contains("do not go together"), "{err}");
    }
}
