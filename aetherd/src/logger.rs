//! One line per event on stderr: `2026-11-23T18:04:05.123Z INFO  target: message`, ending in ` req=<id>` when
//! written while a call with that request id runs on the thread. journald keeps it.
//! The level comes from `--log-level` or `AETHER_LOG` (error, warn, info, debug, trace; default info),
//! and can be changed while the node runs, per log target, from the cluster's `loglevels/` keys
//! ([`set_levels`]).
//!
//! Invariants: a record is one line: control characters in its message (newlines, carriage returns, ANSI
//! escapes, which client-sent paths or names may carry) are written as `\n`, `\r`, `\x1b`, ..., so no input
//! can forge a log line or drive a terminal; a record is written when its level is within the level of the longest configured target
//! that is its target or a `::`-separated ancestor of it (`consensus` covers `consensus::replica`, not
//! `consensus2`), else within the default; `log::max_level` is always the most verbose of those levels, so
//! the macros skip what no filter would pass without calling in here.

use log::{Level, LevelFilter, Metadata, Record};
use std::io::Write;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Levels per log target, and the default for every other target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub default: LevelFilter,
    /// Target (module path) and its level.
    pub targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// The level that applies to `target`: its longest configured ancestor's, else the default.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .filter(|(t, _)| covers(t, target))
            .max_by_key(|(t, _)| t.len())
            .map_or(self.default, |(_, level)| *level)
    }

    fn most_verbose(&self) -> LevelFilter {
        self.targets.iter().map(|(_, l)| *l).fold(self.default, std::cmp::max)
    }
}

/// Whether configured target `prefix` covers record target `target` (equal, or an ancestor on `::`).
fn covers(prefix: &str, target: &str) -> bool {
    target.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

static FILTER: RwLock<Filter> = RwLock::new(Filter { default: LevelFilter::Info, targets: Vec::new() });
/// The default given at start (`--log-level` / `AETHER_LOG`), which a removed cluster default falls back to.
static START_DEFAULT: RwLock<LevelFilter> = RwLock::new(LevelFilter::Info);

/// Apply cluster log levels: `default` (none: the level given at start) and per-target levels.
pub fn set_levels(default: Option<LevelFilter>, targets: Vec<(String, LevelFilter)>) {
    let start = *START_DEFAULT.read().unwrap_or_else(|e| e.into_inner());
    let filter = Filter { default: default.unwrap_or(start), targets };
    log::set_max_level(filter.most_verbose());
    *FILTER.write().unwrap_or_else(|e| e.into_inner()) = filter;
}

/// The default level given at start.
pub fn start_default() -> LevelFilter {
    *START_DEFAULT.read().unwrap_or_else(|e| e.into_inner())
}

/// The levels in force.
pub fn levels() -> Filter {
    FILTER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

struct StderrLogger {
    node: String,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if metadata.level() > log::max_level() {
            return false;
        }
        let filter = FILTER.read().unwrap_or_else(|e| e.into_inner());
        if filter.targets.is_empty() {
            return metadata.level() <= filter.default;
        }
        metadata.level() <= filter.level_for(metadata.target())
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
        let text = record.args().to_string();
        let message = one_line(&text);
        let line = format!("{} {level} [{}] {}: {message}{req}\n", timestamp(), self.node, record.target());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `text` with every control character (Unicode `Cc`: U+0000..U+001F, U+007F..U+009F) escaped as `\n`, `\r`,
/// `\t` or `\xNN`, so it fits on one log line and cannot send terminal escapes.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse().map_err(|_| format!("log level '{text}': use error, warn, info, debug or trace"))
}

pub fn init(node: &str, level: LevelFilter) {
    *START_DEFAULT.write().unwrap_or_else(|e| e.into_inner()) = level;
    *FILTER.write().unwrap_or_else(|e| e.into_inner()) = Filter { default: level, targets: Vec::new() };
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
    fn the_longest_covering_target_decides_and_only_on_path_boundaries() {
        let filter = Filter {
            default: LevelFilter::Info,
            targets: vec![
                ("consensus".into(), LevelFilter::Debug),
                ("consensus::replica".into(), LevelFilter::Warn),
                ("aetherd::app".into(), LevelFilter::Trace),
            ],
        };
        assert_eq!(filter.level_for("consensus"), LevelFilter::Debug);
        assert_eq!(filter.level_for("consensus::slot"), LevelFilter::Debug);
        assert_eq!(filter.level_for("consensus::replica"), LevelFilter::Warn);
        assert_eq!(filter.level_for("consensus::replica::catchup"), LevelFilter::Warn);
        assert_eq!(filter.level_for("consensus2"), LevelFilter::Info, "not a path ancestor");
        assert_eq!(filter.level_for("aetherd::application"), LevelFilter::Info);
        assert_eq!(filter.level_for("aetherd::app::dispatch"), LevelFilter::Trace);
        assert_eq!(filter.level_for("aetherd"), LevelFilter::Info);
        assert_eq!(filter.most_verbose(), LevelFilter::Trace);
    }

    #[test]
    fn a_message_stays_on_one_line_without_terminal_escapes() {
        let forged = "GET /api/x\n2026-11-30T00:00:00.000Z ERROR [node-1] aetherd: forged\r\x1b[31mred\u{85}\u{7f}";
        let line = one_line(forged);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert_eq!(
            line,
            "GET /api/x\\n2026-11-30T00:00:00.000Z ERROR [node-1] aetherd: forged\\r\\x1b[31mred\\x85\\x7f"
        );
        assert!(matches!(one_line("plain: é ünï"), std::borrow::Cow::Borrowed("plain: é ünï")));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_000), (2022, 1, 8));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
