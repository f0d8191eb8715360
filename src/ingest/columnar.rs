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

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage(e.to_string()).caused_by(e)
}

/// Casts a whole column; values that do not convert become null (the
/// callers compare null masks to find them).
fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    cast_with_options(array, to, &CastOptions::default()).map_err(storage)
}

/// The Arrow type a primitive column is cast to (a nested column is cast
/// to the table's own type).
fn target_type(kind: &ColumnType, table: &DataType) -> DataType {
    match kind {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int => DataType::Int32,
        ColumnType::Long => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        ColumnType::Decimal { precision, scale } => {
            DataType::Decimal128(*precision, i8::try_from(*scale).unwrap_or(i8::MAX))
        }
        ColumnType::List(_) | ColumnType::Map(_) | ColumnType::Struct(_) => table.clone(),
    }
}

/// One text value of a column, for reject reasons.
fn show(array: &dyn Array, row: usize) -> String {
    ArrayFormatter::try_new(array, &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".into())
}

/// One row's event time, or why it has none.
type RowTime = std::result::Result<Micros, String>;

/// The reject reason of a row without a value in event-time field `name`.
fn missing(name: &str) -> String {
    format!("event time: event-time field {name} is missing")
}

/// `column` of `batch`, or the error of a source without it.
fn event_column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| Error::Source(format!("the source has no event-time column {name:?}")))
}

/// Event times of a batch: `Ok(micros)` or the reject reason per row.
fn event_times(config: &EventTimeConfig, batch: &RecordBatch) -> Result<Vec<RowTime>> {
    match config {
        EventTimeConfig::Offset { column: name } => offset_times(&event_column(batch, name)?, name),
        EventTimeConfig::Local {
            column: name,
            zone,
            format,
        } => local_times(&event_column(batch, name)?, name, zone.0, format.as_deref()),
        EventTimeConfig::EpochSeconds { column: name } => {
            epoch_times(&event_column(batch, name)?, name, EpochUnit::Seconds)
        }
        EventTimeConfig::EpochMillis { column: name } => {
            epoch_times(&event_column(batch, name)?, name, EpochUnit::Millis)
        }
        EventTimeConfig::Date { column: name } => date_times(&event_column(batch, name)?, name),
        EventTimeConfig::Period {
            date_column,
            period_column,
            zone,
            minutes,
        } => {
            let clock = PeriodClock {
                zone: zone.0,
                minutes: *minutes,
            };
            period_times(batch, date_column, period_column, &clock)
        }
        // Reference data: every row at the epoch, a stand-in no table
        // column holds (the sink takes every day).
        EventTimeConfig::Absent => Ok(vec![Ok(0); batch.num_rows()]),
    }
}

/// `kind = "offset"`: zoned timestamps as they are, anything else as text
/// with an offset; timestamps without a zone are a configuration error.
fn offset_times(a: &ArrayRef, name: &str) -> Result<Vec<RowTime>> {
    let n = a.len();
    match a.data_type() {
        DataType::Timestamp(_, Some(_)) => {
            let ts = cast(
                a,
                &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            )?;
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            Ok((0..n)
                .map(|i| {
                    if ts.is_valid(i) {
                        Ok(ts.value(i))
                    } else {
                        Err(missing(name))
                    }
                })
                .collect())
        }
        DataType::Timestamp(_, None) => Err(Error::Config(format!(
            "event-time column {name} holds timestamps without a time zone: use kind = \"local\" with a zone"
        ))),
        _ => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            Ok((0..n)
                .map(|i| {
                    if s.is_null(i) {
                        return Err(missing(name));
                    }
                    event_time::parse_with_offset(s.value(i))
                        .map_err(|e| format!("event time: {e}"))
                })
                .collect())
        }
    }
}

