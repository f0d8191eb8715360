//! Schema drift, `schema_drift = "evolve"`: before writing, the sources are
//! scanned for fields the contract does not name; each becomes a new
//! nullable column (type inferred: JSON numbers → long or double, booleans →
//! boolean, everything else and CSV cells → string; Parquet columns keep
//! their type), added to the table by the table layer, and then written
//! like the rest.

use std::collections::{BTreeMap, HashSet};

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use serde_json::Value;

use super::convert::Record;
use super::files::Fetcher;
use super::records::{RecordSink, Unreadable};
use crate::error::{Error, Result};
use crate::pipeline::{Column, ColumnType, EVENT_TIME_COLUMN, Job};

struct Scan<'a> {
    known: &'a HashSet<String>,
    found: BTreeMap<String, ColumnType>,
}

fn widen(old: Option<ColumnType>, new: ColumnType) -> ColumnType {
    match (old, new) {
        (None, t) => t,
        (Some(a), b) if a == b => a,
        (Some(ColumnType::Long), ColumnType::Double)
        | (Some(ColumnType::Double), ColumnType::Long) => ColumnType::Double,
        _ => ColumnType::String,
    }
}

/// The column type a JSON value suggests (none for null): numbers →
/// long or double, booleans → boolean, everything else → string.
pub(super) fn json_type(value: &Value) -> Option<ColumnType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Long,
        Value::Number(_) => ColumnType::Double,
        _ => ColumnType::String,
    })
}

/// The column type a Parquet (Arrow) column is kept as: its own type,
/// nested ones included; text for what the contract cannot name.
pub(super) fn arrow_type(ty: &DataType) -> ColumnType {
    match ty {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            ColumnType::List(Box::new(arrow_type(f.data_type())))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv)
                if kv.len() == 2
                    && matches!(kv[0].data_type(), DataType::Utf8 | DataType::LargeUtf8) =>
            {
                ColumnType::Map(Box::new(arrow_type(kv[1].data_type())))
            }
            _ => ColumnType::String,
        },
        DataType::Struct(fields) => ColumnType::Struct(
            fields
                .iter()
                .map(|f| crate::pipeline::StructField {
                    name: f.name().clone(),
                    kind: arrow_type(f.data_type()),
                })
                .collect(),
        ),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => ColumnType::Int,
        DataType::Int64 => ColumnType::Long,
        DataType::Float32 => ColumnType::Float,
        DataType::Float64 => ColumnType::Double,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(_, Some(_)) => ColumnType::Timestamptz,
        DataType::Decimal128(precision, scale) if *scale >= 0 => ColumnType::Decimal {
            precision: *precision,
            scale: scale.unsigned_abs(),
        },
        _ => ColumnType::String,
    }
}

/// The job's column line for an unknown source field, as the error about
/// it suggests: `{ name = "x", type = "long" }`.
pub(super) fn column_line(field: &str, kind: Option<ColumnType>) -> String {
    let ty = kind.unwrap_or(ColumnType::String);
    format!("{{ name = {}, type = \"{ty}\" }}", toml_string(field))
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

impl Scan<'_> {
    fn see(&mut self, name: &str, kind: ColumnType) {
        if !self.known.contains(name) {
            let widened = widen(self.found.get(name).cloned(), kind);
            self.found.insert(name.to_string(), widened);
        }
    }
}

impl RecordSink for Scan<'_> {
    fn record(&mut self, record: Record) -> Result<()> {
        for (k, v) in &record.fields {
            if let Some(kind) = json_type(v) {
                self.see(k, kind);
            }
        }
        Ok(())
    }

    fn batch(&mut self, batch: RecordBatch, _first: u64) -> Result<()> {
        for f in batch.schema().fields() {
            self.see(f.name(), arrow_type(f.data_type()));
        }
        Ok(())
    }

    fn unreadable(&mut self, _bad: Unreadable) {}
}

/// Source fields of `files` that `job` does not know, with inferred types.
pub fn scan_unknown(
    job: &Job,
    units: &[super::Unit],
    fetcher: &Fetcher,
) -> Result<BTreeMap<String, ColumnType>> {
    let known = job.source_fields();
    let mut scan = Scan {
        known: &known,
        found: BTreeMap::new(),
    };
    let runtime = tokio::runtime::Handle::current();
    for unit in units {
        let (path, _temp) = fetcher.materialize(&unit.file, &runtime)?;
        super::reading::read_unit(job, unit, &path, &mut scan)?;
    }
    for name in scan.found.keys() {
        if name == EVENT_TIME_COLUMN || name.starts_with('_') || name.contains(['.', '/']) {
            return Err(Error::Source(format!(
                "source field {name:?} cannot become a column (reserved or invalid name); map it in the job's columns"
            )));
        }
    }
    Ok(scan.found)
}

/// Adds the new source fields to the job's columns (nullable); the table
/// layer adds them to the table.
pub fn adopt(job: &mut Job, new: &BTreeMap<String, ColumnType>) {
    for (name, kind) in new {
        job.columns.push(Column {
            name: name.clone(),
            kind: kind.clone(),
            required: false,
            from: None,
        });
    }
}
