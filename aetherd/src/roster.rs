//! The cluster's members as the shell knows them: each node's id, its consensus replica id, its cluster
//! address and its role (a voter takes part in consensus; a learner catches up and waits to be promoted).
//!
//! Where the roster comes from, newest first:
//! 1. the `nodes/members` record of the applied store, written only inside consensus reconfigurations (and
//!    the learner additions before them), so every node reads the same roster at the same slot;
//! 2. `{data_dir}/members.json`, written whenever the node adopts a roster, so a restart starts from the
//!    membership it last knew, not from the config file;
//! 3. the config file's `peers`, which only seed a new cluster: replica ids are positions in the sorted ids.
//!
//! The file also keeps the cluster's *genesis*: the seed members, whose count fixes the consensus membership
//! at slot 0 (`Members::first(n)`), which a replica replaying its log from slot 0 must start from whatever the
//! membership is today.
//!
//! Invariants: replica ids are unique and below `consensus::MEMBERS_MAX`, node ids are unique, and no roster
//! is without a voter; a removed node's replica id may be given to a later node (the transport knows nodes by
//! name, and a removed node is refused, so its old messages cannot count for the newcomer).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Replica ids are bits of a `u64` in the consensus core.
pub const REPLICAS_MAX: usize = 64;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub replica: u8,
    pub address: SocketAddr,
    pub role: Role,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    /// By replica id.
    pub members: Vec<Member>,
}

/// What `members.json` holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RosterFile {
    /// The seed members' ids, sorted: the membership at slot 0 has this many replicas.
    pub genesis: Vec<String>,
    pub roster: Roster,
}

impl Roster {
    /// A new cluster's roster from the config's peers (this node included): every node a voter, replica ids
    /// by sorted node id.
    pub fn seed(peers: &[(String, SocketAddr)]) -> Roster {
        let mut sorted: Vec<&(String, SocketAddr)> = peers.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let members = sorted
            .iter()
            .take(REPLICAS_MAX)
            .enumerate()
            .map(|(i, (id, address))| Member { id: id.clone(), replica: i as u8, address: *address, role: Role::Voter })
            .collect();
        Roster { members }
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn by_replica(&self, replica: u8) -> Option<&Member> {
        self.members.iter().find(|m| m.replica == replica)
    }

    /// The voters' replica ids as the consensus core's bit set.
    pub fn voter_bits(&self) -> u64 {
        self.members.iter().filter(|m| m.role == Role::Voter).fold(0, |bits, m| bits | (1u64 << m.replica))
    }

    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Voter)
    }

    pub fn learners(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Learner)
    }

    /// The roster with `id` added as a learner at `address`, under the lowest free replica id.
    pub fn with_learner(&self, id: &str, address: SocketAddr) -> Result<Roster, String> {
        if let Some(m) = self.get(id) {
            return Err(format!("{id} is already a member ({:?} at {})", m.role, m.address));
        }
        if let Some(m) = self.members.iter().find(|m| m.address == address) {
            return Err(format!("{address} is already the address of {}", m.id));
        }
        let replica = (0..REPLICAS_MAX as u8)
            .find(|r| self.by_replica(*r).is_none())
            .ok_or_else(|| format!("the cluster has {REPLICAS_MAX} members, the most it can have"))?;
        let mut members = self.members.clone();
        members.push(Member { id: id.to_string(), replica, address, role: Role::Learner });
        members.sort_by_key(|m| m.replica);
        Ok(Roster { members })
    }

    /// The roster with learner `id` a voter.
    pub fn promoted(&self, id: &str) -> Result<Roster, String> {
        let mut roster = self.clone();
        match roster.members.iter_mut().find(|m| m.id == id) {
            Some(m) if m.role == Role::Learner => m.role = Role::Voter,
            Some(_) => return Err(format!("{id} is a voter already")),
            None => return Err(format!("{id} is not a member")),
        }
        Ok(roster)
    }

    /// The roster without `id`; refused when it would leave no voter.
    pub fn without(&self, id: &str) -> Result<Roster, String> {
        if self.get(id).is_none() {
            return Err(format!("{id} is not a member"));
        }
        let members: Vec<Member> = self.members.iter().filter(|m| m.id != id).cloned().collect();
        if !members.iter().any(|m| m.role == Role::Voter) {
            return Err(format!("removing {id} would leave the cluster without a voting member"));
        }
        Ok(Roster { members })
    }

    /// Checks a roster read from a record or a file (hostile until checked).
    pub fn check(&self) -> Result<(), String> {
        if self.members.len() > REPLICAS_MAX {
            return Err(format!("{} members, over {REPLICAS_MAX}", self.members.len()));
        }
        for (i, m) in self.members.iter().enumerate() {
            if usize::from(m.replica) >= REPLICAS_MAX {
                return Err(format!("{}: replica id {} is not below {REPLICAS_MAX}", m.id, m.replica));
            }
            if kvstore::NodeId::parse(&m.id).is_err() {
                return Err(format!("'{}' is not a node id", m.id.escape_debug()));
            }
            if self.members[..i].iter().any(|o| o.id == m.id || o.replica == m.replica) {
                return Err(format!("{} appears twice (by id or replica id)", m.id));
            }
        }
        if self.voter_bits() == 0 {
            return Err("no voting member".into());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Roster, String> {
        let roster: Roster = serde_json::from_slice(bytes).map_err(|e| format!("not a roster: {e}"))?;
        roster.check()?;
        Ok(roster)
    }
}

/// The roster this node starts with: the one it last followed (`members.json`); else, joining, the one a
/// member sends (`fetch`); else a new cluster's, seeded from the config's peers. A config whose peers differ
/// from the saved roster is not an error (peers only seed), but it is said once.
pub fn establish(
    config: &crate::config::NodeConfig,
    fetch: impl FnOnce() -> Result<RosterFile, String>,
) -> Result<RosterFile, String> {
    if let Some(file) = load(&config.data_dir)? {
        let mut configured: Vec<&str> = config.peers.iter().map(|(id, _)| id.as_str()).collect();
        let mut known: Vec<&str> = file.roster.members.iter().map(|m| m.id.as_str()).collect();
        configured.sort_unstable();
        known.sort_unstable();
        if configured != known && !config.join {
            log::info!(
                "members: {} (from {}; the config file's peers only seed a new cluster)",
                known.join(", "),
                file_path(&config.data_dir).display()
            );
        }
        return Ok(file);
    }
    let file = if config.join {
        fetch()?
    } else {
        let mut genesis: Vec<String> = config.peers.iter().map(|(id, _)| id.clone()).collect();
        genesis.sort();
        RosterFile { genesis, roster: Roster::seed(&config.peers) }
    };
    save(&config.data_dir, &file)?;
    Ok(file)
}

pub fn file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("members.json")
}

