//! The crate's error type. [`ParseError`] lives in `vocab` (every parser of names and coordinates is
//! there) and is re-exported here.
//!
//! Parsing errors say which part of the input is wrong and why, so the management API can answer 400 with a
//! detail a person can act on. Everything else the crate can refuse (an oversized command, a corrupt snapshot,
//! a slot that was already applied, a full watch table) is one variant of [`Error`].

use std::fmt;

pub use vocab::ParseError;

/// Everything the kvstore can refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A key, node id or artifact string did not parse.
    Parse(ParseError),
    /// A command could not be encoded because it breaks a size limit of the state machine.
    CommandTooLarge { part: &'static str, bytes: usize, bytes_max: usize },
    /// Bytes that should be an encoded command are not one (decided payloads report this per command).
    MalformedCommand { reason: String },
    /// The serialiser failed; carries its message.
    Encode(String),
    /// Bytes that should be a snapshot are not one, or fail validation.
    CorruptSnapshot { reason: String },
    /// A snapshot written by a format this build does not read.
    UnsupportedSnapshotFormat { found: u32, supported: u32 },
    /// A snapshot older than the state it would replace.
    StaleSnapshot { snapshot_slot: Option<u64>, applied_slot: Option<u64> },
    /// A batch for a slot at or below the last applied one (a replay); nothing was applied.
    StaleSlot { slot: u64, applied_slot: u64 },
    /// The watch table is full.
    TooManyWatches { watches_max: usize },
    /// A watch prefix longer than any key.
    WatchPrefixTooLong { bytes: usize, bytes_max: usize },
    /// A watch id that is not registered (never was, or was cancelled).
    UnknownWatch { id: u64 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => e.fmt(f),
            Error::CommandTooLarge { part, bytes, bytes_max } => {
                write!(f, "command {part} is {bytes} bytes, over the limit of {bytes_max}")
            }
            Error::MalformedCommand { reason } => write!(f, "malformed command: {reason}"),
            Error::Encode(msg) => write!(f, "cannot encode: {msg}"),
            Error::CorruptSnapshot { reason } => write!(f, "corrupt snapshot: {reason}"),
            Error::UnsupportedSnapshotFormat { found, supported } => {
                write!(f, "snapshot format {found} is not supported (this build reads {supported})")
            }
            Error::StaleSnapshot { snapshot_slot, applied_slot } => {
                write!(f, "snapshot at slot {snapshot_slot:?} is older than the applied slot {applied_slot:?}")
            }
            Error::StaleSlot { slot, applied_slot } => {
                write!(f, "slot {slot} is not after the applied slot {applied_slot}")
            }
            Error::TooManyWatches { watches_max } => {
                write!(f, "watch table full ({watches_max} watches)")
            }
            Error::WatchPrefixTooLong { bytes, bytes_max } => {
                write!(f, "watch prefix is {bytes} bytes, longer than the longest key ({bytes_max})")
            }
            Error::UnknownWatch { id } => write!(f, "no watch with id {id}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Parse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}
