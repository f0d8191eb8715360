//! The columnar path for sources that arrive as Arrow batches (Parquet):
//! columns are cast whole to the table's types and the event time is
//! computed per column, so a row costs a few array operations instead of a
//! trip through JSON values. Row-level outcomes stay exact: a value that
//! does not cast, a missing required value or a bad event time rejects just
//! that row, with the same reasons as the row path.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, TimeUnit};
use arrow_select::filter::filter_record_batch;

use super::convert::{BatchBuilder, ColumnSource};
use crate::error::{Error, Result};
use crate::event_time::{self, EpochUnit, Micros, PeriodClock};
use crate::pipeline::{ColumnType, EventTimeConfig};

/// What a source batch became.
#[derive(Debug)]
pub struct Converted {
    /// The kept rows in the table's schema (None when no row was kept).
    pub batch: Option<RecordBatch>,
    /// Rejected rows: (row index in the source batch, reason).
    pub rejected: Vec<(usize, String)>,
    /// Rows whose day lies outside the window.
    pub outside: u64,
}

const UTC: &str = "+00:00";

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// Casts a whole column; values that do not convert become null (the
/// callers compare null masks to find them).
fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    cast_with_options(array, to, &CastOptions::default()).map_err(storage)
}

fn target_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int => DataType::Int32,
        ColumnType::Long => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
    }
}

