//! Load generation for the benchmarks: closed-loop clients over persistent HTTP/1.1 connections, each
//! recording the latency of every request, and the percentile arithmetic to report them.
//!
//! The same client code drives Aether and the baselines (etcd's JSON gateway, a plain HTTP server, the
//! previous `aetherd`), so the ratios compare servers, not clients. A client speaks plain TCP or TLS
//! (rustls, ring provider) and may carry an API key; self-signed certificates for TLS runs are made here.
//! Answers are read whole, bounded at 64 MiB.
//!
//! Beside them: [`wrk`] runs the outside load generator `wrk` and reads its report (`--wrk`), and
//! [`profile`] records a node under load with `perf` and renders flame graphs (`--profile`).

pub mod poll;
pub mod proc;
pub mod profile;
pub mod wrk;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
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
    /// (percentile, µs) when the latencies were not recorded one by one (wrk reports only p50, p75, p90
    /// and p99); empty otherwise.
    pub latency_summary_us: Vec<(f64, f64)>,
    /// CPU time the servers spent meanwhile (user plus system, every process of the system measured), in
    /// seconds; 0 when the run did not measure it.
    pub server_cpu_s: f64,
    /// The same by server process (in the order the run measured them), when the run split it.
    pub server_cpu_by_process_s: Vec<f64>,
    /// Consensus slots the servers decided meanwhile (null slots included), when the run measured it.
    pub slots: u64,
}

impl RunResult {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    /// The `p`th percentile latency; from the summary when there are no single latencies (NaN for a
    /// percentile it does not hold).
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() && !self.latency_summary_us.is_empty() {
            return self.latency_summary_us.iter().find(|(q, _)| *q == p).map_or(f64::NAN, |(_, us)| *us);
        }
        percentile(&self.latencies_us, p)
    }

    /// Runs as one: requests, errors, time, CPU and slots summed, latencies pooled. Summaries (runs by wrk)
    /// cannot be pooled exactly: each percentile is the mean of the runs' weighted by their requests.
    pub fn pool<'a>(runs: impl IntoIterator<Item = &'a RunResult>) -> RunResult {
        let mut out = RunResult::default();
        let mut summary: Vec<(f64, f64, u64)> = Vec::new();
        for r in runs {
            out.ops += r.ops;
            out.errors += r.errors;
            out.seconds += r.seconds;
            out.server_cpu_s += r.server_cpu_s;
            if out.server_cpu_by_process_s.len() < r.server_cpu_by_process_s.len() {
                out.server_cpu_by_process_s.resize(r.server_cpu_by_process_s.len(), 0.0);
            }
            for (sum, s) in out.server_cpu_by_process_s.iter_mut().zip(&r.server_cpu_by_process_s) {
                *sum += s;
            }
            out.slots += r.slots;
            out.latencies_us.extend_from_slice(&r.latencies_us);
            for &(p, us) in &r.latency_summary_us {
                match summary.iter_mut().find(|(q, _, _)| *q == p) {
                    Some((_, sum, weight)) => {
                        *sum += us * r.ops as f64;
                        *weight += r.ops;
                    }
                    None => summary.push((p, us * r.ops as f64, r.ops)),
                }
            }
        }
        out.latencies_us.sort_unstable();
        out.latency_summary_us = summary.into_iter().map(|(p, sum, weight)| (p, sum / weight.max(1) as f64)).collect();
        out
    }

    /// Server CPU time per successful request, in microseconds (NaN when not measured or nothing succeeded).
    pub fn server_cpu_us_per_op(&self) -> f64 {
        if self.ops == 0 || self.server_cpu_s <= 0.0 {
            return f64::NAN;
        }
        self.server_cpu_s * 1e6 / self.ops as f64
    }

    /// [`Self::server_cpu_us_per_op`] by server process (empty when not split).
    pub fn server_cpu_us_per_op_by_process(&self) -> Vec<f64> {
        self.server_cpu_by_process_s.iter().map(|s| s * 1e6 / self.ops.max(1) as f64).collect()
    }
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

/// How the clients of a run talk to their target: extra header lines (each ending in `\r\n`, such as
/// `Authorization: Bearer ...`), TLS or plain TCP, and whether each request gets a connection of its own.
#[derive(Clone, Default)]
pub struct Client {
    pub headers: String,
    /// TLS with this configuration (server name `localhost`); `None` is plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A new connection (and TLS handshake) per request, closed by the server (`Connection: close`);
    /// otherwise one persistent keep-alive connection per client.
    pub new_connection_per_request: bool,
}

