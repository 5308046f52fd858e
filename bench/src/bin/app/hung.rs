//! Hung calls for `--hung N`: calls to `GET /faulty/hang` kept in flight on an app port while the local
//! case is measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Calls to `GET /faulty/hang` kept in flight on one app port, each on its own connection: one that
/// gets its 504 calls again at once, one refused with 503 waits its `Retry-After` first.
pub struct HungCalls {
    pub stop: Arc<AtomicBool>,
    pub streams: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    pub threads: Vec<JoinHandle<HashMap<u16, u64>>>,
}

impl HungCalls {
    pub fn start(addr: SocketAddr, n: usize) -> HungCalls {
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let threads = (0..n)
            .map(|_| {
                let (stop, streams) = (stop.clone(), streams.clone());
                std::thread::spawn(move || {
                    let mut answers: HashMap<u16, u64> = HashMap::new();
                    while !stop.load(Ordering::SeqCst) {
                        let status = hung_call(addr, &streams).unwrap_or(0);
                        *answers.entry(status).or_default() += 1;
                        if status == 503 {
                            let until = Instant::now() + Duration::from_secs(1);
                            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    answers
                })
            })
            .collect();
        HungCalls { stop, streams, threads }
    }

    /// Ends the calls in flight (closing their connections) and says how they were answered.
    pub fn stop(self) -> HashMap<u16, u64> {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let mut answers = HashMap::new();
        for thread in self.threads {
            for (status, n) in thread.join().unwrap_or_default() {
                *answers.entry(status).or_default() += n;
            }
        }
        answers
    }
}

pub fn hung_call(addr: SocketAddr, streams: &std::sync::Mutex<Vec<std::net::TcpStream>>) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    streams.lock().unwrap_or_else(|e| e.into_inner()).push(stream.try_clone()?);
    stream.write_all(b"GET /faulty/hang HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let mut streams = streams.lock().unwrap_or_else(|e| e.into_inner());
    let mine = stream.local_addr().ok();
    streams.retain(|s| s.local_addr().ok() != mine);
    Ok(status)
}
