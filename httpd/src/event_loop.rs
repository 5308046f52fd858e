//! A port's I/O thread: accepting, reading, parsing, timeouts, the deadline watchdog, writing.
//!
//! Invariants: this thread never blocks but in `poll` and, on an `inline` port, in the requests it runs
//! between turns, where the loop is parked for another thread to take over (see [`crate::inline`]); other
//! handlers run on the pool, but for `Handler::start`, which must not block; answers come back through a
//! channel and a waker; every connection is in exactly one [`State`] with one timer that
//! applies to it; accepting pauses (and a timer retries) when accept fails for lack of descriptors or
//! memory, or while the port holds its connection limit, and [`Shared::accepting`] says so; a request
//! with a deadline is answered at most one watchdog tick plus [`GRACE`] after it; streaming answers are
//! polled on every loop turn (so at least every [`SLOW_TICK`]) and never hold more unsent bytes than
//! `Limits::stream_buffer_bytes_max`.

mod accept;
mod streams;

use crate::conn::{BodyState, Conn, State, READ_CHUNK};
use crate::inline::Inline;
use crate::parse::{self, Chunked, Framing, Reject};
use crate::pool::{Completion, Job, Pool};
use crate::tls::{self, TlsFiles};
use crate::{Config, Handler, Request, Response};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Watchdog and accept-retry resolution.
const TICK: Duration = Duration::from_millis(5);
/// Timer resolution when nothing needs the fine one.
const SLOW_TICK: Duration = Duration::from_millis(50);
/// How long past its deadline a handler may still answer before the server does.
pub const GRACE: Duration = Duration::from_millis(10);
/// How long after a failed accept to try again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Unwritten answer bytes past which a connection's next pipelined request waits (a client that sends
/// without reading cannot make the server buffer answers without bound).
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Answers written per look at those handed over (see `EventLoop::take_answers`).
const ANSWERS_PER_TAKE: usize = 256;
/// How long a closing connection discards input so its client reads the answer.
const LINGER: Duration = Duration::from_secs(2);

/// What the port's handle shares with its I/O thread.
pub struct Shared {
    name: String,
    pub accepting: Arc<AtomicBool>,
    pub stopping: AtomicBool,
    pub connections: Arc<AtomicUsize>,
    /// Streaming answers open.
    pub streams: AtomicUsize,
    /// The request deadline in milliseconds (0: none); starts as `Config::deadline`, see
    /// [`crate::Server::set_deadline`].
    pub deadline_ms: std::sync::atomic::AtomicU64,
    pub waker: Arc<mio::Waker>,
    tls_files: Option<TlsFiles>,
    tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    /// Set once the loop has ended (every connection closed), by whichever thread ran it last.
    done: Mutex<bool>,
    done_signal: std::sync::Condvar,
}

impl Shared {
    pub fn new(config: &Config, tls: Option<Arc<rustls::ServerConfig>>, waker: Arc<mio::Waker>) -> Shared {
        Shared {
            name: config.name.clone(),
            accepting: Arc::new(AtomicBool::new(true)),
            stopping: AtomicBool::new(false),
            connections: Arc::new(AtomicUsize::new(0)),
            streams: AtomicUsize::new(0),
            deadline_ms: std::sync::atomic::AtomicU64::new(
                config.deadline.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            ),
            waker,
            tls_files: config.tls.clone(),
            tls: Mutex::new(tls),
            done: Mutex::new(false),
            done_signal: std::sync::Condvar::new(),
        }
    }

