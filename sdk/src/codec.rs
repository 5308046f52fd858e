//! The byte encoding of a request (and of a slice's config) as it crosses the boundary.
//!
//! ```text
//! u16 LE  param_count        path parameters
//! u16 LE  query_count        query parameters
//! (param_count + query_count) times:
//!     u16 LE name_len, name (UTF-8), u32 LE value_len, value (UTF-8)
//! the rest: body bytes
//! ```
//!
//! A config is the same encoding with its entries as parameters, no query and no body. The same bytes
//! can be forwarded to another node unchanged. Invariant: [`Request::parse`] checks every length and
//! every string once, so a [`Request`] never holds malformed bytes.

use std::fmt;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes end inside the header or an entry.
    Truncated { at: usize },
    /// A name or value is not UTF-8.
    NotUtf8 { at: usize },
    /// A count, name or value is over the encoding's limit.
    TooLarge { what: &'static str, len: usize },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated { at } => write!(f, "request bytes end early at offset {at}"),
            CodecError::NotUtf8 { at } => write!(f, "request text at offset {at} is not UTF-8"),
            CodecError::TooLarge { what, len } => write!(f, "{what} of {len} is over the encoding limit"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Encode a request from its parts.
pub fn encode_request(params: &[(&str, &str)], query: &[(&str, &str)], body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let entries_len: usize = params.iter().chain(query).map(|(k, v)| 6 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + entries_len + body.len());
    out.extend_from_slice(&count_u16("parameter count", params.len())?.to_le_bytes());
    out.extend_from_slice(&count_u16("query count", query.len())?.to_le_bytes());
    for (name, value) in params.iter().chain(query) {
        put_entry(&mut out, name, value)?;
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// Encode key/value pairs (a config) in the request layout.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<u8>, CodecError> {
    let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    encode_request(&pairs, &[], &[])
}

fn count_u16(what: &'static str, len: usize) -> Result<u16, CodecError> {
    u16::try_from(len).map_err(|_| CodecError::TooLarge { what, len })
}

fn put_entry(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), CodecError> {
    let name_len = count_u16("parameter name", name.len())?;
    let value_len =
        u32::try_from(value.len()).map_err(|_| CodecError::TooLarge { what: "parameter value", len: value.len() })?;
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// A decoded request, borrowing the bytes it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    bytes: &'a [u8],
    param_count: u16,
    query_count: u16,
    body_start: usize,
}

impl<'a> Request<'a> {
    /// Check `bytes` completely and return a view of them.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, CodecError> {
        let param_count = read_u16(bytes, 0)?;
        let query_count = read_u16(bytes, 2)?;
        let mut at = 4;
        for _ in 0..(u32::from(param_count) + u32::from(query_count)) {
            let (_, _, next) = read_entry(bytes, at)?;
            at = next;
        }
        Ok(Request { bytes, param_count, query_count, body_start: at })
    }

    /// The path parameter `name`, if the route has it.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The query parameter `name` (the first one when repeated).
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.query_pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Path parameters in route order.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries().take(usize::from(self.param_count))
    }

    /// Query parameters in the order they came.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries().skip(usize::from(self.param_count)).take(usize::from(self.query_count))
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(self.body_start..).unwrap_or(&[])
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.body()).ok()
    }

    /// The encoded bytes, e.g. to pass the request on unchanged.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn entries(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let bytes = self.bytes;
        let mut at = 4;
        // `parse` checked every entry, so read_entry cannot fail here; `ok()?` ends the walk if it did.
        std::iter::from_fn(move || {
            let (name, value, next) = read_entry(bytes, at).ok()?;
            at = next;
            Some((name, value))
        })
        .take(usize::from(self.param_count) + usize::from(self.query_count))
    }
}

/// Builds request bytes: path parameters, query parameters and a body.
#[derive(Clone, Debug, Default)]
pub struct RequestBuilder {
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn new() -> RequestBuilder {
        RequestBuilder::default()
    }

