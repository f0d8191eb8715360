//! File selection for `compact --where` and `--from/--to`: a conjunction of
//! `column OP literal` comparisons, evaluated against each data file's
//! column bounds. A file is selected when its bounds say it MAY hold a
//! matching row (as engines prune), so a partial match rewrites the file.

use chrono::NaiveDate;
use iceberg::spec::{DataFile, Datum, PrimitiveType, Schema, Type};

use crate::error::{Error, Result};
use crate::pipeline::EVENT_TIME_COLUMN;

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One `column OP literal` comparison, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Column name.
    pub column: String,
    /// Operator.
    pub op: Op,
    /// The literal, unquoted.
    pub value: String,
}

/// A conjunction of comparisons; empty selects every file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// All must hold.
    pub all: Vec<Comparison>,
}

impl Filter {
    /// Parses `col >= '2024-01-01' AND site = 'A'` (case-insensitive AND;
    /// literals quoted with single quotes or bare).
    pub fn parse(text: &str) -> Result<Self> {
        let mut all = Vec::new();
        let words: Vec<String> = text
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        if words.first().is_some_and(|w| w == "and") || words.last().is_some_and(|w| w == "and") {
            return Err(Error::Config(format!(
                "--where {text:?}: AND needs a comparison on both sides"
            )));
        }
        for part in split_and(text) {
            all.push(parse_comparison(part.trim()).ok_or_else(|| {
                Error::Config(format!(
                    "--where: cannot read {:?}; write comparisons like ts_utc >= '2024-03-01' joined by AND",
                    part.trim()
                ))
            })?);
        }
        if all.is_empty() {
            return Err(Error::Config("--where is empty".into()));
        }
        Ok(Self { all })
    }

    /// The days `from..=to` (UTC) of the event-time column.
    pub fn days(from: NaiveDate, to: NaiveDate) -> Self {
        let next = to.succ_opt().unwrap_or(to);
        Self {
            all: vec![
                Comparison {
                    column: EVENT_TIME_COLUMN.into(),
                    op: Op::Ge,
                    value: format!("{from}T00:00:00+00:00"),
                },
                Comparison {
                    column: EVENT_TIME_COLUMN.into(),
                    op: Op::Lt,
                    value: format!("{next}T00:00:00+00:00"),
                },
            ],
        }
    }

    /// Both filters at once.
    pub fn and(mut self, other: Filter) -> Self {
        self.all.extend(other.all);
        self
    }

    /// Binds the filter to a schema: every column must exist and be a
    /// primitive, every literal must parse as that column's type.
    pub fn bind(&self, schema: &Schema) -> Result<BoundFilter> {
        let mut all = Vec::new();
        for c in &self.all {
            let field = schema.field_by_name(&c.column).ok_or_else(|| {
                Error::Config(format!(
                    "the table has no column {:?} to select files by (--where, or ts_utc for --from/--to)",
                    c.column
                ))
            })?;
            let Type::Primitive(ty) = field.field_type.as_ref() else {
                return Err(Error::Config(format!(
                    "--where: column {} is not a primitive column",
                    c.column
                )));
            };
            let datum = literal(ty, &c.value).ok_or_else(|| {
                Error::Config(format!(
                    "--where: {:?} is not a valid {ty} value for column {}",
                    c.value, c.column
                ))
            })?;
            all.push((field.id, c.op, datum));
        }
        Ok(BoundFilter { all })
    }
}

/// A [`Filter`] resolved to field ids and typed literals.
#[derive(Debug, Clone, Default)]
pub struct BoundFilter {
    all: Vec<(i32, Op, Datum)>,
}