    /// Whether the loop has ended.
    pub fn loop_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the loop has ended.
    pub fn wait_done(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.done_signal.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn set_done(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.done_signal.notify_all();
    }

    pub fn reload_tls(&self) -> Result<(), String> {
        let Some(files) = &self.tls_files else { return Ok(()) };
        match tls::load(files) {
            Ok(config) => {
                *self.tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
                log::info!("{} port: TLS certificate reloaded from {}", self.name, files.cert_file.display());
                Ok(())
            }
            Err(e) => {
                log::error!("{} port: TLS reload failed, the old certificate stays: {e}", self.name);
                Err(e)
            }
        }
    }

    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Marks the loop ended when dropped armed (see [`EventLoop::run`]).
struct LoopEnd {
    shared: Arc<Shared>,
    inline: Option<Arc<Inline>>,
    armed: bool,
}

impl Drop for LoopEnd {
    fn drop(&mut self) {
        if self.armed {
            self.shared.set_done();
            if let Some(inline) = &self.inline {
                inline.wake_watch();
            }
        }
    }
}

pub struct EventLoop {
    config: Config,
    poll: Poll,
    listener: Option<mio::net::TcpListener>,
    handler: Arc<dyn Handler>,
    pool: Pool,
    done: Receiver<Completion>,
    shared: Arc<Shared>,
    conns: HashMap<usize, Conn>,
    next_id: usize,
    per_ip: HashMap<IpAddr, usize>,
    conn_cap: usize,
    /// Paused after an accept error until then.
    accept_retry_at: Option<Instant>,
    /// Requests with a deadline that a handler has.
    in_flight: Vec<(usize, Arc<Job>)>,
    /// Whether requests are offered to `Handler::start` on this thread first.
    starts: bool,
    /// Set once stopping: when unanswered writes are given up.
    stop_flush_until: Option<Instant>,
    /// Connections in `State::Streaming` (a port that never streams pays nothing per loop turn).
    streaming: Vec<usize>,
    /// Body bytes held by every connection (the sum of their `body_held`), in all and per client address,
    /// bounded by `Limits::body_bytes_total_max` and `Limits::body_bytes_per_ip_max`.
    body: BodyBudget,
    /// Set on a port that runs requests on this thread (see [`crate::inline`]).
    inline: Option<Arc<Inline>>,
    /// Whether requests are queued for this thread to run after the turn (decided as a turn starts, and again
    /// whenever this thread gets the loop back; a request queued so on a turn that does not run them wakes a
    /// worker at the next turn's start, see [`Pool::kick`]).
    inline_turn: bool,
    /// Answers of requests run on this thread while the loop was parked, to write.
    ran: Vec<(usize, Response)>,
}

impl EventLoop {
    pub fn new(
        config: Config,
        poll: Poll,
        mut listener: mio::net::TcpListener,
        handler: Arc<dyn Handler>,
        pool: Pool,
        done: Receiver<Completion>,
        shared: &Arc<Shared>,
    ) -> io::Result<EventLoop> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let conn_cap = config.limits.connections_max.min(crate::fd_budget()).max(1);
        let starts = handler.starts();
        Ok(EventLoop {
            config,
            poll,
            listener: Some(listener),
            handler,
            pool,
            done,
            shared: Arc::clone(shared),
            conns: HashMap::new(),
            next_id: FIRST_CONN,
            per_ip: HashMap::new(),
            conn_cap,
            accept_retry_at: None,
            in_flight: Vec::new(),
            starts,
            stop_flush_until: None,
            streaming: Vec::new(),
            body: BodyBudget::default(),
            inline: None,
            inline_turn: false,
            ran: Vec::new(),
        })
    }

    /// Runs requests on this thread (see [`crate::inline`]).
    pub fn with_inline(mut self, inline: Option<Arc<Inline>>) -> EventLoop {
        self.inline = inline;
        self
    }

    /// Serves the port until it stops, or until another thread takes the loop over (see [`crate::inline`]).
    pub fn run(mut self: Box<Self>) {
        // Says the loop ended when this thread ends it, even by a panic; not when the loop is taken over.
        let mut ends = LoopEnd { shared: Arc::clone(&self.shared), inline: self.inline.clone(), armed: true };
        let mut events = Events::with_capacity(1024);
        // Answers of requests run on the thread this loop was taken from (a pipelined request found while
        // writing them goes where this turn's would).
        self.inline_turn = self.runs_inline();
        self.write_ran();
        // Requests may have been queued for the thread this loop was taken from.
        let mut answers_left = true;
        let mut grow_at: Option<Duration> = None;
        loop {
            let fine = !self.in_flight.is_empty() || self.accept_retry_at.is_some() || self.stop_flush_until.is_some();
            self.inline_turn = self.runs_inline();
            if self.inline.is_some() && !self.inline_turn {
                // Requests queued for this thread when it ran them (before a takeover or a pause) go to workers.
                self.pool.kick();
            }
            // Answers left from the last turn are taken after a look at the sockets that does not wait.
            // So are requests queued for this thread (the next of a pipeline, found as an answer was written).
            let tick = if answers_left || (self.inline_turn && self.pool.has_queued()) {
                Duration::ZERO
            } else if fine {
                TICK
            } else {
                SLOW_TICK
            };
            // Requests wait with every worker busy: the pool may grow at the next look.
            let tick = grow_at.map_or(tick, |at| at.min(tick));
            if let Err(e) = self.poll.poll(&mut events, Some(tick)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("{} port: poll failed: {e}", self.config.name);
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(id) => self.service(id),
                }
            }
            answers_left = self.take_answers();
            // (A turn whose requests this thread runs needs no more workers: a held request is taken over.)
            grow_at = if self.inline_turn { None } else { self.pool.grow_if_starved() };
            let now = Instant::now();
            self.pump_streams(now);
            self.watchdog(now);
            self.sweep(now);
            if self.shared.stopping.load(Ordering::SeqCst) && self.stop_step(now) {
                break;
            }
            if self.inline_turn && self.pool.has_queued() {
                match self.run_queued() {
                    Ok(back) => self = back,
                    Err(pool) => {
                        // Another thread runs the loop: this one serves on as a worker, or ends.
                        ends.armed = false;
                        drop(ends);
                        pool.serve_as_worker();
                        return;
                    }
                }
            }
        }
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Whether this turn's requests are for this thread to run.
    fn runs_inline(&self) -> bool {
        self.inline.as_ref().is_some_and(|inline| inline.enabled()) && self.pool.may_strand_another()
    }

    /// Runs queued requests on this thread (for at most `inline::RUN_BUDGET`), the loop parked where the
    /// watch thread can hand it to another thread; then writes their answers. The pool, when the loop was
    /// taken over (another thread runs it).
    fn run_queued(self: Box<Self>) -> Result<Box<Self>, Pool> {
        let Some(inline) = self.inline.clone() else { return Ok(self) };
        let pool = self.pool.clone();
        let generation = inline.park(self);
        pool.run_queued(&inline, generation);
        let Some(mut this) = inline.unpark(generation) else { return Err(pool) };
        this.inline_turn = this.runs_inline();
        this.write_ran();
        Ok(this)
    }

    /// Keeps an answer of a request run on this thread while the loop is parked (see [`crate::inline`]).
    pub(crate) fn hold_answer(&mut self, conn: usize, response: Response) {
        self.ran.push((conn, response));
    }

    /// Writes the answers kept while the loop was parked.
    fn write_ran(&mut self) {
        let mut ran = std::mem::take(&mut self.ran);
        for (conn, response) in ran.drain(..) {
            self.write_answer(conn, response);
        }
        if self.ran.is_empty() {
            self.ran = ran;
        }
    }

    /// Write an answer handed over, streaming or not.
    fn write_answer(&mut self, conn: usize, mut response: Response) {
        match response.stream.take() {
            Some(source) => self.answer_stream(conn, &response, source),
            None => self.answer(conn, &response),
        }
    }

    /// Write the answers the other threads have handed over, and watch the deadlines they set: at most
    /// [`ANSWERS_PER_TAKE`], so a client pipelining requests that are answered at once (started here) cannot
    /// keep this thread from the other connections. True when some were left for the next turn.
    fn take_answers(&mut self) -> bool {
        self.pool.answers_taken();
        for _ in 0..ANSWERS_PER_TAKE {
            let Ok(message) = self.done.try_recv() else { return false };
            match message {
                Completion::Answer { conn, response } => self.write_answer(conn, response),
                Completion::Watch { conn, job } => {
                    if !job.settled() {
                        self.in_flight.push((conn, job));
                    }
                }
            }
        }
        true
    }

    /// One step of stopping; true when done.
    fn stop_step(&mut self, now: Instant) -> bool {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            self.shared.accepting.store(false, Ordering::SeqCst);
            self.stop_flush_until = Some(now + self.config.timeouts.write.min(Duration::from_secs(5)));
            let idle: Vec<usize> = self.conns.iter().filter(|(_, c)| c.reading()).map(|(id, _)| *id).collect();
            for id in idle {
                self.close(id);
            }
            let streams: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.state, State::Streaming { .. }))
                .map(|(id, _)| *id)
                .collect();
            for id in streams {
                self.end_stream(id);
                self.service(id);
            }
        }
        let waiting = self.conns.values().any(|c| matches!(c.state, State::Waiting { .. }));
        if waiting {
            return false;
        }
        let writing = self.conns.values().any(|c| c.out_pending());
        !writing || self.stop_flush_until.is_some_and(|t| now >= t)
    }

    /// Socket readiness (or a state change) on a connection: write, then read and parse what can be.
    fn service(&mut self, id: usize) {
        let cap = self.config.limits.head_bytes_max + READ_CHUNK;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            if conn.flush().is_err() {
                return self.close(id);
            }
            match conn.state {
                State::Waiting { .. } => return,
                State::Streaming { .. } => {
                    // Nothing more is read as a request: input is discarded, and the client's close ends it.
                    if conn.discard() {
                        self.close(id);
                    }
                    return;
                }
                State::Closing => {
                    if conn.out_pending() {
                        return;
                    }
                    conn.shutdown_write();
                    conn.state = State::Lingering { until: Instant::now() + LINGER };
                    continue;
                }
                State::Lingering { .. } => {
                    if conn.discard() {
                        self.close(id);
                    }
                    return;
                }
                _ => {}
            }
            if conn.out_backlog() > OUT_HIGH_WATER {
                // Writable readiness brings this connection back.
                return;
            }
            self.advance(id);
            let Some(conn) = self.conns.get_mut(&id) else { return };
            if !conn.reading() {
                continue;
            }
            // An interim `100 Continue` goes out before the body is awaited.
            if conn.out_pending() && conn.flush().is_err() {
                return self.close(id);
            }
            if conn.peer_eof {
                // Mid-request or between requests: the request (if any) is incomplete and never handed on.
                if conn.out_pending() {
                    self.body.release(conn.peer.ip(), std::mem::take(&mut conn.body_held));
                    conn.state = State::Closing;
                    return;
                }
                return self.close(id);
            }
            match conn.read_some(cap) {
                Ok(0) if !conn.peer_eof => return,
                Ok(_) => {}
                Err(e) => {
                    log::debug!("{} port: {}: {e}", self.config.name, conn.peer);
                    return self.close(id);
                }
            }
        }
    }

    /// Take what the read buffer holds as far as it goes: a head, body bytes, a whole request.
    fn advance(&mut self, id: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            let now = Instant::now();
            match &mut conn.state {
                State::Idle { .. } | State::Head { .. } => {
                    if conn.inbuf.is_empty() {
                        return;
                    }
                    if matches!(conn.state, State::Idle { .. }) {
                        conn.state = State::Head { started: now };
                    }
                    let (head, len) = match parse::head(&conn.inbuf, &self.config.limits) {
                        Ok(Some(parsed)) => parsed,
                        Ok(None) => return,
                        Err(reject) => return self.reject(id, &reject),
                    };
                    conn.inbuf.drain(..len);
                    let limit = self.handler.body_limit(&head.method, head.path()) as u64;
                    let framing = match head.framing {
                        Framing::Length(n) if n > limit => {
                            let detail = format!("the body is over {limit} bytes");
                            return self.reject(id, &Reject::new(413, "payload too large", detail));
                        }
                        Framing::Length(0) => return self.dispatch(id, head, Vec::new()),
                        Framing::Length(n) => BodyState::Length(n),
                        Framing::Chunked => BodyState::Chunked(Box::new(Chunked::new(limit, &self.config.limits))),
                    };
                    let request = Request {
                        method: head.method.clone(),
                        target: head.target.clone(),
                        headers: head.headers.clone(),
                        body: Vec::new(),
                        peer: Some(conn.peer),
                        secure: conn.tls.is_some(),
                    };
                    if let Some(refusal) = self.handler.screen(&request) {
                        return self.reject_with(id, &refusal);
                    }
                    let Some(conn) = self.conns.get_mut(&id) else { return };
                    if head.expect_continue {
                        conn.queue_raw(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let capacity = match framing {
                        BodyState::Length(n) => usize::try_from(n).unwrap_or(0).min(READ_CHUNK * 4),
                        BodyState::Chunked(_) => 0,
                    };
                    let body = Vec::with_capacity(capacity);
                    conn.state = State::Body { head: Box::new(head), body, framing, started: now, last: now };
                }
                State::Body { body, framing, last, .. } => {
                    if conn.inbuf.is_empty() {
                        return;
                    }
                    *last = now;
                    let complete = match framing {
                        BodyState::Length(left) => {
                            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.inbuf.len());
                            // Grow geometrically but never past the declared length, so the memory a body
                            // holds (and is budgeted for) is at most its Content-Length.
                            let total = body.len().saturating_add(usize::try_from(*left).unwrap_or(usize::MAX));
                            if body.capacity() < body.len() + n {
                                let grown = body.capacity().saturating_mul(2).max(body.len() + n).min(total);
                                body.reserve_exact(grown - body.len());
                            }
                            body.extend_from_slice(&conn.inbuf[..n]);
                            conn.inbuf.drain(..n);
                            *left -= n as u64;
                            *left == 0
                        }
                        BodyState::Chunked(chunked) => match chunked.feed(&conn.inbuf, body) {
                            Ok(used) => {
                                conn.inbuf.drain(..used);
                                chunked.done()
                            }
                            Err(reject) => return self.reject(id, &reject),
                        },
                    };
                    let held = body.capacity();
                    let limits = &self.config.limits;
                    let within = self.body.hold(conn.peer.ip(), conn.body_held, held, limits);
                    conn.body_held = held;
                    if !within {
                        let detail = "the port is receiving too many request bodies at once; try again shortly";
                        let answer = Response::error(503, "overloaded", detail).with_header("Retry-After", "1");
                        return self.reject_with(id, &answer);
                    }
                    if !complete {
                        return;
                    }
                    let state = std::mem::replace(&mut conn.state, State::Closing);
                    if let State::Body { head, body, .. } = state {
                        return self.dispatch(id, *head, body);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    /// Hand a complete request to the pool (503 when its queue is full).
    fn dispatch(&mut self, id: usize, head: parse::Head, body: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let head_only = head.method == "HEAD";
        let (keep_alive, minor) = (head.keep_alive, head.minor);
        let request = Request {
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
            peer: Some(conn.peer),
            secure: conn.tls.is_some(),
        };
        let deadline_ms = self.shared.deadline_ms.load(Ordering::Relaxed);
        let deadline = (deadline_ms > 0).then(|| Instant::now() + Duration::from_millis(deadline_ms));
        let job = Arc::new(Job::new(deadline));
        conn.state = State::Waiting { head_only, keep_alive, minor };
        let request = match self.starts {
            true => match self.pool.start_inline(id, &job, request) {
                Some(request) => request,
                None => {
                    if deadline.is_some() {
                        self.in_flight.push((id, job));
                    }
                    return;
                }
            },
            false => request,
        };
        let queued = match self.inline_turn {
            true => self.pool.submit_inline(id, Arc::clone(&job), request),
            false => self.pool.submit(id, Arc::clone(&job), request),
        };
        match queued {
            true => {
                if deadline.is_some() {
                    self.in_flight.push((id, job));
                }
            }
            false => {
                let detail = "every worker is busy and the queue is full";
                let answer = Response::error(503, "overloaded", detail).with_header("Retry-After", "1");
                // The caller (`service`) goes on with this connection.
                self.queue_answer(id, &answer);
            }
        }
    }

    /// Write the answer to the request a connection waits for; then on to its next request.
    fn answer(&mut self, id: usize, response: &Response) {
        self.queue_answer(id, response);
        self.service(id);
    }

    fn queue_answer(&mut self, id: usize, response: &Response) {
        let stopping = self.shared.stopping.load(Ordering::SeqCst);
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let State::Waiting { head_only, keep_alive, minor, .. } = conn.state else { return };
        let keep_alive = keep_alive && !stopping;
        conn.queue_response(response, head_only, keep_alive, minor);
        self.body.release(conn.peer.ip(), std::mem::take(&mut conn.body_held));
        conn.state = if keep_alive { State::Idle { since: Instant::now() } } else { State::Closing };
        if conn.inbuf.is_empty() {
            // Idle connections hold no read buffer.
            conn.inbuf = Vec::new();
        }
        self.in_flight.retain(|(c, _)| *c != id);
    }

    /// Answer an error and close.
    fn reject(&mut self, id: usize, reject: &Reject) {
        if let Some(conn) = self.conns.get(&id) {
            log::debug!("{} port: {}: {} {}", self.config.name, conn.peer, reject.status, reject.detail);
        }
        self.reject_with(id, &Response::error(reject.status, reject.error, &reject.detail));
    }

    /// Answer `answer` (an error) and close; the request's body is dropped.
    pub(super) fn reject_with(&mut self, id: usize, answer: &Response) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.inbuf.clear();
        conn.queue_response(answer, false, false, 1);
        self.body.release(conn.peer.ip(), std::mem::take(&mut conn.body_held));
        conn.state = State::Closing;
    }

    /// Answer 504 for requests past their deadline (their handlers are abandoned by the pool).
    fn watchdog(&mut self, now: Instant) {
        if self.in_flight.is_empty() {
            return;
        }
        let mut overdue = Vec::new();
        self.in_flight.retain(|(id, job)| {
            if job.settled() {
                return false;
            }
            let due = job.deadline().and_then(|d| d.checked_add(GRACE)).is_some_and(|at| now >= at);
            if due {
                overdue.push((*id, Arc::clone(job)));
            }
            !due
        });
        for (id, job) in overdue {
            if self.pool.expire(&job) {
                let response = job.with_answer_headers(self.handler.overdue(&job));
                self.answer(id, &response);
            }
        }
    }

    /// Timeouts of every connection, and a paused accept's retry.
    fn sweep(&mut self, now: Instant) {
        let t = &self.config.timeouts;
        let mut expired = Vec::new();
        let mut timed_out = Vec::new();
        for (id, conn) in &self.conns {
            if conn.write_stalled_since.is_some_and(|since| now >= since + t.write) {
                expired.push(*id);
                continue;
            }
            match &conn.state {
                State::Idle { since } if now >= *since + t.idle => expired.push(*id),
                State::Head { started } if now >= *started + t.header => {
                    if conn.inbuf.is_empty() && conn.tls.as_ref().is_some_and(|s| s.is_handshaking()) {
                        expired.push(*id);
                    } else {
                        timed_out.push((*id, "the request head took too long"));
                    }
                }
                State::Body { started, last, .. } if now >= *started + t.body || now >= *last + t.body_idle => {
                    timed_out.push((*id, "the request body took too long"));
                }
                State::Lingering { until } if now >= *until => expired.push(*id),
                _ => {}
            }
        }
        for id in expired {
            self.close(id);
        }
        for (id, detail) in timed_out {
            self.reject(id, &Reject::new(408, "request timeout", detail));
            self.service(id);
        }
        let retry = self.accept_retry_at.is_some_and(|at| now >= at);
        let below_cap = !self.shared.accepting.load(Ordering::SeqCst) && self.conns.len() < self.conn_cap;
        if retry || (below_cap && self.accept_retry_at.is_none()) {
            self.accept_all();
        }
    }
}

/// Request body bytes a port holds, in all and per client address.
#[derive(Default)]
struct BodyBudget {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl BodyBudget {
    /// A connection from `ip` now holds `new` bytes instead of `old`; whether the port and the address are
    /// still within their limits.
    fn hold(&mut self, ip: IpAddr, old: usize, new: usize, limits: &crate::Limits) -> bool {
        self.release(ip, old);
        self.total += new;
        let mine = self.per_ip.entry(ip).or_insert(0);
        *mine += new;
        self.total <= limits.body_bytes_total_max && *mine <= limits.body_bytes_per_ip_max
    }

    /// A connection from `ip` gives back `bytes`.
    fn release(&mut self, ip: IpAddr, bytes: usize) {
        self.total -= bytes;
        if let Some(mine) = self.per_ip.get_mut(&ip) {
            *mine -= bytes;
            if *mine == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_the_whole_port_budget() {
        let limits = crate::Limits { body_bytes_total_max: 100, body_bytes_per_ip_max: 60, ..Default::default() };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut budget = BodyBudget::default();
        assert!(budget.hold(a, 0, 50, &limits));
        assert!(!budget.hold(a, 0, 20, &limits), "a second body from the same address passes its share");
        budget.release(a, 20);
        assert!(budget.hold(b, 0, 50, &limits), "another address still gets room");
        assert!(!budget.hold(b, 50, 60, &limits), "the port's total is still a bound");
        budget.release(a, 50);
        budget.release(b, 60);
        assert_eq!(budget.total, 0);
        assert!(budget.per_ip.is_empty());
    }
}
