//! The management API's messaging calls that go beyond one loop command: publishing as `api`, and replaying
//! a dead letter (read it, publish its payload to its subscription alone, remove it at the version read).

use super::{publish, MessagingRequest};
use crate::node::Command;
use container::publish::PublishError;
use control::messaging::{DeadLetterRecord, Subscriber};
use control::records::Record;
use mgmt::{ApiError, Backend, Published};
use net::NetHandle;
use std::time::Duration;

/// How long a publish through the management API waits for its message to be applied.
const API_PUBLISH_DEADLINE: Duration = Duration::from_secs(5);

fn api_error(e: PublishError) -> ApiError {
    let code = match e.status {
        400 => "bad_request",
        413 => "too_large",
        429 => "topic_full",
        503 => "unavailable",
        504 => "timeout",
        _ => "internal",
    };
    ApiError::new(e.status, code, e.detail)
}

/// `POST /api/topics/{topic}/messages`.
pub fn publish_as_api(handle: &NetHandle<Command>, topic: &str, payload: &[u8]) -> Result<Published, ApiError> {
    let id = publish(Some(handle), "api".into(), topic, payload, None, API_PUBLISH_DEADLINE).map_err(api_error)?;
    Ok(Published { id, topic: topic.to_owned() })
}

/// `POST /api/dead-letters/{id}/replay`.
pub fn replay_dead_letter(
    backend: &dyn Backend,
    handle: &NetHandle<Command>,
    key: &kvstore::AetherKey,
) -> Result<Published, ApiError> {
    let entry = backend.kv_get(key, false)?.ok_or_else(|| ApiError::not_found(format!("no dead letter at {key}")))?;
    let letter = DeadLetterRecord::decode(&entry.value).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let payload = control::messaging::record::base64_decode(&letter.payload_base64)
        .ok_or_else(|| ApiError::new(500, "internal", format!("{key}: the payload is not base64")))?;
    let artifact = kvstore::Artifact::parse(&letter.subscriber.artifact)
        .map_err(|e| ApiError::new(500, "internal", format!("{key}: {e}")))?;
    let method = kvstore::Name::parse(&letter.subscriber.method)
        .map_err(|e| ApiError::new(500, "internal", format!("{key}: {e}")))?;
    let target = Subscriber { base: artifact.base().clone(), method };
    let id = publish(Some(handle), "api".into(), &letter.topic, &payload, Some(target), API_PUBLISH_DEADLINE)
        .map_err(api_error)?;
    let removal = kvstore::Command::CompareAndRemove { key: key.clone(), expected: kvstore::Revision(entry.version) };
    backend.kv_write(removal)?;
    let data = serde_json::json!({ "dead_letter": letter.id, "topic": letter.topic, "message_id": id,
        "artifact": letter.subscriber.artifact, "method": letter.subscriber.method });
    backend.record_event("dead_letter_replayed", data);
    Ok(Published { id, topic: letter.topic })
}

/// The topic view, asked of the loop.
pub fn topics_request(reply: std::sync::mpsc::Sender<Vec<mgmt::TopicView>>) -> Command {
    Command::Messaging(MessagingRequest::Topics(reply))
}
