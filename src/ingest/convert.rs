//! Records to typed Arrow batches, one row at a time: each value of a
//! record is converted and appended straight to its column. When one does
//! not convert, the rest of the row is filled with nulls and the row is
//! marked dead; [`BatchBuilder::finish`] leaves dead rows out. So a bad
//! record becomes a reject with its reason and never a half-written row,
//! and a good one costs no buffer of its own.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::fields::{RecordView, Scalar};
use super::flat::RowShape;
use crate::error::{Error, Result};
use crate::event_time::{self, EpochUnit, Micros, PeriodClock};
use crate::pipeline::{ColumnType, EVENT_TIME_COLUMN, EventTimeConfig, Job};

use crate::table::schema::{HASH, INGEST_TIME, SOURCE};

/// A record's field `name`: the key itself, else a path into nested
/// objects and arrays (`location.lat`, `units[0].capacity`).
pub(crate) fn lookup<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = fields.get(name) {
        return Some(v);
    }
    if !name.contains(['.', '[']) {
        return None;
    }
    let mut segments = crate::pipeline::path_segments(name).into_iter();
    walk(fields.get(segments.next()?)?, segments)
}

/// The value at `segments` (keys, or indexes into arrays) inside `node`.
pub(crate) fn walk<'a, 's>(
    mut node: &'a Value,
    segments: impl IntoIterator<Item = &'s str>,
) -> Option<&'a Value> {
    for segment in segments {
        node = match node {
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            Value::Object(map) => map.get(segment)?,
            _ => return None,
        };
    }
    Some(node)
}

/// One source record: its fields, its text as read (for rejects and the
/// hash) and where it was.
#[derive(Debug, Clone)]
pub struct Record {
    /// Field name → value (CSV cells arrive as strings).
    pub fields: Map<String, Value>,
    /// The record as read: the NDJSON line, or its JSON form.
    pub raw: String,
    /// 1-based line (NDJSON, CSV) or record number (JSON, Parquet).
    pub line: u64,
}

/// A converted value (a string borrowed from its record when it can be).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Date(i32),
    Ts(i64),
    /// A decimal's unscaled value.
    Dec(i128),
    Hash([u8; 16]),
}

/// Where a column's converted values go until the batch is finished.
enum Slot {
    /// A typed builder (every primitive column).
    Typed(Typed),
    /// A nested column: its values, decoded into one array at the end.
    Nested(arrow_schema::FieldRef, Vec<Value>),
}

/// What fills a column of the table.
#[derive(Debug, Clone)]
pub(super) enum ColumnSource {
    EventTime,
    Field {
        name: String,
        kind: ColumnType,
        required: bool,
        /// The field's slot in decoded rows (see [`RowShape`]).
        slot: Option<usize>,
    },
    IngestTime,
    SourceUri,
    Hash,
    /// A nullable table column the job does not produce.
    Null,
}

