//! Liveness and leadership as the leader acts on them: read from replicated records, never from this node's
//! own view of its connections.
//!
//! Records: every node renews `nodes/{node}/lease` through consensus about every [`LEASE_RENEW_MS`] (a
//! compare-and-set at the version it last saw, raising a counter); `nodes/leader` names the leader.
//!
//! [`LeaseWatch`] turns the leases of the applied KV into a [`Liveness`] by watching lease versions change on
//! this node's monotonic clock (no clock value is ever stored or compared across nodes):
//! - *live* (may receive new instances): the lease changed within [`FRESH_MS`] (at most the grace period);
//! - *dead* (its records are removed, and re-placed elsewhere): the lease stayed at one version, or absent, for
//!   the whole grace period, while this node's own lease was renewed at least [`PROGRESS_RENEWALS`] times in
//!   that time, so a stall of consensus itself, which stops every renewal, judges nobody dead;
//! - otherwise *suspect*: its records stay and count as placed, nothing new goes to it.
//!
//! The watch needs no reset when this node loses its quorum or falls behind: it acts only while caught up,
//! catching up shows every renewal it missed as a changed version before it judges, and its own renewals,
//! which a dead judgement requires, stop while it is cut off.
//!
//! [`leadership`] says whether this node leads (the leader record names it), claims leadership (there is no
//! leader record, or it names a dead node, and this node is the smallest live one), or follows.
//! [`lead`] is the leader's reconcile pass with every write conditional on the leader record's version.
//! [`Tenure`] is leadership as one life of a node's process holds it: a life never leads at a version of the
//! leader record it found naming its node, because an earlier life (before a restart) may have writes guarded
//! on that version still queued in consensus; it re-claims first, which moves the version on.
//!
//! Invariants:
//! - a node whose renewals keep being decided is never removed: its lease version changes at every renewal,
//!   and every removal of its records is conditional on the lease version that was judged dead, so even a
//!   removal decided long after it was computed fails once the node has renewed;
//! - the writes of at most one leader apply: each is conditional on the leader record's version, which only a
//!   claim changes, and a claim over a named leader is conditional on that leader's lease being the dead one.

use super::{ClusterState, StartPolicy};
use crate::records::{LeaderRecord, Record};
use crate::write::KvWrite;
use kvstore::{AetherKey, NodeId, Revision};
use std::collections::{BTreeMap, BTreeSet};

/// How often a node renews its lease.
pub const LEASE_RENEW_MS: u64 = 1_000;
/// A node whose lease changed within this long may receive new instances.
pub const FRESH_MS: u64 = 3 * LEASE_RENEW_MS;
/// The default grace period: how long a lease must stay unchanged before its node's instances are re-placed.
pub const GRACE_MS_DEFAULT: u64 = 5_000;
/// Renewals of the judging node's own lease that must be decided during the grace period, as evidence that
/// consensus was running and the other node had the same chance to renew.
pub const PROGRESS_RENEWALS: u64 = 3;

/// The liveness the leader acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Nodes that may receive new instances.
    pub live: BTreeSet<NodeId>,
    /// Nodes judged dead, with the version of their lease record the judgement was made at (`None`: absent).
    /// Removals of their records are conditional on it.
    pub dead: BTreeMap<NodeId, Option<Revision>>,
}

impl Liveness {
    /// Every node in `live`, none dead (for tests and tools that take liveness as given).
    pub fn all_live(nodes: impl IntoIterator<Item = NodeId>) -> Liveness {
        Liveness { live: nodes.into_iter().collect(), dead: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    version: Option<Revision>,
    since_ms: u64,
    /// This node's own lease counter when `version` was first seen.
    own_at: u64,
}

/// Watches lease versions over time on one node. See the module documentation.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    me: NodeId,
    grace_ms: u64,
    seen: BTreeMap<NodeId, Seen>,
}

impl LeaseWatch {
    pub fn new(me: NodeId, grace_ms: u64) -> LeaseWatch {
        LeaseWatch { me, grace_ms, seen: BTreeMap::new() }
    }

