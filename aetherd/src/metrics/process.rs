//! The node process as the kernel sees it: CPU time, resident memory and threads, from
//! `/proc/self/stat` and `/proc/self/status` (two small reads, once a second, on the event loop).
//!
//! Reads are bounded (4 KiB each) and a file that cannot be read or parsed gives zeros, never an error:
//! metrics must not stop a node.

use std::io::Read;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessFigures {
    /// User plus system CPU time since the process started, in ms.
    pub cpu_ms: u64,
    pub rss_bytes: u64,
    pub threads: u64,
}

fn read_small(path: &str) -> String {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(4096).read_to_string(&mut text);
    }
    text
}

pub fn sample() -> ProcessFigures {
    let mut figures = ProcessFigures { cpu_ms: cpu_ms(&read_small("/proc/self/stat")), ..Default::default() };
    let status = read_small("/proc/self/status");
    figures.rss_bytes = status_field(&status, "VmRSS:").saturating_mul(1024);
    figures.threads = status_field(&status, "Threads:");
    figures
}

/// utime + stime of a `/proc/self/stat` line, in ms. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_ms(stat: &str) -> u64 {
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)).saturating_mul(1000) / USER_HZ
}

/// The number after `name` in `/proc/self/status` (`VmRSS:   1234 kB` gives 1234).
fn status_field(status: &str, name: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(name));
    line.and_then(|l| l[name.len()..].split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 100 2000000 300";
        assert_eq!(cpu_ms(stat), 3000);
        assert_eq!(cpu_ms("garbage"), 0);
        assert_eq!(cpu_ms("1 (x) S"), 0);
    }

    #[test]
    fn status_fields_parse() {
        let status = "Name:\taetherd\nVmRSS:\t  51200 kB\nThreads:\t42\n";
        assert_eq!(status_field(status, "VmRSS:"), 51200);
        assert_eq!(status_field(status, "Threads:"), 42);
        assert_eq!(status_field(status, "Missing:"), 0);
    }

    #[test]
    fn this_process_has_threads_and_memory() {
        let figures = sample();
        assert!(figures.threads >= 1 && figures.rss_bytes > 0, "{figures:?}");
    }
}
