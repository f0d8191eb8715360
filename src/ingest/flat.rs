//! Rows decoded straight from their text into one slot per field the job
//! reads: no JSON value tree, no map of every key. A string without
//! escapes is a span of the row's text; numbers and booleans are kept as
//! parsed; only nested values (objects, arrays) become JSON values.
//!
//! The usual line (no escapes, numbers of ordinary length) is read by
//! [`super::quick_json`]; any other line by the same parser as the value
//! path ([`super::json`]), so a line is malformed, or has a key present
//! twice, with the same error either way. [`super::fields::RecordView`]
//! makes the conversion that follows the same too.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::convert::{Record, walk};
use super::fields::{RecordView, Scalar, suggest};
use super::json::StrictVisitor;
use super::quick_json::{self, Quick};
use crate::pipeline::ColumnType;

/// The fields a job reads (columns' source fields and their roots,
/// event-time fields, ...), each with its slot.
#[derive(Debug, Default)]
pub struct RowShape {
    names: Vec<String>,
    /// Each name's first sixteen bytes (zero-padded), compared first.
    heads: Vec<[u64; 2]>,
    slots: FxHashMap<String, usize>,
}

/// A key's first sixteen bytes, zero-padded, as two words.
fn head(key: &[u8]) -> [u64; 2] {
    let (first, rest) = key.split_at(key.len().min(8));
    [word(first), word(&rest[..rest.len().min(8)])]
}

/// Up to eight bytes as a little-endian word, zero-padded. A part shorter
/// than a load is read as two loads that overlap (the shared bytes are
/// the same in both), so no length costs a loop.
fn word(part: &[u8]) -> u64 {
    fn two<const N: usize>(part: &[u8], load: fn([u8; N]) -> u64) -> Option<u64> {
        let low = load(*part.first_chunk::<N>()?);
        let high = load(*part.last_chunk::<N>()?);
        Some(low | high << (8 * (part.len() - N)))
    }
    let found = match part.len() {
        8.. => part.first_chunk::<8>().map(|w| u64::from_le_bytes(*w)),
        4..=7 => two::<4>(part, |w| u64::from(u32::from_le_bytes(w))),
        2..=3 => two::<2>(part, |w| u64::from(u16::from_le_bytes(w))),
        1 => Some(u64::from(part[0])),
        0 => Some(0),
    };
    found.unwrap_or(0)
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
        let heads = names.iter().map(|n| head(n.as_bytes())).collect();
        Self {
            names,
            heads,
            slots,
        }
    }

    /// Whether field `i` is named `key`.
    fn is(&self, i: usize, key: &str) -> bool {
        let (name, key) = (self.names[i].as_bytes(), key.as_bytes());
        name.len() == key.len()
            && self.heads[i] == head(key)
            && (key.len() <= 16 || name[16..] == key[16..])
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

/// A decoded value (what it owns is kept beside it in [`Slots`], so a
/// slot is plain data).
#[derive(Debug, Clone, Copy, Default)]
enum Slot {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string that is this byte range of the row's text.
    Span(usize, usize),
    /// A string that had escapes: the row's `n`th such string.
    Owned(usize),
    /// An object or array: the row's `n`th such value.
    Nested(usize),
}

/// A row's values, one slot per field of the shape. A slot holds a value
/// of this row only when its stamp is the row's generation, so starting
/// the next row writes nothing to the slots.
#[derive(Debug)]
struct Slots {
    values: Vec<Slot>,
    stamps: Vec<u32>,
    generation: u32,
    /// Slots set in this row, in the order they were.
    set: Vec<usize>,
    /// The row's strings that had escapes, and its nested values.
    strings: Vec<String>,
    nested: Vec<Value>,
    /// The row's keys the shape does not know, with their values.
    unknown: Vec<(String, Slot)>,
    /// The slots of the last row's keys, in the order they came: the next
    /// row usually has the same keys in the same order.
    order: Vec<Option<usize>>,
}

impl Slots {
    fn new(len: usize) -> Self {
        Self {
            values: vec![Slot::Null; len],
            stamps: vec![0; len],
            generation: 1,
            set: Vec::new(),
            strings: Vec::new(),
            nested: Vec::new(),
            unknown: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Empties every slot for the next row.
    fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.fill(0);
            self.generation = 1;
        }
        self.set.clear();
        self.strings.clear();
        self.nested.clear();
        self.unknown.clear();
    }

    /// Takes the row's `position`th member, `key`: into its slot, or among
    /// the unknown keys. False when the row had that key already.
    fn member(&mut self, shape: &RowShape, position: usize, key: &str, value: Slot) -> bool {
        match self.slot_of(shape, key, position) {
            Some(i) => self.put(i, value),
            None if self.unknown.iter().any(|(k, _)| k == key) => false,
            None => {
                self.unknown.push((key.to_string(), value));
                true
            }
        }
    }

    /// The slot of a row's `position`th key, guessed from the last row's
    /// keys first.
    fn slot_of(&mut self, shape: &RowShape, key: &str, position: usize) -> Option<usize> {
        if let Some(Some(i)) = self.order.get(position)
            && shape.is(*i, key)
        {
            return Some(*i);
        }
        let found = shape.slot(key);
        match self.order.get_mut(position) {
            Some(o) => *o = found,
            None => self.order.push(found),
        }
        found
    }

    /// The slot of a string that had escapes.
    fn keep_string(&mut self, s: String) -> Slot {
        self.strings.push(s);
        Slot::Owned(self.strings.len() - 1)
    }

    /// The slot of a nested value.
    fn keep_nested(&mut self, v: Value) -> Slot {
        self.nested.push(v);
        Slot::Nested(self.nested.len() - 1)
    }

    fn get(&self, i: usize) -> Option<&Slot> {
        (self.stamps[i] == self.generation).then(|| &self.values[i])
    }

    /// Sets slot `i`, unless this row set it already (false).
    fn put(&mut self, i: usize, value: Slot) -> bool {
        if self.stamps[i] == self.generation {
            return false;
        }
        self.overwrite(i, value);
        true
    }

    /// Sets slot `i`, whatever this row set there before.
    fn overwrite(&mut self, i: usize, value: Slot) {
        if self.stamps[i] != self.generation {
            self.stamps[i] = self.generation;
            self.set.push(i);
        }
        self.values[i] = value;
    }

    /// The set slots, in the order they were.
    fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.set.iter().map(|&i| (i, &self.values[i]))
    }
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
    slots: Slots,
    line: u64,
}