/// Builds batches of the table's Arrow schema from records.
pub struct BatchBuilder {
    schema: SchemaRef,
    sources: Vec<ColumnSource>,
    builders: Vec<Slot>,
    event_time: EventTimeConfig,
    /// The event time's source fields, each with its slot.
    event_slots: Vec<(String, Option<usize>)>,
    known_fields: HashSet<String>,
    shape: Arc<RowShape>,
    ingest_time: Micros,
    /// Rows appended, dead ones included.
    rows: usize,
    /// Rows that did not convert (indexes into the rows appended), left
    /// out of the batch.
    dead: Vec<usize>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

fn kind_of(dt: &DataType) -> Option<ColumnType> {
    Some(match dt {
        DataType::Utf8 | DataType::LargeUtf8 => ColumnType::String,
        DataType::Int32 => ColumnType::Int,
        DataType::Int64 => ColumnType::Long,
        DataType::Float32 => ColumnType::Float,
        DataType::Float64 => ColumnType::Double,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => ColumnType::Timestamptz,
        DataType::Decimal128(precision, scale) if *scale >= 0 => ColumnType::Decimal {
            precision: *precision,
            scale: scale.unsigned_abs(),
        },
        _ => return None,
    })
}

/// A primitive column's builder, by type: a cell is appended without a
/// downcast.
enum Typed {
    Str(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dec(Decimal128Builder),
    Hash(FixedSizeBinaryBuilder),
}

impl Slot {
    fn append_null(&mut self) {
        match self {
            Self::Typed(b) => b.append_null(),
            Self::Nested(_, values) => values.push(Value::Null),
        }
    }
}

impl Typed {
    fn new(dt: &DataType) -> Result<Self> {
        Ok(match dt {
            DataType::Utf8 => Self::Str(StringBuilder::new()),
            DataType::Int32 => Self::I32(Int32Builder::new()),
            DataType::Int64 => Self::I64(Int64Builder::new()),
            DataType::Float32 => Self::F32(Float32Builder::new()),
            DataType::Float64 => Self::F64(Float64Builder::new()),
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Date32 => Self::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => {
                Self::Ts(TimestampMicrosecondBuilder::new().with_timezone(tz.clone()))
            }
            DataType::FixedSizeBinary(n) => Self::Hash(FixedSizeBinaryBuilder::new(*n)),
            DataType::Decimal128(precision, scale) => Self::Dec(
                Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| {
                        Error::Config(format!("decimal({precision}, {scale}): {e}")).caused_by(e)
                    })?,
            ),
            other => {
                return Err(Error::Config(format!(
                    "floe cannot write columns of type {other}"
                )));
            }
        })
    }

