//! Deferred answers (`Job::defer`): a handler returns at once and another thread answers later, so a request
//! that waits on something else holds no worker; the deadline still holds (504, no worker abandoned), a
//! `Later` dropped unanswered answers 500, and `Later::resume` goes on with the request on a worker.

mod common;

use common::{body, config, connect, exchange, read_response, status, statuses, wait_until};
use httpd::{Handler, Job, Later, Request, Response, Server};
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routes: `/later` (answered by the answering thread after 100 ms), `/never` (never answered: the
/// `Later` is kept), `/drop` (the `Later` dropped at once), `/resume` (resumed on the pool, which
/// answers "resumed"), `/now` (answered by the handler).
struct Deferring {
    laters: Mutex<Sender<(Later, Instant)>>,
    kept: Mutex<Vec<Later>>,
    deferred: std::sync::atomic::AtomicUsize,
}

impl Handler for Deferring {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        1024
    }

    fn handle(&self, request: Request, job: &Job) -> Response {
        let ignored = Response::new(200, "text/plain", b"ignored".to_vec());
        match request.target.as_str() {
            "/later" => {
                let later = job.defer().expect("defer once in a handler");
                self.deferred.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert!(job.defer().is_none(), "a second defer gets nothing");
                let at = Instant::now() + Duration::from_millis(100);
                self.laters.lock().unwrap().send((later, at)).unwrap();
                ignored
            }
            "/never" => {
                self.kept.lock().unwrap().push(job.defer().unwrap());
                ignored
            }
            "/within" => {
                job.add_answer_header("X-Request-Id", "r-7");
                let later = job.defer().unwrap();
                later.within(Duration::from_millis(100));
                self.kept.lock().unwrap().push(later);
                ignored
            }
            "/drop" => {
                drop(job.defer().unwrap());
                ignored
            }
            "/resume" => {
                let later = job.defer().unwrap();
                std::thread::spawn(move || {
                    later.resume(Box::new(|job: &Job| {
                        assert!(!job.overdue());
                        Response::new(200, "text/plain", b"resumed".to_vec())
                    }))
                });
                ignored
            }
            _ => Response::new(200, "text/plain", b"now".to_vec()),
        }
    }
}

/// A port with one worker and an answering thread that answers each `/later` at its time.
fn start(deadline: Option<Duration>) -> (Server, Arc<Deferring>) {
    let (tx, rx) = channel::<(Later, Instant)>();
    std::thread::spawn(move || {
        for (later, at) in rx {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            later.answer(Response::new(200, "text/plain", b"later".to_vec()));
        }
    });
    let handler =
        Arc::new(Deferring { laters: Mutex::new(tx), kept: Mutex::new(Vec::new()), deferred: Default::default() });
    let mut config = config();
    config.workers = 1;
    config.deadline = deadline;
    let server = Server::start(config, handler.clone()).unwrap();
    (server, handler)
}

#[test]
fn deferred_requests_hold_no_worker_and_get_their_answers() {
    let (server, _) = start(None);
    let addr = server.addr();
    // Twenty requests waiting 100 ms each on one worker thread: served side by side.
    let started = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || exchange(addr, b"GET /later HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        })
        .collect();
    for client in clients {
        let raw = client.join().unwrap();
        assert_eq!((status(&raw), body(&raw)), (200, "later"), "{raw}");
    }
    assert!(started.elapsed() < Duration::from_millis(1500), "not one after another: {:?}", started.elapsed());
    let stats = server.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (1, 0));
    server.stop();
}

#[test]
fn a_deferred_answer_keeps_its_place_in_a_pipeline() {
    let (server, _) = start(None);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\nGET /now HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream), (200, "later".to_owned()));
    assert_eq!(read_response(&mut stream), (200, "now".to_owned()));
    server.stop();
}

#[test]
fn past_its_deadline_a_deferred_request_gets_504_and_no_worker_is_abandoned() {
    let (server, handler) = start(Some(Duration::from_millis(100)));
    let addr = server.addr();
    let raw = exchange(addr, b"GET /never HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&raw), 504, "{raw}");
    let stats = server.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (1, 0), "no thread was stuck");
    // The late answer goes nowhere, and the port serves on.
    let later = handler.kept.lock().unwrap().pop().unwrap();
    assert!(!later.wanted());
    later.answer(Response::new(200, "text/plain", b"too late".to_vec()));
    let raw = exchange(addr, b"GET /now HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!((status(&raw), body(&raw)), (200, "now"));
    server.stop();
}

#[test]
fn a_deferral_with_a_limit_on_a_port_without_deadlines_gets_504_with_the_answer_headers() {
    let (server, handler) = start(None);
    let started = Instant::now();
    let raw = exchange(server.addr(), b"GET /within HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&raw), 504, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("x-request-id: r-7"), "{raw}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let later = handler.kept.lock().unwrap().pop().unwrap();
    assert!(!later.wanted(), "the late answer goes nowhere");
    later.answer(Response::new(200, "text/plain", b"late".to_vec()));
    server.stop();
}

#[test]
fn a_later_dropped_unanswered_answers_500() {
    let (server, _) = start(None);
    let raw = exchange(server.addr(), b"GET /drop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    common::assert_json_error(&raw, 500);
    server.stop();
}

#[test]
fn a_resumed_request_is_answered_by_the_pool() {
    let (server, _) = start(Some(Duration::from_secs(5)));
    let raw = exchange(
        server.addr(),
        b"GET /resume HTTP/1.1\r\nHost: a\r\n\r\nGET /resume HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&raw), [200, 200], "{raw}");
    assert_eq!(raw.matches("resumed").count(), 2, "{raw}");
    wait_until(&server, |s| s.workers_live == 1 && s.workers_abandoned == 0 && s.queued == 0);
    server.stop();
}

#[test]
fn stopping_waits_for_a_deferred_answer() {
    let (server, handler) = start(None);
    let addr = server.addr();
    let client =
        std::thread::spawn(move || exchange(addr, b"GET /later HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    while handler.deferred.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.stop();
    let raw = client.join().unwrap();
    assert_eq!((status(&raw), body(&raw)), (200, "later"), "{raw}");
}
