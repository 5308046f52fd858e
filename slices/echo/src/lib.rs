//! The `echo` example slice: answers what it is sent.
//!
//! One source builds two artifacts, `org.aether.examples:echo:1.0.0` (crate `slice-echo`) and
//! `:2.0.0` (crate `slice-echo-v2`); the version in every answer is the crate's, so two versions
//! running side by side can be told apart.
//!
//! Routes: `GET /echo/{msg}` -> `{"echo": msg, "version": ..., "node": ...}`; `POST /echo` answers
//! the body back unchanged. The probes in [`probe`] show what the SDK carries: HTTP method, path,
//! header fields and any status both ways (`GET|POST /echo/status/{code}`, and through a
//! slice-to-slice call `POST /echo/relay/{code}`), the invocation context (`GET /echo/invocation`,
//! `GET /echo/relay-invocation`), live config (`GET /echo/config/{key}`; a config with the key
//! `refuse` is refused by `reconfigure`), cluster state (`POST /echo/kv/{op}`), and a version that fails on
//! purpose (`GET /echo/fail-on/{version}`: 500 from that version, 200 from any other).

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

pub mod probe;

pub struct Echo {
    ctx: Context,
    /// Bodies of the cluster-state changes delivered to `kv-change`, in order.
    changes: std::sync::Mutex<Vec<String>>,
}

impl Slice for Echo {
    const NAME: &'static str = "echo";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[
        Method::new("echo"),
        Method::new("echo_body"),
        Method::new("status"),
        Method::new("relay"),
        Method::new("invocation"),
        Method::new("relay-invocation"),
        Method::new("config"),
        Method::new("kv"),
        Method::new("kv-change"),
        Method::new("kv-changes"),
        Method::new("fail-on"),
    ];
    const ROUTES: &'static [Route] = &[
        Route::get("/echo/{msg}", "echo"),
        Route::post("/echo", "echo_body"),
        Route::get("/echo/status/{code}", "status"),
        Route::post("/echo/status/{code}", "status"),
        Route::post("/echo/relay/{code}", "relay"),
        Route::get("/echo/invocation/now", "invocation"),
        Route::get("/echo/invocation/relayed", "relay-invocation"),
        Route::get("/echo/config/{key}", "config"),
        Route::post("/echo/kv/{op}", "kv"),
        Route::get("/echo/kv-changes/all", "kv-changes"),
        Route::get("/echo/fail-on/{version}", "fail-on"),
    ];

    fn start(ctx: Context, _config: &Config) -> Result<Echo, aether_sdk::Error> {
        Ok(Echo { ctx, changes: std::sync::Mutex::new(Vec::new()) })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        match method {
            "echo" => self.echo(request),
            "echo_body" => Response::binary(request.body()),
            "status" => probe::status(request),
            "relay" => probe::relay(&self.ctx, Self::artifact(), request),
            "invocation" => probe::invocation(&self.ctx),
            "relay-invocation" => probe::relay_invocation(&self.ctx, Self::artifact()),
            "config" => probe::config(&self.ctx, request),
            "kv" => probe::kv(&self.ctx, request),
            "fail-on" => self.fail_on(request),
            "kv-change" => {
                let body = request.body_str().unwrap_or_default().to_owned();
                self.changes.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                Response::no_content()
            }
            _ => {
                let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
                Response::json(format!("[{}]", changes.join(",")))
            }
        }
    }

    fn reconfigure(&self, config: &Config) -> Result<(), aether_sdk::Error> {
        match config.get("refuse") {
            Some(why) => Err(aether_sdk::Error::new(format!("echo refuses this config: {why}"))),
            None => Ok(()),
        }
    }
}

impl Echo {
    /// This slice's own artifact (the target of its relays).
    fn artifact() -> &'static str {
        concat!("org.aether.examples:echo:", env!("CARGO_PKG_VERSION"))
    }

    /// `GET /echo/fail-on/{version}`: a 500 from the named version, the usual answer from any other (a
    /// version that fails on purpose, for rollouts' health thresholds).
    fn fail_on(&self, request: &Request<'_>) -> Response {
        if request.param("version") == Some(Self::VERSION) {
            return Response::error(
                Status::INTERNAL_SERVER_ERROR,
                concat!("echo ", env!("CARGO_PKG_VERSION"), " fails here"),
            );
        }
        Response::json(json::Object::new().str("version", Self::VERSION).str("node", self.ctx.node_id()).finish())
    }

    fn echo(&self, request: &Request<'_>) -> Response {
        let Some(msg) = request.param("msg") else {
            return Response::error(Status::BAD_REQUEST, "path parameter `msg` is missing");
        };
        Response::json(
            json::Object::new().str("echo", msg).str("version", Self::VERSION).str("node", self.ctx.node_id()).finish(),
        )
    }
}

aether_sdk::export_slice!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    fn call(method: &str, request: RequestBuilder) -> Response {
        let echo = Echo::start(Context::detached("n1"), &Config::default()).unwrap();
        let bytes = request.encode().unwrap();
        echo.call(method, &Request::parse(&bytes).unwrap())
    }

    #[test]
    fn echo_answers_message_version_and_node() {
        let response = call("echo", RequestBuilder::new().param("msg", "hi \"there\""));
        let value = json::parse(&response.body).unwrap();
        assert_eq!(value.get("echo").and_then(json::Value::as_str), Some("hi \"there\""));
        assert_eq!(value.get("version").and_then(json::Value::as_str), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(value.get("node").and_then(json::Value::as_str), Some("n1"));
    }

    #[test]
    fn echo_body_answers_the_body_back() {
        let response = call("echo_body", RequestBuilder::new().body(&b"\x00raw bytes\xff"[..]));
        assert_eq!(response.body, b"\x00raw bytes\xff");
    }

    #[test]
    fn status_answers_the_code_asked_with_its_headers() {
        let request = RequestBuilder::new().method("POST").path("/echo/status/201").param("code", "201");
        let created = call("status", request.header("X-Probe", "a").header("x-probe", "b"));
        assert_eq!((created.status.http(), created.header("location")), (201, Some("/echo/created")));
        assert_eq!(created.header("x-echo-probe"), Some("a,b"));
        assert_eq!(created.header("x-echo-method"), Some("POST"));
        let found = call("status", RequestBuilder::new().param("code", "302").query("to", "/there"));
        assert_eq!((found.status.http(), found.header("Location")), (302, Some("/there")));
        assert_eq!(call("status", RequestBuilder::new().param("code", "204")).body.len(), 0);
        assert_eq!(call("status", RequestBuilder::new().param("code", "600")).status, Status::BAD_REQUEST);
    }

    #[test]
    fn a_config_with_refuse_is_refused() {
        let echo = Echo::start(Context::detached("n1"), &Config::default()).unwrap();
        assert!(echo.reconfigure(&Config::from_pairs([("greeting", "hi")])).is_ok());
        let refused = echo.reconfigure(&Config::from_pairs([("refuse", "no thanks")])).unwrap_err();
        assert!(refused.to_string().contains("no thanks"));
    }
}
