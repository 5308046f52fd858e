//! Running out of file descriptors on the cluster port: accepting pauses and resumes from a timer, and a
//! connection that waited in the backlog while the process had no descriptor left is served once
//! descriptors are free again, without any new connection arriving to wake the listener.
//!
//! This binary holds one test on purpose: it lowers the process's descriptor limit.

use net::{Ctx, Frame, Handler, NetConfig, PeerSpec};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

struct Quiet;

impl Handler for Quiet {
    type Command = ();
    fn on_frame(&mut self, _: &mut Ctx<'_>, _: usize, _: Frame) {}
    fn on_command(&mut self, _: &mut Ctx<'_>, _: ()) {}
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(64)
}

#[test]
fn out_of_descriptors_pauses_accepting_and_the_backlog_is_served_afterwards() {
    let ports: Vec<u16> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    // The one peer sits on another address and nobody listens there.
    let peer = PeerSpec { id: "node-2".into(), addr: SocketAddr::from(([127, 0, 0, 2], ports[1])) };
    let mut config = NetConfig::new("node-1", "demo", b"secret", addr, vec![peer]);
    config.handshaking_per_ip_max = 10_000;
    config.handshaking_max = 10_000;
    config.handshake_timeout = Duration::from_secs(60);
    config.dial_backoff_min = Duration::from_secs(1);
    let node = net::spawn(config, Quiet).unwrap();

    let saved = getrlimit(Resource::Nofile);
    let limit = open_descriptors() + 48;
    setrlimit(Resource::Nofile, Rlimit { current: Some(limit), maximum: saved.maximum }).unwrap();
    // Fill the descriptor table from both ends: each connection costs one here and one in the node.
    let mut held = Vec::new();
    while let Ok(s) = TcpStream::connect(addr) {
        held.push(s);
        assert!(held.len() < 10_000, "the descriptor limit did not bite");
    }
    std::thread::sleep(Duration::from_millis(200));
    // Free one descriptor at a time until this side gets a socket in: the node has none left to accept it.
    let probe = loop {
        assert!(!held.is_empty(), "never got a probe connection in");
        held.pop();
        if let Ok(s) = TcpStream::connect(addr) {
            break s;
        }
    };
    std::thread::sleep(Duration::from_millis(200));
    // Free everything: the node's connections see EOF and close. No new connection arrives from here on.
    drop(held);
    setrlimit(Resource::Nofile, saved).unwrap();

    let mut probe = probe;
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 2];
    let served = probe.read_exact(&mut head);
    assert!(served.is_ok(), "the connection from the backlog was never served: {served:?}");
    assert_eq!(head, wire::MAGIC, "the node's Hello");

    // And the listener takes new connections as before.
    let mut fresh = TcpStream::connect(addr).unwrap();
    fresh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    fresh.read_exact(&mut head).unwrap();
    assert_eq!(head, wire::MAGIC);
    node.handle.stop().unwrap();
    node.thread.join().unwrap();
}
