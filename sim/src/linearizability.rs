//! A linearizability checker for a history of single-register operations (Wing & Gong's search with
//! Lowe's memoization): find an order of the operations that respects real time (an operation that
//! returned before another was invoked comes first) and the register's sequential behaviour.
//!
//! Invariants: an operation without a response (it timed out, or the run ended) may or may not have
//! taken effect: it is placed anywhere after its invocation or left out, and its result is not checked.
//! The search has a step limit; giving up is reported as such and callers count it as a failure.
//! Histories are split per key by the caller (keys are independent registers).

use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Write(u64),
    /// A read and the value it returned (`None`: the register was never written).
    Read(Option<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOp {
    pub op: RegisterOp,
    pub invoke_us: u64,
    /// `None`: no response was seen.
    pub response_us: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    GaveUp,
}

/// Checks one register's history, exploring at most `steps_max` search states.
pub fn check_register(history: &[TimedOp], steps_max: u64) -> Verdict {
    // Reads that never answered constrain nothing.
    let ops: Vec<TimedOp> =
        history.iter().copied().filter(|o| o.response_us.is_some() || matches!(o.op, RegisterOp::Write(_))).collect();
    let mut search = Search { ops: &ops, seen: HashSet::new(), steps: 0, steps_max };
    let done = vec![0u64; ops.len().div_ceil(64)];
    match search.explore(done, None) {
        Some(true) => Verdict::Linearizable,
        Some(false) => Verdict::NotLinearizable,
        None => Verdict::GaveUp,
    }
}

struct Search<'a> {
    ops: &'a [TimedOp],
    seen: HashSet<(Vec<u64>, Option<u64>)>,
    steps: u64,
    steps_max: u64,
}

impl Search<'_> {
    /// Depth-first: `Some(true)` found an order, `Some(false)` none exists from here, `None` gave up.
    fn explore(&mut self, done: Vec<u64>, register: Option<u64>) -> Option<bool> {
        if self.all_completed_done(&done) {
            return Some(true);
        }
        if !self.seen.insert((done.clone(), register)) {
            return Some(false);
        }
        self.steps += 1;
        if self.steps > self.steps_max {
            return None;
        }
        for index in self.candidates(&done) {
            let next = match self.ops[index].op {
                RegisterOp::Write(value) => Some(value),
                RegisterOp::Read(seen) if seen == register => register,
                RegisterOp::Read(_) => continue,
            };
            let mut after = done.clone();
            after[index / 64] |= 1 << (index % 64);
            match self.explore(after, next)? {
                true => return Some(true),
                false => continue,
            }
        }
        Some(false)
    }

    fn all_completed_done(&self, done: &[u64]) -> bool {
        self.ops.iter().enumerate().all(|(i, o)| o.response_us.is_none() || is_set(done, i))
    }

    /// Operations that may take effect next: not done, and invoked before every pending operation's
    /// response (otherwise that one must come first).
    fn candidates(&self, done: &[u64]) -> Vec<usize> {
        let first_response = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_set(done, *i))
            .filter_map(|(_, o)| o.response_us)
            .min()
            .unwrap_or(u64::MAX);
        (0..self.ops.len()).filter(|i| !is_set(done, *i) && self.ops[*i].invoke_us < first_response).collect()
    }
}

fn is_set(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: RegisterOp, invoke_us: u64, response_us: u64) -> TimedOp {
        TimedOp { op, invoke_us, response_us: Some(response_us) }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history =
            [op(RegisterOp::Read(None), 0, 1), op(RegisterOp::Write(1), 2, 3), op(RegisterOp::Read(Some(1)), 4, 5)];
        assert_eq!(check_register(&history, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let history = [
            op(RegisterOp::Write(1), 0, 10),
            op(RegisterOp::Write(2), 5, 20),
            op(RegisterOp::Read(Some(1)), 12, 30),
            op(RegisterOp::Read(Some(2)), 31, 40),
        ];
        assert_eq!(check_register(&history, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let history =
            [op(RegisterOp::Write(1), 0, 10), op(RegisterOp::Write(2), 11, 20), op(RegisterOp::Read(Some(1)), 21, 30)];
        assert_eq!(check_register(&history, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn reads_going_back_in_time_are_not_linearizable() {
        let history = [
            op(RegisterOp::Write(1), 0, 100),
            op(RegisterOp::Write(2), 0, 100),
            op(RegisterOp::Read(Some(2)), 10, 20),
            op(RegisterOp::Read(Some(1)), 30, 40),
            op(RegisterOp::Read(Some(2)), 50, 60),
        ];
        assert_eq!(check_register(&history, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn unanswered_write_may_or_may_not_have_happened() {
        let pending = TimedOp { op: RegisterOp::Write(7), invoke_us: 0, response_us: None };
        let saw_it = [pending, op(RegisterOp::Read(Some(7)), 50, 60)];
        let missed_it = [pending, op(RegisterOp::Read(None), 50, 60)];
        assert_eq!(check_register(&saw_it, 10_000), Verdict::Linearizable);
        assert_eq!(check_register(&missed_it, 10_000), Verdict::Linearizable);
        let never_written = [op(RegisterOp::Read(Some(7)), 0, 1)];
        assert_eq!(check_register(&never_written, 10_000), Verdict::NotLinearizable);
    }

    #[test]
    fn a_search_that_runs_out_of_steps_gives_up() {
        let history: Vec<TimedOp> = (0..40).map(|v| op(RegisterOp::Write(v), 0, 1000)).collect();
        let mut with_bad_read = history.clone();
        with_bad_read.push(op(RegisterOp::Read(Some(999)), 2000, 2001));
        assert_eq!(check_register(&with_bad_read, 100), Verdict::GaveUp);
    }
}
