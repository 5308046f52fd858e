//! `cargo xtask build-slices` and `cargo xtask bench invoke-local`.

pub fn build_slices(_args: &[String]) -> crate::TaskResult {
    Err("build-slices: not available yet".into())
}

pub fn bench_invoke_local(_args: &[String]) -> crate::TaskResult {
    Err("bench invoke-local: not available yet".into())
}
