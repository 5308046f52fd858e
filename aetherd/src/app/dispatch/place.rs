//! Where an attempt goes: by the slice's selection strategy among this node's instance and the live remote
//! endpoints, skipping nodes that failed the call or refused the artifact lately; and for a single-active
//! slice, only to the lease holder, waiting while nobody holds it.
//!
//! - Local-first (the default): this node's ACTIVE instance when it has one (the container is the truth
//!   about this node), else the registry's round-robin over remote endpoints.
//! - Round-robin, random, least-loaded: the registry picks among every endpoint, this node's included; the
//!   load is the calls this dispatcher has in flight on each node's instances of the artifact (counted only
//!   for least-loaded slices, so the other strategies pay nothing for it).
//! - Single-active ([`Dispatcher::dispatch_single_active`]): the holder's instance only. While the lease has
//!   no holder, its holder is unreachable or refuses as "not the active instance" (a switch in progress), the
//!   call waits, looking again every [`LEASE_POLL`], until its deadline: a failover costs latency, not
//!   errors. A call lost with its node is retried once only when idempotent, as elsewhere.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container::SliceHandle;
use invoke::{InvokeReply, Selector, Target};
use parking_lot::Mutex;
use vocab::Selection;

use super::super::answers::{deadline_exceeded, error, overloaded, time_left, with_failures};
use super::{Attempt, Call, Dispatcher, Place, Runner};

/// How often a call to a single-active slice looks at the lease again while it waits for a holder.
pub const LEASE_POLL: Duration = Duration::from_millis(20);
/// Failures kept for the answer of a call that waited (the last ones).
const FAILURES_KEPT: usize = 4;

/// One count held in a shared table (a forwarded call waited on per artifact, a call in flight per artifact
/// and node for least-loaded selection); given back, and its entry removed at zero, when dropped. Owned, so a
/// forwarded call that outlives its thread (a deferred answer) holds its counts until its outcome.
pub(in crate::app) struct Counted<K: Eq + Hash> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: Option<K>,
}

/// What a forwarded attempt holds until its outcome: its place among the artifact's outbound calls and its
/// load on the node.
pub(in crate::app) type Holds = (Counted<String>, Counted<(String, String)>);

/// A shared table of counts.
pub(in crate::app) type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

impl<K: Eq + Hash + Clone> Counted<K> {
    /// Counts one more for `key`, when fewer than `max` are counted for it.
    pub(super) fn take(counts: &Counts<K>, key: K, max: usize) -> Option<Counted<K>> {
        let mut table = counts.lock();
        let count = table.entry(key.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        drop(table);
        Some(Counted { counts: Arc::clone(counts), key: Some(key) })
    }

    /// Counts nothing.
    pub(super) fn none(counts: &Counts<K>) -> Counted<K> {
        Counted { counts: Arc::clone(counts), key: None }
    }
}

impl<K: Eq + Hash> Drop for Counted<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// A seed that differs between processes and dispatchers.
pub(super) fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}

impl Dispatcher {
    /// Where to try next; `refused` is set when only nodes that refused this artifact lately are left.
    pub(super) fn place(&self, call: &Call<'_>, exclude: &[String], refused: &mut bool) -> Option<Place> {
        let local_excluded = exclude.contains(&self.node_id);
        let local = if local_excluded { None } else { self.container.find_active(call.artifact) };
        let selection = self.registry.read().selection(call.artifact);
        if selection == Selection::LocalFirst {
            if let Some(handle) = local {
                return Some(Place::Local(handle));
            }
        }
        if self.forward.is_none() {
            return local.map(Place::Local);
        }
        let mut skip = exclude.to_vec();
        if local.is_none() && !local_excluded {
            skip.push(self.node_id.clone());
        }
        let refusing = self.refusing_nodes(call.artifact);
        if !refusing.is_empty() {
            let mut wider = skip.clone();
            wider.extend(refusing);
            if let Some(place) = self.pick(call, &wider, local.clone()) {
                return Some(place);
            }
            // Only refusing nodes are left: answer "overloaded" rather than wait on them.
            if self.pick(call, &skip, local).is_some() {
                *refused = true;
            }
            return None;
        }
        self.pick(call, &skip, local)
    }

    /// The registry's pick among the endpoints not in `skip`; `local` is this node's instance, if any.
    fn pick(&self, call: &Call<'_>, skip: &[String], local: Option<SliceHandle>) -> Option<Place> {
        let forward = self.forward.as_ref()?;
        let alive = |node: &str| forward.is_alive(node);
        let load = |node: &str| self.load_on(call.artifact, node);
        let selector =
            Selector { local_node: &self.node_id, is_alive: &alive, exclude: skip, load: &load, random: self.random() };
        match self.registry.read().pick(call.artifact, call.method, &selector)? {
            Target::Remote(node) => Some(Place::Remote(node)),
            // Picked only when this node is not skipped, that is when it has an instance.
            Target::Local => local.map(Place::Local),
        }
    }

