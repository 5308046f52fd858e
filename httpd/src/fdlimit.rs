//! The process's file-descriptor limit: raising the soft limit and the share of it that HTTP
//! connections may take.
//!
//! Invariant: HTTP connections of all ports together stay below the soft limit minus a reserve, so the
//! node can always open its log segments, snapshots, slice libraries and cluster connections.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for everything but HTTP connections: a quarter of the limit, at least 64.
fn reserve(soft: u64) -> u64 {
    (soft / 4).max(64)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> Result<u64, String> {
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // Unlimited hard limit: the kernel still caps it at nr_open; keep what we have if it is set.
        return Ok(limit.current.unwrap_or(u64::MAX));
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(hard);
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) })
        .map_err(|e| format!("cannot raise the open-file limit to {hard}: {e}"))?;
    Ok(hard)
}

/// Connections one of the node's two HTTP ports may hold: half of the soft limit less the reserve.
pub fn fd_budget() -> usize {
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    let budget = soft.saturating_sub(reserve(soft)) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_a_reserve() {
        assert_eq!(reserve(256), 64);
        assert_eq!(reserve(65536), 16384);
        let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
        assert!((fd_budget() as u64) * 2 < soft);
    }
}
