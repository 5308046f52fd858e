use super::*;

#[test]
fn request_round_trips_method_path_params_query_headers_and_body() {
    let bytes = RequestParts {
        method: "PUT",
        path: "/things/7",
        params: &[("msg", "hi"), ("id", "7")],
        query: &[("q", "x y")],
        headers: &[("Accept", "text/plain"), ("x-tag", "a"), ("X-Tag", "b")],
        body: b"body!",
    }
    .encode()
    .unwrap();
    let req = Request::parse(&bytes).unwrap();
    assert_eq!((req.method(), req.path()), ("PUT", "/things/7"));
    assert_eq!(req.param("msg"), Some("hi"));
    assert_eq!(req.param("id"), Some("7"));
    assert_eq!(req.param("q"), None);
    assert_eq!(req.query("q"), Some("x y"));
    assert_eq!(req.query("msg"), None);
    assert_eq!(req.header("ACCEPT"), Some("text/plain"));
    assert_eq!(req.header("x-TAG"), Some("a"), "the first of repeated fields");
    assert_eq!(req.header_all("x-tag").collect::<Vec<_>>(), ["a", "b"], "repeated fields are all kept");
    assert_eq!(req.header("msg"), None, "parameters are not headers");
    assert_eq!(req.body(), b"body!");
    assert_eq!(req.params().count(), 2);
    assert_eq!(req.headers().count(), 3);
}

#[test]
fn empty_request_has_empty_parts() {
    let bytes = RequestBuilder::new().encode().unwrap();
    let req = Request::parse(&bytes).unwrap();
    assert!(req.body().is_empty());
    assert_eq!((req.method(), req.path(), req.params().count(), req.headers().count()), ("", "", 0, 0));
}

#[test]
fn truncated_and_non_utf8_bytes_are_refused() {
    let bytes = RequestBuilder::new().method("GET").param("msg", "hi").header("a", "b").encode().unwrap();
    for cut in 0..bytes.len() {
        assert!(Request::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] = 0xff;
    assert!(matches!(Request::parse(&bad).unwrap_err(), CodecError::NotUtf8 { .. }));
}

#[test]
fn hostile_header_bytes_are_refused_on_encode_and_on_parse() {
    let injected = RequestBuilder::new().header("X-A", "v\r\nSet-Cookie: evil").encode();
    assert!(matches!(injected, Err(CodecError::Header(HeaderError::BadValue { .. }))), "{injected:?}");
    assert!(RequestBuilder::new().header("Bad Name", "v").encode().is_err());
    assert!(RequestBuilder::new().header("X-Nul", "a\0b").encode().is_err());

    // Bytes made by hand (not through the checking encoder) are refused by the parser too.
    let mut raw = RequestBuilder::new().header("X-A", "vvvv").encode().unwrap();
    let at = raw.len() - 2;
    raw[at] = b'\n';
    assert!(matches!(Request::parse(&raw), Err(CodecError::Header(HeaderError::BadValue { .. }))));

    let mut too_many = RequestBuilder::new();
    for i in 0..=crate::headers::HEADERS_MAX {
        too_many = too_many.header(&format!("x-{i}"), "v");
    }
    assert!(matches!(too_many.encode(), Err(CodecError::Header(HeaderError::TooMany { .. }))));
    let big = "v".repeat(crate::headers::HEADER_BYTES_MAX);
    assert!(matches!(
        RequestBuilder::new().header("x", &big).encode(),
        Err(CodecError::Header(HeaderError::TooLarge { .. }))
    ));
}

#[test]
fn body_may_hold_any_bytes() {
    let body: Vec<u8> = (0..=255).collect();
    let bytes = RequestBuilder::new().param("a", "b").body(body.clone()).encode().unwrap();
    assert_eq!(Request::parse(&bytes).unwrap().body(), &body[..]);
}

/// Randomised round trips and corruptions from a fixed seed (the SDK takes no dependencies, so no
/// property-testing crate): encode/parse is the identity, and no byte string makes `parse` panic.
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

        fn token(&mut self) -> String {
            let alphabet = ['a', 'Z', '0', '-', '_'];
            (0..1 + self.below(8)).map(|_| alphabet[self.below(alphabet.len() as u64)]).collect()
        }
    }

    #[test]
    fn encode_then_parse_is_the_identity() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for _ in 0..2000 {
            let pairs = |rng: &mut XorShift| -> Vec<(String, String)> {
                (0..rng.below(5)).map(|_| (rng.text(), rng.text())).collect()
            };
            let (params, query) = (pairs(&mut rng), pairs(&mut rng));
            let headers: Vec<(String, String)> =
                (0..rng.below(5)).map(|_| (rng.token(), rng.text().replace('\0', ""))).collect();
            let body: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let (method, path) = (rng.token(), rng.text());
            let view = |v: &[(String, String)]| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
            let (p, q, h) = (view(&params), view(&query), view(&headers));
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let parts = RequestParts { method: &method, path: &path, params: &p, query: &q, headers: &h, body: &body };
            let bytes = parts.encode().unwrap();
            let request = Request::parse(&bytes).unwrap();
            let owned = |it: &mut dyn Iterator<Item = (&str, &str)>| -> Vec<(String, String)> {
                it.map(|(k, v)| (k.into(), v.into())).collect()
            };
            assert_eq!(owned(&mut request.params()), params);
            assert_eq!(owned(&mut request.query_pairs()), query);
            assert_eq!(owned(&mut request.headers()), headers);
            assert_eq!((request.method(), request.path()), (method.as_str(), path.as_str()));
            assert_eq!(request.body(), &body[..]);
        }
    }

    #[test]
    fn corrupted_bytes_are_refused_or_parsed_never_a_panic() {
        let mut rng = XorShift(0x5eed_1234_abcd_0002);
        let good = RequestBuilder::new()
            .method("GET")
            .path("/x")
            .param("msg", "hello")
            .query("q", "x")
            .header("accept", "*/*")
            .body("body")
            .encode()
            .unwrap();
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64);
                bytes[at] = rng.next() as u8;
            }
            bytes.truncate(rng.below(bytes.len() as u64 + 1));
            if let Ok(request) = Request::parse(&bytes) {
                let _ = (request.params().count(), request.query_pairs().count(), request.headers().count());
                let _ = request.body().len();
            }
        }
    }
}
