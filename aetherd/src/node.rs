//! The node's event loop handler (the management backend that talks to it is in `backend`).
//!
//! The loop owns all protocol state (membership, the replicated store); management threads only send it
//! commands and wait for the reply with a timeout, so a stuck loop shows up as a 504, never as a hung API.

use crate::app::ForwardedCalls;
use crate::config::NodeConfig;
use crate::deploy::{Deployer, JobDone};
use crate::forward::Calls;
use crate::managers;
use crate::membership::{Membership, MembershipEvent, PeerObservation};
use crate::replication::{Effect, Replication, Waiter};
use invoke::{InvokeReply, Registry};
use log::{error, info, warn};
use mgmt::{ApiError, ClusterView, KvEntry, MemberView, NodeStatus, PeerView};
use net::{Ctx, Frame, FrameKind, Handler, NetHandle, PeerId};
use parking_lot::RwLock;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod consensus_send;
mod dht;
mod duty;
mod events;
mod members;
mod messaging;
mod metrics;
mod peer_data;
mod rollout_health;
mod scaling_load;
mod schedules;
mod single_active;
mod slice_kv;
mod versions;

pub use dht::{DhtOp, DhtRequest, NodeStore, StoragePlane};
pub use members::MembersRequest;
pub use schedules::ScheduledCalls;

/// How long a management thread waits for the loop to answer a query.
pub(crate) const LOOP_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(50);
const TOKEN_TICK: u64 = 1;
const TOKEN_CONSENSUS: u64 = 16;

pub enum Command {
    ClusterView(mpsc::Sender<ClusterView>),
    Status(mpsc::Sender<NodeStatus>),
    KvWrite(kvstore::Command, crate::replication::WriteReply),
    /// A write under the client's own request id (`Idempotency-Key`).
    KvWriteOnce(kvstore::Command, mgmt::RequestKey, crate::replication::WriteReply),
    KvGet {
        key: kvstore::AetherKey,
        stale: bool,
        reply: mpsc::Sender<Result<Option<KvEntry>, ApiError>>,
    },
    KvList {
        prefix: String,
        stale: bool,
        reply: mpsc::Sender<Result<Vec<KvEntry>, ApiError>>,
    },
    /// One page of a listing (`GET /api/kv`), cut where the store holds the entries.
    KvPage {
        page: mgmt::KvPage,
        stale: bool,
        reply: mpsc::Sender<Result<(Vec<KvEntry>, bool), ApiError>>,
    },
    /// The whole store after a read barrier, and the slot it was taken at (`POST /api/backup`).
    Backup(mpsc::Sender<Result<(u64, kvstore::KvState), ApiError>>),
    /// The deployer finished a container job.
    DeployDone(JobDone),
    /// Send a forwarded call (already registered in the calls table under `id`) to `node`.
    SendInvoke {
        node: String,
        id: u64,
        payload: Vec<u8>,
    },
    /// Send the answer to call `id` that `peer` forwarded to us.
    SendReply {
        peer: PeerId,
        id: u64,
        payload: Vec<u8>,
    },
    /// A slice's state operation (`ctx.kv()`), resolved against the calling artifact's scope here.
    SliceKv(crate::slice_state::SliceRequest),
    /// A storage-plane key operation (`blobs::Blobs`).
    Dht(DhtRequest),
    /// The storage plane's figures (`None`: it is not running on this node).
    DhtStats(mpsc::Sender<Option<mgmt::DhtView>>),
    /// Publishes, delivery outcomes and the topic view (`messaging`).
    Messaging(crate::messaging::MessagingRequest),
    /// The cluster's members: list, add a learner, remove (`/api/members`).
    Members(MembersRequest),
}

