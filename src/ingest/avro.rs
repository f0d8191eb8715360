//! Avro records (a Kafka record's value) decoded to JSON objects, so they
//! take the JSON path: the contract, rejects, `_hash`, expectations.
//!
//! - **Schemas** are Avro's JSON form: primitives, records, enums, arrays,
//!   maps, unions, fixed, named references (recursive types included) and
//!   the logical types `date`, `time-*`, `timestamp-*`,
//!   `local-timestamp-*`, `decimal` and `uuid`; an unknown logical type is
//!   its underlying type, as the specification says.
//! - **Values** keep every digit and instant: a decimal is its exact text
//!   (`"12.50"`), a timestamp an RFC 3339 UTC instant (`...Z`), a local
//!   timestamp a local time, a date `YYYY-MM-DD`, bytes and fixed lower-case
//!   hex, a NaN or infinite float its name (a string the contract rejects
//!   unless the column is a string).
//! - **Errors** name what does not decode (a truncated record, bytes left
//!   after it, a bad union branch, invalid UTF-8): the record is a reject,
//!   never a guess.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A parsed schema: its nodes, the root first.
#[derive(Debug, Clone)]
pub struct Schema {
    nodes: Vec<Node>,
}

/// Logical types floe renders (others read as their underlying type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logical {
    None,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
    Decimal { scale: u32 },
    Uuid,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int(Logical),
    Long(Logical),
    Float,
    Double,
    Bytes(Logical),
    String,
    Record(Vec<(String, usize)>),
    Enum(Vec<String>),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Fixed {
        size: usize,
        logical: Logical,
    },
    /// A named type used before its definition ended (recursion), by
    /// name while parsing.
    Ref(String),
    /// The same, resolved: the named type's node.
    Link(usize),
}

/// Nesting depth beyond which a value is refused (a recursive schema and a
/// hostile record must not overflow the stack).
const MAX_DEPTH: usize = 64;

/// Items beyond which one array or map is refused (items of type `null`
/// take no bytes, so a corrupt count could otherwise run without end).
const MAX_ITEMS: u64 = 1 << 24;

