//! The control plane's visible latencies: deploy time (blueprint posted -> every instance ACTIVE) and heal
//! time (kill -9 of a hosting node -> fully active again elsewhere).

use crate::cluster::{blueprint, delete, elapsed_until, fully_active, healed, hosting_nodes, post};
use crate::load::median;
use crate::{DEMO_BLUEPRINT, SETTLE};
use devcluster::{wait_for, LocalCluster};
use std::time::{Duration, Instant};

/// Times of the runs that finished (ms) and how many did not within `SETTLE`.
#[derive(Default)]
pub struct Timings {
    pub ms: Vec<f64>,
    pub failed: usize,
    /// Heal runs: the node killed in each run.
    pub killed: Vec<String>,
}

impl Timings {
    pub fn record(&mut self, what: &str, run: usize, took: Option<Duration>) {
        match took {
            Some(d) => {
                let ms = d.as_secs_f64() * 1e3;
                eprintln!("{what} run {}: {ms:.1} ms", run + 1);
                self.ms.push(ms);
            }
            None => {
                eprintln!("{what} run {}: not done within {SETTLE:?}", run + 1);
                self.failed += 1;
            }
        }
    }

    /// (median, min, max), or `None` when no run finished.
    pub fn summary(&self) -> Option<(f64, f64, f64)> {
        let min = self.ms.iter().copied().min_by(f64::total_cmp)?;
        let max = self.ms.iter().copied().max_by(f64::total_cmp)?;
        Some((median(&self.ms)?, min, max))
    }
}

pub fn deploy_times(cluster: &LocalCluster, name: &str, text: &str, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for run in 0..runs {
        let start = Instant::now();
        let took = post(cluster, 0, text)
            .map_err(|e| eprintln!("deploy {name}: {e}"))
            .ok()
            .and_then(|()| elapsed_until(start, || fully_active(&blueprint(cluster, 0, name))));
        timings.record(&format!("deploy {name}"), run, took);
        delete(cluster, 0, name).expect("delete the blueprint between deploy runs");
    }
    timings
}

pub fn heal_times(cluster: &mut LocalCluster, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for run in 0..runs {
        post(cluster, 0, DEMO_BLUEPRINT).expect("deploy the demo blueprint before a heal run");
        wait_for(SETTLE, || fully_active(&blueprint(cluster, 0, "demo"))).expect("demo fully active before a kill");
        // Each run kills another hosting node in turn, so the leader (the smallest live id) is among them.
        let hosts = hosting_nodes(cluster, 0);
        let victim = *hosts.get(run % hosts.len().max(1)).expect("the demo has ACTIVE instances");
        let survivor = (victim + 1) % cluster.nodes.len();
        let dead = cluster.nodes[victim].id.clone();
        let start = Instant::now();
        cluster.kill(victim);
        let took = elapsed_until(start, || healed(&blueprint(cluster, survivor, "demo"), &dead));
        timings.record(&format!("heal after kill -9 of {dead}"), run, took);
        timings.killed.push(dead);
        cluster.start_node(victim).expect("restart the killed node");
        cluster.wait_ready(SETTLE).expect("restarted node ready");
        cluster.wait_connected(2, SETTLE).expect("restarted node connected to both peers");
        delete(cluster, survivor, "demo").expect("delete the demo blueprint between heal runs");
    }
    timings
}