impl FlatRow {
    pub fn new(shape: Arc<RowShape>) -> Self {
        let slots = Slots::new(shape.names.len());
        Self {
            shape,
            text: String::new(),
            slots,
            line: 0,
        }
    }

    /// Decodes `line` (one JSON object, line `number`).
    ///
    /// # Errors
    /// The line is not a JSON object (malformed, a key present twice, or
    /// another JSON value).
    pub fn decode_json(&mut self, line: &str, number: u64) -> Result<(), NotARow> {
        self.slots.clear();
        self.text.clear();
        self.text.push_str(line);
        self.line = number;
        if self.decode_quick() {
            return Ok(());
        }
        // Not a line the quick reader is sure of: the full parser reads
        // it (and reports its errors).
        self.slots.clear();
        let mut de = serde_json::Deserializer::from_str(&self.text);
        let mut fill = Fill {
            shape: &self.shape,
            base: self.text.as_ptr() as usize,
            len: self.text.len(),
            slots: &mut self.slots,
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

    /// Decodes the row's text with [`quick_json`]; false (some slots
    /// perhaps set) when it gave up on the line, or a key came twice.
    fn decode_quick(&mut self) -> bool {
        let (shape, slots) = (&*self.shape, &mut self.slots);
        quick_json::object(&self.text, |position, key, value| {
            let value = match value {
                Quick::Null => Slot::Null,
                Quick::Bool(b) => Slot::Bool(b),
                Quick::Int(i) => Slot::Int(i),
                Quick::UInt(u) => Slot::UInt(u),
                Quick::Float(f) => Slot::Float(f),
                Quick::Str(a, b) => Slot::Span(a, b),
                Quick::Nested(v) => slots.keep_nested(v),
            };
            // A key present twice (false): the full parser reports it.
            slots.member(shape, position, key, value)
        })
        .is_some()
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
        self.start_csv(number);
        for (i, (cell, header)) in cells.zip(headers).enumerate() {
            if i > 0 {
                self.text.push(delimiter);
            }
            let start = self.text.len();
            self.text.push_str(cell);
            self.csv_cell(header, Slot::Span(start, self.text.len()));
        }
    }

    /// Sets the row to a CSV record read as `text`, its cells joined by a
    /// one-byte delimiter, each ending at its `ends` (under `headers`):
    /// the row [`Self::fill_csv`] makes of those cells.
    pub fn fill_csv_cells(
        &mut self,
        text: &str,
        ends: &[usize],
        headers: &[(String, Option<usize>)],
        number: u64,
    ) {
        self.start_csv(number);
        self.text.push_str(text);
        let mut start = 0;
        for (&end, header) in ends.iter().zip(headers) {
            self.csv_cell(header, Slot::Span(start, end));
            start = end + 1;
        }
    }

    fn start_csv(&mut self, number: u64) {
        self.slots.clear();
        self.line = number;
        self.text.clear();
    }

    /// Sets the cell under `header` (its name and slot).
    fn csv_cell(&mut self, (name, slot): &(String, Option<usize>), value: Slot) {
        match *slot {
            // A header present twice: the last cell wins, as in a map.
            Some(s) => self.slots.overwrite(s, value),
            None => self.slots.unknown.push((name.clone(), value)),
        }
    }

    fn scalar<'s>(&'s self, slot: &'s Slot) -> Scalar<'s> {
        match slot {
            Slot::Null => Scalar::Null,
            Slot::Bool(b) => Scalar::Bool(*b),
            Slot::Int(i) => Scalar::Int(*i),
            Slot::UInt(u) => Scalar::UInt(*u),
            Slot::Float(f) => Scalar::Float(*f),
            Slot::Span(a, b) => Scalar::Str(&self.text[*a..*b]),
            Slot::Owned(i) => Scalar::Str(&self.slots.strings[*i]),
            Slot::Nested(i) => Scalar::Nested(&self.slots.nested[*i]),
        }
    }

    /// The row as a JSON record (for sinks that read those).
    pub fn to_record(&self) -> Record {
        let mut fields = Map::new();
        let named = self
            .slots
            .iter()
            .map(|(i, slot)| (&self.shape.names[i], slot))
            .chain(self.slots.unknown.iter().map(|(k, v)| (k, v)));
        for (name, slot) in named {
            fields.insert(name.clone(), self.scalar(slot).to_value().into_owned());
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
            && let Some(v) = self.slots.get(slot)
        {
            return Some(self.scalar(v));
        }
        if !name.contains(['.', '[']) {
            return None;
        }
        // A path: walked from its root's value, as in a JSON record.
        let mut segments = crate::pipeline::path_segments(name).into_iter();
        let root = self.shape.slot(segments.next()?)?;
        match self.slots.get(root)? {
            Slot::Nested(i) => walk(&self.slots.nested[*i], segments).map(Scalar::of),
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
        self.slots
            .unknown
            .iter()
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(k, v)| (k.clone(), suggest(self.scalar(v), guess)))
    }
}

/// Fills a row's slots from one JSON value; true when it was an object.
struct Fill<'r> {
    shape: &'r RowShape,
    /// Where the row's text starts in memory (a borrowed string's span is
    /// its distance from here) and its length.
    base: usize,
    len: usize,
    slots: &'r mut Slots,
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
            let value = map.next_value_seed(ValueSeed {
                base: self.base,
                len: self.len,
                slots: &mut *self.slots,
            })?;
            if !self.slots.member(self.shape, position, &key, value) {
                return Err(duplicate(&key));
            }
            position += 1;
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

/// A member's value as a slot (what it owns kept in `slots`).
struct ValueSeed<'s> {
    base: usize,
    len: usize,
    slots: &'s mut Slots,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Slot;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
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
            _ => Ok(self.slots.keep_string(v.to_owned())),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Slot, E> {
        Ok(self.slots.keep_string(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Slot, E> {
        Ok(self.slots.keep_string(v))
    }

    fn visit_unit<E>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }

    fn visit_none<E>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot, A::Error> {
        let value = StrictVisitor.visit_seq(seq)?;
        Ok(self.slots.keep_nested(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot, A::Error> {
        let value = StrictVisitor.visit_map(map)?;
        Ok(self.slots.keep_nested(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_its_bytes_zero_padded() {
        let text = b"abcdefghij\xff\x00\x80";
        for start in 0..text.len() {
            for end in start..=text.len().min(start + 8) {
                let part = &text[start..end];
                let want = part
                    .iter()
                    .rev()
                    .fold(0u64, |w, &b| (w << 8) | u64::from(b));
                assert_eq!(word(part), want, "{part:?}");
            }
        }
    }

    #[test]
    fn a_key_is_its_field_s_name_and_no_other() {
        let names = [
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopr",
            "abcdefghijklmnopqrstuvwxyz_é",
            "abcdefghijklmnopqrstuvwxyz_e",
        ];
        let shape = RowShape::new(names.iter().map(|n| n.to_string()));
        let keys = names
            .iter()
            .copied()
            .chain(["", "b", "abcdefgh\0", "abcdefghijklmnoq"]);
        for key in keys {
            for (i, name) in shape.names().iter().enumerate() {
                assert_eq!(shape.is(i, key), name == key, "{name:?} vs {key:?}");
            }
        }
    }
}