    /// Appends `cell`, converted for this column's type (null otherwise).
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Self::Str(b), Cell::Str(s)) => b.append_value(s),
            (Self::I32(b), Cell::I32(v)) => b.append_value(v),
            (Self::I64(b), Cell::I64(v)) => b.append_value(v),
            (Self::F32(b), Cell::F32(v)) => b.append_value(v),
            (Self::F64(b), Cell::F64(v)) => b.append_value(v),
            (Self::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Self::Date(b), Cell::Date(v)) => b.append_value(v),
            (Self::Ts(b), Cell::Ts(v)) => b.append_value(v),
            (Self::Dec(b), Cell::Dec(v)) => b.append_value(v),
            // The builder was made with width 16, matching the value.
            (Self::Hash(b), Cell::Hash(v)) => {
                let _ = b.append_value(v);
            }
            (builder, _) => builder.append_null(),
        }
    }

    /// Appends a value that needs no conversion.
    fn append_ok(&mut self, cell: Cell<'_>) -> std::result::Result<(), String> {
        self.append(cell);
        Ok(())
    }

    /// Converts a record's field for this column (of type `kind`) and
    /// appends it, or returns why it does not convert (nothing appended).
    /// The common pairs skip the intermediate cell.
    fn append_field(
        &mut self,
        value: Option<Scalar<'_>>,
        kind: &ColumnType,
        required: bool,
        name: &str,
    ) -> std::result::Result<(), String> {
        match (&mut *self, value) {
            (Self::F64(b), Some(Scalar::Float(f))) if f.is_finite() => b.append_value(f),
            (Self::Str(b), Some(Scalar::Str(s))) => b.append_value(s),
            (Self::I64(b), Some(Scalar::Int(i))) => b.append_value(i),
            (Self::I32(b), Some(Scalar::UInt(u))) if u <= i32::MAX as u64 => {
                b.append_value(u as i32)
            }
            (Self::I64(b), Some(Scalar::UInt(u))) if u <= i64::MAX as u64 => {
                b.append_value(u as i64)
            }
            (_, value) => {
                let cell = convert_scalar(value, kind).map_err(|e| format!("field {name}: {e}"))?;
                if required && cell == Cell::Null {
                    return Err(missing_required(name));
                }
                self.append(cell);
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::I32(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::F32(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Ts(b) => b.append_null(),
            Self::Dec(b) => b.append_null(),
            Self::Hash(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Ts(b) => Arc::new(b.finish()),
            Self::Dec(b) => Arc::new(b.finish()),
            Self::Hash(b) => Arc::new(b.finish()),
        }
    }
}

impl BatchBuilder {
    /// A builder for `schema` (the table's) filled by `job`.
    pub fn new(job: &Job, schema: SchemaRef, ingest_time: Micros) -> Result<Self> {
        let known_fields = job.source_fields();
        let shape = Arc::new(RowShape::new(known_fields.iter().cloned()));
        let mut sources = Vec::new();
        let mut builders = Vec::new();
        for f in schema.fields() {
            let source = match f.name().as_str() {
                EVENT_TIME_COLUMN => ColumnSource::EventTime,
                // A version becomes current at the run's time.
                INGEST_TIME | crate::table::schema::VALID_FROM => ColumnSource::IngestTime,
                SOURCE => ColumnSource::SourceUri,
                HASH => ColumnSource::Hash,
                name => match job.columns.iter().find(|c| c.name == name) {
                    Some(c) => {
                        let same = if c.kind.is_nested() {
                            super::drift::arrow_type(f.data_type()) == c.kind
                        } else {
                            kind_of(f.data_type()).as_ref() == Some(&c.kind)
                        };
                        if !same {
                            return Err(Error::Config(format!(
                                "job {}: column {name} is {} in the table but {} in the job",
                                job.name,
                                f.data_type(),
                                c.kind
                            )));
                        }
                        ColumnSource::Field {
                            name: c.source_field().to_string(),
                            kind: c.kind.clone(),
                            required: c.required,
                            slot: shape.slot(c.source_field()),
                        }
                    }
                    None => ColumnSource::Null,
                },
            };
            sources.push(source);
            builders.push(if f.data_type().is_nested() {
                Slot::Nested(Arc::clone(f), Vec::new())
            } else {
                Slot::Typed(Typed::new(f.data_type())?)
            });
        }
        let event_slots = job
            .event_time
            .source_fields()
            .into_iter()
            .map(|f| (f.to_string(), shape.slot(f)))
            .collect();
        Ok(Self {
            schema,
            sources,
            builders,
            event_time: job.event_time.clone(),
            event_slots,
            known_fields,
            shape,
            ingest_time,
            rows: 0,
            dead: Vec::new(),
        })
    }

    /// A builder for `job`'s own table schema (tests).
    #[cfg(test)]
    pub(super) fn for_job(job: &Job, ingest_time: Micros) -> Self {
        let schema = crate::table::schema::arrow_schema(
            &crate::table::schema::table_schema(job).expect("table schema"),
        )
        .expect("arrow schema");
        Self::new(job, schema, ingest_time).expect("builder")
    }

    pub(super) fn sources(&self) -> &[ColumnSource] {
        &self.sources
    }

    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub(super) fn event_time_config(&self) -> &EventTimeConfig {
        &self.event_time
    }

    pub(super) fn ingest_time(&self) -> Micros {
        self.ingest_time
    }

    /// The fields the job reads, for rows decoded straight into them.
    pub fn shape(&self) -> Arc<RowShape> {
        Arc::clone(&self.shape)
    }

    /// Source fields the contract does not know, if any.
    pub fn unknown_field<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a String>,
    ) -> Option<&'a String> {
        fields.into_iter().find(|k| !self.known_fields.contains(*k))
    }

    /// The first (in name order) field of `record` the contract does not
    /// know, with the type its value suggests (`guess`) or string.
    pub fn unknown_field_of(
        &self,
        record: &impl RecordView,
        guess: bool,
    ) -> Option<(String, Option<ColumnType>)> {
        record.unknown_field(&self.known_fields, guess)
    }

    /// A key inside a nested column's value that the column's type does
    /// not declare: (column's source field, the key's path, its value).
    pub fn unknown_nested_key(&self, record: &impl RecordView) -> Option<(&str, String, Value)> {
        self.sources.iter().find_map(|source| match source {
            ColumnSource::Field {
                name, kind, slot, ..
            } if kind.is_nested() => record
                .field(name, *slot)
                .and_then(|v| super::nested::unknown_key(&v.to_value(), kind, name))
                .map(|(path, value)| (name.as_str(), path, value)),
            _ => None,
        })
    }

    /// Rows buffered, rejected ones included (they are left out of the
    /// batch).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The record's event time, or why it has none.
    pub fn event_time(&self, record: &impl RecordView) -> std::result::Result<Micros, String> {
        self.event_time_of(record)
    }

    /// Converts and appends a record whose event time is `ts`, or returns
    /// why it is a reject (its row is then left out of the batch).
    pub fn push(
        &mut self,
        record: &impl RecordView,
        ts: Micros,
        source_uri: &str,
    ) -> std::result::Result<(), String> {
        for (i, (source, slot)) in self.sources.iter().zip(&mut self.builders).enumerate() {
            let appended = match (source, slot) {
                (ColumnSource::EventTime, Slot::Typed(b)) => b.append_ok(Cell::Ts(ts)),
                (ColumnSource::IngestTime, Slot::Typed(b)) => {
                    b.append_ok(Cell::Ts(self.ingest_time))
                }
                (ColumnSource::SourceUri, Slot::Typed(b)) => {
                    b.append_ok(Cell::Str(Cow::Borrowed(source_uri)))
                }
                (ColumnSource::Hash, Slot::Typed(b)) => {
                    b.append_ok(Cell::Hash(hash(record.raw().as_bytes())))
                }
                (
                    ColumnSource::Field {
                        name,
                        kind,
                        required,
                        slot,
                    },
                    Slot::Typed(b),
                ) => b.append_field(record.field(name, *slot), kind, *required, name),
                (
                    ColumnSource::Field {
                        name,
                        kind,
                        required,
                        slot,
                    },
                    Slot::Nested(_, values),
                ) => {
                    let value = record.field(name, *slot).map(Scalar::to_value);
                    super::nested::normalize(value.as_deref(), kind, name).and_then(|v| {
                        if *required && v == Value::Null {
                            return Err(missing_required(name));
                        }
                        values.push(v);
                        Ok(())
                    })
                }
                (_, slot) => {
                    slot.append_null();
                    Ok(())
                }
            };
            if let Err(reason) = appended {
                // The row is dead: its other columns get nulls so every
                // column keeps one value per row.
                for slot in &mut self.builders[i..] {
                    slot.append_null();
                }
                self.dead.push(self.rows);
                self.rows += 1;
                return Err(reason);
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn event_time_of(&self, record: &impl RecordView) -> std::result::Result<Micros, String> {
        let slot_of = |name: &str| {
            self.event_slots
                .iter()
                .find(|(f, _)| f == name)
                .and_then(|(_, slot)| *slot)
        };
        let text = |name: &str| -> std::result::Result<Cow<'_, str>, String> {
            match record.field(name, slot_of(name)) {
                None | Some(Scalar::Null) => Err(format!("event-time field {name} is missing")),
                Some(Scalar::Str(s)) if event_time::trim(s).is_empty() => {
                    Err(format!("event-time field {name} is empty"))
                }
                Some(v) => Ok(v.text()),
            }
        };
        let integer = |name: &str| -> std::result::Result<i64, String> {
            let t = text(name)?;
            event_time::trim(&t)
                .parse::<i64>()
                .map_err(|_| format!("event-time field {name}: {t:?} is not an integer"))
        };
        let result = match &self.event_time {
            EventTimeConfig::Offset { column } => event_time::parse_with_offset(&text(column)?),
            EventTimeConfig::Local {
                column,
                zone,
                format,
            } => event_time::parse_naive(&text(column)?, format.as_deref())
                .and_then(|n| event_time::local_to_utc(n, zone.0)),
            EventTimeConfig::EpochSeconds { column } => {
                event_time::from_epoch(integer(column)?, EpochUnit::Seconds)
            }
            EventTimeConfig::EpochMillis { column } => {
                event_time::from_epoch(integer(column)?, EpochUnit::Millis)
            }
            EventTimeConfig::Date { column } => {
                let d = text(column)?;
                let date = parse_date(&d).map_err(|e| format!("event-time field {column}: {e}"))?;
                Ok(crate::table::days::day_start(date))
            }
            EventTimeConfig::Period {
                date_column,
                period_column,
                zone,
                minutes,
            } => {
                let d = text(date_column)?;
                let date =
                    parse_date(&d).map_err(|e| format!("event-time field {date_column}: {e}"))?;
                let clock = PeriodClock {
                    zone: zone.0,
                    minutes: *minutes,
                };
                clock.to_utc(date, integer(period_column)?)
            }
            // Reference data: a stand-in no table column holds (the sink
            // takes every day).
            EventTimeConfig::Absent => Ok(0),
        };
        result.map_err(|e| {
            format!(
                "event time ({}): {e}",
                self.event_time.source_fields().join(", ")
            )
        })
    }

    /// The buffered rows as a batch, dead rows left out (it may have no
    /// rows); the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let some_dead = !self.dead.is_empty();
        let mut columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|slot| match slot {
                Slot::Typed(builder) => Ok(builder.finish()),
                // A dead row's null is decoded too, even in a required
                // column; it is left out below.
                Slot::Nested(field, values) if some_dead => super::nested::column(
                    &Arc::new(field.as_ref().clone().with_nullable(true)),
                    std::mem::take(values),
                ),
                Slot::Nested(field, values) => super::nested::column(field, std::mem::take(values)),
            })
            .collect::<Result<_>>()?;
        if some_dead {
            let mut live = vec![true; self.rows];
            for &row in &self.dead {
                live[row] = false;
            }
            let live = BooleanArray::from(live);
            columns = columns
                .iter()
                .map(|c| arrow_select::filter::filter(c.as_ref(), &live))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| {
                    Error::Storage(format!("cannot leave rejected rows out: {e}")).caused_by(e)
                })?;
            self.dead.clear();
        }
        self.rows = 0;
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| {
            Error::Storage(format!("cannot assemble a record batch: {e}")).caused_by(e)
        })
    }
}

