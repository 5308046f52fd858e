//! Mutual TLS on the cluster port: the rustls client and server configurations built from the cluster CA
//! and this node's certificate, the sessions attached to new connections, and the check that a peer's
//! certificate names the node id its Hello claims.
//!
//! The node's owner loads the PEM files and hands DER here; this crate reads no files.
//!
//! Invariants:
//! - Both directions run TLS 1.3 with the `ring` provider; both sides present a certificate, and each
//!   verifies the other's chain to the cluster CA (an unknown issuer fails the TLS handshake).
//! - A node's certificate carries its node id as a DNS name: a dialer verifies the server for the peer id
//!   it dialed, and every side checks that the certificate is valid for the node id of the peer's Hello,
//!   so one node's certificate cannot speak for another.
//! - The cluster secret's HMAC handshake still runs inside the session: TLS adds encryption and certificate
//!   identity, the secret keeps its meaning.
//! - Replacing the configuration affects only connections opened afterwards.

use crate::conn::Conn;
use crate::transport::Transport;
use crate::PeerId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::sync::Arc;

/// TLS settings for the cluster port: both sides' rustls configurations, cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { .. }")
    }
}

/// Largest plaintext a session buffers before its handshake completes or while the socket is full.
const SESSION_BUFFER_BYTES: usize = 256 * 1024;

impl ClusterTls {
    /// Builds both configurations from the cluster CA certificates, this node's chain (its certificate
    /// first) and its private key. Errors name what is wrong (no CA, a key not matching the certificate...).
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ClusterTls, String> {
        if chain.is_empty() {
            return Err("no certificate in the certificate file".into());
        }
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate in the CA file".into());
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3 unavailable: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("certificate and key do not go together: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3 unavailable: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("certificate and key do not go together: {e}"))?;
        Ok(ClusterTls { server: Arc::new(server), client: Arc::new(client) })
    }

    fn server_session(&self) -> Result<rustls::Connection, String> {
        let mut session = ServerConnection::new(self.server.clone()).map_err(|e| format!("TLS setup failed: {e}"))?;
        session.set_buffer_limit(Some(SESSION_BUFFER_BYTES));
        Ok(session.into())
    }

    fn client_session(&self, peer_id: &str, peer_ip: std::net::IpAddr) -> Result<rustls::Connection, String> {
        let name = server_name(peer_id, peer_ip);
        let mut session =
            ClientConnection::new(self.client.clone(), name).map_err(|e| format!("TLS setup failed: {e}"))?;
        session.set_buffer_limit(Some(SESSION_BUFFER_BYTES));
        Ok(session.into())
    }
}

/// The name a peer's certificate must carry: its node id as a DNS name, or its address when the id is not
/// a valid DNS name.
fn server_name(peer_id: &str, peer_ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(peer_id.to_string()).unwrap_or_else(|_| ServerName::IpAddress(peer_ip.into()))
}

/// Whether `cert` is valid for node `node_id` (see [`server_name`]).
pub fn certificate_names(cert: &CertificateDer<'_>, node_id: &str, addr: std::net::IpAddr) -> Result<(), String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable peer certificate: {e}"))?;
    parsed
        .verify_is_valid_for_subject_name(&server_name(node_id, addr))
        .map_err(|_| format!("the peer's certificate is not issued for node id '{node_id}'"))
}

/// A TLS failure in words an operator can act on, with rustls' own words after it.
pub fn describe_error(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match error {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the peer's certificate is not signed by this cluster's CA ({error})")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the peer's certificate is not issued for the node dialed ({error})")
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => {
            format!("the peer's certificate is outside its validity period ({error})")
        }
        E::NoCertificatesPresented => format!("the peer presented no certificate ({error})"),
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::DecryptError
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::UnsupportedCertificate,
        ) => format!("the peer refused this node's certificate ({error})"),
        E::InvalidMessage(_) => format!("the peer does not speak TLS ({error})"),
        _ => error.to_string(),
    }
}

impl Transport {
    /// Gives an accepted connection its server-side session when TLS is on.
    pub(crate) fn attach_server_tls(&self, conn: &mut Conn) -> Result<(), String> {
        if let Some(tls) = &self.config.tls {
            conn.tls = Some(Box::new(tls.server_session()?));
        }
        Ok(())
    }

    /// Gives a dialed connection its client-side session when TLS is on.
    pub(crate) fn attach_client_tls(&self, conn: &mut Conn, pid: PeerId) -> Result<(), String> {
        if let Some(tls) = &self.config.tls {
            let spec = &self.peers[pid].spec;
            conn.tls = Some(Box::new(tls.client_session(&spec.id, spec.addr.ip())?));
        }
        Ok(())
    }

    /// New connections use `tls` from now on; open ones keep their sessions.
    pub fn set_tls(&mut self, tls: ClusterTls) {
        log::info!("cluster TLS configuration replaced; new connections use it");
        self.config.tls = Some(tls);
    }
}
