//! A quick reader of the usual NDJSON line: one JSON object whose keys and
//! strings have no escapes. It hands each member to the caller as it reads
//! it (a string as its byte range of the line, a number already parsed),
//! with no visitor in between.
//!
//! It reads only what it is sure of. Anything else (an escape, a control
//! character in a string, a number past 18 digits or out of a double's
//! range, a value that is not an object, malformed text) makes it give up
//! on the line, and the full parser ([`super::flat`] through serde_json)
//! reads it, so errors and their messages stay that parser's. Where it
//! does read a line, it gives what serde_json gives: the same numbers
//! (integers as unsigned when not negative, `-0` as a float, floats
//! correctly rounded) and the same nested values.

use serde_json::Value;

use super::json::Strict;

/// A member's value.
#[derive(Debug, PartialEq)]
pub(super) enum Quick {
    Null,
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    Float(f64),
    /// A string without escapes: this byte range of the line.
    Str(usize, usize),
    /// An object or an array (read by the full parser).
    Nested(Value),
}

/// Integers of up to this many digits fit an `i64` whatever their digits.
const MAX_INT_DIGITS: usize = 18;

/// Reads `line` as one JSON object, calling `member(position, key, value)`
/// for each member in order. None when the line is not of the kind read
/// here (or `member` returns false): nothing about the line is known then.
pub(super) fn object(line: &str, mut member: impl FnMut(usize, &str, Quick) -> bool) -> Option<()> {
    let b = line.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        let mut position = 0;
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(b, i + 1)?;
            let key = &line[i + 1..key_end];
            i = skip_ws(b, key_end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let (value, next) = value(line, i)?;
            if !member(position, key, value) {
                return None;
            }
            position += 1;
            i = skip_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(())
}

/// JSON's whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the string starting at `start` (after its quote) ends: the index
/// of its closing quote. None on an escape or a control character.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    // Eight bytes at a time: the first quote, backslash or control byte.
    let mut i = start;
    while let Some(word) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(word.try_into().ok()?);
        let found = stops(word);
        if found != 0 {
            let at = i + (found.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 8;
    }
    let rest = b.get(i..)?;
    let at = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (rest[at] == b'"').then_some(i + at)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` below `n` (n <= 128). Bits above
/// the lowest may be false; the lowest is exact.
fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// The bytes of `word` that end a plain string (a quote, a backslash, a
/// control byte), as [`below`] marks them: the lowest mark is exact.
fn stops(word: u64) -> u64 {
    below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
        | below(word, 0x20)
}

/// The value starting at `i`, and where it ends.
fn value(line: &str, i: usize) -> Option<(Quick, usize)> {
    let b = line.as_bytes();
    let word = |w: &[u8], v: Quick| b[i..].starts_with(w).then_some((v, i + w.len()));
    match *b.get(i)? {
        b'"' => {
            let end = string_end(b, i + 1)?;
            Some((Quick::Str(i + 1, end), end + 1))
        }
        b't' => word(b"true", Quick::Bool(true)),
        b'f' => word(b"false", Quick::Bool(false)),
        b'n' => word(b"null", Quick::Null),
        b'-' | b'0'..=b'9' => number(line, i),
        b'{' | b'[' => nested(line, i),
        _ => None,
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The digits of a number read so far: their value while it is exact,
/// and how many there were.
#[derive(Default)]
struct Mantissa {
    value: u64,
    count: usize,
}

/// Digits a `u64` always holds.
const EXACT_DIGITS: usize = 19;

impl Mantissa {
    /// Reads the digits from `i`, returning where they end.
    fn read(&mut self, b: &[u8], mut i: usize) -> usize {
        // Eight digits at a time while they stay within the exact digits
        // (then the value stays below 10^19, within a `u64`).
        while self.count + 8 <= EXACT_DIGITS
            && let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok())
            && let Some(eight) = eight_digits(u64::from_le_bytes(word))
        {
            self.value = self.value * 100_000_000 + eight;
            self.count += 8;
            i += 8;
        }
        while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if self.count < EXACT_DIGITS {
                self.value = self.value * 10 + u64::from(d - b'0');
            }
            self.count += 1;
            i += 1;
        }
        i
    }
}

/// The value of eight ASCII digits read as a little-endian word (the
/// first digit in the lowest byte), or None when a byte is not a digit.
fn eight_digits(word: u64) -> Option<u64> {
    // A byte is a digit when subtracting '0' does not borrow and adding
    // 0x46 (to reach 0x80 from '9' + 1) does not set its high bit.
    let less = word.wrapping_sub(ONES * u64::from(b'0'));
    let more = word.wrapping_add(ONES * 0x46);
    if (less | more) & HIGHS != 0 {
        return None;
    }
    // Pairs, then fours, then all eight: each step joins neighbours as
    // high * 10^k + low, the lower-addressed (earlier) digit the high one.
    let pairs = (less * 10 + (less >> 8)) & 0x00FF_00FF_00FF_00FF;
    let fours = (pairs * 100 + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((fours * 10_000 + (fours >> 32)) & 0xFFFF_FFFF)
}

/// A number as serde_json reads it (the text after it is the caller's to
/// check: `01` or `1x` are not numbers there).
fn number(line: &str, start: usize) -> Option<(Quick, usize)> {
    let b = line.as_bytes();
    let negative = b[start] == b'-';
    let first = start + usize::from(negative);
    let mut mantissa = Mantissa::default();
    let mut i = match b.get(first)? {
        // A leading zero is the whole part by itself.
        b'0' => {
            mantissa.count = 1;
            first + 1
        }
        b'1'..=b'9' => mantissa.read(b, first),
        _ => return None,
    };
    let whole_digits = mantissa.count;
    let mut fraction_digits = 0;
    let mut exponent: Option<i32> = None;
    if b.get(i) == Some(&b'.') {
        let after = mantissa.read(b, i + 1);
        if after == i + 1 {
            return None;
        }
        fraction_digits = mantissa.count - whole_digits;
        i = after;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        let sign = i + 1;
        i = sign + usize::from(matches!(b.get(sign), Some(b'+' | b'-')));
        let after = digits(b, i);
        if after == i {
            return None;
        }
        // Past four digits it is std's to read.
        exponent = Some(match line[i..after].parse::<i32>() {
            Ok(e) if after - i <= 4 && b[sign] == b'-' => -e,
            Ok(e) if after - i <= 4 => e,
            _ => i32::MAX,
        });
        i = after;
    }
    if fraction_digits > 0 || exponent.is_some() {
        let f = exact_float(&mantissa, fraction_digits, exponent.unwrap_or(0))
            .map(|f| if negative { -f } else { f })
            // std's parse is correctly rounded, as serde_json's
            // `float_roundtrip` is; out of range is serde_json's error.
            .or_else(|| line[start..i].parse().ok())?;
        return f.is_finite().then_some((Quick::Float(f), i));
    }
    if whole_digits > MAX_INT_DIGITS {
        return None;
    }
    let value = match (negative, mantissa.value) {
        (false, m) => Quick::UInt(m),
        // serde_json reads `-0` as a float.
        (true, 0) => Quick::Float(-0.0),
        (true, m) => Quick::Int(-i64::try_from(m).ok()?),
    };
    Some((value, i))
}

/// Powers of ten a double holds exactly.
const EXACT_POWERS: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The magnitude of `mantissa × 10^(exponent - fraction_digits)` when one
/// exact operation gives it correctly rounded (Clinger's fast path: an
/// integer below 2^53, a power of ten a double holds); None otherwise.
fn exact_float(mantissa: &Mantissa, fraction_digits: usize, exponent: i32) -> Option<f64> {
    if mantissa.count > EXACT_DIGITS || mantissa.value >= 1 << 53 {
        return None;
    }
    let scale = i64::from(exponent) - i64::try_from(fraction_digits).ok()?;
    let power = *EXACT_POWERS.get(usize::try_from(scale.unsigned_abs()).ok()?)?;
    // Both operands are exact, so the one rounding is the right one.
    let value = mantissa.value as f64;
    Some(if scale < 0 {
        value / power
    } else {
        value * power
    })
}

/// Levels a member's value may nest: serde_json's 128 less the one the
/// line's object takes, as reading the whole line counts them.
const NESTED_LEVELS: usize = 127;

/// An object or array value, read by the full parser (with its duplicate
/// key check); None when it does not read, or nests deeper than reading
/// the whole line allows (a parser of its own would allow it one level
/// more: the full parser then rejects the line).
fn nested(line: &str, start: usize) -> Option<(Quick, usize)> {
    let mut values = serde_json::Deserializer::from_str(&line[start..]).into_iter::<Strict>();
    let Strict(value) = values.next()?.ok()?;
    if nests(&value, NESTED_LEVELS) {
        return None;
    }
    Some((Quick::Nested(value), start + values.byte_offset()))
}

/// Whether `value` nests arrays and objects `levels` deep or more.
fn nests(value: &serde_json::Value, levels: usize) -> bool {
    match value {
        serde_json::Value::Array(items) => {
            levels <= 1 || items.iter().any(|v| nests(v, levels - 1))
        }
        serde_json::Value::Object(members) => {
            levels <= 1 || members.values().any(|v| nests(v, levels - 1))
        }
        _ => levels == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> Option<Vec<(String, Quick)>> {
        let mut out = Vec::new();
        object(line, |position, key, value| {
            assert_eq!(position, out.len());
            out.push((key.to_string(), value));
            true
        })?;
        Some(out)
    }

    #[test]
    fn reads_flat_objects_as_serde_json_does() {
        let line = r#" {"a": "xy", "b":-12, "c" : 0, "d": 1.5e3, "e": true, "f": null, "g": -0, "h": {"k": [1, "2"]}, "i": []} "#;
        let members = read(line).expect("read");
        let (a0, a1) = match members[0].1 {
            Quick::Str(a0, a1) => (a0, a1),
            _ => panic!("a string"),
        };
        assert_eq!(&line[a0..a1], "xy");
        assert_eq!(members[1].1, Quick::Int(-12));
        assert_eq!(members[2].1, Quick::UInt(0));
        assert_eq!(members[3].1, Quick::Float(1500.0));
        assert_eq!(members[4].1, Quick::Bool(true));
        assert_eq!(members[5].1, Quick::Null);
        assert!(matches!(members[6].1, Quick::Float(f) if f == 0.0 && f.is_sign_negative()));
        assert_eq!(
            members[7].1,
            Quick::Nested(serde_json::json!({"k": [1, "2"]}))
        );
        assert_eq!(members[8].1, Quick::Nested(serde_json::json!([])));
        assert_eq!(read("{}").expect("empty"), Vec::new());
    }

    #[test]
    fn gives_up_on_what_the_full_parser_must_read() {
        for line in [
            r#"{"a": "x\"y"}"#,
            r#"{"a\n": 1}"#,
            "{\"a\": \"tab\there\"}",
            r#"{"a": 01}"#,
            r#"{"a": 1x}"#,
            r#"{"a": 1.}"#,
            r#"{"a": .5}"#,
            r#"{"a": 1e}"#,
            r#"{"a": +1}"#,
            r#"{"a": 1e400}"#,
            r#"{"a": 1234567890123456789}"#,
            r#"{"a": 1,}"#,
            r#"{"a": 1} x"#,
            r#"{"a" 1}"#,
            r#"{"a": tru}"#,
            r#"{"a": {"b": 1, "b": 2}}"#,
            r#"{"a": [1, }"#,
            r#"[1]"#,
            r#""x""#,
            "",
            "{",
        ] {
            assert!(read(line).is_none(), "{line}");
        }
    }

    #[test]
    fn numbers_equal_serde_json_s() {
        for text in [
            "0",
            "-1",
            "123456789012345678",
            "-123456789012345678",
            "39.430133835633676",
            "1e-400",
            "-2.5E+3",
            "0.1",
            "5e-324",
            "53.04717079754431",
            "9.702489452679716",
            "-0.0",
            "0.000001",
            "123456789.123456",
            "9007199254740993e0",
            "1e22",
            "1e23",
            "4.35e-22",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "1e00001",
            "1e-00001",
        ] {
            let (quick, _) = number(text, 0).expect(text);
            let serde: Value = serde_json::from_str(text).expect(text);
            let expected = match serde {
                Value::Number(n) if n.is_u64() => Quick::UInt(n.as_u64().unwrap_or_default()),
                Value::Number(n) if n.is_i64() => Quick::Int(n.as_i64().unwrap_or_default()),
                Value::Number(n) => Quick::Float(n.as_f64().unwrap_or_default()),
                other => panic!("{other}"),
            };
            assert_eq!(quick, expected, "{text}");
        }
    }

    #[test]
    fn eight_digits_at_once_are_the_digits_one_by_one() {
        let by_one = |text: &[u8]| {
            text.iter().try_fold(0u64, |v, d| {
                d.is_ascii_digit().then(|| v * 10 + u64::from(d - b'0'))
            })
        };
        let mut texts: Vec<[u8; 8]> = vec![*b"00000000", *b"99999999", *b"12345678", *b"10000001"];
        // Every byte in every place, among digits.
        for place in 0..8 {
            for byte in 0..=255u8 {
                let mut t = *b"31415926";
                t[place] = byte;
                texts.push(t);
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut t = [0u8; 8];
            for (i, b) in t.iter_mut().enumerate() {
                *b = b'0' + ((x >> (i * 5)) % 10) as u8;
            }
            texts.push(t);
        }
        for t in texts {
            assert_eq!(eight_digits(u64::from_le_bytes(t)), by_one(&t), "{t:?}");
        }
    }

    /// Every double written in full, or cut to fewer digits, reads back
    /// with the bits std's correctly rounded parse gives (the fast path
    /// and the fallback alike).
    #[test]
    fn floats_are_correctly_rounded() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 0..200_000 {
            let f: f64 = match n % 3 {
                0 => rng.random::<f64>() * 100.0,
                1 => f64::from_bits(rng.random::<u64>() >> 2),
                _ => f64::from(rng.random_range(-100_000i32..100_000)) / 1000.0,
            };
            if !f.is_finite() {
                continue;
            }
            let full = format!("{f:?}");
            let short = format!("{f:.6}");
            let exp = format!("{f:e}");
            for text in [full, short, exp] {
                let (quick, _) = number(&text, 0).expect(&text);
                let std: f64 = text.parse().expect(&text);
                let Quick::Float(got) = quick else {
                    continue;
                };
                assert_eq!(got.to_bits(), std.to_bits(), "{text}");
            }
        }
    }
}