/// The data plane as the loop sees it: where to deliver replies, who serves forwarded calls, and the
/// route and endpoint registry the app port reads.
pub struct DataPlane {
    pub calls: Arc<Calls>,
    pub forwarded: Arc<OnceLock<ForwardedCalls>>,
    pub registry: Arc<RwLock<Registry>>,
    pub handle: Arc<OnceLock<NetHandle<Command>>>,
    /// This node's metrics and the board of every node's.
    pub metrics: Arc<crate::metrics::Telemetry>,
    /// The cluster event log this node records into and serves.
    pub events: Arc<crate::events::EventLog>,
    /// The live settings this node applies from the store.
    pub settings: Arc<crate::live::LiveSettings>,
    /// The slice watches, fed from the store's `data/` changes.
    pub slice_watches: Arc<crate::slice_state::WatchHub>,
    /// Where scheduled runs are called (set once the app port runs).
    pub scheduled_calls: ScheduledCalls,
    /// The drain before a stop: asked for by the main thread, carried out and reported by the loop.
    pub drain_on_stop: Arc<crate::stop::DrainOnStop>,
}

/// Deployment state of the loop: the deployer, the watches that wake the managers, and what is due.
struct Deployment {
    deployer: Deployer,
    me: kvstore::NodeId,
    watches: Vec<kvstore::WatchId>,
    reconcile_due: bool,
    step_due: bool,
    step_deadline_ms: Option<u64>,
    forced_at: Instant,
    running: bool,
    /// Lease renewals and leadership.
    leader: managers::Leader,
    /// Whether the next manager run looks at the lease renewal even without other writes: set by every
    /// tick, so a renewal due (about once a second) goes out within a tick, while the runs after every
    /// message and submit in between skip the clock and the store.
    renewal_check_due: bool,
    /// The leases of this node's single-active slices.
    single_active: single_active::SingleActive,
    /// This node's lifecycle record as the loop last saw it.
    duty: duty::DutyWatch,
    /// Shifting rollouts' figures, read while this node leads.
    rollout_health: rollout_health::RolloutHealth,
    /// Autoscaled slices' load, read while this node leads.
    scaling_load: scaling_load::ScalingLoad,
}

pub struct Node {
    config: NodeConfig,
    membership: Membership,
    replication: Option<Replication>,
    /// Replica id -> transport peer (None for this node and for ids no member holds).
    peer_of_replica: Vec<Option<PeerId>>,
    /// Transport peer -> replica id (None for retired peers).
    replica_of_peer: Vec<Option<consensus::ReplicaId>>,
    /// The roster this node follows (`members`).
    members: members::MemberState,
    /// Latest deadline armed per consensus timer kind, and its generation.
    timer_generation: [u64; 2],
    deployment: Option<Deployment>,
    data: DataPlane,
    /// Transport peer index -> node id.
    peer_names: Vec<String>,
    systemd: crate::systemd::Notifier,
    /// Consensus messages the transport refused to queue.
    refusals: crate::send_refusals::SendRefusals,
    /// Commands forwarded to each peer lately, so a repeat within the window is not queued again.
    forwarded: consensus_send::ForwardWindow,
    /// Metrics summaries sent and refused.
    gossip: metrics::Gossip,
    /// The event log's and live settings' side of the loop.
    ops: events::Ops,
    /// The store watch on `data/` that feeds `data.slice_watches`.
    slice_watch: Option<kvstore::WatchId>,
    /// This node's storage-plane replica (`dht`), once installed.
    storage: Option<StoragePlane>,
    /// Scheduled tasks: spec writes, the leader's runs, calls and outcomes.
    schedules: schedules::Scheduler,
    /// Pub-sub's side of the loop, once turned on (`with_messaging`).
    messaging: Option<messaging::Messaging>,
}