/// `kind = "local"`: zoneless timestamps, or text in `format`, read as
/// wall-clock time in `zone`.
fn local_times(
    a: &ArrayRef,
    name: &str,
    zone: chrono_tz::Tz,
    format: Option<&str>,
) -> Result<Vec<RowTime>> {
    let n = a.len();
    if let DataType::Timestamp(_, None) = a.data_type() {
        let ts = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        return Ok((0..n)
            .map(|i| {
                if ts.is_null(i) {
                    return Err(missing(name));
                }
                let naive = chrono::DateTime::from_timestamp_micros(ts.value(i))
                    .map(|t| t.naive_utc())
                    .ok_or_else(|| "event time: out of range".to_string())?;
                event_time::local_to_utc(naive, zone).map_err(|e| format!("event time: {e}"))
            })
            .collect());
    }
    let s = cast(a, &DataType::Utf8)?;
    let s = s.as_string::<i32>();
    Ok((0..n)
        .map(|i| {
            if s.is_null(i) {
                return Err(missing(name));
            }
            event_time::parse_naive(s.value(i), format)
                .and_then(|t| event_time::local_to_utc(t, zone))
                .map_err(|e| format!("event time: {e}"))
        })
        .collect())
}

/// `kind = "epoch_seconds"` / `"epoch_millis"`: integers since 1970.
fn epoch_times(a: &ArrayRef, name: &str, unit: EpochUnit) -> Result<Vec<RowTime>> {
    let a = cast(a, &DataType::Int64)?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return Err(missing(name));
            }
            event_time::from_epoch(a.value(i), unit).map_err(|e| format!("event time: {e}"))
        })
        .collect())
}

/// `kind = "date"`: the start of each UTC date.
fn date_times(a: &ArrayRef, name: &str) -> Result<Vec<RowTime>> {
    let dates = cast(a, &DataType::Date32)?;
    let dates = dates.as_primitive::<Date32Type>();
    Ok((0..dates.len())
        .map(|i| {
            if dates.is_null(i) {
                return Err(format!("event time: {name} is missing or not a date"));
            }
            Ok(i64::from(dates.value(i)) * crate::table::days::MICROS_PER_DAY)
        })
        .collect())
}

/// `kind = "period"`: a local date and the numbered period of its day.
fn period_times(
    batch: &RecordBatch,
    date_column: &str,
    period_column: &str,
    clock: &PeriodClock,
) -> Result<Vec<RowTime>> {
    let dates = cast(&event_column(batch, date_column)?, &DataType::Date32)?;
    let dates = dates.as_primitive::<Date32Type>();
    let periods = cast(&event_column(batch, period_column)?, &DataType::Int64)?;
    let periods = periods.as_primitive::<Int64Type>();
    Ok((0..dates.len())
        .map(|i| {
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
        })
        .collect())
}

/// Which rows of a source batch are kept, and why the others were not.
struct RowFate {
    /// Per row: still kept.
    keep: Vec<bool>,
    /// Per row: the reject reason, when rejected.
    rejected: Vec<Option<String>>,
    /// Rows whose day lies outside the window.
    outside: u64,
}

impl RowFate {
    /// Rows with an event time in `window` are kept; the others are
    /// rejected (no event time) or counted as outside.
    fn of_times(times: &[RowTime], window: &std::ops::RangeInclusive<i32>) -> Self {
        let mut fate = Self {
            keep: vec![true; times.len()],
            rejected: times.iter().map(|t| t.as_ref().err().cloned()).collect(),
            outside: 0,
        };
        for (i, t) in times.iter().enumerate() {
            match t {
                Err(_) => fate.keep[i] = false,
                Ok(ts) if !window.contains(&crate::table::days::day_of(*ts)) => {
                    fate.keep[i] = false;
                    fate.outside += 1;
                }
                Ok(_) => {}
            }
        }
        fate
    }

    /// Rejects row `i` with `reason`.
    fn reject(&mut self, i: usize, reason: String) {
        self.keep[i] = false;
        self.rejected[i] = Some(reason);
    }

