//! An elastic worker pool (`workers_min`): an idle port keeps few handler threads, a burst of slow requests
//! grows it up to `workers` (each waiting request soon has a thread), the threads above the minimum that a
//! whole `worker_idle` window did not need end, and hung handlers never make it start a thread per request.

mod common;

use common::{config, exchange, start, status, wait_until};
use httpd::Config;
use std::time::{Duration, Instant};

/// A port of at most `workers` handler threads, `min` kept, the others ending after `idle_ms` windows.
fn elastic(workers: usize, min: usize, idle_ms: u64) -> Config {
    let mut config = config();
    config.workers = workers;
    config.workers_min = Some(min);
    config.worker_idle = Duration::from_millis(idle_ms);
    config
}

#[test]
fn an_idle_port_keeps_few_threads_a_burst_grows_them_and_the_calm_ends_them() {
    let (server, _) = start(elastic(8, 1, 300));
    let addr = server.addr();
    assert_eq!(server.stats().workers_live, 1, "one thread while idle");

    // Eight slow requests at once: each gets a thread, so all end in about one request's time, not eight.
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                status(&exchange(addr, b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
            })
        })
        .collect();
    wait_until(&server, |s| s.workers_live == 8);
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "served side by side: {:?}", started.elapsed());
    // Never more than `workers`, however many wait.
    let burst: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                status(&exchange(addr, b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.stats().workers_live <= 8, "{:?}", server.stats());
    for client in burst {
        assert_eq!(client.join().unwrap(), 200);
    }

    // The calm: back to the minimum, and the port still answers.
    wait_until(&server, |s| s.workers_live == 1);
    assert_eq!(status(&exchange(addr, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
}

#[test]
fn without_a_minimum_every_worker_starts_at_once_and_stays() {
    let mut config = config();
    config.workers = 3;
    config.worker_idle = Duration::from_millis(50);
    let (server, _) = start(config);
    assert_eq!(server.stats().workers_live, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.stats().workers_live, 3);
}

#[test]
fn a_light_steady_load_lets_the_surplus_of_a_burst_go() {
    let (server, _) = start(elastic(8, 1, 300));
    let addr = server.addr();
    let slow = b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let clients: Vec<_> = (0..8).map(|_| std::thread::spawn(move || status(&exchange(addr, slow)))).collect();
    wait_until(&server, |s| s.workers_live == 8);
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    // One quick request every 20 ms wakes one thread at a time, in turn: the others were never needed.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(status(&exchange(addr, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stats().workers_live <= 2, "{:?}", server.stats());
}

#[test]
fn a_hung_handler_cannot_make_the_pool_start_a_thread_per_request() {
    let mut config = elastic(2, 1, 10_000);
    config.abandoned_max = 1;
    config.deadline = Some(Duration::from_millis(100));
    let (server, _) = start(config);
    let addr = server.addr();
    for _ in 0..12 {
        let answer = exchange(addr, b"GET /hang HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&answer), 504, "{answer}");
    }
    let stats = server.stats();
    // Never more threads than `workers + abandoned_max + 1`, however many requests hang.
    assert!(stats.workers_live + stats.workers_abandoned <= 4, "{stats:?}");
}
