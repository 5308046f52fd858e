//! Load from `wrk` (`--wrk` in `bench kv` and `bench app`): an outside HTTP/1.1 load generator in C on
//! epoll, far cheaper per request than the in-process clients (one blocking thread per connection), and
//! the tool users run against a server. This module owns the command line of a run, the Lua scripts that
//! make the KV puts (the same paths and bodies as the in-process clients send), and reading wrk's report.
//!
//! A run is `wrk -t2 -c<C> -d<S>s --latency [-s script] URL` (one thread at c=1: wrk wants at least one
//! connection per thread). Its report gives requests, time, Requests/sec and the latency distribution
//! (p50, p75, p90, p99); `Non-2xx or 3xx responses` and socket errors count as errors. wrk keeps no
//! per-request latencies, so a [`RunResult`] from it carries those four percentiles instead.

use crate::RunResult;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Threads per wrk run (each an event loop over its share of the connections).
pub const THREADS: usize = 2;

/// One wrk run against `url` with `connections` connections for `duration` (whole seconds, at least 1),
/// extra header lines `headers` (`Name: value`), and a Lua script when given.
pub struct WrkRun<'a> {
    pub url: String,
    pub connections: usize,
    pub duration: Duration,
    pub headers: Vec<String>,
    pub script: Option<&'a Path>,
}

impl WrkRun<'_> {
    /// The arguments after `wrk`.
    pub fn args(&self) -> Vec<String> {
        let threads = THREADS.min(self.connections).max(1);
        let seconds = self.duration.as_secs().max(1);
        let mut args = vec![
            format!("-t{threads}"),
            format!("-c{}", self.connections.max(1)),
            format!("-d{seconds}s"),
            "--latency".to_string(),
        ];
        for header in &self.headers {
            args.push("-H".to_string());
            args.push(header.clone());
        }
        if let Some(script) = self.script {
            args.push("-s".to_string());
            args.push(script.display().to_string());
        }
        args.push(self.url.clone());
        args
    }

    /// Runs wrk (`bin`) to the end and reads its report.
    pub fn run(&self, bin: &Path) -> Result<RunResult, String> {
        let args = self.args();
        let output = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "wrk {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        parse(&stdout).map(|report| report.run_result()).map_err(|e| format!("wrk {}: {e}", args.join(" ")))
    }
}

/// What wrk reported for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Answers read, whatever their status.
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    /// (percentile, µs) from `Latency Distribution`.
    pub latency_us: Vec<(f64, f64)>,
    /// Answers with a status outside 2xx and 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors added up.
    pub socket_errors: u64,
}

impl Report {
    /// As a [`RunResult`]: successes are the answers less the non-2xx ones; every error counted.
    pub fn run_result(&self) -> RunResult {
        RunResult {
            ops: self.requests.saturating_sub(self.non_2xx),
            errors: self.non_2xx + self.socket_errors,
            seconds: self.seconds,
            latency_summary_us: self.latency_us.clone(),
            ..RunResult::default()
        }
    }
}

