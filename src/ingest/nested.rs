//! Nested columns (`list<...>`, `map<string, ...>`, `struct<...>`) on the
//! row path: a record's value is checked against the declared type and
//! normalised (every leaf converted by the same rules as a top-level
//! column, struct keys in declared order), and a batch's values become one
//! Arrow array of the table's type.
//!
//! A value may arrive as JSON or as JSON text (a CSV cell, an API that
//! encodes objects as strings): text is parsed once.

use std::sync::Arc;

use arrow_array::{ArrayRef, new_empty_array};
use arrow_schema::{FieldRef, Schema};
use serde_json::{Map, Number, Value};

use super::convert::{Cell, convert, truncate};
use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, StructField};

/// `value` checked against `kind` and normalised for [`column`]; the error
/// names the path inside the column (`location.lat`, `units[2]`).
pub(super) fn normalize(
    value: Option<&Value>,
    kind: &ColumnType,
    path: &str,
) -> std::result::Result<Value, String> {
    match value {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(text)) if kind.is_nested() => {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            let parsed: Value = serde_json::from_str(text).map_err(|_| {
                format!(
                    "field {path}: {} is not {} (nor JSON text of one)",
                    truncate(text),
                    describe(kind)
                )
            })?;
            if parsed.is_string() {
                return Err(format!(
                    "field {path}: {} is not {}",
                    truncate(text),
                    describe(kind)
                ));
            }
            normalize(Some(&parsed), kind, path)
        }
        Some(v) => match kind {
            ColumnType::List(element) => {
                let Value::Array(items) = v else {
                    return Err(not_a(v, kind, path));
                };
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| normalize(Some(item), element, &format!("{path}[{i}]")))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            ColumnType::Map(value_kind) => {
                let Value::Object(entries) = v else {
                    return Err(not_a(v, kind, path));
                };
                let mut out = Map::with_capacity(entries.len());
                for (key, item) in entries {
                    let item = normalize(Some(item), value_kind, &format!("{path}.{key}"))?;
                    out.insert(key.clone(), item);
                }
                Ok(Value::Object(out))
            }
            ColumnType::Struct(fields) => {
                let Value::Object(entries) = v else {
                    return Err(not_a(v, kind, path));
                };
                let mut out = Map::with_capacity(fields.len());
                for f in fields {
                    let item =
                        normalize(entries.get(&f.name), &f.kind, &format!("{path}.{}", f.name))?;
                    out.insert(f.name.clone(), item);
                }
                Ok(Value::Object(out))
            }
            leaf => {
                let cell = convert(Some(v), leaf).map_err(|e| format!("field {path}: {e}"))?;
                Ok(match (cell, leaf) {
                    // The decoder reads a decimal back from its text.
                    (Cell::Dec(unscaled), ColumnType::Decimal { scale, .. }) => {
                        Value::String(decimal_text(unscaled, *scale))
                    }
                    (cell, _) => leaf_value(cell),
                })
            }
        },
    }
}

fn describe(kind: &ColumnType) -> String {
    match kind {
        ColumnType::List(_) => format!("a list ({kind})"),
        ColumnType::Map(_) | ColumnType::Struct(_) => format!("an object ({kind})"),
        other => format!("{other}"),
    }
}

/// `v` (a JSON value that is not text) is not a `kind`.
fn not_a(v: &Value, kind: &ColumnType, path: &str) -> String {
    let text = v.to_string();
    let shown = if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    };
    format!("field {path}: {shown} is not {}", describe(kind))
}

/// A converted leaf in the form the JSON decoder reads back exactly:
/// dates as days and timestamps as microseconds since the epoch.
fn leaf_value(cell: Cell<'_>) -> Value {
    match cell {
        Cell::Str(s) => Value::String(s.into_owned()),
        Cell::I32(v) | Cell::Date(v) => Value::from(v),
        Cell::I64(v) | Cell::Ts(v) => Value::from(v),
        Cell::F32(v) => Number::from_f64(f64::from(v)).map_or(Value::Null, Value::Number),
        Cell::F64(v) => Number::from_f64(v).map_or(Value::Null, Value::Number),
        Cell::Bool(v) => Value::Bool(v),
        Cell::Null | Cell::Dec(_) | Cell::Hash(_) => Value::Null,
    }
}

/// `unscaled` with `scale` digits after the point (`-1999`, 2 → `-19.99`).
fn decimal_text(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// The first key in `value` that `kind` does not declare (a struct's
/// unknown key), as a path from `path`, with its value.
pub(super) fn unknown_key(value: &Value, kind: &ColumnType, path: &str) -> Option<(String, Value)> {
    let parsed;
    let value = match value {
        Value::String(text) if kind.is_nested() => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        v => v,
    };
    match (kind, value) {
        (ColumnType::List(element), Value::Array(items)) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| unknown_key(item, element, &format!("{path}[{i}]"))),
        (ColumnType::Map(value_kind), Value::Object(entries)) => entries
            .iter()
            .find_map(|(k, item)| unknown_key(item, value_kind, &format!("{path}.{k}"))),
        (ColumnType::Struct(fields), Value::Object(entries)) => {
            entries
                .iter()
                .find_map(|(k, item)| match fields.iter().find(|f| &f.name == k) {
                    Some(f) => unknown_key(item, &f.kind, &format!("{path}.{k}")),
                    None => Some((format!("{path}.{k}"), item.clone())),
                })
        }
        _ => None,
    }
}

