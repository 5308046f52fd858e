//! The `shortener` example slice (`org.aether.examples:shortener:1.0.0`): a URL shortener whose links live
//! in the slice's cluster state (`ctx.kv()`), so every instance on every node issues and resolves the same ids.
//!
//! Routes: `POST /links` with `{"url": "https://..."}` -> `201 Created`, `{"id": ..}` and a `Location:
//! /links/{id}` header; `GET /links/{id}` -> `302 Found` to the URL, `404` for an unknown id.
//!
//! Ids: the key `next-id` holds the last number issued; an instance takes the next one by compare-and-set on
//! that key's version (a concurrent taker makes the set fail and it reads again), so no two instances ever
//! hand out the same number. The link is then created at `link/{id}` by compare-and-set on "absent", which
//! would refuse to overwrite an existing link even if the counter were reset. An id is the number in base 36.
//!
//! Invariants: a URL is stored only if it is `http://` or `https://` with a host, at most [`URL_BYTES_MAX`]
//! bytes and without spaces or control characters; ids are checked before they become keys.

use aether_sdk::kv::KvError;
use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

/// Longest URL accepted, in bytes.
pub const URL_BYTES_MAX: usize = 2048;
/// Longest id (base 36 of a u64 is at most 13 digits).
const ID_CHARS_MAX: usize = 13;
/// Compare-and-set attempts on the counter before answering 503 (only contention makes it retry).
const ATTEMPTS_MAX: usize = 64;
const COUNTER_KEY: &str = "next-id";

pub struct Shortener {
    ctx: Context,
}

impl Slice for Shortener {
    const NAME: &'static str = "shortener";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("create"), Method::new("resolve")];
    const ROUTES: &'static [Route] = &[Route::post("/links", "create"), Route::get("/links/{id}", "resolve")];

    fn start(ctx: Context, _config: &Config) -> Result<Shortener, aether_sdk::Error> {
        Ok(Shortener { ctx })
    }

    fn call(&self, method: &str, request: &Request<'_>) -> Response {
        match method {
            "create" => self.create(request),
            _ => self.resolve(request),
        }
    }
}

impl Shortener {
    fn create(&self, request: &Request<'_>) -> Response {
        let url = match url_of(request.body()) {
            Ok(url) => url,
            Err(why) => return Response::error(Status::BAD_REQUEST, &why),
        };
        let kv = self.ctx.kv();
        for _ in 0..ATTEMPTS_MAX {
            let id = match self.next_id() {
                Ok(Some(id)) => id,
                Ok(None) => continue,
                Err(e) => return kv_failure(&e),
            };
            match kv.compare_and_set(&link_key(&id), None, url.as_bytes()) {
                Ok(_) => {
                    let body = json::Object::new().str("id", &id).finish();
                    return Response::created(&format!("/links/{id}"), body);
                }
                // Taken already (a counter that went back): take another number.
                Err(KvError::VersionMismatch { .. }) => continue,
                Err(e) => return kv_failure(&e),
            }
        }
        Response::error(Status::SERVICE_UNAVAILABLE, "too much contention on the id counter; try again")
    }