impl Schema {
    /// Parses a schema's JSON text.
    ///
    /// # Errors
    /// Text that is not JSON or not an Avro schema, with what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let mut parser = Parser::default();
        parser.node(&json, "")?;
        let Parser { mut nodes, names } = parser;
        // References to types defined later, or to an enclosing record.
        for node in &mut nodes {
            if let Node::Ref(name) = node {
                let at = names
                    .get(name.as_str())
                    .ok_or_else(|| format!("the type {name:?} is never defined"))?;
                *node = Node::Link(*at);
            }
        }
        Ok(Self { nodes })
    }

    /// Decodes one datum (binary encoding) into JSON; every byte must be
    /// used.
    ///
    /// # Errors
    /// Bytes that are not a datum of this schema, saying why.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let mut input = bytes;
        let value = self.value(0, &mut input, 0)?;
        if !input.is_empty() {
            return Err(format!(
                "{} byte(s) left after the record (written with another schema?)",
                input.len()
            ));
        }
        Ok(value)
    }

    fn value(&self, node: usize, input: &mut &[u8], depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let Some(n) = self.nodes.get(node) else {
            return Err("schema node out of range".into());
        };
        Ok(match n {
            Node::Null => Value::Null,
            Node::Boolean => match take(input, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("boolean byte {b}, not 0 or 1")),
            },
            Node::Int(logical) => {
                let v = long(input)?;
                let v = i32::try_from(v).map_err(|_| format!("int {v} out of range"))?;
                int_value(i64::from(v), *logical)?
            }
            Node::Long(logical) => int_value(long(input)?, *logical)?,
            Node::Float => {
                let b = take(input, 4)?;
                float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Node::Double => {
                let b = take(input, 8)?;
                let mut a = [0; 8];
                a.copy_from_slice(b);
                float(f64::from_le_bytes(a))
            }
            Node::Bytes(logical) => {
                let len = length(input)?;
                bytes_value(take(input, len)?, *logical)?
            }
            Node::String => {
                let len = length(input)?;
                let b = take(input, len)?;
                Value::String(
                    std::str::from_utf8(b)
                        .map_err(|e| format!("a string is not UTF-8: {e}"))?
                        .to_string(),
                )
            }
            Node::Record(fields) => {
                let mut map = Map::new();
                for (name, field) in fields {
                    let v = self
                        .value(*field, input, depth + 1)
                        .map_err(|e| format!("field {name}: {e}"))?;
                    map.insert(name.clone(), v);
                }
                Value::Object(map)
            }
            Node::Enum(symbols) => Value::String(pick(input, symbols, "enum symbol")?.clone()),
            Node::Array(item) => {
                let mut out = Vec::new();
                blocks(input, |input| {
                    out.push(self.value(*item, input, depth + 1)?);
                    Ok(())
                })?;
                Value::Array(out)
            }
            Node::Map(item) => {
                let mut out = Map::new();
                blocks(input, |input| {
                    let len = length(input)?;
                    let key = std::str::from_utf8(take(input, len)?)
                        .map_err(|e| format!("a map key is not UTF-8: {e}"))?
                        .to_string();
                    let v = self.value(*item, input, depth + 1)?;
                    out.insert(key, v);
                    Ok(())
                })?;
                Value::Object(out)
            }
            Node::Union(branches) => {
                let branch = pick(input, branches, "union branch")?;
                self.value(*branch, input, depth + 1)?
            }
            Node::Fixed { size, logical } => bytes_value(take(input, *size)?, *logical)?,
            Node::Link(named) => self.value(*named, input, depth + 1)?,
            Node::Ref(name) => return Err(format!("unresolved type {name}")),
        })
    }
}

/// Reads the schema's JSON into nodes.
#[derive(Default)]
struct Parser {
    nodes: Vec<Node>,
    /// Full names of the named types defined so far.
    names: HashMap<String, usize>,
}

impl Parser {
    /// Adds the node for `json` (in `namespace`) and returns its index.
    fn node(&mut self, json: &Value, namespace: &str) -> Result<usize, String> {
        match json {
            Value::String(name) => self.named_or_primitive(name, namespace, Logical::None),
            Value::Array(branches) => {
                let at = self.push(Node::Null);
                let mut ids = Vec::with_capacity(branches.len());
                for b in branches {
                    ids.push(self.node(b, namespace)?);
                }
                if ids.is_empty() {
                    return Err("a union without branches".into());
                }
                self.nodes[at] = Node::Union(ids);
                Ok(at)
            }
            Value::Object(o) => self.complex(o, namespace),
            other => Err(format!("{other} is not a schema")),
        }
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn named_or_primitive(
        &mut self,
        name: &str,
        namespace: &str,
        logical: Logical,
    ) -> Result<usize, String> {
        let node = match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int(logical),
            "long" => Node::Long(logical),
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes(logical),
            "string" => Node::String,
            other => {
                let full = full_name(other, namespace);
                return Ok(
                    match self.names.get(&full).or_else(|| self.names.get(other)) {
                        Some(&i) => i,
                        // Defined later or recursive: resolved at the end.
                        None => self.push(Node::Ref(full)),
                    },
                );
            }
        };
        Ok(self.push(node))
    }