    pub fn param(mut self, name: &str, value: &str) -> RequestBuilder {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn query(mut self, name: &str, value: &str) -> RequestBuilder {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> RequestBuilder {
        self.body = body.into();
        self
    }

    /// The encoded bytes.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let params: Vec<(&str, &str)> = self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let query: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        encode_request(&params, &query, &self.body)
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, CodecError> {
    let raw = bytes.get(at..at + 2).ok_or(CodecError::Truncated { at })?;
    Ok(u16::from_le_bytes([raw[0], raw[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, CodecError> {
    let raw = bytes.get(at..at + 4).ok_or(CodecError::Truncated { at })?;
    Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn read_str(bytes: &[u8], at: usize, len: usize) -> Result<&str, CodecError> {
    let end = at.checked_add(len).ok_or(CodecError::Truncated { at })?;
    let raw = bytes.get(at..end).ok_or(CodecError::Truncated { at })?;
    std::str::from_utf8(raw).map_err(|_| CodecError::NotUtf8 { at })
}

/// One entry at `at`: (name, value, offset of the next entry).
fn read_entry(bytes: &[u8], at: usize) -> Result<(&str, &str, usize), CodecError> {
    let name_len = usize::from(read_u16(bytes, at)?);
    let name = read_str(bytes, at + 2, name_len)?;
    let value_at = at + 2 + name_len;
    let value_len = read_u32(bytes, value_at)? as usize;
    let value = read_str(bytes, value_at + 4, value_len)?;
    Ok((name, value, value_at + 4 + value_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_params_query_and_body() {
        let bytes = encode_request(&[("msg", "hi"), ("id", "7")], &[("q", "x y")], b"body!").unwrap();
        let req = Request::parse(&bytes).unwrap();
        assert_eq!(req.param("msg"), Some("hi"));
        assert_eq!(req.param("id"), Some("7"));
        assert_eq!(req.param("q"), None);
        assert_eq!(req.query("q"), Some("x y"));
        assert_eq!(req.query("msg"), None);
        assert_eq!(req.body(), b"body!");
        assert_eq!(req.params().count(), 2);
    }

    #[test]
    fn empty_request_has_empty_body() {
        let bytes = RequestBuilder::new().encode().unwrap();
        let req = Request::parse(&bytes).unwrap();
        assert!(req.body().is_empty());
        assert_eq!(req.params().count(), 0);
    }

    #[test]
    fn truncated_and_non_utf8_bytes_are_refused() {
        let bytes = encode_request(&[("msg", "hi")], &[], b"").unwrap();
        for cut in 0..bytes.len() {
            assert!(Request::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(Request::parse(&bad).unwrap_err(), CodecError::NotUtf8 { at: 13 });
    }

    #[test]
    fn body_may_hold_any_bytes() {
        let body: Vec<u8> = (0..=255).collect();
        let bytes = RequestBuilder::new().param("a", "b").body(body.clone()).encode().unwrap();
        assert_eq!(Request::parse(&bytes).unwrap().body(), &body[..]);
    }
}

/// Randomised round trips and corruptions from a fixed seed (the SDK takes no dependencies, so no
/// property-testing crate): encode/parse is the identity, and no byte string makes `parse` panic.
#[cfg(test)]
mod randomised {
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn text(&mut self) -> String {
            let alphabet = ['a', 'Z', '0', ' ', '/', '%', 'é', '😀', '\u{0}'];
            (0..self.below(12)).map(|_| alphabet[self.below(alphabet.len() as u64)]).collect()
        }
    }

    #[test]
    fn encode_then_parse_is_the_identity() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for _ in 0..2000 {
            let params: Vec<(String, String)> = (0..rng.below(5)).map(|_| (rng.text(), rng.text())).collect();
            let query: Vec<(String, String)> = (0..rng.below(5)).map(|_| (rng.text(), rng.text())).collect();
            let body: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bytes = encode_request(&p, &q, &body).unwrap();
            let request = Request::parse(&bytes).unwrap();
            let got_params: Vec<(String, String)> = request.params().map(|(k, v)| (k.into(), v.into())).collect();
            let got_query: Vec<(String, String)> = request.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
            assert_eq!(got_params, params);
            assert_eq!(got_query, query);
            assert_eq!(request.body(), &body[..]);
        }
    }

    #[test]
    fn corrupted_bytes_are_refused_or_parsed_never_a_panic() {
        let mut rng = XorShift(0x5eed_1234_abcd_0002);
        let good = encode_request(&[("msg", "hello"), ("id", "7")], &[("q", "x")], b"body").unwrap();
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64);
                bytes[at] = rng.next() as u8;
            }
            bytes.truncate(rng.below(bytes.len() as u64 + 1));
            if let Ok(request) = Request::parse(&bytes) {
                let _ = (request.params().count(), request.query_pairs().count(), request.body().len());
            }
        }
    }
}
