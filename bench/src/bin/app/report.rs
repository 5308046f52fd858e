//! The app bench's report: the table of cases, CPU per request and by thread group, the ratios and the
//! targets, the control-plane timings, and the JSON file.

use crate::app_path::AppResults;
use crate::control::Timings;
use crate::load::{median, p50, p99, round_ratio, round_ratio_of, Case, CpuUse, Phase};
use crate::{concurrency, DEPLOY_TARGET_MS, ECHO_PATH, HEAL_TARGET_MS, LOCAL_TARGET_RATIO, SETTLE, WARMUP};
use bench::RunResult;
use serde_json::{json, Value};
use std::path::Path;

pub struct Results {
    pub cores: usize,
    pub seconds: f64,
    pub rounds: usize,
    /// Whether wrk made the load (`--wrk`) rather than the in-process clients.
    pub wrk: bool,
    pub app: AppResults,
    pub deploy_echo: Timings,
    pub deploy_demo: Timings,
    pub heal: Timings,
}

pub fn report(r: &Results, json_path: Option<&Path>) {
    let cases: Vec<(&Case, Phase)> = r.app.cases().into_iter().map(|c| (c, c.merged())).collect();
    println!(
        "\nApp path: GET {ECHO_PATH}, {} keep-alive connections; {} rounds, each case {:.0} s per round \
         after {:.0} s warm-up",
        concurrency(),
        r.rounds,
        r.seconds,
        WARMUP.as_secs_f64()
    );
    let generator = if r.wrk { "wrk -t2 (p50/p99 as wrk reports them)" } else { "the in-process clients" };
    println!("Load from {generator}.");
    println!("Clients and servers share the same {} cores: each figure includes the load generator's cost.", r.cores);
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>10} {:>7}",
        "case (all rounds)",
        "req/s",
        "p50 µs",
        "p99 µs",
        "errors",
        "client µs/r",
        "server µs/r",
        "server cs/r",
        "others"
    );
    for (case, merged) in &cases {
        print_row(&case.name, merged);
    }
    if r.wrk {
        println!("CPU per request from /proc: `client` is wrk, `server` the server processes (every aetherd node;");
        println!("for tiny_http this process), `cs/r` their context switches per request,");
    } else {
        println!("CPU per request from /proc: `client` is this process (the clients; for tiny_http, clients and");
        println!(
            "server), `server` the server processes (every aetherd node), `cs/r` their context switches per request,"
        );
    }
    println!("`others` the rest of the machine's busy time (other work on these cores during the phase).");
    println!("req/s by round:");
    for (case, _) in &cases {
        let rounds: Vec<String> = case.rounds.iter().map(|p| format!("{:.0}", p.run.ops_per_s())).collect();
        println!("  {:<38} {}", case.name, rounds.join("  "));
    }
    println!("Where the servers' CPU goes, µs per request by process and thread group (largest first;");
    println!("`app-io` is the app port's I/O thread, `app-http` its workers; threads that exited are not counted):");
    for (case, merged) in &cases {
        let groups: Vec<String> = merged.threads.iter().take(6).map(|(g, us)| format!("{g} {us:.1}")).collect();
        if !groups.is_empty() {
            println!("  {}: {}", case.name, groups.join(", "));
        }
    }
    let ratios = ratios(&r.app);
    println!("Ratios (requests/s unless named; p50/p99 above 1 are slower), median over rounds of the ratio within");
    println!("each round:");
    for (name, value) in &ratios {
        println!("  {name}: {value:.2}x");
    }
    let added = |metric: fn(&RunResult) -> f64| {
        let rounds = r.app.forwarded.rounds.iter().zip(&r.app.local.rounds);
        median(&rounds.map(|(f, l)| metric(&f.run) - metric(&l.run)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    println!(
        "The forwarding hop: forwarded minus local, median over rounds: p50 {:+.0} µs, p99 {:+.0} µs",
        added(p50),
        added(p99)
    );
    print_verdict_app(&r.app);
    if !r.app.idle_cpu.is_empty() {
        let idle: Vec<String> =
            r.app.idle_cpu.iter().map(|(node, cpu)| format!("{node} {:.2}%", cpu.unwrap_or(f64::NAN))).collect();
        println!("CPU of each node at idle with metrics on (percent of one core, over 10 s): {}", idle.join(", "));
    }
    for profile in &r.app.profiles {
        profile.print();
    }
    println!("\nControl plane, {} runs each: median (min - max)", r.deploy_echo.ms.len() + r.deploy_echo.failed);
    print_timing("deploy echo (1 instance)", &r.deploy_echo, DEPLOY_TARGET_MS);
    print_timing("deploy demo (6 instances, 4 slices)", &r.deploy_demo, DEPLOY_TARGET_MS);
    print_timing("heal demo after kill -9", &r.heal, HEAL_TARGET_MS);
    if let Some(path) = json_path {
        let doc = to_json(r, &cases, &ratios);
        if let Err(e) = std::fs::write(path, format!("{doc:#}\n")) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

pub fn print_row(name: &str, phase: &Phase) {
    let run = &phase.run;
    let cpu = |f: fn(&CpuUse) -> f64, scale: f64| phase.cpu.as_ref().map_or(f64::NAN, |c| f(c) * scale);
    println!(
        "{name:<40} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>11.1} {:>11.1} {:>10.1} {:>6.0}%",
        run.ops_per_s(),
        run.percentile_us(50.0),
        run.percentile_us(99.0),
        run.errors,
        cpu(|c| c.this_process_us_per_request, 1.0),
        cpu(|c| c.servers_us_per_request, 1.0),
        cpu(|c| c.servers_switches_per_request, 1.0),
        cpu(|c| c.others_share, 100.0),
    );
}

pub fn ratios(app: &AppResults) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(nginx) = &app.nginx {
        out.push(("local / nginx".to_string(), round_ratio(&app.local, nginx)));
        out.push(("forwarded / nginx".to_string(), round_ratio(&app.forwarded, nginx)));
    }
    out.push(("local / tiny_http".to_string(), round_ratio(&app.local, &app.tiny)));
    out.push(("forwarded / tiny_http".to_string(), round_ratio(&app.forwarded, &app.tiny)));
    out.push(("forwarded / local".to_string(), round_ratio(&app.forwarded, &app.local)));
    let mut compare = |name: &str, a: &Case, b: &Case| {
        out.push((format!("{name} req/s"), round_ratio(a, b)));
        out.push((format!("{name} p50"), round_ratio_of(a, b, p50)));
        out.push((format!("{name} p99"), round_ratio_of(a, b, p99)));
    };
    if let (Some(local), Some(forwarded)) = (&app.baseline_local, &app.baseline_forwarded) {
        compare("local / baseline local", &app.local, local);
        compare("forwarded / baseline forwarded", &app.forwarded, forwarded);
    }
    if let Some(hung) = &app.local_hung {
        compare("local with hung calls / local", hung, &app.local);
    }
    if let Some(polled) = &app.local_polled {
        compare("local with management polled / local", polled, &app.local);
    }
    if let Some(tls) = &app.tls_local {
        compare("TLS local / local (keep-alive)", tls, &app.local);
    }
    if let (Some(plain), Some(tls)) = (&app.reconnect_plain, &app.reconnect_tls) {
        compare("TLS / plain, conn per request", tls, plain);
        compare("plain conn per request / keep-alive", plain, &app.local);
    }
    if let (Some(nginx), Some(local)) = (&app.nginx, &app.baseline_local) {
        out.push(("baseline local / nginx".to_string(), round_ratio(local, nginx)));
    }
    out
}

pub fn print_verdict_app(app: &AppResults) {
    let (ratio, name) = match &app.nginx {
        Some(nginx) => (round_ratio(&app.local, nginx), "nginx"),
        None => (round_ratio(&app.local, &app.tiny), "tiny_http (nginx not installed: apt-get install nginx)"),
    };
    let verdict = if ratio >= LOCAL_TARGET_RATIO { "met" } else { "MISSED" };
    println!("target: local >= {LOCAL_TARGET_RATIO}x {name} req/s: {ratio:.2}x, {verdict}");
}

pub fn print_timing(name: &str, t: &Timings, target_ms: f64) {
    let failed = if t.failed > 0 { format!(", {} runs not done in {SETTLE:?}", t.failed) } else { String::new() };
    match t.summary() {
        Some((median, min, max)) => {
            let verdict = if median < target_ms && t.failed == 0 { "met" } else { "MISSED" };
            println!(
                "{name:<36} {median:>8.1} ms ({min:.1} - {max:.1}){failed}   target < {target_ms:.0} ms: {verdict}"
            );
        }
        None => println!("{name:<36} no run finished{failed}   target < {target_ms:.0} ms: MISSED"),
    }
}

pub fn case_json(case: &Case, merged: &Phase) -> Value {
    let run = &merged.run;
    json!({
        "case": case.name,
        "ops_per_s": run.ops_per_s(),
        "ops_per_s_by_round": case.rounds.iter().map(|p| p.run.ops_per_s()).collect::<Vec<_>>(),
        "p50_us": run.percentile_us(50.0),
        "p99_us": run.percentile_us(99.0),
        "errors": run.errors,
        "requests": run.ops,
        "cpu_client_us_per_request": merged.cpu.map(|c| c.this_process_us_per_request),
        "cpu_servers_us_per_request": merged.cpu.map(|c| c.servers_us_per_request),
        "servers_context_switches_per_request": merged.cpu.map(|c| c.servers_switches_per_request),
        "cpu_others_share": merged.cpu.map(|c| c.others_share),
        "servers_threads_us_per_request":
            merged.threads.iter().map(|(g, us)| json!({ "threads": g, "us": us })).collect::<Vec<_>>(),
    })
}

pub fn timing_json(t: &Timings, target_ms: f64) -> Value {
    let summary = t.summary();
    json!({
        "runs_ms": t.ms,
        "failed": t.failed,
        "median_ms": summary.map(|s| s.0),
        "min_ms": summary.map(|s| s.1),
        "max_ms": summary.map(|s| s.2),
        "target_ms": target_ms,
        "killed": t.killed,
    })
}

pub fn to_json(r: &Results, cases: &[(&Case, Phase)], ratios: &[(String, f64)]) -> Value {
    json!({
        "cores": r.cores,
        "note": "load generator and servers share the same cores",
        "concurrency": concurrency(),
        "seconds_per_round": r.seconds,
        "rounds": r.rounds,
        "load_generator": if r.wrk { "wrk" } else { "in-process" },
        "path": ECHO_PATH,
        "echo_host": r.app.host,
        "forwarded_through": r.app.via,
        "load": cases.iter().map(|(case, merged)| case_json(case, merged)).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(name, v)| json!({ "ratio": name, "value": v })).collect::<Vec<_>>(),
        "local_target_ratio": LOCAL_TARGET_RATIO,
        "deploy_echo": timing_json(&r.deploy_echo, DEPLOY_TARGET_MS),
        "deploy_demo": timing_json(&r.deploy_demo, DEPLOY_TARGET_MS),
        "heal_demo": timing_json(&r.heal, HEAL_TARGET_MS),
        "idle_cpu_percent": r.app.idle_cpu.iter().map(|(node, cpu)| json!({ "node": node, "cpu_percent": cpu })).collect::<Vec<_>>(),
    })
}
