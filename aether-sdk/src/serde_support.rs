//! The `serde` feature: JSON bodies as typed values.
//!
//! [`Request::json`] reads the body into any `T: Deserialize` and answers a ready 400 [`Response`]
//! when it cannot; [`Response::to_json`] answers any `T: Serialize` (a 500 when it cannot be written).

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::Request;
use crate::response::{ContentType, Response};
use crate::status::Status;

impl Request<'_> {
    /// The body as JSON of type `T`; on failure, a 400 response that says why, ready to return.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct NewLink { url: String }
    ///
    /// let bytes = aether_sdk::RequestBuilder::new().body(r#"{"url":"https://example.com"}"#).encode().unwrap();
    /// let request = aether_sdk::Request::parse(&bytes).unwrap();
    /// let link: NewLink = request.json().unwrap();
    /// assert_eq!(link.url, "https://example.com");
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(self.body())
            .map_err(|e| Response::error(Status::BAD_REQUEST, &format!("the body is not the JSON expected: {e}")))
    }
}

impl Response {
    /// 200 with `value` as its JSON body (500 when it cannot be written as JSON).
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(Status::OK, ContentType::Json.mime(), body),
            Err(e) => Response::error(Status::INTERNAL_SERVER_ERROR, &format!("cannot write the answer as JSON: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Link {
        id: String,
        hits: u32,
    }

    #[test]
    fn typed_bodies_both_ways() {
        let link = Link { id: "abc".into(), hits: 3 };
        let answer = Response::to_json(&link).with_status(Status::CREATED);
        assert_eq!((answer.status, answer.content_type()), (Status::CREATED, Some("application/json")));
        let bytes = crate::RequestBuilder::new().body(answer.body.clone()).encode().unwrap();
        assert_eq!(Request::parse(&bytes).unwrap().json::<Link>(), Ok(link));
        let bad = crate::RequestBuilder::new().body("{").encode().unwrap();
        let refused = Request::parse(&bad).unwrap().json::<Link>().unwrap_err();
        assert_eq!(refused.status, Status::BAD_REQUEST);
    }
}