    /// Field `name` of `source` cast to `kind` (a null column of
    /// `data_type` when the source lacks it). Kept rows whose value does
    /// not convert, or that lack a `required` value, are rejected.
    fn field_column(
        &mut self,
        source: &RecordBatch,
        (name, kind, required): (&str, &ColumnType, bool),
        data_type: &DataType,
    ) -> Result<ArrayRef> {
        let Some(raw) = source.column_by_name(name) else {
            if required {
                for i in 0..self.keep.len() {
                    if self.keep[i] {
                        self.reject(i, format!("required field {name} is missing or null"));
                    }
                }
            }
            return Ok(arrow_array::new_null_array(data_type, source.num_rows()));
        };
        let cast = if kind.is_nested() {
            // A nested value that does not convert would become a null
            // somewhere inside the row, not a null row: refuse instead.
            let strict = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            cast_with_options(raw, data_type, &strict).map_err(|e| {
                Error::Source(format!(
                    "field {name}: the source's {} does not convert to the column's {kind}: {e}",
                    raw.data_type()
                ))
                .caused_by(e)
            })?
        } else {
            cast(raw, &target_type(kind, data_type))?
        };
        // Without nulls after the cast, every value converted and every
        // required value is there.
        if cast.null_count() == 0 {
            return Ok(cast);
        }
        for i in 0..self.keep.len() {
            if !self.keep[i] {
                continue;
            }
            if raw.is_valid(i) && cast.is_null(i) {
                let shown = show(raw.as_ref(), i);
                self.reject(i, format!("field {name}: {shown:?} is not {kind}"));
            } else if required && cast.is_null(i) {
                self.reject(i, format!("required field {name} is missing or null"));
            }
        }
        Ok(cast)
    }
}

impl BatchBuilder {
    /// Converts a whole source batch (see the module docs).
    pub fn convert_batch(
        &self,
        source: &RecordBatch,
        source_uri: &str,
        window: &std::ops::RangeInclusive<i32>,
    ) -> Result<Converted> {
        let times = self.batch_times(source)?;
        let mut fate = RowFate::of_times(&times, window);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources().len());
        for (kind, field) in self.sources().iter().zip(self.schema().fields()) {
            columns.push(self.column(
                kind,
                field.data_type(),
                (source, source_uri),
                &times,
                &mut fate,
            )?);
        }
        let RowFate {
            keep,
            rejected,
            outside,
        } = fate;
        let rejected = rejected
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .collect();
        Ok(Converted {
            batch: self.kept_batch(columns, keep)?,
            rejected,
            outside,
        })
    }

    /// The event times of `source`, reject reasons naming the event-time
    /// fields.
    fn batch_times(&self, source: &RecordBatch) -> Result<Vec<RowTime>> {
        let fields = self.event_time_config().source_fields().join(", ");
        Ok(event_times(self.event_time_config(), source)?
            .into_iter()
            .map(|t| {
                t.map_err(|e| e.replacen("event time:", &format!("event time ({fields}):"), 1))
            })
            .collect())
    }

    /// One table column of `data_type` for the rows of `source` (read from
    /// `source_uri`), rejecting the rows whose field does not convert.
    fn column(
        &self,
        kind: &ColumnSource,
        data_type: &DataType,
        (source, source_uri): (&RecordBatch, &str),
        times: &[RowTime],
        fate: &mut RowFate,
    ) -> Result<ArrayRef> {
        let n = source.num_rows();
        Ok(match kind {
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
            ColumnSource::SourceUri => Arc::new(repeated(source_uri, n)?),
            ColumnSource::Hash => Arc::new(row_hashes(source)?),
            ColumnSource::Null => arrow_array::new_null_array(data_type, n),
            ColumnSource::Field {
                name,
                kind,
                required,
                ..
            } => fate.field_column(source, (name, kind, *required), data_type)?,
        })
    }

    /// The batch of the kept rows (`None` when none is), in the table's
    /// schema.
    fn kept_batch(&self, columns: Vec<ArrayRef>, keep: Vec<bool>) -> Result<Option<RecordBatch>> {
        let kept = keep.iter().filter(|k| **k).count();
        if kept == 0 {
            return Ok(None);
        }
        if kept == keep.len() {
            return RecordBatch::try_new(self.schema().clone(), columns)
                .map(Some)
                .map_err(storage);
        }
        // Rejected rows may hold nulls in required columns: filter under a
        // relaxed schema, then take the table's schema back.
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
        RecordBatch::try_new(self.schema().clone(), kept.columns().to_vec())
            .map(Some)
            .map_err(storage)
    }
}