    fn complex(&mut self, o: &Map<String, Value>, namespace: &str) -> Result<usize, String> {
        let ty = o.get("type").ok_or("a schema object without \"type\"")?;
        let logical = logical(o);
        let ty = match ty {
            Value::String(t) => t.as_str(),
            nested => return self.node(nested, namespace),
        };
        let str_of = |key: &str| o.get(key).and_then(Value::as_str);
        match ty {
            "record" | "error" | "enum" | "fixed" => {
                let name = str_of("name").ok_or_else(|| format!("a {ty} without a name"))?;
                let space = str_of("namespace").unwrap_or(namespace);
                let full = full_name(name, space);
                let inner_space = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_string();
                // Registered before the fields, so a field may refer to it.
                let at = self.push(Node::Null);
                self.names.insert(full.clone(), at);
                let node = match ty {
                    "enum" => {
                        let symbols = o
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("enum {full} without symbols"))?
                            .iter()
                            .map(|s| s.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| format!("enum {full}: symbols are not strings"))?;
                        Node::Enum(symbols)
                    }
                    "fixed" => {
                        let size = o
                            .get("size")
                            .and_then(Value::as_u64)
                            .and_then(|s| usize::try_from(s).ok())
                            .ok_or_else(|| format!("fixed {full} without a size"))?;
                        Node::Fixed { size, logical }
                    }
                    _ => {
                        let fields = o
                            .get("fields")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("record {full} without fields"))?;
                        let mut out = Vec::with_capacity(fields.len());
                        for f in fields {
                            let name = f
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| format!("record {full}: a field without a name"))?;
                            let t = f.get("type").ok_or_else(|| {
                                format!("record {full}: field {name} without a type")
                            })?;
                            let node = self
                                .node(t, &inner_space)
                                .map_err(|e| format!("record {full}, field {name}: {e}"))?;
                            out.push((name.to_string(), node));
                        }
                        Node::Record(out)
                    }
                };
                self.nodes[at] = node;
                Ok(at)
            }
            "array" => {
                let items = o.get("items").ok_or("an array without items")?;
                let at = self.push(Node::Null);
                let item = self.node(items, namespace)?;
                self.nodes[at] = Node::Array(item);
                Ok(at)
            }
            "map" => {
                let values = o.get("values").ok_or("a map without values")?;
                let at = self.push(Node::Null);
                let item = self.node(values, namespace)?;
                self.nodes[at] = Node::Map(item);
                Ok(at)
            }
            primitive => self.named_or_primitive(primitive, namespace, logical),
        }
    }
}

/// The logical type an object declares (known ones only).
fn logical(o: &Map<String, Value>) -> Logical {
    match o.get("logicalType").and_then(Value::as_str) {
        Some("date") => Logical::Date,
        Some("time-millis") => Logical::TimeMillis,
        Some("time-micros") => Logical::TimeMicros,
        Some("timestamp-millis") => Logical::TimestampMillis,
        Some("timestamp-micros") => Logical::TimestampMicros,
        Some("timestamp-nanos") => Logical::TimestampNanos,
        Some("local-timestamp-millis") => Logical::LocalTimestampMillis,
        Some("local-timestamp-micros") => Logical::LocalTimestampMicros,
        Some("local-timestamp-nanos") => Logical::LocalTimestampNanos,
        Some("decimal") => Logical::Decimal {
            scale: o
                .get("scale")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0),
        },
        Some("uuid") => Logical::Uuid,
        _ => Logical::None,
    }
}

/// `name` in `namespace` unless it is already a full name.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!(
            "the record ends early ({} byte(s) where {n} are needed)",
            input.len()
        ));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// A zig-zag variable-length long.
fn long(input: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take(input, 1)?[0];
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            let v = i64::try_from(value >> 1).unwrap_or(i64::MAX)
                ^ -i64::try_from(value & 1).unwrap_or(0);
            return Ok(v);
        }
    }
    Err("a variable-length number longer than 10 bytes".into())
}

/// The item an index (a long) names: an enum's symbol, a union's branch.
fn pick<'a, T>(input: &mut &[u8], items: &'a [T], what: &str) -> Result<&'a T, String> {
    let i = long(input)?;
    usize::try_from(i)
        .ok()
        .and_then(|i| items.get(i))
        .ok_or_else(|| format!("{what} {i} of {}", items.len()))
}

