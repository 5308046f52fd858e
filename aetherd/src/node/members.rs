//! Membership on the event loop: the roster this node follows, the transport peers and replica mapping that
//! come from it, the changes operators ask for (`/api/members`), the leader's promotion of learners that
//! caught up, and the roster answer a joining node asks for (`Members` frames).
//!
//! The roster's home is the `nodes/members` record, written only here and only inside consensus
//! reconfigurations (`Replication::submit_reconfigure`), which the core applies only while its membership is
//! the one this node read, and drops from the decision otherwise (409). A learner change is a reconfiguration
//! to the same voters carrying a write conditional on the record's version; a voter change (promotion,
//! removal) carries an unconditional write of the new roster. So the record's voters are the core's after
//! every slot, whatever races: two voter changes from one view cannot both apply, and a learner change
//! either applies alone or is refused. The one loss: a learner change decided between a node's read and its
//! voter change is overwritten by it (the operator sees it missing in `member list` and repeats it).
//!
//! Invariants:
//! - `peer_names[p]` names transport peer `p` for every `p` the transport has (retired ones included), and
//!   `replica_of_peer`/`peer_of_replica` map only peers of the current roster;
//! - the roster this node adopted is on disk (`members.json`) before the node acts on it, so a restart
//!   comes back with the membership it last followed;
//! - a node the roster no longer lists retires every peer: it takes no further part.

