//! The `ticker` example slice: scheduled tasks that record every run durably in the slice's cluster state.
//!
//! Tasks: `minutely` (cron `* * * * *`, UTC; missed runs: run once) and `pulse` (every 2000 ms; missed runs:
//! run all, the newest 3). Each run creates `runs/{task}/{due ms}` in `ctx.kv()` (create-only, value
//! `{"node", "ran_ms", "run", "scheduled_for"}`); a run that finds its key already there is a duplicate and is counted
//! under `duplicates/{task}/{due ms}/{run}` instead, so a test can tell "ran twice" from "ran once".
//!
//! Route: `GET /ticker/runs` answers `{"minutely": [[due ms, ran ms]...], "pulse": [...], "duplicates": [keys]}`,
//! read from the cluster state (so any instance answers the same).

use aether_sdk::{
    json, kv::KvError, Config, Context, Method, Missed, Request, Response, Route, Schedule, Slice, Status,
};

/// Most runs `GET /ticker/runs` lists per task (the host's bound on one list).
const LIST_MAX: usize = 1_000;
/// Longest header value read.
const HEADER_BYTES_MAX: usize = 64;

pub struct Ticker {
    ctx: Context,
}

impl Slice for Ticker {
    const NAME: &'static str = "ticker";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("minutely"), Method::new("pulse"), Method::new("runs")];
    const ROUTES: &'static [Route] = &[Route::get("/ticker/runs", "runs")];
    const SCHEDULES: &'static [Schedule] = &[
        Schedule::cron("minutely", "* * * * *", "minutely").on_missed(Missed::RunOnce),
        Schedule::every_ms("pulse", 2_000, "pulse").on_missed(Missed::RunAll(3)),
    ];

    fn start(ctx: Context, _config: &Config) -> Result<Ticker, aether_sdk::Error> {
        Ok(Ticker { ctx })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        match method {
            "minutely" | "pulse" => self.record(method, request),
            _ => self.runs(),
        }
    }
}

fn header<'a>(request: &Request<'a>, name: &str) -> Option<&'a str> {
    request.header(name).filter(|v| !v.is_empty() && v.len() <= HEADER_BYTES_MAX)
}

fn unavailable(e: &KvError) -> Response {
    Response::error(Status::Unavailable, &format!("cluster state: {e}"))
}

impl Ticker {
    fn record(&self, task: &str, request: &Request<'_>) -> Response {
        let Some(due) = header(request, "x-aether-scheduled-for-ms").filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        else {
            return Response::error(Status::BadRequest, "X-Aether-Scheduled-For-Ms is missing or not a number");
        };
        let run = header(request, "x-aether-run").filter(|v| v.bytes().all(|b| b.is_ascii_digit())).unwrap_or("0");
        let scheduled_for = header(request, "x-aether-scheduled-for").unwrap_or("");
        let ran_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let value = json::Object::new()
            .str("node", self.ctx.node_id())
            .int("ran_ms", ran_ms)
            .str("run", run)
            .str("scheduled_for", scheduled_for)
            .finish();
        let kv = self.ctx.kv();
        match kv.compare_and_set(&format!("runs/{task}/{due}"), None, value.as_bytes()) {
            Ok(_) => Response::json(json::Object::new().str("recorded", due).finish()),
            Err(KvError::VersionMismatch { .. }) => {
                match kv.put(&format!("duplicates/{task}/{due}/{run}"), value.as_bytes()) {
                    Ok(_) => Response::json(json::Object::new().str("duplicate", due).finish()),
                    Err(e) => unavailable(&e),
                }
            }
            Err(e) => unavailable(&e),
        }
    }

    fn runs(&self) -> Response {
        let kv = self.ctx.kv();
        // `[due ms, ran ms]` per run, in key order.
        let dues = |task: &str| -> Result<Vec<(i64, i64)>, KvError> {
            let prefix = format!("runs/{task}/");
            let entries = kv.list(&prefix, LIST_MAX)?;
            let ran = |e: &aether_sdk::kv::Entry| json::parse(&e.value).ok()?.get("ran_ms")?.as_i64();
            Ok(entries
                .iter()
                .filter_map(|e| Some((e.key.strip_prefix(&prefix)?.parse().ok()?, ran(e).unwrap_or(0))))
                .collect())
        };
        let listed = (|| Ok::<_, KvError>((dues("minutely")?, dues("pulse")?, kv.list("duplicates/", LIST_MAX)?)))();
        match listed {
            Ok((minutely, pulse, duplicates)) => {
                let pairs = |v: &[(i64, i64)]| {
                    let items: Vec<String> = v.iter().map(|(due, ran)| format!("[{due},{ran}]")).collect();
                    format!("[{}]", items.join(","))
                };
                let mut keys = String::from("[");
                for (i, e) in duplicates.iter().enumerate() {
                    if i > 0 {
                        keys.push(',');
                    }
                    json::write_str(&mut keys, &e.key);
                }
                keys.push(']');
                Response::json(
                    json::Object::new()
                        .raw("minutely", &pairs(&minutely))
                        .raw("pulse", &pairs(&pulse))
                        .raw("duplicates", &keys)
                        .finish(),
                )
            }
            Err(e) => unavailable(&e),
        }
    }
}

aether_sdk::export_slice!(Ticker);
