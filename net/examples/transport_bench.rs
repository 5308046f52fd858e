//! `cargo xtask bench transport`: round-trip latency and one-way throughput of 1 KiB frames between two
//! event loops over loopback, next to a plain blocking `std::net` ping-pong measured in the same run.
//!
//! Envelope: loopback RTT for a small message is ~20-40 µs on this machine class (two syscalls and two
//! wake-ups per side); our loop adds framing, a crc32 of 1 KiB (~100 ns) and an epoll round per side, so
//! the target is a p50 within 1.5x of the baseline.

use net::{Ctx, Frame, FrameKind, Handler, NetConfig, PeerId, PeerSpec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = flag(&args, "--runs").unwrap_or(5);
    let pings: usize = flag(&args, "--pings").unwrap_or(20_000);
    let frames: usize = flag(&args, "--frames").unwrap_or(50_000);
    let mut results = Vec::new();
    for run in 0..runs {
        let base_rtt = baseline_rtt(pings);
        let (ours_rtt, ours_tput) = ours(pings, frames);
        let base_tput = baseline_throughput(frames);
        eprintln!(
            "run {}: rtt p50 {:.1}/{:.1} µs (aether/std), throughput {:.0}/{:.0} MiB/s",
            run + 1,
            pct(&ours_rtt, 50.0),
            pct(&base_rtt, 50.0),
            ours_tput,
            base_tput
        );
        results.push([
            pct(&ours_rtt, 50.0),
            pct(&ours_rtt, 99.0),
            pct(&base_rtt, 50.0),
            pct(&base_rtt, 99.0),
            ours_tput,
            base_tput,
        ]);
    }
    let med = |k: usize| median(results.iter().map(|r| r[k]).collect());
    let (o50, o99, b50, b99, ot, bt) = (med(0), med(1), med(2), med(3), med(4), med(5));
    println!("transport benchmark, 1 KiB frames over loopback, medians of {runs} runs");
    println!("{:<28} {:>12} {:>12} {:>14}", "", "rtt p50 µs", "rtt p99 µs", "MiB/s one-way");
    println!("{:<28} {:>12.1} {:>12.1} {:>14.0}", "aether net (mio loops)", o50, o99, ot);
    println!("{:<28} {:>12.1} {:>12.1} {:>14.0}", "std::net blocking baseline", b50, b99, bt);
    println!("ratio aether/baseline: rtt p50 {:.2}x, rtt p99 {:.2}x, throughput {:.2}x", o50 / b50, o99 / b99, ot / bt);
    let json = format!(
        "{{\"runs\":{runs},\"payload_bytes\":{PAYLOAD},\"aether\":{{\"rtt_p50_us\":{o50:.2},\"rtt_p99_us\":{o99:.2},\"mib_per_s\":{ot:.1}}},\
         \"baseline\":{{\"rtt_p50_us\":{b50:.2},\"rtt_p99_us\":{b99:.2},\"mib_per_s\":{bt:.1}}},\"rtt_p50_ratio\":{:.3}}}",
        o50 / b50
    );
    if let Some(path) = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)) {
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("cannot write {path}: {e}");
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn median(v: Vec<f64>) -> f64 {
    pct(&v, 50.0)
}

fn baseline_rtt(pings: usize) -> Vec<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; PAYLOAD];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = [7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        c.write_all(&buf).expect("write");
        c.read_exact(&mut buf).expect("read");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    let _ = server.join();
    samples
}

fn baseline_throughput(frames: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; PAYLOAD];
        for _ in 0..frames {
            s.read_exact(&mut buf).expect("read");
        }
        Instant::now()
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    let buf = [7u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..frames {
        c.write_all(&buf).expect("write");
    }
    let end = server.join().expect("server");
    mib_per_s(frames, end - start)
}