use super::Node;
use crate::replication::Replication;
use crate::roster::{Roster, RosterFile};
use control::KvWrite;
use kvstore::{AetherKey, Revision};
use log::{error, info, warn};
use mgmt::ApiError;
use net::{Ctx, FrameKind, PeerId, PeerSpec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A learner within this many slots of the leader is caught up enough to vote.
const PROMOTE_WITHIN_SLOTS: u64 = 8;
/// A promotion not settled after this long may be tried again.
const PROMOTE_RETRY: Duration = Duration::from_secs(5);
/// A removed node keeps its connections this long, serving catch-up to members behind the removal.
const REMOVED_GRACE: Duration = Duration::from_secs(10);

/// A promotion in flight: the learner, when it was submitted, and where its answer arrives.
type Promotion = (String, Instant, mpsc::Receiver<Result<u64, ApiError>>);

/// What `/api/members` asks of the loop.
pub enum MembersRequest {
    List(mpsc::Sender<Result<Value, ApiError>>),
    Add { id: String, address: std::net::SocketAddr, reply: crate::replication::WriteReply },
    Remove { id: String, reply: crate::replication::WriteReply },
}

/// The roster side of the node.
pub struct MemberState {
    pub roster: Roster,
    /// The seed members of the cluster (`members.json`'s genesis).
    pub genesis: Vec<String>,
    /// The `nodes/members` version the roster came from (`None`: the record does not exist yet).
    pub record_version: Option<u64>,
    /// A promotion in flight: the learner, when it was submitted and its answer.
    promoting: Option<Promotion>,
    /// This node is no longer listed: since when (it keeps its peers a while, so the slot that removed it
    /// can still be served to members that have not decided it).
    pub removed: Option<Instant>,
    /// Its peers are retired (the removal's grace period is over).
    retired_all: bool,
    /// Peers no longer in the roster, and since when: retired after the grace period.
    leaving: Vec<(PeerId, Instant)>,
    /// The roster changed since it was last saved to `members.json`.
    unsaved: bool,
    /// Each learner's reported slot when this node first saw it as a learner: a learner is promoted only
    /// once it has reported progress since (a reused replica id may carry a removed member's last report).
    learner_baseline: HashMap<String, Option<u64>>,
}

impl MemberState {
    pub fn new(file: RosterFile) -> MemberState {
        MemberState {
            roster: file.roster,
            genesis: file.genesis,
            record_version: None,
            promoting: None,
            removed: None,
            retired_all: false,
            leaving: Vec::new(),
            unsaved: false,
            learner_baseline: HashMap::new(),
        }
    }

    fn file(&self) -> RosterFile {
        RosterFile { genesis: self.genesis.clone(), roster: self.roster.clone() }
    }
}

impl Node {
    /// Follows the applied `nodes/members` record: adopts a roster that differs from the one in use.
    pub(super) fn follow_roster(&mut self, ctx: &mut Ctx<'_>) {
        let Some(r) = self.replication.as_ref() else { return };
        let entry = r.store().get(&AetherKey::ClusterMembers);
        let version = entry.map(|e| e.version().0);
        if version == self.members.record_version {
            return;
        }
        self.members.record_version = version;
        let Some(entry) = entry else { return };
        match Roster::from_json(entry.value()) {
            Ok(roster) if roster != self.members.roster => self.adopt_roster(ctx, roster),
            Ok(_) => {}
            Err(e) => error!("the nodes/members record does not read ({e}); keeping the members in use"),
        }
    }

    /// Makes `roster` the one in use: saves it, then adds, moves and retires transport peers and rebuilds
    /// the replica mapping and the failure detector's voters.
    fn adopt_roster(&mut self, ctx: &mut Ctx<'_>, roster: Roster) {
        let me = self.config.node_id.clone();
        let described: Vec<String> =
            roster.members.iter().map(|m| format!("{}#{} {:?}", m.id, m.replica, m.role).to_lowercase()).collect();
        info!("members now: {}", described.join(", "));
        self.members.roster = roster;
        // Saved once caught up (`members_tick`): a node replaying history must not save a roster from the
        // past, such as one from before it was added, as the one to start from.
        self.members.unsaved = true;
        let mine = self.members.roster.get(&me).map(|m| m.replica);
        let runs_as = self.replication.as_ref().map(|r| r.me().0);
        if let (Some(listed), Some(runs_as)) = (mine, runs_as) {
            if listed != runs_as {
                error!(
                    "replication stopped: the cluster lists this node as replica {listed}, but it runs as replica \
                     {runs_as}: its data directory did not come from this cluster's members. Stop it, wipe the data \
                     directory and start it with `join = true`"
                );
                if let Some(mut r) = self.replication.take() {
                    r.fail_all("this node's replica id is not the cluster's; see its log");
                }
                return;
            }
        }
        let listed = mine.is_some();
        for member in self.members.roster.members.clone() {
            if member.id == me || !listed {
                continue;
            }
            let Some(pid) = ctx.add_peer(PeerSpec { id: member.id.clone(), addr: member.address }) else { continue };
            if pid >= self.peer_names.len() {
                self.peer_names.resize(pid + 1, String::new());
                self.replica_of_peer.resize(pid + 1, None);
            }
            self.peer_names[pid] = member.id.clone();
        }
        for pid in 0..self.peer_names.len() {
            let member = self.members.roster.get(&self.peer_names[pid]);
            if listed {
                match member {
                    Some(m) => {
                        self.replica_of_peer[pid] = Some(consensus::ReplicaId(m.replica));
                        self.members.leaving.retain(|(p, _)| *p != pid);
                    }
                    // A member that left keeps its connection (and its replica id, for catch-up only: it votes
                    // nowhere any more) for a grace period, so it can still learn the slot that removed it.
                    None if !ctx.is_retired(pid) && !self.members.leaving.iter().any(|(p, _)| *p == pid) => {
                        self.members.leaving.push((pid, Instant::now()));
                    }
                    None => {}
                }
            }
        }
        // A leaving peer's replica id given to a new member already belongs to the newcomer.
        for (pid, _) in &self.members.leaving {
            let taken = self.replica_of_peer[*pid].is_some_and(|r| self.members.roster.by_replica(r.0).is_some());
            if taken {
                self.replica_of_peer[*pid] = None;
            }
        }
        self.peer_of_replica = vec![None; consensus::MEMBERS_MAX];
        for (pid, replica) in self.replica_of_peer.iter().enumerate() {
            if let Some(r) = replica {
                self.peer_of_replica[r.index()] = Some(pid);
            }
        }
        let voters: Vec<String> = self.members.roster.voters().map(|m| m.id.clone()).collect();
        self.membership.set_nodes(&voters);
        self.ops.nodes = self.members.roster.members.iter().map(|m| m.id.clone()).collect();
        let learners: Vec<(String, u8)> = self.members.roster.learners().map(|m| (m.id.clone(), m.replica)).collect();
        self.members.learner_baseline.retain(|id, _| learners.iter().any(|(l, _)| l == id));
        for (id, replica) in learners {
            let reported = self.replication.as_ref().and_then(|r| r.peer_progress(consensus::ReplicaId(replica)));
            self.members.learner_baseline.entry(id).or_insert(reported);
        }
        self.members_tick(ctx);
    }

    /// Saves the roster once caught up, and judges removal only then: a node catching up replays rosters
    /// of the past, which may not list it (a node added again after a removal replays that removal).
    fn members_tick(&mut self, _ctx: &mut Ctx<'_>) {
        if !self.replication.as_ref().is_some_and(Replication::caught_up) {
            return;
        }
        if std::mem::take(&mut self.members.unsaved) {
            if let Err(e) = crate::roster::save(&self.config.data_dir, &self.members.file()) {
                // The log holds the record too: a restart replays it. Say so and go on.
                warn!("cannot save the members ({e}); a restart reads them from the consensus log");
            }
        }
        let listed = self.members.roster.get(&self.config.node_id).is_some();
        if !listed && self.members.removed.is_none() {
            self.members.removed = Some(Instant::now());
            error!(
                "this node was removed from the cluster: it takes no further part (it keeps its connections for \
                 {} s to serve members still behind). Stop it, and wipe its data directory before it joins again",
                REMOVED_GRACE.as_secs()
            );
        }
    }

    /// Peers that left the roster, and all peers of a removed node, are retired once the grace period is over.
    pub(super) fn finish_removal(&mut self, ctx: &mut Ctx<'_>) {
        self.members_tick(ctx);
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.members.leaving.iter().partition(|(_, since)| since.elapsed() >= REMOVED_GRACE);
        self.members.leaving = waiting;
        for (pid, _) in due {
            if self.members.roster.get(&self.peer_names[pid]).is_none() {
                ctx.retire_peer(pid);
                if let Some(replica) = self.replica_of_peer[pid].take() {
                    if self.peer_of_replica[replica.index()] == Some(pid) {
                        self.peer_of_replica[replica.index()] = None;
                    }
                }
            }
        }
        let Some(since) = self.members.removed else { return };
        if self.members.retired_all || since.elapsed() < REMOVED_GRACE {
            return;
        }
        self.members.retired_all = true;
        for pid in 0..self.peer_names.len() {
            ctx.retire_peer(pid);
            self.replica_of_peer[pid] = None;
        }
        self.peer_of_replica = vec![None; consensus::MEMBERS_MAX];
    }

    /// Answers a `Members` frame: an empty one asks for the roster (a joining node); answers are ignored.
    pub(super) fn receive_members(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, payload: &[u8]) {
        if !payload.is_empty() || self.members.removed.is_some() {
            return;
        }
        let answer = serde_json::to_vec(&self.members.file()).unwrap_or_default();
        if let Err(e) = ctx.send(peer, FrameKind::Members, &answer) {
            warn!("cannot send the roster to {}: {e}", ctx.peer_id(peer).unwrap_or("?"));
        }
    }

    pub(super) fn members_request(&mut self, ctx: &mut Ctx<'_>, request: MembersRequest) {
        match request {
            MembersRequest::List(reply) => drop(reply.send(Ok(self.members_view()))),
            MembersRequest::Add { id, address, reply } => match self.members.roster.with_learner(&id, address) {
                Ok(roster) => self.write_roster(ctx, &roster, None, reply),
                Err(e) => drop(reply.send(Err(ApiError::new(409, "conflict", e)))),
            },
            MembersRequest::Remove { id, reply } => {
                let Some(member) = self.members.roster.get(&id).cloned() else {
                    return drop(reply.send(Err(ApiError::not_found(format!("{id} is not a member")))));
                };
                let roster = match self.members.roster.without(&id) {
                    Ok(roster) => roster,
                    Err(e) => return drop(reply.send(Err(ApiError::new(409, "conflict", e)))),
                };
                let change = (member.role == crate::roster::Role::Voter).then_some(member.replica);
                self.write_roster(ctx, &roster, change.map(|r| (r, false)), reply);
            }
        }
    }

    /// Writes `roster` conditional on the record version in use; with `change = (replica, add)`, as a
    /// reconfiguration that adds or removes that voter in the same slot.
    fn write_roster(
        &mut self,
        ctx: &mut Ctx<'_>,
        roster: &Roster,
        change: Option<(u8, bool)>,
        reply: crate::replication::WriteReply,
    ) {
        if let Some(e) = self.unavailable_without_quorum() {
            return drop(reply.send(Err(e)));
        }
        let Some(r) = self.replication.as_ref() else { return };
        if !r.caught_up() {
            return drop(reply.send(Err(ApiError::unavailable("this node is catching up; ask another member"))));
        }
        let members = r.members();
        if members.bits() != self.members.roster.voter_bits() {
            let e = "a membership change is being applied; retry in a moment";
            return drop(reply.send(Err(ApiError::new(409, "membership_changing", e))));
        }
        let value = roster.to_json();
        let (next, command) = match change {
            // A learner change leaves the voters alone: a reconfiguration to the same members (refused if the
            // voters changed meanwhile) carrying a write conditional on the record's version (refused if any
            // roster write got in first). Neither outcome can split the record's voters from the core's.
            None => {
                let expected = self.members.record_version.map(Revision);
                (members, KvWrite::Set { key: AetherKey::ClusterMembers, expected, value }.to_command())
            }
            // A voter change writes the record unconditionally inside a reconfiguration: the core applies both
            // or neither, so the record's voters always are the core's. (A learner change decided between this
            // node's read and this write is overwritten: the operator sees it gone and adds it again.)
            Some((replica, add)) => {
                let id = consensus::ReplicaId(replica);
                let next = if add { members.with(id) } else { members.without(id) };
                (next, kvstore::Command::Put { key: AetherKey::ClusterMembers, value })
            }
        };
        self.drive(ctx, |r| r.submit_reconfigure(members, next, &command, reply));
    }

    /// On the leader: makes the first learner that has caught up a voter.
    pub(super) fn promote_learners(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((id, at, rx)) = &self.members.promoting {
            match rx.try_recv() {
                Ok(Ok(_)) => info!("{id} is a voting member now"),
                Ok(Err(e)) => warn!("promoting {id} failed: {}; trying again", e.detail),
                Err(mpsc::TryRecvError::Empty) if at.elapsed() < PROMOTE_RETRY => return,
                Err(_) => {}
            }
            self.members.promoting = None;
        }
        let leads = self.deployment.as_ref().and_then(|d| d.leader.leader()) == Some(self.config.node_id.as_str());
        let Some(r) = self.replication.as_ref() else { return };
        if !leads || !r.caught_up() || !self.membership.has_quorum() {
            return;
        }
        let mine = r.next_slot();
        let baseline = &self.members.learner_baseline;
        let ready = self.members.roster.learners().find(|m| {
            let progress = r.peer_progress(consensus::ReplicaId(m.replica));
            let moved = baseline.get(&m.id).is_none_or(|at_add| *at_add != progress);
            moved && progress.is_some_and(|p| p + PROMOTE_WITHIN_SLOTS >= mine)
        });
        let Some(learner) = ready.cloned() else { return };
        let Ok(roster) = self.members.roster.promoted(&learner.id) else { return };
        info!("{} has caught up (slot {mine}): making it a voter", learner.id);
        let (tx, rx) = mpsc::channel();
        self.write_roster(ctx, &roster, Some((learner.replica, true)), tx.into());
        self.members.promoting = Some((learner.id, Instant::now(), rx));
    }

    /// `GET /api/members`.
    pub(super) fn members_view(&self) -> Value {
        let r = self.replication.as_ref();
        let members: Vec<Value> = self
            .members
            .roster
            .members
            .iter()
            .map(|m| {
                let progress = r.and_then(|r| r.peer_progress(consensus::ReplicaId(m.replica)));
                let next_slot = if m.id == self.config.node_id { r.map(|r| r.next_slot()) } else { progress };
                json!({
                    "id": m.id,
                    "replica": m.replica,
                    "address": m.address.to_string(),
                    "role": m.role,
                    "next_slot": next_slot,
                })
            })
            .collect();
        json!({ "members": members, "applied_slot": r.and_then(|r| r.applied_slot()) })
    }
}
