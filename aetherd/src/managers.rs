//! The deployment managers (`control`) wired to this node's replicated store: which keys wake them, and
//! the views they are given.
//!
//! [`Leader`] drives liveness and leadership on every node: it renews this node's lease record through
//! consensus every [`control::cluster::liveness::LEASE_RENEW_MS`], watches every lease in the applied store,
//! claims leadership when the leader record is absent or names a dead node (and re-claims it once after a
//! restart, so no write of its earlier life can still apply: `control::cluster::liveness::Tenure`), and, on
//! the node the leader record names, runs the leader's reconcile with every write conditional on that record (see
//! `control::cluster::liveness`). The transport's view of peers (`membership`) never decides what the leader
//! does. A node renews before it submits its other writes, so they never crowd its lease out of a full queue.
//!
//! Invariants: managers only ever see applied state; the leader reconciles, and every node steps its own
//! records, only while it has quorum, is caught up, and none of its earlier writes is still undecided (a stale view would only produce writes
//! that fail their compare-and-set, but there is no point in making them); every write they produce is
//! conditional on the version it was computed from, and the leader's on the leader and lease records too.

use crate::deploy::Deployer;
use control::cluster::liveness::{self, Leadership, LeaseWatch, Tenure};
use control::node::NodeOutput;
use control::records::{LeaseRecord, Record};
use control::KvWrite;
use kvstore::{AetherKey, NodeId, Revision, Store, WatchId};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Keys the deployment managers read.
pub const DEPLOY_PREFIXES: [&str; 8] =
    ["blueprints/", "targets/", "slices/", "endpoints/", "routes/", "updates/", "scaling/", "thresholds/"];

/// Wall-clock milliseconds: slice records carry `since_ms` that other nodes compare with their own clock.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Registers the watches that wake the managers.
pub fn watch(store: &mut Store) -> Vec<WatchId> {
    DEPLOY_PREFIXES.iter().filter_map(|p| store.watch(p).ok()).collect()
}

/// Drains the managers' watches; true when anything changed (or a watch lagged and must re-read).
pub fn drain(store: &mut Store, watches: &[WatchId]) -> Vec<kvstore::WatchEvent> {
    let ready: Vec<WatchId> = store.ready_watches().filter(|id| watches.contains(id)).collect();
    ready.into_iter().flat_map(|id| store.drain_events(id).unwrap_or_default()).collect()
}

/// This node's lease renewals and its part in leadership. See the module documentation.
pub struct Leader {
    me: NodeId,
    watch: LeaseWatch,
    /// Leadership as this process holds it: after a restart it re-claims before it leads.
    tenure: Tenure,
    epoch: Instant,
    /// The lease version the last renewal was computed against, and when it was submitted.
    renewed: Option<(Option<Revision>, Instant)>,
    /// The leader record's node as last read, for the status API.
    leader: Option<String>,
    /// The last pass submitted a claim: the pass after its decision should come at once, since the leader
    /// record (under `nodes/`) wakes no watch.
    claiming: bool,
    /// The leader record's version this node last found itself leading at (scheduled runs are guarded by it).
    lead: Option<Revision>,
    /// Rollouts' window figures and autoscaled slices' load, for the next pass (set by the loop).
    pub measured: control::cluster::Measured,
}

impl Leader {
    pub fn new(me: NodeId, grace: Duration) -> Leader {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        Leader {
            watch: LeaseWatch::new(me.clone(), grace_ms),
            tenure: Tenure::default(),
            me,
            epoch: Instant::now(),
            renewed: None,
            leader: None,
            claiming: false,
            lead: None,
            measured: Default::default(),
        }
    }

    /// True when the last pass submitted a leadership claim.
    pub fn claiming(&self) -> bool {
        self.claiming
    }

    /// The leader record's version when the last pass found this node leading (`None`: it did not).
    pub fn lead_version(&self) -> Option<Revision> {
        self.lead
    }

    /// The node the leader record names, as last read.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The renewal of this node's lease, when one is due: about every second, and never while the previous
    /// one may still be undecided (its compare-and-set would fail anyway).
    pub fn renewal(&mut self, store: &Store) -> Option<KvWrite> {
        let renew_every = Duration::from_millis(liveness::LEASE_RENEW_MS);
        // The loop asks after every turn's work: within a period of the last renewal nothing can be due,
        // whatever the store says, so the store (a formatted key and a map lookup) is read only past it.
        if self.renewed.is_some_and(|(_, at)| at.elapsed() < renew_every) {
            return None;
        }
        let key = AetherKey::NodeLease { node: self.me.clone() };
        let current = store.get(&key);
        let version = current.map(|e| e.version());
        let due = match self.renewed {
            None => true,
            Some((at_version, at)) if at_version == version => at.elapsed() >= 3 * renew_every,
            Some((_, at)) => at.elapsed() >= renew_every,
        };
        if !due {
            return None;
        }
        self.renewed = Some((version, Instant::now()));
        let counter = current.and_then(|e| LeaseRecord::decode(e.value()).ok()).map_or(0, |l| l.counter);
        let value = LeaseRecord { counter: counter.wrapping_add(1) }.encode();
        Some(KvWrite::Set { key, expected: version, value })
    }