fn missing_required(name: &str) -> String {
    format!("required field {name} is missing or null")
}

/// The `_hash` of a record: XXH3-128 of its content, big-endian bytes.
pub(super) fn hash(raw: &[u8]) -> [u8; 16] {
    twox_hash::XxHash3_128::oneshot(raw).to_be_bytes()
}

/// A `YYYY-MM-DD` date, or the date of a timestamp written from one
/// (`2024-03-31T10:00:00Z`, `2024-03-31 10:00:00`): the date as written.
/// Anything else after the date (`2024-03-31garbage`) is not a date.
fn parse_date(text: &str) -> std::result::Result<NaiveDate, String> {
    let t = event_time::trim(text);
    let bad = || format!("{t:?} is not a date (YYYY-MM-DD, or a timestamp)");
    let date_part = t.get(..10).unwrap_or(t);
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").map_err(|_| bad())?;
    let rest = &t[date_part.len()..];
    if rest.is_empty() {
        return Ok(date);
    }
    let timestamp = rest.starts_with(['T', ' '])
        && (chrono::DateTime::parse_from_rfc3339(&t.replacen(' ', "T", 1)).is_ok()
            || [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(t, f).is_ok()));
    if timestamp { Ok(date) } else { Err(bad()) }
}

/// A primitive value of `kind` (nested types go through
/// [`super::nested::normalize`]).
pub(super) fn convert<'a>(
    value: Option<&'a Value>,
    kind: &ColumnType,
) -> std::result::Result<Cell<'a>, String> {
    convert_scalar(value.map(Scalar::of), kind)
}

