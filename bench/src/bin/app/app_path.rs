//! The app path through a cluster: which cases a run measures (local, forwarded, the baselines and the
//! optional ones), where each sends its load, and the rounds that alternate between them.

use crate::baselines::{Nginx, TinyHttp};
use crate::cluster::{cluster_servers, delete, deploy_echo, deploy_faulty, idle_cpu};
use crate::hung::HungCalls;
use crate::load::{load, Case, Server};
use crate::{Options, TINY_HTTP_THREADS};
use bench::profile::{self, Profile, Recording};
use bench::Client;
use devcluster::LocalCluster;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

// App path through the cluster

pub struct AppResults {
    pub host: String,
    pub via: String,
    pub nginx: Option<Case>,
    pub tiny: Case,
    pub local: Case,
    pub forwarded: Case,
    /// The previous `aetherd` build, same cases.
    pub baseline_local: Option<Case>,
    pub baseline_forwarded: Option<Case>,
    /// `[tls]` on: local over persistent TLS connections, then local with a new connection per request,
    /// plain and TLS (the handshake's cost).
    pub tls_local: Option<Case>,
    pub reconnect_plain: Option<Case>,
    pub reconnect_tls: Option<Case>,
    /// Local with hung calls to `faulty` in flight on the same port.
    pub local_hung: Option<Case>,
    /// Local while a client polls the host's management API (`--poll-management`).
    pub local_polled: Option<Case>,
    /// Each node's CPU at idle (metrics on), in percent of one core, measured before the load.
    pub idle_cpu: Vec<(String, Option<f64>)>,
    /// `--profile`: the entry node's and the host's profiles during one more forwarded phase.
    pub profiles: Vec<Profile>,
}

impl AppResults {
    pub fn cases(&self) -> Vec<&Case> {
        let optional = [
            &self.local_hung,
            &self.local_polled,
            &self.baseline_local,
            &self.baseline_forwarded,
            &self.tls_local,
            &self.reconnect_plain,
        ];
        self.nginx
            .iter()
            .chain([&self.tiny, &self.local, &self.forwarded])
            .chain(optional.into_iter().flatten())
            .chain(self.reconnect_tls.iter())
            .collect()
    }
}

/// Where one case sends its load, how, and which processes serve it.
pub struct Target {
    pub addr: SocketAddr,
    pub client: Client,
    pub servers: Vec<Server>,
    /// Hung calls to keep in flight on `addr` during the phase.
    pub hung: usize,
    /// A management port to poll during the phase.
    pub poll: Option<SocketAddr>,
}
/// The clusters measured besides the main one.
pub struct Extras<'a> {
    pub baseline: Option<&'a LocalCluster>,
    /// A cluster with `[tls]`, and the client trusting its certificate.
    pub tls: Option<(&'a LocalCluster, &'a Client)>,
}

