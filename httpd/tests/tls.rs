//! TLS on a port: a round trip with a generated certificate, a reload that swaps it, and a failed
//! reload that keeps it.

mod common;

use common::*;
use httpd::TlsFiles;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A self-signed certificate for `localhost`: (certificate DER, certificate PEM, key PEM).
fn certificate() -> (Vec<u8>, String, String) {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (cert.der().to_vec(), cert.pem(), key_pair.serialize_pem())
}

fn write_files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let files = TlsFiles { cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") };
    std::fs::write(&files.cert_file, cert).unwrap();
    std::fs::write(&files.key_file, key).unwrap();
    files
}

/// One request over TLS trusting only `trusted`; the raw answer, or the TLS error.
fn https(addr: SocketAddr, trusted: &[u8], raw: &[u8]) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(trusted.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let session = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(session, connect(addr));
    stream.write_all(raw).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("httpd-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tls_round_trip_and_reload() {
    let dir = temp_dir("reload");
    let (first_der, first_pem, first_key) = certificate();
    let files = write_files(&dir, &first_pem, &first_key);
    let mut config = config();
    config.tls = Some(files);
    let (server, _) = start(config);
    let addr = server.addr();
    let request = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret";
    let raw = https(addr, &first_der, request).unwrap();
    assert_eq!((status(&raw), body(&raw)), (200, "secret"));
    // Plain HTTP on a TLS port gets nowhere near a handler.
    let plain = exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");

    let (second_der, second_pem, second_key) = certificate();
    write_files(&dir, &second_pem, &second_key);
    server.reload_tls().unwrap();
    let raw = https(addr, &second_der, request).unwrap();
    assert_eq!(status(&raw), 200);
    assert!(https(addr, &first_der, request).is_err(), "the old certificate is gone");

    // A broken key file: the reload fails and the second certificate stays.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    assert!(server.reload_tls().is_err());
    assert_eq!(status(&https(addr, &second_der, request).unwrap()), 200);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_certificate_fails_the_start() {
    let dir = temp_dir("bad");
    let files = write_files(&dir, "garbage", "garbage");
    let mut config = config();
    config.tls = Some(files);
    let err = httpd::Server::start(config, Arc::new(TestHandler::default())).err().unwrap();
    assert!(err.contains("TLS"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
