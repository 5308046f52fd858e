//! Commands of the replicated state machine and their byte encoding.
//!
//! A command travels through consensus as opaque payload bytes: `[COMMAND_MAGIC, COMMAND_FORMAT]` followed by
//! an rkyv archive in which the key is its canonical string. Keeping keys as strings on the wire means the key
//! parser is the single place that decides what a valid key is, on the way in and on the way out.
//!
//! A [`Command::Guarded`] write, which applies only while other keys are still at given versions, is encoded
//! with format byte [`GUARDED_FORMAT`] and its own archive shape, so every other command keeps the bytes it
//! always had. A [`Command::Bounded`] write (a slice's quota-bounded write to its `data/` scope) likewise has
//! format byte [`BOUNDED_FORMAT`] and a [`BoundedWire`] archive. Every replica must know a format before any
//! node submits it: an older build answers an unknown format as malformed, and the replicas would disagree.
//!
//! Decoding validates everything (header, length, archive, key, value size) and never panics on any input:
//! a replica that cannot decode a decided payload reports it as malformed and moves on, and since every
//! replica runs the same decoder over the same bytes, they all agree on that outcome.

use crate::error::Error;
use crate::key::{AetherKey, KEY_BYTES_MAX};
use crate::revision::Revision;
use rkyv::rancor;
use rkyv::util::AlignedVec;

/// Largest value, in bytes. A state-machine constant: every replica must enforce the same limit.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Largest encoded command, in bytes: a maximal key and value plus room for the header and archive layout.
pub const COMMAND_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + 256;

/// First byte of every encoded command, so stray bytes are recognised early.
const COMMAND_MAGIC: u8 = 0xAE;
/// Second byte: the encoding format. Bump it when [`CommandWire`] changes shape.
const COMMAND_FORMAT: u8 = 1;
/// Second byte of a [`Command::Guarded`] write: a [`GuardedWire`] archive.
const GUARDED_FORMAT: u8 = 2;
/// Second byte of a [`Command::Bounded`] write: a [`BoundedWire`] archive.
const BOUNDED_FORMAT: u8 = 3;
/// Most guards on one write.
pub const GUARDS_MAX: usize = 4;
const HEADER_BYTES: usize = 2;

/// A change to the store, as submitted by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write `value` at `key`, whatever is there.
    Put { key: AetherKey, value: Vec<u8> },
    /// Delete `key`; `NotFound` when it is absent.
    Remove { key: AetherKey },
    /// Write `value` at `key` only if the key's current version is `expected`; `None` means "only if absent".
    CompareAndSet { key: AetherKey, expected: Option<Revision>, value: Vec<u8> },
    /// Delete `key` only if its current version is `expected` (an absent key is a version mismatch).
    CompareAndRemove { key: AetherKey, expected: Revision },
    /// Apply `write` only if every guard key is still at its version (`None`: still absent); otherwise nothing
    /// changes and the result is a version mismatch naming the first failed guard's version. `write` is never
    /// itself guarded, and there are at most [`GUARDS_MAX`] guards.
    Guarded { guards: Vec<(AetherKey, Option<Revision>)>, write: Box<Command> },
    /// Apply `write`, a write to a `data/` key that is neither guarded nor bounded itself, only if it leaves
    /// its scope ([`crate::DataScope`]) within `max_keys` keys and `max_bytes` bytes, or does not grow the
    /// measure it would break; otherwise nothing changes and the result is
    /// [`crate::ApplyResult::QuotaExceeded`]. The scope is the key's own, so a write cannot charge another.
    Bounded { max_keys: u64, max_bytes: u64, write: Box<Command> },
}

/// The archived shape of a [`Command`]. Field order and types are the wire format: change only with a new
/// [`COMMAND_FORMAT`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum CommandWire {
    Put { key: String, value: Vec<u8> },
    Remove { key: String },
    CompareAndSet { key: String, expected_version: Option<u64>, value: Vec<u8> },
    CompareAndRemove { key: String, expected_version: u64 },
}

