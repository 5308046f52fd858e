//! The forwarding messages: a call sent to another node (`Invoke` frame) and its answer (`InvokeReply`).
//!
//! Both are rkyv archives decoded through [`wire::decode`], which copies into an aligned buffer and
//! validates the archive before any field is read; [`InvokeRequest::decode`] then checks the fields
//! against this module's limits, so a decoded request is always within them.
//!
//! Rules every node follows:
//! - the sender picks the target and owns retries: a node that receives a forwarded call answers it
//!   with a local instance or says "no instance here" (503, `reached_slice: false`), and never forwards
//!   it again, so a stale endpoint table cannot make a call loop between nodes;
//! - `hops` counts the cluster hops of the causal chain (an HTTP request forwarded once is hop 1; a
//!   slice it calls on a third node is hop 2); a chain longer than [`HOPS_MAX`] is refused, which bounds
//!   cross-node call cycles the per-thread depth limit of one node cannot see;
//! - `deadline_ms_left` is the time the sender still waits; the receiver runs the call with that
//!   deadline, so deadlines shrink along a chain instead of restarting.

use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// Longest causal chain of cluster hops one call may make.
pub const HOPS_MAX: u8 = 8;
/// Longest artifact text (`group:artifact:version`) and method name, in bytes.
pub const ARTIFACT_BYTES_MAX: usize = 512;
pub const METHOD_BYTES_MAX: usize = 128;
/// Longest node id, in bytes.
pub const NODE_BYTES_MAX: usize = 128;
/// Longest content type, in bytes: as long as a slice may answer one (it is a header field, bounded with
/// the others by `aether_sdk::headers`), so an answer that reaches a client from a local slice also crosses
/// the cluster.
pub const CONTENT_TYPE_BYTES_MAX: usize = aether_sdk::headers::HEADER_BYTES_MAX;
/// Longest request id, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Deepest slice-to-slice call chain a forwarded call may report.
pub const DEPTH_MAX: u8 = 64;

/// A call forwarded to another node.
///
/// On the wire it has two layouts, told apart on decode: without pins it is exactly the layout of the release
/// before pins existed ([`Plain`]), so nodes of both releases understand each other while a cluster is upgraded
/// one node at a time; with pins it is [`Pinned`], the same fields followed by the pins and [`PINNED_MAGIC`]
/// (which no `Plain` archive can hold where `Pinned` reads it). An earlier node drops a pinned request (it
/// cannot read it): running a rollout while nodes of the earlier release remain costs forwarded calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvokeRequest {
    /// Chosen by the sender's forwarding table; the reply carries it back.
    pub id: u64,
    /// Node id of the sender.
    pub origin: String,
    /// `group:artifact:version`.
    pub artifact: String,
    /// Slice method.
    pub method: String,
    /// Request bytes already encoded for the slice (`aether_sdk::codec`: params, query, body).
    pub request: Vec<u8>,
    /// How long the sender still waits, in milliseconds.
    pub deadline_ms_left: u32,
    /// Cluster hops of the causal chain, this one included (at least 1 on the wire).
    pub hops: u8,
    /// The request id of the client request this call serves (`X-Request-Id`), empty when none; at most
    /// [`REQUEST_ID_BYTES_MAX`] bytes.
    pub request_id: String,
    /// `group:artifact:version` of the slice that made the call, empty for a call from HTTP; at most
    /// [`ARTIFACT_BYTES_MAX`] bytes.
    pub caller: String,
    /// Slice-to-slice calls between the client's request and this call (0 from HTTP), at most
    /// [`DEPTH_MAX`].
    pub depth: u8,
    /// The versions the request's chain is pinned to, `(group:artifact, group:artifact:version)`, at most
    /// [`crate::versions::PINS_MAX`] (see [`crate::versions`]).
    pub pins: Vec<(String, String)>,
}

/// The layout of a request without pins (and of every request before pins existed).
#[derive(Archive, Serialize, Deserialize)]
struct Plain {
    id: u64,
    origin: String,
    artifact: String,
    method: String,
    request: Vec<u8>,
    deadline_ms_left: u32,
    hops: u8,
    request_id: String,
    caller: String,
    depth: u8,
}

/// The layout of a request with pins.
#[derive(Archive, Serialize, Deserialize)]
struct Pinned {
    id: u64,
    origin: String,
    artifact: String,
    method: String,
    request: Vec<u8>,
    deadline_ms_left: u32,
    hops: u8,
    request_id: String,
    caller: String,
    depth: u8,
    pins: Vec<(String, String)>,
    magic: u64,
}

/// Ends every [`Pinned`] archive's root ("AePins01").
const PINNED_MAGIC: u64 = 0x4165_5069_6e73_3031;