    pub fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// Forgets what was seen, so every node gets a full grace period again (a node that stops, as the
    /// simulator's nodes do when they crash, starts over).
    pub fn reset(&mut self) {
        self.seen.clear();
    }

    /// Takes in the leases of an applied view at `now_ms` (this node's monotonic milliseconds) and judges every
    /// node that has a lease, holds a slice record, or is named leader.
    pub fn observe(&mut self, state: &ClusterState, now_ms: u64) -> Liveness {
        let own = state.leases.get(&self.me).map_or(0, |lease| lease.value.counter);
        let mut nodes: BTreeSet<&NodeId> = state.leases.keys().collect();
        nodes.extend(state.slices.values().flat_map(|by_node| by_node.keys()));
        if let Some(Ok(leader)) = &state.leader {
            nodes.insert(&leader.value.node);
        }
        self.seen.retain(|node, _| nodes.contains(node));
        let mut liveness = Liveness::default();
        for node in nodes {
            let version = state.leases.get(node).map(|lease| lease.version);
            let fresh = Seen { version, since_ms: now_ms, own_at: own };
            let seen = self.seen.entry(node.clone()).or_insert(fresh);
            if seen.version != version {
                *seen = fresh;
            }
            let unchanged_ms = now_ms.saturating_sub(seen.since_ms);
            let progress = own.saturating_sub(seen.own_at);
            if version.is_some() && unchanged_ms < FRESH_MS.min(self.grace_ms) {
                liveness.live.insert(node.clone());
            } else if unchanged_ms >= self.grace_ms && progress >= PROGRESS_RENEWALS && *node != self.me {
                liveness.dead.insert(node.clone(), version);
            }
        }
        liveness
    }
}

/// What this node does about leadership now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// The leader record names this node, at `version`: it leads, every write conditional on that version.
    Lead { version: Revision },
    /// Submit this write to become leader; lead once it has applied.
    Claim(KvWrite),
    /// Another node leads (or no claim is this node's to make).
    Follow,
}

/// Decides leadership from the applied leader record and the liveness this node observed.
pub fn leadership(me: &NodeId, state: &ClusterState, liveness: &Liveness) -> Leadership {
    let claimant = liveness.live.first() == Some(me);
    let claim = |expected: Option<Revision>| KvWrite::Set {
        key: AetherKey::ClusterLeader,
        expected,
        value: LeaderRecord { node: me.clone() }.encode(),
    };
    match &state.leader {
        Some(Ok(leader)) if leader.value.node == *me => Leadership::Lead { version: leader.version },
        Some(Ok(leader)) => match liveness.dead.get(&leader.value.node) {
            Some(lease) if claimant => {
                let lease_key = AetherKey::NodeLease { node: leader.value.node.clone() };
                Leadership::Claim(claim(Some(leader.version)).guarded(lease_key, *lease))
            }
            _ => Leadership::Follow,
        },
        Some(Err(version)) if claimant => Leadership::Claim(claim(Some(*version))),
        None if claimant => Leadership::Claim(claim(None)),
        _ => Leadership::Follow,
    }
}

/// Leadership as one life of this node's process holds it (a restart starts a new `Tenure`). A leader record
/// naming this node at a version this life did not bring about may come from an earlier life, whose writes
/// guarded on that version can still be queued in consensus (a command applies until its deadline): leading at
/// it would let them apply beside this life's own (a slice placed twice). So this life first writes the record
/// again, conditional on that version, and leads only once the version has moved on; every write of the
/// earlier life then fails its guard.
#[derive(Debug, Clone, Default)]
pub struct Tenure {
    /// The version this life found the record naming its node at (and re-claimed over), until it moved on.
    inherited: Option<Revision>,
    /// This life submitted a claim: a version naming this node other than `inherited` comes from it.
    claimed: bool,
}

