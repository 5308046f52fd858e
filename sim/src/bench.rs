//! bench
pub fn run_table(_commands: u64) {}
