//! The crate's error type.
//!
//! Parsing errors say which part of the input is wrong and why, so the management API can answer 400 with a
//! detail a person can act on. Everything else the crate can refuse (an oversized command, a corrupt snapshot,
//! a slot that was already applied, a full watch table) is one variant of [`Error`].

use std::fmt;

/// Inputs longer than this are cut in error messages, so a hostile key cannot flood a log line.
const ERROR_INPUT_CHARS_MAX: usize = 200;

/// A string that does not parse as a key, node id, artifact or one of their parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The whole input that was being parsed (cut to a readable length).
    pub input: String,
    /// Which part of the input is wrong, for example `"node"`, `"artifact version"`, `"route path"`.
    pub part: &'static str,
    /// Why that part is wrong.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(input: &str, part: &'static str, reason: impl Into<String>) -> Self {
        ParseError { input: shorten(input), part, reason: reason.into() }
    }

    /// The same error, reported against the whole key that contained the part.
    pub(crate) fn within(self, whole_input: &str) -> Self {
        ParseError { input: shorten(whole_input), ..self }
    }
}

fn shorten(input: &str) -> String {
    match input.char_indices().nth(ERROR_INPUT_CHARS_MAX) {
        Some((cut_at, _)) => format!("{}...", &input[..cut_at]),
        None => input.to_owned(),
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} in {:?}: {}", self.part, self.input, self.reason)
    }
}

impl std::error::Error for ParseError {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_cut_in_messages() {
        let input = "x".repeat(10_000);
        let err = ParseError::new(&input, "name", "too long");
        assert!(err.to_string().len() < 300);
        assert!(err.input.ends_with("..."));
    }

    #[test]
    fn cutting_respects_char_boundaries() {
        let input = "é".repeat(500);
        let err = ParseError::new(&input, "name", "bad");
        assert_eq!(err.input.chars().count(), ERROR_INPUT_CHARS_MAX + 3);
    }

    #[test]
    fn message_names_part_and_reason() {
        let err = ParseError::new("slices/n1/x", "artifact", "expected group:artifact:version");
        assert_eq!(err.to_string(), "invalid artifact in \"slices/n1/x\": expected group:artifact:version");
    }
}
