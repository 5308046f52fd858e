//! Competing delivery over real processes (3 nodes, one `inbox` instance each): 10,000 messages on topic
//! `work` from four concurrent publishers (two through the management API, two through the inbox's own
//! `ctx.publish` route, on the two nodes that are not the leader), while the leader, which runs competing
//! delivery, is killed with kill -9 mid-stream and restarted. Every message the cluster accepted (202) is
//! delivered at least once (none lost, none dead-lettered), duplicates are counted and printed, and every
//! instance sees each publisher's messages in publish order, apart from re-deliveries.
//!
//! What an instance received is read from its durable journal (see `messaging_support`), so deliveries to the
//! killed instance count too. Publishers are numbered clients, each waiting for a message's 202 before the
//! next, so a client's order is its messages' publish order.

mod messaging_support;

use devcluster::wait_for;
use messaging_support::{
    body, dead_letters, deploy, get_json, inbox_blueprint, index_of, journals, leader, parse_body, publish, start,
    warm_up, Via, PUBLISH_RETRY_FOR,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLUEPRINT: &str = "mail";
const PUBLISHERS: usize = 4;
const PER_PUBLISHER: u32 = 2_500;
/// Each publisher's pace: 4 x 200/s, so publishing lasts about 12.5 s and the kill lands mid-stream.
const PER_PUBLISHER_PER_S: u32 = 200;
/// Published messages before the leader is killed, and how long it stays down (longer than the lease grace,
/// so another node takes the lead and resumes delivery from the cursor).
const KILL_AFTER: u32 = 2_000;
const LEASE_GRACE_MS: u64 = 2_000;
const DOWN_FOR: Duration = Duration::from_secs(4);
/// How long after the last publish every message must have been delivered.
const DELIVERED_WITHIN: Duration = Duration::from_secs(60);

fn blueprint() -> String {
    let extra = "[slices.config]\njournal = \"true\"\n\
                 [slices.kv]\nmax_keys = 100000\nmax_bytes = 67108864\n\
                 [slices.subscriptions.work]\nmax_attempts = 100\nretry_backoff_ms = 20\ntimeout_ms = 5000\n";
    inbox_blueprint(BLUEPRINT, extra)
}

/// Publishes `PER_PUBLISHER` numbered messages at the pace, counting each accepted one in `published`.
fn run_publisher(publisher: usize, via: Via, published: Arc<AtomicU32>) -> Vec<u32> {
    let started = Instant::now();
    let mut accepted = Vec::with_capacity(PER_PUBLISHER as usize);
    for seq in 0..PER_PUBLISHER {
        let due = started + Duration::from_secs_f64(f64::from(seq) / f64::from(PER_PUBLISHER_PER_S));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (status, answer, _) = publish(via, "work", body(publisher, seq).as_bytes(), PUBLISH_RETRY_FOR);
        assert_eq!(status, 202, "publisher {publisher} ({via:?}), message {seq}: {answer}");
        accepted.push(seq);
        published.fetch_add(1, Ordering::Relaxed);
    }
    accepted
}

/// What the journals say, against what was accepted.
struct Tally {
    /// Deliveries per (publisher, seq).
    counts: HashMap<(usize, u32), u32>,
    /// Deliveries per instance boot.
    per_instance: BTreeMap<String, usize>,
    /// Places where an instance saw a publisher's sequence go back, with the seq it went back to.
    regressions: Vec<(String, usize, u32)>,
}

fn tally(journals: &messaging_support::Journals) -> Tally {
    let mut counts = HashMap::new();
    let mut per_instance = BTreeMap::new();
    let mut regressions = Vec::new();
    for ((node, boot), bodies) in journals {
        let instance = format!("{node}/{boot}");
        let mut highest: HashMap<usize, u32> = HashMap::new();
        for (publisher, seq) in bodies.iter().filter_map(|b| parse_body(b)) {
            *counts.entry((publisher, seq)).or_insert(0) += 1;
            *per_instance.entry(instance.clone()).or_insert(0) += 1;
            let high = highest.entry(publisher).or_insert(seq);
            if seq < *high {
                regressions.push((instance.clone(), publisher, seq));
            }
            *high = (*high).max(seq);
        }
    }
    Tally { counts, per_instance, regressions }
}

fn missing(tally: &Tally, accepted: &[Vec<u32>]) -> Vec<(usize, u32)> {
    let all = accepted.iter().enumerate().flat_map(|(p, seqs)| seqs.iter().map(move |s| (p, *s)));
    all.filter(|k| !tally.counts.contains_key(k)).collect()
}

#[test]
fn competing_delivery_loses_nothing_through_a_leader_kill_and_keeps_publisher_order() {
    let mut c = start("competing", "", Some(LEASE_GRACE_MS));
    deploy(&c, &blueprint());
    warm_up(&c, "work", "warm-up", false);

    let leader_id = leader(&c, 0).expect("no leader record");
    let victim = index_of(&c, &leader_id);
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let vias = [
        Via::Api(c.nodes[others[0]].management),
        Via::Inbox(c.nodes[others[0]].app),
        Via::Api(c.nodes[others[1]].management),
        Via::Inbox(c.nodes[others[1]].app),
    ];
    let published = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let threads: Vec<_> = vias
        .into_iter()
        .enumerate()
        .map(|(p, via)| {
            let published = published.clone();
            std::thread::spawn(move || run_publisher(p, via, published))
        })
        .collect();

    let reached = wait_for(Duration::from_secs(60), || published.load(Ordering::Relaxed) >= KILL_AFTER);
    assert!(reached.is_ok(), "only {} messages published in 60 s", published.load(Ordering::Relaxed));
    c.kill(victim);
    eprintln!("killed the leader {leader_id} (kill -9) after {} accepted messages", published.load(Ordering::Relaxed));
    std::thread::sleep(DOWN_FOR);
    c.start_node(victim).unwrap();
    eprintln!("restarted {leader_id}; the lead is now with {:?}", leader(&c, others[0]));

    let accepted: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().expect("a publisher failed")).collect();
    let publish_s = started.elapsed().as_secs_f64();
    let total: usize = accepted.iter().map(Vec::len).sum();
    assert_eq!(total, PUBLISHERS * PER_PUBLISHER as usize);

    let mut last = tally(&journals(&c, others[0], BLUEPRINT, "work"));
    let delivered = wait_for(DELIVERED_WITHIN, || {
        last = tally(&journals(&c, others[0], BLUEPRINT, "work"));
        missing(&last, &accepted).is_empty()
    });
    let lost = missing(&last, &accepted);
    let dead = dead_letters(&c, others[0], "work");
    assert!(
        delivered.is_ok(),
        "{} of {total} accepted messages not delivered {DELIVERED_WITHIN:?} after publishing ended, e.g. {:?}; \
         per instance {:?}; dead letters {dead:?}; GET /api/topics/work: {}",
        lost.len(),
        &lost[..lost.len().min(10)],
        last.per_instance,
        get_json(&c, others[0], "/api/topics/work"),
    );
    let delivered_s = started.elapsed().as_secs_f64();

    let deliveries: u32 = last.counts.values().sum();
    let duplicates = deliveries - last.counts.len() as u32;
    eprintln!(
        "{total} messages accepted in {publish_s:.1} s, all delivered after {delivered_s:.1} s: {deliveries} deliveries, \
         {duplicates} duplicates, {} order regressions (re-deliveries); per instance boot {:?}",
        last.regressions.len(),
        last.per_instance
    );
    for (instance, publisher, seq) in &last.regressions {
        let count = last.counts[&(*publisher, *seq)];
        assert!(
            count >= 2,
            "{instance} saw publisher {publisher}'s message {seq} out of order, and not as a re-delivery"
        );
    }
    let serving = last.per_instance.values().filter(|&&n| n > 0).count();
    assert!(serving >= 3, "competing delivery used only {serving} instance boots: {:?}", last.per_instance);
    assert!(dead.is_empty(), "nothing may be dead-lettered here: {dead:?}");
}
