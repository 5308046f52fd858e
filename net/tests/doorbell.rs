//! Commands posted from many threads at once all reach the loop, though a post made while an earlier
//! wake-up is still unanswered does not wake the loop again: none waits for a later post or a timer.

use net::{Ctx, Frame, Handler, NetConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

enum Cmd {
    Count,
    Ack(mpsc::Sender<u64>),
}

struct Counter(Arc<AtomicU64>);

impl Handler for Counter {
    type Command = Cmd;
    fn on_frame(&mut self, _: &mut Ctx<'_>, _: usize, _: Frame) {}
    fn on_command(&mut self, _: &mut Ctx<'_>, cmd: Cmd) {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        if let Cmd::Ack(reply) = cmd {
            let _ = reply.send(n);
        }
    }
}

#[test]
fn every_command_arrives_when_posts_race_the_loop() {
    let seen = Arc::new(AtomicU64::new(0));
    let mut config = NetConfig::new("solo", "test", b"secret", "127.0.0.1:0".parse().unwrap(), Vec::new());
    // The loop's own tick every 30 s: only a wake-up brings it back from `poll` within the test's waits.
    config.keepalive_interval = Duration::from_secs(60);
    let node = net::spawn(config, Counter(Arc::clone(&seen))).unwrap();
    const THREADS: u64 = 4;
    const EACH: u64 = 20_000;
    let posters: Vec<_> = (0..THREADS)
        .map(|_| {
            let handle = node.handle.clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    handle.command(Cmd::Count).unwrap();
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::SeqCst) < THREADS * EACH {
        assert!(Instant::now() < deadline, "{} of {} commands arrived", seen.load(Ordering::SeqCst), THREADS * EACH);
        std::thread::sleep(Duration::from_millis(1));
    }
    // One command at a time, each waited for: every one must wake an idle loop by itself, at once (a lost
    // wake-up would leave it waiting for the tick).
    for _ in 0..2_000 {
        let (tx, rx) = mpsc::channel();
        node.handle.command(Cmd::Ack(tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(2)).expect("a lone command woke the loop");
    }
    node.handle.stop().unwrap();
    node.thread.join().unwrap();
}