pub fn bench_app(
    cluster: &LocalCluster,
    tiny: &TinyHttp,
    nginx: Option<&Nginx>,
    extras: Extras,
    options: &Options,
) -> AppResults {
    let (host, via) = deploy_echo(cluster, &Client::plain()).expect("deploy echo");
    let (host_id, via_id) = (cluster.nodes[host].id.clone(), cluster.nodes[via].id.clone());
    let hung = options.hung > 0
        && match deploy_faulty(cluster, host) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("faulty: {e}; no hung-calls case in this run");
                false
            }
        };
    let case = |name: String| Case { name, rounds: Vec::new() };
    let baseline = extras.baseline.and_then(|b| match deploy_echo(b, &Client::plain()) {
        Ok((host, via)) => Some((b, host, via)),
        Err(e) => {
            eprintln!("baseline: {e}; no baseline cases in this run");
            None
        }
    });
    let tls = extras.tls.map(|(c, client)| {
        let (host, _) = deploy_echo(c, client).expect("deploy echo on the TLS cluster");
        (c, client, host)
    });
    let mut app = AppResults {
        nginx: nginx.map(|_| case("nginx (1 worker)".into())),
        tiny: case(format!("tiny_http ({TINY_HTTP_THREADS} threads, in-process)")),
        local: case(format!("aether local ({host_id})")),
        forwarded: case(format!("aether forwarded ({via_id} -> {host_id})")),
        baseline_local: baseline.map(|_| case("baseline local".into())),
        baseline_forwarded: baseline.map(|_| case("baseline forwarded".into())),
        tls_local: tls.map(|_| case("aether local TLS".into())),
        reconnect_plain: tls.map(|_| case("aether local, conn/request".into())),
        reconnect_tls: tls.map(|_| case("aether local TLS, conn/request".into())),
        local_hung: hung.then(|| case(format!("aether local, {} hung calls in flight", options.hung))),
        local_polled: options.poll_management.then(|| case("aether local, management polled".into())),
        idle_cpu: if options.poll_management { idle_cpu(cluster, extras.baseline) } else { Vec::new() },
        profiles: Vec::new(),
        host: host_id,
        via: via_id,
    };
    let plain = Client::plain();
    let mut plan: Vec<(&mut Case, Target)> = Vec::new();
    if let (Some(case), Some(nginx)) = (app.nginx.as_mut(), nginx) {
        plan.push((
            case,
            Target { addr: nginx.addr, client: plain.clone(), servers: nginx.servers(), hung: 0, poll: None },
        ));
    }
    // Under wrk, tiny_http is the only work of this process: count it as the server.
    let tiny_servers = match options.wrk {
        Some(_) => vec![Server { name: "tiny_http (this process)".into(), pid: std::process::id() }],
        None => Vec::new(),
    };
    plan.push((
        &mut app.tiny,
        Target { addr: tiny.addr(), client: plain.clone(), servers: tiny_servers, hung: 0, poll: None },
    ));
    let ours = cluster_servers(cluster, "");
    let at = |c: &LocalCluster, node: usize, client: &Client, servers: &[Server]| Target {
        addr: c.nodes[node].app,
        client: client.clone(),
        servers: servers.iter().map(|s| Server { name: s.name.clone(), pid: s.pid }).collect(),
        hung: 0,
        poll: None,
    };
    plan.push((&mut app.local, at(cluster, host, &plain, &ours)));
    if let Some(case) = app.local_hung.as_mut() {
        plan.push((case, Target { hung: options.hung, ..at(cluster, host, &plain, &ours) }));
    }
    if let Some(case) = app.local_polled.as_mut() {
        plan.push((case, Target { poll: Some(cluster.nodes[host].management), ..at(cluster, host, &plain, &ours) }));
    }
    plan.push((&mut app.forwarded, at(cluster, via, &plain, &ours)));
    if let (Some(local), Some(forwarded), Some((b, host, via))) =
        (app.baseline_local.as_mut(), app.baseline_forwarded.as_mut(), baseline)
    {
        let servers = cluster_servers(b, "baseline ");
        plan.push((local, at(b, host, &plain, &servers)));
        plan.push((forwarded, at(b, via, &plain, &servers)));
    }
    if let (Some(tls_local), Some(reconnect_plain), Some(reconnect_tls), Some((c, client, tls_host))) =
        (app.tls_local.as_mut(), app.reconnect_plain.as_mut(), app.reconnect_tls.as_mut(), tls)
    {
        let servers = cluster_servers(c, "tls ");
        plan.push((tls_local, at(c, tls_host, client, &servers)));
        plan.push((reconnect_plain, at(cluster, host, &plain.clone().reconnecting(), &ours)));
        plan.push((reconnect_tls, at(c, tls_host, &client.clone().reconnecting(), &servers)));
    }
    for round in 0..options.rounds {
        for (case, target) in plan.iter_mut() {
            let name = format!("round {} {}", round + 1, case.name);
            let hung = (target.hung > 0).then(|| HungCalls::start(target.addr, target.hung));
            if hung.is_some() {
                // Let the hung calls reach the slice (and the rest be refused) before measuring.
                std::thread::sleep(Duration::from_millis(500));
            }
            let poller = target.poll.map(bench::poll::ManagementPoller::start);
            case.rounds.push(load(&name, target, options.load, options.wrk.as_deref()));
            if let Some(poller) = poller {
                let report = poller.stop();
                eprintln!(
                    "{name}: management answers {:?}; event stream status {} ({} bytes)",
                    report.answers, report.stream_status, report.stream_bytes
                );
            }
            if let Some(hung) = hung {
                let mut answers: Vec<(u16, u64)> = hung.stop().into_iter().collect();
                answers.sort();
                eprintln!("{name}: hung calls answered {answers:?} (0: still in flight at the end)");
            }
        }
    }
    drop(plan);
    if let Some(dir) = &options.profile {
        let target = at(cluster, via, &plain, &ours);
        let nodes = [(via, "entry"), (host, "host")].map(|(i, role)| (cluster.pid(i).unwrap_or(0), role));
        app.profiles = profile_forwarded(&target, &nodes, options, dir);
    }
    if hung {
        // Its instances hold hung calls for good: they leave the cluster only as far as the node can
        // unload them, so neither deletion is waited for to the end.
        for name in ["bench-faulty", "bench-echo"] {
            if let Err(e) = delete(cluster, 0, name) {
                eprintln!("deleting {name}: {e}");
            }
        }
    } else {
        delete(cluster, 0, "bench-echo").expect("delete the echo blueprint");
    }
    app
}

/// `--profile`: one more forwarded phase, counted in no table, with perf attached to each of `nodes` (pid,
/// role: the entry node the clients hit and the echo host); their flame graphs go into `dir` as
/// `app-forwarded-{role}.svg` (and `.folded`, `.perf.data`).
fn profile_forwarded(target: &Target, nodes: &[(u32, &str)], options: &Options, dir: &Path) -> Vec<Profile> {
    let Some(perf) = profile::perf() else {
        eprintln!("--profile: perf is not installed (apt-get install linux-perf): no profile in this run");
        return Vec::new();
    };
    let mut recordings = Vec::new();
    for &(pid, role) in nodes {
        let name = format!("app-forwarded-{role}");
        match Recording::start(&perf, pid, dir, &name) {
            Ok(recording) => recordings.push((recording, name, role)),
            Err(e) => eprintln!("--profile: {e}"),
        }
    }
    let phase = load("profiled forwarded", target, options.load, options.wrk.as_deref());
    let mut profiles = Vec::new();
    for (recording, name, role) in recordings {
        let title = format!(
            "forwarded GET {} at c={}, {role} node: {:.0} req/s",
            crate::ECHO_PATH,
            crate::concurrency(),
            phase.run.ops_per_s()
        );
        match recording.stop().and_then(|recorded| profile::render(&perf, &recorded, dir, &name, &title)) {
            Ok(profile) => profiles.push(profile),
            Err(e) => eprintln!("--profile: {e}"),
        }
    }
    profiles
}
