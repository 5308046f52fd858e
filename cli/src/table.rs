//! Human output: aligned tables, `key: value` blocks, and the cell formats shared by every verb (JSON
//! values, ages, UTC times, byte counts, durations).
//!
//! Invariant: rendering never fails and never panics on any JSON the server sends; a missing field is `-`.

use serde_json::Value;

/// Rows under a header, each column as wide as its widest cell (counted in characters).
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, or `empty` (a line such as `no routes`) when it has no rows.
    pub fn render_or(&self, empty: &str) -> String {
        if self.is_empty() {
            format!("{empty}\n")
        } else {
            self.render()
        }
    }

    /// The table as text: columns two spaces apart, no trailing spaces, one line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `items` joined by `sep`, or `-` when there are none.
pub fn joined(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(sep)
    }
}

/// `key: value` lines with the values aligned.
pub fn pairs(items: &[(&str, String)]) -> String {
    let width = items.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    items.iter().map(|(k, v)| format!("{k:width$}  {v}\n", width = width + 1, k = format!("{k}:"))).collect()
}

/// A JSON value as one cell: strings bare, `null` as `-`, arrays comma-joined, objects as compact JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => one_line(s),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => value.to_string(),
    }
}

/// `text` with control characters (a newline from a server message, an escape sequence) made visible.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A cell cut to at most `chars` characters (with `…` when cut).
pub fn clip(text: String, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text;
    }
    let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A float with `digits` decimals, `-` when absent.
pub fn float(value: &Value, digits: usize) -> String {
    value.as_f64().map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// How long ago an epoch-milliseconds instant was, relative to `now_ms` (`4s`, `12m`, `3h`, `2d`).
pub fn age(then_ms: u64, now_ms: u64) -> String {
    duration_ms(now_ms.saturating_sub(then_ms))
}

/// A span of milliseconds in its largest whole unit.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// Microseconds as milliseconds with two decimals (`1.25ms`).
pub fn micros(value: &Value) -> String {
    value.as_f64().map_or_else(|| "-".into(), |us| format!("{:.2}ms", us / 1_000.0))
}

/// A byte count in binary units (`512B`, `12.0MiB`).
pub fn bytes(value: &Value) -> String {
    let Some(n) = value.as_u64() else { return "-".into() };
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut size = n as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1}{}", UNITS[unit])
}

/// An epoch-milliseconds instant as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn utc(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1_000 % 60, in_day % 1_000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_to_the_widest_cell_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "ADDRESS", "SELF"]);
        t.row(vec!["node-1".into(), "127.0.0.1:8090".into(), "yes".into()]);
        t.row(vec!["n2".into(), "-".into(), "".into()]);
        let text = t.render();
        assert_eq!(text, "ID      ADDRESS         SELF\nnode-1  127.0.0.1:8090  yes\nn2      -\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["héllo".into(), "x".into()]);
        assert_eq!(t.render(), "A      B\nhéllo  x\n");
    }

    #[test]
    fn rows_longer_than_the_header_still_render() {
        let mut t = Table::new(&["A"]);
        t.row(vec!["1".into(), "extra".into()]);
        assert_eq!(t.render(), "A\n1  extra\n");
    }

    #[test]
    fn pairs_align_their_values() {
        assert_eq!(
            pairs(&[("node", "n1".into()), ("applied_slot", "7".into())]),
            "node:          n1\napplied_slot:  7\n"
        );
    }

    #[test]
    fn cells_format_every_json_kind() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(1.5)), "1.5");
        assert_eq!(cell(&json!(["a", 2])), "a,2");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(clip("abcdef".into(), 4), "abc…");
        assert_eq!(clip("abc".into(), 4), "abc");
    }

    #[test]
    fn units_are_human() {
        assert_eq!(duration_ms(999), "999ms");
        assert_eq!(duration_ms(61_000), "1m");
        assert_eq!(age(1_000, 7_201_000), "2h");
        assert_eq!(age(5_000, 1_000), "0ms");
        assert_eq!(bytes(&json!(512)), "512B");
        assert_eq!(bytes(&json!(3 * 1024 * 1024)), "3.0MiB");
        assert_eq!(bytes(&json!("x")), "-");
        assert_eq!(micros(&json!(1250)), "1.25ms");
        assert_eq!(float(&json!(2), 1), "2.0");
    }

    #[test]
    fn utc_times_match_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }
}