/// The archived shape of a [`Command::Bounded`]: the limits and the bounded write.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct BoundedWire {
    max_keys: u64,
    max_bytes: u64,
    write: CommandWire,
}

/// The archived shape of a [`Command::Guarded`]: the guards as `(key, version)` and the guarded write.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct GuardedWire {
    guards: Vec<(String, Option<u64>)>,
    write: CommandWire,
}

impl Command {
    pub fn key(&self) -> &AetherKey {
        match self {
            Command::Put { key, .. }
            | Command::Remove { key }
            | Command::CompareAndSet { key, .. }
            | Command::CompareAndRemove { key, .. } => key,
            Command::Guarded { write, .. } | Command::Bounded { write, .. } => write.key(),
        }
    }

    fn value(&self) -> Option<&[u8]> {
        match self {
            Command::Put { value, .. } | Command::CompareAndSet { value, .. } => Some(value),
            Command::Remove { .. } | Command::CompareAndRemove { .. } => None,
            Command::Guarded { write, .. } | Command::Bounded { write, .. } => write.value(),
        }
    }

    /// Encodes the command as a consensus payload. Fails only when the value is over [`VALUE_BYTES_MAX`].
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let value_bytes = self.value().map_or(0, <[u8]>::len);
        if value_bytes > VALUE_BYTES_MAX {
            return Err(Error::CommandTooLarge { part: "value", bytes: value_bytes, bytes_max: VALUE_BYTES_MAX });
        }
        let (format, archive) = match self {
            Command::Guarded { guards, write } => {
                let nested = matches!(**write, Command::Guarded { .. } | Command::Bounded { .. });
                if guards.is_empty() || guards.len() > GUARDS_MAX || nested {
                    return Err(Error::Encode(format!(
                        "a guarded write takes 1 to {GUARDS_MAX} guards and a plain write (no guarded or bounded one)"
                    )));
                }
                let guards = guards.iter().map(|(key, version)| (key.to_string(), version.map(Revision::get)));
                let wire = GuardedWire { guards: guards.collect(), write: write.to_wire() };
                (GUARDED_FORMAT, rkyv::to_bytes::<rancor::Error>(&wire))
            }
            Command::Bounded { max_keys, max_bytes, write } => {
                check_bounded(write).map_err(Error::Encode)?;
                let wire = BoundedWire { max_keys: *max_keys, max_bytes: *max_bytes, write: write.to_wire() };
                (BOUNDED_FORMAT, rkyv::to_bytes::<rancor::Error>(&wire))
            }
            _ => (COMMAND_FORMAT, rkyv::to_bytes::<rancor::Error>(&self.to_wire())),
        };
        let archive = archive.map_err(|e| Error::Encode(e.to_string()))?;
        let mut bytes = Vec::with_capacity(HEADER_BYTES + archive.len());
        bytes.extend_from_slice(&[COMMAND_MAGIC, format]);
        bytes.extend_from_slice(&archive);
        if bytes.len() > COMMAND_BYTES_MAX {
            // Only a guarded write can get here: its guard keys come on top of a maximal key and value.
            return Err(Error::CommandTooLarge { part: "command", bytes: bytes.len(), bytes_max: COMMAND_BYTES_MAX });
        }
        Ok(bytes)
    }

    /// Decodes a consensus payload. Any input is safe: failures are [`Error::MalformedCommand`].
    pub fn decode(bytes: &[u8]) -> Result<Command, Error> {
        let (format, archive) = check_header(bytes)?;
        // rkyv needs the archive aligned; payload slices from the network or the log are not.
        let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        let invalid = |e: rancor::BoxedError| {
            let detail = without_addresses(&e.to_string());
            malformed(format!("not a valid command archive ({} bytes): {detail}", archive.len()))
        };
        if format == GUARDED_FORMAT {
            let wire = rkyv::from_bytes::<GuardedWire, rancor::BoxedError>(&aligned).map_err(invalid)?;
            if wire.guards.is_empty() || wire.guards.len() > GUARDS_MAX {
                return Err(malformed(format!("{} guards, expected 1 to {GUARDS_MAX}", wire.guards.len())));
            }
            let mut guards = Vec::with_capacity(wire.guards.len());
            for (key, version) in wire.guards {
                guards.push((parse_key(&key)?, version.map(Revision)));
            }
            return Ok(Command::Guarded { guards, write: Box::new(Command::from_wire(wire.write)?) });
        }
        if format == BOUNDED_FORMAT {
            let wire = rkyv::from_bytes::<BoundedWire, rancor::BoxedError>(&aligned).map_err(invalid)?;
            let write = Command::from_wire(wire.write)?;
            check_bounded(&write).map_err(malformed)?;
            return Ok(Command::Bounded { max_keys: wire.max_keys, max_bytes: wire.max_bytes, write: Box::new(write) });
        }
        let wire = rkyv::from_bytes::<CommandWire, rancor::BoxedError>(&aligned).map_err(invalid)?;
        Command::from_wire(wire)
    }

    /// The archived shape of a command that is not guarded (a guarded one gives its inner write's shape).
    fn to_wire(&self) -> CommandWire {
        let key = self.key().to_string();
        match self {
            Command::Guarded { write, .. } | Command::Bounded { write, .. } => write.to_wire(),
            Command::Put { value, .. } => CommandWire::Put { key, value: value.clone() },
            Command::Remove { .. } => CommandWire::Remove { key },
            Command::CompareAndSet { expected, value, .. } => {
                CommandWire::CompareAndSet { key, expected_version: expected.map(Revision::get), value: value.clone() }
            }
            Command::CompareAndRemove { expected, .. } => {
                CommandWire::CompareAndRemove { key, expected_version: expected.get() }
            }
        }
    }

    fn from_wire(wire: CommandWire) -> Result<Command, Error> {
        let command = match wire {
            CommandWire::Put { key, value } => Command::Put { key: parse_key(&key)?, value },
            CommandWire::Remove { key } => Command::Remove { key: parse_key(&key)? },
            CommandWire::CompareAndSet { key, expected_version, value } => {
                Command::CompareAndSet { key: parse_key(&key)?, expected: expected_version.map(Revision), value }
            }
            CommandWire::CompareAndRemove { key, expected_version } => {
                Command::CompareAndRemove { key: parse_key(&key)?, expected: Revision(expected_version) }
            }
        };
        match command.value().map_or(0, <[u8]>::len) {
            bytes if bytes > VALUE_BYTES_MAX => Err(malformed(format!("value of {bytes} bytes is over the limit"))),
            _ => Ok(command),
        }
    }
}

