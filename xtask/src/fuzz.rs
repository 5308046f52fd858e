//! `cargo xtask fuzz <wire|blueprint|keys|consensus> [--seconds N]`: coverage-guided fuzzing of the parsers of
//! outside input (frames, blueprints, keys and KV commands, consensus and invoke messages) with libFuzzer
//! (through `libfuzzer-sys`) on the stable toolchain: the sanitizer-coverage instrumentation is enabled
//! with stable `-C` flags, so neither nightly nor cargo-fuzz is needed.

use crate::util::{root, run, target_dir};
use std::process::Command;

const TARGETS: &[&str] = &["wire", "blueprint", "keys", "consensus"];

pub fn fuzz(args: &[String]) -> crate::TaskResult {
    let Some((target, rest)) = args.split_first() else {
        return Err(format!("fuzz needs a target: {}", TARGETS.join(", ")));
    };
    if !TARGETS.contains(&target.as_str()) {
        return Err(format!("unknown fuzz target `{target}`: {}", TARGETS.join(", ")));
    }
    let seconds: u64 = match rest.iter().position(|a| a == "--seconds") {
        Some(i) => rest.get(i + 1).and_then(|s| s.parse().ok()).ok_or("--seconds needs a number")?,
        None => 60,
    };
    let fuzz_dir = root().join("fuzz");
    let build_dir = target_dir().join("fuzz");
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ];
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(&fuzz_dir).env("RUSTFLAGS", flags.join(" ")).env("CARGO_TARGET_DIR", &build_dir);
    // An explicit --target keeps RUSTFLAGS (the instrumentation) off build scripts and proc macros.
    let triple = host_triple()?;
    build.args(["build", "--release", "--bin", target, "--target", &triple]);
    run(build)?;
    let corpus = build_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut fuzzer = Command::new(build_dir.join(&triple).join("release").join(target));
    fuzzer.arg(&corpus).arg(format!("-max_total_time={seconds}")).arg("-max_len=70000");
    run(fuzzer)
}

fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc").arg("-vV").output().map_err(|e| format!("cannot run rustc: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "rustc -vV printed no host triple".to_string())
}