/// One text value of a column, for reject reasons.
fn show(array: &dyn Array, row: usize) -> String {
    ArrayFormatter::try_new(array, &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Event times of a batch: `Ok(micros)` or the reject reason per row.
fn event_times(
    config: &EventTimeConfig,
    batch: &RecordBatch,
) -> Result<Vec<std::result::Result<Micros, String>>> {
    let n = batch.num_rows();
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Source(format!("the source has no event-time column {name:?}")))
    };
    let missing = |name: &str| format!("event time: event-time field {name} is missing");
    let mut out = Vec::with_capacity(n);
    match config {
        EventTimeConfig::Offset { column: name } => {
            let a = column(name)?;
            match a.data_type() {
                DataType::Timestamp(_, Some(_)) => {
                    let ts = cast(
                        &a,
                        &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                    )?;
                    let ts = ts.as_primitive::<TimestampMicrosecondType>();
                    out.extend((0..n).map(|i| {
                        if ts.is_valid(i) {
                            Ok(ts.value(i))
                        } else {
                            Err(missing(name))
                        }
                    }));
                }
                DataType::Timestamp(_, None) => {
                    return Err(Error::Config(format!(
                        "event-time column {name} holds timestamps without a time zone: use kind = \"local\" with a zone"
                    )));
                }
                _ => {
                    let s = cast(&a, &DataType::Utf8)?;
                    let s = s.as_string::<i32>();
                    out.extend((0..n).map(|i| {
                        if s.is_null(i) {
                            return Err(missing(name));
                        }
                        event_time::parse_with_offset(s.value(i))
                            .map_err(|e| format!("event time: {e}"))
                    }));
                }
            }
        }
        EventTimeConfig::Local {
            column: name,
            zone,
            format,
        } => {
            let a = column(name)?;
            if let DataType::Timestamp(_, None) = a.data_type() {
                let ts = cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let ts = ts.as_primitive::<TimestampMicrosecondType>();
                out.extend((0..n).map(|i| {
                    if ts.is_null(i) {
                        return Err(missing(name));
                    }
                    let naive = chrono::DateTime::from_timestamp_micros(ts.value(i))
                        .map(|t| t.naive_utc())
                        .ok_or_else(|| "event time: out of range".to_string())?;
                    event_time::local_to_utc(naive, zone.0).map_err(|e| format!("event time: {e}"))
                }));
            } else {
                let s = cast(&a, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                out.extend((0..n).map(|i| {
                    if s.is_null(i) {
                        return Err(missing(name));
                    }
                    event_time::parse_naive(s.value(i), format.as_deref())
                        .and_then(|t| event_time::local_to_utc(t, zone.0))
                        .map_err(|e| format!("event time: {e}"))
                }));
            }
        }
        EventTimeConfig::EpochSeconds { column: name }
        | EventTimeConfig::EpochMillis { column: name } => {
            let unit = if matches!(config, EventTimeConfig::EpochSeconds { .. }) {
                EpochUnit::Seconds
            } else {
                EpochUnit::Millis
            };
            let a = cast(&column(name)?, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            out.extend((0..n).map(|i| {
                if a.is_null(i) {
                    return Err(missing(name));
                }
                event_time::from_epoch(a.value(i), unit).map_err(|e| format!("event time: {e}"))
            }));
        }
        EventTimeConfig::Period {
            date_column,
            period_column,
            zone,
            minutes,
        } => {
            let dates = cast(&column(date_column)?, &DataType::Date32)?;
            let dates = dates.as_primitive::<Date32Type>();
            let periods = cast(&column(period_column)?, &DataType::Int64)?;
            let periods = periods.as_primitive::<Int64Type>();
            let clock = PeriodClock {
                zone: zone.0,
                minutes: *minutes,
            };
            out.extend((0..n).map(|i| {
                if dates.is_null(i) || periods.is_null(i) {
                    return Err(format!(
                        "event time: {date_column} or {period_column} is missing or invalid"
                    ));
                }
                let date = chrono::DateTime::UNIX_EPOCH.date_naive()
                    + chrono::Duration::days(i64::from(dates.value(i)));
                clock
                    .to_utc(date, periods.value(i))
                    .map_err(|e| format!("event time: {e}"))
            }));
        }
    }
    Ok(out)
}

impl BatchBuilder {
    /// Converts a whole source batch (see the module docs).
    pub fn convert_batch(
        &self,
        source: &RecordBatch,
        source_uri: &str,
        window: &std::ops::RangeInclusive<i32>,
    ) -> Result<Converted> {
        let n = source.num_rows();
        let fields = self.event_time_config().source_fields().join(", ");
        let times: Vec<std::result::Result<Micros, String>> =
            event_times(self.event_time_config(), source)?
                .into_iter()
                .map(|t| {
                    t.map_err(|e| e.replacen("event time:", &format!("event time ({fields}):"), 1))
                })
                .collect();
        let mut rejected: Vec<Option<String>> =
            times.iter().map(|t| t.as_ref().err().cloned()).collect();
        let mut keep = vec![true; n];
        let mut outside = 0u64;
        for (i, t) in times.iter().enumerate() {
            match t {
                Err(_) => keep[i] = false,
                Ok(ts) if !window.contains(&super::writer::day_of(*ts)) => {
                    keep[i] = false;
                    outside += 1;
                }
                Ok(_) => {}
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources().len());
        for (source_kind, field) in self.sources().iter().zip(self.schema().fields()) {
            let column: ArrayRef = match source_kind {
                ColumnSource::EventTime => Arc::new(
                    TimestampMicrosecondArray::from(
                        times
                            .iter()
                            .map(|t| t.as_ref().ok().copied())
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone(UTC),
                ),
                ColumnSource::IngestTime => Arc::new(
                    TimestampMicrosecondArray::from(vec![self.ingest_time(); n]).with_timezone(UTC),
                ),
                ColumnSource::SourceUri => Arc::new(StringArray::from(vec![source_uri; n])),
                ColumnSource::Hash => Arc::new(row_hashes(source)?),
                ColumnSource::Null => arrow_array::new_null_array(field.data_type(), n),
                ColumnSource::Field {
                    name,
                    kind,
                    required,
                } => {
                    let Some(raw) = source.column_by_name(name) else {
                        if *required {
                            for (i, k) in keep.iter_mut().enumerate() {
                                if *k {
                                    *k = false;
                                    rejected[i] =
                                        Some(format!("required field {name} is missing or null"));
                                }
                            }
                        }
                        columns.push(arrow_array::new_null_array(field.data_type(), n));
                        continue;
                    };
                    let cast = cast(raw, &target_type(*kind))?;
                    for i in 0..n {
                        if !keep[i] {
                            continue;
                        }
                        if raw.is_valid(i) && cast.is_null(i) {
                            keep[i] = false;
                            rejected[i] = Some(format!(
                                "field {name}: {:?} is not {kind:?}",
                                show(raw.as_ref(), i)
                            ));
                        } else if *required && cast.is_null(i) {
                            keep[i] = false;
                            rejected[i] = Some(format!("required field {name} is missing or null"));
                        }
                    }
                    cast
                }
            };
            columns.push(column);
        }
        let kept = keep.iter().filter(|k| **k).count();
        let batch = match kept {
            0 => None,
            k if k == n => {
                Some(RecordBatch::try_new(self.schema().clone(), columns).map_err(storage)?)
            }
            _ => {
                // Rejected rows may hold nulls in required columns: filter
                // under a relaxed schema, then take the table's schema back.
                let relaxed = Arc::new(arrow_schema::Schema::new_with_metadata(
                    self.schema()
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                    self.schema().metadata().clone(),
                ));
                let all = RecordBatch::try_new(relaxed, columns).map_err(storage)?;
                let kept = filter_record_batch(&all, &BooleanArray::from(keep)).map_err(storage)?;
                Some(
                    RecordBatch::try_new(self.schema().clone(), kept.columns().to_vec())
                        .map_err(storage)?,
                )
            }
        };
        let rejected = rejected
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .collect();
        Ok(Converted {
            batch,
            rejected,
            outside,
        })
    }
}

/// XXH3-128 of each row's values (column by column, length-prefixed so
/// that ("ab","c") and ("a","bc") differ), 16 bytes each. One buffer is
/// reused for every row.
fn row_hashes(batch: &RecordBatch) -> Result<arrow_array::FixedSizeBinaryArray> {
    let columns: Vec<ValueBytes<'_>> = batch
        .columns()
        .iter()
        .map(|c| ValueBytes::new(c.as_ref()))
        .collect::<Result<_>>()?;
    let n = batch.num_rows();
    let mut hashes = Vec::with_capacity(n * 16);
    let mut buf = Vec::with_capacity(128);
    for row in 0..n {
        buf.clear();
        for c in &columns {
            c.append(row, &mut buf);
        }
        hashes.extend_from_slice(&twox_hash::XxHash3_128::oneshot(&buf).to_be_bytes());
    }
    arrow_array::FixedSizeBinaryArray::try_new(16, hashes.into(), None).map_err(storage)
}

/// Appends the bytes of one row's value to a buffer.
type AppendBytes<'a> = Box<dyn Fn(usize, &mut Vec<u8>) + 'a>;

/// A column seen as bytes per row, for hashing.
enum ValueBytes<'a> {
    Fixed(&'a dyn Array, AppendBytes<'a>),
    Text(&'a dyn Array, ArrayFormatter<'a>),
}

impl<'a> ValueBytes<'a> {
    fn new(array: &'a dyn Array) -> Result<Self> {
        macro_rules! prim {
            ($t:ty) => {{
                let a = array.as_primitive::<$t>();
                Self::Fixed(
                    array,
                    Box::new(move |i, b: &mut Vec<u8>| {
                        b.extend_from_slice(&a.value(i).to_le_bytes())
                    }),
                )
            }};
        }
        Ok(match array.data_type() {
            DataType::Int32 => prim!(Int32Type),
            DataType::Int64 => prim!(Int64Type),
            DataType::Float64 => prim!(arrow_array::types::Float64Type),
            DataType::Float32 => prim!(arrow_array::types::Float32Type),
            DataType::Date32 => prim!(Date32Type),
            DataType::Timestamp(TimeUnit::Microsecond, _) => prim!(TimestampMicrosecondType),
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                Self::Fixed(
                    array,
                    Box::new(move |i, b: &mut Vec<u8>| {
                        let v = a.value(i).as_bytes();
                        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        b.extend_from_slice(v);
                    }),
                )
            }
            // Other types hash through their text form.
            _ => Self::Text(
                array,
                ArrayFormatter::try_new(array, &FormatOptions::default()).map_err(storage)?,
            ),
        })
    }

    fn append(&self, row: usize, buf: &mut Vec<u8>) {
        match self {
            Self::Fixed(array, f) => {
                buf.push(u8::from(array.is_valid(row)));
                if array.is_valid(row) {
                    f(row, buf);
                }
            }
            Self::Text(array, f) => {
                buf.push(u8::from(array.is_valid(row)));
                if array.is_valid(row) {
                    let v = f.value(row).to_string();
                    buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    buf.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
}