/// A length (of bytes, a string or a block): never negative.
fn length(input: &mut &[u8]) -> Result<usize, String> {
    let n = long(input)?;
    usize::try_from(n).map_err(|_| format!("a negative length {n}"))
}

/// Array and map blocks: a count (negative: followed by a byte size), the
/// items, until a zero count.
fn blocks(
    input: &mut &[u8],
    mut item: impl FnMut(&mut &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut total: u64 = 0;
    loop {
        let count = long(input)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            long(input)?; // the block's size in bytes
        }
        total = total.saturating_add(count.unsigned_abs());
        if total > MAX_ITEMS {
            return Err(format!("an array or map of more than {MAX_ITEMS} items"));
        }
        for _ in 0..count.unsigned_abs() {
            item(input)?;
        }
    }
}

fn float(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn int_value(v: i64, logical: Logical) -> Result<Value, String> {
    use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat};
    let out_of_range = || format!("{v} is out of range for its logical type");
    let instant = |nanos: i128| {
        let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).map_err(|_| out_of_range())?;
        let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).map_err(|_| out_of_range())?;
        DateTime::from_timestamp(secs, sub).ok_or_else(out_of_range)
    };
    let per = |unit: i128| i128::from(v) * unit;
    Ok(match logical {
        Logical::Date => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(out_of_range)?;
            let day = epoch
                .checked_add_signed(chrono::TimeDelta::days(v))
                .ok_or_else(out_of_range)?;
            Value::String(day.format("%Y-%m-%d").to_string())
        }
        Logical::TimeMillis | Logical::TimeMicros => {
            let micros = if logical == Logical::TimeMillis {
                v * 1000
            } else {
                v
            };
            let secs = u32::try_from(micros.div_euclid(1_000_000)).map_err(|_| out_of_range())?;
            let nano =
                u32::try_from(micros.rem_euclid(1_000_000) * 1000).map_err(|_| out_of_range())?;
            let t = NaiveTime::from_num_seconds_from_midnight_opt(secs, nano)
                .ok_or_else(out_of_range)?;
            Value::String(t.format("%H:%M:%S%.f").to_string())
        }
        Logical::TimestampMillis | Logical::TimestampMicros | Logical::TimestampNanos => {
            let nanos = match logical {
                Logical::TimestampMillis => per(1_000_000),
                Logical::TimestampMicros => per(1_000),
                _ => per(1),
            };
            Value::String(instant(nanos)?.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
        Logical::LocalTimestampMillis
        | Logical::LocalTimestampMicros
        | Logical::LocalTimestampNanos => {
            let nanos = match logical {
                Logical::LocalTimestampMillis => per(1_000_000),
                Logical::LocalTimestampMicros => per(1_000),
                _ => per(1),
            };
            Value::String(
                instant(nanos)?
                    .naive_utc()
                    .format("%Y-%m-%dT%H:%M:%S%.f")
                    .to_string(),
            )
        }
        _ => Value::from(v),
    })
}

