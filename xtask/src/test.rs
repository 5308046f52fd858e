//! `cargo xtask test`: formatting, lints, the example slices, then every test of the workspace under
//! nextest, then the management API's contract test (schemathesis; see `contract`). The slices are built here, once, with this workspace's target directory, and handed to the
//! tests as `AETHER_SLICES_REPO`; otherwise the first test that needs them builds them (and this task's
//! own dependencies) in a target directory of its own while other tests wait.

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
    let repo = crate::util::target_dir().join("test-slices-repo");
    crate::slices::build_slices(&["--repo".to_string(), repo.display().to_string()])?;
    let mut nextest = cargo();
    nextest.env("AETHER_SLICES_REPO", &repo);
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(args);
    let suite = run(nextest);
    // The API contract (schemathesis, ignored by nextest) runs even when the suite failed, so one run reports both.
    let contract = crate::contract::run_contract(&repo);
    suite.and(contract)
}
