//! `cargo xtask cluster up N | down` and `cargo xtask run`: local clusters of real processes on the
//! documented ports (node i, from 1: management 8080+100(i-1), app 8081+100(i-1), cluster 8090+100(i-1)).

use crate::util::{build_aetherd, root, target_dir};
use devcluster::{http, terminate_pid, wait_for, ClusterSpec, LocalCluster};
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
    spec.extra_args = vec!["--repo".into(), target_dir().join("slices-repo").display().to_string()];
    spec
}

/// Builds the example slices into `target/slices-repo`, which every local node uses as its repository.
fn build_slices() -> crate::TaskResult {
    crate::slices::build_slices(&[])
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
    build_slices()?;
    let _ = std::fs::remove_dir_all(cluster_dir());
    let cluster = LocalCluster::start(spec(nodes, aetherd))?;
    let healthy = cluster.wait_ready(Duration::from_secs(20));
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

/// `cargo xtask run`: three nodes in the foreground with the demo blueprint deployed, until Ctrl-C.
pub fn run_local(args: &[String]) -> crate::TaskResult {
    let aetherd = build_aetherd(args)?;
    build_slices()?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let _ = std::fs::remove_dir_all(cluster_dir());
    let mut cluster = LocalCluster::start(spec(3, aetherd))?;
    let healthy = cluster.wait_ready(Duration::from_secs(20));
    print_nodes(&cluster);
    if let Err(e) = healthy {
        return Err(format!("{e}; see the logs above"));
    }
    deploy_demo(&cluster)?;
    println!("\ntry:");
    println!("  curl -s localhost:8081/echo/hello");
    println!("  curl -s localhost:8181/echo/hello          # any node serves every route");
    println!("  curl -s -X POST localhost:8281/orders -d '{{\"item\": \"book\", \"qty\": 2}}'");
    println!(
        "  curl -si -X POST localhost:8081/links -d '{{\"url\": \"https://example.com\"}}'   # 201, Location: /links/1"
    );
    println!("  curl -si localhost:8181/links/1          # 302 to the URL, from any node");
    println!("  curl -s localhost:8080/api/status");
    println!("  curl -s localhost:8080/api/blueprints/demo");
    println!("  curl -s localhost:8080/api/slices");
    println!(
        "  curl -s -X PUT localhost:8080/api/kv/user/greeting -d hello && curl -s localhost:8180/api/kv/user/greeting"
    );
    println!("\nCtrl-C stops the cluster.");
    let _ = signals.forever().next();
    println!("\nstopping...");
    for i in 0..cluster.nodes.len() {
        cluster.stop(i, Duration::from_secs(5));
    }
    Ok(())
}

/// Posts `blueprints/demo.toml` and waits until every slice of it is ACTIVE.
fn deploy_demo(cluster: &LocalCluster) -> crate::TaskResult {
    let path = root().join("blueprints").join("demo.toml");
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mgmt = cluster.nodes[0].management;
    let posted = http(mgmt, "POST", "/api/blueprints", &text).map_err(|e| format!("posting the blueprint: {e}"))?;
    if posted.status != 201 {
        return Err(format!("the demo blueprint was refused: {}", posted.text()));
    }
    let started = std::time::Instant::now();
    let active = wait_for(Duration::from_secs(30), || {
        http(mgmt, "GET", "/api/blueprints/demo", b"").is_ok_and(|r| {
            r.json()["slices"]
                .as_array()
                .is_some_and(|s| s.iter().all(|x| x["active"].as_u64() == x["desired"].as_u64()))
        })
    });
    if active.is_err() {
        return Err("the demo blueprint did not become ACTIVE within 30 s; see the node logs".into());
    }
    println!(
        "\nblueprint 'demo' deployed in {} ms (echo, shortener, orders, inventory, pricing)",
        started.elapsed().as_millis()
    );
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