/// [`convert`] of a record's field, whichever decoder read it: text is
/// read as written (a string trimmed, anything else as JSON writes it);
/// integers and floats read as such skip the text where the result is
/// the same.
pub(super) fn convert_scalar<'a>(
    value: Option<Scalar<'a>>,
    kind: &ColumnType,
) -> std::result::Result<Cell<'a>, String> {
    let value = match value {
        None | Some(Scalar::Null) => return Ok(Cell::Null),
        Some(Scalar::Str(s)) if s.is_empty() && *kind != ColumnType::String => {
            return Ok(Cell::Null);
        }
        Some(v) => v,
    };
    let as_text = || match value {
        Scalar::Str(s) => Cow::Borrowed(event_time::trim(s)),
        other => other.text(),
    };
    let bad = |what: &str| format!("{} is not {what}", truncate(&as_text()));
    Ok(match (kind, value) {
        (ColumnType::String, v) => Cell::Str(v.text()),
        (ColumnType::Int, Scalar::Int(i)) => {
            Cell::I32(i32::try_from(i).map_err(|_| bad("a 32-bit integer"))?)
        }
        (ColumnType::Int, Scalar::UInt(u)) => {
            Cell::I32(i32::try_from(u).map_err(|_| bad("a 32-bit integer"))?)
        }
        (ColumnType::Int, _) => Cell::I32(as_text().parse().map_err(|_| bad("a 32-bit integer"))?),
        (ColumnType::Long, Scalar::Int(i)) => Cell::I64(i),
        (ColumnType::Long, Scalar::UInt(u)) => {
            Cell::I64(i64::try_from(u).map_err(|_| bad("a 64-bit integer"))?)
        }
        (ColumnType::Long, _) => Cell::I64(as_text().parse().map_err(|_| bad("a 64-bit integer"))?),
        // A float read from JSON is finite, and its shortest text parses
        // back to itself.
        (ColumnType::Double, Scalar::Float(f)) if f.is_finite() => Cell::F64(f),
        // "NaN", "inf" and numbers out of range ("1e400") parse as floats
        // that are not numbers: rejects, not values.
        (ColumnType::Float, _) => Cell::F32(match as_text().parse::<f32>() {
            Ok(v) if v.is_finite() => v,
            Ok(_) => return Err(bad("a finite number")),
            Err(_) => return Err(bad("a number")),
        }),
        (ColumnType::Double, _) => Cell::F64(match as_text().parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            Ok(_) => return Err(bad("a finite number")),
            Err(_) => return Err(bad("a number")),
        }),
        (ColumnType::Boolean, Scalar::Bool(b)) => Cell::Bool(b),
        (ColumnType::Boolean, _) => Cell::Bool(match as_text().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("a boolean")),
        }),
        (ColumnType::Date, _) => {
            let d = parse_date(&as_text())?;
            let days = (d - epoch_date()).num_days();
            Cell::Date(i32::try_from(days).map_err(|_| bad("a date in range"))?)
        }
        (ColumnType::Timestamptz, _) => {
            Cell::Ts(event_time::parse_with_offset(&as_text()).map_err(|e| e.0)?)
        }
        (ColumnType::Decimal { precision, scale }, v) => {
            let text = as_text();
            // A JSON number arrives as the nearest double. Any number
            // written with up to 15 significant digits comes back exactly
            // from that double's shortest text; one with more may not (the
            // digits past the 17th are gone), so it is a reject, not a guess.
            if matches!(v, Scalar::Float(_)) && significant_digits(&text) > DOUBLE_EXACT_DIGITS {
                return Err(format!(
                    "{} is a JSON number with more significant digits than a double keeps \
                     exactly ({DOUBLE_EXACT_DIGITS}), so its decimal({precision}, {scale}) value \
                     is not known: write it as a string",
                    truncate(&text)
                ));
            }
            Cell::Dec(parse_decimal(&text, *precision, *scale)?)
        }
        (ColumnType::List(_) | ColumnType::Map(_) | ColumnType::Struct(_), _) => {
            return Err(format!("{kind} values are read as nested values"));
        }
    })
}

