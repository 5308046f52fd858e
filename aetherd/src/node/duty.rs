//! The loop's side of this node's lifecycle record (`nodes/{me}/lifecycle`, see `control::duty`):
//! - at start, once caught up with quorum, it writes ON_DUTY when the record is absent, JOINING or
//!   SHUTTING_DOWN from the previous life (DRAINING and DECOMMISSIONED are the operator's and stay);
//! - on a stop signal (`stop::DrainOnStop` requested by the main thread) it writes SHUTTING_DOWN when another
//!   live node is ON_DUTY, and reports the drain Waiting, then Drained once no slice record is left on this
//!   node; without quorum, caught-up state or another ON_DUTY node it reports NotPossible at once;
//! - when an operator's `shutdown` turns the record SHUTTING_DOWN while the node runs (entered after this
//!   life began; an older SHUTTING_DOWN is the previous life's and is turned ON_DUTY again), it raises SIGTERM
//!   on itself, so the stop goes the one way every stop goes (drain, then the orderly stop);
//! - every change of the record's state or waiting reason it sees becomes a `node_lifecycle` event.
//!
//! Invariants: every write is conditional on the record's version as read; the start write happens once
//! per life; SIGTERM is raised at most once per life.

use super::Node;
use crate::managers::wall_ms;
use crate::stop::DrainPhase;
use control::duty::{self, Duty, DutyRecord};
use control::records::Record;
use control::{KvWrite, Versioned};
use kvstore::{NodeId, Revision, Store};

type Read = Option<Result<Versioned<DutyRecord>, Revision>>;

/// What the loop remembers of its lifecycle record in this life.
#[derive(Debug, Default)]
pub(crate) struct DutyWatch {
    started: bool,
    /// Wall-clock milliseconds when this life first looked at its record: a SHUTTING_DOWN entered before it
    /// is the previous life's (its SIGTERM drain), to be turned ON_DUTY, never a shutdown to obey.
    life_start_ms: u64,
    seen: Option<(Duty, Option<String>)>,
    raised: bool,
}

fn read(store: &Store, node: &NodeId) -> Read {
    let entry = store.get(&duty::key(node))?;
    Some(
        DutyRecord::decode(entry.value())
            .map(|value| Versioned { value, version: entry.version() })
            .map_err(|_| entry.version()),
    )
}

/// True when a live node other than `me` is ON_DUTY (a node without a record is).
fn others_on_duty(store: &Store, me: &NodeId, alive: &[String]) -> bool {
    alive.iter().filter(|n| *n != me.as_str()).filter_map(|n| NodeId::parse(n).ok()).any(|n| match read(store, &n) {
        None => true,
        Some(Ok(record)) => record.value.state == Duty::OnDuty,
        Some(Err(_)) => false,
    })
}

impl Node {
    /// One pass over this node's lifecycle record. See the module documentation.
    pub(super) fn tick_duty(&mut self, ctx: &mut net::Ctx<'_>) {
        let drain = std::sync::Arc::clone(&self.data.drain_on_stop);
        let Some(r) = self.replication.as_ref() else { return };
        let can_write = self.membership.has_quorum() && r.caught_up();
        if !can_write {
            // Without quorum nothing can move (a whole cluster stopped at once loses it mid-drain): stop now
            // rather than wait out the drain bound.
            if drain.requested() && matches!(drain.phase(), DrainPhase::Pending | DrainPhase::Waiting) {
                drain.set_phase(DrainPhase::NotPossible);
            }
            return;
        }
        let idle = r.internal_in_flight() == 0;
        let alive = self.membership.alive_nodes();
        let Some(d) = self.deployment.as_mut() else { return };
        let store = r.store();
        let current = read(store, &d.me);
        record_change(&mut d.duty, self.ops.observer_log(), &current);
        let state = current.as_ref().and_then(|c| c.as_ref().ok()).map(|c| c.value.state);
        let mut writes: Vec<KvWrite> = Vec::new();
        let entered_ms = current.as_ref().and_then(|c| c.as_ref().ok()).map_or(0, |c| c.value.since_ms);
        if !d.duty.started {
            d.duty.started = true;
            d.duty.life_start_ms = wall_ms();
            let read_ref = current.as_ref().map(|c| c.as_ref().map_err(|v| *v));
            writes.extend(duty::self_on_duty(&d.me, read_ref, wall_ms()));
        } else if state == Some(Duty::ShuttingDown) && !drain.requested() && !d.duty.raised {
            if entered_ms >= d.duty.life_start_ms {
                d.duty.raised = true;
                log::info!("this node's lifecycle is SHUTTING_DOWN: stopping after the drain");
                let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
            } else if idle {
                // The previous life's SIGTERM drain: the ON_DUTY write lost its compare-and-set (the leader
                // rewrote the record meanwhile) or has not been decided: write it again.
                let read_ref = current.as_ref().map(|c| c.as_ref().map_err(|v| *v));
                writes.extend(duty::self_on_duty(&d.me, read_ref, wall_ms()));
            }
        }
        if drain.requested() {
            writes.extend(drain_step(store, &d.me, &current, &alive, idle, &drain));
        }
        for write in writes {
            let command = write.to_command();
            self.drive(ctx, |r| r.submit_internal(&command));
        }
    }
}

/// Records a `node_lifecycle` event when the record's state or waiting reason changed since last seen.
fn record_change(watch: &mut DutyWatch, log: &crate::events::EventLog, current: &Read) {
    let Some(Ok(record)) = current else { return };
    let now = (record.value.state, record.value.waiting.clone());
    let before = watch.seen.replace(now.clone());
    if before.is_some_and(|b| b == now) {
        return;
    }
    let data = serde_json::json!({
        "state": record.value.state.as_str(),
        "reason": record.value.reason,
        "waiting": record.value.waiting,
    });
    log.record(wall_ms(), log.me(), "node_lifecycle", data);
}

/// The drain before a stop: the SHUTTING_DOWN write when the cluster can take the work, and the phase.
/// `idle`: none of this node's earlier writes is undecided (a SHUTTING_DOWN write that lost its
/// compare-and-set is made again only then).
fn drain_step(
    store: &Store,
    me: &NodeId,
    current: &Read,
    alive: &[String],
    idle: bool,
    drain: &crate::stop::DrainOnStop,
) -> Vec<KvWrite> {
    let state = current.as_ref().and_then(|c| c.as_ref().ok()).map(|c| c.value.state);
    let shutting_down = state == Some(Duty::ShuttingDown);
    match drain.phase() {
        DrainPhase::Pending if shutting_down => drain.set_phase(DrainPhase::Waiting),
        DrainPhase::Pending if others_on_duty(store, me, alive) => {
            drain.set_phase(DrainPhase::Waiting);
            log::info!("writing SHUTTING_DOWN; the leader moves this node's instances away");
            return vec![shutting_down_write(me, current)];
        }
        DrainPhase::Pending => drain.set_phase(DrainPhase::NotPossible),
        DrainPhase::Waiting if !shutting_down && idle => return vec![shutting_down_write(me, current)],
        DrainPhase::Waiting if shutting_down && store.list(&format!("slices/{me}/")).next().is_none() => {
            drain.set_phase(DrainPhase::Drained)
        }
        _ => {}
    }
    Vec::new()
}

fn shutting_down_write(me: &NodeId, current: &Read) -> KvWrite {
    let expected = current.as_ref().map(|c| c.as_ref().map_or_else(|v| *v, |r| r.version));
    duty::set(me, expected, &DutyRecord::new(Duty::ShuttingDown, Some("SIGTERM"), wall_ms()))
}
