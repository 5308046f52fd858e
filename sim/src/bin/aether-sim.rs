//! `aether-sim`: runs simulator seeds (`sim`) or the consensus core benchmark (`bench`).
//!
//! `aether-sim sim [--seeds N] [--seed S | --first-seed S] [--replicas 3|5] [--faults LIST]
//! [--broken VARIANT] [--codec] [--verbose]` exits non-zero if any seed fails, printing one replay
//! line per failing seed. `--faults` takes a comma list of loss, dup, delay, partition, crash (the disk
//! is lost), skew, clock (process clocks: hours apart, zero again after a restart), adversary, durable
//! (the disk is kept: `Replica::resume`), cluster-crash (every replica at once, disks kept), disk-errors
//! (writes failing mid-turn, snapshots written late), bridged (one pair of replicas cut while the rest reach
//! both, with the control plane's lease and leader logic on top), size (a byte limit per message, with values
//! padded so catch-up outgrows it), strand (a lost forward, its origin down for good; not in all), members
//! (with `--replicas 5`: members {0,1,2}, learners 3 and 4, random adds and removes; not in all), or all (the
//! default) / none. `aether-sim bench [--commands N]` prints the benchmark table.
//!
//! `aether-sim dht [--seeds N] [--seed S | --first-seed S] [--nodes 3|5] [--broken w1|no-read-repair|no-anti-entropy]
//! [--verbose]` runs the DHT simulator (`sim::dht`; without `--nodes`, seeds alternate 3 and 5 replicas),
//! prints a summary and one replay line per failing seed, and exits non-zero if any seed fails.

use std::process::ExitCode;
use std::time::Instant;

use sim::options::parse_broken;
use sim::{Faults, RunReport};

