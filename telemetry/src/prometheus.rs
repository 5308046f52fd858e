//! This node's figures in the Prometheus text exposition format (version 0.0.4): every family has its
//! `# HELP` and `# TYPE` lines once, names start with `aether_`, counters end in `_total`, units are base
//! units (seconds, bytes), and slice method latency is a histogram with cumulative `le` buckets.
//!
//! Invariant: label values are escaped (`\\`, `\"`, `\n`), so an artifact or peer name cannot break a line.

use crate::summary::Summary;
use std::fmt::Write;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.value(name, &[], value);
    }
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".into()
    } else if value > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition of `s` (this node's latest summary) with the slow-call threshold.
pub fn render(s: &Summary, slow_threshold_ms: u64) -> String {
    let mut out = Out { text: String::with_capacity(4096) };
    let o = &mut out;
    o.one(
        "aether_process_cpu_seconds_total",
        "counter",
        "CPU time (user and system) the node used.",
        s.cpu_ms_total as f64 / 1000.0,
    );
    o.one(
        "aether_process_cpu_ratio",
        "gauge",
        "CPU used over the last second, in cores (1 = one core busy).",
        s.cpu_percent / 100.0,
    );
    o.one("aether_process_resident_memory_bytes", "gauge", "Resident memory of the node.", s.rss_bytes as f64);
    o.one("aether_process_threads", "gauge", "Threads of the node process.", s.threads as f64);
    for (name, help, us) in [
        (
            "aether_event_loop_lag_p50_seconds",
            "Median wait from readiness to handling on the cluster event loop over the last second.",
            s.loop_lag.p50_us,
        ),
        (
            "aether_event_loop_lag_p99_seconds",
            "99th percentile wait from readiness to handling on the cluster event loop over the last second.",
            s.loop_lag.p99_us,
        ),
        (
            "aether_event_loop_lag_max_seconds",
            "Longest wait from readiness to handling on the cluster event loop over the last second.",
            s.loop_lag.max_us,
        ),
    ] {
        o.one(name, "gauge", help, us as f64 / 1e6);
    }
    o.family("aether_open_connections", "gauge", "Open connections per port.");
    for (port, n) in
        [("management", s.connections.management), ("app", s.connections.app), ("cluster", s.connections.cluster)]
    {
        o.value("aether_open_connections", &[("port", port)], n as f64);
    }
    peer_families(o, s);
    consensus_families(o, s);
    invocation_families(o, s);
    o.one(
        "aether_slow_call_threshold_seconds",
        "gauge",
        "Calls longer than this are recorded as slow.",
        slow_threshold_ms as f64 / 1000.0,
    );
    out.text
}

fn peer_families(o: &mut Out, s: &Summary) {
    type Field = fn(&crate::summary::PeerTraffic) -> u64;
    let families: [(&str, &str, Field); 4] = [
        ("aether_peer_frames_received_total", "Frames received from a peer.", |p| p.frames_in),
        ("aether_peer_frames_sent_total", "Frames queued for a peer.", |p| p.frames_out),
        ("aether_peer_received_bytes_total", "Bytes received from a peer (frame headers included).", |p| p.bytes_in),
        ("aether_peer_sent_bytes_total", "Bytes queued for a peer (frame headers included).", |p| p.bytes_out),
    ];
    for (name, help, field) in families {
        o.family(name, "counter", help);
        for p in &s.peers {
            o.value(name, &[("peer", &p.peer)], field(p) as f64);
        }
    }
}

fn consensus_families(o: &mut Out, s: &Summary) {
    let c = &s.consensus;
    o.one(
        "aether_consensus_applied_slot",
        "gauge",
        "Last consensus slot applied to the store here.",
        c.applied_slot as f64,
    );
    o.one("aether_consensus_slots_total", "counter", "Consensus slots decided here.", c.slots_total as f64);
    o.one(
        "aether_consensus_null_slots_total",
        "counter",
        "Consensus slots decided empty here.",
        c.null_slots_total as f64,
    );
    o.one(
        "aether_consensus_slot_rate",
        "gauge",
        "Consensus slots decided per second over the last second.",
        c.slots_per_sec,
    );
    o.one("aether_consensus_null_slot_ratio", "gauge", "Share of last second's slots that were empty.", c.null_share);
    o.one(
        "aether_consensus_phases_per_slot",
        "gauge",
        "Mean voting phases per slot over the last second.",
        c.phases_per_slot,
    );
}

fn invocation_families(o: &mut Out, s: &Summary) {
    o.family("aether_invocations_total", "counter", "Slice method calls run on this node.");
    for m in &s.methods {
        o.value("aether_invocations_total", &[("artifact", &m.artifact), ("method", &m.method)], m.calls as f64);
    }
    o.family("aether_invocation_errors_total", "counter", "Slice method calls run here that answered 500 or more.");
    for m in &s.methods {
        o.value("aether_invocation_errors_total", &[("artifact", &m.artifact), ("method", &m.method)], m.errors as f64);
    }
    let name = "aether_invocation_duration_seconds";
    o.family(name, "histogram", "Time slice method calls took on this node.");
    for m in &s.methods {
        let h = m.latency();
        let labels = [("artifact", m.artifact.as_str()), ("method", m.method.as_str())];
        for le in LATENCY_BUCKETS_S {
            let le_text = number(le);
            let le_us = (le * 1e6).round() as u64;
            let bucket = [labels[0], labels[1], ("le", le_text.as_str())];
            o.value(&format!("{name}_bucket"), &bucket, h.count_at_most(le_us) as f64);
        }
        o.value(&format!("{name}_bucket"), &[labels[0], labels[1], ("le", "+Inf")], h.count() as f64);
        o.value(&format!("{name}_sum"), &labels, h.sum() as f64 / 1e6);
        o.value(&format!("{name}_count"), &labels, h.count() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::sample;

    #[test]
    fn every_family_has_help_and_type_once_and_counters_end_in_total() {
        let text = render(&sample("node-1"), 500);
        let mut types = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "{name} typed twice");
            assert!(name.starts_with("aether_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(types.contains_key(name) || types.contains_key(family), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }

    #[test]
    fn latency_is_a_cumulative_histogram() {
        let text = render(&sample("node-1"), 500);
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("aether_invocation_duration_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.last(), Some(&3.0));
        assert!(text.contains("le=\"0.0005\"} 2\n"), "{text}");
        assert!(text.contains(
            "aether_invocation_duration_seconds_count{artifact=\"org.aether.examples:echo:1.0.0\",method=\"echo\"} 3\n"
        ));
        assert!(
            text.contains("aether_invocations_total{artifact=\"org.aether.examples:echo:1.0.0\",method=\"echo\"} 3\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample("node-1");
        s.peers[0].peer = "a\"b\\c\nd".into();
        let text = render(&s, 500);
        assert!(text.contains("peer=\"a\\\"b\\\\c\\nd\""), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("d\"")).count(), 0);
    }
}
