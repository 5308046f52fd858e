//! Proof of the cluster secret during the handshake: an HMAC-SHA256 over both nonces, the cluster name, the
//! sender's and the receiver's ids, and which side dialed. The receiver's fresh nonce makes a recorded proof
//! useless on another connection; the sender's id stops a proof from being reflected back to its author; the
//! receiver's id and the dialing side stop a relay: a stranger that opens a connection to each of two nodes
//! and swaps their Hellos gets from each a proof made as the *accepting* side, while each expects the peer
//! that claims another node's name to have dialed. (Frames after the handshake carry no MAC: against an
//! attacker on the path between nodes, run the cluster port with TLS, `[cluster_tls]`.)

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;

const CONTEXT: &[u8] = b"aether-cluster-auth-v2";

/// Who proves to whom on one connection: the sender's and receiver's ids, and whether the sender dialed.
#[derive(Clone, Copy, Debug)]
pub struct Parties<'a> {
    pub sender: &'a str,
    pub receiver: &'a str,
    pub sender_dialed: bool,
}

/// The MAC `parties.sender` presents to the holder of `receiver_nonce`.
pub fn prove(
    secret: &[u8],
    cluster: &str,
    parties: Parties<'_>,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
) -> [u8; 32] {
    mac(secret, cluster, parties, receiver_nonce, sender_nonce).finalize().into_bytes().into()
}

/// Checks a peer's MAC in constant time.
pub fn verify(
    secret: &[u8],
    cluster: &str,
    parties: Parties<'_>,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
    presented: &[u8; 32],
) -> bool {
    mac(secret, cluster, parties, receiver_nonce, sender_nonce).verify_slice(presented).is_ok()
}

fn mac(
    secret: &[u8],
    cluster: &str,
    parties: Parties<'_>,
    receiver_nonce: &[u8; 32],
    sender_nonce: &[u8; 32],
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    let role: &[u8] = if parties.sender_dialed { b"dialer" } else { b"acceptor" };
    for part in [CONTEXT, cluster.as_bytes(), parties.sender.as_bytes(), parties.receiver.as_bytes(), role] {
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

    fn parties<'a>(sender: &'a str, receiver: &'a str, sender_dialed: bool) -> Parties<'a> {
        Parties { sender, receiver, sender_dialed }
    }

    #[test]
    fn proof_verifies_only_with_same_secret_and_nonces() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let me = parties("node-1", "node-2", true);
        let proof = prove(b"secret", "demo", me, &b, &a);
        assert!(verify(b"secret", "demo", me, &b, &a, &proof));
        assert!(!verify(b"other", "demo", me, &b, &a, &proof));
        assert!(!verify(b"secret", "demo", parties("node-3", "node-2", true), &b, &a, &proof));
        assert!(!verify(b"secret", "demo", me, &a, &b, &proof));
        assert!(!verify(b"secret", "prod", me, &b, &a, &proof));
    }

    #[test]
    fn a_proof_made_as_the_accepting_side_or_for_another_receiver_does_not_pass_a_relay() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        // node-1 accepted a connection whose Hello claimed node-2 (relayed from node-2's own connection).
        let relayed = prove(b"secret", "demo", parties("node-1", "node-2", false), &b, &a);
        // node-2, which also only accepted, expects the peer named node-1 to have dialed it.
        assert!(!verify(b"secret", "demo", parties("node-1", "node-2", true), &b, &a, &relayed));
        let for_three = prove(b"secret", "demo", parties("node-1", "node-3", true), &b, &a);
        assert!(!verify(b"secret", "demo", parties("node-1", "node-2", true), &b, &a, &for_three));
    }

    #[test]
    fn nonces_differ() {
        let mut seed = 1;
        assert_ne!(nonce(&mut seed), nonce(&mut seed));
    }
}
