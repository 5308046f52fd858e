//! Lifecycle steps against the real example slices: a slow step of one slice does not hold up the steps of
//! another, and a library whose slice left a thread running after `stop` stays mapped instead of crashing
//! the process.

use std::time::{Duration, Instant};

use container::{Artifact, Container, ContainerConfig, SliceState, SLICE_THREADS_WAIT};

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";

fn container(start_timeout: Duration) -> Container {
    let repo = devcluster::example_slices_repo().expect("the example slices build");
    let mut config = ContainerConfig::new(repo, "node-1");
    config.pool.workers = 2;
    config.timeouts.start = start_timeout;
    Container::new(config).unwrap()
}

fn artifact(text: &str) -> Artifact {
    Artifact::parse(text).unwrap()
}

fn config(on_start: &str) -> Vec<(String, String)> {
    vec![("on_start".to_owned(), on_start.to_owned())]
}

/// Mappings of `faulty` library copies in this process (each test runs in a process of its own).
fn faulty_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().filter(|l| l.contains("faulty")).count()
}

#[test]
fn a_hanging_start_does_not_hold_up_another_slices_steps() {
    let c = std::sync::Arc::new(container(Duration::from_secs(5)));
    let hung = c.load(&artifact(FAULTY), config("hang")).unwrap();
    let starting = {
        let c = c.clone();
        std::thread::spawn(move || c.activate(hung))
    };
    std::thread::sleep(Duration::from_millis(200));
    let began = Instant::now();
    let echo = c.load(&artifact(ECHO), vec![]).unwrap();
    c.activate(echo).unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(1), "echo waited {took:?} behind the hanging start");
    assert_eq!(c.state(echo).map(|s| s.0), Some(SliceState::Active));
    assert!(starting.join().unwrap().is_err(), "the hanging start times out");
}

#[test]
fn a_thread_left_running_after_stop_keeps_the_library_mapped() {
    let c = container(Duration::from_secs(5));
    let id = c.load(&artifact(FAULTY), config("thread")).unwrap();
    c.activate(id).unwrap();
    c.deactivate(id).unwrap();
    let began = Instant::now();
    c.unload(id).unwrap();
    let took = began.elapsed();
    assert!(took >= SLICE_THREADS_WAIT, "the unload waited for the thread: {took:?}");
    assert!(faulty_mappings() > 0, "the library stays mapped while its thread runs");
    // The thread wakes every 20 ms in the slice's code, which must still be mapped. (glibc also keeps a
    // library mapped while a thread holds thread-local values with destructors from it, as a std thread
    // does; the wait above is what covers threads that hold none.)
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_slice_that_joins_its_threads_is_unmapped_at_once() {
    let c = container(Duration::from_secs(5));
    let id = c.load(&artifact(FAULTY), vec![]).unwrap();
    c.activate(id).unwrap();
    c.deactivate(id).unwrap();
    let began = Instant::now();
    c.unload(id).unwrap();
    assert!(began.elapsed() < Duration::from_millis(500), "{:?}", began.elapsed());
    assert_eq!(faulty_mappings(), 0, "the library is closed");
}