/// Reads wrk's text report (as printed with `--latency`). Requests, time, Requests/sec and the p50 and
/// p99 lines must be there; the error lines only appear when there were errors.
pub fn parse(text: &str) -> Result<Report, String> {
    let mut requests = None;
    let mut seconds = None;
    let mut requests_per_s = None;
    let mut latency_us = Vec::new();
    let (mut non_2xx, mut socket_errors) = (0u64, 0u64);
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((p, value)) = line.split_once('%') {
                if let Ok(p) = p.trim().parse::<f64>() {
                    latency_us.push((p, duration_us(value.trim())?));
                    continue;
                }
            }
            in_distribution = false;
        }
        if let Some(rest) = line.strip_suffix(" read").and_then(|l| l.split_once(" requests in ")) {
            // `123456 requests in 5.00s, 30.00MB read`
            let (count, time) = rest;
            requests = Some(count.trim().parse::<u64>().map_err(|_| format!("bad request count in `{line}`"))?);
            let time = time.split(',').next().unwrap_or_default().trim();
            seconds = Some(duration_us(time)? / 1e6);
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_s = Some(rate.trim().parse::<f64>().map_err(|_| format!("bad rate in `{line}`"))?);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // `Socket errors: connect 0, read 12, write 0, timeout 3`
            for part in errors.split(',') {
                let count = part.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok());
                socket_errors += count.ok_or_else(|| format!("bad socket error count in `{line}`"))?;
            }
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = count.trim().parse().map_err(|_| format!("bad non-2xx count in `{line}`"))?;
        }
    }
    let missing = |what: &str| format!("no {what} in wrk's output:\n{text}");
    let report = Report {
        requests: requests.ok_or_else(|| missing("`N requests in T` line"))?,
        seconds: seconds.ok_or_else(|| missing("run time"))?,
        requests_per_s: requests_per_s.ok_or_else(|| missing("Requests/sec"))?,
        latency_us,
        non_2xx,
        socket_errors,
    };
    for p in [50.0, 99.0] {
        if !report.latency_us.iter().any(|(q, _)| *q == p) {
            return Err(missing(&format!("{p}% latency (was --latency given?)")));
        }
    }
    if report.seconds <= 0.0 {
        return Err(format!("wrk reports a run of {} s", report.seconds));
    }
    Ok(report)
}

/// A wrk duration (`812.00us`, `1.25ms`, `2.00s`, `1.00m`, `1.00h`) in microseconds.
fn duration_us(text: &str) -> Result<f64, String> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| format!("no unit in duration `{text}`"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("bad duration `{text}`"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return Err(format!("unknown unit in duration `{text}`")),
    };
    Ok(value * scale)
}

/// Which KV API a put script speaks.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum KvApi {
    /// Aether's management API: `PUT /api/kv/user/bench/c{i}/k{j}` with the value as the body.
    Aether,
    /// etcd's JSON gateway: `POST /v3/kv/put` with `{"key":base64("bench/c{i}/k{j}"),"value":base64(value)}`
    /// and `Content-Type: application/json`.
    Etcd,
}

/// A wrk Lua script making puts of `value` the way the in-process clients do: the keys of `clients`
/// clients (`c0` to `c{clients-1}`) with `keys` keys each (`k0`...), one key per request, consecutive
/// requests going to different clients' keys (so no two requests in flight write the same key while
/// there are fewer connections than clients times keys). Every request is built once, in `init`. The
/// script is for a run with `clients` connections (so `THREADS.min(clients)` threads, which share the
/// request numbers between them).
pub fn kv_put_script(api: KvApi, clients: usize, keys: usize, value: &[u8]) -> String {
    let (clients, keys) = (clients.max(1), keys.max(1));
    let mut script = format!(
        "-- Puts for `bench kv --wrk`: request n of the run writes key c(n % {clients})/k(n / {clients} % {keys}).\n\
         local clients, keys, threads = {clients}, {keys}, {threads}\n\
         local requests = {{}}\n\
         local n = 0\n\
         local next_id = 0\n\
         function setup(thread)\n  thread:set(\"id\", next_id)\n  next_id = next_id + 1\nend\n",
        threads = THREADS.min(clients),
    );
    match api {
        KvApi::Aether => {
            script.push_str(&format!("local value = \"{}\"\n", lua_escape(value)));
            script.push_str(
                "local function make(c, k, i)\n  \
                 return wrk.format(\"PUT\", \"/api/kv/user/bench/c\" .. c .. \"/k\" .. k, nil, value)\nend\n",
            );
        }
        KvApi::Etcd => {
            script.push_str(&format!("local value64 = \"{}\"\n", crate::base64(value)));
            script.push_str("local keys64 = {\n");
            for k in 0..keys {
                for c in 0..clients {
                    script.push_str(&format!("  \"{}\",\n", crate::base64(format!("bench/c{c}/k{k}").as_bytes())));
                }
            }
            script.push_str("}\n");
            script.push_str(
                "local headers = { [\"Content-Type\"] = \"application/json\" }\n\
                 local function make(c, k, i)\n  \
                 local body = '{\"key\":\"' .. keys64[i] .. '\",\"value\":\"' .. value64 .. '\"}'\n  \
                 return wrk.format(\"POST\", \"/v3/kv/put\", headers, body)\nend\n",
            );
        }
    }
    script.push_str(
        "function init(args)\n  \
         for k = 0, keys - 1 do\n    for c = 0, clients - 1 do\n      \
         requests[#requests + 1] = make(c, k, #requests + 1)\n    end\n  end\n  \
         n = id or 0\nend\n\
         function request()\n  local r = requests[(n % #requests) + 1]\n  n = n + threads\n  return r\nend\n",
    );
    script
}

