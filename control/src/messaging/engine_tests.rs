use super::*;
use kvstore::ArtifactBase;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn sub(node: Option<&str>) -> SubId {
    SubId {
        topic: name("work"),
        subscriber: Subscriber { base: ArtifactBase::parse("g:inbox").unwrap(), method: name("on_work") },
        node: node.map(|n| NodeId::parse(n).unwrap()),
    }
}

fn competing(max_attempts: u32) -> Settings {
    Settings { max_attempts, retry_backoff_ms: 100, timeout_ms: 1_000, window: 64, lane_per_publisher: true }
}

fn broadcast() -> Settings {
    Settings { window: 1, lane_per_publisher: false, ..competing(3) }
}

fn meta(id: &str, publisher: &str) -> MessageMeta {
    MessageMeta { id: name(id), publisher: publisher.into(), published_at_ms: 0, target: None, bytes: 10 }
}

fn deliveries(actions: &[Action]) -> Vec<(u64, u64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some((d.token, d.version, d.attempt)),
            _ => None,
        })
        .collect()
}

fn cursor_writes(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteCursor { tag: WriteTag::Cursor { next, .. }, .. } => Some(*next),
            _ => None,
        })
        .collect()
}

#[test]
fn one_message_per_publisher_lane_in_order_and_lanes_in_parallel() {
    let mut e = Engine::new();
    e.run(vec![(sub(None), competing(3), None, Start::Oldest)]);
    for (v, p) in [(10, "a"), (11, "b"), (12, "a"), (13, "b"), (14, "c")] {
        e.message_put(&name("work"), v, meta(&format!("m{v}"), p));
    }
    let first = deliveries(&e.poll(0));
    assert_eq!(first.iter().map(|d| d.1).collect::<Vec<_>>(), vec![10, 11, 14], "each lane's head");
    assert!(deliveries(&e.poll(1)).is_empty(), "lanes are busy");
    e.delivered(first[0].0, Outcome::Acked, 2);
    let next = deliveries(&e.poll(3));
    assert_eq!(next.iter().map(|d| d.1).collect::<Vec<_>>(), vec![12], "a's next message after its ack");
}

#[test]
fn the_window_bounds_deliveries_in_flight() {
    let mut e = Engine::new();
    e.run(vec![(sub(None), Settings { window: 2, ..competing(3) }, None, Start::Oldest)]);
    for v in 1..=5 {
        e.message_put(&name("work"), v, meta(&format!("m{v}"), &format!("p{v}")));
    }
    assert_eq!(deliveries(&e.poll(0)).len(), 2);
}

#[test]
fn failures_back_off_then_become_a_dead_letter_and_count_as_done() {
    let mut e = Engine::new();
    e.run(vec![(sub(None), competing(3), None, Start::Oldest)]);
    e.message_put(&name("work"), 5, meta("m5", "a"));
    let mut now = 0;
    for attempt in 1..=3u32 {
        let started = deliveries(&e.poll(now));
        assert_eq!(started.len(), 1, "attempt {attempt}");
        assert_eq!(started[0].2, attempt);
        e.delivered(started[0].0, Outcome::Failed("500".into()), now);
        if attempt < 3 {
            let wait = backoff_ms(100, attempt);
            assert!(deliveries(&e.poll(now + wait - 1)).is_empty(), "not before the backoff");
            now += wait;
        }
    }
    let actions = e.poll(now);
    let letter = actions.iter().find_map(|a| match a {
        Action::WriteDeadLetter { tag, letter } => Some((tag.clone(), letter.clone())),
        _ => None,
    });
    let (tag, letter) = letter.expect("a dead letter after the last attempt");
    assert_eq!((letter.attempts, letter.last_error.as_str()), (3, "500"));
    assert_eq!(e.progress(&sub(None)).unwrap().0, 5, "not done before the dead letter is applied");
    e.written(tag, WriteResult::Applied(Revision(9)), now);
    assert_eq!(e.progress(&sub(None)).unwrap().0, 6);
    assert_eq!(e.progress(&sub(None)).unwrap().1.dead_lettered, 1);
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!([1, 2, 3, 4].map(|a| backoff_ms(100, a)), [100, 200, 400, 800]);
    assert_eq!(backoff_ms(100, 60), BACKOFF_MS_MAX);
}

#[test]
fn no_instance_counts_no_attempt() {
    let mut e = Engine::new();
    e.run(vec![(sub(None), competing(1), None, Start::Oldest)]);
    e.message_put(&name("work"), 1, meta("m1", "a"));
    let started = deliveries(&e.poll(0));
    e.delivered(started[0].0, Outcome::NoInstance, 0);
    assert!(deliveries(&e.poll(NO_INSTANCE_RETRY_MS - 1)).is_empty());
    let again = deliveries(&e.poll(NO_INSTANCE_RETRY_MS));
    assert_eq!(again[0].2, 1, "still the first attempt");
}

