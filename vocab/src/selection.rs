//! [`Selection`]: how a call picks among the instances of a slice that can serve it.
//!
//! Invariant: `parse(word()) == self` for every value; `LocalFirst` is the default.

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a call (app port, forwarded, slice-to-slice, delivery) picks an instance of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// A local instance when there is one, else the live remote ones in turn.
    #[default]
    LocalFirst,
    /// Every live instance in turn, local or not.
    RoundRobin,
    /// A live instance drawn at random.
    Random,
    /// The live instance with the fewest calls in flight, as the choosing node counts them.
    LeastLoaded,
}

impl Selection {
    pub const ALL: [Selection; 4] =
        [Selection::LocalFirst, Selection::RoundRobin, Selection::Random, Selection::LeastLoaded];

    pub fn word(self) -> &'static str {
        match self {
            Selection::LocalFirst => "local-first",
            Selection::RoundRobin => "round-robin",
            Selection::Random => "random",
            Selection::LeastLoaded => "least-loaded",
        }
    }

    pub fn parse(input: &str) -> Result<Selection, ParseError> {
        Selection::ALL.into_iter().find(|s| s.word() == input).ok_or_else(|| {
            ParseError::new(input, "selection", "expected local-first, round-robin, random or least-loaded")
        })
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in Selection::ALL {
            assert_eq!(Selection::parse(s.word()), Ok(s));
        }
        assert!(Selection::parse("nearest").is_err());
        assert_eq!(Selection::default(), Selection::LocalFirst);
    }
}
