//! One line per event on stderr: `2026-11-23T18:04:05.123Z INFO  target: message`, ending in ` req=<id>` when
//! written while a call with that request id runs on the thread. journald keeps it.
//! The level comes from `--log-level` or `AETHER_LOG` (error, warn, info, debug, trace; default info).

use log::{Level, LevelFilter, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger {
    node: String,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let req = crate::metrics::request_id::with_current(|id| id.map(|id| format!(" req={id}")).unwrap_or_default());
        let line = format!("{} {level} [{}] {}: {}{req}\n", timestamp(), self.node, record.target(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse().map_err(|_| format!("log level '{text}': use error, warn, info, debug or trace"))
}

pub fn init(node: &str, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { node: node.to_string() })).is_ok() {
        log::set_max_level(level);
    }
}

/// UTC wall-clock time in RFC 3339 with milliseconds.
fn timestamp() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z", since.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_000), (2022, 1, 8));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
