//! Load phases of the app bench: one warm-up second, then a measured run by the in-process clients or by
//! wrk (`--wrk`), and what each phase cost in CPU from `/proc` (the servers' processes and thread groups,
//! the load generator, the rest of the machine); a case's rounds and the ratios between cases.

use crate::app_path::Target;
use crate::{concurrency, ECHO_PATH, WARMUP};
use bench::wrk::WrkRun;
use bench::{run_load, Client, Request, RunResult};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

// Load phases

/// One measured load phase, with where its CPU went.
pub struct Phase {
    pub run: RunResult,
    pub cpu: Option<CpuUse>,
    /// Server CPU per request by process and thread group (`node-1 app-http`), largest first.
    pub threads: Vec<(String, f64)>,
}

/// One case of the load comparison, measured once per round; rounds alternate between the cases so that
/// other work on the machine, which comes and goes, falls on all of them alike.
pub struct Case {
    pub name: String,
    pub rounds: Vec<Phase>,
}

impl Case {
    /// Every round as one: requests and time summed, latencies pooled, CPU figures weighted by requests.
    pub fn merged(&self) -> Phase {
        let run = RunResult::pool(self.rounds.iter().map(|p| &p.run));
        let total = run.ops.max(1) as f64;
        let weighted = |f: fn(&CpuUse) -> f64| -> Option<f64> {
            let parts: Option<Vec<f64>> =
                self.rounds.iter().map(|p| p.cpu.as_ref().map(|c| f(c) * p.run.ops as f64)).collect();
            parts.map(|p| p.iter().sum::<f64>() / total)
        };
        let cpu = match (
            weighted(|c| c.this_process_us_per_request),
            weighted(|c| c.servers_us_per_request),
            weighted(|c| c.servers_switches_per_request),
        ) {
            (Some(this_process_us_per_request), Some(servers_us_per_request), Some(servers_switches_per_request)) => {
                let seconds = self.rounds.iter().map(|p| p.run.seconds).sum::<f64>().max(1e-9);
                let others = self.rounds.iter().filter_map(|p| Some(p.cpu?.others_share * p.run.seconds)).sum::<f64>();
                Some(CpuUse {
                    this_process_us_per_request,
                    servers_us_per_request,
                    servers_switches_per_request,
                    others_share: others / seconds,
                })
            }
            _ => None,
        };
        let mut groups: HashMap<&str, f64> = HashMap::new();
        for phase in &self.rounds {
            for (group, us) in &phase.threads {
                *groups.entry(group).or_default() += us * phase.run.ops as f64 / total;
            }
        }
        let mut threads: Vec<(String, f64)> = groups.into_iter().map(|(g, us)| (g.to_string(), us)).collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        Phase { run, cpu, threads }
    }
}

/// Median over rounds of `a`'s requests/s over `b`'s in the same round.
pub fn round_ratio(a: &Case, b: &Case) -> f64 {
    round_ratio_of(a, b, RunResult::ops_per_s)
}

/// Median over rounds of `metric` of `a` over `metric` of `b` in the same round.
pub fn round_ratio_of(a: &Case, b: &Case, metric: fn(&RunResult) -> f64) -> f64 {
    let ratios: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| metric(&x.run) / metric(&y.run)).collect();
    median(&ratios).unwrap_or(f64::NAN)
}

pub fn p50(run: &RunResult) -> f64 {
    run.percentile_us(50.0)
}

