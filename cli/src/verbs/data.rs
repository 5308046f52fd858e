//! `kv get|put|delete|list` and `artifact push|list|info|delete`. KV writes carry a fresh `Idempotency-Key`, so the
//! client may send them to the next node when one fails part way: the cluster applies each at most once.

use super::{items, read_input, Ctx};
use crate::args::{ArtifactVerb, KvVerb};
use crate::client::{encode_path, idempotency_key, query, Request};
use crate::error::CliError;
use crate::table::{bytes, cell, clip, Table};
use serde_json::Value;
use sha2::Digest;
use std::io::IsTerminal;

/// The largest KV value sent (the server's own limit is 16 MiB for any body).
const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The largest slice library sent (the server's limit for uploads).
const ARTIFACT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The longest signature file read.
const SIGNATURE_BYTES_MAX: usize = 4096;

pub fn kv(verb: &KvVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        KvVerb::Get { key, stale } => {
            let stale = stale.then(|| "true".to_string());
            let path = format!("/api/kv/{}{}", encode_path(key, true), query(&[("stale", stale)]));
            let value = ctx.client.json(&Request::get(path))?;
            if ctx.json {
                super::print_json(&value);
            } else {
                print_value(&value, ctx.interactive || std::io::stdout().is_terminal())?;
            }
            Ok(())
        }
        KvVerb::Put { key, value, file, if_version } => {
            let body = match (value, file) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(path)) => read_input(path, VALUE_BYTES_MAX)?,
                (None, None) => return Err(CliError::Usage("kv put needs a VALUE or --file FILE".into())),
            };
            let path = format!(
                "/api/kv/{}{}",
                encode_path(key, true),
                query(&[("version", if_version.map(|v| v.to_string()))])
            );
            let request = Request::new("PUT", path, body).header("Idempotency-Key", idempotency_key());
            let answer = ctx.client.json(&request)?;
            ctx.show(&answer, |v| format!("{key}: version {}\n", cell(&v["version"])))
        }
        KvVerb::Delete { key, if_version } => {
            let path = format!(
                "/api/kv/{}{}",
                encode_path(key, true),
                query(&[("version", if_version.map(|v| v.to_string()))])
            );
            let request = Request::new("DELETE", path, Vec::new()).header("Idempotency-Key", idempotency_key());
            let answer = ctx.client.json(&request)?;
            ctx.show(&answer, |_| format!("{key}: deleted\n"))
        }
        KvVerb::List { prefix, stale, after } => {
            let stale = stale.then(|| "true".to_string());
            let path = format!(
                "/api/kv{}",
                query(&[("prefix", Some(prefix.clone())), ("after", after.clone()), ("stale", stale)])
            );
            let value = ctx.client.json(&Request::get(path))?;
            ctx.show(&value, render_kv_list)
        }
    }
}

/// A value as stored: base64 values decoded to raw bytes, text as is, so `aether kv get K > FILE` writes
/// exactly what `kv put K --file FILE` sent. Only when lines follow (a terminal, an interactive session)
/// does text get a final newline.
fn print_value(entry: &Value, lines: bool) -> Result<(), CliError> {
    let text = entry["value"].as_str().unwrap_or("");
    if entry["encoding"] == "base64" {
        let raw =
            decode_base64(text).ok_or_else(|| CliError::Usage("the server sent a value that is not base64".into()))?;
        super::emit_bytes(&raw);
        return Ok(());
    }
    super::emit(&value_text(text, lines));
    Ok(())
}

/// A text value as printed: itself, plus a newline when `lines` and it does not end with one.
fn value_text(text: &str, lines: bool) -> String {
    if lines && !text.ends_with('\n') {
        format!("{text}\n")
    } else {
        text.to_string()
    }
}

pub fn render_kv_list(v: &Value) -> String {
    let mut t = Table::new(&["KEY", "VERSION", "VALUE"]);
    for e in items(v, "entries") {
        let value = if e["encoding"] == "base64" {
            format!("<{} bytes, binary>", decode_base64(e["value"].as_str().unwrap_or("")).map_or(0, |b| b.len()))
        } else {
            clip(cell(&e["value"]), 60)
        };
        t.row(vec![cell(&e["key"]), cell(&e["version"]), value]);
    }
    if t.is_empty() {
        return format!("no keys under '{}'\n", v["prefix"].as_str().unwrap_or(""));
    }
    match v["next"].as_str() {
        Some(next) => format!(
            "{}more keys follow: aether kv list {} --after {}\n",
            t.render(),
            v["prefix"].as_str().unwrap_or(""),
            next
        ),
        None => t.render(),
    }
}

