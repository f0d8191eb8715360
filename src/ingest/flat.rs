//! Rows decoded straight from their text into one slot per field the job
//! reads: no JSON value tree, no map of every key. A string without
//! escapes is a span of the row's text; numbers and booleans are kept as
//! parsed; only nested values (objects, arrays) become JSON values.
//!
//! The JSON is parsed by the same parser as the value path
//! ([`super::json`]), so a line is malformed, or has a key present twice,
//! with the same error either way; [`super::fields::RecordView`] makes the
//! conversion that follows the same too.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::convert::{Record, walk};
use super::fields::{RecordView, Scalar, suggest};
use super::json::StrictVisitor;
use crate::pipeline::ColumnType;

/// The fields a job reads (columns' source fields and their roots,
/// event-time fields, ...), each with its slot.
#[derive(Debug, Default)]
pub struct RowShape {
    names: Vec<String>,
    slots: FxHashMap<String, usize>,
}

impl RowShape {
    /// A shape of `fields` (any order; slots follow name order).
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        let mut names: Vec<String> = fields.into_iter().collect();
        names.sort();
        names.dedup();
        let slots = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self { names, slots }
    }

    /// The slot of field `name`.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slots.get(name).copied()
    }

    /// The known field names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A decoded value.
#[derive(Debug, Clone, Default)]
enum Slot {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string that is this byte range of the row's text.
    Span(usize, usize),
    /// A string that had escapes.
    Owned(String),
    Nested(Value),
}

/// Why a line is not a row.
#[derive(Debug)]
pub enum NotARow {
    /// Valid JSON that is not an object.
    NotObject,
    /// Malformed JSON or a key present twice (as [`super::json::from_str`]
    /// reports them).
    Json(serde_json::Error),
}

/// One row: its text, a slot per field of the shape and the keys the
/// shape does not know. Reused from row to row (its buffers stay).
#[derive(Debug)]
pub struct FlatRow {
    shape: Arc<RowShape>,
    text: String,
    slots: Vec<Slot>,
    /// Slots set in this row, to clear for the next.
    set: Vec<usize>,
    unknown: Vec<(String, Slot)>,
    line: u64,
    /// The slots of the last row's keys, in the order they came: the next
    /// row usually has the same keys in the same order.
    order: Vec<Option<usize>>,
}

impl FlatRow {
    pub fn new(shape: Arc<RowShape>) -> Self {
        let slots = vec![Slot::Absent; shape.names.len()];
        Self {
            shape,
            text: String::new(),
            slots,
            set: Vec::new(),
            unknown: Vec::new(),
            line: 0,
            order: Vec::new(),
        }
    }

    fn clear(&mut self) {
        for &i in &self.set {
            self.slots[i] = Slot::Absent;
        }
        self.set.clear();
        self.unknown.clear();
    }

    /// Decodes `line` (one JSON object, line `number`).
    ///
    /// # Errors
    /// The line is not a JSON object (malformed, a key present twice, or
    /// another JSON value).
    pub fn decode_json(&mut self, line: &str, number: u64) -> Result<(), NotARow> {
        self.clear();
        self.text.clear();
        self.text.push_str(line);
        self.line = number;
        let mut de = serde_json::Deserializer::from_str(&self.text);
        let mut fill = Fill {
            shape: &self.shape,
            base: self.text.as_ptr() as usize,
            len: self.text.len(),
            slots: &mut self.slots,
            set: &mut self.set,
            unknown: &mut self.unknown,
            order: &mut self.order,
        };
        let object = (&mut fill)
            .deserialize(&mut de)
            .and_then(|object| de.end().map(|()| object))
            .map_err(NotARow::Json)?;
        if object {
            Ok(())
        } else {
            Err(NotARow::NotObject)
        }
    }

    /// Sets the row to a CSV record: `cells` under `headers` (each with its
    /// slot), its text the cells joined by `delimiter`.
    pub fn fill_csv<'c>(
        &mut self,
        cells: impl Iterator<Item = &'c str>,
        headers: &[(String, Option<usize>)],
        delimiter: char,
        number: u64,
    ) {
        self.clear();
        self.line = number;
        self.text.clear();
        for (i, (cell, (name, slot))) in cells.zip(headers).enumerate() {
            if i > 0 {
                self.text.push(delimiter);
            }
            let start = self.text.len();
            self.text.push_str(cell);
            let value = Slot::Span(start, self.text.len());
            match *slot {
                // A header present twice: the last cell wins, as in a map.
                Some(s) => {
                    self.slots[s] = value;
                    self.set.push(s);
                }
                None => self.unknown.push((name.clone(), value)),
            }
        }
    }

    fn scalar<'s>(&'s self, slot: &'s Slot) -> Option<Scalar<'s>> {
        Some(match slot {
            Slot::Absent => return None,
            Slot::Null => Scalar::Null,
            Slot::Bool(b) => Scalar::Bool(*b),
            Slot::Int(i) => Scalar::Int(*i),
            Slot::UInt(u) => Scalar::UInt(*u),
            Slot::Float(f) => Scalar::Float(*f),
            Slot::Span(a, b) => Scalar::Str(&self.text[*a..*b]),
            Slot::Owned(s) => Scalar::Str(s),
            Slot::Nested(v) => Scalar::Nested(v),
        })
    }

    /// The row as a JSON record (for sinks that read those).
    pub fn to_record(&self) -> Record {
        let mut fields = Map::new();
        let named = self
            .set
            .iter()
            .map(|&i| (&self.shape.names[i], &self.slots[i]))
            .chain(self.unknown.iter().map(|(k, v)| (k, v)));
        for (name, slot) in named {
            if let Some(v) = self.scalar(slot) {
                fields.insert(name.clone(), v.to_value().into_owned());
            }
        }
        Record {
            fields,
            raw: self.text.clone(),
            line: self.line,
        }
    }
}

