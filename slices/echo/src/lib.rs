//! The `echo` example slice: answers what it is sent.
//!
//! One source builds two artifacts, `org.aether.examples:echo:1.0.0` (crate `slice-echo`) and
//! `:2.0.0` (crate `slice-echo-v2`); the version in every answer is the crate's, so two versions
//! running side by side can be told apart.
//!
//! Routes: `GET /echo/{msg}` -> `{"echo": msg, "version": ..., "node": ...}`; `POST /echo` answers
//! the body back unchanged.

use sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

pub struct Echo {
    ctx: Context,
}

impl Slice for Echo {
    const NAME: &'static str = "echo";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("echo"), Method::new("echo_body")];
    const ROUTES: &'static [Route] = &[Route::get("/echo/{msg}", "echo"), Route::post("/echo", "echo_body")];

    fn start(ctx: Context, _config: &Config) -> Result<Echo, sdk::Error> {
        Ok(Echo { ctx })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        match method {
            "echo" => self.echo(request),
            _ => Response::binary(request.body()),
        }
    }
}

impl Echo {
    fn echo(&self, request: &Request<'_>) -> Response {
        let Some(msg) = request.param("msg") else {
            return Response::error(Status::BadRequest, "path parameter `msg` is missing");
        };
        Response::json(
            json::Object::new().str("echo", msg).str("version", Self::VERSION).str("node", self.ctx.node_id()).finish(),
        )
    }
}

sdk::export_slice!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::RequestBuilder;

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
}