    /// The next id, or `None` when another instance took the number first.
    fn next_id(&self) -> Result<Option<String>, KvError> {
        let kv = self.ctx.kv();
        let current = kv.get(COUNTER_KEY)?;
        let (last, version) = match &current {
            Some(entry) => {
                let text = std::str::from_utf8(&entry.value).unwrap_or_default();
                let last =
                    text.parse::<u64>().map_err(|_| KvError::Invalid(format!("{COUNTER_KEY} holds {text:?}")))?;
                (last, Some(entry.version))
            }
            None => (0, None),
        };
        let next = last.checked_add(1).ok_or_else(|| KvError::Invalid("the id counter is exhausted".into()))?;
        match kv.compare_and_set(COUNTER_KEY, version, next.to_string().as_bytes()) {
            Ok(_) => Ok(Some(base36(next))),
            Err(KvError::VersionMismatch { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn resolve(&self, request: &Request<'_>) -> Response {
        let id = request.param("id").unwrap_or_default();
        if !valid_id(id) {
            return Response::error(Status::NOT_FOUND, "no such link");
        }
        match self.ctx.kv().get(&link_key(id)) {
            Ok(Some(entry)) => match String::from_utf8(entry.value) {
                Ok(url) => Response::found(&url),
                Err(_) => Response::error(Status::INTERNAL_SERVER_ERROR, "the stored link is not text"),
            },
            Ok(None) => Response::error(Status::NOT_FOUND, "no such link"),
            Err(e) => kv_failure(&e),
        }
    }
}

fn link_key(id: &str) -> String {
    format!("link/{id}")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_CHARS_MAX && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The `url` of a `{"url": ...}` body, checked.
fn url_of(body: &[u8]) -> Result<String, String> {
    let value = json::parse(body).map_err(|e| format!("the body must be JSON {{\"url\": ...}}: {e}"))?;
    let url = value.get("url").and_then(json::Value::as_str).ok_or("the body needs a string field `url`")?;
    check_url(url)?;
    Ok(url.to_owned())
}

/// An absolute `http`/`https` URL with a host, bounded, with no spaces or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > URL_BYTES_MAX {
        return Err(format!("the url is longer than {URL_BYTES_MAX} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the url contains spaces or control characters".into());
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err("the url must start with http:// or https://".into());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err("the url needs a host (and no user info)".into());
    }
    Ok(())
}

fn kv_failure(error: &KvError) -> Response {
    let status = match error {
        KvError::QuotaExceeded { .. } => Status::new(507).unwrap_or(Status::SERVICE_UNAVAILABLE),
        KvError::Timeout => Status::GATEWAY_TIMEOUT,
        _ => Status::SERVICE_UNAVAILABLE,
    };
    Response::error(status, &format!("cluster state: {error}"))
}

aether_sdk::export_slice!(Shortener);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    #[test]
    fn urls_are_checked() {
        for good in ["https://example.com", "http://example.com:8080/a?b=c#d", "HTTPS://EXAMPLE.COM/x"] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX));
        for bad in ["ftp://example.com", "javascript:alert(1)", "https://", "https:///path", "http://a b", &long] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url("https://user@evil.example").is_err());
        assert_eq!(url_of(br#"{"url":"https://example.com"}"#), Ok("https://example.com".to_owned()));
        assert!(url_of(b"not json").is_err());
        assert!(url_of(br#"{"link":"https://example.com"}"#).is_err());
    }

    #[test]
    fn ids_are_base36_and_checked() {
        assert_eq!(
            (base36(0), base36(35), base36(36), base36(u64::MAX).len()),
            ("0".into(), "z".into(), "10".into(), 13)
        );
        assert!(valid_id("1z") && !valid_id("") && !valid_id("A") && !valid_id("../x") && !valid_id(&"1".repeat(14)));
    }

    #[test]
    fn without_a_cluster_a_create_is_503_and_a_bad_body_is_400() {
        let slice = Shortener::start(Context::detached("n1"), &Config::default()).unwrap();
        let call = |method: &str, request: RequestBuilder| {
            let bytes = request.encode().unwrap();
            slice.call(method, &Request::parse(&bytes).unwrap())
        };
        let bad = call("create", RequestBuilder::new().body(&br#"{"url":"ftp://x"}"#[..]));
        assert_eq!(bad.status.http(), 400);
        let no_host = call("create", RequestBuilder::new().body(&br#"{"url":"https://example.com"}"#[..]));
        assert_eq!(no_host.status.http(), 503, "{}", no_host.body_text());
        assert_eq!(call("resolve", RequestBuilder::new().param("id", "../etc")).status.http(), 404);
    }
}
