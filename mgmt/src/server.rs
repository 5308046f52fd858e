//! The HTTP shell: tiny_http, a few worker threads, bounded request bodies, and a clean stop.

use crate::error::ApiError;
use log::{debug, warn};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Request bodies larger than this are refused with 413.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One parsed request, independent of the HTTP library.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path segments after the leading `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The client's address, when known.
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A JSON answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Response {
    pub fn ok(body: serde_json::Value) -> Response {
        Response { status: 200, body }
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        Response { status: e.status, body: e.body() }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

pub struct Server {
    http: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr` and serves with `threads` workers.
    pub fn start(
        addr: SocketAddr,
        threads: usize,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        let http = tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let addr = http.server_addr().to_ip().unwrap_or(addr);
        let http = Arc::new(http);
        let handler: Arc<Handler> = Arc::new(handler);
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            let (http, handler) = (http.clone(), handler.clone());
            let worker = std::thread::Builder::new()
                .name(format!("mgmt-{n}"))
                .spawn(move || serve(&http, &*handler))
                .map_err(|e| format!("cannot start management thread: {e}"))?;
            workers.push(worker);
        }
        Ok(Server { http, workers, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(self) {
        for _ in &self.workers {
            self.http.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn serve(http: &tiny_http::Server, handler: &Handler) {
    while let Ok(mut request) = http.recv() {
        let response = match parse(&mut request) {
            Ok(parsed) => {
                debug!("{} /{}", parsed.method, parsed.path);
                handler(&parsed)
            }
            Err(e) => e.into(),
        };
        let body = response.body.to_string();
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
        let mut answer = tiny_http::Response::from_string(body).with_status_code(response.status);
        if let Ok(header) = header {
            answer = answer.with_header(header);
        }
        if let Err(e) = request.respond(answer) {
            warn!("management response failed: {e}");
        }
    }
}

fn parse(request: &mut tiny_http::Request) -> Result<Request, ApiError> {
    let method = request.method().as_str().to_ascii_uppercase();
    let url = request.url().to_string();
    let (raw_path, raw_query) = url.split_once('?').unwrap_or((&url, ""));
    let path = percent_decode(raw_path.trim_start_matches('/'))?;
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect::<Result<_, ApiError>>()?;
    if request.body_length().is_some_and(|len| len > BODY_BYTES_MAX) {
        return Err(ApiError::new(413, "too_large", format!("request body over {BODY_BYTES_MAX} bytes")));
    }
    let mut body = Vec::new();
    let reader = request.as_reader();
    reader
        .take(BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::new(413, "too_large", format!("request body over {BODY_BYTES_MAX} bytes")));
    }
    let headers = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .collect();
    let peer = request.remote_addr().copied();
    Ok(Request { method, path, query, body, headers, peer })
}

/// Decodes `%XX` escapes (and `+` as space in queries is left alone: paths and keys keep `+`).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = byte.ok_or_else(|| ApiError::bad_request(format!("bad percent escape in '{s}'")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("'{s}' is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").unwrap(), "a/b c");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
