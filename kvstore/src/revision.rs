//! [`Revision`]: the store's logical clock.
//!
//! The store-wide revision starts at 0 and goes up by exactly one for every command that changes the store.
//! A key's version is the revision at which it was last written (etcd calls this `mod_revision`), so versions
//! are never 0, strictly increase across writes of one key, and two writes anywhere never share a version.

use std::fmt;

/// A store revision, or a key's version (the revision of its last write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of an empty store; never the version of a key.
    pub const ZERO: Revision = Revision(0);

    /// The next revision, or `None` when the counter is exhausted.
    pub fn next(self) -> Option<Revision> {
        self.0.checked_add(1).map(Revision)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
