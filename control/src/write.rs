//! [`KvWrite`]: a change the deployment managers ask the runtime to submit, and [`Versioned`], a decoded
//! value with the KV version it was read at.
//!
//! Writes are conditional on the version their decision was computed against, so a decision made on a stale
//! view fails instead of overwriting a newer one: the runtime submits [`KvWrite::to_command`], and a
//! `VersionMismatch` result only means "run the manager again on the newer state" (which the next KV change
//! does anyway). A `Remove` that finds the key already gone is the same harmless outcome.

use kvstore::{AetherKey, Command, Revision};
use std::fmt;

/// A value decoded from the KV, with the version (revision of its last write) it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Revision,
}

/// One change to submit through consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Write `value` only if the key is still at `expected` (`None`: only if it is still absent).
    Set { key: AetherKey, expected: Option<Revision>, value: Vec<u8> },
    /// Remove the key only if it is still at `expected`.
    Remove { key: AetherKey, expected: Revision },
    /// `write`, applied only while every guard key is still at its version (`None`: still absent). Guards are
    /// the liveness and leadership records the decision was computed from.
    Guarded { guards: Vec<(AetherKey, Option<Revision>)>, write: Box<KvWrite> },
}

impl KvWrite {
    pub fn key(&self) -> &AetherKey {
        match self {
            KvWrite::Set { key, .. } | KvWrite::Remove { key, .. } => key,
            KvWrite::Guarded { write, .. } => write.key(),
        }
    }

    /// This write, applied only while `key` is still at `version`.
    pub fn guarded(self, key: AetherKey, version: Option<Revision>) -> KvWrite {
        match self {
            KvWrite::Guarded { mut guards, write } => {
                guards.push((key, version));
                KvWrite::Guarded { guards, write }
            }
            write => KvWrite::Guarded { guards: vec![(key, version)], write: Box::new(write) },
        }
    }

    /// The write without its guards.
    pub fn unguarded(&self) -> &KvWrite {
        match self {
            KvWrite::Guarded { write, .. } => write.unguarded(),
            write => write,
        }
    }

    /// The kvstore command that performs this write.
    pub fn to_command(&self) -> Command {
        match self {
            KvWrite::Set { key, expected, value } => {
                Command::CompareAndSet { key: key.clone(), expected: *expected, value: value.clone() }
            }
            KvWrite::Remove { key, expected } => Command::CompareAndRemove { key: key.clone(), expected: *expected },
            KvWrite::Guarded { guards, write } => {
                Command::Guarded { guards: guards.clone(), write: Box::new(write.unguarded().to_command()) }
            }
        }
    }
}

impl fmt::Display for KvWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvWrite::Set { key, expected: Some(v), value } => {
                write!(f, "set {key} at version {v}: {}", String::from_utf8_lossy(value))
            }
            KvWrite::Set { key, expected: None, value } => {
                write!(f, "create {key}: {}", String::from_utf8_lossy(value))
            }
            KvWrite::Remove { key, expected } => write!(f, "remove {key} at version {expected}"),
            KvWrite::Guarded { guards, write } => {
                write!(f, "{write} if")?;
                for (key, version) in guards {
                    match version {
                        Some(v) => write!(f, " {key} is at version {v}")?,
                        None => write!(f, " {key} is absent")?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_map_to_conditional_commands() {
        let key: AetherKey = "targets/g:a:1.0.0".parse().unwrap();
        let set = KvWrite::Set { key: key.clone(), expected: None, value: b"{}".to_vec() };
        assert_eq!(
            set.to_command(),
            Command::CompareAndSet { key: key.clone(), expected: None, value: b"{}".to_vec() }
        );
        let remove = KvWrite::Remove { key: key.clone(), expected: Revision(4) };
        assert_eq!(remove.to_command(), Command::CompareAndRemove { key: key.clone(), expected: Revision(4) });
        let lease: AetherKey = "nodes/n1/lease".parse().unwrap();
        let leader: AetherKey = "nodes/leader".parse().unwrap();
        let guarded = remove.guarded(lease.clone(), Some(Revision(2))).guarded(leader.clone(), None);
        assert_eq!(
            guarded.to_command(),
            Command::Guarded {
                guards: vec![(lease, Some(Revision(2))), (leader, None)],
                write: Box::new(Command::CompareAndRemove { key, expected: Revision(4) })
            }
        );
    }
}
