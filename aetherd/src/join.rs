//! Joining a running cluster: a node started with `[cluster] join = true` and an empty data directory asks
//! the cluster for its roster before it builds its replica, so it learns its replica id, the other members
//! and the cluster's genesis (which fixes the consensus membership at slot 0).
//!
//! It runs a short-lived transport loop on the node's own cluster port that dials the seeds (the config's
//! `peers` other than itself) and sends each an empty `Members` frame; a member answers with its roster file.
//! Members refuse the connection (the handshake names no such peer) until an operator has added the node
//! (`POST /api/members`), so the loop keeps dialing, saying every [`WAIT_LOG_EVERY`] what it waits for.
//!
//! Invariants: the answer is checked (`Roster::check`, genesis bounds) and must list this node; the loop's
//! listener is closed before the node's real transport binds the same port.

use crate::config::NodeConfig;
use crate::roster::{RosterFile, REPLICAS_MAX};
use log::{info, warn};
use net::{Ctx, Frame, FrameKind, Handler, PeerId};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the joining node asks its connected seeds again.
const ASK_EVERY: Duration = Duration::from_millis(500);
/// How often it logs that it is still waiting to be added.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(10);
/// A roster answer over this many bytes is refused.
pub const ROSTER_BYTES_MAX: usize = 64 * 1024;

struct Ask {
    node: String,
    got: Arc<Mutex<Option<Result<RosterFile, String>>>>,
    started: Instant,
    last_log: Instant,
}

impl Handler for Ask {
    type Command = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.set_timer(Instant::now() + ASK_EVERY, 0);
    }

    fn on_peer_up(&mut self, ctx: &mut Ctx<'_>, peer: PeerId) {
        let _ = ctx.send(peer, FrameKind::Members, &[]);
    }

    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame) {
        if frame.kind != FrameKind::Members || frame.payload.is_empty() {
            return;
        }
        let from = ctx.peer_id(peer).unwrap_or("?").to_string();
        match read_answer(&frame.payload, &self.node) {
            Ok(file) => {
                info!("{from} sent the cluster's roster: {} members", file.roster.members.len());
                *self.got.lock() = Some(Ok(file));
                ctx.stop();
            }
            Err(e) => {
                warn!("roster from {from} refused: {e}");
                if e.contains("does not list") {
                    *self.got.lock() = Some(Err(format!("{from} answered, but {e}")));
                    ctx.stop();
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _token: u64) {
        ctx.set_timer(Instant::now() + ASK_EVERY, 0);
        let connected: Vec<PeerId> = (0..ctx.peer_count()).filter(|p| ctx.is_connected(*p)).collect();
        for peer in &connected {
            let _ = ctx.send(*peer, FrameKind::Members, &[]);
        }
        if connected.is_empty() && self.last_log.elapsed() >= WAIT_LOG_EVERY {
            self.last_log = Instant::now();
            warn!(
                "joining: no member accepts this node yet ({} s); add it on the cluster with \
                 `aether member add {} <cluster address>` (POST /api/members)",
                self.started.elapsed().as_secs(),
                self.node
            );
        }
    }

    fn on_command(&mut self, _ctx: &mut Ctx<'_>, _command: ()) {}
}

/// Checks a roster answer: bounded, well formed, and naming `node`.
pub fn read_answer(bytes: &[u8], node: &str) -> Result<RosterFile, String> {
    if bytes.len() > ROSTER_BYTES_MAX {
        return Err(format!("{} bytes, over {ROSTER_BYTES_MAX}", bytes.len()));
    }
    let file: RosterFile = serde_json::from_slice(bytes).map_err(|e| format!("not a roster: {e}"))?;
    file.roster.check()?;
    if file.genesis.is_empty() || file.genesis.len() > REPLICAS_MAX {
        return Err(format!("genesis lists {} members", file.genesis.len()));
    }
    if file.roster.get(node).is_none() {
        return Err(format!("its roster does not list {node}: add it first (`aether member add {node} ...`)"));
    }
    Ok(file)
}

/// Dials the seeds until one answers with a roster that lists this node; no time limit (a node waiting to
/// be added waits), but the caller's stop signal is honoured through `give_up`.
pub fn fetch_roster(
    config: &NodeConfig,
    net_config: net::NetConfig,
    mut give_up: impl FnMut() -> bool,
) -> Result<RosterFile, String> {
    info!(
        "joining the cluster through {}; this node becomes a learner, then a voter once it has caught up",
        config
            .peers
            .iter()
            .filter(|(id, _)| *id != config.node_id)
            .map(|(id, a)| format!("{id}@{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let got = Arc::new(Mutex::new(None));
    let ask =
        Ask { node: config.node_id.clone(), got: Arc::clone(&got), started: Instant::now(), last_log: Instant::now() };
    let running = net::spawn(net_config, ask).map_err(|e| format!("cluster port {}: {e}", config.listen_cluster))?;
    loop {
        if got.lock().is_some() || running.thread.is_finished() {
            break;
        }
        if give_up() {
            let _ = running.handle.stop();
            let _ = running.thread.join();
            return Err("stopped while joining".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = running.handle.stop();
    let _ = running.thread.join();
    let answer = got.lock().take();
    answer.unwrap_or_else(|| Err("the joining loop ended without a roster".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Roster;
    use std::net::SocketAddr;

    fn file() -> RosterFile {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let roster =
            Roster::seed(&[("node-1".into(), a(1)), ("node-2".into(), a(2))]).with_learner("node-3", a(3)).unwrap();
        RosterFile { genesis: vec!["node-1".into(), "node-2".into()], roster }
    }

    #[test]
    fn an_answer_must_name_the_joining_node_and_be_well_formed() {
        let bytes = serde_json::to_vec(&file()).unwrap();
        assert_eq!(read_answer(&bytes, "node-3").unwrap(), file());
        assert!(read_answer(&bytes, "node-9").unwrap_err().contains("does not list node-9"));
        assert!(read_answer(b"[1,2]", "node-3").is_err());
        assert!(read_answer(&vec![b' '; ROSTER_BYTES_MAX + 1], "node-3").unwrap_err().contains("over"));
        let mut empty = file();
        empty.genesis.clear();
        assert!(read_answer(&serde_json::to_vec(&empty).unwrap(), "node-3").is_err());
    }
}
