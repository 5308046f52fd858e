//! Mutual TLS between transports over loopback, with certificates made here by rcgen: nodes of one CA
//! connect and exchange frames; a node whose certificate is from another CA, or names another node id,
//! is refused; a plaintext node cannot talk to a TLS node.

use net::{ClusterTls, Ctx, Frame, FrameKind, Handler, HandshakeStats, NetConfig, PeerId, PeerSpec, Running};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// TLS settings for node `name` with a certificate this CA signed.
    fn node(&self, name: &str) -> ClusterTls {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        ClusterTls::new(vec![self.cert.der().clone()], vec![cert.der().clone()], key).unwrap()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

#[derive(Default)]
struct Seen {
    frames: Vec<Vec<u8>>,
}

struct Recorder(Arc<Mutex<Seen>>);

enum Cmd {
    Send(PeerId, Vec<u8>),
    State(mpsc::Sender<(Vec<bool>, HandshakeStats)>),
}

impl Handler for Recorder {
    type Command = Cmd;
    fn on_frame(&mut self, _: &mut Ctx<'_>, _: PeerId, frame: Frame) {
        self.0.lock().frames.push(frame.payload.to_vec());
    }
    fn on_command(&mut self, ctx: &mut Ctx<'_>, cmd: Cmd) {
        match cmd {
            Cmd::Send(peer, bytes) => {
                let _ = ctx.send(peer, FrameKind::User, &bytes);
            }
            Cmd::State(reply) => {
                let _ = reply.send((ctx.peers().iter().map(|p| p.connected).collect(), ctx.handshake_stats()));
            }
        }
    }
}

struct Node {
    running: Running<Recorder>,
    seen: Arc<Mutex<Seen>>,
}

impl Node {
    fn state(&self) -> (Vec<bool>, HandshakeStats) {
        let (tx, rx) = mpsc::channel();
        self.running.handle.command(Cmd::State(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
    fn connected(&self) -> Vec<bool> {
        self.state().0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.running.handle.stop();
    }
}

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn start(me: usize, addrs: &[SocketAddr], tls: Option<ClusterTls>) -> Node {
    let peers = (0..addrs.len())
        .filter(|&i| i != me)
        .map(|i| PeerSpec { id: format!("node-{}", i + 1), addr: addrs[i] })
        .collect();
    let mut config = NetConfig::new(&format!("node-{}", me + 1), "demo", b"secret", addrs[me], peers);
    config.dial_backoff_min = Duration::from_millis(20);
    config.dial_backoff_max = Duration::from_millis(200);
    config.tls = tls;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let running = net::spawn(config, Recorder(seen.clone())).unwrap();
    Node { running, seen }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn nodes_of_one_ca_connect_over_tls_and_exchange_frames() {
    let ca = Ca::new("Aether cluster CA");
    let addrs = free_addrs(2);
    let a = start(0, &addrs, Some(ca.node("node-1")));
    let b = start(1, &addrs, Some(ca.node("node-2")));
    wait_until("TLS connection", Duration::from_secs(10), || a.connected() == [true] && b.connected() == [true]);
    // Large enough to span many TLS records and several fragments.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    a.running.handle.command(Cmd::Send(0, b"over tls".to_vec())).unwrap();
    a.running.handle.command(Cmd::Send(0, big.clone())).unwrap();
    wait_until("frames", Duration::from_secs(10), || b.seen.lock().frames.len() >= 2);
    let frames = b.seen.lock().frames.clone();
    assert_eq!(frames[0], b"over tls");
    assert!(frames[1] == big, "the large message arrived altered");
    assert_eq!(a.state().1.pending, 0);
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("Aether cluster CA");
    let stranger_ca = Ca::new("Another CA");
    let addrs = free_addrs(3);
    let a = start(0, &addrs, Some(ca.node("node-1")));
    let b = start(1, &addrs, Some(ca.node("node-2")));
    let c = start(2, &addrs, Some(stranger_ca.node("node-3")));
    wait_until("the good pair", Duration::from_secs(10), || a.connected()[0] && b.connected()[0]);
    // node-3 dials both and is dialed by both: every attempt fails in the TLS handshake.
    wait_until("refusals counted", Duration::from_secs(10), || a.state().1.refused >= 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.connected(), [true, false]);
    assert_eq!(b.connected(), [true, false]);
    assert_eq!(c.connected(), [false, false]);
    assert_ne!(stranger_ca.der(), ca.der());
}

#[test]
fn a_certificate_naming_another_node_is_refused() {
    let ca = Ca::new("Aether cluster CA");
    let addrs = free_addrs(3);
    let a = start(0, &addrs, Some(ca.node("node-1")));
    let b = start(1, &addrs, Some(ca.node("node-2")));
    // node-3 holds a valid certificate of the cluster CA, but one issued for node-2.
    let c = start(2, &addrs, Some(ca.node("node-2")));
    wait_until("the good pair", Duration::from_secs(10), || a.connected()[0] && b.connected()[0]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.connected(), [true, false]);
    assert_eq!(c.connected(), [false, false]);
    assert!(a.state().1.refused >= 1);
}

#[test]
fn a_plaintext_node_cannot_talk_to_a_tls_node() {
    let ca = Ca::new("Aether cluster CA");
    let addrs = free_addrs(2);
    let a = start(0, &addrs, Some(ca.node("node-1")));
    let b = start(1, &addrs, None);
    wait_until("refusals counted", Duration::from_secs(10), || a.state().1.refused >= 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.connected(), [false]);
    assert_eq!(b.connected(), [false]);
}