/// `value` `n` times, built with one copy of the bytes.
fn repeated(value: &str, n: usize) -> Result<StringArray> {
    let len = i32::try_from(value.len())
        .ok()
        .filter(|l| {
            l.checked_mul(i32::try_from(n).unwrap_or(i32::MAX))
                .is_some()
        })
        .ok_or_else(|| Error::Storage(format!("source URI too long for {n} rows")))?;
    let offsets = arrow_buffer::OffsetBuffer::new((0..=n as i32).map(|i| i * len).collect());
    let values = arrow_buffer::Buffer::from(value.repeat(n).into_bytes());
    StringArray::try_new(offsets, values, None).map_err(storage)
}

/// XXH3-128 of each row's values (column by column, each value a validity
/// byte then its bytes, strings length-prefixed so that ("ab","c") and
/// ("a","bc") differ), 16 bytes each.
///
/// The row images are laid out column by column into one buffer (first
/// the length of every row, then each column's values into every row's
/// slot), so each column is one tight loop instead of a call per cell.
fn row_hashes(batch: &RecordBatch) -> Result<arrow_array::FixedSizeBinaryArray> {
    let n = batch.num_rows();
    let columns: Vec<RowBytes<'_>> = batch
        .columns()
        .iter()
        .map(|c| RowBytes::new(c.as_ref()))
        .collect::<Result<_>>()?;
    let mut ends = vec![0usize; n];
    for c in &columns {
        c.add_lengths(&mut ends);
    }
    let mut total = 0usize;
    for e in ends.iter_mut() {
        total += *e;
        *e = total;
    }
    let mut buf = vec![0u8; total];
    // Each row's write position, starting at its slot.
    let mut at: Vec<usize> = std::iter::once(0)
        .chain(ends.iter().copied().take(n.saturating_sub(1)))
        .collect();
    for c in &columns {
        c.write(&mut buf, &mut at);
    }
    let mut hashes = Vec::with_capacity(n * 16);
    let mut start = 0usize;
    for end in ends {
        hashes.extend_from_slice(&twox_hash::XxHash3_128::oneshot(&buf[start..end]).to_be_bytes());
        start = end;
    }
    arrow_array::FixedSizeBinaryArray::try_new(16, hashes.into(), None).map_err(storage)
}

/// A column's values as the bytes hashed for each row.
enum RowBytes<'a> {
    /// Fixed-width little-endian values.
    Fixed {
        nulls: Option<&'a arrow_buffer::NullBuffer>,
        width: usize,
        bytes: &'a [u8],
    },
    /// UTF-8 strings, length-prefixed.
    Utf8 {
        nulls: Option<&'a arrow_buffer::NullBuffer>,
        array: &'a StringArray,
    },
    /// Anything else, through its text form.
    Text {
        nulls: Option<&'a arrow_buffer::NullBuffer>,
        text: Vec<String>,
    },
}

