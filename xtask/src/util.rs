//! Helpers shared by tasks: the workspace root, running commands loudly, the target dir.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs a command in the foreground, echoing it; an unsuccessful exit is an error naming the command.
pub fn run(mut command: Command) -> crate::TaskResult {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("$ {shown}");
    let status = command.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Builds `aetherd` (debug, or release with `--release` in `args`) and returns its path.
pub fn build_aetherd(args: &[String]) -> Result<PathBuf, String> {
    let release = args.iter().any(|a| a == "--release");
    let mut command = cargo();
    command.args(["build", "-p", "aetherd"]);
    if release {
        command.arg("--release");
    }
    run(command)?;
    Ok(target_dir().join(if release { "release" } else { "debug" }).join("aetherd"))
}
