//! The dependency order of a blueprint's slices, and cycle detection.
//!
//! Invariant: the order lists every slice once, each after everything it depends on, ties in file order; a
//! cycle is reported on the `depends_on` entry that closes it, with the whole loop in the reason.

use super::parse::Located;
use super::validate::dependency_line;
use super::{error, BlueprintError, BlueprintErrorKind};
use kvstore::Artifact;
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Depth-first walk in file order, emitting each slice after its dependencies; a dependency already on the
/// current path is a cycle, reported with the whole loop.
struct OrderWalk<'a> {
    slices: &'a [Located],
    index_of: BTreeMap<&'a Artifact, usize>,
    marks: Vec<Mark>,
    path: Vec<usize>,
    order: Vec<Artifact>,
}

pub(super) fn dependency_order(slices: &[Located]) -> Result<Vec<Artifact>, BlueprintError> {
    let index_of = slices.iter().enumerate().map(|(i, s)| (&s.spec.artifact, i)).collect();
    let mut walk =
        OrderWalk { slices, index_of, marks: vec![Mark::New; slices.len()], path: Vec::new(), order: Vec::new() };
    for i in 0..slices.len() {
        walk.visit(i)?;
    }
    Ok(walk.order)
}

impl OrderWalk<'_> {
    fn visit(&mut self, i: usize) -> Result<(), BlueprintError> {
        if self.marks[i] == Mark::Done {
            return Ok(());
        }
        self.marks[i] = Mark::OnPath;
        self.path.push(i);
        let slice = &self.slices[i];
        for (d, dependency) in slice.spec.depends_on.iter().enumerate() {
            let Some(&j) = self.index_of.get(dependency) else { continue };
            match self.marks[j] {
                Mark::OnPath => return Err(self.cycle(i, d, j)),
                Mark::New => self.visit(j)?,
                Mark::Done => {}
            }
        }
        self.path.pop();
        self.marks[i] = Mark::Done;
        self.order.push(slice.spec.artifact.clone());
        Ok(())
    }

    /// The error for the edge `from -> to` (entry `d` of `from`'s `depends_on`) closing a loop.
    fn cycle(&self, from: usize, d: usize, to: usize) -> BlueprintError {
        let start = self.path.iter().position(|&p| p == to).unwrap_or(0);
        let mut names: Vec<String> =
            self.path[start..].iter().map(|&p| self.slices[p].spec.artifact.to_string()).collect();
        names.push(self.slices[to].spec.artifact.to_string());
        let slice = &self.slices[from];
        let reason = format!("dependency cycle: {}", names.join(" -> "));
        let field = format!("slices[{}].depends_on[{d}]", slice.index);
        error(BlueprintErrorKind::DependencyCycle, dependency_line(slice, d), field, reason)
    }
}