impl<'a> RowBytes<'a> {
    fn new(array: &'a dyn Array) -> Result<Self> {
        let nulls = array.nulls();
        let fixed = |width: usize, bytes: &'a [u8]| Self::Fixed {
            nulls,
            width,
            bytes,
        };
        Ok(match array.data_type() {
            DataType::Int32 => fixed(
                4,
                array
                    .as_primitive::<Int32Type>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Date32 => fixed(
                4,
                array
                    .as_primitive::<Date32Type>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Float32 => fixed(
                4,
                array
                    .as_primitive::<arrow_array::types::Float32Type>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Int64 => fixed(
                8,
                array
                    .as_primitive::<Int64Type>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Float64 => fixed(
                8,
                array
                    .as_primitive::<arrow_array::types::Float64Type>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Timestamp(TimeUnit::Microsecond, _) => fixed(
                8,
                array
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .inner()
                    .as_slice(),
            ),
            DataType::Utf8 => Self::Utf8 {
                nulls,
                array: array.as_string::<i32>(),
            },
            _ => {
                let f =
                    ArrayFormatter::try_new(array, &FormatOptions::default()).map_err(storage)?;
                Self::Text {
                    nulls,
                    text: (0..array.len()).map(|i| f.value(i).to_string()).collect(),
                }
            }
        })
    }

    fn valid(nulls: Option<&arrow_buffer::NullBuffer>, row: usize) -> bool {
        nulls.is_none_or(|b| b.is_valid(row))
    }

    /// Adds each row's byte count for this column.
    fn add_lengths(&self, ends: &mut [usize]) {
        match self {
            Self::Fixed { nulls, width, .. } => {
                for (row, e) in ends.iter_mut().enumerate() {
                    *e += 1 + if Self::valid(*nulls, row) { *width } else { 0 };
                }
            }
            Self::Utf8 { nulls, array } => {
                let offsets = array.value_offsets();
                for (row, e) in ends.iter_mut().enumerate() {
                    *e += 1 + if Self::valid(*nulls, row) {
                        4 + (offsets[row + 1] - offsets[row]) as usize
                    } else {
                        0
                    };
                }
            }
            Self::Text { nulls, text } => {
                for (row, e) in ends.iter_mut().enumerate() {
                    *e += 1 + if Self::valid(*nulls, row) {
                        4 + text[row].len()
                    } else {
                        0
                    };
                }
            }
        }
    }

    /// Writes each row's bytes for this column at `at[row]`, advancing it.
    fn write(&self, buf: &mut [u8], at: &mut [usize]) {
        let rows = at.len();
        let mut put = |row: usize, valid: bool, value: &[u8], prefixed: bool| {
            let mut p = at[row];
            buf[p] = u8::from(valid);
            p += 1;
            if valid {
                if prefixed {
                    buf[p..p + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
                    p += 4;
                }
                buf[p..p + value.len()].copy_from_slice(value);
                p += value.len();
            }
            at[row] = p;
        };
        match self {
            Self::Fixed {
                nulls,
                width,
                bytes,
            } => {
                for (row, value) in bytes.chunks_exact(*width).enumerate().take(rows) {
                    put(row, Self::valid(*nulls, row), value, false);
                }
            }
            Self::Utf8 { nulls, array } => {
                for row in 0..rows {
                    let valid = Self::valid(*nulls, row);
                    let value = if valid {
                        array.value(row).as_bytes()
                    } else {
                        &[]
                    };
                    put(row, valid, value, true);
                }
            }
            Self::Text { nulls, text } => {
                for (row, t) in text.iter().enumerate() {
                    put(row, Self::valid(*nulls, row), t.as_bytes(), true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};

    use super::*;

    /// The row image as defined: per column a validity byte, then the
    /// value (little-endian; strings and text length-prefixed).
    fn reference(batch: &RecordBatch, row: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in batch.columns() {
            out.push(u8::from(c.is_valid(row)));
            if c.is_null(row) {
                continue;
            }
            match c.data_type() {
                DataType::Int32 => {
                    out.extend(c.as_primitive::<Int32Type>().value(row).to_le_bytes())
                }
                DataType::Float64 => out.extend(
                    c.as_primitive::<arrow_array::types::Float64Type>()
                        .value(row)
                        .to_le_bytes(),
                ),
                DataType::Utf8 => {
                    let v = c.as_string::<i32>().value(row).as_bytes();
                    out.extend((v.len() as u32).to_le_bytes());
                    out.extend(v);
                }
                _ => {
                    let f = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())
                        .expect("formatter");
                    let v = f.value(row).to_string();
                    out.extend((v.len() as u32).to_le_bytes());
                    out.extend(v.as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn row_hashes_hash_each_rows_image() {
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(1), None, Some(-7), Some(0)])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![
                    Some("ab"),
                    Some("c"),
                    None,
                    Some(""),
                ])),
            ),
            (
                "d",
                Arc::new(Float64Array::from(vec![1.5, 2.0, f64::NAN, -0.0])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    None,
                    Some(false),
                    Some(true),
                ])),
            ),
        ])
        .expect("batch");
        // A slice, so offsets into shared buffers are exercised too.
        for batch in [batch.clone(), batch.slice(1, 3)] {
            let hashes = row_hashes(&batch).expect("hashes");
            for row in 0..batch.num_rows() {
                let want = twox_hash::XxHash3_128::oneshot(&reference(&batch, row)).to_be_bytes();
                assert_eq!(hashes.value(row), want, "row {row}");
            }
        }
    }

    #[test]
    fn repeated_strings() {
        let a = repeated("s3://b/k.parquet", 3).expect("array");
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|v| v == Some("s3://b/k.parquet")));
        assert_eq!(repeated("x", 0).expect("empty").len(), 0);
    }
}
