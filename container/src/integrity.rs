//! Artifact integrity: the SHA-256 of a slice library, the checksum and signature files kept beside it,
//! the trusted ed25519 keys, and the text encodings of all three.
//!
//! Beside `{artifact}-{version}.so` a repository keeps:
//! - `{artifact}-{version}.so.sha256`: the library's SHA-256 in `sha256sum` format (`<64 hex>  <file name>`);
//!   a hand-written `sha256sum thing-1.0.0.so > thing-1.0.0.so.sha256` is accepted as is;
//! - `{artifact}-{version}.so.sig` (optional): an ed25519 signature, in hex, over
//!   [`SIGNATURE_CONTEXT`] followed by the 32 raw bytes of the library's SHA-256.
//!
//! Invariants: [`check`] answers `Ok` only for bytes whose SHA-256 equals the checksum file's, and, when
//! trusted keys are configured, whose digest carries a strict ed25519 signature by one of them. Errors
//! name files by their file name only, never by an absolute path.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Suffix of the checksum file beside a library.
pub const CHECKSUM_SUFFIX: &str = ".sha256";
/// Suffix of the signature file beside a library.
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// What a signature covers, before the 32 digest bytes: a signature made for anything else never verifies.
pub const SIGNATURE_CONTEXT: &[u8] = b"aether slice artifact v1\0sha256\0";
/// Checksum and signature files are a line of text; anything longer is refused unread.
const SIDECAR_BYTES_MAX: u64 = 4096;

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex (either case) of exactly `N` bytes.
pub fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() != 2 * N {
        return Err(format!("expected {} hex digits, got {} characters", 2 * N, text.len()));
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not hex".to_string());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| "not hex".to_string())?;
    }
    Ok(out)
}

/// Decodes standard base64 (with or without `=` padding).
pub fn from_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("not base64".into()),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 || acc != 0 {
        return Err("not base64 (trailing bits)".into());
    }
    Ok(out)
}

/// Decodes `N` bytes given as hex (`2N` digits) or as base64.
pub fn from_hex_or_base64<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() == 2 * N {
        if let Ok(bytes) = from_hex::<N>(text) {
            return Ok(bytes);
        }
    }
    let bytes = from_base64(text).map_err(|_| format!("expected {N} bytes as {} hex digits or base64", 2 * N))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("expected {N} bytes, got {}", b.len()))
}

/// The checksum file of `library`.
pub fn checksum_file(library: &Path) -> PathBuf {
    sidecar(library, CHECKSUM_SUFFIX)
}

/// The signature file of `library`.
pub fn signature_file(library: &Path) -> PathBuf {
    sidecar(library, SIGNATURE_SUFFIX)
}

fn sidecar(library: &Path, suffix: &str) -> PathBuf {
    let mut name = library.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The checksum file's text for a library named `file_name`: `sha256sum` format.
pub fn checksum_text(digest: &Digest, file_name: &str) -> String {
    format!("{}  {file_name}\n", to_hex(digest))
}

/// Reads a checksum file's digest: its first field, 64 hex digits. What follows (`sha256sum` prints the
/// file name it hashed, which may be the library's name before it was copied into the repository) is
/// ignored: the digest alone decides.
pub fn parse_checksum_text(text: &str) -> Result<Digest, String> {
    let hex = text.split_whitespace().next().ok_or("the checksum file is empty")?;
    from_hex::<32>(hex).map_err(|e| format!("the checksum file does not start with a SHA-256: {e}"))
}

/// The signature file's text.
pub fn signature_text(signature: &[u8; 64]) -> String {
    format!("{}\n", to_hex(signature))
}

/// What a signature covers.
pub fn signed_message(digest: &Digest) -> Vec<u8> {
    let mut message = SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(digest);
    message
}

/// Signs a library's digest.
pub fn sign(key: &SigningKey, digest: &Digest) -> [u8; 64] {
    key.sign(&signed_message(digest)).to_bytes()
}

/// The ed25519 public keys whose signatures this node accepts; empty means signatures are not required.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl TrustedKeys {
    /// Parses keys given as 64 hex digits or base64 of the 32 key bytes.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<TrustedKeys, String> {
        let keys = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let bytes = from_hex_or_base64::<32>(text.as_ref()).map_err(|e| format!("trusted key {i}: {e}"))?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| format!("trusted key {i} is not an ed25519 public key"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedKeys(keys))
    }

    pub fn from_keys(keys: Vec<VerifyingKey>) -> TrustedKeys {
        TrustedKeys(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether one of the keys signed `digest` (strict verification: no malleable or weak-key signatures).
    pub fn verify(&self, digest: &Digest, signature: &[u8; 64]) -> bool {
        let signature = Signature::from_bytes(signature);
        let message = signed_message(digest);
        self.0.iter().any(|key| key.verify_strict(&message, &signature).is_ok())
    }
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|k| to_hex(k.as_bytes()))).finish()
    }
}

