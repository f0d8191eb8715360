//! Durations as users write them in pipeline files and flags: `3d`,
//! `12h`, `30m`, `90s`, `500ms`, `2w`, or sums such as `1d12h`.

use std::time::Duration;

/// Parses a duration such as `3d`, `12h`, `30m`, `90s`, `500ms`, `2w` (or
/// a sum, `1d12h`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration; write e.g. 3d, 12h, 30m, 90s, 500ms or 1d12h");
    let mut total_ms: u64 = 0;
    let mut digits = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit_ms = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 604_800_000,
            _ => return Err(bad()),
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "3", "d", "3x", "-1d", "3 d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
