//! Event time, converted exactly to UTC microseconds (Iceberg `timestamptz`).
//!
//! Sources give time in many shapes: RFC 3339 with an offset, naive local
//! timestamps in a declared zone, epoch seconds or milliseconds, or a date
//! plus a period of the day (the UK electricity market's settlement date and
//! half-hour period 1..48, in Europe/London: 46 periods on the spring
//! clock-change day, 50 in autumn). Each converts to one instant or to a
//! reason why it cannot: a local time that falls in the spring gap, or that
//! occurs twice in autumn, is rejected, never shifted.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a value has no UTC instant; becomes the reject reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TimeError> {
    Err(TimeError(msg.into()))
}

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// Naive formats tried, in order, when a job gives none.
const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// `text` without leading and trailing white space, as [`str::trim`]
/// gives it, but without decoding a character when both ends are ASCII
/// that is not white space (a value's usual shape: nothing to trim).
pub fn trim(text: &str) -> &str {
    let plain = |b: &u8| b.is_ascii() && !b.is_ascii_whitespace() && *b != 0x0B;
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(first), Some(last)) if plain(first) && plain(last) => text,
        _ => text.trim(),
    }
}

/// Parses an RFC 3339 timestamp that carries its offset (`Z` or `±hh:mm`).
pub fn parse_with_offset(text: &str) -> Result<Micros, TimeError> {
    let trimmed = trim(text);
    if let Some(micros) = plain_rfc3339(trimmed.as_bytes()) {
        return Ok(micros);
    }
    DateTime::parse_from_rfc3339(trimmed)
        .or_else(|_| DateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .or_else(|_| {
            err(format!(
                "{trimmed:?} is not a timestamp with an offset (e.g. 2024-03-31T01:30:00+01:00 or ...Z)"
            ))
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.f]` then `Z` or `±HH:MM`, the shape nearly every
/// source writes, read field by field without chrono's parser: the same
/// instant chrono gives. None for anything else (a leap second, more than nine
/// fractional digits, a space, a lower-case letter...): chrono reads it.
fn plain_rfc3339(b: &[u8]) -> Option<Micros> {
    let digit = |i: usize| -> Option<i64> {
        let d = b.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let year = i32::try_from(two(0)? * 100 + two(2)?).ok()?;
    let field = |i: usize| two(i).and_then(|v| u32::try_from(v).ok());
    // chrono checks the date and the time of day (no leap second here).
    let local = NaiveDate::from_ymd_opt(year, field(5)?, field(8)?)?.and_hms_opt(
        field(11)?,
        field(14)?,
        field(17)?,
    )?;
    let mut i = 19;
    let mut nanos = 0;
    if at(i, b'.') {
        let first = i + 1;
        i = first;
        while let Some(d) = digit(i) {
            nanos = nanos * 10 + d;
            i += 1;
            if i - first > 9 {
                return None;
            }
        }
        let places = i - first;
        if places == 0 {
            return None;
        }
        nanos *= 10i64.pow(u32::try_from(9 - places).ok()?);
    }
    let offset = match b.get(i)? {
        b'Z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b':') => {
            let (h, m) = (two(i + 1)?, two(i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let seconds = local.and_utc().timestamp() - offset;
    Some(seconds * 1_000_000 + nanos / 1000)
}

/// Parses a naive timestamp (no offset) with `format`, or the usual ISO
/// shapes when `format` is `None`.
pub fn parse_naive(text: &str, format: Option<&str>) -> Result<NaiveDateTime, TimeError> {
    let trimmed = trim(text);
    let parsed = match format {
        Some(f) => NaiveDateTime::parse_from_str(trimmed, f).ok(),
        None => NAIVE_FORMATS
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(trimmed, f).ok()),
    };
    parsed.map_or_else(
        || {
            err(format!(
                "{trimmed:?} is not a local timestamp{}",
                format.map_or(String::new(), |f| format!(" in the format {f:?}"))
            ))
        },
        Ok,
    )
}

/// The UTC instant of a local wall-clock time in `zone`. Times in the spring
/// gap do not exist and times in the autumn overlap are ambiguous: both are
/// errors.
pub fn local_to_utc(local: NaiveDateTime, zone: Tz) -> Result<Micros, TimeError> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc).timestamp_micros()),
        LocalResult::Ambiguous(a, b) => err(format!(
            "local time {local} in {zone} is ambiguous: it occurs twice ({} and {}) as clocks go back",
            a.with_timezone(&Utc).format("%H:%M UTC"),
            b.with_timezone(&Utc).format("%H:%M UTC")
        )),
        LocalResult::None => err(format!(
            "local time {local} does not exist in {zone}: clocks jump forward over it"
        )),
    }
}

/// Seconds, milliseconds or microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
}

/// Converts an epoch value, rejecting instants outside years 1..=9999.
pub fn from_epoch(value: i64, unit: EpochUnit) -> Result<Micros, TimeError> {
    let micros = match unit {
        EpochUnit::Seconds => value.checked_mul(1_000_000),
        EpochUnit::Millis => value.checked_mul(1_000),
        EpochUnit::Micros => Some(value),
    };
    match micros.and_then(DateTime::<Utc>::from_timestamp_micros) {
        Some(t) if (1..=9999).contains(&chrono::Datelike::year(&t)) => Ok(t.timestamp_micros()),
        _ => err(format!("epoch value {value} ({unit:?}) is out of range")),
    }
}

/// The first instant of a local calendar day. If midnight itself falls in a
/// gap (zones that change clocks at 00:00), the day starts when the clocks
/// resume; if it occurs twice, at the first occurrence.
pub fn start_of_local_day(date: NaiveDate, zone: Tz) -> Result<DateTime<Utc>, TimeError> {
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| TimeError(format!("invalid date {date}")))?;
    for minutes in 0..=(4 * 60) {
        let candidate = midnight + Duration::minutes(minutes);
        if let Some(t) = zone.from_local_datetime(&candidate).earliest() {
            return Ok(t.with_timezone(&Utc));
        }
    }
    err(format!("could not find the start of {date} in {zone}"))
}

/// Date + period-of-day clocks, such as settlement periods (30 minutes,
/// numbered from 1 at local midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodClock {
    /// The zone whose calendar days the periods divide.
    pub zone: Tz,
    /// Period length in minutes (divides a day).
    pub minutes: u32,
}

impl PeriodClock {
    /// How many periods the local day has: 48 half-hours on most days in
    /// Europe/London, 46 when clocks go forward, 50 when they go back.
    pub fn periods_in_day(&self, date: NaiveDate) -> Result<i64, TimeError> {
        let start = start_of_local_day(date, self.zone)?;
        let next = date
            .succ_opt()
            .ok_or_else(|| TimeError(format!("no day after {date}")))?;
        let end = start_of_local_day(next, self.zone)?;
        Ok((end - start).num_minutes() / i64::from(self.minutes))
    }

    /// The UTC start of `period` (1-based) on the local `date`. Periods count
    /// elapsed time from the start of the local day, so across a clock change
    /// they stay contiguous and distinct.
    pub fn to_utc(&self, date: NaiveDate, period: i64) -> Result<Micros, TimeError> {
        let count = self.periods_in_day(date)?;
        if !(1..=count).contains(&period) {
            return err(format!(
                "period {period} does not exist on {date} in {}: that day has periods 1..={count}",
                self.zone
            ));
        }
        let start = start_of_local_day(date, self.zone)?;
        Ok((start + Duration::minutes((period - 1) * i64::from(self.minutes))).timestamp_micros())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn trim_is_str_s() {
        let mut texts: Vec<String> = (0u32..0x250)
            .filter_map(char::from_u32)
            .flat_map(|c| {
                [
                    format!("{c}"),
                    format!("{c}a{c}"),
                    format!("a{c}"),
                    format!("{c}a"),
                ]
            })
            .collect();
        texts.extend(["", " ", "\u{3000}x\u{2028}", "x\u{85}"].map(String::from));
        for t in &texts {
            assert_eq!(trim(t), t.trim(), "{t:?}");
        }
    }

    /// The quick reading of the usual shape gives chrono's instant, and
    /// leaves every other shape (and every error) to chrono.
    #[test]
    fn plain_rfc3339_is_chrono_s_reading() {
        use rand::{Rng, SeedableRng};
        let chrono = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.with_timezone(&Utc).timestamp_micros())
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut read = 0;
        for n in 0..100_000 {
            let pick = |rng: &mut rand::rngs::StdRng, max: u32| rng.random_range(0..=max);
            let fraction = match n % 4 {
                0 => String::new(),
                1 => format!(".{:03}", pick(&mut rng, 999)),
                2 => format!(".{}", pick(&mut rng, 999_999_999)),
                _ => ".1234567891".into(),
            };
            let offset = match n % 5 {
                0 => "Z".to_string(),
                1 => "z".to_string(),
                _ => format!(
                    "{}{:02}:{:02}",
                    if n % 2 == 0 { '+' } else { '-' },
                    pick(&mut rng, 25),
                    pick(&mut rng, 61)
                ),
            };
            let text = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{fraction}{offset}",
                pick(&mut rng, 9999),
                pick(&mut rng, 13),
                pick(&mut rng, 32),
                if n % 7 == 0 { ' ' } else { 'T' },
                pick(&mut rng, 24),
                pick(&mut rng, 60),
                pick(&mut rng, 60),
            );
            let quick = plain_rfc3339(text.as_bytes());
            if quick.is_some() {
                read += 1;
                assert_eq!(quick, chrono(&text), "{text}");
            }
        }
        assert!(read > 10_000, "the quick path read {read}");
        for text in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "0000-03-01T00:00:00+00:00",
            "2024-02-29T12:00:00-05:30",
            "9999-12-31T23:59:59.5+23:59",
        ] {
            assert_eq!(plain_rfc3339(text.as_bytes()), chrono(text), "{text}");
        }
        assert_eq!(plain_rfc3339(b"2023-02-29T00:00:00Z"), None);
    }

    const LONDON: Tz = chrono_tz::Europe::London;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn utc(s: &str) -> Micros {
        parse_with_offset(s).expect("utc literal")
    }

    #[test]
    fn settlement_periods_follow_the_clock_changes() -> Result<(), TimeError> {
        let clock = PeriodClock {
            zone: LONDON,
            minutes: 30,
        };
        for (day, expected) in [("2024-03-31", 46), ("2024-10-27", 50), ("2024-06-01", 48)] {
            let d = date(day);
            assert_eq!(clock.periods_in_day(d)?, expected, "{day}");
            let instants: BTreeSet<Micros> = (1..=expected)
                .map(|p| clock.to_utc(d, p))
                .collect::<Result<_, _>>()?;
            assert_eq!(instants.len() as i64, expected, "{day}: duplicates");
            let first = *instants.first().expect("non-empty");
            let last = *instants.last().expect("non-empty");
            assert_eq!(
                last - first,
                (expected - 1) * 30 * 60 * 1_000_000,
                "{day}: gaps"
            );
            assert!(clock.to_utc(d, expected + 1).is_err());
            assert!(clock.to_utc(d, 0).is_err());
        }
        // Autumn: periods 3-4 are BST 01:00-01:30, periods 5-6 GMT 01:00-01:30.
        let d = date("2024-10-27");
        assert_eq!(clock.to_utc(d, 1)?, utc("2024-10-26T23:00:00Z"));
        assert_eq!(clock.to_utc(d, 3)?, utc("2024-10-27T00:00:00Z"));
        assert_eq!(clock.to_utc(d, 5)?, utc("2024-10-27T01:00:00Z"));
        // Spring: period 3 is already 02:00 BST = 01:00 UTC.
        assert_eq!(
            clock.to_utc(date("2024-03-31"), 3)?,
            utc("2024-03-31T01:00:00Z")
        );
        Ok(())
    }

    #[test]
    fn local_times_in_gaps_and_overlaps_are_rejected() {
        let gap = parse_naive("2024-03-31 01:30:00", None).expect("parses");
        let overlap = parse_naive("2024-10-27T01:30", None).expect("parses");
        let e = local_to_utc(gap, LONDON).expect_err("gap");
        assert!(e.0.contains("does not exist"), "{e}");
        let e = local_to_utc(overlap, LONDON).expect_err("overlap");
        assert!(e.0.contains("ambiguous"), "{e}");
        let winter = parse_naive("2024-01-15 12:00:00", None).expect("parses");
        assert_eq!(
            local_to_utc(winter, LONDON),
            Ok(utc("2024-01-15T12:00:00Z"))
        );
        let summer = parse_naive("15/07/2024 12:00", Some("%d/%m/%Y %H:%M")).expect("parses");
        assert_eq!(
            local_to_utc(summer, LONDON),
            Ok(utc("2024-07-15T11:00:00Z"))
        );
    }

    #[test]
    fn offsets_and_epochs() {
        assert_eq!(
            utc("2024-03-31T02:30:00+01:00"),
            utc("2024-03-31T01:30:00Z")
        );
        assert_eq!(
            parse_with_offset("2024-03-31 01:30:00.5+00:00"),
            Ok(utc("2024-03-31T01:30:00.5Z"))
        );
        assert!(
            parse_with_offset("2024-03-31T01:30:00").is_err(),
            "no offset"
        );
        assert!(parse_with_offset("yesterday").is_err());
        assert_eq!(
            from_epoch(1_711_848_600, EpochUnit::Seconds),
            Ok(utc("2024-03-31T01:30:00Z"))
        );
        assert_eq!(
            from_epoch(1_711_848_600_250, EpochUnit::Millis),
            Ok(utc("2024-03-31T01:30:00.25Z"))
        );
        assert!(from_epoch(i64::MAX, EpochUnit::Seconds).is_err());
    }

    #[test]
    fn midnight_gaps_start_the_day_when_clocks_resume() -> Result<(), TimeError> {
        // Cuba moved clocks forward at 00:00 on 2024-03-10: the day starts at 01:00 local.
        let start = start_of_local_day(date("2024-03-10"), chrono_tz::America::Havana)?;
        assert_eq!(start.timestamp_micros(), utc("2024-03-10T05:00:00Z"));
        Ok(())
    }
}