/// `bytes` inside a double-quoted Lua string.
fn lua_escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' => format!("\\{}", b as char),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\{b}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:8080/echo/hello
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   80.00%
    Req/Sec    20.00k     1.00k   25.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.40ms
     90%    1.80ms
     99%  812.00us
  200000 requests in 5.00s, 30.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  40000.00
Transfer/sec:      6.00MB
";

    #[test]
    fn a_report_with_latencies_and_errors_is_read_whole() {
        let report = parse(REPORT).unwrap();
        assert_eq!(report.requests, 200_000);
        assert_eq!(report.seconds, 5.0);
        assert_eq!(report.requests_per_s, 40_000.0);
        assert_eq!(report.latency_us, vec![(50.0, 1100.0), (75.0, 1400.0), (90.0, 1800.0), (99.0, 812.0)]);
        assert_eq!((report.non_2xx, report.socket_errors), (12, 6));
        let run = report.run_result();
        assert_eq!((run.ops, run.errors), (199_988, 18));
        assert_eq!(run.percentile_us(50.0), 1100.0);
        assert!(run.percentile_us(99.9).is_nan());
    }

    #[test]
    fn a_report_without_errors_has_none() {
        let text: String = REPORT.lines().filter(|l| !l.contains("errors") && !l.contains("Non-2xx")).fold(
            String::new(),
            |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            },
        );
        let report = parse(&text).unwrap();
        assert_eq!((report.non_2xx, report.socket_errors), (0, 0));
    }

    #[test]
    fn a_truncated_or_garbled_report_is_an_error_not_a_panic() {
        assert!(parse("").is_err());
        assert!(parse(&REPORT.replace("Requests/sec:  40000.00", "")).is_err());
        assert!(parse(&REPORT.replace("  Latency Distribution\n", "")).is_err());
        assert!(parse(&REPORT.replace("1.10ms", "1.10parsecs")).is_err());
        assert!(parse(&REPORT.replace("200000 requests", "many requests")).is_err());
        assert!(parse(&REPORT.replace("read 2,", "read two,")).is_err());
    }

    #[test]
    fn durations_read_every_unit() {
        assert_eq!(duration_us("3.5us").unwrap(), 3.5);
        assert_eq!(duration_us("2.00s").unwrap(), 2e6);
        assert_eq!(duration_us("1.00m").unwrap(), 60e6);
        assert!(duration_us("12").is_err());
    }

    #[test]
    fn one_connection_runs_one_thread() {
        let run = WrkRun {
            url: "http://127.0.0.1:1/".into(),
            connections: 1,
            duration: Duration::from_secs(5),
            headers: vec!["Connection: close".into()],
            script: None,
        };
        assert_eq!(run.args(), ["-t1", "-c1", "-d5s", "--latency", "-H", "Connection: close", "http://127.0.0.1:1/"]);
    }

    #[test]
    fn put_scripts_name_the_in_process_clients_keys() {
        let aether = kv_put_script(KvApi::Aether, 2, 3, b"v\"1");
        assert!(aether.contains("local value = \"v\\\"1\""));
        assert!(aether.contains("\"/api/kv/user/bench/c\" .. c .. \"/k\" .. k"));
        let etcd = kv_put_script(KvApi::Etcd, 2, 3, b"v");
        assert!(etcd.contains(&format!("\"{}\"", crate::base64(b"bench/c1/k2"))));
        assert!(etcd.contains("/v3/kv/put"));
        assert_eq!(etcd.matches("\",\n").count(), 6);
    }
}
