//! Which version of a slice a call runs on, and the choices a request carries along its chain of calls.
//!
//! Callers name a slice with a version (`group:artifact:version`, in a route record or a `ctx.call`), but
//! while versions change the named one may be on its way out, or a rollout may split traffic between two.
//! [`VersionTable`] holds what the node runtime reads from the KV every tick: the versions the cluster's
//! targets want, and for each running rollout the versions it moves and the share of requests the new ones
//! get. [`resolve`] then picks, for one call:
//!
//! 1. the version the chain pinned for the slice's base (see below), when it serves the method;
//! 2. under a rollout without a pin: the new version for `share` percent of draws, else the old one, each
//!    only when it serves the method (else the other side);
//! 3. the named version, when a target wants it and it serves the method;
//! 4. the newest wanted version of the base that serves the method (so an upgrade takes the calls that name
//!    the old version as soon as the new one serves, before the old one is retired);
//! 5. the named version (an old one still draining, when it alone serves); the caller then tries any version
//!    of the base that serves the method, which only its registry knows, else the call fails as it would
//!    have: no live instance.
//!
//! *Serves* means the caller can reach an instance of that version with that method (the caller's
//! judgement: endpoints in the registry, or an ACTIVE local instance).
//!
//! Sticky chains: where a request enters the cluster (the app port, a scheduled run, a message delivery),
//! [`VersionTable::pin`] draws one number in 0..100 and, for every running rollout, pins every base it moves
//! to the new version when the draw is below the rollout's share, else to the old one. The [`Pins`] travel
//! with every call of the request (the container's call context, the `Invoke` frame), so a request that ran
//! the new `orders` calls the new `inventory` when one rollout moves both, wherever the calls run, even if
//! the ratio changes while the request is under way. Rollouts with equal shares also agree with each other
//! (one draw per request).
//!
//! Invariants: at most [`PINS_MAX`] pins, a rollout's bases pinned all or none, each within the frame's text
//! bounds; a pin counts only for the base it names; a table holds at most [`ROLLOUTS_MAX`] rollouts; every
//! function is pure and allocation-free when no rollout runs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::registry::artifact_base;

/// Most pins one request carries.
pub const PINS_MAX: usize = 16;
/// Most rollouts the table holds.
pub const ROLLOUTS_MAX: usize = 64;

/// One running rollout, as calls see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutView {
    /// `(base, old artifact, new artifact)` for each slice it moves (`group:artifact`,
    /// `group:artifact:version` twice).
    pub moves: Vec<(String, String, String)>,
    /// Percent of requests the new versions get (0..=100).
    pub share: u8,
}

/// The versions a request's chain is pinned to: `(base, artifact)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins(pub Vec<(String, String)>);

impl Pins {
    /// The artifact pinned for `base` (a pin naming another base than its key is ignored: pins come from
    /// other nodes).
    pub fn get(&self, base: &str) -> Option<&str> {
        self.0.iter().find(|(b, a)| b == base && artifact_base(a) == base).map(|(_, a)| a.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The versions the cluster wants and the rollouts that split traffic.
#[derive(Clone, Debug, Default)]
pub struct VersionTable {
    /// Wanted artifacts by base.
    wanted: HashMap<String, Vec<String>>,
    rollouts: Vec<RolloutView>,
    /// Index into `rollouts` by base.
    by_base: HashMap<String, usize>,
}

impl VersionTable {
    /// A table from the wanted artifacts (`group:artifact:version`, the target records) and the running
    /// rollouts; rollouts past [`ROLLOUTS_MAX`] are left out, and a base moved by two rollouts follows the
    /// first.
    pub fn new(wanted: impl IntoIterator<Item = String>, rollouts: Vec<RolloutView>) -> VersionTable {
        let mut table = VersionTable::default();
        for artifact in wanted {
            table.wanted.entry(artifact_base(&artifact).to_owned()).or_default().push(artifact);
        }
        for list in table.wanted.values_mut() {
            list.sort();
        }
        for rollout in rollouts.into_iter().take(ROLLOUTS_MAX) {
            let index = table.rollouts.len();
            for (base, _, _) in &rollout.moves {
                table.by_base.entry(base.clone()).or_insert(index);
            }
            table.rollouts.push(rollout);
        }
        table
    }

    /// True when calls to `artifact` may run on another version than the one named: a rollout moves its
    /// base, or the base has a wanted version other than `artifact`.
    pub fn versioned(&self, artifact: &str) -> bool {
        let base = artifact_base(artifact);
        self.by_base.contains_key(base) || self.wanted.get(base).is_some_and(|w| w.iter().any(|a| a != artifact))
    }

    /// The pins of a request that enters here, from a draw in 0..100 (`draw % 100` is used).
    pub fn pin(&self, draw: u64) -> Pins {
        if self.rollouts.is_empty() {
            return Pins::default();
        }
        let draw = draw % 100;
        let mut pins = Vec::new();
        for rollout in &self.rollouts {
            // All of a rollout's bases or none: a rollout half pinned could mix its versions in one request.
            if pins.len() + rollout.moves.len() > PINS_MAX {
                continue;
            }
            let new = draw < u64::from(rollout.share);
            for (base, old_artifact, new_artifact) in &rollout.moves {
                pins.push((base.clone(), if new { new_artifact.clone() } else { old_artifact.clone() }));
            }
        }
        Pins(pins)
    }

    /// The version a call to `artifact` runs on; see the module documentation. `serves` says whether the
    /// caller can reach an instance of a version with the call's method; `draw` is used only for a call
    /// under a rollout that carries no pin for its base.
    pub fn resolve<'a>(
        &'a self,
        artifact: &'a str,
        pins: &'a Pins,
        draw: u64,
        serves: &dyn Fn(&str) -> bool,
    ) -> &'a str {
        let base = artifact_base(artifact);
        if let Some(pinned) = pins.get(base) {
            if serves(pinned) {
                return pinned;
            }
        }
        if let Some(rollout) = self.by_base.get(base).and_then(|i| self.rollouts.get(*i)) {
            if let Some((_, old, new)) = rollout.moves.iter().find(|(b, _, _)| b == base) {
                let (first, second) = if draw % 100 < u64::from(rollout.share) { (new, old) } else { (old, new) };
                if serves(first) {
                    return first;
                }
                if serves(second) {
                    return second;
                }
            }
        }
        let wanted = self.wanted.get(base);
        if wanted.is_some_and(|w| w.iter().any(|a| a == artifact)) && serves(artifact) {
            return artifact;
        }
        // The newest wanted version that serves, before an old name that still does.
        if let Some(wanted) = wanted.and_then(|w| w.iter().rev().find(|a| serves(a))) {
            return wanted;
        }
        artifact
    }

    /// The rollouts the table holds.
    pub fn rollouts(&self) -> &[RolloutView] {
        &self.rollouts
    }
}

/// Shared pins, as a call context holds them.
pub type SharedPins = Arc<Pins>;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(share: u8) -> VersionTable {
        let moves = vec![
            ("g:orders".to_owned(), "g:orders:1.0.0".to_owned(), "g:orders:2.0.0".to_owned()),
            ("g:inventory".to_owned(), "g:inventory:1.0.0".to_owned(), "g:inventory:2.0.0".to_owned()),
        ];
        VersionTable::new(
            ["g:orders:1.0.0".to_owned(), "g:orders:2.0.0".to_owned(), "g:inventory:1.0.0".to_owned()],
            vec![RolloutView { moves, share }],
        )
    }