/// The format byte and the archive of an encoded command.
fn check_header(bytes: &[u8]) -> Result<(u8, &[u8]), Error> {
    if bytes.len() > COMMAND_BYTES_MAX {
        return Err(malformed(format!("{} bytes, over the limit of {COMMAND_BYTES_MAX}", bytes.len())));
    }
    match bytes {
        [COMMAND_MAGIC, format @ (COMMAND_FORMAT | GUARDED_FORMAT | BOUNDED_FORMAT), archive @ ..] => {
            Ok((*format, archive))
        }
        [COMMAND_MAGIC, format, ..] => Err(malformed(format!("unknown command format {format}"))),
        _ => Err(malformed("not a kvstore command (bad magic byte)".to_owned())),
    }
}

/// Why `write` cannot be the write of a [`Command::Bounded`]: it must be a plain write to a `data/` key.
pub(crate) fn check_bounded(write: &Command) -> Result<(), String> {
    if matches!(write, Command::Guarded { .. } | Command::Bounded { .. }) {
        return Err("a bounded write takes a plain write, not a guarded or bounded one".to_owned());
    }
    if !matches!(write.key(), AetherKey::Data { .. }) {
        return Err(format!("a bounded write is a write to a data/ key, not {}", write.key()));
    }
    Ok(())
}