impl Node {
    pub fn new(
        config: NodeConfig,
        roster: crate::roster::RosterFile,
        mut replication: Replication,
        suspicion: Duration,
        deployer: Option<Deployer>,
        data: DataPlane,
    ) -> Node {
        // Transport peers are the roster's members other than this node, in roster order (`net_config`).
        let others: Vec<&crate::roster::Member> =
            roster.roster.members.iter().filter(|m| m.id != config.node_id).collect();
        let mut peer_of_replica = vec![None; consensus::MEMBERS_MAX];
        for (pid, m) in others.iter().enumerate() {
            peer_of_replica[usize::from(m.replica)] = Some(pid);
        }
        let replica_of_peer = others.iter().map(|m| Some(consensus::ReplicaId(m.replica))).collect();
        let peer_names = others.iter().map(|m| m.id.clone()).collect();
        let ids: Vec<String> = roster.roster.members.iter().map(|m| m.id.clone()).collect();
        let voters: Vec<String> = roster.roster.voters().map(|m| m.id.clone()).collect();
        let membership = Membership::new(&config.node_id, &voters, suspicion);
        let deployment = match (deployer, kvstore::NodeId::parse(&config.node_id)) {
            (Some(deployer), Ok(me)) => Some(Deployment {
                deployer,
                leader: managers::Leader::new(me.clone(), config.lease_grace),
                single_active: single_active::SingleActive::new(me.as_str()),
                me,
                watches: managers::watch(replication.store_mut()),
                reconcile_due: true,
                step_due: true,
                step_deadline_ms: None,
                forced_at: Instant::now(),
                running: false,
                renewal_check_due: true,
                duty: duty::DutyWatch::default(),
                rollout_health: Default::default(),
                scaling_load: Default::default(),
            }),
            _ => None,
        };
        let ops = events::Ops::new(
            &config.node_id,
            ids.clone(),
            Arc::clone(&data.events),
            Arc::clone(&data.settings),
            replication.store_mut(),
        );
        let slice_watch = Node::watch_slice_data(replication.store_mut());
        let relisted = relist(&data.registry, replication.store());
        log_registry_errors(relisted);
        let schedules = schedules::Scheduler::new(Arc::clone(&data.scheduled_calls));
        Node {
            schedules,
            data,
            ops,
            peer_names,
            refusals: crate::send_refusals::SendRefusals::default(),
            forwarded: consensus_send::ForwardWindow::default(),
            gossip: metrics::Gossip::default(),
            systemd: crate::systemd::Notifier::from_env(),
            config,
            membership,
            replication: Some(replication),
            peer_of_replica,
            replica_of_peer,
            members: members::MemberState::new(roster),
            timer_generation: [0; 2],
            deployment,
            slice_watch,
            storage: None,
            messaging: None,
        }
    }

    fn cluster_view(&self, ctx: &Ctx<'_>) -> ClusterView {
        let statuses = ctx.peers();
        let nodes = self
            .members
            .roster
            .voters()
            .map(|m| {
                let status = statuses.iter().find(|s| s.id == m.id);
                let is_self = m.id == self.config.node_id;
                PeerView {
                    id: m.id.clone(),
                    address: m.address.to_string(),
                    connected: is_self || status.is_some_and(|s| s.connected),
                    last_seen_ms: status.and_then(|s| s.last_seen_ago).map(|d| d.as_millis() as u64),
                    is_self,
                }
            })
            .collect();
        let caught_up = self.replication.as_ref().is_some_and(Replication::caught_up);
        // A removed node is in no quorum of its cluster any more, whatever it still hears.
        let quorum = self.membership.has_quorum() && self.members.removed.is_none();
        ClusterView { node: self.config.node_id.clone(), nodes, quorum, caught_up }
    }

