//! `cargo xtask test`: formatting, lints, then every test of the workspace under nextest.

use crate::util::{cargo, run};

pub fn test(args: &[String]) -> crate::TaskResult {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run(clippy)?;
    let mut probe = cargo();
    probe.args(["nextest", "--version"]).stdout(std::process::Stdio::null());
    if !probe.status().is_ok_and(|s| s.success()) {
        return Err("cargo-nextest is not installed: cargo install cargo-nextest --locked".into());
    }
    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(args);
    run(nextest)
}
