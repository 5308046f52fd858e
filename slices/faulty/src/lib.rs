//! The `faulty` test slice: misbehaves on demand, to prove the node survives it.
//!
//! Routes: `GET /faulty/panic` panics inside the slice; `GET /faulty/hang` never returns;
//! `GET /faulty/ok` answers `{"ok": true}`; `GET /faulty/slow/{ms}` answers after sleeping `ms`
//! milliseconds (at most a minute); `GET /faulty/count` answers how many calls of each kind this
//! instance started (`{"panic","hang","ok","slow","count","spawned-call"}`), so a test can tell whether a call ever
//! reached the slice. `GET /faulty/spawned-call/{artifact}/{method}` calls `method` of `artifact` from a
//! thread it starts inside the call (carrying the call's deadline and hops there) and answers with the
//! callee's answer. Config `on_start` = `panic` or `hang` makes `start` itself panic or never return,
//! `refuse` makes `start` return the slice's own error (`faulty: refusing to start: <on_start_message>`),
//! `abort` aborts the whole process from `start` (as a native library that segfaults while starting
//! would), and `thread` starts a background thread that `stop` never joins (it runs the slice's code until
//! the process ends); config `on_stop` = `hang` makes `stop` never return (a node stopping
//! with it must still exit within its stop bound). A new config with `on_reconfigure` = `panic` or `hang`
//! makes `reconfigure` panic or never return.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

pub struct Faulty {
    ctx: Arc<Context>,
    hang_on_stop: bool,
    /// Calls started, by method (in `METHODS` order).
    started: [AtomicU64; 6],
}

/// Longest sleep `slow` takes.
const SLOW_MS_MAX: u64 = 60_000;

impl Slice for Faulty {
    const NAME: &'static str = "faulty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[
        Method::new("panic"),
        Method::new("hang"),
        Method::new("ok"),
        Method::new("slow"),
        Method::new("count"),
        Method::new("spawned-call"),
    ];
    const ROUTES: &'static [Route] = &[
        Route::get("/faulty/panic", "panic"),
        Route::get("/faulty/hang", "hang"),
        Route::get("/faulty/ok", "ok"),
        Route::get("/faulty/slow/{ms}", "slow"),
        Route::get("/faulty/count", "count"),
        Route::get("/faulty/spawned-call/{artifact}/{method}", "spawned-call"),
    ];

    fn start(ctx: Context, config: &Config) -> Result<Faulty, aether_sdk::Error> {
        let ctx = Arc::new(ctx);
        match config.get("on_start") {
            Some("panic") => panic!("faulty: asked to panic in start"),
            Some("hang") => hang(),
            Some("refuse") => {
                let detail = config.get("on_start_message").unwrap_or("asked to");
                Err(aether_sdk::Error::new(format!("faulty: refusing to start: {detail}")))
            }
            Some("abort") => std::process::abort(),
            Some("thread") => {
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_millis(20));
                });
                Ok(Faulty { ctx, hang_on_stop: false, started: Default::default() })
            }
            _ => Ok(Faulty { ctx, hang_on_stop: config.get("on_stop") == Some("hang"), started: Default::default() }),
        }
    }

    fn reconfigure(&self, config: &Config) -> Result<(), aether_sdk::Error> {
        match config.get("on_reconfigure") {
            Some("panic") => panic!("faulty: asked to panic in reconfigure"),
            Some("hang") => hang(),
            _ => Ok(()),
        }
    }

    fn stop(self) {
        if self.hang_on_stop {
            hang();
        }
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        if let Some(at) = Self::METHODS.iter().position(|m| m.name() == method) {
            self.started[at].fetch_add(1, Ordering::SeqCst);
        }
        match method {
            "panic" => panic!("faulty: asked to panic in call"),
            "hang" => hang(),
            "slow" => {
                let Some(ms) = request.param("ms").and_then(|ms| ms.parse::<u64>().ok()) else {
                    return Response::error(Status::BadRequest, "ms must be a whole number of milliseconds");
                };
                let ms = ms.min(SLOW_MS_MAX);
                std::thread::sleep(Duration::from_millis(ms));
                Response::json(json::Object::new().int("slept_ms", ms as i64).finish())
            }
            "spawned-call" => {
                let (Some(artifact), Some(callee)) = (request.param("artifact"), request.param("method")) else {
                    return Response::error(Status::BadRequest, "artifact and method are required");
                };
                let (ctx, artifact, callee) = (Arc::clone(&self.ctx), artifact.to_owned(), callee.to_owned());
                let caller =
                    aether_sdk::spawn_in_call(&self.ctx, move || ctx.call_params(&artifact, &callee, &[], b""));
                caller.join().unwrap_or_else(|_| Response::error(Status::Internal, "the calling thread panicked"))
            }
            "count" => {
                let mut counts = json::Object::new();
                for (method, started) in Self::METHODS.iter().zip(&self.started) {
                    counts = counts.int(method.name(), started.load(Ordering::SeqCst) as i64);
                }
                Response::json(counts.finish())
            }
            _ => Response::json(json::Object::new().bool("ok", true).finish()),
        }
    }
}

/// Sleep forever, waking rarely (no busy loop).
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

aether_sdk::export_slice!(Faulty);