/// Why a library may not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegrityError {
    /// No checksum file beside the library.
    NoChecksum { file: String },
    /// The checksum file cannot be read or parsed.
    BadChecksumFile { file: String, reason: String },
    /// The bytes do not hash to the checksum file's digest.
    Mismatch { file: String, expected: String, found: String },
    /// Trusted keys are configured and there is no signature file.
    Unsigned { file: String },
    /// The signature file cannot be read or parsed.
    BadSignatureFile { file: String, reason: String },
    /// The signature does not verify against any trusted key.
    BadSignature { file: String, keys: usize },
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use IntegrityError::*;
        match self {
            NoChecksum { file } => write!(
                f,
                "{file} has no checksum file {file}{CHECKSUM_SUFFIX}; upload it through the management API, or \
                 write one with `sha256sum {file} > {file}{CHECKSUM_SUFFIX}` in its folder"
            ),
            BadChecksumFile { file, reason } => write!(f, "{file}{CHECKSUM_SUFFIX} is unusable: {reason}"),
            Mismatch { file, expected, found } => write!(
                f,
                "{file} has SHA-256 {found} but its checksum file says {expected}: the file changed or is \
                 truncated; upload it again"
            ),
            Unsigned { file } => write!(
                f,
                "this node loads only signed libraries ([artifacts] trusted_keys) and {file} has no signature \
                 file {file}{SIGNATURE_SUFFIX}"
            ),
            BadSignatureFile { file, reason } => write!(f, "{file}{SIGNATURE_SUFFIX} is unusable: {reason}"),
            BadSignature { file, keys } => {
                write!(f, "the signature of {file} does not verify against any of the {keys} trusted keys")
            }
        }
    }
}

impl std::error::Error for IntegrityError {}

/// Checks `bytes`, read from `library`, against the checksum file beside it, and against its signature
/// file when `keys` is not empty. Answers the verified digest.
pub fn check(library: &Path, bytes: &[u8], keys: &TrustedKeys) -> Result<Digest, IntegrityError> {
    let file = library.file_name().map_or_else(|| "the library".into(), |n| n.to_string_lossy().into_owned());
    let checksum = match read_sidecar(&checksum_file(library)) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(IntegrityError::NoChecksum { file }),
        Err(reason) => return Err(IntegrityError::BadChecksumFile { file, reason }),
    };
    let expected = parse_checksum_text(&checksum)
        .map_err(|reason| IntegrityError::BadChecksumFile { file: file.clone(), reason })?;
    let found = sha256(bytes);
    if found != expected {
        return Err(IntegrityError::Mismatch { file, expected: to_hex(&expected), found: to_hex(&found) });
    }
    if keys.is_empty() {
        return Ok(found);
    }
    let text = match read_sidecar(&signature_file(library)) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(IntegrityError::Unsigned { file }),
        Err(reason) => return Err(IntegrityError::BadSignatureFile { file, reason }),
    };
    let signature = from_hex_or_base64::<64>(&text)
        .map_err(|reason| IntegrityError::BadSignatureFile { file: file.clone(), reason })?;
    if !keys.verify(&found, &signature) {
        return Err(IntegrityError::BadSignature { file, keys: keys.len() });
    }
    Ok(found)
}

/// A sidecar's text; `None` when there is no such file. Bounded: a sidecar is one line.
fn read_sidecar(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let mut text = String::new();
    file.take(SIDECAR_BYTES_MAX + 1).read_to_string(&mut text).map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > SIDECAR_BYTES_MAX {
        return Err(format!("longer than {SIDECAR_BYTES_MAX} bytes"));
    }
    Ok(Some(text))
}

/// Writes `text` to `path` atomically: a new temporary file in the same folder, synced, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Writes the checksum file of `library` for `digest`.
pub fn write_checksum(library: &Path, digest: &Digest) -> std::io::Result<()> {
    let name = library.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    write_atomically(&checksum_file(library), checksum_text(digest, &name).as_bytes())
}

