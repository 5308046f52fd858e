//! Starting from what storage recovered: the snapshot, then the decided records replayed into the store, and
//! the replica either resumed as a voter or made to recover its vote floor from its peers first.
//!
//! Invariant: a node whose own votes on disk may be incomplete never resumes as a plain voter.

use super::{KV, RECORD_DECIDED, RECORD_OWN_MESSAGE, RECORD_RECOVERY_FINISHED, RECORD_RECOVERY_STARTED};
use crate::storage::Recovered;
use consensus::{DecidedSlot, Replica};
use kvstore::Store;
use log::{debug, warn};

/// Rebuilds the store and the replica from the durable log. A replica resumes as a voter from its own
/// recorded votes, unless those may be incomplete: after a reboot without a clean stop (the unsynced tail
/// may be gone), after a stop on a storage failure, when the log shows a recovery that never finished, or
/// when it shows lost records (`Replica::resume` sees a gap or own messages past the resumed slot). Then
/// it keeps the decided state but recovers its vote floor from its peers first. An empty log (or only a restored
/// backup's snapshot at slot 0, `--restore`), or one
/// whose only records are an unfinished recovery, gives `Replica::fresh`. A one-node cluster always
/// resumes: it has nobody to contradict.
pub(super) fn restore(
    config: consensus::Config,
    recovered: Recovered,
    incarnation: u64,
) -> Result<(Store, Replica), String> {
    let unclean_reboot = recovered.unclean_reboot;
    if let Some(reason) = &recovered.failed_stop {
        warn!("the node stopped on a storage failure ({reason}): its own votes on disk may be incomplete");
    }
    let failed_stop = recovered.failed_stop.is_some();
    let ran_before = recovered.ran_before;
    // A snapshot at slot 0 is a restored backup (`--restore`): state, but no slot of this cluster's log.
    let seeded = recovered.snapshot.as_ref().is_some_and(|(next_slot, _)| *next_slot == 0);
    let nothing_on_disk = (recovered.snapshot.is_none() || seeded) && recovered.records.is_empty();
    let mut recovering_in_log = false;
    let mut gap = false;
    let mut store = Store::default();
    let mut resume = consensus::Resume { incarnation, ..consensus::Resume::default() };
    if let Some((next_slot, bytes)) = recovered.snapshot {
        let snapshot: consensus::SnapshotRecord =
            wire::decode(&bytes).map_err(|e| format!("the snapshot on disk does not decode: {e}"))?;
        store.install_snapshot(&snapshot.state).map_err(|e| format!("the snapshot on disk does not install: {e}"))?;
        debug!("restored the store from the snapshot at slot {next_slot}");
        resume.snapshot = Some(snapshot);
    }
    for record in recovered.records {
        match record.kind {
            RECORD_DECIDED => {
                let decided: DecidedSlot = wire::decode(&record.bytes)
                    .map_err(|e| format!("log record of slot {} does not decode: {e}", record.slot))?;
                let first_slot = resume.snapshot.as_ref().map_or(0, |s| s.next_slot.0);
                // Past a gap nothing is replayed, but the replica sees the records: proof of lost ones.
                if !gap && !replay_into_store(&mut store, &decided, first_slot)? {
                    gap = true;
                }
                resume.decided.push(decided);
            }
            RECORD_OWN_MESSAGE => match consensus::decode_message(&record.bytes) {
                Ok(message) => resume.own_messages.push(message),
                Err(e) => warn!("skipping an own message of slot {} that does not decode: {e}", record.slot),
            },
            RECORD_RECOVERY_STARTED => recovering_in_log = true,
            RECORD_RECOVERY_FINISHED => recovering_in_log = false,
            other => warn!("skipping a log record of unknown kind {other}"),
        }
    }
    let fresh = (resume.snapshot.is_none() || seeded) && resume.decided.is_empty() && resume.own_messages.is_empty();
    let distrust_votes = config.members.len() > 1 && (unclean_reboot || recovering_in_log || failed_stop);
    // Only recovery marks, the last one "finished": it joined a brand-new cluster and has not spoken since.
    let replica = if nothing_on_disk || (fresh && recovering_in_log) {
        if ran_before && config.members.len() > 1 {
            warn!("this node ran here before but its consensus log is empty: recovering the vote floor from peers");
        }
        Replica::fresh(config, incarnation)
    } else if distrust_votes {
        warn!("own votes on disk may be incomplete: recovering the vote floor from peers before voting");
        Replica::resume_recovering(config, resume, incarnation)
    } else {
        let replica = Replica::resume(config, resume);
        if replica.is_recovering() {
            warn!("the consensus log lost records (a gap, or own votes past its last slot): recovering the vote floor");
        }
        replica
    };
    Ok((store, replica))
}

/// Applies one decided slot read back from the log; `false` at a gap (the slots before it never reached
/// this disk), after which nothing more may be replayed.
fn replay_into_store(store: &mut Store, decided: &DecidedSlot, first_slot: u64) -> Result<bool, String> {
    let slot = decided.slot.0;
    if store.applied_slot().is_some_and(|applied| slot <= applied) {
        return Ok(true);
    }
    let expected = store.applied_slot().map_or(first_slot, |applied| applied + 1);
    if slot != expected {
        warn!("the consensus log jumps from slot {expected} to {slot}; the rest comes from peers");
        return Ok(false);
    }
    let batch = decided.batch.as_deref().unwrap_or_default();
    let payloads: Vec<&[u8]> =
        batch.iter().filter(|c| c.payload.first() == Some(&KV)).map(|c| &c.payload[1..]).collect();
    store.apply(slot, payloads).map(|_| true).map_err(|e| format!("replaying slot {slot}: {e}"))
}
