//! `cargo xtask sim` and `cargo xtask bench consensus-core`.

pub fn sim(_args: &[String]) -> crate::TaskResult {
    Err("sim: not available yet".into())
}

pub fn bench_consensus(_args: &[String]) -> crate::TaskResult {
    Err("bench consensus-core: not available yet".into())
}
