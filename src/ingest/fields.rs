//! What conversion reads of a record, whatever decoded it: a field's value
//! as a borrowed [`Scalar`], the record's text and line. Two decoders give
//! records: JSON values ([`Record`], API pages and Kafka's Avro among
//! them) and rows decoded straight from the text into slots
//! ([`super::flat::FlatRow`], NDJSON and CSV files). Both go through the
//! same conversion, so a value converts the same way whichever path read it.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Number, Value};

use super::convert::{Record, lookup};
use crate::pipeline::ColumnType;

/// One field's value, borrowed from the record that holds it. Numbers keep
/// the kind JSON parsing gave them (an integer, or a float).
#[derive(Debug, Clone, Copy)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// A negative integer (or one read from a non-JSON source).
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    Float(f64),
    Str(&'a str),
    /// An object or an array.
    Nested(&'a Value),
}

impl<'a> Scalar<'a> {
    /// The scalar view of a JSON value.
    pub fn of(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => number(n),
            Value::String(s) => Self::Str(s),
            Value::Array(_) | Value::Object(_) => Self::Nested(value),
        }
    }

    /// The value's text: a string as it is, anything else as JSON writes
    /// it (`12`, `1.5`, `true`, `{"a":1}`).
    pub fn text(&self) -> Cow<'a, str> {
        match *self {
            Self::Str(s) => Cow::Borrowed(s),
            Self::Null => Cow::Borrowed("null"),
            Self::Bool(true) => Cow::Borrowed("true"),
            Self::Bool(false) => Cow::Borrowed("false"),
            Self::Int(i) => Cow::Owned(i.to_string()),
            Self::UInt(u) => Cow::Owned(u.to_string()),
            // Written as serde_json writes a number (shortest round trip).
            Self::Float(f) => Cow::Owned(
                Number::from_f64(f).map_or_else(|| "null".to_string(), |n| n.to_string()),
            ),
            Self::Nested(v) => Cow::Owned(v.to_string()),
        }
    }

    /// The value as JSON (nested columns and type guesses read values).
    pub fn to_value(self) -> Cow<'a, Value> {
        match self {
            Self::Nested(v) => Cow::Borrowed(v),
            Self::Null => Cow::Owned(Value::Null),
            Self::Bool(b) => Cow::Owned(Value::Bool(b)),
            Self::Int(i) => Cow::Owned(Value::from(i)),
            Self::UInt(u) => Cow::Owned(Value::from(u)),
            Self::Float(f) => Cow::Owned(Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Self::Str(s) => Cow::Owned(Value::String(s.to_string())),
        }
    }
}

/// A JSON number as serde_json holds it: a non-negative integer, a
/// negative one, or a float.
fn number(n: &Number) -> Scalar<'_> {
    if let Some(u) = n.as_u64() {
        Scalar::UInt(u)
    } else if let Some(i) = n.as_i64() {
        Scalar::Int(i)
    } else {
        Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// A record as conversion sees it.
pub trait RecordView {
    /// Field `name`: the key itself, else a path into nested values
    /// (`location.lat`, `units[0].capacity`); None when absent. `slot` is
    /// its slot when rows are decoded for the job's fields
    /// ([`super::flat::RowShape`]), a shortcut other records ignore.
    fn field(&self, name: &str, slot: Option<usize>) -> Option<Scalar<'_>>;
    /// The record as read (the NDJSON line, the CSV row's cells joined by
    /// the delimiter, a JSON record's text), for rejects and `_hash`.
    fn raw(&self) -> &str;
    /// 1-based line (NDJSON, CSV) or record number.
    fn line(&self) -> u64;
    /// The first field (in name order) not in `known`, with the column
    /// type its value suggests (`guess`), or string.
    fn unknown_field(
        &self,
        known: &HashSet<String>,
        guess: bool,
    ) -> Option<(String, Option<ColumnType>)>;
}

/// The column type an unknown field's value suggests.
pub(super) fn suggest(value: Scalar<'_>, guess: bool) -> Option<ColumnType> {
    if guess {
        super::nested::suggest(&value.to_value())
    } else {
        Some(ColumnType::String)
    }
}

impl RecordView for Record {
    fn field(&self, name: &str, _slot: Option<usize>) -> Option<Scalar<'_>> {
        lookup(&self.fields, name).map(Scalar::of)
    }

    fn raw(&self) -> &str {
        &self.raw
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn unknown_field(
        &self,
        known: &HashSet<String>,
        guess: bool,
    ) -> Option<(String, Option<ColumnType>)> {
        self.fields
            .iter()
            .find(|(k, _)| !known.contains(*k))
            .map(|(k, v)| (k.clone(), suggest(Scalar::of(v), guess)))
    }
}
