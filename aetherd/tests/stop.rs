//! The bounded stop, over a real process: a node whose slice never returns from `stop` still exits within
//! its stop bound after SIGTERM (non-zero, naming what was still running, with the clean-stop mark already
//! written, since the log is closed before slices are stopped), and a
//! second SIGTERM ends it at once.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);
/// Exit status of a stop cut short by the watchdog (`aetherd::stop::EXIT_STUCK`).
const EXIT_STUCK: i32 = 3;

const HANGS_ON_STOP: &str = r#"name = "stuck"
[[slices]]
artifact = "org.aether.examples:faulty:1.0.0"
[slices.config]
on_stop = "hang"
"#;

/// One node with a `faulty` slice that hangs in `stop`, serving, with the stop bound set to `bound_secs`.
fn node_with_a_stuck_slice(name: &str, bound_secs: u64) -> LocalCluster {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-stop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(1, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    spec.env.push(("AETHER_STOP_TIMEOUT_SECS".into(), bound_secs.to_string()));
    let c = LocalCluster::start(spec).unwrap();
    wait_for(SETTLE, || c.health(0).is_some_and(|h| h["ready"] == true)).unwrap();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", HANGS_ON_STOP.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let serving = wait_for(SETTLE, || http(c.nodes[0].app, "GET", "/faulty/ok", b"").is_ok_and(|r| r.status == 200));
    assert!(serving.is_ok(), "the faulty slice never served; log:\n{}", c.log(0));
    c
}

fn clean_mark(c: &LocalCluster) -> PathBuf {
    c.nodes[0].data_dir.join("consensus").join("clean")
}

#[test]
fn sigterm_exits_within_the_bound_when_a_slice_hangs_in_stop() {
    let mut c = node_with_a_stuck_slice("bound", 2);
    let started = Instant::now();
    let code = c.stop(0, Duration::from_secs(15));
    let took = started.elapsed();
    let log = c.log(0);
    assert_eq!(code, Some(EXIT_STUCK), "exited by itself with the stuck status; log:\n{log}");
    assert!(took >= Duration::from_millis(1900), "not before the bound: {took:?}");
    assert!(took < Duration::from_secs(6), "within the bound plus a margin: {took:?}");
    assert!(log.contains("the stop did not finish within 2 s; still running: unloading slices"), "{log}");
    assert!(clean_mark(&c).exists(), "the log is closed, with its clean-stop mark, before slices are stopped");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut c = node_with_a_stuck_slice("twice", 60);
    let pid = c.pid(0).unwrap();
    let first = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(first.success());
    // The node is now inside its stop, stuck in the slice (the bound is a minute away).
    let stuck = wait_for(Duration::from_secs(10), || c.log(0).contains("received signal"));
    assert!(stuck.is_ok(), "{}", c.log(0));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let code = c.stop(0, Duration::from_secs(10));
    let took = started.elapsed();
    let log = c.log(0);
    assert_eq!(code, Some(EXIT_STUCK), "{log}");
    assert!(took < Duration::from_secs(2), "the second signal ends it at once: {took:?}");
    assert!(log.contains("second stop signal"), "{log}");
}
