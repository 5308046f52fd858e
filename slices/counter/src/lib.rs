//! The `counter` example slice: named counters, kept in the memory of one instance.
//!
//! Routes: `POST /counter/{name}/incr` adds one and answers `{"name", "value"}`;
//! `GET /counter/{name}` answers the current value (0 for a counter never incremented).
//! Two instances count separately: state is per instance, not shared through the cluster.

use std::collections::HashMap;
use std::sync::Mutex;

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

/// Longest counter name accepted, and most counters one instance keeps.
const NAME_BYTES_MAX: usize = 256;
const COUNTERS_MAX: usize = 10_000;

pub struct Counter {
    counters: Mutex<HashMap<String, i64>>,
}

impl Slice for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("incr"), Method::new("get")];
    const ROUTES: &'static [Route] =
        &[Route::post("/counter/{name}/incr", "incr"), Route::get("/counter/{name}", "get")];

    fn start(_ctx: Context, _config: &Config) -> Result<Counter, aether_sdk::Error> {
        Ok(Counter { counters: Mutex::new(HashMap::new()) })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        let Some(name) = request.param("name") else {
            return Response::error(Status::BadRequest, "path parameter `name` is missing");
        };
        if name.len() > NAME_BYTES_MAX {
            return Response::error(Status::BadRequest, "counter name is too long");
        }
        let value = match method {
            "incr" => self.incr(name),
            _ => Ok(self.get(name)),
        };
        match value {
            Ok(value) => Response::json(json::Object::new().str("name", name).int("value", value).finish()),
            Err(response) => response,
        }
    }
}

impl Counter {
    fn incr(&self, name: &str) -> Result<i64, Response> {
        // A poisoned lock only means another call panicked mid-update of a plain integer map.
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !counters.contains_key(name) && counters.len() >= COUNTERS_MAX {
            return Err(Response::error(Status::Conflict, "too many counters"));
        }
        let value = counters.entry(name.to_owned()).or_insert(0);
        *value = value.saturating_add(1);
        Ok(*value)
    }

    fn get(&self, name: &str) -> i64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.get(name).copied().unwrap_or(0)
    }
}

aether_sdk::export_slice!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    fn value(counter: &Counter, method: &str, name: &str) -> i64 {
        let bytes = RequestBuilder::new().param("name", name).encode().unwrap();
        let response = counter.call(method, &Request::parse(&bytes).unwrap());
        json::parse(&response.body).unwrap().get("value").and_then(json::Value::as_i64).unwrap()
    }

    #[test]
    fn counters_count_separately() {
        let counter = Counter::start(Context::detached("n1"), &Config::default()).unwrap();
        assert_eq!(value(&counter, "get", "a"), 0);
        assert_eq!(value(&counter, "incr", "a"), 1);
        assert_eq!(value(&counter, "incr", "a"), 2);
        assert_eq!(value(&counter, "incr", "b"), 1);
        assert_eq!(value(&counter, "get", "a"), 2);
    }
}
