//! `cargo xtask certs [--dir DIR] [--nodes N] [--force]`: a development certificate authority and the
//! certificates a local cluster needs for TLS.
//!
//! Writes into DIR (default `target/dev-certs`, created with mode 0700):
//! - `ca.pem`, `ca.key`: a self-signed CA (ECDSA P-256) that signs everything below;
//! - `node-{i}.pem`, `node-{i}.key` for i in 1..=N: a node's cluster certificate, usable as TLS server *and*
//!   client (mutual TLS on the cluster port), with SANs `localhost`, `127.0.0.1`, `::1` and the node id
//!   (`node-{i}`, the ids `cargo xtask run` and the test clusters use);
//! - `http.pem`, `http.key`: the management and app ports' server certificate (SANs `localhost`, `127.0.0.1`,
//!   `::1`).
//!
//! Invariants: private keys are created with mode 0600 by an exclusive open (never through an existing file
//! or symlink); an existing set is never overwritten without `--force`. These are development certificates:
//! the CA key sits beside them, so anyone who can read the folder can mint certificates.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most node certificates one run makes.
const NODES_MAX: usize = 64;
/// Validity of the CA and of the certificates it signs, in years from today.
const CA_YEARS: i32 = 10;
const LEAF_YEARS: i32 = 2;

struct Options {
    dir: PathBuf,
    nodes: usize,
    force: bool,
}

pub fn certs(args: &[String]) -> crate::TaskResult {
    let options = parse_args(args)?;
    let written = make_certs(&options.dir, options.nodes, options.force)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!("{}", usage(&options.dir));
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options { dir: crate::util::target_dir().join("dev-certs"), nodes: 3, force: false };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value()?),
            "--nodes" => {
                let text = value()?;
                options.nodes = match text.parse::<usize>() {
                    Ok(n @ 1..=NODES_MAX) => n,
                    _ => return Err(format!("--nodes '{text}': expected a number from 1 to {NODES_MAX}")),
                };
            }
            "--force" => options.force = true,
            other => return Err(format!("certs: unknown argument '{other}' (use --dir DIR, --nodes N, --force)")),
        }
    }
    Ok(options)
}

/// Makes the CA, `nodes` node certificates and the HTTP certificate in `dir`; returns the files written.
fn make_certs(dir: &Path, nodes: usize, force: bool) -> Result<Vec<PathBuf>, String> {
    let mut names = vec!["ca".to_owned(), "http".to_owned()];
    names.extend((1..=nodes).map(|i| format!("node-{i}")));
    prepare_dir(dir, &names, force)?;
    let today = today();
    let ca_key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
    let ca = ca_params(today).self_signed(&ca_key).map_err(|e| format!("CA certificate: {e}"))?;
    let mut written = write_pair(dir, "ca", &ca, &ca_key)?;
    let server_and_client = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    for i in 1..=nodes {
        let id = format!("node-{i}");
        let sans = ["localhost", "127.0.0.1", "::1", &id];
        let (cert, key) = leaf(&id, &sans, &server_and_client, today, &ca, &ca_key)?;
        written.extend(write_pair(dir, &id, &cert, &key)?);
    }
    let (cert, key) = leaf(
        "aether http",
        &["localhost", "127.0.0.1", "::1"],
        &[ExtendedKeyUsagePurpose::ServerAuth],
        today,
        &ca,
        &ca_key,
    )?;
    written.extend(write_pair(dir, "http", &cert, &key)?);
    Ok(written)
}

/// Creates `dir` (0700) if needed and refuses to replace an existing set unless `force`.
fn prepare_dir(dir: &Path, names: &[String], force: bool) -> Result<(), String> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let existing: Vec<PathBuf> = names
        .iter()
        .flat_map(|name| [dir.join(format!("{name}.pem")), dir.join(format!("{name}.key"))])
        .filter(|path| path.symlink_metadata().is_ok())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(format!(
            "{} already holds certificates ({} and more); pass --force to replace them",
            dir.display(),
            existing[0].display()
        ));
    }
    for path in existing {
        fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Today as (year, month, day), from the system clock (UTC).
fn today() -> (i32, u8, u8) {
    let date = time::OffsetDateTime::now_utc().date();
    (date.year(), u8::from(date.month()), date.day())
}

/// From the start of today to the same day `years` later (the 28th at most, so every month has it).
fn validity(params: &mut CertificateParams, (year, month, day): (i32, u8, u8), years: i32) {
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + years, month, day.min(28));
}

