//! Load generation for the benchmarks: closed-loop clients over persistent HTTP/1.1 connections, each
//! recording the latency of every request, and the percentile arithmetic to report them.
//!
//! The same client code drives Aether and the baselines (etcd's JSON gateway, a plain HTTP server), so the
//! ratios compare servers, not clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request a client sends, over and over (the closure builds it from a counter).
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Sorted latencies in microseconds.
    pub latencies_us: Vec<u64>,
}

impl RunResult {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

/// A persistent HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        Ok(Conn { addr, reader: BufReader::new(stream), writer })
    }

    /// Sends one request and reads the whole answer; returns the status.
    pub fn send(&mut self, req: &Request, headers: &str) -> std::io::Result<u16> {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{headers}\r\n",
            req.method,
            req.path,
            self.addr,
            req.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&req.body);
        self.writer.write_all(&out)?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<u16> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| bad("content-length"))?;
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            self.skip_chunked()?;
        } else {
            let mut body = vec![0u8; length];
            self.reader.read_exact(&mut body)?;
        }
        Ok(status)
    }

    fn skip_chunked(&mut self) -> std::io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

/// Runs `concurrency` closed-loop clients for `duration` against `targets` (client i uses target
/// i % targets.len()); `make(client, n)` builds each request; a status in `ok` counts as success.
pub fn run_load(
    targets: &[SocketAddr],
    concurrency: usize,
    duration: Duration,
    headers: &'static str,
    ok: fn(u16) -> bool,
    make: Arc<dyn Fn(usize, u64) -> Request + Send + Sync>,
) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|client| {
            let (stop, make) = (stop.clone(), make.clone());
            let target = targets[client % targets.len()];
            std::thread::spawn(move || client_loop(target, client, &stop, headers, ok, &*make))
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut result = RunResult::default();
    for worker in workers {
        if let Ok((ops, errors, mut lat)) = worker.join() {
            result.ops += ops;
            result.errors += errors;
            result.latencies_us.append(&mut lat);
        }
    }
    result.seconds = start.elapsed().as_secs_f64();
    result.latencies_us.sort_unstable();
    result
}

fn client_loop(
    target: SocketAddr,
    client: usize,
    stop: &AtomicBool,
    headers: &str,
    ok: fn(u16) -> bool,
    make: &(dyn Fn(usize, u64) -> Request + Send + Sync),
) -> (u64, u64, Vec<u64>) {
    let (mut ops, mut errors, mut latencies) = (0u64, 0u64, Vec::with_capacity(100_000));
    let mut conn = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = Conn::open(target).ok();
            if conn.is_none() {
                errors += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let request = make(client, n);
        n += 1;
        let t = Instant::now();
        let status = conn.as_mut().map(|c| c.send(&request, headers));
        match status {
            Some(Ok(s)) if ok(s) => {
                ops += 1;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            Some(Ok(_)) => errors += 1,
            _ => {
                errors += 1;
                conn = None;
            }
        }
    }
    (ops, errors, latencies)
}

pub use mgmt::base64;