    fn status(&self) -> NodeStatus {
        let members = self
            .members
            .roster
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id.clone(),
                address: m.address.to_string(),
                alive: m.id == self.config.node_id || self.membership.is_alive(&m.id),
            })
            .collect();
        let replication = self.replication.as_ref();
        NodeStatus {
            node: self.config.node_id.clone(),
            leader: self.deployment.as_ref().and_then(|d| d.leader.leader()).map(str::to_string),
            quorum: self.membership.has_quorum(),
            caught_up: replication.is_some_and(Replication::caught_up),
            members,
            applied_slot: replication.and_then(Replication::applied_slot),
            pending_commands: replication.map_or(0, Replication::pending_commands),
            consensus_sends_refused: self.refusals.total(),
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        ctx.set_timer(Instant::now() + TICK, TOKEN_TICK);
        let observations: Vec<PeerObservation> = ctx
            .peers()
            .into_iter()
            .map(|p| PeerObservation { id: p.id, connected: p.connected, last_seen_ago: p.last_seen_ago })
            .collect();
        let events = self.membership.observe(&observations);
        for event in &events {
            log_membership(event);
        }
        self.observe_membership(&events);
        self.follow_roster(ctx);
        self.promote_learners(ctx);
        self.finish_removal(ctx);
        if let Some(replication) = self.replication.as_mut() {
            replication.expire();
        }
        self.data.calls.expire();
        self.data.calls.log_counters(self.data.forwarded.get().map(ForwardedCalls::stats).as_ref());
        if self.membership.has_quorum() {
            self.drive(ctx, Replication::nudge_recovery);
        }
        self.publish_metrics(ctx);
        self.systemd.tick();
        if self.membership.has_quorum() && self.replication.as_ref().is_some_and(Replication::caught_up) {
            self.systemd.ready();
        }
        if !events.is_empty() {
            *self.data.calls.alive.write() = self.membership.alive_nodes().into_iter().collect();
        }
        if let Some(d) = self.deployment.as_mut() {
            let forced = d.forced_at.elapsed() >= Duration::from_secs(1);
            let deadline = d.step_deadline_ms.is_some_and(|at| managers::wall_ms() >= at);
            if forced {
                d.forced_at = Instant::now();
            }
            d.reconcile_due |= forced || !events.is_empty();
            d.step_due |= forced || deadline;
            d.renewal_check_due = true;
        }
        self.run_managers(ctx);
        self.tick_schedules(ctx);
        self.tick_single_active(ctx);
        self.tick_duty(ctx);
        self.observe_store_and_send(ctx);
        self.feed_slice_watches();
        self.tick_dht(ctx);
        self.tick_messaging(ctx);
    }

    /// Runs the deployment managers when something woke them and the node may act.
    fn run_managers(&mut self, ctx: &mut Ctx<'_>) {
        let Some(mut d) = self.deployment.take() else { return };
        if d.running {
            self.deployment = Some(d);
            return;
        }
        d.running = true;
        if let Some(r) = self.replication.as_mut() {
            let events = managers::drain(r.store_mut(), &d.watches);
            if !events.is_empty() {
                d.reconcile_due = true;
                d.step_due = true;
                feed_registry(&self.data.registry, r.store(), &events);
            }
        }
        let writes = self.manager_writes(&mut d);
        self.deployment = Some(d);
        for write in writes {
            let command = write.to_command();
            self.drive(ctx, |r| r.submit_internal(&command));
        }
        if let Some(d) = self.deployment.as_mut() {
            d.running = false;
        }
    }

    /// What the node manager and (on the leader) the cluster manager want written now.
    fn manager_writes(&mut self, d: &mut Deployment) -> Vec<control::KvWrite> {
        let Some(r) = self.replication.as_ref() else { return Vec::new() };
        if !self.membership.has_quorum() || !r.caught_up() {
            return Vec::new();
        }
        let mut writes = Vec::new();
        // The node step waits for this node's earlier writes as the leader does: a step that ran on a record
        // whose LOADING write is still undecided would read the container's verdict on the load (a failure)
        // as a leftover of an earlier record and unload it, hiding the reason.
        if d.step_due && r.internal_in_flight() == 0 {
            d.step_due = false;
            let output = managers::node_step(r.store(), &d.me, &mut d.deployer, managers::wall_ms());
            for action in output.actions {
                d.deployer.begin(action);
            }
            d.step_deadline_ms = output.next_deadline_ms;
            writes.extend(output.writes);
        }
        if d.reconcile_due && r.internal_in_flight() == 0 {
            d.reconcile_due = false;
            let policy = self.ops.settings.start_policy(d.deployer.policy());
            let now_ms = managers::wall_ms();
            if d.leader.leader() != Some(d.me.as_str()) {
                d.rollout_health.reset();
                d.scaling_load.reset();
            } else {
                let board = self.data.metrics.board();
                d.rollout_health.sample(board, r.store(), now_ms);
                d.scaling_load.sample(board, r.store(), now_ms);
                d.leader.measured = control::cluster::Measured {
                    health: d.rollout_health.figures(r.store()),
                    loads: d.scaling_load.loads().clone(),
                };
            }
            writes.extend(d.leader.writes(r.store(), now_ms, &policy));
            // A claim's decision wakes no watch: the next pass runs as soon as it is decided.
            d.reconcile_due = d.leader.claiming();
        }
        // The renewal first, so that this node's other writes never crowd its lease out of a full queue:
        // looked at on every tick, and whenever there are other writes.
        if std::mem::take(&mut d.renewal_check_due) || !writes.is_empty() {
            writes.splice(0..0, d.leader.renewal(r.store()));
        }
        writes
    }

    /// Runs `f` on the replication driver and carries out what it asks of the transport.
    fn drive(&mut self, ctx: &mut Ctx<'_>, f: impl FnOnce(&mut Replication) -> Result<Vec<Effect>, String>) {
        let Some(replication) = self.replication.as_mut() else { return };
        match f(replication) {
            Ok(effects) => {
                self.carry_out(ctx, effects);
                self.follow_roster(ctx);
                self.run_managers(ctx);
            }
            Err(e) => {
                // The state machine failed (a storage failure never gets here: it stops the process inside
                // the turn, before the transport writes this turn's frames; see `Storage::fail_stop`).
                error!("replication stopped: {e}");
                if let Some(mut r) = self.replication.take() {
                    r.fail_all(&format!("replication stopped on this node: {e}"));
                }
            }
        }
    }

    fn arm(&mut self, ctx: &mut Ctx<'_>, kind: consensus::TimerKind, at_ms: u64) {
        let Some(replication) = self.replication.as_ref() else { return };
        let index = timer_index(kind);
        self.timer_generation[index] += 1;
        let delay = Duration::from_millis(at_ms.saturating_sub(replication.now_ms()));
        let token = TOKEN_CONSENSUS + index as u64 + (self.timer_generation[index] << 8);
        ctx.set_timer(Instant::now() + delay, token);
    }

    fn on_consensus_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        let index = ((token - TOKEN_CONSENSUS) & 0xff) as usize;
        if index >= 2 || token >> 8 != self.timer_generation[index] {
            return;
        }
        let kind = if index == 0 { consensus::TimerKind::Retransmit } else { consensus::TimerKind::Propose };
        self.drive(ctx, |r| r.handle(consensus::Input::Timer(kind)));
    }

    fn unavailable_without_quorum(&self) -> Option<ApiError> {
        if self.replication.is_none() {
            return Some(ApiError::unavailable("replication is stopped on this node; see its log"));
        }
        if self.members.removed.is_some() {
            return Some(ApiError::unavailable("this node was removed from the cluster; ask a member"));
        }
        (!self.membership.has_quorum())
            .then(|| ApiError::unavailable("this node is not in a quorum; writes and reads are refused"))
    }
}