/// Significant digits every decimal number up to which survives a trip
/// through a double.
const DOUBLE_EXACT_DIGITS: usize = 15;

/// The significant digits of a number's text (`-0.00120e5`: 2).
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits = mantissa.bytes().filter(u8::is_ascii_digit);
    // Leading zeros are skipped; trailing ones count only once a non-zero
    // digit follows them.
    let (mut counted, mut zeros) = (0, 0);
    for d in digits.skip_while(|&d| d == b'0') {
        if d == b'0' {
            zeros += 1;
        } else {
            counted += zeros + 1;
            zeros = 0;
        }
    }
    counted
}

/// The unscaled value of decimal text (`-12.5`, `1e3`, `0.125`) with
/// `scale` digits after the point: exact, or why not (more fractional
/// digits than the scale, or more digits than the precision). A value is
/// never rounded.
fn parse_decimal(text: &str, precision: u8, scale: u8) -> std::result::Result<i128, String> {
    let bad = |why: &str| {
        format!(
            "{} is not a decimal({precision}, {scale}){why}",
            truncate(text)
        )
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (
            &text[..i],
            text[i + 1..].parse::<i32>().map_err(|_| bad(""))?,
        ),
        None => (text, 0),
    };
    let (negative, digits) = match mantissa.as_bytes().first() {
        Some(b'-') => (true, &mantissa[1..]),
        Some(b'+') => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad(""));
    }
    // All digits, and where the point goes after the exponent.
    let all: String = format!("{whole}{fraction}");
    let point = i64::try_from(whole.len()).unwrap_or(i64::MAX) + i64::from(exponent);
    let fraction_digits = i64::try_from(all.len()).unwrap_or(i64::MAX) - point;
    let shift = i64::from(scale) - fraction_digits;
    let mut unscaled: i128 = 0;
    let significant = all.trim_start_matches('0');
    let kept = if shift < 0 {
        // Fractional digits beyond the scale must be zeros.
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        if cut > all.len() {
            if significant.is_empty() {
                return Ok(0);
            }
            return Err(bad(": more decimal places than its scale"));
        }
        let (kept, dropped) = all.split_at(all.len() - cut);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(bad(": more decimal places than its scale"));
        }
        kept.to_string()
    } else {
        format!("{all}{}", "0".repeat(usize::try_from(shift).unwrap_or(0)))
    };
    let kept = kept.trim_start_matches('0');
    if kept.len() > usize::from(precision) {
        return Err(bad(": too many digits for its precision"));
    }
    for b in kept.bytes() {
        unscaled = unscaled * 10 + i128::from(b - b'0');
    }
    Ok(if negative { -unscaled } else { unscaled })
}