/// Standard base64 (padding optional); `None` when `text` is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trimmed.bytes() {
        acc = (acc << 6) | u32::from(digit(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub fn artifact(verb: &ArtifactVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        ArtifactVerb::Push { file, coords, sig } => {
            let path = upload_path(coords)?;
            let library = read_input(file, ARTIFACT_BYTES_MAX)?;
            if library.is_empty() {
                return Err(CliError::Usage(format!("{} is empty", file.display())));
            }
            let sha256: String = sha2::Sha256::digest(&library).iter().map(|b| format!("{b:02x}")).collect();
            let mut request = Request::new("POST", path, library)
                .header("Content-Type", "application/octet-stream")
                .header("X-Aether-Sha256", sha256);
            if let Some(sig) = sig {
                let text = String::from_utf8(read_input(sig, SIGNATURE_BYTES_MAX)?)
                    .map_err(|_| CliError::Usage(format!("{} is not text", sig.display())))?;
                request = request.header("X-Aether-Signature", text.trim().to_string());
            }
            let answer = ctx.client.json(&request)?;
            ctx.show(&answer, |v| render_pushed(coords, v))
        }
        ArtifactVerb::List => {
            let value = ctx.client.json(&Request::get("/api/artifacts"))?;
            ctx.show(&value, render_artifacts)
        }
        ArtifactVerb::Info { coords } => {
            let value = ctx.client.json(&Request::get(upload_path(coords)?))?;
            ctx.show(&value, render_artifact)
        }
        ArtifactVerb::Delete { coords } => {
            let answer = ctx.client.json(&Request::new("DELETE", upload_path(coords)?, Vec::new()))?;
            ctx.show(&answer, |v| {
                let mut text = format!("deleted {coords}\n");
                if v["bytes_deleted"] == Value::Bool(false) {
                    text.push_str(&format!("its stored bytes were not all deleted: {}\n", cell(&v["detail"])));
                }
                text
            })
        }
    }
}

/// `group:artifact:version` to its upload path; anything but three non-empty parts is a usage error (the
/// server checks the parts themselves).
pub fn upload_path(coords: &str) -> Result<String, CliError> {
    let parts: Vec<&str> = coords.split(':').collect();
    match parts.as_slice() {
        [group, artifact, version] if parts.iter().all(|p| !p.is_empty()) => Ok(format!(
            "/api/artifacts/{}/{}/{}",
            encode_path(group, false),
            encode_path(artifact, false),
            encode_path(version, false)
        )),
        _ => Err(CliError::Usage(format!("coordinates '{coords}': expected group:artifact:version"))),
    }
}

fn render_pushed(coords: &str, v: &Value) -> String {
    let what = if v["unchanged"] == Value::Bool(true) {
        format!("{coords} is already stored with these bytes (unchanged)")
    } else {
        format!("uploaded {coords}")
    };
    format!("{what}\nsha256: {}\nsigned: {}\n", cell(&v["sha256"]), cell(&v["signed"]))
}

pub fn render_artifacts(v: &Value) -> String {
    let mut t = Table::new(&["ARTIFACT", "BYTES", "SIGNED", "SHA256", "USED BY"]);
    for a in items(v, "artifacts") {
        let used: Vec<String> = a["used_by"].as_array().map(|u| u.iter().map(cell).collect()).unwrap_or_default();
        t.row(vec![cell(&a["artifact"]), bytes(&a["size"]), cell(&a["signed"]), cell(&a["sha256"]), used.join(",")]);
    }
    for a in items(v, "local_only") {
        let row = vec![cell(&a["artifact"]), bytes(&a["bytes"]), cell(&a["signed"]), cell(&a["sha256"])];
        t.row(row.into_iter().chain(["(this node's folder only)".to_string()]).collect());
    }
    t.render_or("no artifacts")
}

fn render_artifact(v: &Value) -> String {
    let used: Vec<String> = v["used_by"].as_array().map(|u| u.iter().map(cell).collect()).unwrap_or_default();
    let used = if used.is_empty() { "no blueprint".to_string() } else { used.join(", ") };
    format!(
        "{}\nfile: {}\nbytes: {}\nsha256: {}\nsha1: {}\nmd5: {}\nsigned: {}\nuploaded to {} at {} ms\nused by: {used}\n",
        cell(&v["artifact"]),
        cell(&v["file"]),
        bytes(&v["size"]),
        cell(&v["sha256"]),
        cell(&v["sha1"]),
        cell(&v["md5"]),
        cell(&v["signed"]),
        cell(&v["node"]),
        cell(&v["uploaded_ms"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_decodes_the_rfc_vectors_and_refuses_garbage() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(decode_base64(encoded).unwrap(), plain.as_bytes(), "{encoded}");
        }
        assert_eq!(decode_base64("Zg").unwrap(), b"f");
        for bad in ["Z", "Zm9v!", "Zg===", "Zm 9v"] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn text_values_get_a_newline_only_when_lines_follow() {
        assert_eq!(value_text("hello", false), "hello");
        assert_eq!(value_text("hello", true), "hello\n");
        assert_eq!(value_text("line\n", true), "line\n");
        assert_eq!(value_text("", false), "");
    }

    #[test]
    fn coordinates_need_three_parts() {
        assert_eq!(upload_path("org.x:echo:1.0.0").unwrap(), "/api/artifacts/org.x/echo/1.0.0");
        for bad in ["org.x:echo", "a:b:c:d", "a::1.0.0", "a/b:c:1"] {
            let result = upload_path(bad);
            assert!(
                matches!(result, Err(CliError::Usage(_))) || result.as_deref().is_ok_and(|p| p.contains("%2F")),
                "{bad}"
            );
        }
    }

    #[test]
    fn kv_lists_mark_binary_values() {
        let v = json!({"prefix": "user/", "entries": [{"key": "user/a", "value": "hello", "version": 3},
            {"key": "user/b", "value": "AAEC", "encoding": "base64", "version": 4}]});
        let text = render_kv_list(&v);
        assert!(text.contains("user/a  3        hello\n"), "{text}");
        assert!(text.contains("user/b  4        <3 bytes, binary>\n"), "{text}");
        assert_eq!(render_kv_list(&json!({"prefix": "x/", "entries": []})), "no keys under 'x/'\n");
        let paged = json!({"prefix": "x/", "entries": [{"key": "x/a", "version": 1, "value": "v"}], "next": "x/a"});
        assert!(render_kv_list(&paged).ends_with("more keys follow: aether kv list x/ --after x/a\n"));
    }

    #[test]
    fn artifacts_list_sizes_in_binary_units_users_and_folder_only_libraries() {
        let v = json!({"artifacts": [{"artifact": "g:a:1.0.0", "sha256": "ab", "signed": false, "size": 2048,
            "used_by": ["shop", "web"]}],
            "local_only": [{"artifact": "g:b:1.0.0", "sha256": "cd", "signed": true, "bytes": 10}]});
        let text = render_artifacts(&v);
        assert!(text.contains("g:a:1.0.0  2.0KiB  no      ab      shop,web"), "{text}");
        assert!(text.contains("g:b:1.0.0") && text.contains("folder only"), "{text}");
    }

    #[test]
    fn one_version_shows_its_digests_and_users() {
        let v = json!({"artifact": "g:a:1.0.0", "file": "g/a/1.0.0/a-1.0.0.so", "size": 10, "sha256": "ab",
            "sha1": "cd", "md5": "ef", "signed": false, "node": "node-1", "uploaded_ms": 5, "used_by": []});
        let text = render_artifact(&v);
        assert!(text.contains("sha1: cd\n") && text.contains("used by: no blueprint"), "{text}");
        assert!(render_pushed("g:a:1.0.0", &json!({"unchanged": true})).contains("already stored"));
        assert!(render_pushed("g:a:1.0.0", &json!({"sha256": "ab"})).starts_with("uploaded g:a:1.0.0\n"));
    }
}