impl RecordView for FlatRow {
    fn field(&self, name: &str, slot: Option<usize>) -> Option<Scalar<'_>> {
        if let Some(slot) = slot.or_else(|| self.shape.slot(name))
            && let Some(v) = self.scalar(&self.slots[slot])
        {
            return Some(v);
        }
        if !name.contains(['.', '[']) {
            return None;
        }
        // A path: walked from its root's value, as in a JSON record.
        let mut segments = crate::pipeline::path_segments(name).into_iter();
        let root = self.shape.slot(segments.next()?)?;
        match &self.slots[root] {
            Slot::Nested(v) => walk(v, segments).map(Scalar::of),
            _ => None,
        }
    }

    fn raw(&self) -> &str {
        &self.text
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn unknown_field(
        &self,
        _known: &HashSet<String>,
        guess: bool,
    ) -> Option<(String, Option<ColumnType>)> {
        // The shape is the known fields: every other key is unknown.
        self.unknown
            .iter()
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(k, v)| (k.clone(), self.scalar(v).and_then(|s| suggest(s, guess))))
    }
}

/// Fills a row's slots from one JSON value; true when it was an object.
struct Fill<'r> {
    shape: &'r RowShape,
    /// Where the row's text starts in memory (a borrowed string's span is
    /// its distance from here) and its length.
    base: usize,
    len: usize,
    slots: &'r mut Vec<Slot>,
    set: &'r mut Vec<usize>,
    unknown: &'r mut Vec<(String, Slot)>,
    order: &'r mut Vec<Option<usize>>,
}

impl Fill<'_> {
    /// The slot of the `position`th key, guessed from the last row first.
    fn slot_of(&mut self, key: &str, position: usize) -> Option<usize> {
        if let Some(Some(i)) = self.order.get(position)
            && self.shape.names[*i] == key
        {
            return Some(*i);
        }
        let found = self.shape.slot(key);
        match self.order.get_mut(position) {
            Some(o) => *o = found,
            None => self.order.push(found),
        }
        found
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    // The message of the value path's check (super::json).
    E::custom(format!("duplicate key {key:?}"))
}

impl<'de> DeserializeSeed<'de> for &mut Fill<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Fill<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    // Any other value is read whole (its errors are the value path's) and
    // is not a row.
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        StrictVisitor.visit_seq(seq).map(|_| false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut position = 0;
        while let Some(key) = map.next_key_seed(Key)? {
            let slot = self.slot_of(&key, position);
            position += 1;
            let value = map.next_value_seed(ValueSeed {
                base: self.base,
                len: self.len,
            })?;
            match slot {
                Some(i) => {
                    if !matches!(self.slots[i], Slot::Absent) {
                        return Err(duplicate(&key));
                    }
                    self.slots[i] = value;
                    self.set.push(i);
                }
                None => {
                    if self.unknown.iter().any(|(k, _)| k.as_str() == key.as_ref()) {
                        return Err(duplicate(&key));
                    }
                    self.unknown.push((key.into_owned(), value));
                }
            }
        }
        Ok(true)
    }
}

/// An object's key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

/// A member's value as a slot.
struct ValueSeed {
    base: usize,
    len: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Slot;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Slot;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Slot, E> {
        Ok(Slot::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Slot, E> {
        Ok(Slot::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Slot, E> {
        Ok(Slot::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Slot, E> {
        // As a JSON value holds it: a number that is not finite is null.
        Ok(if v.is_finite() {
            Slot::Float(v)
        } else {
            Slot::Null
        })
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Slot, E> {
        // A slice of the row's text: kept as its byte range.
        match (v.as_ptr() as usize).checked_sub(self.base) {
            Some(start) if start + v.len() <= self.len => Ok(Slot::Span(start, start + v.len())),
            _ => Ok(Slot::Owned(v.to_owned())),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Slot, E> {
        Ok(Slot::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Slot, E> {
        Ok(Slot::Owned(v))
    }

    fn visit_unit<E>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }

    fn visit_none<E>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot, A::Error> {
        StrictVisitor.visit_seq(seq).map(Slot::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot, A::Error> {
        StrictVisitor.visit_map(map).map(Slot::Nested)
    }
}