fn epoch_date() -> NaiveDate {
    chrono::DateTime::UNIX_EPOCH.date_naive()
}

pub(super) fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{:?}…", s.chars().take(60).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type};

    /// A rejected row leaves nothing behind, wherever its bad value is:
    /// the batch holds exactly the good rows, in order, in every column
    /// (a required nested column included).
    #[test]
    fn a_rejected_row_leaves_no_values_behind() {
        let text = r#"
[catalog]
uri = "http://127.0.0.1:1"
[[job]]
name = "j"
table = "t.j"
source = { path = "in/*.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "ts" }
columns = [
  { name = "a", type = "int", required = true },
  { name = "s", type = "string" },
  { name = "loc", type = "struct<x: double>", required = true },
  { name = "d", type = "double" },
]
"#;
        let pipeline =
            crate::pipeline::parse(text, std::path::Path::new("/tmp/p.toml")).expect("pipeline");
        let mut builder = BatchBuilder::for_job(&pipeline.jobs[0], 0);
        let lines = [
            (
                r#"{"a": 1, "s": "one", "loc": {"x": 1.5}, "d": 1.25}"#,
                true,
            ),
            // Bad in the last column.
            (
                r#"{"a": 2, "s": "two", "loc": {"x": 2.5}, "d": "x"}"#,
                false,
            ),
            (
                r#"{"a": 3, "s": "three", "loc": {"x": 3.5}, "d": 3.25}"#,
                true,
            ),
            // Bad in the first column, then a missing required nested value.
            (
                r#"{"a": "no", "s": "four", "loc": {"x": 4.5}, "d": 4.25}"#,
                false,
            ),
            (r#"{"a": 5, "s": "five", "d": 5.25}"#, false),
            (r#"{"a": 6, "s": null, "loc": {"x": 6.5}, "d": null}"#, true),
        ];
        let record = |line: &str| match serde_json::from_str(line).expect("json") {
            Value::Object(fields) => Record {
                fields,
                raw: line.into(),
                line: 1,
            },
            _ => panic!("an object"),
        };
        for (line, good) in lines {
            let pushed = builder.push(&record(line), 7, "file:///in");
            assert_eq!(pushed.is_ok(), good, "{line}");
        }
        assert_eq!(builder.len(), lines.len());
        let batch = builder.finish().expect("batch");
        assert_eq!(batch.num_rows(), 3);
        let column = |name: &str| batch.column_by_name(name).expect(name);
        let a: Vec<i32> = column("a").as_primitive::<Int32Type>().values().to_vec();
        assert_eq!(a, [1, 3, 6]);
        let s = column("s").as_string::<i32>();
        assert_eq!(
            (s.value(0), s.value(1), s.is_null(2)),
            ("one", "three", true)
        );
        let d = column("d").as_primitive::<Float64Type>();
        assert_eq!((d.value(0), d.value(1), d.is_null(2)), (1.25, 3.25, true));
        let x = column("loc")
            .as_struct()
            .column(0)
            .as_primitive::<Float64Type>();
        assert_eq!(x.values().to_vec(), [1.5, 3.5, 6.5]);
        assert_eq!(column("loc").null_count(), 0);
        assert!(builder.is_empty());
        // The next batch starts clean.
        builder
            .push(&record(lines[0].0), 7, "file:///in")
            .expect("good row");
        assert_eq!(builder.finish().expect("batch").num_rows(), 1);
    }

    #[test]
    fn dates_are_whole_dates_or_timestamps() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 31).expect("date");
        for ok in [
            "2024-03-31",
            " 2024-03-31 ",
            "2024-03-31T10:00:00Z",
            "2024-03-31T23:30:00-05:00",
            "2024-03-31 10:00:00",
            "2024-03-31T10:00:00.125",
        ] {
            assert_eq!(parse_date(ok), Ok(d), "{ok}");
        }
        for bad in [
            "2024-03-31garbage",
            "2024-03-31T",
            "2024-03-31 x",
            "2024-02-30",
            "31/03/2024",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimals_are_exact_or_rejects() {
        for (text, want) in [
            ("12.34", 1234),
            ("-12.3", -1230),
            ("+0.5", 50),
            ("7", 700),
            ("1.2e1", 1200),
            ("1250e-2", 1250),
            ("0.000", 0),
            ("12.340", 1234),
            (".5", 50),
        ] {
            assert_eq!(parse_decimal(text, 6, 2), Ok(want), "{text}");
        }
        for (text, why) in [
            ("12.345", "more decimal places"),
            ("12345.6", "too many digits"),
            ("1e5", "too many digits"),
            ("abc", "not a decimal"),
            ("1.2.3", "not a decimal"),
            ("", "not a decimal"),
            ("-", "not a decimal"),
        ] {
            let err = parse_decimal(text, 6, 2).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
        let v = Value::from(19.99);
        let kind = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(convert(Some(&v), &kind), Ok(Cell::Dec(1999)));
    }

    #[test]
    fn json_numbers_beyond_a_doubles_digits_are_not_decimals() {
        let wide = ColumnType::Decimal {
            precision: 38,
            scale: 18,
        };
        // Up to 15 significant digits: exact, whatever the scale.
        for (text, unscaled) in [
            ("123456789012.345", 123_456_789_012_345_000_000_000_000_000),
            ("0.000123456789012345", 123_456_789_012_345),
            ("-1e19", -10_i128.pow(37)),
        ] {
            let v: Value = serde_json::from_str(text).expect("json");
            assert_eq!(convert(Some(&v), &wide), Ok(Cell::Dec(unscaled)), "{text}");
        }
        // More: the double does not know them all, so a reject that says so.
        for text in [
            "1234567.12345678912",
            "0.30000000000000004",
            "-12345678901234567890",
        ] {
            let v: Value = serde_json::from_str(text).expect("json");
            let err = convert(Some(&v), &wide).expect_err(text);
            assert!(err.contains("write it as a string"), "{text}: {err}");
            // As a string, the same digits are exact.
            let s = Value::String(text.into());
            assert!(convert(Some(&s), &wide).is_ok(), "{text}");
        }
        assert_eq!(significant_digits("-0.00120e5"), 2);
        assert_eq!(significant_digits("100"), 1);
        assert_eq!(significant_digits("0"), 0);
    }

    #[test]
    fn non_finite_numbers_are_rejects() {
        for text in ["NaN", "inf", "-infinity", "1e400"] {
            let v = Value::String(text.into());
            assert!(convert(Some(&v), &ColumnType::Double).is_err(), "{text}");
            assert!(convert(Some(&v), &ColumnType::Float).is_err(), "{text}");
        }
        let v = Value::String("1e38".into());
        assert!(convert(Some(&v), &ColumnType::Float).is_ok());
        assert!(convert(Some(&Value::String("1e39".into())), &ColumnType::Float).is_err());
        assert!(convert(Some(&Value::String("2.5".into())), &ColumnType::Double).is_ok());
    }
}