fn parse_key(key: &str) -> Result<AetherKey, Error> {
    AetherKey::parse(key).map_err(|e| malformed(e.to_string()))
}

fn malformed(reason: String) -> Error {
    Error::MalformedCommand { reason }
}

/// `text` with every memory address (`0x` and hex digits) written as `0x…`. A rejected command's reason is part
/// of its apply result, which must be the same on every replica; rkyv's checks name the addresses of the
/// decoding buffer, which differ from process to process.
fn without_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        let digits = rest[at + 2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        out.push_str(if digits > 0 { "0x…" } else { "0x" });
        rest = &rest[at + 2 + digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_malformed_archive_is_rejected_with_the_same_reason_wherever_it_is_decoded() {
        let bytes = [super::COMMAND_MAGIC, 1, 0];
        let first = super::Command::decode(&bytes).err().map(|e| e.to_string());
        let buffers: Vec<Vec<u8>> = (0..8).map(|i| vec![i; 4096]).collect();
        let second = super::Command::decode(&bytes).err().map(|e| e.to_string());
        drop(buffers);
        assert_eq!(first, second);
        let reason = first.unwrap_or_default();
        assert!(reason.contains("pointer"), "rkyv's detail is kept: {reason}");
        let addresses = reason.split("0x").skip(1).filter(|s| s.starts_with(|c: char| c.is_ascii_hexdigit()));
        assert_eq!(addresses.count(), 0, "no address in the reason: {reason}");
        assert_eq!(
            super::without_addresses("ptr 0x00007ff8d400e460 size 40 in 0x1..0xab, 0x"),
            "ptr 0x… size 40 in 0x…..0x…, 0x"
        );
    }

    use super::*;

    fn key(s: &str) -> AetherKey {
        AetherKey::parse(s).unwrap()
    }

    #[test]
    fn every_command_kind_round_trips() {
        let commands = [
            Command::Put { key: key("user/a"), value: b"v".to_vec() },
            Command::Remove { key: key("blueprints/shop") },
            Command::CompareAndSet { key: key("user/a"), expected: None, value: vec![] },
            Command::CompareAndSet { key: key("user/a"), expected: Some(Revision(7)), value: vec![1, 2] },
            Command::CompareAndRemove { key: key("schedules/g:a/nightly"), expected: Revision(3) },
            Command::Guarded {
                guards: vec![(key("nodes/leader"), Some(Revision(9))), (key("nodes/n3/lease"), None)],
                write: Box::new(Command::CompareAndRemove { key: key("slices/n3/g:a:1.0.0"), expected: Revision(3) }),
            },
        ];
        for command in commands {
            let bytes = command.encode().unwrap();
            assert_eq!(Command::decode(&bytes), Ok(command));
        }
    }

    #[test]
    fn a_maximal_command_fits_the_command_limit() {
        let key_max = format!("user/{}k", "k/".repeat((KEY_BYTES_MAX - 6) / 2));
        assert_eq!(key_max.len(), KEY_BYTES_MAX);
        let command = Command::Put { key: key(&key_max), value: vec![0; VALUE_BYTES_MAX] };
        let bytes = command.encode().unwrap();
        assert!(bytes.len() <= COMMAND_BYTES_MAX);
        assert_eq!(Command::decode(&bytes), Ok(command));
    }

    #[test]
    fn guarded_writes_refuse_nesting_and_too_many_guards() {
        let inner = Command::Remove { key: key("user/a") };
        let guard = (key("user/g"), None);
        let nested = Command::Guarded {
            guards: vec![guard.clone()],
            write: Box::new(Command::Guarded { guards: vec![guard.clone()], write: Box::new(inner.clone()) }),
        };
        assert!(nested.encode().is_err());
        let data = key("data/s/g:a/k");
        let bounded = Command::Bounded { max_keys: 1, max_bytes: 1, write: Box::new(Command::Remove { key: data }) };
        let guarded_bound = Command::Guarded { guards: vec![guard.clone()], write: Box::new(bounded) };
        assert!(guarded_bound.encode().is_err(), "a bound must never be dropped on the wire");
        let many = Command::Guarded { guards: vec![guard; GUARDS_MAX + 1], write: Box::new(inner.clone()) };
        assert!(many.encode().is_err());
        let none = GuardedWire { guards: vec![], write: inner.to_wire() };
        let mut bytes = vec![COMMAND_MAGIC, GUARDED_FORMAT];
        bytes.extend_from_slice(&rkyv::to_bytes::<rancor::Error>(&none).unwrap());
        assert!(matches!(Command::decode(&bytes), Err(Error::MalformedCommand { .. })));
    }

    #[test]
    fn bounded_writes_round_trip_and_take_only_plain_writes_to_data_keys() {
        let data = key("data/shop/org.example:cart/a");
        for write in [
            Command::Put { key: data.clone(), value: b"v".to_vec() },
            Command::CompareAndSet { key: data.clone(), expected: None, value: vec![] },
            Command::Remove { key: data.clone() },
        ] {
            let bounded = Command::Bounded { max_keys: 3, max_bytes: 100, write: Box::new(write) };
            let bytes = bounded.encode().unwrap();
            assert_eq!(bytes[1], BOUNDED_FORMAT);
            assert_eq!(Command::decode(&bytes), Ok(bounded));
        }
        let user = Command::Put { key: key("user/a"), value: vec![] };
        assert!(Command::Bounded { max_keys: 1, max_bytes: 1, write: Box::new(user.clone()) }.encode().is_err());
        let nested = Command::Bounded {
            max_keys: 1,
            max_bytes: 1,
            write: Box::new(Command::Guarded {
                guards: vec![(key("user/g"), None)],
                write: Box::new(Command::Remove { key: data }),
            }),
        };
        assert!(nested.encode().is_err());
        // A hand-made archive naming a user/ key is malformed wherever it is decoded.
        let wire = BoundedWire { max_keys: 1, max_bytes: 1, write: user.to_wire() };
        let mut bytes = vec![COMMAND_MAGIC, BOUNDED_FORMAT];
        bytes.extend_from_slice(&rkyv::to_bytes::<rancor::Error>(&wire).unwrap());
        let err = Command::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("data/"), "{err}");
    }

    #[test]
    fn plain_commands_keep_their_format_byte() {
        assert_eq!(Command::Remove { key: key("user/a") }.encode().unwrap()[..2], [COMMAND_MAGIC, COMMAND_FORMAT]);
    }

    #[test]
    fn oversized_values_are_refused_at_encode() {
        let command = Command::Put { key: key("user/a"), value: vec![0; VALUE_BYTES_MAX + 1] };
        assert!(matches!(command.encode(), Err(Error::CommandTooLarge { part: "value", .. })));
    }

    #[test]
    fn bad_headers_are_malformed() {
        for bytes in [&[][..], &[0x00, 1, 2][..], &[COMMAND_MAGIC][..], &[COMMAND_MAGIC, 99, 0][..]] {
            assert!(matches!(Command::decode(bytes), Err(Error::MalformedCommand { .. })), "{bytes:?}");
        }
    }

    #[test]
    fn an_invalid_key_inside_a_valid_archive_is_malformed() {
        let wire = CommandWire::Remove { key: "routes/GET//echo".to_owned() };
        let mut bytes = vec![COMMAND_MAGIC, COMMAND_FORMAT];
        bytes.extend_from_slice(&rkyv::to_bytes::<rancor::Error>(&wire).unwrap());
        let err = Command::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("route path"), "{err}");
    }

    #[test]
    fn truncated_encodings_never_decode_to_something_else() {
        let command = Command::Put { key: key("user/a"), value: b"hello".to_vec() };
        let bytes = command.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn unaligned_input_decodes() {
        let command = Command::Remove { key: key("alerts/x") };
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&command.encode().unwrap());
        assert_eq!(Command::decode(&shifted[1..]), Ok(command));
    }
}