/// Writes the signature file of `library`.
pub fn write_signature(library: &Path, signature: &[u8; 64]) -> std::io::Result<()> {
    write_atomically(&signature_file(library), signature_text(signature).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn library_in(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-integrity-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("thing-1.0.0.so");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn encodings_round_trip_and_refuse_garbage() {
        assert_eq!(from_hex::<2>("0aFf").unwrap(), [0x0a, 0xff]);
        assert!(from_hex::<2>("0aF").is_err());
        assert!(from_hex::<2>("zzzz").is_err());
        assert!(from_hex::<2>("éé").is_err());
        assert!(from_hex::<2>("+a+b").is_err(), "a sign is not a hex digit");
        assert_eq!(from_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(from_base64("aGVsbG8").unwrap(), b"hello");
        assert!(from_base64("aGVsbG9").is_err(), "trailing bits");
        assert!(from_base64("a?").is_err());
        let digest = sha256(b"abc");
        assert_eq!(to_hex(&digest), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(from_hex_or_base64::<32>(&to_hex(&digest)).unwrap(), digest);
        assert_eq!(from_hex_or_base64::<32>("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=").unwrap(), digest);
        assert!(from_hex_or_base64::<32>("aGVsbG8=").is_err());
    }

    #[test]
    fn checksum_files_in_sha256sum_format() {
        let digest = sha256(b"x");
        let text = checksum_text(&digest, "a-1.so");
        assert_eq!(text, format!("{}  a-1.so\n", to_hex(&digest)));
        assert_eq!(parse_checksum_text(&text).unwrap(), digest);
        let by_hand = format!("{} */srv/repo/liba.so\n", to_hex(&digest));
        assert_eq!(parse_checksum_text(&by_hand).unwrap(), digest);
        assert_eq!(parse_checksum_text(&to_hex(&digest)).unwrap(), digest);
        assert!(parse_checksum_text("").is_err());
        assert!(parse_checksum_text("nothex  a-1.so").is_err());
    }

    #[test]
    fn a_missing_checksum_file_refuses() {
        let lib = library_in("missing", b"\x7fELF bytes");
        let err = check(&lib, b"\x7fELF bytes", &TrustedKeys::default()).unwrap_err();
        assert!(matches!(err, IntegrityError::NoChecksum { .. }), "{err}");
        assert!(err.to_string().contains("sha256sum thing-1.0.0.so"), "{err}");
        assert!(!err.to_string().contains(&std::env::temp_dir().display().to_string()), "{err}");
    }

    #[test]
    fn a_checksum_mismatch_refuses_and_a_match_passes() {
        let lib = library_in("mismatch", b"\x7fELF bytes");
        write_checksum(&lib, &sha256(b"\x7fELF bytes")).unwrap();
        assert_eq!(check(&lib, b"\x7fELF bytes", &TrustedKeys::default()).unwrap(), sha256(b"\x7fELF bytes"));
        let err = check(&lib, b"\x7fELF byte", &TrustedKeys::default()).unwrap_err();
        assert!(matches!(err, IntegrityError::Mismatch { .. }), "{err}");
        std::fs::write(checksum_file(&lib), vec![b'a'; 5000]).unwrap();
        let err = check(&lib, b"\x7fELF bytes", &TrustedKeys::default()).unwrap_err();
        assert!(matches!(err, IntegrityError::BadChecksumFile { .. }), "{err}");
    }

    #[test]
    fn signatures_are_required_and_checked_when_keys_are_trusted() {
        let bytes = b"\x7fELF signed";
        let lib = library_in("signed", bytes);
        let digest = sha256(bytes);
        write_checksum(&lib, &digest).unwrap();
        let trusted = TrustedKeys::parse(&[to_hex(key(1).verifying_key().as_bytes())]).unwrap();
        let err = check(&lib, bytes, &trusted).unwrap_err();
        assert!(matches!(err, IntegrityError::Unsigned { .. }), "{err}");

        write_signature(&lib, &sign(&key(2), &digest)).unwrap();
        let err = check(&lib, bytes, &trusted).unwrap_err();
        assert!(matches!(err, IntegrityError::BadSignature { keys: 1, .. }), "{err}");

        let mut forged = sign(&key(1), &digest);
        forged[10] ^= 1;
        write_signature(&lib, &forged).unwrap();
        assert!(matches!(check(&lib, bytes, &trusted).unwrap_err(), IntegrityError::BadSignature { .. }));

        // A signature over the raw bytes (another context) does not verify either.
        let raw = key(1).sign(&digest).to_bytes();
        write_signature(&lib, &raw).unwrap();
        assert!(matches!(check(&lib, bytes, &trusted).unwrap_err(), IntegrityError::BadSignature { .. }));

        std::fs::write(signature_file(&lib), "not a signature").unwrap();
        assert!(matches!(check(&lib, bytes, &trusted).unwrap_err(), IntegrityError::BadSignatureFile { .. }));

        write_signature(&lib, &sign(&key(1), &digest)).unwrap();
        assert_eq!(check(&lib, bytes, &trusted).unwrap(), digest);
        let two = TrustedKeys::from_keys(vec![key(3).verifying_key(), key(1).verifying_key()]);
        assert_eq!(check(&lib, bytes, &two).unwrap(), digest);
        // Without trusted keys the signature file is not consulted.
        std::fs::write(signature_file(&lib), "garbage").unwrap();
        assert_eq!(check(&lib, bytes, &TrustedKeys::default()).unwrap(), digest);
    }

    #[test]
    fn trusted_keys_parse_hex_and_base64_and_refuse_the_rest() {
        let public = key(7).verifying_key();
        let hex = to_hex(public.as_bytes());
        let keys = TrustedKeys::parse(&[hex.as_str()]).unwrap();
        assert_eq!(keys, TrustedKeys::from_keys(vec![public]));
        assert!(TrustedKeys::parse(&["abcd"]).is_err());
        assert!(TrustedKeys::parse(&["zz".repeat(32)]).is_err());
    }
}
