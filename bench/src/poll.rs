//! A management client as a dashboard drives one, for `cargo xtask bench app --poll-management`: it
//! polls `/api/metrics`, `/metrics` and `/api/status` each [`POLLS_PER_S`] times a second over keep-alive
//! connections, and follows `/api/events/stream` on another connection (when the node serves it; a node
//! that answers anything but 200 there is only polled). And the per-node CPU at idle, from `/proc`.
//!
//! Invariant: every thread it starts ends on [`ManagementPoller::stop`], within one read timeout.

use crate::{Conn, Request};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Polls of each route per second.
pub const POLLS_PER_S: u32 = 50;
/// The routes polled.
pub const POLLED: [&str; 3] = ["/api/metrics", "/metrics", "/api/status"];

/// What the poller saw: answers by route and status, and the event stream's bytes.
#[derive(Debug, Default, Clone)]
pub struct PollReport {
    /// `(route, status)` -> count; status 0 is a failed exchange.
    pub answers: BTreeMap<(String, u16), u64>,
    /// The stream's answer status (0: could not connect) and the bytes read from it.
    pub stream_status: u16,
    pub stream_bytes: u64,
}

pub struct ManagementPoller {
    stop: Arc<AtomicBool>,
    pollers: Vec<JoinHandle<BTreeMap<(String, u16), u64>>>,
    stream: Option<JoinHandle<(u16, u64)>>,
}

impl ManagementPoller {
    /// Starts polling the management port at `addr` (plain HTTP, no key).
    pub fn start(addr: SocketAddr) -> ManagementPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let pollers = POLLED
            .iter()
            .map(|path| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || poll(addr, path, &stop))
            })
            .collect();
        let follower = Arc::clone(&stop);
        let stream = Some(std::thread::spawn(move || follow(addr, &follower)));
        ManagementPoller { stop, pollers, stream }
    }

    pub fn stop(mut self) -> PollReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = PollReport::default();
        for poller in self.pollers.drain(..) {
            for (key, n) in poller.join().unwrap_or_default() {
                *report.answers.entry(key).or_default() += n;
            }
        }
        if let Some(stream) = self.stream.take() {
            (report.stream_status, report.stream_bytes) = stream.join().unwrap_or((0, 0));
        }
        report
    }
}

/// GETs `path` every 1/[`POLLS_PER_S`] s (a late poll does not bunch up the next ones).
fn poll(addr: SocketAddr, path: &'static str, stop: &AtomicBool) -> BTreeMap<(String, u16), u64> {
    let mut answers = BTreeMap::new();
    let period = Duration::from_secs(1) / POLLS_PER_S;
    let mut conn: Option<Conn> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let request = Request { method: "GET", path: path.to_string(), body: Vec::new() };
        let open = match conn.take() {
            Some(c) => Ok(c),
            None => Conn::open(addr, None),
        };
        let status = match open {
            Ok(mut c) => match c.exchange(&request, "") {
                Ok((status, _)) => {
                    conn = Some(c);
                    status
                }
                Err(_) => 0,
            },
            Err(_) => 0,
        };
        *answers.entry((path.to_string(), status)).or_default() += 1;
        next = (next + period).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    answers
}

/// Follows the event stream until stopped: (status, bytes read after the head).
fn follow(addr: SocketAddr, stop: &AtomicBool) -> (u16, u64) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return (0, 0) };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    // The Host a browser on this machine would send: loopback management ports refuse other names.
    let head = format!("GET /api/events/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return (0, 0);
    }
    let mut status = 0;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if status == 0 {
                    status = parse_status(&buf[..n]);
                    if status != 200 {
                        break;
                    }
                }
                bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    (status, bytes)
}

fn parse_status(head: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(&head[..head.len().min(64)]);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// CPU use of each process in `pids` over `window`, in percent of one core.
pub fn idle_cpu_percent(pids: &[u32], window: Duration) -> Vec<Option<f64>> {
    let before: Vec<Option<u64>> = pids.iter().map(|p| crate::process_cpu_ticks(*p)).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let seconds = started.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(pid, b)| {
            let a = crate::process_cpu_ticks(*pid)?;
            Some(a.saturating_sub(b?) as f64 / crate::CPU_TICKS_PER_S / seconds * 100.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 404 Not Found\r\n"), 404);
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"), 200);
        assert_eq!(parse_status(b"garbage"), 0);
    }
}
