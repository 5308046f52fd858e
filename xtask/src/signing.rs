//! `cargo xtask keygen` and `cargo xtask sign`: slice signing keys and signatures, and the installation of
//! a library with its checksum (and signature) files, shared with `build-slices`.
//!
//! A secret key file holds the 32-byte ed25519 seed as 64 hex digits and is created with mode 0600;
//! a key file that group or others can read is refused, as ssh refuses one. The public key file holds
//! the 32-byte public key as 64 hex digits: the value for `[artifacts] trusted_keys`. What is signed is
//! defined by `container::integrity` (a fixed context followed by the library's SHA-256).
//!
//! Invariant: a library is renamed into place only after its checksum (and signature) files are
//! written, each atomically.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use container::integrity;
use ed25519_dalek::SigningKey;

/// `cargo xtask keygen PREFIX`: writes `PREFIX.key` (secret, 0600) and `PREFIX.pub`; never overwrites.
pub fn keygen(args: &[String]) -> crate::TaskResult {
    let [prefix] = args else {
        return Err("usage: cargo xtask keygen PREFIX  (writes PREFIX.key and PREFIX.pub)".into());
    };
    let secret_file = PathBuf::from(format!("{prefix}.key"));
    let public_file = PathBuf::from(format!("{prefix}.pub"));
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = integrity::to_hex(key.verifying_key().as_bytes());
    create_new(&secret_file, format!("{}\n", integrity::to_hex(&seed)).as_bytes(), 0o600)?;
    create_new(&public_file, format!("{public}\n").as_bytes(), 0o644)?;
    println!("secret key: {} (keep it private)", secret_file.display());
    println!("public key: {} = {public}", public_file.display());
    println!("trust it on every node with:\n[artifacts]\ntrusted_keys = [\"{public}\"]");
    Ok(())
}

/// `cargo xtask sign --key FILE LIB.so`: writes `LIB.so.sha256` and `LIB.so.sig`, prints the signature.
pub fn sign(args: &[String]) -> crate::TaskResult {
    let usage = "usage: cargo xtask sign --key SECRET_KEY_FILE LIBRARY.so";
    let [flag, key_file, library] = args else { return Err(usage.into()) };
    if flag != "--key" {
        return Err(usage.into());
    }
    let key = read_signing_key(Path::new(key_file))?;
    let library = Path::new(library);
    let bytes = std::fs::read(library).map_err(|e| format!("cannot read {}: {e}", library.display()))?;
    let digest = integrity::sha256(&bytes);
    let signature = integrity::sign(&key, &digest);
    integrity::write_checksum(library, &digest).map_err(|e| format!("cannot write the checksum file: {e}"))?;
    integrity::write_signature(library, &signature).map_err(|e| format!("cannot write the signature file: {e}"))?;
    println!("sha256:    {}", integrity::to_hex(&digest));
    println!("signature: {}", integrity::to_hex(&signature));
    println!("key:       {}", integrity::to_hex(key.verifying_key().as_bytes()));
    println!("wrote {0}.sha256 and {0}.sig", library.display());
    Ok(())
}

/// Reads a secret key file written by `keygen`; refuses one that group or others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("signing key {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("signing key {0} is readable by group or others; run `chmod 600 {0}`", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("signing key {}: {e}", path.display()))?;
    let seed = integrity::from_hex::<32>(&text)
        .map_err(|e| format!("signing key {}: {e} (expected the file `cargo xtask keygen` writes)", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Installs `bytes` as `file`: its checksum file (and signature file with `key`, or none: a stale one is
/// removed) first, then the library under a temporary name renamed into place.
pub fn install_library(file: &Path, bytes: &[u8], key: Option<&SigningKey>) -> crate::TaskResult {
    let digest = integrity::sha256(bytes);
    let shown = file.display();
    integrity::write_checksum(file, &digest).map_err(|e| format!("cannot write {shown}.sha256: {e}"))?;
    match key {
        Some(key) => integrity::write_signature(file, &integrity::sign(key, &digest))
            .map_err(|e| format!("cannot write {shown}.sig: {e}"))?,
        None => match std::fs::remove_file(integrity::signature_file(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove the stale {shown}.sig: {e}")),
        },
    }
    integrity::write_atomically(file, bytes).map_err(|e| format!("cannot install {shown}: {e}"))
}

fn create_new(path: &Path, bytes: &[u8], mode: u32) -> crate::TaskResult {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {} (it must not exist yet): {e}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_and_check_round_trip() {
        let dir = std::env::temp_dir().join(format!("aether-xtask-sign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("dev").display().to_string();
        keygen(std::slice::from_ref(&prefix)).unwrap();
        assert!(keygen(std::slice::from_ref(&prefix)).is_err(), "never overwrites a key");
        let secret = PathBuf::from(format!("{prefix}.key"));
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        let public = std::fs::read_to_string(format!("{prefix}.pub")).unwrap();
        let keys = integrity::TrustedKeys::parse(&[public.trim()]).unwrap();

        let library = dir.join("thing-1.0.0.so");
        install_library(&library, b"\x7fELF", None).unwrap();
        assert!(integrity::check(&library, b"\x7fELF", &Default::default()).is_ok());
        assert!(integrity::check(&library, b"\x7fELF", &keys).is_err(), "unsigned");
        let args = ["--key".to_string(), secret.display().to_string(), library.display().to_string()];
        sign(&args).unwrap();
        assert!(integrity::check(&library, b"\x7fELF", &keys).is_ok());
        // Reinstalling without a key drops the signature that no longer matches anything.
        install_library(&library, b"\x7fELF2", None).unwrap();
        assert!(!integrity::signature_file(&library).exists());

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_signing_key(&secret).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
