//! `cargo xtask bench invoke-local`: what one call through the container costs over calling the
//! same slice function directly, in the same process and the same run.
//!
//! Three ways to answer `echo_body` (the body comes back) for 64 B and 4 KiB bodies, each request
//! carrying a method, a path and six header fields as the app port sends them (the answer carries its
//! content type as a header field):
//! - direct: `Echo::call` on an instance built in-process (the slice crate linked as an rlib);
//! - container: `SliceHandle::call` into the loaded library (ABI boundary, panic guards, in-flight
//!   accounting, response copy-out): the path of slice-to-slice calls and of callers already on a worker;
//! - pool: `Container::call_with_deadline`, which adds a hand-off to a worker thread and back.
//!
//! Each figure is the median of several rounds. Back of the envelope: the container path adds two
//! atomic read-modify-writes, one indirect call, a method-name scan, the encoding of the answer's
//! header fields and body into one buffer, its check and copy back out (one allocation each side), and
//! one free across the boundary, so some tens to a hundred or two ns plus the copies; the pool hand-off
//! is two thread wake-ups, several µs on a loaded 2-core machine.
//!
//! Usage: `invoke_bench --repo DIR [--rounds N] [--json PATH]`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aether_sdk::{Config, Context, Request, RequestBuilder, Slice};
use container::{Artifact, Container, ContainerConfig};
use slice_echo::Echo;

struct Args {
    repo: PathBuf,
    rounds: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { repo: PathBuf::new(), rounds: 11, json: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--repo" => args.repo = value.into(),
            "--rounds" => args.rounds = value.parse().map_err(|_| "--rounds takes a number")?,
            "--json" => args.json = Some(value.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.repo.as_os_str().is_empty() {
        return Err("--repo DIR is required".into());
    }
    Ok(args)
}

/// Median ns per call of `f` over `rounds` rounds of `calls` calls.
fn median_ns(rounds: usize, calls: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..calls / 10 {
        f();
    }
    let mut per_call: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let started = Instant::now();
            for _ in 0..calls {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[per_call.len() / 2]
}

struct Row {
    payload: usize,
    direct_ns: f64,
    container_ns: f64,
    pool_ns: f64,
}

fn measure(container: &Container, payload: usize, rounds: usize) -> Row {
    let handle = container.find_active("org.aether.examples:echo:1.0.0").expect("echo is active");
    // A request as the app port sends it: method, path and the header fields a client typically sends.
    let request = RequestBuilder::new()
        .method("POST")
        .path("/echo")
        .header("host", "127.0.0.1:8081")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("content-type", "application/octet-stream")
        .header("content-length", &payload.to_string())
        .header("x-request-id", "0123456789abcdef")
        .body(vec![b'x'; payload])
        .encode()
        .expect("encode");
    let echo = Echo::start(Context::detached("bench"), &Config::default()).expect("start echo");
    let direct_ns = median_ns(rounds, 200_000, || {
        let parsed = Request::parse(black_box(&request)).expect("parse");
        black_box(echo.call("echo_body", &parsed));
    });
    let container_ns = median_ns(rounds, 200_000, || {
        black_box(handle.call("echo_body", black_box(&request)).expect("call"));
    });
    let pool_ns = median_ns(rounds, 5_000, || {
        let answer = container.call_with_deadline(&handle, "echo_body", request.clone(), Duration::from_secs(5));
        black_box(answer.expect("pooled call"));
    });
    Row { payload, direct_ns, container_ns, pool_ns }
}

fn print(rows: &[Row]) {
    println!("invoke-local: echo_body, median ns per call");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "payload", "direct", "container", "added", "ratio", "pool", "ratio"
    );
    for r in rows {
        println!(
            "{:>7}B {:>10.1} {:>10.1} {:>10.1} {:>6.2}x {:>10.1} {:>6.1}x",
            r.payload,
            r.direct_ns,
            r.container_ns,
            r.container_ns - r.direct_ns,
            r.container_ns / r.direct_ns,
            r.pool_ns,
            r.pool_ns / r.direct_ns
        );
    }
    let small = rows.iter().find(|r| r.payload == 64);
    if let Some(r) = small {
        let added = r.container_ns - r.direct_ns;
        let verdict = if added < 1000.0 { "met" } else { "MISSED" };
        println!("target: under 1000 ns added per 64 B call through the container: {added:.1} ns ({verdict})");
    }
}

fn to_json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            aether_sdk::json::Object::new()
                .int("payload_bytes", r.payload as i64)
                .num("direct_ns", r.direct_ns)
                .num("container_ns", r.container_ns)
                .num("added_ns", r.container_ns - r.direct_ns)
                .num("ratio", r.container_ns / r.direct_ns)
                .num("pool_ns", r.pool_ns)
                .finish()
        })
        .collect();
    format!("{{\"bench\":\"invoke-local\",\"rows\":[{}]}}\n", items.join(","))
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("invoke_bench: {e}");
            std::process::exit(2);
        }
    };
    let mut config = ContainerConfig::new(&args.repo, "bench");
    config.pool.workers = 2;
    let container = Container::new(config).expect("container");
    let echo = Artifact::parse("org.aether.examples:echo:1.0.0").expect("coordinates");
    if let Err(e) = container.deploy(&echo, vec![]) {
        eprintln!("invoke_bench: {e}");
        std::process::exit(1);
    }
    let rows: Vec<Row> = [64, 4096].into_iter().map(|payload| measure(&container, payload, args.rounds)).collect();
    print(&rows);
    if let Some(path) = args.json {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(&path, to_json(&rows)) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("invoke_bench: cannot write {}: {e}", path.display()),
        }
    }
    container.shutdown();
}