pub fn p99(run: &RunResult) -> f64 {
    run.percentile_us(99.0)
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// A server process to account CPU to, and the name to show for it.
pub struct Server {
    pub name: String,
    pub pid: u32,
}

/// Each live thread of `servers`: (pid, tid) -> (group shown, ticks); a group is the thread name less its
/// number (`app-http-3` -> `app-http`).
pub fn thread_sample(servers: &[Server]) -> HashMap<(u32, u32), (String, u64)> {
    let mut out = HashMap::new();
    for server in servers {
        for (tid, name, ticks) in bench::thread_cpu_ticks(server.pid) {
            let group = name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-');
            out.insert((server.pid, tid), (format!("{} {group}", server.name), ticks));
        }
    }
    out
}

/// CPU per request by thread group between two samples (threads that exited in between are lost).
pub fn thread_use(
    before: &HashMap<(u32, u32), (String, u64)>,
    after: &HashMap<(u32, u32), (String, u64)>,
    requests: u64,
) -> Vec<(String, f64)> {
    let mut groups: HashMap<&str, u64> = HashMap::new();
    for (key, (group, ticks)) in after {
        let earlier = before.get(key).map_or(0, |(_, t)| *t);
        *groups.entry(group).or_default() += ticks.saturating_sub(earlier);
    }
    let per_request = |ticks: u64| ticks as f64 * 1e6 / bench::CPU_TICKS_PER_S / (requests.max(1) as f64);
    let mut out: Vec<(String, f64)> =
        groups.into_iter().filter(|(_, t)| *t > 0).map(|(g, t)| (g.to_string(), per_request(t))).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// CPU spent during a phase, from `/proc`: by this process (the clients, and the tiny_http baseline when
/// it runs), by the server processes, and by everything else on the machine (other work sharing the cores).
#[derive(Clone, Copy)]
pub struct CpuUse {
    /// The load generator: this process (the in-process clients, and tiny_http when it is measured), or
    /// under `--wrk` the wrk runs this process waited for.
    pub this_process_us_per_request: f64,
    pub servers_us_per_request: f64,
    /// Context switches of the server processes' threads per request: each is a thread hand-off or a
    /// blocking wait, the main cost of a small request after the syscalls.
    pub servers_switches_per_request: f64,
    /// Busy time of other processes, as a share of all the cores over the phase.
    pub others_share: f64,
}

#[derive(Clone, Copy)]
pub struct CpuSample {
    pub machine: u64,
    pub this_process: u64,
    pub servers: u64,
    pub servers_switches: u64,
}

pub fn cpu_sample(servers: &[u32], wrk: bool) -> Option<CpuSample> {
    let me = std::process::id();
    Some(CpuSample {
        machine: bench::machine_busy_ticks()?,
        this_process: if wrk { bench::waited_children_cpu_ticks(me)? } else { bench::process_cpu_ticks(me)? },
        servers: servers.iter().filter_map(|&pid| bench::process_cpu_ticks(pid)).sum(),
        servers_switches: servers.iter().map(|&pid| bench::process_context_switches(pid)).sum(),
    })
}

pub fn cpu_use(before: CpuSample, after: CpuSample, run: &RunResult, cores: usize) -> CpuUse {
    let us = |ticks: u64| ticks as f64 * 1e6 / bench::CPU_TICKS_PER_S;
    let per_request = |ticks: u64| us(ticks) / (run.ops.max(1) as f64);
    let this_process = after.this_process.saturating_sub(before.this_process);
    let servers = after.servers.saturating_sub(before.servers);
    let others = after.machine.saturating_sub(before.machine).saturating_sub(this_process + servers);
    CpuUse {
        this_process_us_per_request: per_request(this_process),
        servers_us_per_request: per_request(servers),
        servers_switches_per_request: after.servers_switches.saturating_sub(before.servers_switches) as f64
            / (run.ops.max(1) as f64),
        others_share: us(others) / (run.seconds * 1e6 * cores as f64),
    }
}

/// One warm-up second (connections opened, caches and pools warm), then the measured run, by the in-process
/// clients or by wrk (`wrk`: its path); `servers` are the processes serving it.
pub fn load(name: &str, target: &Target, duration: Duration, wrk: Option<&Path>) -> Phase {
    let servers = &target.servers[..];
    let _ = drive(target, WARMUP, wrk);
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let (before, threads_before) = (cpu_sample(&pids, wrk.is_some()), thread_sample(servers));
    let run = drive(target, duration, wrk);
    let (after, threads_after) = (cpu_sample(&pids, wrk.is_some()), thread_sample(servers));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = before.zip(after).map(|(b, a)| cpu_use(b, a, &run, cores));
    let threads = thread_use(&threads_before, &threads_after, run.ops);
    eprintln!(
        "{name}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, errors {}",
        run.ops_per_s(),
        run.percentile_us(50.0),
        run.percentile_us(99.0),
        run.errors
    );
    Phase { run, cpu, threads }
}

/// `GET /echo/hello` at `--connections` connections for `duration`; a wrk run that fails is reported and
/// counts as one error.
fn drive(target: &Target, duration: Duration, wrk: Option<&Path>) -> RunResult {
    let client = &target.client;
    let Some(bin) = wrk else {
        let echo = Arc::new(|_: usize, _: u64| Request { method: "GET", path: ECHO_PATH.into(), body: Vec::new() });
        return run_load(&[target.addr], concurrency(), duration, client, |s| s == 200, echo);
    };
    let scheme = if client.tls.is_some() { "https" } else { "http" };
    let run = WrkRun {
        url: format!("{scheme}://{}{ECHO_PATH}", target.addr),
        connections: concurrency(),
        duration,
        headers: wrk_headers(client),
        script: None,
    };
    run.run(bin).unwrap_or_else(|e| {
        eprintln!("{e}");
        RunResult { errors: 1, seconds: duration.as_secs_f64(), ..RunResult::default() }
    })
}

/// The client's header lines for wrk's `-H`, with `Connection: close` when it opens a connection per request.
fn wrk_headers(client: &Client) -> Vec<String> {
    let mut headers: Vec<String> = client.headers.split("\r\n").filter(|h| !h.is_empty()).map(String::from).collect();
    if client.new_connection_per_request {
        headers.push("Connection: close".to_string());
    }
    headers
}
