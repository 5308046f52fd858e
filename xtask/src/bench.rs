//! `cargo xtask bench <name>`: every benchmark runs in release mode, prints a table with its baseline and
//! the ratio, and writes JSON under `target/bench/`.

use crate::util::{cargo, run, target_dir};

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

/// `cargo xtask bench kv [--seconds N] [--rounds N] [--levels C1,C2] [--baseline-aetherd PATH] [--auth] [--tls]`:
/// KV puts on a 3-node cluster of release builds, and with the options on clusters with authentication on,
/// with `[tls]`, and of another `aetherd` build, side by side; then etcd when installed. Each run also reports
/// the servers' CPU time per put and the puts per consensus slot. Writes `{target}/bench/kv.json`.
fn kv(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("kv.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "kv", "--"]);
    command.arg("--aetherd").arg(&aetherd).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
}

/// `cargo xtask bench app [--seconds N] [--rounds N] [--runs N] [--baseline-aetherd PATH] [--tls] [--hung N]
/// [--poll-management]`: the app path, deploy and heal times on a 3-node cluster of release builds, against
/// tiny_http and (when installed) nginx, and with the options against a cluster of another `aetherd` build, a
/// cluster with `[tls]`, with hung calls in flight, or with a client polling the management API, in the same
/// rounds; writes `{target}/bench/app.json`.
fn app(args: &[String]) -> crate::TaskResult {
    let aetherd = crate::util::build_aetherd(&["--release".to_string()])?;
    crate::slices::build_slices(&[])?;
    let repo = target_dir().join("slices-repo");
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let json = out.join("app.json");
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "-p", "bench", "--bin", "app", "--"]);
    command.arg("--aetherd").arg(&aetherd).arg("--repo").arg(&repo).args(args).arg("--json").arg(&json);
    run(command)?;
    println!("wrote {}", json.display());
    Ok(())
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
