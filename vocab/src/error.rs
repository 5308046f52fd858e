//! [`ParseError`]: why a string is not a name, node id, artifact or key.
//!
//! Parsing errors say which part of the input is wrong and why, so the management API can answer 400 with a
//! detail a person can act on. The input is cut to a readable length, so a hostile string cannot flood a log.

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
    pub fn new(input: &str, part: &'static str, reason: impl Into<String>) -> Self {
        ParseError { input: shorten(input), part, reason: reason.into() }
    }

    /// The same error, reported against the whole key that contained the part.
    pub fn within(self, whole_input: &str) -> Self {
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
