//! Proof of the cluster secret during the handshake: an HMAC-SHA256 over both nonces, the cluster name and
//! the sender's id. The receiver's fresh nonce makes a recorded proof useless on another connection, and the
//! sender's id inside the MAC stops a proof from being reflected back to its author.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;

const CONTEXT: &[u8] = b"aether-cluster-auth-v1";

/// The MAC `sender` presents to the holder of `receiver_nonce`.
pub fn prove(
    secret: &[u8],
    cluster: &str,
    sender: &str,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
) -> [u8; 32] {
    mac(secret, cluster, sender, receiver_nonce, sender_nonce).finalize().into_bytes().into()
}

/// Checks a peer's MAC in constant time.
pub fn verify(
    secret: &[u8],
    cluster: &str,
    sender: &str,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
    presented: &[u8; 32],
) -> bool {
    mac(secret, cluster, sender, receiver_nonce, sender_nonce).verify_slice(presented).is_ok()
}

fn mac(secret: &[u8], cluster: &str, sender: &str, receiver_nonce: &[u8; 32], sender_nonce: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in [CONTEXT, cluster.as_bytes(), sender.as_bytes()] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.update(receiver_nonce);
    mac.update(sender_nonce);
    mac
}

/// A fresh nonce from the operating system, mixed with a counter so a failed read never repeats a value.
pub fn nonce(fallback_seed: &mut u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out));
    if from_os.is_err() {
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&crate::backoff::splitmix64(fallback_seed).to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_only_with_same_secret_and_nonces() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let proof = prove(b"secret", "demo", "node-1", &b, &a);
        assert!(verify(b"secret", "demo", "node-1", &b, &a, &proof));
        assert!(!verify(b"other", "demo", "node-1", &b, &a, &proof));
        assert!(!verify(b"secret", "demo", "node-2", &b, &a, &proof));
        assert!(!verify(b"secret", "demo", "node-1", &a, &b, &proof));
        assert!(!verify(b"secret", "prod", "node-1", &b, &a, &proof));
    }

    #[test]
    fn nonces_differ() {
        let mut seed = 1;
        assert_ne!(nonce(&mut seed), nonce(&mut seed));
    }
}
