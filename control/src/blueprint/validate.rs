//! Checks across the parsed slices: no artifact twice, every dependency a slice of the same blueprint, every
//! artifact present in the node's repository. Errors point at the field path and line of the offending entry.

use super::parse::Located;
use super::{error, BlueprintError, BlueprintErrorKind};
use kvstore::Artifact;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check_duplicates(slices: &[Located]) -> Result<(), BlueprintError> {
    let mut first_line: BTreeMap<&Artifact, usize> = BTreeMap::new();
    for slice in slices {
        if let Some(line) = first_line.insert(&slice.spec.artifact, slice.artifact_line) {
            let reason = format!("{} is already deployed by the slice on line {line}", slice.spec.artifact);
            let field = format!("slices[{}].artifact", slice.index);
            return Err(error(BlueprintErrorKind::DuplicateSlice, slice.artifact_line, field, reason));
        }
    }
    Ok(())
}

pub(super) fn check_dependencies_exist(slices: &[Located]) -> Result<(), BlueprintError> {
    let known: BTreeSet<&Artifact> = slices.iter().map(|s| &s.spec.artifact).collect();
    for slice in slices {
        let missing = slice.spec.depends_on.iter().enumerate().find(|(_, d)| !known.contains(d));
        if let Some((i, dependency)) = missing {
            let reason = format!("{dependency} is not a slice of this blueprint");
            let field = format!("slices[{}].depends_on[{i}]", slice.index);
            return Err(error(BlueprintErrorKind::UnknownDependency, dependency_line(slice, i), field, reason));
        }
    }
    Ok(())
}

pub(super) fn dependency_line(slice: &Located, i: usize) -> usize {
    slice.dependency_lines.get(i).copied().unwrap_or(slice.artifact_line)
}

pub(super) fn check_known(
    slices: &[Located],
    artifact_known: &dyn Fn(&Artifact) -> bool,
) -> Result<(), BlueprintError> {
    match slices.iter().find(|s| !artifact_known(&s.spec.artifact)) {
        Some(slice) => {
            let reason = format!("{} is not in the artifact repository", slice.spec.artifact);
            let field = format!("slices[{}].artifact", slice.index);
            Err(error(BlueprintErrorKind::UnknownArtifact, slice.artifact_line, field, reason))
        }
        None => Ok(()),
    }
}
