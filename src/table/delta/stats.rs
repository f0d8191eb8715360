//! Delta file statistics (`add.stats`): the row count, and per column the
//! null count and, where Delta readers can use them, the minimum and
//! maximum, taken from the Parquet footer a file was written with.
//!
//! Readers prune files with these bounds, so a bound is only written when
//! it is one: strings longer than [`STRING_PREFIX`] characters keep a
//! prefix as their minimum and have no maximum, binary and boolean columns
//! have null counts only, and a column with a row group lacking
//! statistics has no bounds at all.

use arrow_schema::{DataType, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// Columns given statistics: Delta's default `dataSkippingNumIndexedCols`.
const INDEXED_COLUMNS: usize = 32;
/// Characters of a string kept as a bound.
const STRING_PREFIX: usize = 32;

/// One value of a bound, comparable within its column.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The `stats` JSON of a file with `schema`'s columns (as written, without
/// partition columns) and footer `meta`.
pub fn json(schema: &Schema, meta: &ParquetMetaData) -> String {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for (i, field) in schema.fields().iter().enumerate().take(INDEXED_COLUMNS) {
        let mut null_count = Some(0u64);
        let mut lo: Option<Bound> = None;
        let mut hi: Option<Bound> = None;
        let mut bounded = true;
        for rg in meta.row_groups() {
            let Some(stats) = rg.columns().get(i).and_then(|c| c.statistics()) else {
                null_count = None;
                bounded = false;
                continue;
            };
            null_count = null_count.zip(stats.null_count_opt()).map(|(a, b)| a + b);
            let all_null = stats.null_count_opt() == Some(rg.num_rows() as u64);
            match bounds(stats) {
                Some((l, h)) => {
                    if lo.as_ref().is_none_or(|x| l < *x) {
                        lo = Some(l);
                    }
                    if hi.as_ref().is_none_or(|x| h > *x) {
                        hi = Some(h);
                    }
                }
                // A row group of nulls has no bounds and needs none.
                None if all_null => {}
                None => bounded = false,
            }
        }
        let name = field.name().clone();
        // A required column has no nulls, whatever its footer says.
        if !field.is_nullable() {
            null_count = Some(0);
        }
        if let Some(n) = null_count {
            nulls.insert(name.clone(), json!(n));
        }
        if !bounded {
            continue;
        }
        if let Some(v) = lo.and_then(|b| render(field.data_type(), b, false)) {
            min.insert(name.clone(), v);
        }
        if let Some(v) = hi.and_then(|b| render(field.data_type(), b, true)) {
            max.insert(name, v);
        }
    }
    json!({
        "numRecords": meta.file_metadata().num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
    .to_string()
}

/// A row group's exact minimum and maximum, in a comparable form.
fn bounds(stats: &Statistics) -> Option<(Bound, Bound)> {
    let pair = |l: Option<Bound>, h: Option<Bound>| l.zip(h);
    match stats {
        Statistics::Int32(s) => pair(
            s.min_opt().map(|v| Bound::Int(i64::from(*v))),
            s.max_opt().map(|v| Bound::Int(i64::from(*v))),
        ),
        Statistics::Int64(s) => pair(
            s.min_opt().map(|v| Bound::Int(*v)),
            s.max_opt().map(|v| Bound::Int(*v)),
        ),
        Statistics::Float(s) => pair(
            s.min_opt().map(|v| Bound::Float(f64::from(*v))),
            s.max_opt().map(|v| Bound::Float(f64::from(*v))),
        ),
        Statistics::Double(s) => pair(
            s.min_opt().map(|v| Bound::Float(*v)),
            s.max_opt().map(|v| Bound::Float(*v)),
        ),
        // A truncated maximum is no bound to compare others with.
        Statistics::ByteArray(s) if s.max_is_exact() => {
            let text = |v: &parquet::data_type::ByteArray| {
                std::str::from_utf8(v.data())
                    .ok()
                    .map(|t| Bound::Text(t.to_string()))
            };
            pair(s.min_opt().and_then(text), s.max_opt().and_then(text))
        }
        _ => None,
    }
}

/// A bound as Delta writes it for a column of `data_type`; `None` where no
/// true bound can be written.
fn render(data_type: &DataType, bound: Bound, is_max: bool) -> Option<Value> {
    match (data_type, bound) {
        (DataType::Int32 | DataType::Int64, Bound::Int(v)) => Some(json!(v)),
        (DataType::Float32 | DataType::Float64, Bound::Float(v)) if v.is_finite() => Some(json!(v)),
        (DataType::Date32, Bound::Int(v)) => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
            let day = epoch.checked_add_signed(chrono::Duration::days(v))?;
            Some(json!(day.format("%Y-%m-%d").to_string()))
        }
        (DataType::Timestamp(TimeUnit::Microsecond, _), Bound::Int(v)) => {
            let t = DateTime::from_timestamp_micros(v)?;
            Some(json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
        }
        (DataType::Utf8 | DataType::LargeUtf8, Bound::Text(s)) => {
            if s.chars().count() <= STRING_PREFIX {
                Some(json!(s))
            } else if is_max {
                None
            } else {
                Some(json!(s.chars().take(STRING_PREFIX).collect::<String>()))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Float64Array, Int32Array, RecordBatch,
        StringArray, TimestampMicrosecondArray,
    };
    use arrow_schema::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;

    fn footer(batches: &[RecordBatch], rows_per_group: usize) -> ParquetMetaData {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows_per_group))
            .build();
        let mut w =
            ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props)).expect("test data");
        for b in batches {
            w.write(b).expect("test data");
        }
        w.close().expect("test data")
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int32, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("h", DataType::Binary, false),
        ]))
    }

    #[test]
    fn bounds_span_row_groups_and_nulls_add_up() {
        let long = "x".repeat(40);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_711_756_800_000_001,
                    1_711_756_800_000_000,
                    1_711_843_199_999_999,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Int32Array::from(vec![Some(5), None, Some(-3)])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
            Arc::new(StringArray::from(vec![
                Some("b"),
                Some(long.as_str()),
                Some("a"),
            ])),
            Arc::new(Date32Array::from(vec![None, None, None])),
            Arc::new(BooleanArray::from(vec![true, false, true])),
            Arc::new(BinaryArray::from(vec![&b"1"[..], b"2", b"3"])),
        ];
        let batch = RecordBatch::try_new(schema(), columns).expect("test data");
        let meta = footer(&[batch], 2);
        assert_eq!(meta.num_row_groups(), 2);
        let stats: Value = serde_json::from_str(&json(&schema(), &meta)).expect("test data");
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["ts"], "2024-03-30T00:00:00.000000Z");
        assert_eq!(stats["maxValues"]["ts"], "2024-03-30T23:59:59.999999Z");
        assert_eq!(stats["minValues"]["n"], -3);
        assert_eq!(stats["maxValues"]["n"], 5);
        assert_eq!(stats["nullCount"]["n"], 1);
        assert_eq!(stats["minValues"]["x"], 1.5);
        assert_eq!(stats["nullCount"]["x"], 1);
        // The long string's prefix is a minimum; no maximum is written
        // since "x..." is longer than the kept prefix.
        assert_eq!(stats["minValues"]["s"], "a");
        assert!(stats["maxValues"].get("s").is_none());
        // All nulls: a null count and no bounds.
        assert_eq!(stats["nullCount"]["d"], 3);
        assert!(stats["minValues"].get("d").is_none());
        assert!(stats["minValues"].get("b").is_none());
        assert!(stats["minValues"].get("h").is_none());
        assert_eq!(stats["nullCount"]["h"], 0);
    }

    #[test]
    fn a_long_minimum_keeps_its_prefix() {
        let long = format!("{}{}", "a".repeat(STRING_PREFIX), "zzz");
        let s = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            s.clone(),
            vec![Arc::new(StringArray::from(vec![long.as_str(), "b"])) as ArrayRef],
        )
        .expect("test data");
        let stats: Value =
            serde_json::from_str(&json(&s, &footer(&[batch], 10))).expect("test data");
        assert_eq!(stats["minValues"]["s"], "a".repeat(STRING_PREFIX));
        assert_eq!(stats["maxValues"]["s"], "b");
    }
}