/// The column type a JSON value suggests, nested values included (for
/// the column line an error proposes); none for null.
pub(super) fn suggest(value: &Value) -> Option<ColumnType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Long,
        Value::Number(_) => ColumnType::Double,
        Value::String(_) => ColumnType::String,
        Value::Array(items) => ColumnType::List(Box::new(
            items.iter().find_map(suggest).unwrap_or(ColumnType::String),
        )),
        Value::Object(entries) => ColumnType::Struct(
            entries
                .iter()
                .map(|(k, v)| StructField {
                    name: k.clone(),
                    kind: suggest(v).unwrap_or(ColumnType::String),
                })
                .collect(),
        ),
    })
}

/// One Arrow array of `field`'s (nested) type from normalised values.
pub(super) fn column(field: &FieldRef, values: Vec<Value>) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(new_empty_array(field.data_type()));
    }
    let decode_error = |e: arrow_schema::ArrowError| {
        Error::Storage(format!(
            "column {}: cannot build its values: {e}",
            field.name()
        ))
        .caused_by(e)
    };
    let schema = Arc::new(Schema::new(vec![Arc::clone(field)]));
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(values.len())
        .build_decoder()
        .map_err(decode_error)?;
    let rows: Vec<Map<String, Value>> = values
        .into_iter()
        .map(|v| Map::from_iter([(field.name().clone(), v)]))
        .collect();
    decoder.serialize(&rows).map_err(decode_error)?;
    match decoder.flush().map_err(decode_error)? {
        Some(batch) => Ok(Arc::clone(batch.column(0))),
        None => Ok(new_empty_array(field.data_type())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use serde_json::json;

    fn kind(text: &str) -> ColumnType {
        text.parse().expect("type")
    }

    #[test]
    fn values_are_checked_and_normalised() {
        let k =
            kind("struct<lat: double, tags: list<string>, at: timestamptz, m: map<string, int>>");
        let v =
            json!({"tags": ["a", 1], "lat": "51.5", "at": "2024-01-01T00:00:00Z", "m": {"x": "7"}});
        let got = normalize(Some(&v), &k, "loc").expect("converts");
        assert_eq!(
            got,
            json!({"lat": 51.5, "tags": ["a", "1"], "at": 1_704_067_200_000_000_i64, "m": {"x": 7}})
        );
        // JSON text (a CSV cell) is read as JSON.
        let text = Value::String(v.to_string());
        assert_eq!(normalize(Some(&text), &k, "loc"), Ok(got));
        let bad = json!({"lat": "north"});
        let err = normalize(Some(&bad), &k, "loc").expect_err("bad leaf");
        assert!(
            err.starts_with("field loc.lat: \"north\" is not a number"),
            "{err}"
        );
        let err = normalize(Some(&json!([1])), &kind("list<int>"), "u").map(|_| ());
        assert_eq!(err, Ok(()));
        let err = normalize(Some(&json!({"a": 1})), &kind("list<int>"), "u").expect_err("object");
        assert!(err.contains("is not a list (list<int>)"), "{err}");
        let err = normalize(Some(&json!(["x"])), &kind("list<int>"), "u").expect_err("leaf");
        assert!(err.starts_with("field u[0]:"), "{err}");
    }

    #[test]
    fn decimals_inside_keep_their_scale() {
        assert_eq!(decimal_text(-1999, 2), "-19.99");
        assert_eq!(decimal_text(5, 3), "0.005");
        assert_eq!(decimal_text(42, 0), "42");
        let k = kind("list<decimal(6, 2)>");
        assert_eq!(
            normalize(Some(&json!(["1.5", 2, "-0.25"])), &k, "p"),
            Ok(json!(["1.50", "2.00", "-0.25"]))
        );
    }

    #[test]
    fn unknown_struct_keys_are_found_at_any_depth() {
        let k = kind("list<struct<id: int, unit: struct<mw: double>>>");
        let v =
            json!([{"id": 1, "unit": {"mw": 2.0}}, {"id": 2, "unit": {"mw": 1.0, "fuel": "gas"}}]);
        assert_eq!(
            unknown_key(&v, &k, "units"),
            Some(("units[1].unit.fuel".to_string(), json!("gas")))
        );
        assert_eq!(unknown_key(&json!([{"id": 1}]), &k, "units"), None);
    }

    #[test]
    fn arrays_have_the_fields_type() {
        let k = kind("struct<lat: double, tags: list<string>, d: date>");
        let schema = crate::table::schema::arrow_schema(
            &iceberg::spec::Schema::builder()
                .with_fields(crate::table::schema::number_all_nested(
                    vec![Arc::new(iceberg::spec::NestedField::optional(
                        1,
                        "loc",
                        crate::table::schema::iceberg_type(&k),
                    ))],
                    &mut 2,
                ))
                .build()
                .expect("schema"),
        )
        .expect("arrow");
        let field = Arc::clone(&schema.fields()[0]);
        let values = vec![
            normalize(
                Some(&json!({"lat": 1.5, "tags": ["a"], "d": "2024-03-31"})),
                &k,
                "loc",
            )
            .expect("ok"),
            Value::Null,
        ];
        let array = column(&field, values).expect("array");
        assert_eq!(array.data_type(), field.data_type());
        assert_eq!(array.len(), 2);
        assert!(array.is_null(1));
        let shown = arrow_cast::display::ArrayFormatter::try_new(
            array.as_ref(),
            &arrow_cast::display::FormatOptions::default(),
        )
        .expect("formatter")
        .value(0)
        .to_string();
        assert_eq!(shown, "{lat: 1.5, tags: [a], d: 2024-03-31}");
    }
}