/// The answer to an [`InvokeRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InvokeReply {
    pub id: u64,
    /// HTTP status code.
    pub status: u16,
    /// HTTP `Content-Type` value (empty: none, as a 204 or a redirect has).
    pub content_type: String,
    /// The slice's other header fields, in order (within `aether_sdk::headers`' bounds; no
    /// `Content-Type`, which is the field above).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether a slice ran (or may have run) the call. `false` means it certainly did not, so the
    /// sender may try another instance whatever the method.
    pub reached_slice: bool,
}

/// A decoded message that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not a valid archive of the message.
    Undecodable(String),
    /// A field is out of its limits.
    Field { field: &'static str, reason: String },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Undecodable(reason) => write!(f, "undecodable invoke message: {reason}"),
            ProtocolError::Field { field, reason } => write!(f, "invoke message field `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl InvokeRequest {
    pub fn encode(&self) -> Vec<u8> {
        let r = self.clone();
        if r.pins.is_empty() {
            return wire::encode(&Plain {
                id: r.id,
                origin: r.origin,
                artifact: r.artifact,
                method: r.method,
                request: r.request,
                deadline_ms_left: r.deadline_ms_left,
                hops: r.hops,
                request_id: r.request_id,
                caller: r.caller,
                depth: r.depth,
            });
        }
        wire::encode(&Pinned {
            id: r.id,
            origin: r.origin,
            artifact: r.artifact,
            method: r.method,
            request: r.request,
            deadline_ms_left: r.deadline_ms_left,
            hops: r.hops,
            request_id: r.request_id,
            caller: r.caller,
            depth: r.depth,
            pins: r.pins,
            magic: PINNED_MAGIC,
        })
    }

    /// Decode (either layout) and check the limits of every field.
    pub fn decode(bytes: &[u8]) -> Result<InvokeRequest, ProtocolError> {
        let request = match wire::decode::<Pinned>(bytes) {
            Ok(p) if p.magic == PINNED_MAGIC => InvokeRequest {
                id: p.id,
                origin: p.origin,
                artifact: p.artifact,
                method: p.method,
                request: p.request,
                deadline_ms_left: p.deadline_ms_left,
                hops: p.hops,
                request_id: p.request_id,
                caller: p.caller,
                depth: p.depth,
                pins: p.pins,
            },
            _ => {
                let p: Plain = wire::decode(bytes).map_err(|e| ProtocolError::Undecodable(e.to_string()))?;
                InvokeRequest {
                    id: p.id,
                    origin: p.origin,
                    artifact: p.artifact,
                    method: p.method,
                    request: p.request,
                    deadline_ms_left: p.deadline_ms_left,
                    hops: p.hops,
                    request_id: p.request_id,
                    caller: p.caller,
                    depth: p.depth,
                    pins: Vec::new(),
                }
            }
        };
        request.check()?;
        Ok(request)
    }

    /// Whether the fields are within the protocol's limits.
    pub fn check(&self) -> Result<(), ProtocolError> {
        check_text("origin", &self.origin, NODE_BYTES_MAX)?;
        check_text("artifact", &self.artifact, ARTIFACT_BYTES_MAX)?;
        check_text("method", &self.method, METHOD_BYTES_MAX)?;
        if self.request_id.len() > REQUEST_ID_BYTES_MAX {
            let reason = format!("{} bytes, over {REQUEST_ID_BYTES_MAX}", self.request_id.len());
            return Err(ProtocolError::Field { field: "request_id", reason });
        }
        if self.caller.len() > ARTIFACT_BYTES_MAX {
            let reason = format!("{} bytes, over {ARTIFACT_BYTES_MAX}", self.caller.len());
            return Err(ProtocolError::Field { field: "caller", reason });
        }
        if self.depth > DEPTH_MAX {
            let reason = format!("{} is over {DEPTH_MAX}", self.depth);
            return Err(ProtocolError::Field { field: "depth", reason });
        }
        if self.pins.len() > crate::versions::PINS_MAX {
            let reason = format!("{} pins, over {}", self.pins.len(), crate::versions::PINS_MAX);
            return Err(ProtocolError::Field { field: "pins", reason });
        }
        for (base, artifact) in &self.pins {
            check_text("pins", base, ARTIFACT_BYTES_MAX)?;
            check_text("pins", artifact, ARTIFACT_BYTES_MAX)?;
        }
        if self.hops == 0 || self.hops > HOPS_MAX {
            let reason = format!("{} is outside 1..={HOPS_MAX}", self.hops);
            return Err(ProtocolError::Field { field: "hops", reason });
        }
        Ok(())
    }
}

impl InvokeReply {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decode and check the limits of every field.
    pub fn decode(bytes: &[u8]) -> Result<InvokeReply, ProtocolError> {
        let reply: InvokeReply = wire::decode(bytes).map_err(|e| ProtocolError::Undecodable(e.to_string()))?;
        if !(100..=599).contains(&reply.status) {
            let reason = format!("{} is not an HTTP status", reply.status);
            return Err(ProtocolError::Field { field: "status", reason });
        }
        if reply.content_type.len() > CONTENT_TYPE_BYTES_MAX {
            let reason = format!("over {CONTENT_TYPE_BYTES_MAX} bytes");
            return Err(ProtocolError::Field { field: "content_type", reason });
        }
        let content_type = [("content-type", reply.content_type.as_str())].into_iter().filter(|(_, v)| !v.is_empty());
        let fields = content_type.chain(reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if let Err(e) = aether_sdk::headers::check_fields(fields) {
            return Err(ProtocolError::Field { field: "headers", reason: e.to_string() });
        }
        Ok(reply)
    }

    /// A JSON error answer `{"error", "detail"}`.
    pub fn error(id: u64, status: u16, error: &str, detail: &str, reached_slice: bool) -> InvokeReply {
        let body = aether_sdk::json::Object::new().str("error", error).str("detail", detail).finish();
        InvokeReply {
            id,
            status,
            content_type: JSON.to_owned(),
            headers: Vec::new(),
            body: body.into_bytes(),
            reached_slice,
        }
    }

    /// "No instance here": 503, the call never reached a slice.
    pub fn no_instance(id: u64, node: &str, artifact: &str) -> InvokeReply {
        let detail = format!("no active instance of {artifact} on {node}");
        InvokeReply::error(id, 503, "no instance", &detail, false)
    }

    /// Whether this answer says the call never reached a slice because the node had no instance.
    pub fn is_no_instance(&self) -> bool {
        !self.reached_slice && self.status == 503
    }
}

const JSON: &str = "application/json";

fn check_text(field: &'static str, text: &str, bytes_max: usize) -> Result<(), ProtocolError> {
    if text.is_empty() {
        return Err(ProtocolError::Field { field, reason: "empty".to_owned() });
    }
    if text.len() > bytes_max {
        return Err(ProtocolError::Field { field, reason: format!("{} bytes, over {bytes_max}", text.len()) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> InvokeRequest {
        InvokeRequest {
            id: 42,
            origin: "node-1".into(),
            artifact: "org.aether.examples:echo:1.0.0".into(),
            method: "echo".into(),
            request: vec![0, 0, 0, 0, b'h', b'i'],
            deadline_ms_left: 1500,
            hops: 1,
            request_id: "0123456789abcdef".into(),
            caller: "org.aether.examples:orders:1.0.0".into(),
            depth: 1,
            pins: vec![("org.aether.examples:echo".into(), "org.aether.examples:echo:2.0.0".into())],
        }
    }

    #[test]
    fn messages_round_trip() {
        assert_eq!(InvokeRequest::decode(&request().encode()), Ok(request()));
        let reply = InvokeReply::no_instance(42, "node-2", "g:a:1.0.0");
        assert_eq!(InvokeReply::decode(&reply.encode()), Ok(reply.clone()));
        assert!(reply.is_no_instance());
        assert!(String::from_utf8_lossy(&reply.body).contains("no active instance of g:a:1.0.0 on node-2"));
    }

    #[test]
    fn fields_out_of_limits_are_refused_after_decoding() {
        for (field, broken) in [
            ("hops", InvokeRequest { hops: 0, ..request() }),
            ("hops", InvokeRequest { hops: HOPS_MAX + 1, ..request() }),
            ("artifact", InvokeRequest { artifact: String::new(), ..request() }),
            ("method", InvokeRequest { method: "m".repeat(METHOD_BYTES_MAX + 1), ..request() }),
            ("origin", InvokeRequest { origin: String::new(), ..request() }),
            ("request_id", InvokeRequest { request_id: "r".repeat(REQUEST_ID_BYTES_MAX + 1), ..request() }),
            ("caller", InvokeRequest { caller: "c".repeat(ARTIFACT_BYTES_MAX + 1), ..request() }),
            ("depth", InvokeRequest { depth: DEPTH_MAX + 1, ..request() }),
            (
                "pins",
                InvokeRequest { pins: vec![("b".into(), "a".into()); crate::versions::PINS_MAX + 1], ..request() },
            ),
            ("pins", InvokeRequest { pins: vec![("b".into(), String::new())], ..request() }),
        ] {
            match InvokeRequest::decode(&broken.encode()) {
                Err(ProtocolError::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let reply = InvokeReply { status: 42, ..InvokeReply::no_instance(1, "n", "a") };
        assert!(matches!(InvokeReply::decode(&reply.encode()), Err(ProtocolError::Field { field: "status", .. })));
        // Header fields a peer sends are checked like a slice's: no response splitting through a reply.
        for headers in [
            vec![("Location".to_owned(), "/x\r\nSet-Cookie: evil".to_owned())],
            vec![("Bad Name".to_owned(), "v".to_owned())],
            (0..=aether_sdk::headers::HEADERS_MAX).map(|i| (format!("x-{i}"), "v".to_owned())).collect(),
        ] {
            let reply = InvokeReply { headers, ..InvokeReply::no_instance(1, "n", "a") };
            let decoded = InvokeReply::decode(&reply.encode());
            assert!(matches!(decoded, Err(ProtocolError::Field { field: "headers", .. })), "{decoded:?}");
        }
        let redirect = InvokeReply {
            status: 302,
            content_type: String::new(),
            headers: vec![("Location".into(), "/there".into()), ("X-A".into(), "1".into()), ("x-a".into(), "2".into())],
            ..InvokeReply::no_instance(1, "n", "a")
        };
        assert_eq!(InvokeReply::decode(&redirect.encode()), Ok(redirect));
    }

    #[test]
    fn a_request_without_pins_has_the_earlier_layout_and_one_with_pins_round_trips() {
        // The release before pins encoded every request as `Plain`: its bytes still decode, pin-less.
        let plain = InvokeRequest { pins: Vec::new(), ..request() };
        let earlier = wire::encode(&Plain {
            id: plain.id,
            origin: plain.origin.clone(),
            artifact: plain.artifact.clone(),
            method: plain.method.clone(),
            request: plain.request.clone(),
            deadline_ms_left: plain.deadline_ms_left,
            hops: plain.hops,
            request_id: plain.request_id.clone(),
            caller: plain.caller.clone(),
            depth: plain.depth,
        });
        assert_eq!(plain.encode(), earlier, "what an earlier node reads");
        assert_eq!(InvokeRequest::decode(&earlier), Ok(plain));
        assert_eq!(InvokeRequest::decode(&request().encode()), Ok(request()));
    }

    #[test]
    fn a_request_is_not_a_reply() {
        // Frame kinds keep the two apart on the wire; a pin-less request's archive is also not a valid reply.
        assert!(InvokeReply::decode(&InvokeRequest { pins: Vec::new(), ..request() }.encode()).is_err());
        assert!(InvokeRequest::decode(&[]).is_err());
    }

    #[test]
    fn a_reply_carries_any_content_type_a_slice_may_answer() {
        let long = format!("application/vnd.example.order+json; charset=utf-8; profile=\"{}\"", "p".repeat(200));
        let reply = InvokeReply { status: 200, content_type: long.clone(), ..InvokeReply::no_instance(1, "n", "a") };
        assert_eq!(aether_sdk::headers::check_field("Content-Type", &long), Ok(()));
        assert_eq!(InvokeReply::decode(&reply.encode()), Ok(reply));
        let huge = "t".repeat(aether_sdk::headers::HEADER_BYTES_MAX);
        let reply = InvokeReply { content_type: huge, ..InvokeReply::no_instance(1, "n", "a") };
        assert!(InvokeReply::decode(&reply.encode()).is_err(), "still bounded with the other fields");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = InvokeRequest::decode(&bytes);
            let _ = InvokeReply::decode(&bytes);
        }

        #[test]
        fn either_layout_round_trips_as_itself(
            origin in "[a-z0-9-]{1,40}",
            request_id in "[ -~]{0,128}",
            depth in 0u8..=DEPTH_MAX,
            hops in 1u8..=HOPS_MAX,
            body in proptest::collection::vec(any::<u8>(), 0..64),
            pins in proptest::collection::vec(("[a-z.]{1,20}:[a-z]{1,20}", "[a-z.]{1,20}:[a-z]{1,20}:[0-9]\\.[0-9]\\.[0-9]"), 0..4),
        ) {
            let sent = InvokeRequest { origin, request_id, depth, hops, request: body, pins, ..request() };
            prop_assert_eq!(InvokeRequest::decode(&sent.encode()), Ok(sent));
        }

        #[test]
        fn flipped_bytes_of_a_valid_message_never_panic(at in 0usize..4096, bit in 0u8..8) {
            let mut bytes = request().encode();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = InvokeRequest::decode(&bytes);
            let mut bytes = InvokeReply::no_instance(7, "node-3", "g:a:1.0.0").encode();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = InvokeReply::decode(&bytes);
        }
    }
}