    /// Nodes that refused `artifact` as overloaded less than [`RETRY_AFTER`](super::RETRY_AFTER) ago.
    pub(super) fn refusing_nodes(&self, artifact: &str) -> Vec<String> {
        let mut refusing = self.refusing.lock();
        if refusing.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        refusing.retain(|_, until| *until > now);
        refusing.keys().filter(|(_, a)| a == artifact).map(|(node, _)| node.clone()).collect()
    }

    pub(super) fn random(&self) -> u64 {
        // splitmix64 over a per-dispatcher seed: cheap, lock-free, evenly spread.
        let mut z = self.random.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Calls this node has in flight on `node`'s instances of `artifact`.
    fn load_on(&self, artifact: &str, node: &str) -> usize {
        let loads = self.loads.lock();
        loads.iter().find(|((a, n), _)| a == artifact && n == node).map_or(0, |(_, count)| *count)
    }

    /// Counts one call in flight on `node` until the guard drops (for least-loaded slices only).
    pub(super) fn count_load(&self, artifact: &str, node: &str) -> Counted<(String, String)> {
        if self.registry.read().selection(artifact) != Selection::LeastLoaded {
            return Counted::none(&self.loads);
        }
        let key = (artifact.to_owned(), node.to_owned());
        Counted::take(&self.loads, key, usize::MAX).unwrap_or_else(|| Counted::none(&self.loads))
    }

    /// The epoch this node's instance of `artifact` serves at: 0 when the slice is not single-active, an
    /// error when it is and this node does not hold a current lease. A slice that declares itself
    /// single-active before any lease view exists (its first moments after a deploy) serves nothing yet:
    /// the check fails closed, never open.
    pub(super) fn lease_epoch(&self, artifact: &str, declared_single_active: bool) -> Result<u64, String> {
        let registry = self.registry.read();
        let Some(lease) = registry.lease_of(artifact) else {
            if declared_single_active {
                return Err(format!("no lease of single-active {artifact} yet"));
            }
            return Ok(0);
        };
        let holds = lease.holder.as_deref() == Some(self.node_id.as_str());
        match lease.serving_until {
            Some(until) if holds && Instant::now() < until => Ok(lease.epoch),
            _ => Err(format!("not the active instance of {artifact}")),
        }
    }

    /// Run a call to a single-active slice on the lease holder's instance, waiting while there is none;
    /// `None` when the slice is not single-active. See the module documentation.
    pub(super) fn dispatch_single_active(
        &self,
        call: &Call<'_>,
        exclude: &[String],
        runner: Runner<'_>,
    ) -> Option<InvokeReply> {
        self.registry.read().lease_of(call.artifact)?;
        let mut failures: Vec<String> = Vec::new();
        let mut lost = 0;
        loop {
            let Some(left) = time_left(call.deadline) else { return Some(deadline_exceeded(call, &failures)) };
            let holder = self.registry.read().lease_of(call.artifact)?.holder.clone();
            let attempt = match holder {
                Some(holder) if holder == self.node_id => {
                    self.container.find_active(call.artifact).map(|handle| self.call_local(call, &handle, runner))
                }
                Some(holder)
                    if !exclude.contains(&holder) && self.forward.as_ref().is_some_and(|f| f.is_alive(&holder)) =>
                {
                    let attempt = self.call_remote(&holder, call);
                    if let Attempt::Retry(why) | Attempt::Refused(why) | Attempt::Lost(why) = &attempt {
                        failures.push(format!("{holder}: {why}"));
                    }
                    Some(attempt)
                }
                _ => None,
            };
            match attempt {
                Some(Attempt::Done(reply)) => return Some(reply),
                Some(Attempt::Refused(_)) => {
                    let detail = with_failures(format!("the active instance of {} is busy", call.artifact), &failures);
                    return Some(overloaded(&detail));
                }
                Some(Attempt::Lost(_)) => {
                    lost += 1;
                    if lost > 1 {
                        let detail =
                            format!("a second holder went down under a call to {}; not retried", call.artifact);
                        return Some(error(503, "unavailable", &with_failures(detail, &failures), true));
                    }
                }
                Some(Attempt::Retry(_)) | None => {}
            }
            if failures.len() > FAILURES_KEPT {
                failures.remove(0);
            }
            std::thread::sleep(left.min(LEASE_POLL));
        }
    }
}
