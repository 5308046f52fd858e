//! `cargo xtask sim`, `cargo xtask sim dht` and `cargo xtask bench consensus-core`: all run the `aether-sim`
//! binary of the `sim` crate in release mode from the workspace root, passing the arguments through
//! (`sim dht ...` runs `aether-sim dht ...`, the storage plane's simulator).

use std::path::PathBuf;
use std::process::Command;

pub fn sim(args: &[String]) -> crate::TaskResult {
    match args.split_first() {
        Some((first, rest)) if first == "dht" => run_aether_sim("dht", rest),
        _ => run_aether_sim("sim", args),
    }
}

pub fn bench_consensus(args: &[String]) -> crate::TaskResult {
    run_aether_sim("bench", args)
}

fn run_aether_sim(task: &str, args: &[String]) -> crate::TaskResult {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--release", "-p", "sim", "--bin", "aether-sim", "--", task])
        .args(args)
        .status()
        .map_err(|error| format!("could not start cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("aether-sim {task} failed ({status})"))
    }
}

fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}