impl Client {
    pub fn plain() -> Client {
        Client::default()
    }

    /// This client with `Authorization: Bearer {key}` on every request.
    pub fn with_bearer(mut self, key: &str) -> Client {
        self.headers.push_str(&format!("Authorization: Bearer {key}\r\n"));
        self
    }

    /// This client over TLS.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Client {
        self.tls = Some(config);
        self
    }

    /// This client with a new connection per request.
    pub fn reconnecting(mut self) -> Client {
        self.new_connection_per_request = true;
        self
    }
}

/// The byte stream under a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A persistent HTTP/1.1 connection, plain or TLS.
pub struct Conn {
    addr: SocketAddr,
    io: BufReader<Stream>,
}

impl Conn {
    /// Connects, and with `tls` completes the handshake before returning.
    pub fn open(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let mut session = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
                while session.is_handshaking() {
                    session.complete_io(&mut stream)?;
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
            }
        };
        Ok(Conn { addr, io: BufReader::new(stream) })
    }

    /// Sends one request and reads the whole answer; returns the status.
    pub fn send(&mut self, req: &Request, headers: &str) -> std::io::Result<u16> {
        self.exchange(req, headers).map(|(status, _)| status)
    }

    /// Sends one request and reads the whole answer: (status, body).
    pub fn exchange(&mut self, req: &Request, headers: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{headers}\r\n",
            req.method,
            req.path,
            self.addr,
            req.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&req.body);
        let writer = self.io.get_mut();
        writer.write_all(&out)?;
        writer.flush()?;
        self.read_response()
    }

    /// Reads until the server closes the connection (after a `Connection: close` answer), so that the
    /// closing side, which keeps the TIME_WAIT state, is the server and the client's ports do not run out.
    pub fn drain_to_close(&mut self) {
        let mut buf = [0u8; 256];
        while matches!(self.io.read(&mut buf), Ok(n) if n > 0) {}
    }

    fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        self.io.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            if self.io.read_line(&mut line)? == 0 {
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
        if length > MAX_BODY {
            return Err(bad("answer body over 64 MiB"));
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            let mut body = vec![0u8; length];
            self.io.read_exact(&mut body)?;
            body
        };
        Ok((status, body))
    }

    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let mut line = String::new();
        let mut body = Vec::new();
        loop {
            line.clear();
            self.io.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| bad("chunk size"))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("answer body over 64 MiB"));
            }
            let mut chunk = vec![0u8; size + 2];
            self.io.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// Largest answer body a client reads.
const MAX_BODY: usize = 64 << 20;

