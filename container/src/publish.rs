//! What a slice's `ctx.publish(topic, message)` reaches: the node's implementation of [`Publish`], installed
//! on the container with `Container::set_publisher`. The container passes the calling instance's artifact
//! and the call's remaining deadline ([`PUBLISH_DEADLINE_DEFAULT`] outside a call); the node checks the topic
//! and the size, stores the message through consensus and answers once it is applied. Every call blocks the
//! calling (slice) thread only, for at most its deadline.

use std::time::Duration;

/// How long a publish may take when the calling thread serves no call with a deadline.
pub const PUBLISH_DEADLINE_DEFAULT: Duration = Duration::from_secs(5);

/// A publish that was not accepted: the HTTP status the slice gets (400 bad topic, 413 too large, 429 topic
/// full, 503 not submitted, 504 may still apply) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    pub status: u16,
    pub detail: String,
}

/// The node side of `ctx.publish`.
pub trait Publish: Send + Sync {
    /// Stores `message` on `topic` for the instance of `artifact`; the new message's id once applied.
    fn publish(&self, artifact: &str, topic: &str, message: &[u8], deadline: Duration) -> Result<String, PublishError>;
}