/// Reads `members.json`; `Ok(None)` when there is none yet.
pub fn load(data_dir: &Path) -> Result<Option<RosterFile>, String> {
    let path = file_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let file: RosterFile = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    file.roster.check().map_err(|e| format!("{}: {e}", path.display()))?;
    if file.genesis.is_empty() || file.genesis.len() > REPLICAS_MAX {
        return Err(format!("{}: genesis lists {} members", path.display(), file.genesis.len()));
    }
    Ok(Some(file))
}

/// Writes `members.json` atomically (temporary file, sync, rename, sync of the directory).
pub fn save(data_dir: &Path, file: &RosterFile) -> Result<(), String> {
    use std::io::Write;
    let path = file_path(data_dir);
    let tmp = data_dir.join("members.json.tmp");
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn three() -> Roster {
        Roster::seed(&[("node-3".into(), addr(3)), ("node-1".into(), addr(1)), ("node-2".into(), addr(2))])
    }

    #[test]
    fn a_seed_numbers_replicas_by_sorted_id() {
        let r = three();
        assert_eq!(
            r.members.iter().map(|m| (m.id.as_str(), m.replica)).collect::<Vec<_>>(),
            [("node-1", 0), ("node-2", 1), ("node-3", 2)]
        );
        assert_eq!(r.voter_bits(), 0b111);
        r.check().unwrap();
    }

    #[test]
    fn learners_take_the_lowest_free_replica_and_count_after_promotion() {
        let r = three().without("node-2").unwrap();
        assert_eq!(r.voter_bits(), 0b101);
        let r = r.with_learner("node-4", addr(4)).unwrap();
        assert_eq!(r.get("node-4").map(|m| (m.replica, m.role)), Some((1, Role::Learner)));
        assert_eq!(r.voter_bits(), 0b101, "a learner does not vote");
        let r = r.promoted("node-4").unwrap();
        assert_eq!(r.voter_bits(), 0b111);
        assert!(r.promoted("node-4").is_err());
        assert!(r.with_learner("node-4", addr(9)).is_err(), "twice");
        assert!(r.with_learner("node-9", addr(1)).is_err(), "an address in use");
    }

    #[test]
    fn the_last_voter_cannot_leave() {
        let r = Roster::seed(&[("node-1".into(), addr(1))]).with_learner("node-2", addr(2)).unwrap();
        let err = r.without("node-1").unwrap_err();
        assert!(err.contains("without a voting member"), "{err}");
        assert!(r.without("node-7").is_err());
    }

    #[test]
    fn hostile_rosters_are_refused() {
        let mut r = three();
        r.members[1].replica = 0;
        assert!(Roster::from_json(&r.to_json()).is_err(), "duplicate replica id");
        let mut r = three();
        r.members[2].replica = 64;
        assert!(Roster::from_json(&r.to_json()).is_err(), "replica id out of range");
        let mut r = three();
        r.members[0].id = "../x".into();
        assert!(Roster::from_json(&r.to_json()).is_err(), "not a node id");
        let mut r = three();
        r.members.iter_mut().for_each(|m| m.role = Role::Learner);
        assert!(Roster::from_json(&r.to_json()).is_err(), "no voter");
        assert!(Roster::from_json(b"{\"members\": 7}").is_err());
        assert_eq!(Roster::from_json(&three().to_json()).unwrap(), three());
    }

    #[test]
    fn the_file_round_trips_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("aether-roster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        let file = RosterFile { genesis: vec!["node-1".into(), "node-2".into(), "node-3".into()], roster: three() };
        save(&dir, &file).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(file));
        std::fs::write(file_path(&dir), b"{\"genesis\": [], \"roster\": {\"members\": []}}").unwrap();
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