/// Re-reads routes and endpoints into the registry.
fn relist(registry: &RwLock<Registry>, store: &kvstore::Store) -> Vec<invoke::RegistryError> {
    let entries = store.list("routes/").chain(store.list("endpoints/"));
    registry.write().rebuild(entries.map(|e| (e.key(), e.value())))
}

fn log_registry_errors(errors: Vec<invoke::RegistryError>) {
    for e in errors {
        warn!("route registry: {e}");
    }
}

/// Applies watch events on `routes/` and `endpoints/` to the registry the app port reads.
fn feed_registry(registry: &RwLock<Registry>, store: &kvstore::Store, events: &[kvstore::WatchEvent]) {
    let data_key =
        |k: &kvstore::AetherKey| matches!(k, kvstore::AetherKey::Route { .. } | kvstore::AetherKey::Endpoint { .. });
    for event in events {
        let result = match event {
            kvstore::WatchEvent::Put { key, value, .. } if data_key(key) => registry.write().apply(key, Some(value)),
            kvstore::WatchEvent::Removed { key, .. } if data_key(key) => registry.write().apply(key, None),
            kvstore::WatchEvent::Resync { .. } => {
                log_registry_errors(relist(registry, store));
                continue;
            }
            _ => continue,
        };
        if let Err(e) = result {
            warn!("route registry: {e}");
        }
    }
}

