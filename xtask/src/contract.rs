//! `cargo xtask contract`: the management API checked against `mgmt/openapi.yaml` by schemathesis on a live
//! 3-node cluster (the ignored test `aetherd/tests/contract.rs`). Installs schemathesis ([`SCHEMATHESIS`],
//! from PyPI) into a venv under the target folder when it is missing or another version, and fails with one
//! line naming what is missing when it cannot (no python3, no venv module, PyPI unreachable).

use crate::util::{cargo, run, target_dir};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The schemathesis release the contract is checked with (pinned: a new release may add checks).
const SCHEMATHESIS: &str = "4.32.5";

/// The `st` program of the venv, installed when needed.
pub fn ensure_schemathesis() -> Result<PathBuf, String> {
    let venv = target_dir().join("contract").join("venv");
    let st = venv.join("bin").join("st");
    if installed_version(&st).is_some_and(|v| v.contains(SCHEMATHESIS)) {
        return Ok(st);
    }
    if !venv.join("bin").join("python").is_file() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create).map_err(|e| {
            format!("{e}: the contract test needs python3 with its venv module (Debian: apt-get install python3-venv)")
        })?;
    }
    let mut install = Command::new(venv.join("bin").join("pip"));
    install.args(["install", "--quiet", "--disable-pip-version-check", &format!("schemathesis=={SCHEMATHESIS}")]);
    run(install).map_err(|e| format!("{e}: cannot install schemathesis {SCHEMATHESIS} from PyPI"))?;
    match installed_version(&st) {
        Some(version) if version.contains(SCHEMATHESIS) => Ok(st),
        other => Err(format!("schemathesis {SCHEMATHESIS} did not install into {} ({other:?})", venv.display())),
    }
}

fn installed_version(st: &std::path::Path) -> Option<String> {
    let output = Command::new(st).arg("--version").stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs the contract test with `slices_repo` (built by the caller) as the nodes' repository.
pub fn run_contract(slices_repo: &std::path::Path) -> crate::TaskResult {
    let st = ensure_schemathesis()?;
    let mut test = cargo();
    test.env("AETHER_SCHEMATHESIS", &st).env("AETHER_SLICES_REPO", slices_repo);
    test.args(["test", "-p", "aetherd", "--test", "contract", "--", "--ignored", "--nocapture"]);
    run(test)
}

pub fn contract(args: &[String]) -> crate::TaskResult {
    if let Some(extra) = args.first() {
        return Err(format!(
            "contract takes no arguments (got `{extra}`); see AETHER_CONTRACT_* in aetherd/tests/contract.rs"
        ));
    }
    let repo = target_dir().join("test-slices-repo");
    crate::slices::build_slices(&["--repo".to_string(), repo.display().to_string()])?;
    run_contract(&repo)
}
