//! Request ids: every app-port request has one (the client's `X-Request-Id` when it is sane, else a fresh
//! one), and the thread serving a call knows it as its *current* request id, so log lines written while
//! the call runs carry `req=<id>`, forwarded calls carry it in their `Invoke` frame, nested calls (which
//! run on the caller's thread) inherit it, and slow-call entries record it.
//!
//! Invariant: a current id is always sane ([`sanitize`]): 1..=128 visible ASCII characters, so it can go
//! into a header, a log line or JSON as it is. A [`Scope`] restores the thread's previous id when dropped,
//! also when unwinding.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Longest request id kept from a client or a peer.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

thread_local! {
    static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// `text` when it can serve as a request id: 1..=128 visible ASCII characters (no space, no control).
pub fn sanitize(text: &str) -> Option<&str> {
    let ok = !text.is_empty() && text.len() <= REQUEST_ID_BYTES_MAX && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(text)
}

/// A fresh id: 16 hex digits, unique on this node (a counter through a keyed mix of a per-boot random seed).
pub fn generate() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(crate::random_u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", splitmix64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))))
}

/// A bijective mix (splitmix64's finaliser), so distinct counters give distinct ids.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The id the client sent when sane, else a fresh one.
pub fn from_header(value: Option<&str>) -> String {
    value.and_then(sanitize).map_or_else(generate, str::to_owned)
}

/// The request id of the call this thread serves, if any.
pub fn current() -> Option<String> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the current request id, without copying it.
pub fn with_current<T>(f: impl FnOnce(Option<&str>) -> T) -> T {
    CURRENT.with(|c| f(c.borrow().as_deref()))
}

/// This thread's request id until dropped; the previous one comes back then.
pub struct Scope {
    previous: Option<String>,
}

impl Scope {
    /// Makes `id` this thread's current request id (an id that is not sane is replaced by a fresh one).
    pub fn enter(id: &str) -> Scope {
        let id = sanitize(id).map_or_else(generate, str::to_owned);
        Scope { previous: CURRENT.with(|c| c.replace(Some(id))) }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        assert_eq!(from_header(Some("abc-123_X.y")), "abc-123_X.y");
        let long = "a".repeat(REQUEST_ID_BYTES_MAX);
        assert_eq!(from_header(Some(&long)), long);
        for bad in ["", "has space", "tab\t", "ünï", &"a".repeat(REQUEST_ID_BYTES_MAX + 1)] {
            let id = from_header(Some(bad));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(generate(), generate());
    }

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), None);
        {
            let _outer = Scope::enter("outer");
            assert_eq!(current().as_deref(), Some("outer"));
            {
                let _inner = Scope::enter("inner");
                assert_eq!(current().as_deref(), Some("inner"));
            }
            assert_eq!(current().as_deref(), Some("outer"));
            let unsane = Scope::enter("bad id");
            assert_eq!(current().map(|id| id.len()), Some(16));
            drop(unsane);
        }
        assert_eq!(current(), None);
    }
}