fn timer_index(kind: consensus::TimerKind) -> usize {
    match kind {
        consensus::TimerKind::Retransmit => 0,
        consensus::TimerKind::Propose => 1,
    }
}

fn log_membership(event: &MembershipEvent) {
    match event {
        MembershipEvent::NodeUp(id) => info!("node {id} is alive"),
        MembershipEvent::NodeDown(id) => warn!("node {id} is suspected down"),
        MembershipEvent::QuorumGained => info!("quorum gained"),
        MembershipEvent::QuorumLost => warn!("quorum lost: writes are refused until it is back"),
    }
}

impl Handler for Node {
    type Command = Command;

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.set_timer(Instant::now() + TICK, TOKEN_TICK);
        self.drive(ctx, Replication::start);
    }

    fn on_peer_up(&mut self, ctx: &mut Ctx<'_>, peer: PeerId) {
        self.forwarded.forget_peer(peer);
        self.send_event_history(ctx, peer);
        if let Some(&Some(from)) = self.replica_of_peer.get(peer) {
            // Frames in flight on the old connection are gone: resend this slot's messages to it.
            self.drive(ctx, |r| r.handle(consensus::Input::PeerConnected { peer: from }));
        }
    }

    fn on_peer_down(&mut self, _ctx: &mut Ctx<'_>, peer: PeerId) {
        if let Some(name) = self.peer_names.get(peer) {
            self.data.calls.peer_down(name);
        }
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        match frame.kind {
            FrameKind::Consensus => {}
            FrameKind::Invoke => return self.serve_invoke(ctx, peer, &frame.payload),
            FrameKind::Gossip => return self.receive_summary(ctx, peer, &frame.payload),
            FrameKind::Events => return self.receive_events(ctx, peer, &frame.payload),
            FrameKind::Dht => return self.receive_dht(ctx, peer, &frame.payload),
            FrameKind::Members => return self.receive_members(ctx, peer, &frame.payload),
            FrameKind::InvokeReply => {
                match InvokeReply::decode(&frame.payload) {
                    Ok(reply) => match self.peer_names.get(peer) {
                        Some(from) => self.data.calls.complete(from, reply),
                        None => warn!("dropping an invoke reply from an unknown peer"),
                    },
                    Err(e) => warn!("dropping an invoke reply from {}: {e}", ctx.peer_id(peer).unwrap_or("?")),
                }
                return;
            }
            _ => return,
        }
        let from = self.replica_of_peer.get(peer).copied().flatten();
        match (from, consensus::decode_message(&frame.payload)) {
            (Some(from), Ok(message)) => self.drive(ctx, |r| r.handle(consensus::Input::Message { from, message })),
            (_, Err(e)) => warn!("dropping a consensus frame from {}: {e}", ctx.peer_id(peer).unwrap_or("?")),
            (None, Ok(_)) => {}
        }
    }

    fn on_turn_end(&mut self, ctx: &mut Ctx<'_>) {
        // Deliveries and writes the turn's changes call for join this turn's batch.
        self.pump_messaging(ctx);
        // Ending the turn can wake the managers, whose writes join a new batch: end that too (bounded).
        for _ in 0..4 {
            self.drive(ctx, Replication::end_turn);
            if !self.replication.as_ref().is_some_and(Replication::has_batch) {
                break;
            }
        }
        self.feed_slice_watches();
        // Replies left with the turn's end: answer the publishes they settle, and submit what follows at once.
        self.pump_messaging(ctx);
        if self.replication.as_ref().is_some_and(Replication::has_batch) {
            self.drive(ctx, Replication::end_turn);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        if token == TOKEN_TICK {
            self.tick(ctx);
        } else if token >= TOKEN_CONSENSUS {
            self.on_consensus_timer(ctx, token);
        }
    }

    fn on_command(&mut self, ctx: &mut Ctx<'_>, command: Command) {
        match command {
            Command::ClusterView(reply) => drop(reply.send(self.cluster_view(ctx))),
            Command::Status(reply) => drop(reply.send(self.status())),
            Command::KvWrite(command, reply) => match self.unavailable_without_quorum() {
                Some(e) => drop(reply.send(Err(e))),
                None => self.drive(ctx, |r| r.submit_write(&command, reply)),
            },
            Command::KvWriteOnce(command, request, reply) => match self.unavailable_without_quorum() {
                Some(e) => drop(reply.send(Err(e))),
                None => self.drive(ctx, |r| r.submit_write_once(&command, request, reply)),
            },
            Command::KvGet { key, stale, reply } => self.read(ctx, stale, Waiter::Get(key, reply)),
            Command::KvList { prefix, stale, reply } => self.read(ctx, stale, Waiter::List(prefix, usize::MAX, reply)),
            Command::KvPage { page, stale, reply } => self.read(ctx, stale, Waiter::Page(page, reply)),
            Command::Backup(reply) => self.read(ctx, false, Waiter::Backup(reply)),
            Command::SendInvoke { node, id, payload } => self.send_invoke(ctx, &node, id, &payload),
            Command::SendReply { peer, id, payload } => self.send_reply(ctx, peer, id, &payload),
            Command::SliceKv(request) => self.slice_kv(ctx, request),
            Command::Dht(request) => self.dht_request(ctx, request),
            Command::DhtStats(reply) => drop(reply.send(self.dht_view())),
            Command::Messaging(request) => self.messaging_request(ctx, request),
            Command::Members(request) => self.members_request(ctx, request),
            Command::DeployDone(done) => {
                if let crate::deploy::JobResult::Reconfigured { outcome, .. } = &done.result {
                    self.record_reconfigured(&done.artifact, outcome);
                }
                if let Some(d) = self.deployment.as_mut() {
                    d.deployer.finish(done);
                    d.step_due = true;
                }
                self.run_managers(ctx);
            }
        }
    }
}