fn ca_params(today: (i32, u8, u8)) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Aether development CA");
    name.push(DnType::OrganizationName, "Aether (development only)");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, today, CA_YEARS);
    params
}

fn leaf(
    common_name: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
    today: (i32, u8, u8),
    ca: &Certificate,
    ca_key: &KeyPair,
) -> Result<(Certificate, KeyPair), String> {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(|e| format!("{common_name}: {e}"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, today, LEAF_YEARS);
    let key = KeyPair::generate().map_err(|e| format!("{common_name} key: {e}"))?;
    let cert = params.signed_by(&key, ca, ca_key).map_err(|e| format!("{common_name} certificate: {e}"))?;
    Ok((cert, key))
}

/// Writes `{name}.pem` (0644) and `{name}.key` (0600), each by an exclusive create.
fn write_pair(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair) -> Result<Vec<PathBuf>, String> {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(vec![cert_path, key_path])
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The umask may have cleared bits of `mode`; never more than asked for, and keys never beyond 0600.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

fn usage(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "
Development certificates only: the CA key is in {d}/ca.key.

Management and app ports over TLS (in each node's config):
  [tls]
  cert_file = \"{d}/http.pem\"
  key_file = \"{d}/http.key\"

Mutual TLS on the cluster port (node-1 shown; each node names its own files):
  [cluster_tls]
  ca_file = \"{d}/ca.pem\"
  cert_file = \"{d}/node-1.pem\"
  key_file = \"{d}/node-1.key\"

Clients trust the CA:
  curl --cacert {d}/ca.pem https://127.0.0.1:8080/health/ready"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-certs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn arguments_are_checked() {
        assert!(parse_args(&["--nodes".into(), "0".into()]).is_err());
        assert!(parse_args(&["--nodes".into(), "65".into()]).is_err());
        assert!(parse_args(&["--nodes".into()]).is_err());
        assert!(parse_args(&["--colour".into()]).is_err());
        let options = parse_args(&["--dir".into(), "/x".into(), "--nodes".into(), "5".into()]).unwrap();
        assert_eq!((options.dir, options.nodes, options.force), (PathBuf::from("/x"), 5, false));
    }

    #[test]
    fn a_set_is_written_with_private_keys_and_never_silently_replaced() {
        let dir = temp_dir("set");
        let written = make_certs(&dir, 2, false).unwrap();
        assert_eq!(written.len(), 8, "{written:?}");
        assert_eq!(mode(&dir), 0o700);
        for name in ["ca", "http", "node-1", "node-2"] {
            let key = dir.join(format!("{name}.key"));
            assert_eq!(mode(&key), 0o600, "{name}.key");
            assert!(fs::read_to_string(&key).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
            let cert = fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        let ca_before = fs::read(dir.join("ca.pem")).unwrap();
        let err = make_certs(&dir, 2, false).unwrap_err();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before, "untouched without --force");
        make_certs(&dir, 1, true).unwrap();
        assert_ne!(fs::read(dir.join("ca.pem")).unwrap(), ca_before, "replaced with --force");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Checks the chain, the usages and the names with OpenSSL when the machine has it.
    #[test]
    fn certificates_chain_to_the_ca_with_the_right_usages_and_names() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("skipped: openssl is not installed");
            return;
        }
        let dir = temp_dir("openssl");
        make_certs(&dir, 2, false).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for (name, purpose) in [("node-1", "sslserver"), ("node-2", "sslclient"), ("http", "sslserver")] {
            let verified = openssl(&["verify", "-CAfile", "ca.pem", "-purpose", purpose, &format!("{name}.pem")]);
            assert!(verified.contains(": OK"), "{name}: {verified}");
        }
        let node = openssl(&["x509", "-in", "node-2.pem", "-noout", "-ext", "subjectAltName,extendedKeyUsage"]);
        for expected in ["DNS:localhost", "IP Address:127.0.0.1", "DNS:node-2", "TLS Web Server Authentication"] {
            assert!(node.contains(expected), "{expected} in {node}");
        }
        assert!(node.contains("TLS Web Client Authentication"), "{node}");
        let http = openssl(&["x509", "-in", "http.pem", "-noout", "-ext", "extendedKeyUsage"]);
        assert!(!http.contains("Client Authentication"), "{http}");
        let ca = openssl(&["x509", "-in", "ca.pem", "-noout", "-ext", "basicConstraints"]);
        assert!(ca.contains("CA:TRUE"), "{ca}");
        let _ = fs::remove_dir_all(&dir);
    }
}
