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

/// The first executable called `name` on `PATH`, or in `/usr/sbin` and `/sbin` (where daemons such as nginx
/// live, often off an unprivileged user's `PATH`).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [std::path::PathBuf::from("/usr/sbin"), std::path::PathBuf::from("/sbin")];
    std::env::split_paths(&path).chain(system).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Linux's clock tick for the CPU times in `/proc` (USER_HZ, 100 on every architecture we run on).
pub const CPU_TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time of process `pid` (every thread), in ticks, from `/proc/{pid}/stat`.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let (utime, stime) = (fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?);
    Some(utime + stime)
}

/// Direct children of process `pid` (for example nginx's workers under its master).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// CPU time every core spent busy since boot (all but idle and iowait), in ticks, from `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(ticks.iter().take(8).sum::<u64>() - idle)
}

/// Context switches (voluntary and not) of the live threads of process `pid`, from `/proc/{pid}/task/*/status`;
/// threads that already exited are not counted.
pub fn process_context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let switches = |status: String| -> u64 {
        status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    tasks.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok()).map(switches).sum()
}

/// CPU time in ticks of each live thread of process `pid`: (thread id, thread name, ticks).
pub fn thread_cpu_ticks(pid: u32) -> Vec<(u32, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let parse = |stat: &str| -> Option<(String, u64)> {
        let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        Some((name, fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let (name, ticks) = parse(&std::fs::read_to_string(t.path().join("stat")).ok()?)?;
            Some((tid, name, ticks))
        })
        .collect()
}
