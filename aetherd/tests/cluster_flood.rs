//! The cluster port under a connection flood, over real processes: a flooder opens hundreds of TCP
//! connections per second to one node's cluster port (some send garbage, some send nothing and hold the
//! socket), while that node is killed and restarted. The restarted node must rejoin within 2 s of
//! starting, and its log must hold a handful of aggregated flood lines, not one per connection.

use devcluster::{wait_for, ClusterSpec, LocalCluster};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// `threads` threads, each opening a connection every `every` and holding up to 32 of them open.
    fn start(target: SocketAddr, threads: usize, every: Duration) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, opened) = (stop.clone(), opened.clone());
                std::thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                            opened.fetch_add(1, Ordering::Relaxed);
                            match (n + t as u64) % 3 {
                                0 => {
                                    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                                }
                                1 => {
                                    // A header that claims the protocol, then silence.
                                    let _ = s.write_all(&[0xAE, 0x7A, 1, 1]);
                                }
                                _ => {}
                            }
                            held.push_back(s);
                            if held.len() > 32 {
                                held.pop_front();
                            }
                        }
                        std::thread::sleep(every);
                    }
                })
            })
            .collect();
        Flood { stop, opened, threads }
    }

    fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn peers_connected(c: &LocalCluster, i: usize) -> Option<u64> {
    c.health(i).and_then(|h| h["peers_connected"].as_u64())
}

/// Lines of `log` the flood is to blame for: refusals of unauthenticated connections, aggregated or not.
fn flood_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("refused") || l.contains("unidentified") || l.contains("accept failed")).collect()
}

#[test]
fn a_restarted_node_rejoins_within_2_s_while_its_cluster_port_is_flooded() {
    let dir = std::env::temp_dir().join(format!("aether-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cluster =
        LocalCluster::start(ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))).unwrap();
    cluster.wait_connected(2, SETTLE).unwrap();
    wait_for(SETTLE, || (0..3).all(|i| cluster.health(i).is_some_and(|h| h["ready"] == true))).unwrap();

    // Four threads at one connection every 5 ms each: several hundred connections per second.
    let flood = Flood::start(cluster.nodes[2].cluster, 4, Duration::from_millis(5));
    std::thread::sleep(Duration::from_secs(2));
    let before_kill = flood.opened();
    assert!(before_kill > 400, "the flood opened only {before_kill} connections in 2 s");
    // The flooded node holds its peers meanwhile.
    assert_eq!(peers_connected(&cluster, 2), Some(2), "flooded node lost its peers");

    cluster.kill(2);
    wait_for(SETTLE, || peers_connected(&cluster, 0) == Some(1) && peers_connected(&cluster, 1) == Some(1)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let log_before = cluster.log(2).len();
    let opened_at_restart = flood.opened();
    let started = Instant::now();
    cluster.start_node(2).unwrap();
    let rejoined = wait_for(Duration::from_secs(10), || {
        peers_connected(&cluster, 0) == Some(2) && peers_connected(&cluster, 1) == Some(2)
    });
    let took = started.elapsed();
    assert!(rejoined.is_ok(), "the restarted node did not rejoin within 10 s under the flood");
    assert!(took < Duration::from_secs(2), "the restarted node took {took:?} to rejoin under the flood");

    // Keep flooding a while, across one aggregation window, then read what the node wrote about it.
    std::thread::sleep(Duration::from_secs(11));
    let during = flood.opened() - opened_at_restart;
    drop(flood);
    assert!(during > 1000, "the flood opened only {during} connections after the restart");
    assert_eq!(peers_connected(&cluster, 2), Some(2), "the flooded node lost its peers");
    assert!(cluster.health(2).is_some_and(|h| h["ready"] == true), "the flooded node is not ready");
    let log = cluster.log(2);
    let since_restart = &log[log_before.min(log.len())..];
    let lines = flood_lines(since_restart);
    assert!(!lines.is_empty(), "the node said nothing about {during} refused connections:\n{since_restart}");
    assert!(
        lines.len() <= 12,
        "{} flood lines for {during} connections (want a handful):\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("connections from 127.0.0.1 in the last 10 s")),
        "no aggregated line:\n{}",
        lines.join("\n")
    );
}
