//! A test facility: drive this node's slice state without a slice, to test it through real consensus.
//!
//! Off unless the process starts with `AETHER_SLICE_STATE_DEBUG={loopback address}:{port}`; then the node
//! listens there (loopback only, no authentication: never enable it outside tests) for lines of JSON, one
//! request per line, and answers each with one line of JSON. Requests name the calling artifact as a slice's
//! container would, and go through the same [`NodeSliceState`] methods `ctx.kv()` reaches, so through the
//! event loop and consensus like a slice's. Watches registered here deliver to a recorder instead of a slice
//! instance (there is none); `deliveries` reads what it recorded.
//!
//! ```text
//! {"op":"put","artifact":"g:a:1.0.0","key":"k","value":"v"}          -> {"ok":7}
//! {"op":"get","artifact":"g:a:1.0.0","key":"k"}                      -> {"ok":{"key":"k","value":"v","version":7}}
//! {"op":"cas","artifact":"g:a:1.0.0","key":"k","expected":7,"value":"w"}
//! {"op":"delete","artifact":"g:a:1.0.0","key":"k"}                   -> {"ok":true}
//! {"op":"list","artifact":"g:a:1.0.0","prefix":"","limit":10}        -> {"ok":[...]}
//! {"op":"watch","artifact":"g:a:1.0.0","instance":1,"prefix":"","method":"changed"}
//! {"op":"unwatch","artifact":"g:a:1.0.0","instance":1}
//! {"op":"deliveries","instance":1}                                   -> {"ok":[{"method":...,"body":{...}}]}
//! failures: {"error":{"kind":"quota_exceeded","what":"keys","limit":3}} (kinds as StateError's variants)
//! ```

use super::watch::{Deliver, Delivered};
use super::NodeSliceState;
use container::state::{SliceEntry, SliceState, StateError};

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The variable that turns the facility on.
pub const ENV: &str = "AETHER_SLICE_STATE_DEBUG";
/// Most deliveries the recorder keeps (the oldest go first).
const RECORDED_MAX: usize = 10_000;
/// Longest request line.
const LINE_BYTES_MAX: usize = 2 * 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(6);
/// Most connections served at once; more are closed at once.
const CONNECTIONS_MAX: usize = 16;

/// Records deliveries, per instance, for `deliveries`.
#[derive(Default)]
pub struct Recorder {
    recorded: Mutex<Vec<(u64, String, Value)>>,
}

impl Deliver for Recorder {
    fn deliver(&self, _artifact: &str, instance: u64, method: &str, body: &[u8]) -> Delivered {
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut recorded = self.recorded.lock();
        if recorded.len() >= RECORDED_MAX {
            recorded.remove(0);
        }
        recorded.push((instance, method.to_owned(), body));
        Delivered::Done
    }
}

/// Starts the facility when [`ENV`] names a loopback address; `Ok(None)` when it is unset.
pub fn start_from_env(state: impl FnOnce(Arc<Recorder>) -> NodeSliceState) -> Result<Option<SocketAddr>, String> {
    let Some((listener, addr)) = crate::debug_port::bind_from_env(ENV, "slice state")? else { return Ok(None) };
    let recorder = Arc::new(Recorder::default());
    let state = state(Arc::clone(&recorder));
    crate::debug_port::serve_connections(
        listener,
        "slice-state-debug",
        "slice state",
        CONNECTIONS_MAX,
        move |stream| serve(stream, &state, &recorder),
    )?;
    Ok(Some(addr))
}

fn serve(stream: &TcpStream, state: &NodeSliceState, recorder: &Recorder) {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(LINE_BYTES_MAX as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = match serde_json::from_slice::<Value>(&line) {
            Ok(request) => handle(state, recorder, &request),
            Err(e) => json!({ "error": { "kind": "bad_request", "message": e.to_string() } }),
        };
        if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(state: &NodeSliceState, recorder: &Recorder, request: &Value) -> Value {
    let text = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
    let (artifact, key) = (text("artifact"), text("key"));
    let value = text("value").into_bytes();
    let result = match request["op"].as_str().unwrap_or_default() {
        "get" => state.get(&artifact, &key, DEADLINE).map(|e| e.map_or(Value::Null, |e| entry_json(&e))),
        "put" => state.put(&artifact, &key, &value, DEADLINE).map(Value::from),
        "delete" => state.delete(&artifact, &key, DEADLINE).map(Value::from),
        "cas" => {
            let expected = request["expected"].as_u64();
            state.compare_and_set(&artifact, &key, expected, &value, DEADLINE).map(Value::from)
        }
        "list" => {
            let limit = request["limit"].as_u64().unwrap_or(100) as usize;
            let entries = state.list(&artifact, &text("prefix"), limit, DEADLINE);
            entries.map(|entries| Value::from(entries.iter().map(entry_json).collect::<Vec<_>>()))
        }
        "watch" => {
            let instance = request["instance"].as_u64().unwrap_or_default();
            state.watch(&artifact, instance, &text("prefix"), &text("method")).map(|()| Value::Null)
        }
        "unwatch" => {
            state.unwatch_instance(&artifact, request["instance"].as_u64().unwrap_or_default());
            Ok(Value::Null)
        }
        "deliveries" => {
            let instance = request["instance"].as_u64().unwrap_or_default();
            let recorded = recorder.recorded.lock();
            let mine = recorded.iter().filter(|(i, ..)| *i == instance);
            Ok(mine.map(|(_, method, body)| json!({ "method": method, "body": body })).collect())
        }
        other => Err(StateError::Invalid(format!("unknown op {other:?}"))),
    };
    match result {
        Ok(ok) => json!({ "ok": ok }),
        Err(e) => json!({ "error": error_json(&e) }),
    }
}

fn entry_json(entry: &SliceEntry) -> Value {
    super::watch::body_json(&entry.key, entry.version, Some(&entry.value))
}

/// A [`StateError`] as JSON: `kind` names the variant.
pub fn error_json(e: &StateError) -> Value {
    match e {
        StateError::VersionMismatch { current } => json!({ "kind": "version_mismatch", "current": current }),
        StateError::TooLarge { what, limit } => json!({ "kind": "too_large", "what": what, "limit": limit }),
        StateError::QuotaExceeded { what, limit } => json!({ "kind": "quota_exceeded", "what": what, "limit": limit }),
        StateError::Invalid(message) => json!({ "kind": "invalid", "message": message }),
        StateError::Unavailable(message) => json!({ "kind": "unavailable", "message": message }),
        StateError::Timeout => json!({ "kind": "timeout" }),
    }
}