#[test]
fn the_cursor_moves_only_forward_past_done_messages_and_not_too_often() {
    let mut e = Engine::new();
    let id = sub(None);
    e.run(vec![(id.clone(), competing(3), Some((1, Revision(4))), Start::Oldest)]);
    for (v, p) in [(1, "a"), (2, "b"), (3, "c")] {
        e.message_put(&name("work"), v, meta(&format!("m{v}"), p));
    }
    let started = deliveries(&e.poll(0));
    assert!(cursor_writes(&e.poll(0)).is_empty(), "nothing done yet");
    e.delivered(started[1].0, Outcome::Acked, 1); // version 2: 1 still open
    assert!(cursor_writes(&e.poll(1)).is_empty(), "an ack above an open message does not move it");
    e.delivered(started[0].0, Outcome::Acked, 2);
    let actions = e.poll(2);
    assert_eq!(cursor_writes(&actions), vec![3]);
    e.delivered(started[2].0, Outcome::Acked, 3);
    assert!(cursor_writes(&e.poll(3)).is_empty(), "one write in flight");
    e.written(WriteTag::Cursor { sub: id.clone(), next: 3 }, WriteResult::Applied(Revision(20)), 3);
    assert!(cursor_writes(&e.poll(50)).is_empty(), "at most every 100 ms");
    assert_eq!(cursor_writes(&e.poll(2 + CURSOR_WRITE_EVERY_MS)), vec![4]);
    e.written(WriteTag::Cursor { sub: id.clone(), next: 4 }, WriteResult::Applied(Revision(21)), 200);
    // An older value read back never moves it back.
    e.cursor_stored(&id, Some((2, Revision(22))));
    assert_eq!(e.progress(&id).unwrap().0, 4);
    assert!(cursor_writes(&e.poll(1_000)).iter().all(|n| *n >= 4));
}

#[test]
fn a_new_leader_resumes_from_the_stored_cursor_and_delivers_again_what_was_in_flight() {
    let mut old = Engine::new();
    let id = sub(None);
    old.run(vec![(id.clone(), competing(3), None, Start::Oldest)]);
    for v in 1..=4 {
        old.message_put(&name("work"), v, meta(&format!("m{v}"), "a"));
    }
    let first = deliveries(&old.poll(0));
    old.delivered(first[0].0, Outcome::Acked, 1);
    let in_flight = deliveries(&old.poll(1));
    assert_eq!(in_flight[0].1, 2, "message 2 is in flight when the leader dies; the cursor says 2");

    let mut new = Engine::new();
    for v in 1..=4 {
        new.message_put(&name("work"), v, meta(&format!("m{v}"), "a"));
    }
    new.run(vec![(id.clone(), competing(3), Some((2, Revision(7))), Start::Oldest)]);
    let resumed = deliveries(&new.poll(2));
    assert_eq!(resumed.iter().map(|d| d.1).collect::<Vec<_>>(), vec![2], "from the cursor, message 2 again");
}

#[test]
fn broadcast_delivers_every_message_in_order_one_at_a_time_from_the_end_when_new() {
    let mut e = Engine::new();
    e.message_put(&name("work"), 1, meta("m1", "a"));
    let id = sub(Some("node-2"));
    e.run(vec![(id.clone(), broadcast(), None, Start::End)]);
    assert!(deliveries(&e.poll(0)).is_empty(), "a new instance starts at the end");
    assert_eq!(cursor_writes(&e.poll(0)), Vec::<u64>::new(), "one write at a time");
    e.message_put(&name("work"), 2, meta("m2", "a"));
    e.message_put(&name("work"), 3, meta("m3", "b"));
    let first = deliveries(&e.poll(1));
    assert_eq!(first.iter().map(|d| d.1).collect::<Vec<_>>(), vec![2]);
    e.delivered(first[0].0, Outcome::Acked, 2);
    assert_eq!(deliveries(&e.poll(3)).iter().map(|d| d.1).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn replays_go_only_to_their_target() {
    let mut e = Engine::new();
    let id = sub(None);
    let mut other = id.clone();
    other.subscriber.method = name("other");
    e.run(vec![(id.clone(), competing(3), None, Start::Oldest), (other.clone(), competing(3), None, Start::Oldest)]);
    let mut m = meta("r1", "api");
    m.target = Some(other.subscriber.clone());
    e.message_put(&name("work"), 1, m);
    let started: Vec<SubId> = e
        .poll(0)
        .into_iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some(d.sub),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![other]);
    assert_eq!(e.progress(&id).unwrap().0, 2, "done for the others");
}

#[test]
fn a_new_broadcast_instance_starting_from_its_endpoint_gets_what_was_published_since() {
    let mut e = Engine::new();
    for v in [3, 7, 9] {
        e.message_put(&name("work"), v, meta(&format!("m{v}"), "a"));
    }
    let id = sub(Some("node-2"));
    e.run(vec![(id.clone(), broadcast(), None, Start::From(5))]);
    let first = deliveries(&e.poll(0));
    assert_eq!(first.iter().map(|d| d.1).collect::<Vec<_>>(), vec![7], "from its endpoint's version, in order");
    assert_eq!(e.progress(&id).unwrap().0, 7);
}

#[test]
fn a_succeeding_engine_never_reuses_a_token() {
    let mut e = Engine::new();
    e.run(vec![(sub(None), competing(3), None, Start::Oldest)]);
    e.message_put(&name("work"), 1, meta("m1", "a"));
    let old = deliveries(&e.poll(0));
    let mut next = Engine::succeeding(&e);
    next.run(vec![(sub(None), competing(3), None, Start::Oldest)]);
    next.message_put(&name("work"), 1, meta("m1", "a"));
    let new = deliveries(&next.poll(0));
    assert_ne!(old[0].0, new[0].0);
    next.delivered(old[0].0, Outcome::Acked, 1);
    assert_eq!(next.progress(&sub(None)).unwrap().0, 1, "the old delivery's outcome is not the new one's");
}
