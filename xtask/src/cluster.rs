//! `cargo xtask cluster up N | down | status` and `cargo xtask run`: local clusters of real processes on
//! the documented ports (node i: management 8080+100i, app 8081+100i, cluster 8090+100i).

use crate::util::{build_aetherd, target_dir};
use devcluster::{terminate_pid, ClusterSpec, LocalCluster};
use std::path::PathBuf;
use std::time::Duration;

const BASE_PORT: u16 = 8080;

fn cluster_dir() -> PathBuf {
    target_dir().join("aether-cluster")
}

fn spec(nodes: usize, aetherd: PathBuf) -> ClusterSpec {
    let mut spec = ClusterSpec::new(nodes, &cluster_dir(), &aetherd);
    spec.base_port = Some(BASE_PORT);
    spec.env.clear();
    spec
}

pub fn cluster(args: &[String]) -> crate::TaskResult {
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("down") => down(),
        _ => Err("usage: cargo xtask cluster up N [--release] | down".into()),
    }
}

fn up(args: &[String]) -> crate::TaskResult {
    let nodes: usize = match args.first() {
        Some(n) => n.parse().map_err(|_| format!("'{n}' is not a node count"))?,
        None => 3,
    };
    if !(1..=9).contains(&nodes) {
        return Err("a local cluster has 1 to 9 nodes".into());
    }
    let pid_file = cluster_dir().join("pids");
    if pid_file.exists() {
        return Err(format!("a cluster is already up ({}); run `cargo xtask cluster down` first", pid_file.display()));
    }
    let aetherd = build_aetherd(args)?;
    let _ = std::fs::remove_dir_all(cluster_dir());
    let cluster = LocalCluster::start(spec(nodes, aetherd))?;
    let healthy = cluster.wait_connected(nodes as u64 - 1, Duration::from_secs(20));
    print_nodes(&cluster);
    healthy?;
    let pids = cluster.detach();
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::fs::write(&pid_file, text.join("\n")).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    println!("cluster is up; stop it with `cargo xtask cluster down`");
    Ok(())
}

fn down() -> crate::TaskResult {
    let pid_file = cluster_dir().join("pids");
    let text = std::fs::read_to_string(&pid_file).map_err(|_| "no cluster is up".to_string())?;
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        if terminate_pid(pid, Duration::from_secs(5)) {
            println!("stopped process {pid}");
        }
    }
    std::fs::remove_file(&pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    Ok(())
}

/// `cargo xtask run`: three nodes in the foreground until Ctrl-C.
pub fn run_local(args: &[String]) -> crate::TaskResult {
    let aetherd = build_aetherd(args)?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let _ = std::fs::remove_dir_all(cluster_dir());
    let mut cluster = LocalCluster::start(spec(3, aetherd))?;
    let healthy = cluster.wait_connected(2, Duration::from_secs(20));
    print_nodes(&cluster);
    if let Err(e) = healthy {
        return Err(format!("{e}; see the logs above"));
    }
    println!("\ntry:");
    println!("  curl -s localhost:8080/api/health");
    println!("  curl -s localhost:8080/api/nodes");
    println!("\nCtrl-C stops the cluster.");
    let _ = signals.forever().next();
    println!("\nstopping...");
    for i in 0..cluster.nodes.len() {
        cluster.stop(i, Duration::from_secs(5));
    }
    Ok(())
}

fn print_nodes(cluster: &LocalCluster) {
    println!("{:<8} {:<22} {:<22} {:<22} log", "node", "management", "app", "cluster");
    for node in &cluster.nodes {
        println!(
            "{:<8} {:<22} {:<22} {:<22} {}",
            node.id,
            format!("http://{}", node.management),
            format!("http://{}", node.app),
            node.cluster,
            node.log.display()
        );
    }
}
