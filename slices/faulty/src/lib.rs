//! The `faulty` test slice: misbehaves on demand, to prove the node survives it.
//!
//! Routes: `GET /faulty/panic` panics inside the slice; `GET /faulty/hang` never returns;
//! `GET /faulty/ok` answers `{"ok": true}`. Config `on_start` = `panic` or `hang` makes `start`
//! itself panic or never return, `abort` aborts the whole process from `start` (as a native library
//! that segfaults while starting would), and `thread` starts a background thread that `stop` never joins
//! (it runs the slice's code until the process ends); config `on_stop` = `hang` makes `stop` never return (a node stopping
//! with it must still exit within its stop bound).

use std::time::Duration;

use sdk::{json, Config, Context, Method, Request, Response, Route, Slice};

pub struct Faulty {
    hang_on_stop: bool,
}

impl Slice for Faulty {
    const NAME: &'static str = "faulty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("panic"), Method::new("hang"), Method::new("ok")];
    const ROUTES: &'static [Route] =
        &[Route::get("/faulty/panic", "panic"), Route::get("/faulty/hang", "hang"), Route::get("/faulty/ok", "ok")];

    fn start(_ctx: Context, config: &Config) -> Result<Faulty, sdk::Error> {
        match config.get("on_start") {
            Some("panic") => panic!("faulty: asked to panic in start"),
            Some("hang") => hang(),
            Some("abort") => std::process::abort(),
            Some("thread") => {
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_millis(20));
                });
                Ok(Faulty { hang_on_stop: false })
            }
            _ => Ok(Faulty { hang_on_stop: config.get("on_stop") == Some("hang") }),
        }
    }

    fn stop(self) {
        if self.hang_on_stop {
            hang();
        }
    }

    fn call(&self, method: &str, _request: &Request<'_>) -> Response {
        match method {
            "panic" => panic!("faulty: asked to panic in call"),
            "hang" => hang(),
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

sdk::export_slice!(Faulty);
