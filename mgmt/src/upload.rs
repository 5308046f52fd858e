//! An upload's request: the library in the body, checked against every SHA-256 the client sent with it
//! (`X-Aether-Sha256`, `Digest`, `Content-Digest`) and its announced length, and the signature header;
//! then the repository's own checks and writes ([`crate::repository::put_library`]).

use crate::api::{ArtifactUpload, Backend};
use crate::error::ApiError;
use crate::server::{Request, Response};

/// `POST`/`PUT /api/artifacts/{group}/{artifact}/{version}` and `PUT` of the library's repository path: the
/// body is the library. The client may send its SHA-256 (`X-Aether-Sha256: <hex>`, `Digest:
/// sha-256=<base64>` or `Content-Digest: sha-256=:<base64>:`); any digest that differs from the body's is a
/// 400 and nothing is stored. `X-Aether-Signature` carries an ed25519 signature (hex or base64) stored
/// beside the library. The repository's checks and writes follow ([`crate::repository::put_library`]).
pub(crate) fn upload(backend: &dyn Backend, artifact: &kvstore::Artifact, req: &Request) -> Result<Response, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::bad_request("the body is empty; send the slice library's bytes"));
    }
    // The HTTP layer should never hand over a short body; a library is too dangerous to trust it blindly.
    if let Some(announced) = req.header("content-length") {
        if announced.trim().parse::<usize>().ok() != Some(req.body.len()) {
            return Err(ApiError::bad_request(format!(
                "the body has {} bytes, Content-Length announced {announced}: the upload is incomplete; nothing was stored",
                req.body.len()
            )));
        }
    }
    let claimed = claimed_digests(req)?;
    let signature = match req.header("x-aether-signature") {
        Some(text) => Some(
            container::integrity::from_hex_or_base64::<64>(text)
                .map_err(|e| ApiError::bad_request(format!("X-Aether-Signature: {e}")))?,
        ),
        None => None,
    };
    let sha256 = container::integrity::sha256(&req.body);
    for (header, digest) in claimed {
        if digest != sha256 {
            return Err(ApiError::new(
                400,
                "checksum_mismatch",
                format!(
                    "the body's SHA-256 is {}, {header} says {}: the upload is damaged or incomplete; nothing was stored",
                    container::integrity::to_hex(&sha256),
                    container::integrity::to_hex(&digest)
                ),
            ));
        }
    }
    crate::repository::put_library(backend, artifact, ArtifactUpload { bytes: req.body.clone(), sha256, signature })
}

/// Every SHA-256 the client sent for the body, with the header it came in. A malformed value is a 400.
fn claimed_digests(req: &Request) -> Result<Vec<(&'static str, [u8; 32])>, ApiError> {
    let mut claimed = Vec::new();
    let bad = |header: &str, e: String| ApiError::bad_request(format!("{header}: {e}"));
    for (name, value) in &req.headers {
        match name.as_str() {
            "x-aether-sha256" => {
                let digest = container::integrity::from_hex::<32>(value).map_err(|e| bad("X-Aether-Sha256", e))?;
                claimed.push(("X-Aether-Sha256", digest));
            }
            // RFC 3230: `Digest: SHA-256=<base64>[, other=...]`; other algorithms are ignored.
            "digest" => {
                for item in value.split(',') {
                    let Some((algorithm, encoded)) = item.trim().split_once('=') else { continue };
                    if algorithm.trim().eq_ignore_ascii_case("sha-256") {
                        claimed.push(("Digest", base64_digest(encoded).map_err(|e| bad("Digest", e))?));
                    }
                }
            }
            // RFC 9530: `Content-Digest: sha-256=:<base64>:[, other=...]`.
            "content-digest" => {
                for item in value.split(',') {
                    let Some((algorithm, encoded)) = item.trim().split_once('=') else { continue };
                    if algorithm.trim().eq_ignore_ascii_case("sha-256") {
                        let encoded = encoded.trim().trim_start_matches(':').trim_end_matches(':');
                        claimed.push(("Content-Digest", base64_digest(encoded).map_err(|e| bad("Content-Digest", e))?));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(claimed)
}

fn base64_digest(encoded: &str) -> Result<[u8; 32], String> {
    let bytes = container::integrity::from_base64(encoded)?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("a SHA-256 has 32 bytes, not {}", b.len()))
}