/// One request on a connection of its own (`Connection: close`): (status, body). For the benches' own
/// management calls (health, deploys) on clusters whose ports may be TLS or need a key.
pub fn request(
    addr: SocketAddr,
    client: &Client,
    method: &'static str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut conn = Conn::open(addr, client.tls.as_ref())?;
    let req = Request { method, path: path.to_string(), body: body.to_vec() };
    conn.exchange(&req, &format!("{}Connection: close\r\n", client.headers))
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into a folder.
pub struct SelfSigned {
    pub der: Vec<u8>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl SelfSigned {
    /// Generates the certificate and key into `dir` (created if missing; key mode 0600).
    pub fn generate(dir: &Path) -> Result<SelfSigned, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(names).map_err(|e| format!("certificate: {e}"))?;
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).map_err(|e| format!("{}: {e}", cert_file.display()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&key_file)
            .and_then(|mut f| f.write_all(key_pair.serialize_pem().as_bytes()))
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        Ok(SelfSigned { der: cert.der().to_vec(), cert_file, key_file })
    }

    /// The `[tls]` section of a node's config serving this certificate.
    pub fn tls_section(&self) -> String {
        format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n", self.cert_file.display(), self.key_file.display())
    }

    /// A client configuration (ring provider) trusting only this certificate.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.der.clone())).map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// Runs `concurrency` closed-loop clients for `duration` against `targets` (client i uses target
/// i % targets.len()); `make(client, n)` builds each request; a status in `ok` counts as success. A request's
/// latency includes opening its connection when the client opens one per request.
pub fn run_load(
    targets: &[SocketAddr],
    concurrency: usize,
    duration: Duration,
    client: &Client,
    ok: fn(u16) -> bool,
    make: Arc<dyn Fn(usize, u64) -> Request + Send + Sync>,
) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|index| {
            let (stop, make, client) = (stop.clone(), make.clone(), client.clone());
            let target = targets[index % targets.len()];
            std::thread::spawn(move || client_loop(target, index, &stop, &client, ok, &*make))
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
    index: usize,
    stop: &AtomicBool,
    client: &Client,
    ok: fn(u16) -> bool,
    make: &(dyn Fn(usize, u64) -> Request + Send + Sync),
) -> (u64, u64, Vec<u64>) {
    let (mut ops, mut errors, mut latencies) = (0u64, 0u64, Vec::with_capacity(100_000));
    let headers = if client.new_connection_per_request {
        format!("{}Connection: close\r\n", client.headers)
    } else {
        client.headers.clone()
    };
    let mut conn = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        if conn.is_none() {
            conn = Conn::open(target, client.tls.as_ref()).ok();
            if conn.is_none() {
                errors += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let request = make(index, n);
        n += 1;
        let t = if client.new_connection_per_request { t } else { Instant::now() };
        let status = conn.as_mut().map(|c| c.send(&request, &headers));
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
        if client.new_connection_per_request {
            if let Some(mut c) = conn.take() {
                c.drain_to_close();
            }
        }
    }
    (ops, errors, latencies)
}

pub use mgmt::base64;
pub use proc::{
    child_pids, machine_busy_ticks, process_context_switches, process_cpu_ticks, thread_cpu_ticks,
    waited_children_cpu_ticks, CPU_TICKS_PER_S,
};

/// The first executable called `name` on `PATH`, or in `/usr/sbin` and `/sbin` (where daemons such as nginx
/// live, often off an unprivileged user's `PATH`).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [std::path::PathBuf::from("/usr/sbin"), std::path::PathBuf::from("/sbin")];
    std::env::split_paths(&path).chain(system).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection: for each request head read, writes the next of `answers`.
    fn serve_once<S: Read + Write>(mut stream: S, answers: &[&str]) {
        let mut buf = Vec::new();
        for answer in answers {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
            buf.drain(..end);
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.flush();
        }
    }

    const ANSWERS: [&str; 2] = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    ];

    fn two_requests(conn: &mut Conn) {
        let get = Request { method: "GET", path: "/a".into(), body: Vec::new() };
        assert_eq!(conn.exchange(&get, "").unwrap(), (200, b"hello".to_vec()));
        assert_eq!(conn.exchange(&get, "").unwrap(), (404, b"abcde".to_vec()));
    }

    #[test]
    fn a_kept_alive_connection_reads_sized_and_chunked_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve_once(listener.accept().unwrap().0, &ANSWERS));
        two_requests(&mut Conn::open(addr, None).unwrap());
        server.join().unwrap();
    }

    #[test]
    fn the_same_exchanges_run_over_tls_with_a_self_signed_certificate() {
        let dir = std::env::temp_dir().join(format!("bench-lib-tls-{}", std::process::id()));
        let cert = SelfSigned::generate(&dir).unwrap();
        let key = std::fs::read(&cert.key_file).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(pem_body(&key)).unwrap();
        let chain = vec![rustls::pki_types::CertificateDer::from(cert.der.clone())];
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let tcp = listener.accept().unwrap().0;
            let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            serve_once(rustls::StreamOwned::new(session, tcp), &ANSWERS);
        });
        two_requests(&mut Conn::open(addr, Some(&cert.client_config().unwrap())).unwrap());
        server.join().unwrap();
        // A client trusting another certificate refuses this server.
        let other = SelfSigned::generate(&dir.join("other")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || drop(listener.accept()));
        assert!(Conn::open(addr, Some(&other.client_config().unwrap())).is_err());
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The DER inside a one-block PEM file.
    fn pem_body(pem: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(pem);
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        decode_base64(&b64)
    }

    fn decode_base64(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
        for c in text.bytes().filter(|c| *c != b'=') {
            let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn pooled_summaries_weigh_each_run_by_its_requests() {
        let run =
            |ops, p50| RunResult { ops, seconds: 1.0, latency_summary_us: vec![(50.0, p50)], ..RunResult::default() };
        let pooled = RunResult::pool(&[run(300, 100.0), run(100, 500.0)]);
        assert_eq!((pooled.ops, pooled.seconds), (400, 2.0));
        assert_eq!(pooled.percentile_us(50.0), 200.0);
        assert!(pooled.percentile_us(99.0).is_nan());
    }

    #[test]
    fn percentiles_round_to_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 51.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
