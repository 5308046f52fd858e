//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) and their next due instant in a
//! time zone.
//!
//! Each field is `*`, a value, a range `a-b`, a step `*/n` or `a-b/n` (or `a/n`, from `a` to the field's end), or a
//! comma list of those; months and days of the week also take names (`jan`..`dec`, `sun`..`sat`, any case), and
//! day-of-week 7 is Sunday like 0. When both day-of-month and day-of-week are restricted (neither is `*`), a day
//! matches if either does (the classic cron rule); otherwise only the restricted one counts.
//!
//! Time zones are IANA names (or `UTC`) from the time-zone database bundled into the binary (`jiff`'s
//! `tzdb-bundle-always`), so every node computes the same due instants whatever its `/usr/share/zoneinfo`.
//!
//! DST rules: a local time that does not exist (inside a spring-forward gap) is due at the first instant after
//! the gap (the transition itself), so `30 2 * * *` in Europe/Berlin runs at 03:00 CEST on that day, once; a
//! local time that happens twice (an autumn fold) is due once, at its first occurrence.
//!
//! Invariants: [`Cron::next_after`] returns an instant strictly later than its input whose local time matches
//! the expression (or the gap rule above), and no matching instant lies between the two; a parsed expression
//! is due at least once within [`SEARCH_DAYS`] of any instant (one that never is, such as `0 0 30 2 *`, is
//! refused at parse).

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use std::fmt;

/// How far ahead the search for the next due day goes: past two leap days (`0 0 29 2 *`).
pub const SEARCH_DAYS: i64 = 9 * 366;
/// Longest expression accepted.
const EXPRESSION_BYTES_MAX: usize = 256;

/// A cron expression that did not parse, or a time zone that is unknown; the reason says which part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

/// A parsed expression in its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
    zone: TimeZone,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[] };
const DAY: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const WEEKDAY: Field =
    Field { name: "day-of-week", min: 0, max: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// The time zone `name` (`UTC` or an IANA name such as `Europe/Berlin`).
pub fn time_zone(name: &str) -> Result<TimeZone, CronError> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| CronError(format!("unknown time zone `{name}` (expected `UTC` or an IANA name)")))
}

impl Cron {
    /// Parses `expression` for time zone `zone`.
    pub fn parse(expression: &str, zone: &str) -> Result<Cron, CronError> {
        if expression.len() > EXPRESSION_BYTES_MAX {
            return Err(CronError(format!("cron expression longer than {EXPRESSION_BYTES_MAX} bytes")));
        }
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError(format!(
                "cron expression `{expression}`: expected 5 fields (minute hour day-of-month month day-of-week), \
                 found {}",
                fields.len()
            )));
        };
        let in_expression = |e: CronError| CronError(format!("cron expression `{expression}`: {e}"));
        let mut weekdays = field(weekday, &WEEKDAY).map_err(in_expression)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Cron {
            minutes: field(minute, &MINUTE).map_err(in_expression)?,
            hours: field(hour, &HOUR).map_err(in_expression)?,
            days: field(day, &DAY).map_err(in_expression)?,
            months: field(month, &MONTH).map_err(in_expression)?,
            weekdays,
            days_restricted: !day.starts_with('*'),
            weekdays_restricted: !weekday.starts_with('*'),
            zone: time_zone(zone)?,
        };
        // Restricted days and months that never meet (`0 0 31 4 *`) are refused: search from a leap year.
        if cron.next_after(951_782_400_000).is_none() {
            return Err(CronError(format!("cron expression `{expression}` is never due")));
        }
        Ok(cron)
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// The instant (Unix ms) a local date and time is due at: itself, the end of the gap it falls in, or the
    /// first of its two occurrences.
    fn due_at(&self, local: DateTime) -> Option<i64> {
        let ambiguous = self.zone.to_ambiguous_timestamp(local);
        let ts = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok()?,
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok()?,
            AmbiguousOffset::Gap { before, .. } => {
                // With the offset from before the gap, the local time lands past the transition: the
                // transition is the last one before it.
                let past = before.to_timestamp(local).ok()?;
                self.zone.preceding(past).next()?.timestamp()
            }
        };
        Some(ts.as_millisecond())
    }

    /// The first instant strictly after `after_ms` (Unix ms) the expression is due at, or `None` when there is
    /// none within [`SEARCH_DAYS`] (or the instant is outside the supported range).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = i64::try_from(after_ms).ok()?;
        let start = Timestamp::from_millisecond(after).ok()?.to_zoned(self.zone.clone()).date();
        // A day earlier, since a fold can put an earlier local date's time after `after`.
        let mut date = start.yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                if let Some(due) = self.first_in_day(date, after) {
                    return u64::try_from(due).ok();
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    fn first_in_day(&self, date: Date, after: i64) -> Option<i64> {
        for hour in bits(self.hours) {
            for minute in bits(self.minutes) {
                let local = date.at(hour as i8, minute as i8, 0, 0);
                match self.due_at(local) {
                    Some(due) if due > after => return Some(due),
                    _ => {}
                }
            }
        }
        None
    }
}

