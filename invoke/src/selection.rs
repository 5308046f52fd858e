//! The choice among the endpoints that can take a call, by the slice's [`Selection`] strategy.
//!
//! [`choose`] is pure: the candidates (already filtered: live, not excluded), whether each is on this node,
//! the load this node counts on each (calls it has in flight there), a turn counter and a random number, all
//! given by the caller. Strategies:
//! - local-first: this node's endpoint when it is a candidate, else round-robin over the others;
//! - round-robin: every candidate in turn, this node's included;
//! - random: a uniform pick among the candidates;
//! - least-loaded: the candidates with the fewest calls in flight, in turn when several tie.
//!
//! Invariant: the pick is always one of the candidates; `None` only when there are none.

use vocab::Selection;

/// One endpoint that can take the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub node: &'a str,
    pub local: bool,
    /// Calls this node has in flight on this node's instances of the slice.
    pub load: usize,
}

/// The index in `candidates` of the one to call.
pub fn choose(selection: Selection, candidates: &[Candidate<'_>], turn: usize, random: u64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    match selection {
        Selection::LocalFirst => {
            if let Some(local) = candidates.iter().position(|c| c.local) {
                return Some(local);
            }
            Some(turn % candidates.len())
        }
        Selection::RoundRobin => Some(turn % candidates.len()),
        Selection::Random => Some((random % candidates.len() as u64) as usize),
        Selection::LeastLoaded => {
            let least = candidates.iter().map(|c| c.load).min()?;
            let tied = candidates.iter().filter(|c| c.load == least).count();
            let nth = turn % tied;
            candidates.iter().enumerate().filter(|(_, c)| c.load == least).nth(nth).map(|(i, _)| i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(loads: [usize; 3]) -> Vec<Candidate<'static>> {
        ["node-1", "node-2", "node-3"]
            .into_iter()
            .zip(loads)
            .map(|(node, load)| Candidate { node, local: node == "node-2", load })
            .collect()
    }

    fn counts(selection: Selection, candidates: &[Candidate<'_>], n: usize) -> [usize; 3] {
        let mut counts = [0; 3];
        let mut random = 0x2545_F491_4F6C_DD1D_u64;
        for turn in 0..n {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            counts[choose(selection, candidates, turn, random).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn local_first_uses_the_local_instance() {
        assert_eq!(counts(Selection::LocalFirst, &three([0; 3]), 300), [0, 300, 0]);
        let remote_only: Vec<_> = three([0; 3]).into_iter().filter(|c| !c.local).collect();
        assert_eq!(counts(Selection::LocalFirst, &remote_only, 300)[..2], [150, 150]);
    }

    #[test]
    fn round_robin_is_even_over_every_instance() {
        assert_eq!(counts(Selection::RoundRobin, &three([0; 3]), 300), [100, 100, 100]);
    }

    #[test]
    fn random_is_roughly_even() {
        let counts = counts(Selection::Random, &three([0; 3]), 30_000);
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn least_loaded_prefers_the_idle_one_and_spreads_ties() {
        assert_eq!(counts(Selection::LeastLoaded, &three([5, 9, 0]), 100), [0, 0, 100]);
        assert_eq!(counts(Selection::LeastLoaded, &three([1, 4, 1]), 100), [50, 0, 50]);
    }

    #[test]
    fn no_candidate_no_pick() {
        for selection in Selection::ALL {
            assert_eq!(choose(selection, &[], 3, 7), None);
        }
    }
}