    #[test]
    fn pins_put_every_base_of_a_rollout_on_one_side() {
        let t = table(30);
        for draw in 0..200u64 {
            let pins = t.pin(draw);
            let new = draw % 100 < 30;
            let version = if new { "2.0.0" } else { "1.0.0" };
            assert_eq!(pins.get("g:orders"), Some(format!("g:orders:{version}").as_str()));
            assert_eq!(pins.get("g:inventory"), Some(format!("g:inventory:{version}").as_str()));
        }
        assert!(VersionTable::new(Vec::new(), Vec::new()).pin(3).is_empty());
    }

    #[test]
    fn a_pin_wins_while_its_version_serves() {
        let t = table(0);
        let pins = Pins(vec![("g:orders".into(), "g:orders:2.0.0".into())]);
        assert_eq!(t.resolve("g:orders:1.0.0", &pins, 0, &|_| true), "g:orders:2.0.0");
        // The pinned version lost its instances: the rollout's draw decides among what serves.
        assert_eq!(t.resolve("g:orders:1.0.0", &pins, 0, &|a| a != "g:orders:2.0.0"), "g:orders:1.0.0");
    }

    #[test]
    fn without_a_pin_the_draw_splits_by_the_share() {
        let t = table(25);
        let empty = Pins::default();
        let new = (0..100u64).filter(|d| t.resolve("g:orders:1.0.0", &empty, *d, &|_| true) == "g:orders:2.0.0");
        assert_eq!(new.count(), 25);
        // A side that does not serve the method gives way to the other.
        assert_eq!(t.resolve("g:orders:1.0.0", &empty, 0, &|a| a == "g:orders:1.0.0"), "g:orders:1.0.0");
    }

    #[test]
    fn an_old_name_reaches_the_wanted_version_as_soon_as_it_serves() {
        let t = VersionTable::new(["g:a:2.0.0".to_owned()], Vec::new());
        let empty = Pins::default();
        assert!(t.versioned("g:a:1.0.0"));
        assert!(!t.versioned("g:a:2.0.0"));
        assert!(!t.versioned("g:b:1.0.0"));
        assert_eq!(t.resolve("g:a:1.0.0", &empty, 0, &|_| true), "g:a:2.0.0", "the wanted one first");
        assert_eq!(t.resolve("g:a:1.0.0", &empty, 0, &|a| a == "g:a:1.0.0"), "g:a:1.0.0", "the old one alone");
        assert_eq!(t.resolve("g:a:1.0.0", &empty, 0, &|_| false), "g:a:1.0.0", "nothing serves: as named");
        // Two versions wanted (two blueprints): a call naming either stays on it.
        let both = VersionTable::new(["g:a:1.0.0".to_owned(), "g:a:2.0.0".to_owned()], Vec::new());
        assert_eq!(both.resolve("g:a:1.0.0", &empty, 0, &|_| true), "g:a:1.0.0");
    }
}
