//! The node's event loop handler and the management backend that talks to it.
//!
//! The loop owns all protocol state; management threads only send it commands and wait for the reply with
//! a timeout, so a stuck loop shows up as 503/504 answers rather than a hung API.

use crate::config::NodeConfig;
use mgmt::{ApiError, Backend, ClusterView, FaultSpec, PeerView};
use net::{Ctx, Direction, FaultAction, FaultRule, Frame, Handler, NetHandle, PeerId};
use std::sync::mpsc;
use std::time::Duration;

/// How long a management thread waits for the loop.
const LOOP_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

pub enum Command {
    ClusterView(mpsc::Sender<ClusterView>),
}

pub struct Node {
    config: NodeConfig,
}

impl Node {
    pub fn new(config: NodeConfig) -> Node {
        Node { config }
    }

    fn cluster_view(&self, ctx: &Ctx<'_>) -> ClusterView {
        let statuses = ctx.peers();
        let nodes = self
            .config
            .peers
            .iter()
            .map(|(id, addr)| match statuses.iter().find(|s| s.id == *id) {
                Some(s) => PeerView {
                    id: id.clone(),
                    address: addr.to_string(),
                    connected: s.connected,
                    last_seen_ms: s.last_seen_ago.map(|d| d.as_millis() as u64),
                    is_self: false,
                },
                None => PeerView {
                    id: id.clone(),
                    address: addr.to_string(),
                    connected: true,
                    last_seen_ms: None,
                    is_self: true,
                },
            })
            .collect();
        ClusterView { node: self.config.node_id.clone(), nodes }
    }
}

impl Handler for Node {
    type Command = Command;

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        log::debug!(
            "frame {:?} from {} ignored: no plane handles it yet",
            frame.kind,
            ctx.peer_id(peer).unwrap_or("?")
        );
    }

    fn on_command(&mut self, ctx: &mut Ctx<'_>, command: Command) {
        match command {
            Command::ClusterView(reply) => {
                let _ = reply.send(self.cluster_view(ctx));
            }
        }
    }
}

/// The management API's view of this node.
pub struct NodeBackend {
    pub handle: NetHandle<Command>,
    /// Fault injection is a test facility: off unless the process was started with AETHER_FAULT_INJECTION=1.
    pub faults_allowed: bool,
}

impl NodeBackend {
    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, ApiError> {
        let (tx, rx) = mpsc::channel();
        self.handle.command(make(tx)).map_err(|_| ApiError::unavailable("the node is stopping"))?;
        rx.recv_timeout(LOOP_REPLY_TIMEOUT)
            .map_err(|_| ApiError::timeout("the node's event loop did not answer in time"))
    }
}

impl Backend for NodeBackend {
    fn cluster_view(&self) -> Result<ClusterView, ApiError> {
        self.ask(Command::ClusterView)
    }

    fn set_faults(&self, rules: Vec<FaultSpec>) -> Result<(), ApiError> {
        if !self.faults_allowed {
            return Err(ApiError::new(
                403,
                "forbidden",
                "fault injection is off; start aetherd with AETHER_FAULT_INJECTION=1",
            ));
        }
        let rules = rules.into_iter().map(to_rule).collect();
        self.handle.set_faults(rules).map_err(|_| ApiError::unavailable("the node is stopping"))
    }
}

fn to_rule(spec: FaultSpec) -> FaultRule {
    let direction = match spec.direction.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        _ => Direction::Both,
    };
    let action = match spec.action.as_str() {
        "delay" => FaultAction::Delay(Duration::from_millis(spec.delay_ms)),
        _ => FaultAction::Drop,
    };
    FaultRule { peer: spec.peer, direction, action }
}
