//! The `ledger` example slice: an append-only log kept in the cluster (`ctx.kv()`), served by one
//! instance at a time (`SINGLE_ACTIVE`) and fenced by the lease epoch the node hands every call.
//!
//! Routes: `POST /ledger/append` (book `main`) and `POST /ledger/{book}/append` append the request body and
//! answer `{"seq", "epoch", "node"}`; `GET /ledger/log` and `GET /ledger/{book}/log` answer
//! `{"entries": [{"seq", "epoch", "node", "body"}]}` in order (at most 1,000).
//!
//! Fencing: a book's head (`books/{book}/head` = `{"seq", "epoch"}`) moves by compare-and-set only, and an
//! append whose epoch is older than the head's is refused (409 "fenced"). So even a call an old holder
//! admitted just before losing its lease can never write after the new holder did: in seq order, epochs
//! never go back, and each epoch's entries come from one node (the holder of that epoch). A test can read
//! "never two active at once" from the log itself.

use aether_sdk::{json, Config, Context, KvError, Method, Request, Response, Route, Slice, Status};

/// Longest book name and body accepted.
const BOOK_BYTES_MAX: usize = 64;
const BODY_BYTES_MAX: usize = 1024;
/// Entries one `log` answer lists.
const LIST_MAX: usize = 1000;
/// Compare-and-set attempts on the head before answering 503.
const HEAD_ATTEMPTS_MAX: usize = 8;

pub struct Ledger {
    ctx: Context,
}

impl Slice for Ledger {
    const NAME: &'static str = "ledger";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("append"), Method::new("log")];
    const ROUTES: &'static [Route] = &[
        Route::post("/ledger/append", "append"),
        Route::post("/ledger/{book}/append", "append"),
        Route::get("/ledger/log", "log"),
        Route::get("/ledger/{book}/log", "log"),
    ];
    const SINGLE_ACTIVE: bool = true;

    fn start(ctx: Context, _config: &Config) -> Result<Ledger, aether_sdk::Error> {
        Ok(Ledger { ctx })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        let book = request.param("book").unwrap_or("main");
        if book.is_empty()
            || book.len() > BOOK_BYTES_MAX
            || !book.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Response::error(Status::BAD_REQUEST, "a book name is 1 to 64 letters, digits or '-'");
        }
        let answer = match method {
            "append" => self.append(book, request.body()),
            _ => self.log(book),
        };
        answer.unwrap_or_else(|response| response)
    }
}

/// A book's head: the last seq appended and the epoch that appended it.
fn parse_head(value: &[u8]) -> (u64, u64) {
    let Ok(json) = json::parse(value) else { return (0, 0) };
    let int = |field: &str| json.get(field).and_then(json::Value::as_i64).and_then(|v| u64::try_from(v).ok());
    (int("seq").unwrap_or(0), int("epoch").unwrap_or(0))
}

fn kv_failure(e: &KvError) -> Response {
    Response::error(Status::SERVICE_UNAVAILABLE, &format!("the ledger's store: {e}"))
}

impl Ledger {
    fn append(&self, book: &str, body: &[u8]) -> Result<Response, Response> {
        if body.len() > BODY_BYTES_MAX {
            return Err(Response::error(Status::BAD_REQUEST, "an entry is at most 1024 bytes"));
        }
        let Some(epoch) = self.ctx.invocation().lease_epoch else {
            return Err(Response::error(Status::SERVICE_UNAVAILABLE, "served without a lease epoch"));
        };
        let kv = self.ctx.kv();
        let head_key = format!("books/{book}/head");
        for _ in 0..HEAD_ATTEMPTS_MAX {
            let head = kv.get(&head_key).map_err(|e| kv_failure(&e))?;
            let (seq, head_epoch) = head.as_ref().map_or((0, 0), |e| parse_head(&e.value));
            if head_epoch > epoch {
                let detail = format!("epoch {epoch} is fenced off: epoch {head_epoch} appended already");
                return Err(Response::error(Status::CONFLICT, &detail));
            }
            let next = seq + 1;
            let value = json::Object::new().int("seq", next as i64).int("epoch", epoch as i64).finish();
            match kv.compare_and_set(&head_key, head.map(|e| e.version), value.as_bytes()) {
                Ok(_) => {}
                Err(KvError::VersionMismatch { .. }) => continue,
                Err(e) => return Err(kv_failure(&e)),
            }
            let body = String::from_utf8_lossy(body);
            let entry = json::Object::new()
                .int("seq", next as i64)
                .int("epoch", epoch as i64)
                .str("node", self.ctx.node_id())
                .str("body", &body)
                .finish();
            kv.put(&format!("books/{book}/log/{next:010}"), entry.as_bytes()).map_err(|e| kv_failure(&e))?;
            let answer = json::Object::new()
                .int("seq", next as i64)
                .int("epoch", epoch as i64)
                .str("node", self.ctx.node_id())
                .finish();
            return Ok(Response::json(answer));
        }
        Err(Response::error(Status::SERVICE_UNAVAILABLE, "the ledger's head kept changing"))
    }

    fn log(&self, book: &str) -> Result<Response, Response> {
        let entries = self.ctx.kv().list(&format!("books/{book}/log/"), LIST_MAX).map_err(|e| kv_failure(&e))?;
        let mut out = String::from("{\"entries\":[");
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&String::from_utf8_lossy(&entry.value));
        }
        out.push_str("]}");
        Ok(Response::json(out))
    }
}

aether_sdk::export_slice!(Ledger);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_bad_ones_are_empty() {
        assert_eq!(parse_head(br#"{"seq":7,"epoch":3}"#), (7, 3));
        assert_eq!(parse_head(b"nope"), (0, 0));
    }

    #[test]
    fn outside_a_cluster_appends_are_refused() {
        let ledger = Ledger::start(Context::detached("n1"), &Config::default()).unwrap();
        let bytes = aether_sdk::RequestBuilder::new().body("x").encode().unwrap();
        let response = ledger.call("append", &Request::parse(&bytes).unwrap());
        assert_eq!(response.status, Status::SERVICE_UNAVAILABLE);
    }
}
