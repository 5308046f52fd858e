//! Peers added and retired while the loops run, over real loopback sockets.

use net::{Ctx, Frame, FrameKind, Handler, NetConfig, PeerId, PeerSpec, Running};
use parking_lot::Mutex;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    frames: Vec<(String, Vec<u8>)>,
}

struct Recorder {
    seen: Arc<Mutex<Seen>>,
}

enum Cmd {
    Add(PeerSpec, mpsc::Sender<Option<PeerId>>),
    Retire(String),
    SendTo(String, Vec<u8>, mpsc::Sender<Result<(), net::SendError>>),
    Connected(mpsc::Sender<Vec<(String, bool)>>),
}

impl Handler for Recorder {
    type Command = Cmd;
    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        let name = ctx.peer_id(peer).unwrap_or("?").to_string();
        self.seen.lock().frames.push((name, frame.payload.to_vec()));
    }
    fn on_command(&mut self, ctx: &mut Ctx<'_>, cmd: Cmd) {
        match cmd {
            Cmd::Add(spec, reply) => {
                let _ = reply.send(ctx.add_peer(spec));
            }
            Cmd::Retire(name) => {
                if let Some(pid) = ctx.peer_named(&name) {
                    ctx.retire_peer(pid);
                }
            }
            Cmd::SendTo(name, bytes, reply) => {
                let sent = match ctx.peer_named(&name) {
                    Some(pid) => ctx.send(pid, FrameKind::User, &bytes),
                    None => Err(net::SendError::UnknownPeer),
                };
                let _ = reply.send(sent);
            }
            Cmd::Connected(reply) => {
                let _ = reply.send(ctx.peers().into_iter().map(|p| (p.id, p.connected)).collect());
            }
        }
    }
}

struct Node {
    running: Option<Running<Recorder>>,
    seen: Arc<Mutex<Seen>>,
}

impl Node {
    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Cmd) -> T {
        let (tx, rx) = mpsc::channel();
        self.running.as_ref().unwrap().handle.command(make(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
    fn connected(&self) -> Vec<(String, bool)> {
        self.ask(Cmd::Connected)
    }
    fn connected_to(&self, name: &str) -> bool {
        self.connected().iter().any(|(n, c)| n == name && *c)
    }
    fn add(&self, name: &str, addr: SocketAddr) -> Option<PeerId> {
        self.ask(|tx| Cmd::Add(PeerSpec { id: name.into(), addr }, tx))
    }
    fn retire(&self, name: &str) {
        self.running.as_ref().unwrap().handle.command(Cmd::Retire(name.into())).unwrap();
    }
    fn send_to(&self, name: &str, bytes: &[u8]) -> Result<(), net::SendError> {
        self.ask(|tx| Cmd::SendTo(name.into(), bytes.to_vec(), tx))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.handle.stop().unwrap();
            running.thread.join().unwrap();
        }
    }
}

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Node `me` of `addrs`, knowing only the peers in `knows`.
fn start(me: usize, addrs: &[SocketAddr], knows: &[usize]) -> Node {
    let peers = knows.iter().map(|&i| PeerSpec { id: format!("node-{}", i + 1), addr: addrs[i] }).collect();
    let mut config = NetConfig::new(&format!("node-{}", me + 1), "demo", b"secret", addrs[me], peers);
    config.dial_backoff_min = Duration::from_millis(20);
    config.dial_backoff_max = Duration::from_millis(200);
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

#[test]
fn a_peer_added_at_run_time_connects_and_a_retired_one_is_refused_until_added_again() {
    let addrs = free_addrs(3);
    let a = start(0, &addrs, &[1]);
    let b = start(1, &addrs, &[0]);
    // node-3 knows both from the start; they do not know it yet, so its dials are refused.
    let c = start(2, &addrs, &[0, 1]);
    wait_until("a and b connect", Duration::from_secs(5), || a.connected_to("node-2"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!a.connected_to("node-3") && !c.connected_to("node-1"), "a stranger is refused");

    assert_eq!(a.add("node-1", addrs[0]), None, "a node is never its own peer");
    let pid = a.add("node-3", addrs[2]).expect("added");
    assert_eq!(a.add("node-3", addrs[2]), Some(pid), "adding again is a no-op");
    b.add("node-3", addrs[2]);
    wait_until("node-3 joins both", Duration::from_secs(5), || {
        a.connected_to("node-3") && b.connected_to("node-3") && c.connected_to("node-1") && c.connected_to("node-2")
    });
    a.send_to("node-3", b"hello").unwrap();
    wait_until("frame", Duration::from_secs(5), || {
        c.seen.lock().frames.iter().any(|(n, f)| n == "node-1" && f == b"hello")
    });

    a.retire("node-3");
    wait_until("retired peer gone", Duration::from_secs(5), || !c.connected_to("node-1"));
    assert!(a.connected().iter().all(|(n, _)| n != "node-3"), "a retired peer is not listed");
    assert_eq!(a.send_to("node-3", b"x"), Err(net::SendError::UnknownPeer));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!c.connected_to("node-1"), "node-3 keeps dialing node-1 and is refused");
    assert!(c.connected_to("node-2"), "the others are untouched");

    assert_eq!(a.add("node-3", addrs[2]), Some(pid), "added again, under the same id");
    wait_until("node-3 back", Duration::from_secs(5), || a.connected_to("node-3") && c.connected_to("node-1"));
}
