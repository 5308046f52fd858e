//! `cargo xtask bench <name>`: every benchmark runs in release mode, prints a table with its baseline and
//! the ratio, and writes JSON under `target/bench/`.
//!
//! `bench kv` and `bench app` take two more options, handled here before the bench binary runs:
//! - `--wrk`: the load comes from `wrk` instead of the in-process clients. wrk and the baselines of the run
//!   (nginx for `app`, etcd for `kv`) are installed with `apt-get install -y wrk nginx etcd-server` when
//!   missing and this runs as root; otherwise the task says what to install and runs without them (without
//!   wrk, on the in-process clients).
//! - `--profile`: a profiled phase after the measured rounds (kv: c=128 puts, node-1; app: forwarded calls,
//!   the entry node and the host) recorded with `perf record -g`, rendered as flame graphs under
//!   `target/bench/profile/`. perf (`linux-perf`) is installed the same way when missing. perf's `-g` walks
//!   frame pointers, which a release build leaves out (its stacks would end after one frame), and DWARF
//!   unwinding instead copies 8 KiB of stack per sample (hundreds of MB a phase, minutes of `perf
//!   script`); so the whole run uses an `aetherd` built with `-C force-frame-pointers=yes`, in its own
//!   target dir (`target/profiling`) so that the flags rebuild nothing else. Its figures carry the
//!   frame pointers' cost (a register and two instructions a call).

use crate::util::{cargo, run, target_dir};
use std::path::PathBuf;

pub fn bench(args: &[String]) -> crate::TaskResult {
    let Some((name, rest)) = args.split_first() else {
        return Err(
            "bench needs a name: transport, kv, app, consensus-core, invoke-local, slice-kv, dht, messaging, members, drain, rollout".into()
        );
    };
    match name.as_str() {
        "transport" => transport(rest),
        "kv" => kv(rest),
        "app" => app(rest),
        "consensus-core" => crate::sim::bench_consensus(rest),
        "invoke-local" => crate::slices::bench_invoke_local(rest),
        "slice-kv" => slice_kv(rest),
        "dht" => dht(rest),
        "messaging" => messaging(rest),
        "members" => members(rest),
        "drain" => drain(rest),
        "rollout" => rollout(rest),
        other => Err(format!(
            "unknown benchmark `{other}`: transport, kv, app, consensus-core, invoke-local, slice-kv, dht, messaging, \
             members, drain, rollout"
        )),
    }
}

