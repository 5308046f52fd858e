//! `aether backup FILE`: asks a node for a backup of the replicated KV (`POST /api/backup`), checks the file
//! it sends (header, length, SHA-256), and writes it atomically: to a temporary file beside FILE, synced,
//! then renamed over FILE, so FILE is either the old content or a whole checked backup. The answer is read
//! whole, up to the largest backup a node sends.

use super::Ctx;
use crate::client::Request;
use crate::error::CliError;
use serde_json::{json, Value};
use sha2::Digest;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"AETHERBK";
const FORMAT: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 32;
/// The largest backup a node sends: twice the store's 256 MiB limit (as `mgmt::backup::BACKUP_BYTES_MAX`).
const BACKUP_BYTES_MAX: usize = 512 * 1024 * 1024;

/// What a backup file says about itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub slot: u64,
    pub bytes: usize,
    pub sha256: String,
}

/// Checks a backup file's header against its store bytes.
pub fn check(file: &[u8]) -> Result<Checked, String> {
    let Some((header, store)) = file.split_first_chunk::<HEADER_BYTES>() else {
        return Err(format!("{} bytes, shorter than a backup header", file.len()));
    };
    if &header[..8] != MAGIC {
        return Err("the answer is not an Aether backup".into());
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let format = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(format!("backup format {format}; this aether reads format {FORMAT}"));
    }
    let (slot, length) = (word(12), word(20));
    if length != store.len() as u64 {
        return Err(format!("the header says {length} store bytes, {} arrived", store.len()));
    }
    let sum: String = sha2::Sha256::digest(store).iter().map(|b| format!("{b:02x}")).collect();
    let said: String = header[28..60].iter().map(|b| format!("{b:02x}")).collect();
    if sum != said {
        return Err(format!("SHA-256 mismatch: the header says {said}, the store hashes to {sum}"));
    }
    Ok(Checked { slot, bytes: file.len(), sha256: sum })
}

pub fn backup(file: &Path, ctx: &Ctx) -> Result<(), CliError> {
    let reply = ctx.client.send(&Request::new("POST", "/api/backup", Vec::new()).answer_max(BACKUP_BYTES_MAX))?;
    if !(200..300).contains(&reply.status) {
        return reply.ok_json().map(drop);
    }
    let checked = check(&reply.body).map_err(|e| CliError::Refused {
        status: reply.status,
        body: json!({ "error": "bad_backup", "detail": e }),
        node: reply.node.clone(),
    })?;
    write_atomically(file, &reply.body).map_err(CliError::Usage)?;
    let value = json!({ "file": file.display().to_string(), "slot": checked.slot, "bytes": checked.bytes,
                        "sha256": checked.sha256, "node": reply.node });
    ctx.show(&value, render)
}

fn render(v: &Value) -> String {
    format!(
        "backup of slot {} from {}: {} bytes, SHA-256 {}, written to {}\n",
        v["slot"],
        v["node"].as_str().unwrap_or(""),
        v["bytes"],
        v["sha256"].as_str().unwrap_or(""),
        v["file"].as_str().unwrap_or("")
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(slot: u64, store: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT.to_le_bytes());
        bytes.extend_from_slice(&slot.to_le_bytes());
        bytes.extend_from_slice(&(store.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&sha2::Sha256::digest(store));
        bytes.extend_from_slice(store);
        bytes
    }

    #[test]
    fn a_backup_is_checked_before_it_is_written() {
        let good = file(9, b"store");
        let checked = check(&good).unwrap();
        assert_eq!((checked.slot, checked.bytes), (9, good.len()));
        assert!(check(&good[..good.len() - 1]).unwrap_err().contains("store bytes"));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(check(&bad).unwrap_err().contains("SHA-256 mismatch"));
        assert!(check(b"{\"error\":\"x\"}").is_err());
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("aether-cli-backup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kv.backup");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"new content").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
