//! Commands stranded by a dead origin, over real `aetherd` processes started seconds apart: node O
//! starts well before R and T, O's frames to T are dropped (and O hears nobody, so it cannot decide its
//! write with R alone), a write goes through O and reaches R only, then O is killed with SIGKILL. Writes
//! through T must go on succeeding within seconds: R spreads the stranded command again by its own
//! clock, and T queues what R proposes, so their proposals agree again.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(20);
/// How much earlier O's process starts than R's and T's.
const HEAD_START: Duration = Duration::from_secs(8);
/// Concurrent writers keeping T busy throughout.
const BUSY_WRITERS: usize = 4;

fn put(c: &LocalCluster, node: usize, key: &str, value: &str) -> u16 {
    http(c.nodes[node].management, "PUT", &format!("/api/kv/{key}"), value.as_bytes()).map_or(0, |r| r.status)
}

fn ready(c: &LocalCluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| c.health(i).is_some_and(|h| h["ready"] == true))
}

#[test]
fn writes_keep_succeeding_after_the_origin_of_a_half_forwarded_write_dies() {
    let dir = std::env::temp_dir().join(format!("aether-clocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    let (o, r, t) = (0, 1, 2);
    let mut c = LocalCluster::prepare(spec).unwrap();
    c.start_node(o).unwrap();
    std::thread::sleep(HEAD_START);
    c.start_node(r).unwrap();
    c.start_node(t).unwrap();
    wait_for(SETTLE, || ready(&c, &[o, r, t])).unwrap();
    assert_eq!(put(&c, t, "user/warm", "1"), 200);

    let t_id = c.nodes[t].id.clone();
    let rules = format!(
        r#"{{"rules":[{{"peer":"{t_id}","direction":"outbound","action":"drop"}},{{"direction":"inbound","action":"drop"}}]}}"#
    );
    let stop = AtomicBool::new(false);
    let statuses = std::thread::scope(|scope| {
        // T stays busy (always a write pending), so its proposals differ from R's whenever R holds a
        // command T lacks.
        for writer in 0..BUSY_WRITERS {
            let (c, stop) = (&c, &stop);
            scope.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    put(c, t, &format!("user/busy/{writer}"), &i.to_string());
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let set = http(c.nodes[o].management, "POST", "/api/debug/faults", rules.as_bytes()).unwrap();
        assert_eq!(set.status, 200, "{}", set.text());
        // The write reaches R (and only R); O cannot decide it. Its answer does not matter: O dies.
        scope.spawn(|| put(&c, o, "user/stranded", "from-o"));
        std::thread::sleep(Duration::from_millis(1_000));
        let pid = c.pid(o).expect("O runs");
        let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        assert!(killed.success());
        let killed_at = Instant::now();
        let mut statuses: Vec<(Duration, u16)> = Vec::new();
        let mut i = 0;
        let ten_ok =
            |s: &[(Duration, u16)]| s.len() >= 10 && s[s.len() - 10..].iter().all(|(_, status)| *status == 200);
        while killed_at.elapsed() < Duration::from_secs(30) && !ten_ok(&statuses) {
            let status = put(&c, t, &format!("user/after/{i}"), &i.to_string());
            statuses.push((killed_at.elapsed(), status));
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        statuses
    });
    let first_ok = statuses.iter().find(|(_, status)| *status == 200).map(|(at, _)| *at);
    let first_ok = first_ok.unwrap_or_else(|| panic!("no write through T succeeded after O died: {statuses:?}"));
    assert!(first_ok < Duration::from_secs(5), "the first write through T took {first_ok:?}: {statuses:?}");
    let failed: Vec<_> = statuses.iter().filter(|(_, status)| *status != 200).collect();
    assert!(failed.len() <= 2, "writes through T after O died failed: {failed:?}");
    // R and T agree on everything decided, the stranded write included if it was decided at all.
    wait_for(SETTLE, || {
        let list = |n: usize| {
            http(c.nodes[n].management, "GET", "/api/kv?prefix=user/&stale=true", b"")
                .map(|r| r.json()["entries"].clone())
                .ok()
        };
        list(r).is_some() && list(r) == list(t)
    })
    .unwrap();
}