fn bytes_value(b: &[u8], logical: Logical) -> Result<Value, String> {
    Ok(match logical {
        Logical::Decimal { scale } => Value::String(decimal_text(b, scale)?),
        Logical::Uuid if b.len() == 16 => {
            let hex = hex(b);
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ))
        }
        Logical::Uuid => Value::String(
            std::str::from_utf8(b)
                .map_err(|e| format!("a uuid is not UTF-8: {e}"))?
                .to_string(),
        ),
        _ => Value::String(hex(b)),
    })
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// A decimal's two's-complement big-endian unscaled value as exact text.
fn decimal_text(b: &[u8], scale: u32) -> Result<String, String> {
    if b.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes (more than 38 digits)",
            b.len()
        ));
    }
    let mut unscaled: i128 = if b.first().is_some_and(|x| x & 0x80 != 0) {
        -1
    } else {
        0
    };
    for byte in b {
        unscaled = (unscaled << 8) | i128::from(*byte);
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::try_from(scale).unwrap_or(usize::MAX);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{int}.{frac}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = zigzag(s.len() as i64);
        out.extend_from_slice(s.as_bytes());
        out
    }

    const READING: &str = r#"{
      "type": "record", "name": "Reading", "namespace": "energy",
      "fields": [
        {"name": "id", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "kwh", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3}},
        {"name": "meter", "type": ["null", "string"], "default": null},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["ACTUAL", "ESTIMATE"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "double"}},
        {"name": "next", "type": ["null", "Reading"], "default": null}
      ]}"#;

    fn reading(id: i64, kwh: i64, next: Option<Vec<u8>>) -> Vec<u8> {
        let mut b = zigzag(id);
        b.extend(zigzag(1_714_521_600_123_456)); // 2024-05-01T00:00:00.123456Z
        b.extend(zigzag(19_844)); // 2024-05-01
        let unscaled = kwh.to_be_bytes();
        let trimmed: Vec<u8> = unscaled[5..].to_vec(); // 3 bytes, sign kept for small values
        b.extend(zigzag(trimmed.len() as i64));
        b.extend(trimmed);
        b.extend(zigzag(1)); // union branch 1: string
        b.extend(string("m-1"));
        b.extend(zigzag(1)); // ESTIMATE
        b.extend(zigzag(2));
        b.extend(string("a"));
        b.extend(string("b"));
        b.extend(zigzag(0));
        b.extend(zigzag(-1)); // a block of one map entry, with its size
        b.extend(zigzag(12));
        b.extend(string("t"));
        b.extend(1.5f64.to_le_bytes());
        b.extend(zigzag(0));
        match next {
            Some(inner) => {
                b.extend(zigzag(1));
                b.extend(inner);
            }
            None => b.extend(zigzag(0)),
        }
        b
    }

    #[test]
    fn records_decode_with_exact_logical_values_and_recursion() -> Result<(), String> {
        let schema = Schema::parse(READING)?;
        let inner = reading(2, -1_250, None);
        let v = schema.decode(&reading(1, 12_500, Some(inner)))?;
        assert_eq!(v["id"], 1);
        assert_eq!(v["at"], "2024-05-01T00:00:00.123456Z");
        assert_eq!(v["day"], "2024-05-01");
        assert_eq!(v["kwh"], "12.500");
        assert_eq!(v["meter"], "m-1");
        assert_eq!(v["kind"], "ESTIMATE");
        assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(v["attrs"], serde_json::json!({"t": 1.5}));
        assert_eq!(v["next"]["kwh"], "-1.250");
        assert_eq!(v["next"]["next"], Value::Null);
        Ok(())
    }

    #[test]
    fn what_does_not_decode_says_why() -> Result<(), String> {
        let schema = Schema::parse(READING)?;
        let good = reading(1, 5, None);
        let short = schema.decode(&good[..good.len() - 3]);
        assert!(short.is_err_and(|e| e.contains("ends early")));
        let mut long = good.clone();
        long.push(0);
        assert!(
            schema
                .decode(&long)
                .is_err_and(|e| e.contains("left after"))
        );
        for bad in [
            "{}",
            "[]",
            r#"{"type": "record", "name": "R"}"#,
            r#""Nope""#,
            "not json",
        ] {
            assert!(Schema::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn decimals_and_floats_keep_their_values() -> Result<(), String> {
        assert_eq!(decimal_text(&[0x00], 2)?, "0.00");
        assert_eq!(decimal_text(&[0xff], 2)?, "-0.01");
        assert_eq!(decimal_text(&[0x30, 0x39], 0)?, "12345");
        assert_eq!(decimal_text(&[0x30, 0x39], 6)?, "0.012345");
        assert!(decimal_text(&[1; 17], 0).is_err());
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
        Ok(())
    }
}
