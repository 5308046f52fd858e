//! Which messages the leader deletes: a message goes once every competing cursor of its topic is past it and
//! either every broadcast cursor is past it or it is older than the retention; a message of a topic nobody
//! subscribes to goes once it is older than the retention.
//!
//! Invariant: a message some competing subscription has not finished with is never a candidate, however old;
//! a broadcast subscription with no cursor yet holds its messages for the retention.

use super::engine::MessageMeta;

/// The cursors of one topic as applied: `next` of each competing subscription, and of each broadcast
/// subscription the `next` of every node's cursor (empty: no cursor yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCursors {
    pub competing: Vec<u64>,
    pub broadcast: Vec<Vec<u64>>,
}

impl TopicCursors {
    fn subscribed(&self) -> bool {
        !self.competing.is_empty() || !self.broadcast.is_empty()
    }
}

/// The versions of `messages` (in version order) to delete now, oldest first, at most `limit`; the walk
/// stops at the first message that must stay.
pub fn trims<'a>(
    messages: impl IntoIterator<Item = (u64, &'a MessageMeta)>,
    cursors: &TopicCursors,
    now_ms: u64,
    retention_ms: u64,
    limit: usize,
) -> Vec<u64> {
    let mut out = Vec::new();
    for (version, meta) in messages {
        if out.len() >= limit {
            break;
        }
        let old = now_ms.saturating_sub(meta.published_at_ms) >= retention_ms;
        let competing_done = cursors.competing.iter().all(|next| *next > version);
        let broadcast_done =
            cursors.broadcast.iter().all(|nodes| !nodes.is_empty() && nodes.iter().all(|next| *next > version));
        let deletable = if cursors.subscribed() { competing_done && (broadcast_done || old) } else { old };
        if !deletable {
            break;
        }
        out.push(version);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::Name;

    fn meta(at: u64) -> MessageMeta {
        MessageMeta {
            id: Name::parse("m").unwrap(),
            publisher: "p".into(),
            published_at_ms: at,
            target: None,
            bytes: 1,
        }
    }

    #[test]
    fn competing_cursors_hold_messages_however_old() {
        let messages = [(1, meta(0)), (2, meta(0)), (3, meta(0))];
        let cursors = TopicCursors { competing: vec![3, 10], broadcast: vec![] };
        assert_eq!(trims(messages.iter().map(|(v, m)| (*v, m)), &cursors, 1_000_000, 10, 100), vec![1, 2]);
    }

    #[test]
    fn broadcast_cursors_hold_messages_until_the_retention() {
        let messages = [(1, meta(900)), (2, meta(990))];
        let cursors = TopicCursors { competing: vec![5], broadcast: vec![vec![5, 1]] };
        let at = |now| trims(messages.iter().map(|(v, m)| (*v, m)), &cursors, now, 100, 100);
        assert_eq!(at(950), Vec::<u64>::new(), "a node's cursor is behind, both are young");
        assert_eq!(at(1_000), vec![1], "the first is past the retention");
        let none_yet = TopicCursors { competing: vec![], broadcast: vec![vec![]] };
        assert!(trims(messages.iter().map(|(v, m)| (*v, m)), &none_yet, 950, 100, 100).is_empty());
    }

    #[test]
    fn unsubscribed_topics_keep_messages_for_the_retention_and_the_limit_holds() {
        let messages: Vec<(u64, MessageMeta)> = (1..=10).map(|v| (v, meta(v))).collect();
        let none = TopicCursors::default();
        assert_eq!(trims(messages.iter().map(|(v, m)| (*v, m)), &none, 105, 100, 100), vec![1, 2, 3, 4, 5]);
        assert_eq!(trims(messages.iter().map(|(v, m)| (*v, m)), &none, 1_000, 100, 3), vec![1, 2, 3]);
    }
}
