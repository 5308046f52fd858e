//! The driver's client answers: request ids apply once, and failures say whether a write may still apply.

use super::*;
use kvstore::{AetherKey, Command};
use std::sync::mpsc::{channel, Receiver};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aether-replication-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A driver over a fresh data dir; `n` members, this one is member 0 (with n > 1 nothing is ever decided).
fn driver(name: &str, n: u8) -> Replication {
    let (storage, recovered) = Storage::open(&temp_dir(name)).expect("storage opens");
    let mut replication = Replication::new(consensus::Config::new(n, ReplicaId(0), 7), storage, recovered, 99, None)
        .expect("replication starts");
    replication.start().expect("starts");
    replication
}

fn key(text: &str) -> AetherKey {
    text.parse().expect("a valid key")
}

fn put(k: &str, v: &str) -> Command {
    Command::Put { key: key(k), value: v.as_bytes().to_vec() }
}

type Answer = Receiver<Result<u64, ApiError>>;

fn write(r: &mut Replication, command: &Command, request: Option<mgmt::RequestKey>) -> Answer {
    let (tx, rx) = channel();
    match request {
        Some(request) => r.submit_write_once(command, request, tx.into()),
        None => r.submit_write(command, tx.into()),
    }
    .expect("submits");
    rx
}

fn answered(rx: &Answer) -> Result<u64, ApiError> {
    rx.try_recv().expect("answered by now")
}

fn version_of(r: &Replication, k: &str) -> Option<u64> {
    r.store().get(&key(k)).map(|e| e.version().0)
}

#[test]
fn a_retried_put_under_the_same_request_id_applies_once_and_answers_the_same_version() {
    let mut r = driver("retry-put", 1);
    let request = mgmt::RequestKey::derive("", "put-a");
    let first = write(&mut r, &put("user/a", "1"), Some(request));
    r.end_turn().unwrap();
    let version = answered(&first).expect("applies");
    // A different write moves the store on; the retry must not apply again after it.
    let other = write(&mut r, &put("user/b", "x"), None);
    r.end_turn().unwrap();
    answered(&other).expect("applies");
    let retry = write(&mut r, &put("user/a", "1"), Some(request));
    r.end_turn().unwrap();
    assert_eq!(answered(&retry), Ok(version));
    assert_eq!(version_of(&r, "user/a"), Some(version));
}

#[test]
fn a_retried_compare_and_set_answers_its_own_success_not_a_conflict() {
    let mut r = driver("retry-cas", 1);
    let cas = Command::CompareAndSet { key: key("user/c"), expected: None, value: b"v".to_vec() };
    let request = mgmt::RequestKey::derive("", "cas-c");
    let first = write(&mut r, &cas, Some(request));
    r.end_turn().unwrap();
    let version = answered(&first).expect("applies");
    let retry = write(&mut r, &cas, Some(request));
    r.end_turn().unwrap();
    assert_eq!(answered(&retry), Ok(version));
    // Without a request id the same CAS is a new command, and conflicts.
    let fresh = write(&mut r, &cas, None);
    r.end_turn().unwrap();
    assert_eq!(answered(&fresh).unwrap_err().status, 409);
    assert_eq!(version_of(&r, "user/c"), Some(version));
}

#[test]
fn two_copies_in_one_turn_wait_for_the_same_slot() {
    let mut r = driver("same-turn", 1);
    let request = mgmt::RequestKey::derive("", "twice");
    let a = write(&mut r, &put("user/t", "1"), Some(request));
    let b = write(&mut r, &put("user/t", "1"), Some(request));
    r.end_turn().unwrap();
    let version = answered(&a).expect("applies");
    assert_eq!(answered(&b), Ok(version));
    assert_eq!(version_of(&r, "user/t"), Some(version));
}