fn mib_per_s(frames: usize, elapsed: Duration) -> f64 {
    (frames * PAYLOAD) as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

enum Cmd {
    PingPong(usize, mpsc::Sender<Vec<f64>>),
    Blast(usize),
}

struct Bench {
    pings_left: usize,
    sent_at: Instant,
    samples: Vec<f64>,
    done: Option<mpsc::Sender<Vec<f64>>>,
    blast_expected: usize,
    blast_seen: usize,
    blast_start: Option<Instant>,
    blast_done: Option<mpsc::Sender<Instant>>,
    payload: Vec<u8>,
}

impl Handler for Bench {
    type Command = Cmd;
    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        match frame.payload.first() {
            Some(b'P') => {
                let _ = ctx.send(peer, FrameKind::User, &frame.payload);
                return;
            }
            Some(b'B') => {
                self.blast_seen += 1;
                if self.blast_seen == self.blast_expected {
                    if let Some(tx) = self.blast_done.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
                return;
            }
            _ => {}
        }
        self.samples.push(self.sent_at.elapsed().as_secs_f64() * 1e6);
        self.pings_left -= 1;
        if self.pings_left == 0 {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(std::mem::take(&mut self.samples));
            }
            return;
        }
        self.ping(ctx, peer);
    }
    fn on_command(&mut self, ctx: &mut Ctx<'_>, cmd: Cmd) {
        match cmd {
            Cmd::PingPong(n, done) => {
                self.pings_left = n;
                self.done = Some(done);
                self.ping(ctx, 0);
            }
            Cmd::Blast(n) => {
                self.payload[0] = b'B';
                self.blast_start = Some(Instant::now());
                for _ in 0..n {
                    let _ = ctx.send(0, FrameKind::User, &self.payload);
                }
            }
        }
    }
}

impl Bench {
    fn new() -> Bench {
        Bench {
            pings_left: 0,
            sent_at: Instant::now(),
            samples: Vec::new(),
            done: None,
            blast_expected: 0,
            blast_seen: 0,
            blast_start: None,
            blast_done: None,
            payload: vec![0u8; PAYLOAD],
        }
    }
    fn ping(&mut self, ctx: &mut Ctx<'_>, peer: PeerId) {
        self.payload[0] = b'P';
        self.sent_at = Instant::now();
        let _ = ctx.send(peer, FrameKind::User, &self.payload);
    }
}

/// Pong frames start with 'P' on the way out; the echo comes back unchanged, so the pinger tells them
/// apart by who sent them: node A only ever receives echoes.
fn ours(pings: usize, frames: usize) -> (Vec<f64>, f64) {
    let ports: Vec<SocketAddr> =
        (0..2).map(|_| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")).collect();
    let cfg = |me: usize| {
        let other = 1 - me;
        let peers = vec![PeerSpec { id: format!("n{other}"), addr: ports[other] }];
        NetConfig::new(&format!("n{me}"), "bench", b"secret", ports[me], peers)
    };
    let mut a_handler = Bench::new();
    a_handler.payload[0] = b'A';
    let mut b_handler = Bench::new();
    b_handler.blast_expected = frames;
    let (blast_tx, blast_rx) = mpsc::channel();
    b_handler.blast_done = Some(blast_tx);
    let a = net::spawn(cfg(0), EchoFilter(a_handler)).expect("spawn a");
    let b = net::spawn(cfg(1), b_handler).expect("spawn b");
    std::thread::sleep(Duration::from_millis(300));
    let (tx, rx) = mpsc::channel();
    a.handle.command(Cmd::PingPong(pings, tx)).expect("cmd");
    let samples = rx.recv_timeout(Duration::from_secs(120)).expect("ping-pong finished");
    let start = Instant::now();
    a.handle.command(Cmd::Blast(frames)).expect("cmd");
    let end = blast_rx.recv_timeout(Duration::from_secs(120)).expect("blast finished");
    let tput = mib_per_s(frames, end - start);
    let _ = a.handle.stop();
    let _ = b.handle.stop();
    let _ = a.thread.join();
    let _ = b.thread.join();
    (samples, tput)
}

/// Node A treats every incoming frame as an echo of its ping.
struct EchoFilter(Bench);

impl Handler for EchoFilter {
    type Command = Cmd;
    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, mut frame: Frame) {
        let mut bytes = frame.payload.to_vec();
        bytes[0] = b'E';
        frame.payload = bytes.into();
        self.0.on_frame(ctx, peer, frame);
    }
    fn on_command(&mut self, ctx: &mut Ctx<'_>, cmd: Cmd) {
        self.0.on_command(ctx, cmd);
    }
}