impl Node {
    fn read(&mut self, ctx: &mut Ctx<'_>, stale: bool, waiter: Waiter) {
        if stale {
            if let Some(r) = self.replication.as_ref() {
                r.read_now(waiter);
            }
            return;
        }
        if let Some(e) = self.unavailable_without_quorum() {
            match waiter {
                Waiter::Get(_, reply) => drop(reply.send(Err(e))),
                Waiter::List(_, _, reply) => drop(reply.send(Err(e))),
                Waiter::Page(_, reply) => drop(reply.send(Err(e))),
                Waiter::Write(reply) => drop(reply.send(Err(e))),
                Waiter::SliceWrite(reply) => drop(reply.send(Err(e))),
                Waiter::Backup(reply) => drop(reply.send(Err(e))),
                Waiter::Internal => {}
            }
            return;
        }
        self.drive(ctx, |r| r.submit_read(waiter));
    }

    /// Stops replication, then deployment: fails waiters, flushes and syncs the log and writes the clean-stop
    /// marker first (the loop has stopped, so nothing writes to the log any more), then stops and unloads the
    /// slices within [`crate::deploy::STOP_UNLOAD_BOUND`]. A slice that hangs in `stop` therefore cannot cost
    /// the clean-stop marker, nor hold the node past its stop bound.
    pub fn shutdown(&mut self, progress: &crate::stop::Progress) {
        progress.step("the final sync of the consensus log");
        if let Some(mut r) = self.replication.take() {
            r.fail_all("the node is stopping");
            r.close();
        }
        progress.step("unloading slices");
        if let Some(d) = self.deployment.take() {
            d.deployer.stop(crate::deploy::STOP_UNLOAD_BOUND);
        }
    }
}
