//! Broadcast delivery over real processes (3 nodes, one `inbox` instance each): every instance sees every
//! message on topic `news`, in publish order, including the instance of a node killed with kill -9
//! mid-stream and restarted, which catches up from its node's cursor: it gets what it missed while down and
//! resumes where it left off, not from the start of the topic.
//!
//! What each instance received is read from its durable journal (see `messaging_support`), so the killed
//! instance's deliveries before the kill count too.

mod messaging_support;

use devcluster::wait_for;
use messaging_support::{
    body, deploy, inbox_blueprint, journals, leader, parse_body, publish, start, warm_up, Journals, Via,
    PUBLISH_RETRY_FOR,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLUEPRINT: &str = "news";
const PER_PUBLISHER: u32 = 500;
const PER_PUBLISHER_PER_S: u32 = 100;
/// Published messages before the node is killed, and how long it stays down (within the default lease grace,
/// so its instance stays placed there and comes back with the node).
const KILL_AFTER: u32 = 300;
const DOWN_FOR: Duration = Duration::from_secs(2);
const DELIVERED_WITHIN: Duration = Duration::from_secs(60);

fn run_publisher(publisher: usize, via: Via, published: Arc<AtomicU32>) -> Vec<u32> {
    let started = Instant::now();
    let mut accepted = Vec::with_capacity(PER_PUBLISHER as usize);
    for seq in 0..PER_PUBLISHER {
        let due = started + Duration::from_secs_f64(f64::from(seq) / f64::from(PER_PUBLISHER_PER_S));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (status, answer, _) = publish(via, "news", body(publisher, seq).as_bytes(), PUBLISH_RETRY_FOR);
        assert_eq!(status, 202, "publisher {publisher} ({via:?}), message {seq}: {answer}");
        published.fetch_add(1, Ordering::Relaxed);
        accepted.push(seq);
    }
    accepted
}

/// Per node: every (publisher, seq) its instances received, over all their boots.
fn per_node(journals: &Journals) -> BTreeMap<String, HashSet<(usize, u32)>> {
    let mut nodes: BTreeMap<String, HashSet<(usize, u32)>> = BTreeMap::new();
    for ((node, _), bodies) in journals {
        nodes.entry(node.clone()).or_default().extend(bodies.iter().filter_map(|b| parse_body(b)));
    }
    nodes
}

/// Places where one instance boot saw a publisher's sequence go back.
fn regressions(journals: &Journals) -> Vec<String> {
    let mut found = Vec::new();
    for ((node, boot), bodies) in journals {
        let mut highest: HashMap<usize, u32> = HashMap::new();
        for (publisher, seq) in bodies.iter().filter_map(|b| parse_body(b)) {
            let high = highest.entry(publisher).or_insert(seq);
            if seq < *high {
                found.push(format!("{node}/{boot}: publisher {publisher} went back from {high} to {seq}"));
            }
            *high = (*high).max(seq);
        }
    }
    found
}

#[test]
fn every_instance_sees_every_message_and_a_restarted_one_catches_up_from_its_cursor() {
    let mut c = start("broadcast", "", None);
    let extra = "[slices.config]\njournal = \"true\"\n[slices.kv]\nmax_keys = 100000\n";
    deploy(&c, &inbox_blueprint(BLUEPRINT, extra));
    warm_up(&c, "news", "warm-up", true);

    let leader_id = leader(&c, 0).expect("no leader record");
    let victim = (0..3).rev().find(|&i| c.nodes[i].id != leader_id).unwrap();
    let victim_id = c.nodes[victim].id.clone();
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let vias = [Via::Api(c.nodes[others[0]].management), Via::Inbox(c.nodes[others[1]].app)];
    let published = Arc::new(AtomicU32::new(0));
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
    let killed_at = published.load(Ordering::Relaxed);
    std::thread::sleep(DOWN_FOR);
    c.start_node(victim).unwrap();
    eprintln!("killed {victim_id} (kill -9) after {killed_at} accepted messages, restarted it {DOWN_FOR:?} later");

    let accepted: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().expect("a publisher failed")).collect();
    let all: HashSet<(usize, u32)> =
        accepted.iter().enumerate().flat_map(|(p, seqs)| seqs.iter().map(move |s| (p, *s))).collect();

    let mut last = Journals::new();
    let complete = wait_for(DELIVERED_WITHIN, || {
        last = journals(&c, others[0], BLUEPRINT, "news");
        let nodes = per_node(&last);
        nodes.len() == 3 && nodes.values().all(|seen| all.is_subset(seen))
    });
    let nodes = per_node(&last);
    let missing: BTreeMap<&String, usize> = nodes.iter().map(|(n, seen)| (n, all.difference(seen).count())).collect();
    assert!(
        complete.is_ok(),
        "not every instance saw all {} messages within {DELIVERED_WITHIN:?}: missing per node {missing:?} \
         (nodes with a journal: {:?})",
        all.len(),
        nodes.keys().collect::<Vec<_>>()
    );

    let regressions = regressions(&last);
    assert!(regressions.is_empty(), "broadcast order broken: {regressions:?}");
    let boots: Vec<(&String, usize)> = last
        .iter()
        .filter(|((node, _), _)| *node == victim_id)
        .map(|((_, boot), b)| (boot, b.iter().filter(|x| parse_body(x).is_some()).count()))
        .collect();
    assert!(boots.len() >= 2, "{victim_id}'s instance did not receive both before the kill and after: {boots:?}");
    let delivered_to_victim: usize = boots.iter().map(|(_, n)| n).sum();
    let again = delivered_to_victim.saturating_sub(nodes[&victim_id].len());
    eprintln!(
        "every instance saw all {} messages; {victim_id}'s boots received {boots:?} ({again} re-delivered after \
         the restart)",
        all.len()
    );
    assert!(
        again < all.len() / 4,
        "{victim_id} got {again} messages again after its restart: it did not resume from its cursor"
    );
}