impl Tenure {
    /// [`leadership`] for this life. See the type's documentation.
    pub fn leadership(&mut self, me: &NodeId, state: &ClusterState, liveness: &Liveness) -> Leadership {
        match leadership(me, state, liveness) {
            Leadership::Lead { version } if !self.claimed || self.inherited == Some(version) => {
                self.claimed = true;
                self.inherited = Some(version);
                let value = LeaderRecord { node: me.clone() }.encode();
                Leadership::Claim(KvWrite::Set { key: AetherKey::ClusterLeader, expected: Some(version), value })
            }
            Leadership::Claim(claim) => {
                self.claimed = true;
                Leadership::Claim(claim)
            }
            other => other,
        }
    }
}

/// The leader's pass: [`reconcile`] with every write conditional on the leader record still being at
/// `leader_version` (the version that names this node).
pub fn lead(
    state: &ClusterState,
    liveness: &Liveness,
    leader_version: Revision,
    now_ms: u64,
    policy: &StartPolicy,
) -> Vec<KvWrite> {
    lead_judged(state, liveness, leader_version, now_ms, policy, &super::Measured::default())
}

/// [`lead`] with what the runtime measured (see [`super::reconcile_judged`]).
pub fn lead_judged(
    state: &ClusterState,
    liveness: &Liveness,
    leader_version: Revision,
    now_ms: u64,
    policy: &StartPolicy,
    measured: &super::Measured,
) -> Vec<KvWrite> {
    let writes = super::reconcile_judged(state, liveness, now_ms, policy, measured);
    writes.into_iter().map(|write| write.guarded(AetherKey::ClusterLeader, Some(leader_version))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint;
    use crate::lifecycle::SliceState;
    use crate::records::{BlueprintRecord, LeaseRecord, SliceRecord};
    use kvstore::{ApplyResult, Command, KvState};

    fn n(i: usize) -> NodeId {
        NodeId::parse(&format!("n{i}")).unwrap()
    }

    fn put(kv: &mut KvState, key: &str, value: Vec<u8>) {
        kv.apply_command(Command::Put { key: key.parse().unwrap(), value }, &mut |_| {});
    }

    /// One renewal of `node`'s lease, as the node writes it.
    fn renew(kv: &mut KvState, node: usize) {
        let key: AetherKey = format!("nodes/n{node}/lease").parse().unwrap();
        let counter = kv.get(&key).and_then(|e| LeaseRecord::decode(e.value()).ok()).map_or(0, |l| l.counter);
        put(kv, &key.to_string(), LeaseRecord { counter: counter + 1 }.encode());
    }

    fn deployed(kv: &mut KvState) {
        let toml = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 2\n".to_owned();
        let parsed = blueprint::parse(&toml, &|_| true).unwrap();
        put(kv, "blueprints/s", BlueprintRecord { toml, blueprint: parsed }.encode());
        for node in [1, 2] {
            let record =
                SliceRecord { state: SliceState::Active, ..SliceRecord::placed(node - 1, Default::default(), 0) };
            put(kv, &format!("slices/n{node}/g:a:1.0.0"), record.encode());
        }
    }

    fn view(kv: &KvState) -> ClusterState {
        ClusterState::from_entries(kv.list(""))
    }

    fn apply(kv: &mut KvState, write: &KvWrite) -> ApplyResult {
        kv.apply_command(write.to_command(), &mut |_| {})
    }

    fn claim_as(kv: &mut KvState, node: usize) {
        put(kv, "nodes/leader", LeaderRecord { node: n(node) }.encode());
    }

    fn leader_version(kv: &KvState) -> Revision {
        kv.get(&AetherKey::ClusterLeader).unwrap().version()
    }

    #[test]
    fn a_silent_node_is_dead_only_after_the_grace_period_and_a_renewal_revives_it() {
        let mut kv = KvState::new();
        let mut watch = LeaseWatch::new(n(2), GRACE_MS_DEFAULT);
        renew(&mut kv, 1);
        for second in 0..=5 {
            renew(&mut kv, 2);
            let liveness = watch.observe(&view(&kv), second * 1_000);
            let expect_dead = second * 1_000 >= GRACE_MS_DEFAULT;
            assert_eq!(liveness.dead.contains_key(&n(1)), expect_dead, "at {second} s: {liveness:?}");
            assert_eq!(liveness.live.contains(&n(1)), second * 1_000 < FRESH_MS, "at {second} s: {liveness:?}");
            assert!(liveness.live.contains(&n(2)));
        }
        renew(&mut kv, 1);
        let liveness = watch.observe(&view(&kv), 5_100);
        assert!(liveness.live.contains(&n(1)) && liveness.dead.is_empty(), "{liveness:?}");
    }

    #[test]
    fn a_stall_of_consensus_itself_judges_nobody_dead() {
        let mut kv = KvState::new();
        let mut watch = LeaseWatch::new(n(2), GRACE_MS_DEFAULT);
        renew(&mut kv, 1);
        renew(&mut kv, 2);
        watch.observe(&view(&kv), 0);
        // Nothing is decided for a long time: this node's own lease stands still too.
        let liveness = watch.observe(&view(&kv), 60_000);
        assert!(liveness.dead.is_empty(), "{liveness:?}");
        // Consensus resumes: one own renewal is not yet evidence that n1 had its chance.
        renew(&mut kv, 2);
        assert!(watch.observe(&view(&kv), 60_100).dead.is_empty());
    }

    #[test]
    fn removing_a_dead_nodes_record_is_conditional_on_its_lease() {
        let mut kv = KvState::new();
        deployed(&mut kv);
        renew(&mut kv, 1);
        let mut watch = LeaseWatch::new(n(2), GRACE_MS_DEFAULT);
        let mut liveness = Liveness::default();
        for second in 0..=5 {
            renew(&mut kv, 2);
            renew(&mut kv, 3);
            liveness = watch.observe(&view(&kv), second * 1_000);
        }
        assert!(liveness.dead.contains_key(&n(1)), "{liveness:?}");
        let writes = super::super::reconcile(&view(&kv), &liveness, 0);
        let removal = writes.iter().find(|w| w.key().to_string() == "slices/n1/g:a:1.0.0").unwrap();
        assert!(matches!(removal, KvWrite::Guarded { .. }), "{removal}");
        // The removal is decided only after n1 renewed again (a late decision): it must fail.
        let mut late = kv.clone();
        renew(&mut late, 1);
        assert!(matches!(apply(&mut late, removal), ApplyResult::VersionMismatch { .. }));
        assert!(late.get(&"slices/n1/g:a:1.0.0".parse().unwrap()).is_some());
        // n1 really is gone: the removal applies.
        assert!(matches!(apply(&mut kv, removal), ApplyResult::Ok { .. }));
    }

    #[test]
    fn of_two_would_be_leaders_only_the_recorded_one_acts() {
        let mut kv = KvState::new();
        deployed(&mut kv);
        for node in [1, 2, 3] {
            renew(&mut kv, node);
        }
        claim_as(&mut kv, 1);
        let state = view(&kv);
        let all = Liveness::all_live([n(1), n(2), n(3)]);
        assert_eq!(leadership(&n(1), &state, &all), Leadership::Lead { version: leader_version(&kv) });
        // n2 cannot hear n1 but n1 still renews through n3: n2 never sees n1 dead, so it follows.
        assert_eq!(leadership(&n(2), &state, &Liveness::all_live([n(2), n(3)])), Leadership::Follow);
        // Even a claim computed on a wrong judgement of n1 fails while n1's lease moves on.
        let mut wrong = Liveness::all_live([n(2), n(3)]);
        wrong.dead.insert(n(1), Some(kv.get(&"nodes/n1/lease".parse().unwrap()).unwrap().version()));
        let Leadership::Claim(claim) = leadership(&n(2), &state, &wrong) else { panic!("n2 should claim") };
        renew(&mut kv, 1);
        assert!(matches!(apply(&mut kv, &claim), ApplyResult::VersionMismatch { .. }));
        // n1 stops renewing and n2's claim applies: n1's writes computed before are refused afterwards.
        let stale = lead(&view(&kv), &all, leader_version(&kv), 0, &StartPolicy::default());
        let retire = KvWrite::Remove { key: "targets/g:a:1.0.0".parse().unwrap(), expected: Revision(1) };
        let stale_retire = retire.guarded(AetherKey::ClusterLeader, Some(leader_version(&kv)));
        wrong.dead.insert(n(1), Some(kv.get(&"nodes/n1/lease".parse().unwrap()).unwrap().version()));
        let Leadership::Claim(claim) = leadership(&n(2), &view(&kv), &wrong) else { panic!("n2 should claim") };
        assert!(matches!(apply(&mut kv, &claim), ApplyResult::Ok { .. }));
        assert_eq!(leadership(&n(2), &view(&kv), &wrong), Leadership::Lead { version: leader_version(&kv) });
        for write in stale.iter().chain([&stale_retire]) {
            assert!(matches!(apply(&mut kv, write), ApplyResult::VersionMismatch { .. }), "{write}");
        }
    }

    #[test]
    fn a_restarted_leader_reclaims_before_it_leads_so_its_earlier_lifes_writes_fail() {
        let mut kv = KvState::new();
        deployed(&mut kv);
        for node in [1, 2, 3] {
            renew(&mut kv, node);
        }
        claim_as(&mut kv, 1);
        let all = Liveness::all_live([n(1), n(2), n(3)]);
        // n1's earlier life computed a placement guarded on the record naming it; it is still queued.
        let found = leader_version(&kv);
        let place = KvWrite::Set { key: "slices/n3/g:a:1.0.0".parse().unwrap(), expected: None, value: Vec::new() };
        let queued = place.guarded(AetherKey::ClusterLeader, Some(found));
        // The new life does not lead at the version it found: it claims over it.
        let mut tenure = Tenure::default();
        let Leadership::Claim(reclaim) = tenure.leadership(&n(1), &view(&kv), &all) else { panic!("should re-claim") };
        // Until the re-claim is decided the record has not moved: still no leading at that version.
        assert!(matches!(tenure.leadership(&n(1), &view(&kv), &all), Leadership::Claim(_)));
        assert!(matches!(apply(&mut kv, &reclaim), ApplyResult::Ok { .. }));
        assert_eq!(tenure.leadership(&n(1), &view(&kv), &all), Leadership::Lead { version: leader_version(&kv) });
        assert_ne!(leader_version(&kv), found);
        // The earlier life's write, decided late, fails its guard.
        assert!(matches!(apply(&mut kv, &queued), ApplyResult::VersionMismatch { .. }));
        // A life that claimed an absent record leads at once at the version its claim made.
        let mut fresh = KvState::new();
        let mut tenure = Tenure::default();
        let Leadership::Claim(claim) = tenure.leadership(&n(1), &view(&fresh), &all) else { panic!("should claim") };
        assert!(matches!(apply(&mut fresh, &claim), ApplyResult::Ok { .. }));
        assert_eq!(tenure.leadership(&n(1), &view(&fresh), &all), Leadership::Lead { version: leader_version(&fresh) });
        // Other nodes are unaffected: they follow.
        assert_eq!(Tenure::default().leadership(&n(2), &view(&kv), &all), Leadership::Follow);
    }

    #[test]
    fn without_a_leader_record_only_the_smallest_live_node_claims() {
        let kv = KvState::new();
        let live = Liveness::all_live([n(1), n(2)]);
        assert!(matches!(leadership(&n(1), &view(&kv), &live), Leadership::Claim(KvWrite::Set { expected: None, .. })));
        assert_eq!(leadership(&n(2), &view(&kv), &live), Leadership::Follow);
    }
}
