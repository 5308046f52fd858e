//! The transport over real loopback sockets, several event loops in one process.

use net::{Ctx, Direction, FaultAction, FaultRule, Frame, FrameKind, Handler, NetConfig, PeerId, PeerSpec, Running};
use parking_lot::Mutex;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    frames: Vec<(PeerId, Vec<u8>)>,
    ups: usize,
    downs: usize,
}

struct Recorder {
    seen: Arc<Mutex<Seen>>,
}

enum Cmd {
    Send(PeerId, Vec<u8>),
    SendMany(PeerId, u32),
    Connections(mpsc::Sender<(Vec<bool>, usize)>),
    Traffic(mpsc::Sender<(Vec<net::Traffic>, u64)>),
}

impl Handler for Recorder {
    type Command = Cmd;
    fn on_peer_up(&mut self, _: &mut Ctx<'_>, _: PeerId) {
        self.seen.lock().ups += 1;
    }
    fn on_peer_down(&mut self, _: &mut Ctx<'_>, _: PeerId) {
        self.seen.lock().downs += 1;
    }
    fn on_frame(&mut self, _: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        self.seen.lock().frames.push((peer, frame.payload.to_vec()));
    }
    fn on_command(&mut self, ctx: &mut Ctx<'_>, cmd: Cmd) {
        match cmd {
            Cmd::Send(peer, bytes) => ctx.send(peer, FrameKind::User, &bytes).unwrap(),
            Cmd::SendMany(peer, n) => {
                for i in 0..n {
                    ctx.send(peer, FrameKind::User, &i.to_be_bytes()).unwrap();
                }
            }
            Cmd::Traffic(reply) => {
                let traffic = ctx.peers().iter().map(|p| p.traffic).collect();
                let _ = reply.send((traffic, ctx.take_loop_lag().count()));
            }
            Cmd::Connections(reply) => {
                let connected = ctx.peers().iter().map(|p| p.connected).collect();
                let _ = reply.send((connected, ctx.open_connections()));
            }
        }
    }
}

struct Node {
    running: Option<Running<Recorder>>,
    seen: Arc<Mutex<Seen>>,
}

