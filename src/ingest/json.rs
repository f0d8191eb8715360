//! JSON read as `serde_json` reads it, except that an object with a key
//! present twice is an error naming the key (`serde_json::Value` keeps the
//! last value silently). The check is the map insert itself: one pass,
//! no second parse.
//!
//! A document (a JSON file, an API body) whose records hold such a key is
//! read again record by record ([`raw_records`]), so only those records
//! are rejects.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// JSON text as a value whose objects have distinct keys.
///
/// # Errors
/// Malformed JSON, or a key present twice in one object (see
/// [`is_duplicate`]).
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// As [`from_str`], from bytes.
///
/// # Errors
/// As [`from_str`], and bytes that are not UTF-8.
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

/// Whether a [`from_str`] error is a key present twice (the JSON itself is
/// well formed).
pub fn is_duplicate(e: &serde_json::Error) -> bool {
    e.classify() == serde_json::error::Category::Data
}

/// A value deserialized with [`StrictVisitor`].
pub(super) struct Strict(pub(super) Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

/// Builds a [`Value`] as serde_json's own visitor does, refusing a key
/// present twice.
pub(super) struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value()?;
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format!("duplicate key {:?}", slot.key())));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// Checks `text` as [`from_str`] reads it, without building any value: the
/// same error for the same document (the first in the document, a key
/// present twice included), or none.
///
/// # Errors
/// As [`from_str`].
pub fn check(text: &str) -> serde_json::Result<()> {
    serde_json::from_str::<Checked>(text).map(|_| ())
}

/// A value read through [`CheckVisitor`].
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckVisitor).map(|()| Checked)
    }
}

/// Visits a value as [`StrictVisitor`] does (the parser checks strings and
/// numbers the same way whatever the visitor keeps), keeping only the keys
/// of the object being read, to find one present twice where it would.
struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        Checked::deserialize(d).map(|_| ())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut keys = std::collections::BTreeSet::new();
        while let Some(Key(key)) = access.next_key()? {
            let Checked = access.next_value()?;
            if keys.contains(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            keys.insert(key);
        }
        Ok(())
    }
}

/// An object's key, borrowed from the text when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object's members as raw text, keys distinct.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: &'de RawValue = access.next_value()?;
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The items of the array at `path` (dot-separated keys, or indexes into
/// arrays; empty for the whole document) of `text`, each as its own text.
/// A key present twice in an object on the path makes the path ambiguous:
/// an error; inside an item it is left for the item's own parse.
///
/// # Errors
/// Malformed JSON, an ambiguous path, a path that does not lead to an
/// array.
pub fn raw_records<'a>(text: &'a str, path: &str) -> Result<Vec<&'a RawValue>, String> {
    let mut node: &'a RawValue =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        let next = match node.get().as_bytes().first() {
            Some(b'{') => {
                let RawObject(members) = serde_json::from_str(node.get())
                    .map_err(|e| format!("on the records path {path:?}: {e}"))?;
                members.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            Some(b'[') => {
                let items: Vec<&'a RawValue> = serde_json::from_str(node.get())
                    .map_err(|e| format!("on the records path {path:?}: {e}"))?;
                key.parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i).copied())
            }
            _ => None,
        };
        node = next.ok_or_else(|| format!("no key {key:?} on the records path {path:?}"))?;
    }
    serde_json::from_str(node.get())
        .map_err(|_| "the records path does not lead to an array".to_string())
}

/// The records at `path` (dot-separated object keys; empty for the whole
/// document) of `text`, each as its own text, without building any value:
/// the items of the array there, or the object there as one record.
/// `None` when parsing the document whole would not lead to records that
/// way: the JSON is malformed, a key on the path is missing or present
/// twice, or the path leads to anything else.
pub fn record_items<'a>(text: &'a str, path: &str) -> Option<Vec<&'a RawValue>> {
    let mut node: &'a RawValue = serde_json::from_str(text).ok()?;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        if node.get().as_bytes().first() != Some(&b'{') {
            return None;
        }
        let RawObject(members) = serde_json::from_str(node.get()).ok()?;
        node = members.into_iter().find(|(k, _)| k == key)?.1;
    }
    match node.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(node.get()).ok(),
        Some(b'{') => Some(vec![node]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a": [1, -2, 3.5, 18446744073709551615, true, null, "x\u00e9"], "b": {"c": {}}, "d": []}"#;
        assert_eq!(
            from_str(text).expect("parses"),
            serde_json::from_str::<Value>(text).expect("parses")
        );
        assert_eq!(
            from_slice(text.as_bytes()).expect("parses"),
            serde_json::from_str::<Value>(text).expect("parses")
        );
    }

    #[test]
    fn a_key_present_twice_is_an_error_naming_it_at_any_depth() {
        for (text, key) in [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"a": {"b": 1, "c": 2, "b": 3}}"#, "b"),
            (r#"[{"x": 1}, {"y": [{"z": 1, "z": 1}]}]"#, "z"),
        ] {
            let e = from_str(text).expect_err(text);
            assert!(is_duplicate(&e), "{e}");
            assert!(
                e.to_string().contains(&format!("duplicate key \"{key}\"")),
                "{e}"
            );
        }
        let e = from_str(r#"{"a": 1,"#).expect_err("malformed");
        assert!(!is_duplicate(&e), "{e}");
    }

    #[test]
    fn check_fails_where_from_str_fails_and_says_the_same() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let texts = [
            r#"{"a": [1, {"b": "x"}], "c": null}"#.to_string(),
            r#"{"a": 1, "\u0061": 2}"#.into(),
            r#"[{"a": 1}, {"b": {"c": 1, "d": "\ud800", "c": 2}}]"#.into(),
            r#"[{"b": {"c": 1, "c": 2, "d": "\ud800"}}]"#.into(),
            r#"{"x": "\udc00"}"#.into(),
            r#"{"x": "\ud83d\ude00"}"#.into(),
            r#"[1e400]"#.into(),
            r#"[-1e400, 1e-400, 18446744073709551616, -9223372036854775809]"#.into(),
            "[\"a\u{1}b\"]".into(),
            r#"{"a": 1,}"#.into(),
            r#"{"a": 1} x"#.into(),
            r#"{"a" 1}"#.into(),
            r#"[1, 2"#.into(),
            String::new(),
            "\u{feff}[]".into(),
            deep(127),
            deep(128),
            deep(200),
        ];
        for text in &texts {
            assert_eq!(
                check(text).map_err(|e| (e.to_string(), is_duplicate(&e))),
                from_str(text)
                    .map(|_| ())
                    .map_err(|e| (e.to_string(), is_duplicate(&e))),
                "{text}"
            );
        }
    }

    #[test]
    fn raw_records_are_each_record_s_own_text() {
        let text = r#"{"meta": {"n": 1, "n": 2}, "data": {"rows": [{"a": 1}, {"a": 1, "a": 2}]}}"#;
        let items = raw_records(text, "data.rows").expect("records");
        let texts: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"a": 1}"#, r#"{"a": 1, "a": 2}"#]);
        assert_eq!(raw_records("[[1], [2, 3]]", "1").expect("index").len(), 2);
        let ambiguous = raw_records(r#"{"rows": [], "rows": [{}]}"#, "rows").expect_err("twice");
        assert!(ambiguous.contains("duplicate key \"rows\""), "{ambiguous}");
        assert!(raw_records(r#"{"rows": 1}"#, "rows").is_err());
        assert!(raw_records(r#"{"rows": []}"#, "cols").is_err());
    }
}