fn bits(set: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |b| set & (1u64 << b) != 0)
}

/// One field as a bit set (bit `v` for value `v`).
fn field(text: &str, spec: &Field) -> Result<u64, CronError> {
    let mut set = 0u64;
    for part in text.split(',') {
        set |= part_bits(part, spec).map_err(|reason| CronError(format!("{} field `{text}`: {reason}", spec.name)))?;
    }
    Ok(set)
}

fn part_bits(part: &str, spec: &Field) -> Result<u64, String> {
    let (range, step) = match part.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step.parse().map_err(|_| format!("step `{step}` is not a number"))?;
            if step == 0 || step > spec.max {
                return Err(format!("step {step} outside 1-{}", spec.max));
            }
            (range, Some(step))
        }
        None => (part, None),
    };
    let (low, high) = if range == "*" {
        (spec.min, spec.max)
    } else if let Some((a, b)) = range.split_once('-') {
        (value(a, spec)?, value(b, spec)?)
    } else {
        let v = value(range, spec)?;
        (v, if step.is_some() { spec.max } else { v })
    };
    if low > high {
        return Err(format!("range {low}-{high} runs backwards"));
    }
    let step = step.unwrap_or(1);
    Ok((low..=high).step_by(step as usize).fold(0u64, |set, v| set | (1u64 << v)))
}

