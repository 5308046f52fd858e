//! Admission of unauthenticated connections over real loopback sockets: the per-address limit, the
//! handshake budget with room for configured peers' addresses, the handshake timeout, and the refusal
//! counter. Strangers connect from other 127.0.0.x source addresses (bound before connecting).

use net::{Ctx, Frame, Handler, HandshakeStats, NetConfig, PeerSpec, Running};
use rustix::net::{AddressFamily, SocketType};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Quiet;

impl Handler for Quiet {
    type Command = mpsc::Sender<HandshakeStats>;
    fn on_frame(&mut self, _: &mut Ctx<'_>, _: usize, _: Frame) {}
    fn on_command(&mut self, ctx: &mut Ctx<'_>, reply: Self::Command) {
        let _ = reply.send(ctx.handshake_stats());
    }
}

fn stats(node: &Running<Quiet>) -> HandshakeStats {
    let (tx, rx) = mpsc::channel();
    node.handle.command(tx).unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A node listening on 127.0.0.1 whose one configured peer sits on 127.0.0.1 too (nobody listens there,
/// so its dials fail quietly): 127.0.0.1 is a peer's address, every other 127.0.0.x a stranger's.
fn node(per_ip: usize, budget: usize, handshake_timeout: Duration) -> (Running<Quiet>, SocketAddr) {
    let ports: Vec<u16> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let me = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let peer = PeerSpec { id: "node-2".into(), addr: SocketAddr::from(([127, 0, 0, 1], ports[1])) };
    let mut config = NetConfig::new("node-1", "demo", b"secret", me, vec![peer]);
    config.handshaking_per_ip_max = per_ip;
    config.handshaking_max = budget;
    config.handshake_timeout = handshake_timeout;
    config.dial_backoff_min = Duration::from_millis(500);
    let running = net::spawn(config, Quiet).unwrap();
    (running, me)
}

/// A TCP connection to `to` from source address `from` (any port).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::V4(SocketAddrV4::new(from, 0))).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// Whether the node closed `s` (read sees EOF or a reset) within `within`; `false` if it stays open.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // the node's Hello
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_stranger_holds_at_most_the_per_address_limit_and_the_rest_is_counted() {
    let (node, addr) = node(4, 64, Duration::from_secs(10));
    let stranger = Ipv4Addr::new(127, 0, 0, 3);
    let mut first: Vec<TcpStream> = (0..4).map(|_| connect_from(stranger, addr)).collect();
    wait_until("four pending", Duration::from_secs(5), || stats(&node).pending == 4);
    let mut extra: Vec<TcpStream> = (0..6).map(|_| connect_from(stranger, addr)).collect();
    for s in &mut extra {
        assert!(closed_within(s, Duration::from_secs(5)), "a connection over the limit stayed open");
    }
    for s in &mut first {
        assert!(!closed_within(s, Duration::from_millis(100)), "an admitted connection was closed");
    }
    let after = stats(&node);
    assert_eq!(after.pending, 4);
    assert_eq!(after.refused, 6);
    // Another address is not affected by the first one's limit.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 4), addr);
    assert!(!closed_within(&mut other, Duration::from_millis(200)));
    assert_eq!(stats(&node).pending, 5);
}

#[test]
fn a_full_budget_refuses_strangers_but_admits_a_peer_address_by_displacing_a_stranger() {
    let (node, addr) = node(4, 8, Duration::from_secs(10));
    let mut strangers: Vec<TcpStream> = Vec::new();
    for host in [3, 4] {
        for _ in 0..4 {
            strangers.push(connect_from(Ipv4Addr::new(127, 0, 0, host), addr));
        }
    }
    wait_until("budget full", Duration::from_secs(5), || stats(&node).pending == 8);
    let mut refused = connect_from(Ipv4Addr::new(127, 0, 0, 5), addr);
    assert!(closed_within(&mut refused, Duration::from_secs(5)), "a stranger got in past a full budget");
    // The peer's address gets in: its connection stays open and one stranger's is closed for it.
    let mut from_peer_address = connect_from(Ipv4Addr::new(127, 0, 0, 1), addr);
    assert!(!closed_within(&mut from_peer_address, Duration::from_millis(300)), "the peer's address was refused");
    let displaced =
        strangers.iter_mut().filter_map(|s| closed_within(s, Duration::from_millis(100)).then_some(())).count();
    assert_eq!(displaced, 1);
    assert_eq!(stats(&node).pending, 8);
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout_and_frees_its_slot() {
    let (node, addr) = node(1, 64, Duration::from_millis(300));
    let stranger = Ipv4Addr::new(127, 0, 0, 3);
    let opened = Instant::now();
    let mut silent = connect_from(stranger, addr);
    assert!(closed_within(&mut silent, Duration::from_secs(5)), "a silent connection stayed open");
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "closed after {took:?}");
    wait_until("slot freed", Duration::from_secs(2), || stats(&node).pending == 0);
    let mut next = connect_from(stranger, addr);
    assert!(!closed_within(&mut next, Duration::from_millis(100)), "the freed slot was not reusable");
    assert!(stats(&node).refused >= 1);
}

/// The reason in the Reject frame the node sends on `s` (after its own Hello).
fn reject_reason(s: &mut TcpStream) -> String {
    let decoder = wire::FrameDecoder::new(1 << 20);
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            if frame.kind == wire::FrameKind::Reject {
                return wire::decode::<wire::Reject>(&frame.payload).unwrap().reason;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed without a Reject");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn names_a_stranger_sends_are_quoted_escaped_and_clipped() {
    let (node, addr) = node(4, 16, Duration::from_secs(2));
    for (cluster, node_id) in [
        ("demo\n2026-01-01T00:00:00Z INFO forged line".to_string(), "node-2".to_string()),
        ("demo".to_string(), format!("evil\r\nINFO forged {}", "x".repeat(10_000))),
    ] {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr);
        let hello =
            wire::Hello { cluster, node_id, protocol_version: wire::PROTOCOL_VERSION, features: 0, nonce: [7; 32] };
        let mut out = bytes::BytesMut::new();
        wire::encode_frame(wire::FrameKind::Hello, &wire::encode(&hello), &mut out);
        std::io::Write::write_all(&mut s, &out).unwrap();
        let reason = reject_reason(&mut s);
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        assert!(reason.len() < 300, "{} bytes: {reason:?}", reason.len());
        assert!(reason.contains("\\n") || reason.contains("\\r"), "{reason:?}");
    }
    drop(node);
}