    /// The leadership claim or the leader's writes for the current state, at wall-clock `now_ms`.
    pub fn writes(&mut self, store: &Store, now_ms: u64, policy: &control::cluster::StartPolicy) -> Vec<KvWrite> {
        let entries = DEPLOY_PREFIXES.iter().chain(["nodes/"].iter()).flat_map(|p| store.list(p));
        let view = control::ClusterState::from_entries(entries);
        let monotonic_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let live = self.watch.observe(&view, monotonic_ms);
        self.leader = match &view.leader {
            Some(Ok(record)) => Some(record.value.node.to_string()),
            _ => None,
        };
        self.claiming = false;
        self.lead = None;
        match self.tenure.leadership(&self.me, &view, &live) {
            Leadership::Lead { version } => {
                self.lead = Some(version);
                control::cluster::lead_judged(&view, &live, version, now_ms, policy, &self.measured)
            }
            Leadership::Claim(claim) => {
                log::info!("claiming leadership: {claim}");
                self.claiming = true;
                vec![claim]
            }
            Leadership::Follow => Vec::new(),
        }
    }
}

/// This node's actions and writes for its records and its container. A config verdict the record already
/// shows (accepted as its `config`, or refused as its `config_refused`) is forgotten first, so the same
/// config asked for again later is offered to the slice again rather than answered from memory.
pub fn node_step(store: &Store, me: &NodeId, deployer: &mut Deployer, now_ms: u64) -> NodeOutput {
    let mine = format!("slices/{me}/");
    let entries = store
        .list(&mine)
        .chain(store.list("endpoints/"))
        .chain(store.list("routes/"))
        .chain(store.list("targets/"))
        .chain(store.list("topics/"));
    let view = control::NodeState::from_entries(me.clone(), entries);
    deployer.forget_recorded_verdicts(|artifact, config| {
        view.records.get(artifact).is_some_and(|r| {
            r.value.config == *config
                || r.value.config_refused.as_ref().is_some_and(|refused| refused.config == *config)
        })
    });
    control::node::step(&view, deployer.states(), deployer.infos(), deployer.running(), now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::WatchLimits;

    fn apply(store: &mut Store, slot: &mut u64, writes: &[KvWrite]) {
        let payloads: Vec<Vec<u8>> = writes.iter().map(|w| w.to_command().encode().unwrap()).collect();
        store.apply(*slot, &payloads).unwrap();
        *slot += 1;
    }

    #[test]
    fn a_node_renews_once_per_period_then_claims_and_leads_with_guarded_writes() {
        let mut store = Store::new(WatchLimits::default());
        let mut slot = 0;
        let mut leader = Leader::new(NodeId::parse("node-1").unwrap(), Duration::from_secs(5));
        let first = leader.renewal(&store).expect("the first renewal is due at once");
        assert!(matches!(&first, KvWrite::Set { expected: None, .. }), "{first}");
        assert!(leader.renewal(&store).is_none(), "undecided: no second renewal");
        apply(&mut store, &mut slot, &[first]);
        assert!(leader.renewal(&store).is_none(), "decided, but the period has not passed");
        // The lease exists: this node is the only live one, so it claims, then leads once the claim applied.
        let claim = leader.writes(&store, 0, &Default::default());
        assert!(
            matches!(&claim[..], [KvWrite::Set { key: AetherKey::ClusterLeader, expected: None, .. }]),
            "{claim:?}"
        );
        apply(&mut store, &mut slot, &claim);
        let toml = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n";
        let parsed = control::blueprint::parse(toml, &|_| true).unwrap();
        let value = control::records::BlueprintRecord { toml: toml.to_owned(), blueprint: parsed }.encode();
        let key = AetherKey::Blueprint { name: kvstore::Name::parse("s").unwrap() };
        store.apply(slot, &[kvstore::Command::Put { key, value }.encode().unwrap()]).unwrap();
        let writes = leader.writes(&store, 0, &Default::default());
        assert_eq!(leader.leader(), Some("node-1"));
        assert!(!writes.is_empty());
        assert!(
            writes.iter().all(|w| matches!(w, KvWrite::Guarded { guards, .. }
            if guards.iter().any(|(k, _)| *k == AetherKey::ClusterLeader))),
            "{writes:?}"
        );
        // The process restarts: the record names this node from its earlier life, whose guarded writes may
        // still be queued; the new life re-claims over that version before it leads.
        slot += 1;
        let mut restarted = Leader::new(NodeId::parse("node-1").unwrap(), Duration::from_secs(5));
        let reclaim = restarted.writes(&store, 0, &Default::default());
        assert!(
            matches!(&reclaim[..], [KvWrite::Set { key: AetherKey::ClusterLeader, expected: Some(_), .. }]),
            "{reclaim:?}"
        );
        apply(&mut store, &mut slot, &reclaim);
        let writes = restarted.writes(&store, 0, &Default::default());
        assert!(!writes.is_empty() && writes.iter().all(|w| matches!(w, KvWrite::Guarded { .. })), "{writes:?}");
    }
}
