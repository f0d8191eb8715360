//! Days and windows: the UTC day of an instant, day numbers (days since
//! 1970-01-01) and their names, runs of consecutive days. Every verb counts
//! days with these, so a day means the same thing everywhere.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use chrono::NaiveDate;

/// Microseconds in a UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The day (since 1970-01-01) of a UTC instant in microseconds.
pub fn day_of(micros: i64) -> i32 {
    i32::try_from(micros.div_euclid(MICROS_PER_DAY)).unwrap_or(if micros < 0 {
        i32::MIN
    } else {
        i32::MAX
    })
}

/// The instant (microseconds) at which UTC day `date` starts.
pub fn day_start(date: NaiveDate) -> i64 {
    i64::from(day_number(date)) * MICROS_PER_DAY
}

/// The day number of a calendar date.
pub fn day_number(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from(date.signed_duration_since(epoch).num_days()).unwrap_or(i32::MAX)
}

/// The day numbers of `from..=to`.
pub fn window(from: NaiveDate, to: NaiveDate) -> RangeInclusive<i32> {
    day_number(from)..=day_number(to)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i32) -> String {
    (chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(i64::from(day)))
        .date_naive()
        .to_string()
}

/// Days as inclusive ranges of consecutive days, in order.
pub fn day_ranges(days: &BTreeSet<i32>) -> Vec<(i32, i32)> {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &d in days {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == d => *hi = d,
            _ => ranges.push((d, d)),
        }
    }
    ranges
}

/// Days as text: `2024-03-01..2024-03-31, 2024-04-03` (consecutive days as
/// one range).
pub fn describe_days(days: &BTreeSet<i32>) -> String {
    day_ranges(days)
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                day_name(*lo)
            } else {
                format!("{}..{}", day_name(*lo), day_name(*hi))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `days` and the `by` days before and after each.
pub fn widen(days: &BTreeSet<i32>, by: i32) -> BTreeSet<i32> {
    days.iter().flat_map(|d| d - by..=d + by).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_describe() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 31).expect("date");
        assert_eq!(day_name(day_number(d)), "2024-03-31");
        assert_eq!(day_of(day_start(d)), day_number(d));
        assert_eq!(day_of(day_start(d) - 1), day_number(d) - 1);
        assert_eq!(day_of(-1), -1);
        let days: BTreeSet<i32> = [0, 1, 2, 5].into_iter().collect();
        assert_eq!(describe_days(&days), "1970-01-01..1970-01-03, 1970-01-06");
        assert_eq!(widen(&[5].into_iter().collect(), 1).len(), 3);
        assert_eq!(window(d, d), day_number(d)..=day_number(d));
    }
}