impl Node {
    fn connections(&self) -> (Vec<bool>, usize) {
        let (tx, rx) = mpsc::channel();
        self.running.as_ref().unwrap().handle.command(Cmd::Connections(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
    fn traffic(&self) -> (Vec<net::Traffic>, u64) {
        let (tx, rx) = mpsc::channel();
        self.running.as_ref().unwrap().handle.command(Cmd::Traffic(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
    fn connected_count(&self) -> usize {
        self.connections().0.iter().filter(|c| **c).count()
    }
    fn send(&self, peer: PeerId, bytes: &[u8]) {
        self.running.as_ref().unwrap().handle.command(Cmd::Send(peer, bytes.to_vec())).unwrap();
    }
    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.handle.stop().unwrap();
            running.thread.join().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn config(me: usize, addrs: &[SocketAddr], cluster: &str, secret: &[u8]) -> NetConfig {
    let peers = (0..addrs.len())
        .filter(|&i| i != me)
        .map(|i| PeerSpec { id: format!("node-{}", i + 1), addr: addrs[i] })
        .collect();
    let mut c = NetConfig::new(&format!("node-{}", me + 1), cluster, secret, addrs[me], peers);
    c.dial_backoff_min = Duration::from_millis(20);
    c.dial_backoff_max = Duration::from_millis(200);
    c
}

fn start(config: NetConfig) -> Node {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let running = net::spawn(config, Recorder { seen: seen.clone() }).unwrap();
    Node { running: Some(running), seen }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cluster(n: usize) -> Vec<Node> {
    let addrs = free_addrs(n);
    (0..n).map(|i| start(config(i, &addrs, "demo", b"secret"))).collect()
}

#[test]
fn three_nodes_connect_to_each_other_once() {
    let nodes = cluster(3);
    wait_until("full mesh", Duration::from_secs(10), || nodes.iter().all(|n| n.connected_count() == 2));
    // Both sides dial at start; after the dust settles each node holds exactly one socket per peer.
    wait_until("duplicates closed", Duration::from_secs(5), || nodes.iter().all(|n| n.connections().1 == 2));
    std::thread::sleep(Duration::from_millis(300));
    for node in &nodes {
        assert_eq!(node.connections(), (vec![true, true], 2));
    }
}

#[test]
fn frames_and_bytes_are_counted_per_peer_and_the_loop_lag_is_sampled() {
    let nodes = cluster(2);
    wait_until("connected", Duration::from_secs(10), || nodes.iter().all(|n| n.connected_count() == 1));
    let (before, _) = nodes[1].traffic();
    for _ in 0..10 {
        nodes[0].send(0, &[7u8; 100]);
    }
    wait_until("delivered", Duration::from_secs(5), || nodes[1].seen.lock().frames.len() >= 10);
    let frame_bytes = (wire::HEADER_LEN + 100) as u64;
    let (sent, lag_samples) = nodes[0].traffic();
    assert!(sent[0].frames_out >= 10 && sent[0].bytes_out >= 10 * frame_bytes, "{sent:?}");
    assert!(lag_samples > 0, "every turn of the loop records its lag");
    let (received, _) = nodes[1].traffic();
    assert!(received[0].frames_in >= before[0].frames_in + 10, "{received:?}");
    assert!(received[0].bytes_in >= before[0].bytes_in + 10 * frame_bytes, "{received:?}");
    let (_, taken_again) = nodes[0].traffic();
    assert!(taken_again < lag_samples, "taking the lag starts a new window: {taken_again} after {lag_samples}");
}

#[test]
fn wrong_secret_or_cluster_is_refused() {
    let addrs = free_addrs(4);
    let good = start(config(0, &addrs, "demo", b"secret"));
    let bad_secret = start(config(1, &addrs, "demo", b"not the secret"));
    let bad_cluster = start(config(2, &addrs, "other", b"secret"));
    let also_good = start(config(3, &addrs, "demo", b"secret"));
    // The good pair connects, which shows every node is dialing; the strangers never get in.
    wait_until("good pair", Duration::from_secs(10), || {
        good.connected_count() == 1 && also_good.connected_count() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(good.connections().0, vec![false, false, true]);
    assert_eq!(bad_secret.connected_count(), 0);
    assert_eq!(bad_cluster.connected_count(), 0);
}

#[test]
fn killed_peer_is_redialed_after_restart() {
    let addrs = free_addrs(2);
    let a = start(config(0, &addrs, "demo", b"secret"));
    let mut b = start(config(1, &addrs, "demo", b"secret"));
    wait_until("connect", Duration::from_secs(5), || a.connected_count() == 1);
    b.stop();
    wait_until("disconnect seen", Duration::from_secs(5), || a.connected_count() == 0);
    let b2 = start(config(1, &addrs, "demo", b"secret"));
    wait_until("reconnect", Duration::from_secs(5), || a.connected_count() == 1 && b2.connected_count() == 1);
    a.send(0, b"after restart");
    wait_until("frame after restart", Duration::from_secs(5), || {
        b2.seen.lock().frames.iter().any(|(_, f)| f == b"after restart")
    });
}

#[test]
fn burst_of_100k_frames_arrives_complete_and_in_order() {
    let nodes = cluster(2);
    // Both sides dial at start; wait until the duplicate is gone so no queued frame dies with it.
    wait_until("one connection", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.connected_count() == 1 && n.connections().1 == 1)
    });
    std::thread::sleep(Duration::from_millis(200));
    let total = 100_000u32;
    nodes[0].running.as_ref().unwrap().handle.command(Cmd::SendMany(0, total)).unwrap();
    wait_until("all frames", Duration::from_secs(30), || nodes[1].seen.lock().frames.len() >= total as usize);
    let seen = nodes[1].seen.lock();
    assert_eq!(seen.frames.len(), total as usize);
    for (i, (peer, bytes)) in seen.frames.iter().enumerate() {
        assert_eq!(*peer, 0);
        assert_eq!(bytes[..], (i as u32).to_be_bytes());
    }
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until the node closes the socket; fails if it stays open.
fn expect_closed(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection stayed open: {e}"),
        }
    }
}

#[test]
fn garbage_and_oversized_frames_disconnect_the_sender_only() {
    let addrs = free_addrs(2);
    let mut cfg = config(0, &addrs, "demo", b"secret");
    cfg.frame_len_max = 1024;
    let a = start(cfg);
    let mut cfg_b = config(1, &addrs, "demo", b"secret");
    cfg_b.frame_len_max = 1024;
    let b = start(cfg_b);
    wait_until("connect", Duration::from_secs(5), || a.connected_count() == 1);

    let mut garbage = raw_connect(addrs[0]);
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_closed(garbage);

    let mut oversized = raw_connect(addrs[0]);
    let mut header = vec![0xAE, 0x7A, 1, 200];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    oversized.write_all(&header).unwrap();
    expect_closed(oversized);

    let mut bad_crc = raw_connect(addrs[0]);
    let mut frame = vec![0xAE, 0x7A, 1, 1, 0, 0, 0, 3, 0, 0, 0, 0];
    frame.extend_from_slice(b"abc");
    bad_crc.write_all(&frame).unwrap();
    expect_closed(bad_crc);

    // The node still serves its real peer.
    a.send(0, b"still alive");
    wait_until("frame", Duration::from_secs(5), || b.seen.lock().frames.iter().any(|(_, f)| f == b"still alive"));
    assert_eq!(a.connected_count(), 1);
}

#[test]
fn fault_injection_drops_and_heals() {
    let nodes = cluster(2);
    wait_until("connect", Duration::from_secs(5), || nodes[0].connected_count() == 1);
    let drop_all =
        vec![FaultRule { peer: Some("node-2".into()), direction: Direction::Outbound, action: FaultAction::Drop }];
    nodes[0].running.as_ref().unwrap().handle.set_faults(drop_all).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    nodes[0].send(0, b"dropped");
    std::thread::sleep(Duration::from_millis(300));
    assert!(nodes[1].seen.lock().frames.is_empty(), "a dropped frame arrived");

    nodes[0].running.as_ref().unwrap().handle.set_faults(vec![]).unwrap();
    wait_until("reconnect after heal", Duration::from_secs(10), || nodes[0].connected_count() == 1);
    nodes[0].send(0, b"healed");
    wait_until("frame after heal", Duration::from_secs(5), || {
        nodes[1].seen.lock().frames.iter().any(|(_, f)| f == b"healed")
    });
    assert!(!nodes[1].seen.lock().frames.iter().any(|(_, f)| f == b"dropped"));
}

#[test]
fn partition_closes_connections_until_healed() {
    let nodes = cluster(2);
    wait_until("connect", Duration::from_secs(5), || nodes[0].connected_count() == 1);
    let cut = vec![FaultRule { peer: None, direction: Direction::Both, action: FaultAction::Drop }];
    nodes[0].running.as_ref().unwrap().handle.set_faults(cut).unwrap();
    // Keepalives stop crossing, so both sides give the connection up after the idle timeout.
    wait_until("both sides see the cut", Duration::from_secs(10), || {
        nodes[0].connected_count() == 0 && nodes[1].connected_count() == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(nodes[1].connected_count(), 0, "a connection came up through the partition");
    nodes[0].running.as_ref().unwrap().handle.set_faults(vec![]).unwrap();
    wait_until("heal", Duration::from_secs(10), || nodes.iter().all(|n| n.connected_count() == 1));
}

#[test]
fn delay_rule_holds_frames_back_in_order() {
    let nodes = cluster(2);
    wait_until("connect", Duration::from_secs(5), || nodes[0].connected_count() == 1);
    let delay = FaultAction::Delay(Duration::from_millis(300));
    let rules = vec![FaultRule { peer: None, direction: Direction::Outbound, action: delay }];
    nodes[0].running.as_ref().unwrap().handle.set_faults(rules).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let sent_at = Instant::now();
    nodes[0].send(0, b"one");
    nodes[0].send(0, b"two");
    wait_until("delayed frames", Duration::from_secs(5), || nodes[1].seen.lock().frames.len() == 2);
    assert!(sent_at.elapsed() >= Duration::from_millis(280));
    let frames: Vec<_> = nodes[1].seen.lock().frames.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn messages_over_the_frame_limit_arrive_whole_in_fragments() {
    let addrs = free_addrs(2);
    let mut configs: Vec<NetConfig> = (0..2).map(|i| config(i, &addrs, "demo", b"secret")).collect();
    for c in &mut configs {
        c.frame_len_max = 64 * 1024;
        c.fragment_bytes = 16 * 1024;
    }
    let mut nodes = configs.into_iter().map(start);
    let (a, b) = (nodes.next().unwrap(), nodes.next().unwrap());
    wait_until("connect", Duration::from_secs(5), || a.connected_count() == 1 && a.connections().1 == 1);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    a.send(0, b"small before");
    a.send(0, &big);
    a.send(0, b"small after");
    wait_until("all three", Duration::from_secs(10), || b.seen.lock().frames.len() >= 3);
    let frames: Vec<Vec<u8>> = b.seen.lock().frames.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.contains(&big), "the large message arrived whole");
    assert_eq!(frames.iter().filter(|f| f.len() < 100).count(), 2);
}