fn transport(args: &[String]) -> crate::TaskResult {
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("transport.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "net", "--example", "transport_bench", "--"]);
    command.args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench kv [--seconds N] [--rounds N] [--levels C1,C2] [--baseline-aetherd PATH] [--auth] [--tls]
/// [--wrk] [--profile]`: KV puts on a 3-node cluster of release builds, and with the options on clusters with
/// authentication on, with `[tls]`, and of another `aetherd` build, side by side; then etcd when installed.
/// Each run also reports the servers' CPU time per put and the puts per consensus slot. `--wrk` drives the
/// puts with wrk (at node-1), `--profile` records node-1 under c=128 puts (`target/bench/profile/
/// kv-c128-node-1.svg`). Writes `{target}/bench/kv.json`.
fn kv(args: &[String]) -> crate::TaskResult {
    let (aetherd, args) = prepare(args, "etcd")?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("kv.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "kv", "--"]);
    command.arg("--aetherd").arg(&aetherd).args(&args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench app [--seconds N] [--rounds N] [--runs N] [--baseline-aetherd PATH] [--tls] [--hung N]
/// [--poll-management] [--wrk] [--profile]`: the app path, deploy and heal times on a 3-node cluster of release
/// builds, against tiny_http and (when installed) nginx, and with the options against a cluster of another
/// `aetherd` build, a cluster with `[tls]`, with hung calls in flight, or with a client polling the management
/// API, in the same rounds. `--wrk` drives every case with wrk, `--profile` records the entry node and the
/// host under forwarded calls (`target/bench/profile/app-forwarded-{entry,host}.svg`). Writes
/// `{target}/bench/app.json`.
fn app(args: &[String]) -> crate::TaskResult {
    let (aetherd, args) = prepare(args, "nginx")?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("app.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "app", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(&args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// For `bench kv` and `bench app`: installs what `--wrk` and `--profile` need (wrk and the `baseline`, nginx
/// or etcd; perf) when missing, builds the `aetherd` to run (with frame pointers under `--profile`), and
/// gives the bench binary's arguments: `--profile` becomes `--profile {target}/bench/profile`, and `--wrk`
/// is dropped when wrk could not be had.
fn prepare(args: &[String], baseline: &str) -> Result<(PathBuf, Vec<String>), String> {
    let wrk = args.iter().any(|a| a == "--wrk");
    let profile = args.iter().any(|a| a == "--profile");
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if wrk {
        let package = if baseline == "etcd" { "etcd-server" } else { baseline };
        wanted.extend([("wrk", "wrk"), (baseline, package)]);
    }
    if profile {
        wanted.push(("perf", "linux-perf"));
    }
    install_missing(&wanted);
    let mut rest: Vec<String> = args.iter().filter(|a| *a != "--profile").cloned().collect();
    if wrk && find_program("wrk").is_none() {
        eprintln!("wrk is not installed (apt-get install wrk): running on the in-process clients");
        rest.retain(|a| a != "--wrk");
    }
    if !profile {
        return Ok((crate::util::build_aetherd(&["--release".to_string()])?, rest));
    }
    let dir = target_dir().join("bench").join("profile");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    rest.push("--profile".to_string());
    rest.push(dir.display().to_string());
    Ok((build_profiled_aetherd()?, rest))
}

/// A release `aetherd` with frame pointers, in `{target}/profiling` (see the module comment for why).
fn build_profiled_aetherd() -> Result<PathBuf, String> {
    let target = target_dir().join("profiling");
    let mut command = cargo();
    command.env("RUSTFLAGS", "-C force-frame-pointers=yes").env("CARGO_TARGET_DIR", &target);
    command.args(["build", "--release", "-p", "aetherd"]);
    run(command)?;
    Ok(target.join("release").join("aetherd"))
}

/// Installs the `(program, Debian package)` pairs whose program is missing, with apt-get when root;
/// otherwise says what to install (the bench then runs without them).
fn install_missing(wanted: &[(&str, &str)]) {
    let packages: Vec<&str> =
        wanted.iter().filter(|(program, _)| find_program(program).is_none()).map(|w| w.1).collect();
    if packages.is_empty() {
        return;
    }
    if !running_as_root() {
        eprintln!("not installed: {0}; to include them, run as root or: apt-get install {0}", packages.join(" "));
        return;
    }
    let mut update = std::process::Command::new("apt-get");
    update.arg("update");
    let mut install = std::process::Command::new("apt-get");
    install.args(["install", "-y"]).args(&packages);
    if let Err(e) = run(update).and_then(|()| run(install)) {
        eprintln!("{e}: running without {}", packages.join(" "));
    }
}

/// The program `name` on `PATH` or in `/usr/sbin` and `/sbin` (where nginx lives).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    std::env::split_paths(&path).chain(system).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Whether this process runs as root (real uid 0, from `/proc/self/status`).
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|uids| uids.split_whitespace().next()) == Some("0")
}

/// `cargo xtask bench slice-kv [--seconds N]`: get and put through a slice's `ctx.kv()` (the echo probe route)
/// and through the management KV API, at 1 and 64 concurrent callers, on one 3-node cluster of release builds;
/// writes `{target}/bench/slice-kv.json`.
fn slice_kv(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("slice-kv.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "slice_kv", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench dht [--nodes 3,5] [--seconds N] [--blobs N] [--stored-mib N]`: the storage plane's 1 KiB
/// quorum puts and gets, 10 MiB artifact stores and fetches, and re-replication after a node loss, on clusters
/// of release builds, against nginx's WebDAV file serving in the same run; writes `{target}/bench/dht.json`.
fn dht(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("dht.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "dht", "--"]);
    command.arg("--aetherd").arg(&aetherd).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench messaging [--messages N] [--full-messages N] [--rounds N]`: publish-to-deliver latency
/// (p50, p99) and delivered messages per second, competing and broadcast, at 1,000 messages/s and at full speed,
/// on a 3-node cluster of release builds (`bench/src/bin/messaging.rs`); then single-active failover
/// (`bench/src/bin/failover.rs`) when that benchmark exists. Writes `{target}/bench/messaging.json` (and
/// `failover.json`).
fn messaging(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("messaging.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "messaging", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    let failover = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/src/bin/failover.rs");
    if !failover.exists() {
        println!("no single-active failover benchmark yet (bench/src/bin/failover.rs): skipped");
        return Ok(());
    }
    let json = out.join("failover.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "failover", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench members [--mib N] [--rounds N]`: a new member's time to catch up and vote with N MiB
/// (default 100) in the KV, under client load, against the time the data took to write
/// (`bench/src/bin/members.rs`). Writes `{target}/bench/members.json`.
fn members(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("members.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "members", "--"]);
    command.arg("--aetherd").arg(&aetherd).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench drain [--rounds N]`: the drain time of the busiest node of a 4-node cluster running
/// every example slice three times, under call load, against the blueprint's deploy time
/// (`bench/src/bin/drain.rs`). Writes `{target}/bench/drain.json`.
fn drain(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("drain.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "drain", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench rollout [--rounds N]`: rollout and re-post times of `echo` 1.0.0 <-> 2.0.0 on 3 nodes
/// under a fixed request rate, the requests that failed meanwhile, and the scaling reaction time, against the
/// blueprint's deploy time (`bench/src/bin/rollout.rs`). Writes `{target}/bench/rollout.json`.
fn rollout(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("rollout.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "rollout", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}
