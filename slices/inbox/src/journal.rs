//! The durable journal: when the slice's config says `journal = "true"`, every delivery is written to the
//! slice's cluster state (`ctx.kv()`) before it is acknowledged, so what an instance received survives a
//! kill -9 of its node (the in-memory record does not).
//!
//! Writes are group-committed: deliveries that arrive while a write is in flight wait for the next one, which
//! carries all of them as one entry `journal/{topic}/{node}/{boot}/{chunk}` (`chunk` counts from 0, ten digits,
//! so keys sort in write order), value = one body per line. A delivery answers only once its own entry was
//! written; a failed write fails every delivery in it (the sender retries them).
//!
//! Invariants: a body is acknowledged only after an entry holding it was written; entries of one instance are
//! written one at a time, in arrival order; a batch holds at most [`BATCH_MAX`] bodies of at most
//! [`LINE_BYTES_MAX`] bytes each (longer bodies are cut, newlines replaced), so an entry stays far below the
//! store's value limit.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Most bodies in one journal entry.
pub const BATCH_MAX: usize = 512;
/// Longest body kept in the journal, in bytes.
pub const LINE_BYTES_MAX: usize = 512;

/// Where a batch goes: the slice's cluster state, or a test's stand-in.
pub trait Sink: Sync {
    fn write(&self, key: &str, value: &[u8]) -> Result<(), String>;
}

#[derive(Default)]
struct State {
    pending: Vec<(u64, String)>,
    next_id: u64,
    next_chunk: u64,
    writing: bool,
    outcomes: HashMap<u64, Result<(), String>>,
}

pub struct Journal {
    prefix: String,
    state: Mutex<State>,
    written: Condvar,
}

impl Journal {
    /// A journal whose entries are `journal/{topic}/{node}/{boot}/...`.
    pub fn new(topic: &str, node: &str, boot: &str) -> Journal {
        Journal {
            prefix: format!("journal/{topic}/{node}/{boot}"),
            state: Mutex::new(State::default()),
            written: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a writer panicked between plain field updates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `body` durably (with whatever else is waiting), returning once its entry is written.
    pub fn record(&self, sink: &dyn Sink, body: &str) -> Result<(), String> {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push((id, line(body)));
        loop {
            if let Some(outcome) = state.outcomes.remove(&id) {
                return outcome;
            }
            if !state.writing && !state.pending.is_empty() {
                state = self.write_batch(sink, state);
                continue;
            }
            state = self
                .written
                .wait_timeout(state, Duration::from_millis(100))
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Takes up to [`BATCH_MAX`] pending bodies, writes them without the lock, records the outcome for each.
    fn write_batch<'a>(&'a self, sink: &dyn Sink, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let take = state.pending.len().min(BATCH_MAX);
        let batch: Vec<(u64, String)> = state.pending.drain(..take).collect();
        let chunk = state.next_chunk;
        state.next_chunk += 1;
        state.writing = true;
        drop(state);
        let value = batch.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
        let outcome = sink.write(&format!("{}/{chunk:010}", self.prefix), value.as_bytes());
        let mut state = self.lock();
        for (id, _) in batch {
            state.outcomes.insert(id, outcome.clone());
        }
        state.writing = false;
        self.written.notify_all();
        state
    }
}

/// A body as one journal line: newlines replaced, cut to [`LINE_BYTES_MAX`] on a character boundary.
fn line(body: &str) -> String {
    let mut end = body.len().min(LINE_BYTES_MAX);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Memory {
        entries: Mutex<Vec<(String, String)>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Sink for Memory {
        fn write(&self, key: &str, value: &[u8]) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(2));
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("store unavailable".into());
            }
            let value = String::from_utf8_lossy(value).into_owned();
            self.entries.lock().unwrap().push((key.to_owned(), value));
            Ok(())
        }
    }

    #[test]
    fn concurrent_bodies_share_entries_and_every_one_is_written_once() {
        let journal = Arc::new(Journal::new("work", "node-1", "b0"));
        let sink = Arc::new(Memory::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (journal, sink) = (journal.clone(), sink.clone());
                std::thread::spawn(move || {
                    for n in 0..50 {
                        journal.record(&*sink, &format!("t{t}-{n:03}")).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let entries = sink.entries.lock().unwrap().clone();
        assert!(entries.len() < 400, "writes were not grouped: {}", entries.len());
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "entries are written in key order");
        let lines: Vec<&str> = entries.iter().flat_map(|(_, v)| v.lines()).collect();
        assert_eq!(lines.len(), 400);
        for t in 0..8 {
            let own: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(&format!("t{t}-"))).collect();
            let mut ordered = own.clone();
            ordered.sort();
            assert_eq!(own, ordered, "one sender's bodies keep their order");
        }
    }

    #[test]
    fn a_failed_write_fails_its_bodies_and_later_ones_still_go() {
        let journal = Journal::new("work", "node-1", "b0");
        let sink = Memory::default();
        sink.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(journal.record(&sink, "a"), Err("store unavailable".into()));
        sink.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        journal.record(&sink, "b\nc").unwrap();
        let entries = sink.entries.lock().unwrap().clone();
        assert_eq!(entries, [("journal/work/node-1/b0/0000000001".to_owned(), "b c".to_owned())]);
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(LINE_BYTES_MAX);
        let cut = line(&body);
        assert!(cut.len() <= LINE_BYTES_MAX && cut.chars().all(|c| c == 'é'));
    }
}