fn value(text: &str, spec: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        // Month names count from 1 (the field's minimum), weekday names from 0 (Sunday).
        return Ok(i as u32 + spec.min);
    }
    let v: u32 = text.parse().map_err(|_| format!("`{text}` is not a number or a name"))?;
    if v < spec.min || v > spec.max {
        return Err(format!("{v} outside {}-{}", spec.min, spec.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(text: &str) -> u64 {
        let ts: Timestamp = text.parse().unwrap();
        u64::try_from(ts.as_millisecond()).unwrap()
    }

    fn local(ms: u64, zone: &str) -> String {
        let ts = Timestamp::from_millisecond(ms as i64).unwrap();
        ts.to_zoned(time_zone(zone).unwrap()).strftime("%Y-%m-%d %H:%M %a %:z").to_string()
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let cron = Cron::parse(expr, zone).unwrap();
        local(cron.next_after(ms(after)).unwrap(), zone)
    }

    #[test]
    fn fields_accept_ranges_steps_lists_and_names() {
        assert_eq!(next("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z"), "2026-01-01 00:15 Thu +00:00");
        assert_eq!(next("5-10/2 * * * *", "UTC", "2026-01-01T00:07:00Z"), "2026-01-01 00:09 Thu +00:00");
        assert_eq!(next("0 9,17 * * *", "UTC", "2026-01-01T09:00:00Z"), "2026-01-01 17:00 Thu +00:00");
        assert_eq!(next("0 0 1 JUN *", "UTC", "2026-01-01T00:00:00Z"), "2026-06-01 00:00 Mon +00:00");
        assert_eq!(next("0 0 * * mon-wed", "UTC", "2026-01-01T00:00:00Z"), "2026-01-05 00:00 Mon +00:00");
        assert_eq!(next("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z"), "2026-01-04 00:00 Sun +00:00");
        assert_eq!(next("0 0 * * 0", "UTC", "2026-01-01T00:00:00Z"), "2026-01-04 00:00 Sun +00:00");
        assert_eq!(next("30 12 * * *", "utc", "2026-01-01T12:30:00Z"), "2026-01-02 12:30 Fri +00:00");
        assert_eq!(next("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z"), "2028-02-29 00:00 Tue +00:00");
        assert_eq!(next("10/20 * * * *", "UTC", "2026-01-01T00:31:00Z"), "2026-01-01 00:50 Thu +00:00");
    }

    #[test]
    fn restricted_day_of_month_and_week_match_either() {
        // The 13th, or any Friday: 2026-01-02 is a Friday, before the 13th.
        assert_eq!(next("0 0 13 * fri", "UTC", "2026-01-01T00:00:00Z"), "2026-01-02 00:00 Fri +00:00");
        // Only the day of month restricted: the 13th.
        assert_eq!(next("0 0 13 * *", "UTC", "2026-01-01T00:00:00Z"), "2026-01-13 00:00 Tue +00:00");
        // Only the weekday restricted: `*/1` in day-of-month still counts as unrestricted? No: it starts with `*`.
        assert_eq!(next("0 0 */1 * fri", "UTC", "2026-01-01T00:00:00Z"), "2026-01-02 00:00 Fri +00:00");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_a_reason() {
        for (expr, zone, why) in [
            ("* * * *", "UTC", "expected 5 fields"),
            ("60 * * * *", "UTC", "minute field `60`: 60 outside 0-59"),
            ("* 24 * * *", "UTC", "hour field"),
            ("* * 0 * *", "UTC", "day-of-month field"),
            ("* * * 13 *", "UTC", "month field"),
            ("* * * * 8", "UTC", "day-of-week field"),
            ("*/0 * * * *", "UTC", "step 0"),
            ("5-1 * * * *", "UTC", "runs backwards"),
            ("* * * foo *", "UTC", "not a number or a name"),
            ("0 0 30 2 *", "UTC", "never due"),
            ("* * * * *", "Mars/Olympus", "unknown time zone `Mars/Olympus`"),
        ] {
            let e = Cron::parse(expr, zone).unwrap_err();
            assert!(e.0.contains(why), "{expr} in {zone}: {e}");
        }
    }

    #[test]
    fn spring_forward_gap_runs_at_the_first_instant_after_it_once() {
        // Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"), "2026-03-29 03:00 Sun +02:00");
        let cron = Cron::parse("*/15 2 * * *", "Europe/Berlin").unwrap();
        let first = cron.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(local(first, "Europe/Berlin"), "2026-03-29 03:00 Sun +02:00");
        let second = cron.next_after(first).unwrap();
        assert_eq!(local(second, "Europe/Berlin"), "2026-03-30 02:00 Mon +02:00", "the gap's times run once");
        // America/New_York 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(next("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z"), "2026-03-08 03:00 Sun -04:00");
        // A time after the gap on that day is unaffected.
        assert_eq!(next("30 3 * * *", "America/New_York", "2026-03-08T05:00:00Z"), "2026-03-08 03:30 Sun -04:00");
    }

    #[test]
    fn autumn_fold_runs_once_at_the_first_occurrence() {
        // Europe/Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let cron = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = cron.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(local(first, "Europe/Berlin"), "2026-10-25 02:30 Sun +02:00");
        let second = cron.next_after(first).unwrap();
        assert_eq!(local(second, "Europe/Berlin"), "2026-10-26 02:30 Mon +01:00", "not again at 02:30 CET");
        // America/New_York 2026-11-01: 01:30 happens twice.
        let cron = Cron::parse("30 1 * * *", "America/New_York").unwrap();
        let first = cron.next_after(ms("2026-10-31T12:00:00Z")).unwrap();
        assert_eq!(local(first, "America/New_York"), "2026-11-01 01:30 Sun -04:00");
        assert_eq!(local(cron.next_after(first).unwrap(), "America/New_York"), "2026-11-02 01:30 Mon -05:00");
        // Every minute through the fold: the repeated hour's minutes run once, so the hour has 60 runs.
        let cron = Cron::parse("* 1 * * *", "America/New_York").unwrap();
        let mut at = ms("2026-11-01T04:00:00Z");
        let mut runs = 0;
        while let Some(due) = cron.next_after(at).filter(|&d| d < ms("2026-11-01T12:00:00Z")) {
            runs += 1;
            at = due;
        }
        assert_eq!(runs, 60);
    }

    fn matches(cron: &Cron, due: u64) -> bool {
        let zoned = Timestamp::from_millisecond(due as i64).unwrap().to_zoned(cron.zone.clone());
        zoned.second() == 0
            && cron.day_matches(zoned.date())
            && cron.hours & (1 << zoned.hour()) != 0
            && cron.minutes & (1 << zoned.minute()) != 0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn next_is_later_matches_and_skips_no_due_time(
            minute in prop::sample::select(vec!["*", "*/7", "0", "15,45", "10-20/5"]),
            hour in prop::sample::select(vec!["*", "2", "*/5", "1-3"]),
            day in prop::sample::select(vec!["*", "1", "13", "1-10/3"]),
            month in prop::sample::select(vec!["*", "mar", "oct-dec", "*/2"]),
            weekday in prop::sample::select(vec!["*", "sun", "1-5", "6,0"]),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
            after in 1_700_000_000_000u64..1_900_000_000_000u64,
        ) {
            let expr = format!("{minute} {hour} {day} {month} {weekday}");
            let cron = Cron::parse(&expr, zone).unwrap();
            let due = cron.next_after(after).unwrap();
            prop_assert!(due > after);
            // Outside DST transitions the due instant's local time matches the expression.
            let zoned = Timestamp::from_millisecond(due as i64).unwrap().to_zoned(cron.zone.clone());
            let transition = cron.zone.preceding(Timestamp::from_millisecond(due as i64 + 1).unwrap()).next();
            let at_transition = transition.is_some_and(|t| t.timestamp().as_millisecond() == due as i64);
            prop_assert!(at_transition || matches(&cron, due), "{expr} {zone}: {zoned}");
            // No minute strictly between `after` and `due` matches (checked over at most a day).
            let mut probe = (after / 60_000 + 1) * 60_000;
            while probe < due && probe < after + 86_400_000 {
                prop_assert!(!matches(&cron, probe) || {
                    // A second occurrence inside a fold is not due.
                    let earlier = cron.due_at(Timestamp::from_millisecond(probe as i64).unwrap()
                        .to_zoned(cron.zone.clone()).datetime()).unwrap();
                    earlier < probe as i64 && earlier <= after as i64
                }, "{expr} {zone}: {probe} matches before {due}");
                probe += 60_000;
            }
        }
    }
}