impl BoundFilter {
    /// Whether `file` may hold a row matching every comparison.
    pub fn may_match(&self, file: &DataFile) -> bool {
        self.all.iter().all(|(id, op, v)| {
            let lo = file.lower_bounds().get(id);
            let hi = file.upper_bounds().get(id);
            match op {
                Op::Eq => lo.is_none_or(|l| l <= v) && hi.is_none_or(|h| h >= v),
                Op::Ne => !(lo == Some(v) && hi == Some(v)),
                Op::Lt => lo.is_none_or(|l| l < v),
                Op::Le => lo.is_none_or(|l| l <= v),
                Op::Gt => hi.is_none_or(|h| h > v),
                Op::Ge => hi.is_none_or(|h| h >= v),
            }
        })
    }
}

fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let (mut start, mut i, mut quoted) = (0usize, 0usize, false);
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && lower[i..].starts_with(" and ") {
            parts.push(&text[start..i]);
            i += 5;
            start = i;
            continue;
        }
        i += 1;
    }
    if !text[start..].trim().is_empty() {
        parts.push(&text[start..]);
    }
    parts
}

fn parse_comparison(text: &str) -> Option<Comparison> {
    const OPS: [(&str, Op); 7] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("!=", Op::Ne),
        ("<>", Op::Ne),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (pos, len, op) = OPS
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|p| (p, s.len(), *op)))
        .min_by_key(|(p, len, _)| (*p, std::cmp::Reverse(*len)))?;
    let column = text[..pos].trim();
    let raw = text[pos + len..].trim();
    let quoted = raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'');
    let value = if quoted { &raw[1..raw.len() - 1] } else { raw };
    let valid_name = !column.is_empty()
        && column
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    (valid_name && (quoted || !value.is_empty())).then(|| Comparison {
        column: column.to_string(),
        op,
        value: value.to_string(),
    })
}

/// A literal of type `ty`; timestamps accept a bare date (midnight UTC).
fn literal(ty: &PrimitiveType, v: &str) -> Option<Datum> {
    let ts = |v: &str| -> String {
        if v.len() == 10 {
            format!("{v}T00:00:00")
        } else {
            v.replace(' ', "T")
        }
    };
    match ty {
        PrimitiveType::Boolean => v.parse::<bool>().ok().map(Datum::bool),
        PrimitiveType::Int => v.parse::<i32>().ok().map(Datum::int),
        PrimitiveType::Long => v.parse::<i64>().ok().map(Datum::long),
        PrimitiveType::Float => v.parse::<f32>().ok().map(Datum::float),
        PrimitiveType::Double => v.parse::<f64>().ok().map(Datum::double),
        PrimitiveType::String => Some(Datum::string(v)),
        PrimitiveType::Date => Datum::date_from_str(v).ok(),
        PrimitiveType::Timestamp => Datum::timestamp_from_str(ts(v)).ok(),
        PrimitiveType::Timestamptz => {
            let t = ts(v);
            let has_zone = t.ends_with('Z') || t.get(19..).is_some_and(|z| z.contains(['+', '-']));
            Datum::timestamptz_from_str(if has_zone { t } else { format!("{t}+00:00") }).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions() {
        let f = Filter::parse("ts_utc >= '2024-03-01' AND site_id = 'a and b' and x<>3")
            .unwrap_or_default();
        assert_eq!(f.all.len(), 3);
        assert_eq!(f.all[0].op, Op::Ge);
        assert_eq!(f.all[1].value, "a and b");
        assert_eq!(f.all[2].op, Op::Ne);
        assert_eq!(
            Filter::parse("site = ''")
                .map(|f| f.all[0].value.clone())
                .ok(),
            Some(String::new())
        );
        for bad in [
            "",
            "ts_utc",
            "= 3",
            "a b = 1",
            "x >=",
            "x = 1 AND",
            "AND x = 1",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literals_follow_the_column_type() {
        let day = literal(&PrimitiveType::Timestamptz, "2024-03-01");
        let exact = literal(&PrimitiveType::Timestamptz, "2024-03-01T00:00:00Z");
        assert!(day.is_some());
        assert_eq!(day, exact);
        assert!(literal(&PrimitiveType::Int, "x").is_none());
        assert!(literal(&PrimitiveType::Date, "2024-02-30").is_none());
    }
}