#[test]
fn a_request_id_reused_for_another_write_is_refused_and_does_not_apply() {
    let mut r = driver("reused", 1);
    let request = mgmt::RequestKey::derive("", "reused");
    let first = write(&mut r, &put("user/r", "1"), Some(request));
    r.end_turn().unwrap();
    let version = answered(&first).expect("applies");
    let other = write(&mut r, &put("user/r", "2"), Some(request));
    r.end_turn().unwrap();
    assert_eq!(answered(&other).unwrap_err().status, 422);
    // Reused while the first copy still waits: refused at once.
    let waiting = mgmt::RequestKey::derive("", "waiting");
    let _pending = write(&mut r, &put("user/w", "1"), Some(waiting));
    let clash = write(&mut r, &put("user/w", "2"), Some(waiting));
    assert_eq!(answered(&clash).unwrap_err().status, 422);
    assert_eq!(r.store().get(&key("user/r")).map(|e| e.value().to_vec()), Some(b"1".to_vec()));
    assert_eq!(version_of(&r, "user/r"), Some(version));
}

#[test]
fn stopping_answers_submitted_writes_504_and_unsubmitted_ones_503() {
    // Three members and no peers: a submitted write is forwarded and waits, undecided.
    let mut r = driver("fail-all", 3);
    let submitted = write(&mut r, &put("user/s", "1"), None);
    let keyed = write(&mut r, &put("user/k", "1"), Some(mgmt::RequestKey::derive("", "k")));
    r.end_turn().unwrap();
    assert!(submitted.try_recv().is_err(), "nothing is decided without peers");
    let unsubmitted = write(&mut r, &put("user/u", "1"), None);
    let (read_tx, read) = channel();
    r.submit_read(Waiter::Get(key("user/s"), read_tx)).unwrap();
    r.fail_all("the node is stopping");
    for rx in [&submitted, &keyed] {
        let e = answered(rx).unwrap_err();
        assert_eq!((e.status, e.error.as_str()), (504, "timeout"), "{e}");
        assert!(e.detail.contains("may still apply"), "{e}");
    }
    assert_eq!(answered(&unsubmitted).unwrap_err().status, 503);
    assert_eq!(read.try_recv().expect("answered").unwrap_err().status, 503);
}

#[test]
fn a_write_past_its_deadline_is_504() {
    let mut r = driver("deadline", 3);
    let rx = write(&mut r, &put("user/d", "1"), None);
    r.end_turn().unwrap();
    for waiters in r.pending.values_mut() {
        for p in waiters.iter_mut() {
            p.deadline = Instant::now() - Duration::from_millis(1);
        }
    }
    r.expire();
    assert_eq!(answered(&rx).unwrap_err().status, 504);
    assert!(r.pending.is_empty());
}

#[test]
fn an_internal_write_stays_in_flight_past_the_client_deadline_until_the_core_drops_it() {
    // Three members and no peers: the write is queued and stays undecided.
    let mut r = driver("internal", 3);
    r.submit_internal(&put("slices/n1/g:a:1.0.0", "LOAD")).unwrap();
    r.end_turn().unwrap();
    assert_eq!(r.internal_in_flight(), 1);
    // A client's wait is over; the command may still apply until its consensus deadline, so a manager
    // must not act as if it had failed (a leader would place the same instance a second time).
    for waiters in r.pending.values_mut() {
        for p in waiters.iter_mut() {
            p.deadline -= CLIENT_DEADLINE + Duration::from_millis(1);
        }
    }
    r.expire();
    assert_eq!(r.internal_in_flight(), 1, "still in flight past the client deadline");
    // The core drops it once its deadline passed: only then is it settled.
    let id = *r.pending.keys().next().expect("still waiting");
    r.rejected(id, RejectReason::Expired);
    assert_eq!(r.internal_in_flight(), 0);
    assert!(r.pending.is_empty());
    // And without word from the core, its own deadline plus slack settles it.
    r.submit_internal(&put("slices/n2/g:a:1.0.0", "LOAD")).unwrap();
    r.end_turn().unwrap();
    let ttl = Duration::from_millis(r.replica.config().command_ttl_ms);
    for waiters in r.pending.values_mut() {
        for p in waiters.iter_mut() {
            p.deadline -= ttl + INTERNAL_DEADLINE_SLACK;
        }
    }
    r.expire();
    assert_eq!(r.internal_in_flight(), 0);
}
