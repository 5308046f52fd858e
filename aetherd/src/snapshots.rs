//! Serialising the store's snapshots off the event loop. The loop hands over a consistent view of the
//! store (a clone that shares every value, see `kvstore::Store::snapshot_view`) with the replica's sessions
//! at the same slot; one worker thread turns it into the state bytes the replica serves to peers and the
//! snapshot record the disk keeps, and the loop collects the result on a later turn.
//!
//! Invariants: jobs are done in the order given, one at a time (at most one large serialisation in memory
//! besides the view); the state bytes and the record describe exactly the slot and sessions of the job;
//! the loop never waits for the worker; `outstanding` counts the jobs submitted and not yet taken, so
//! the loop, which asks on every message, looks at the channel only while one is.

use consensus::{Bytes, Members, SessionRecord, Slot, SnapshotRecord};
use kvstore::KvState;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

struct Job {
    next_slot: u64,
    sessions: Vec<SessionRecord>,
    members: Members,
    view: KvState,
}

/// A finished snapshot.
pub struct Taken {
    pub next_slot: u64,
    /// The store's snapshot bytes, shared with the replica (which sends slices of them to peers).
    pub state: Bytes,
    /// The `SnapshotRecord` (state plus sessions) as the disk stores it.
    pub record: Vec<u8>,
    /// How long the worker took.
    pub took: Duration,
}

pub struct SnapshotWorker {
    jobs: Sender<Job>,
    done: Receiver<Result<Taken, String>>,
    outstanding: usize,
}

impl SnapshotWorker {
    pub fn start() -> Result<SnapshotWorker, String> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                for job in job_rx {
                    if done_tx.send(serialise(job)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
        Ok(SnapshotWorker { jobs, done, outstanding: 0 })
    }

    /// Queues a snapshot of `view`, the store as it was after every slot below `next_slot`.
    pub fn submit(
        &mut self,
        next_slot: u64,
        sessions: Vec<SessionRecord>,
        members: Members,
        view: KvState,
    ) -> Result<(), String> {
        self.jobs
            .send(Job { next_slot, sessions, members, view })
            .map_err(|_| "the snapshot thread stopped".to_string())?;
        self.outstanding += 1;
        Ok(())
    }

    /// A finished snapshot, if one is ready.
    pub fn try_take(&mut self) -> Option<Result<Taken, String>> {
        if self.outstanding == 0 {
            return None;
        }
        match self.done.try_recv() {
            Ok(taken) => {
                self.outstanding -= 1;
                Some(taken)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err("the snapshot thread stopped".into())),
        }
    }
}

fn serialise(job: Job) -> Result<Taken, String> {
    let started = Instant::now();
    let state = kvstore::snapshot::encode(&job.view)
        .map_err(|e| format!("cannot snapshot the store at slot {}: {e}", job.next_slot))?;
    drop(job.view);
    let record = SnapshotRecord { next_slot: Slot(job.next_slot), sessions: job.sessions, members: job.members, state };
    let bytes = wire::encode(&record);
    Ok(Taken { next_slot: job.next_slot, state: Bytes::from(record.state), record: bytes, took: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_serialised_on_the_worker_and_describes_its_view() {
        let mut store = kvstore::Store::default();
        let put = kvstore::Command::Put { key: kvstore::AetherKey::parse("user/a").unwrap(), value: vec![7; 1000] };
        store.apply(4, [put.encode().unwrap()]).unwrap();
        let mut worker = SnapshotWorker::start().unwrap();
        let expected = store.snapshot().unwrap();
        assert!(worker.try_take().is_none(), "nothing submitted, nothing to take");
        worker.submit(5, Vec::new(), Members::first(3), store.snapshot_view()).unwrap();
        store.apply(5, [put.encode().unwrap()]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let taken = loop {
            if let Some(taken) = worker.try_take() {
                break taken.unwrap();
            }
            assert!(Instant::now() < deadline, "the worker never answered");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(taken.next_slot, 5);
        assert!(worker.try_take().is_none(), "taken once");
        assert_eq!(&taken.state[..], &expected[..]);
        let record: SnapshotRecord = wire::decode(&taken.record).unwrap();
        assert_eq!((record.next_slot, record.state), (Slot(5), expected));
    }
}