struct SimArgs {
    first_seed: u64,
    seeds: u64,
    replicas: Vec<u8>,
    faults: Faults,
    broken: Option<String>,
    codec: bool,
    verbose: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((task, rest)) if task == "sim" => parse_sim(rest).and_then(run_sim),
        Some((task, rest)) if task == "bench" => run_bench(rest),
        Some((task, rest)) if task == "dht" => run_dht(rest),
        _ => Err("usage: aether-sim sim [--seeds N] [--seed S] [--replicas 3|5] [--faults LIST] [--broken V] [--codec] | dht [--seeds N] [--seed S] [--nodes 3|5] [--broken w1|no-read-repair|no-anti-entropy] [--verbose] | bench [--commands N]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("aether-sim: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_sim(args: &[String]) -> Result<SimArgs, String> {
    let mut parsed = SimArgs {
        first_seed: 0,
        seeds: 100,
        replicas: vec![3, 5],
        faults: Faults::ALL,
        broken: None,
        codec: false,
        verbose: false,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => parsed.seeds = number(&value()?)?,
            "--first-seed" => parsed.first_seed = number(&value()?)?,
            "--seed" => {
                parsed.first_seed = number(&value()?)?;
                parsed.seeds = 1;
            }
            "--replicas" => parsed.replicas = vec![number(&value()?)? as u8],
            "--faults" => parsed.faults = Faults::parse(&value()?)?,
            "--broken" => parsed.broken = Some(value()?),
            "--codec" => parsed.codec = true,
            "--verbose" => parsed.verbose = true,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if parsed.replicas.iter().any(|n| *n == 0 || *n > 9) {
        return Err("--replicas must be between 1 and 9".into());
    }
    Ok(parsed)
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("`{text}` is not a number"))
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    failed: u64,
    slots: u64,
    null_slots: u64,
    ops: u64,
    crashes: u64,
    durable_crashes: u64,
    torn_crashes: u64,
    cluster_crashes: u64,
    resumes: u64,
    resumes_mid_slot: u64,
    resumes_past_phase_one: u64,
    snapshots: u64,
    phases_max: u32,
    phases_total: u64,
    phases_histogram: [u64; 16],
    slots_by_vote: u64,
    null_run_longest: u64,
    heal_to_done_ms_max: u64,
    op_wait_ms_max: u64,
    sim_ms: u64,
    disk_errors: u64,
    stale_snapshots: u64,
    control_counts: [u64; 3],
    reconfigurations: [u64; 2],
}

fn run_sim(args: SimArgs) -> Result<(), String> {
    let broken = args.broken.as_deref().map(parse_broken).transpose()?;
    let started = Instant::now();
    let mut totals = Totals::default();
    for replicas in &args.replicas {
        let configure = |options: &mut sim::Options| {
            if let Some((core, shell)) = broken {
                options.broken = core;
                options.shell_broken = shell;
            }
            options.codec = args.codec;
        };
        sim::run_seeds(args.first_seed, args.seeds, *replicas, args.faults, configure, |report| {
            record(&mut totals, report, args.verbose)
        });
    }
    print_totals(&totals, started.elapsed().as_secs_f64());
    if totals.failed > 0 {
        return Err(format!("{} of {} seeds failed", totals.failed, totals.seeds));
    }
    Ok(())
}

fn record(totals: &mut Totals, report: &RunReport, verbose: bool) {
    totals.seeds += 1;
    totals.slots += report.slots_decided;
    totals.null_slots += report.null_slots;
    totals.ops += report.ops_completed;
    totals.crashes += report.crashes;
    totals.durable_crashes += report.durable_crashes;
    totals.torn_crashes += report.torn_crashes;
    totals.cluster_crashes += report.cluster_crashes;
    totals.resumes += report.resumes;
    totals.resumes_mid_slot += report.resumes_mid_slot;
    totals.resumes_past_phase_one += report.resumes_past_phase_one;
    totals.snapshots += report.snapshots_installed;
    totals.phases_max = totals.phases_max.max(report.phases_max);
    totals.phases_total += report.phases_total;
    totals.phases_histogram.iter_mut().zip(report.phases_histogram).for_each(|(a, b)| *a += b);
    totals.slots_by_vote += report.slots_by_vote;
    totals.null_run_longest = totals.null_run_longest.max(report.null_run_longest);
    totals.heal_to_done_ms_max = totals.heal_to_done_ms_max.max(report.heal_to_done_ms);
    totals.op_wait_ms_max = totals.op_wait_ms_max.max(report.op_wait_after_heal_ms_max);
    totals.sim_ms += report.end_ms;
    totals.disk_errors += report.disk_errors;
    totals.stale_snapshots += report.stale_snapshots;
    totals.control_counts.iter_mut().zip(report.control_counts).for_each(|(a, b)| *a += b);
    totals.reconfigurations.iter_mut().zip(report.reconfigurations).for_each(|(a, b)| *a += b);
    if verbose {
        println!(
            "seed {} n={}: {} slots ({} null), {} ops, {} crashes, {} snapshots, max phase {}, longest wait after faults {} ms, {} ms",
            report.options.seed,
            report.options.replicas,
            report.slots_decided,
            report.null_slots,
            report.ops_completed,
            report.crashes,
            report.snapshots_installed,
            report.phases_max,
            report.op_wait_after_heal_ms_max,
            report.end_ms
        );
    }
    if report.violations.is_empty() {
        return;
    }
    totals.failed += 1;
    println!("FAIL seed {} with {} replicas", report.options.seed, report.options.replicas);
    for violation in &report.violations {
        println!("  {:?}: {}", violation.kind, violation.detail);
    }
    println!("  drawn: {}", report.options.describe());
    println!("  replay: {}", report.options.replay_line());
}

fn print_totals(totals: &Totals, wall_s: f64) {
    let [claims, written, removed] = totals.control_counts;
    println!("control plane: {claims} leadership claims, {written} slice records written, {removed} removed");
    let [submitted, decided] = totals.reconfigurations;
    if submitted > 0 {
        println!("membership: {submitted} reconfigurations submitted, {decided} membership changes decided");
    }
    println!(
        "{} seeds, {} failed; {} slots decided ({:.1}% null, longest null run {}), phases per voted slot mean {:.2} p50 {} p99 {} max {}, {} operations, {} crashes ({} keeping the disk, {} of them torn mid-turn; {} whole-cluster crashes; {} resumes, {} inside a slot, {} past phase 1), {} snapshot installs, {} failed storage writes, {} late snapshots landing after newer ones; after faults stopped: longest wait for one operation {} ms, all operations done within {} ms; {:.0} s simulated in {:.1} s",
        totals.seeds,
        totals.failed,
        totals.slots,
        100.0 * totals.null_slots as f64 / totals.slots.max(1) as f64,
        totals.null_run_longest,
        totals.phases_total as f64 / totals.slots_by_vote.max(1) as f64,
        percentile(&totals.phases_histogram, 0.50),
        percentile(&totals.phases_histogram, 0.99),
        totals.phases_max,
        totals.ops,
        totals.crashes,
        totals.durable_crashes,
        totals.torn_crashes,
        totals.cluster_crashes,
        totals.resumes,
        totals.resumes_mid_slot,
        totals.resumes_past_phase_one,
        totals.snapshots,
        totals.disk_errors,
        totals.stale_snapshots,
        totals.op_wait_ms_max,
        totals.heal_to_done_ms_max,
        totals.sim_ms as f64 / 1000.0,
        wall_s
    );
}

/// The phase count at quantile `q` of a histogram whose bucket k - 1 counts k phases.
fn percentile(histogram: &[u64; 16], q: f64) -> usize {
    let total: u64 = histogram.iter().sum();
    let mut seen = 0;
    for (index, count) in histogram.iter().enumerate() {
        seen += count;
        if seen as f64 >= q * total as f64 {
            return index + 1;
        }
    }
    histogram.len()
}

fn run_bench(args: &[String]) -> Result<(), String> {
    let mut commands = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--commands" => commands = Some(number(rest.next().ok_or("--commands needs a value")?)?),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    sim::bench::run_table(commands);
    Ok(())
}

fn run_dht(args: &[String]) -> Result<(), String> {
    let (mut first_seed, mut seeds, mut nodes, mut broken, mut verbose) = (0, 100, None, None, false);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => seeds = number(&value()?)?,
            "--first-seed" => first_seed = number(&value()?)?,
            "--seed" => {
                first_seed = number(&value()?)?;
                seeds = 1;
            }
            "--nodes" => match number(&value()?)? {
                n @ (3 | 5) => nodes = Some(n as u8),
                n => return Err(format!("--nodes must be 3 or 5, not {n}")),
            },
            "--broken" => broken = Some(sim::dht::DhtBroken::parse(&value()?)?),
            "--verbose" => verbose = true,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    let started = Instant::now();
    let (mut runs, mut failed, mut ops, mut acked, mut repairs, mut convergence_ms_max) = (0u64, 0u64, 0, 0, 0, 0);
    sim::dht::run_seeds(first_seed, seeds, nodes, broken, |report| {
        runs += 1;
        ops += report.ops;
        acked += report.acked;
        repairs += report.repairs;
        convergence_ms_max = convergence_ms_max.max(report.convergence_ms);
        if verbose {
            println!(
                "seed {} n={}: {} ops ({} writes acknowledged), {} repairs, converged in {} ms (anti-entropy every {} ms)",
                report.options.seed,
                report.options.nodes,
                report.ops,
                report.acked,
                report.repairs,
                report.convergence_ms,
                report.options.anti_entropy_interval_ms()
            );
        }
        if !report.violations.is_empty() {
            failed += 1;
            println!("FAIL seed {} with {} nodes", report.options.seed, report.options.nodes);
            for violation in report.violations.iter().take(5) {
                println!("  {violation}");
            }
            println!("  drawn: {}", report.options.describe());
            println!("  replay: {}", report.options.replay_line());
        }
    });
    println!(
        "dht: {runs} runs, {failed} failed; {ops} operations ({acked} writes acknowledged), {repairs} repairs, longest convergence after faults stopped {convergence_ms_max} ms; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        return Err(format!("{failed} of {runs} dht seeds failed"));
    }
    Ok(())
}
