//! A test facility: drive this node's storage plane without the management API, through the event loop as
//! every other caller does.
//!
//! Off unless the process starts with `AETHER_DHT_DEBUG={loopback address}:{port}`; then the node listens
//! there (loopback only, no authentication: never enable it outside tests) for lines of JSON, one request
//! per line, each answered with one line of JSON.
//!
//! ```text
//! {"op":"put","key":"k","value":"v"}                        -> {"ok":null}
//! {"op":"get","key":"k"}                                    -> {"ok":"v"} (null when absent)
//! {"op":"delete","key":"k"}                                 -> {"ok":null}
//! {"op":"store","artifact":"g:a:1.0.0","file":"/x.so"}       -> {"ok":{"size":N,"sha256":"..."}}
//!     (the file's chunks through `Blobs::store`, then its catalog record `artifacts/g:a:1.0.0`)
//! {"op":"fetch","artifact":"g:a:1.0.0","file":"/out.so"}     -> {"ok":{"size":N}}
//! {"op":"delete_chunks","artifact":"g:a:1.0.0"}              -> {"ok":null} (the record stays)
//! failures: {"error":"..."}
//! ```

use super::{Blobs, ARTIFACT_BYTES_MAX};
use crate::node::{Command, DhtOp, DhtRequest};
use control::records::{ArtifactRecord, Record};
use kvstore::{AetherKey, Artifact};

use net::NetHandle;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

/// The variable that turns the facility on.
pub const ENV: &str = "AETHER_DHT_DEBUG";
const LINE_BYTES_MAX: u64 = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(10);
const CONNECTIONS_MAX: usize = 8;

/// Starts the facility when [`ENV`] names a loopback address; `Ok(None)` when it is unset.
pub fn start_from_env(handle: NetHandle<Command>) -> Result<Option<SocketAddr>, String> {
    let Some((listener, addr)) = crate::debug_port::bind_from_env(ENV, "storage plane")? else { return Ok(None) };
    crate::debug_port::serve_connections(listener, "dht-debug", "storage plane", CONNECTIONS_MAX, move |stream| {
        serve(stream, &handle)
    })?;
    Ok(Some(addr))
}

fn serve(stream: &TcpStream, handle: &NetHandle<Command>) {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let mut line = Vec::new();
        match (&mut reader).take(LINE_BYTES_MAX).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = match serde_json::from_slice::<Value>(&line) {
            Ok(request) => match handle_request(handle, &request) {
                Ok(ok) => json!({ "ok": ok }),
                Err(e) => json!({ "error": e }),
            },
            Err(e) => json!({ "error": format!("bad request: {e}") }),
        };
        if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn handle_request(handle: &NetHandle<Command>, request: &Value) -> Result<Value, String> {
    let text = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
    let key = text("key");
    match request["op"].as_str().unwrap_or_default() {
        "put" => ask(handle, DhtOp::Put { key, value: text("value").into_bytes() }).map(|_| Value::Null),
        "delete" => ask(handle, DhtOp::Delete { key }).map(|_| Value::Null),
        "get" => ask(handle, DhtOp::Get { key })
            .map(|value| value.map_or(Value::Null, |v| Value::from(String::from_utf8_lossy(&v).into_owned()))),
        "store" => store(handle, &Artifact::parse(&text("artifact")).map_err(|e| e.to_string())?, &text("file")),
        "fetch" => fetch(handle, &Artifact::parse(&text("artifact")).map_err(|e| e.to_string())?, &text("file")),
        "delete_chunks" => {
            let artifact = Artifact::parse(&text("artifact")).map_err(|e| e.to_string())?;
            let record = catalog(handle, &artifact)?;
            Blobs::new(handle.clone()).delete(&artifact, &record).map(|()| Value::Null).map_err(|e| e.reason)
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

fn ask(handle: &NetHandle<Command>, op: DhtOp) -> Result<Option<Vec<u8>>, String> {
    let (reply, rx) = mpsc::channel();
    handle.command(Command::Dht(DhtRequest { op, reply })).map_err(|_| "the node is stopping".to_owned())?;
    match rx.recv_timeout(DEADLINE) {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Stores this facility made, the last part of their upload ids.
static STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn store(handle: &NetHandle<Command>, artifact: &Artifact, file: &str) -> Result<Value, String> {
    let mut bytes = Vec::new();
    let opened = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    opened.take(ARTIFACT_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| format!("{file}: {e}"))?;
    if bytes.len() as u64 > ARTIFACT_BYTES_MAX {
        return Err(format!("{file} is over {ARTIFACT_BYTES_MAX} bytes"));
    }
    let digest = container::integrity::sha256(&bytes);
    let hex = |d: &[u8]| container::integrity::to_hex(d);
    let uploaded_ms = crate::managers::wall_ms();
    let record = ArtifactRecord {
        size: bytes.len() as u64,
        sha256: hex(&digest),
        sha1: String::new(),
        md5: String::new(),
        signature: None,
        uploaded_ms,
        node: String::new(),
        upload: format!("debug.{uploaded_ms}.{}", STORES.fetch_add(1, Ordering::Relaxed)),
    };
    Blobs::new(handle.clone()).store(artifact, &bytes, &record).map_err(|e| e.reason)?;
    let command =
        kvstore::Command::Put { key: AetherKey::ArtifactEntry { artifact: artifact.clone() }, value: record.encode() };
    let (reply, rx) = mpsc::channel();
    handle.command(Command::KvWrite(command, reply.into())).map_err(|_| "the node is stopping".to_owned())?;
    match rx.recv_timeout(DEADLINE) {
        Ok(answer) => answer.map_err(|e| e.detail)?,
        Err(_) => return Err("the catalog write got no answer in time".into()),
    };
    Ok(json!({ "size": record.size, "sha256": record.sha256 }))
}

fn fetch(handle: &NetHandle<Command>, artifact: &Artifact, file: &str) -> Result<Value, String> {
    let record = catalog(handle, artifact)?;
    let mut out = std::fs::File::create(file).map_err(|e| format!("{file}: {e}"))?;
    Blobs::new(handle.clone()).fetch(artifact, &record, &mut out).map_err(|e| e.reason)?;
    Ok(json!({ "size": record.size }))
}

fn catalog(handle: &NetHandle<Command>, artifact: &Artifact) -> Result<ArtifactRecord, String> {
    let (reply, rx) = mpsc::channel();
    let key = AetherKey::ArtifactEntry { artifact: artifact.clone() };
    handle.command(Command::KvGet { key, stale: false, reply }).map_err(|_| "the node is stopping".to_owned())?;
    let entry = match rx.recv_timeout(DEADLINE) {
        Ok(answer) => answer.map_err(|e| e.detail)?,
        Err(_) => return Err("the catalog read got no answer in time".into()),
    };
    let entry = entry.ok_or_else(|| format!("{artifact} is not in the catalog"))?;
    ArtifactRecord::decode(&entry.value).map_err(|e| e.to_string())
}
