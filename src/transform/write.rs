//! A model's table shape: the columns its result is stored as (every one
//! optional, in types both formats hold) and its event-time column, which
//! partitions the table by UTC day. Writing the result is the table
//! layer's ([`crate::table::output`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use iceberg::spec::Schema;

use super::model::Model;
use crate::error::{Error, Result};

/// The type a result column is stored as: Iceberg has no unsigned, small
/// or view types, and keeps timestamps in microseconds.
fn storable(ty: &DataType) -> DataType {
    match ty {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(
            TimeUnit::Microsecond,
            tz.as_ref().map(|_| Arc::<str>::from("+00:00")),
        ),
        DataType::Dictionary(_, value) => storable(value),
        other => other.clone(),
    }
}

/// The Iceberg schema of a query's output (every column optional).
///
/// # Errors
/// A column type Iceberg cannot store, naming the model and column.
pub fn table_schema(model: &Model, output: &ArrowSchema) -> Result<Schema> {
    let fields: Vec<Field> = output
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), storable(f.data_type()), true))
        .collect();
    let mut seen = BTreeSet::new();
    if let Some(dup) = fields
        .iter()
        .find(|f| !seen.insert(f.name().to_lowercase()))
    {
        return Err(Error::Model(format!(
            "{}: the result has two columns named {:?}; alias one of them",
            model.file(),
            dup.name()
        )));
    }
    iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&ArrowSchema::new(fields)).map_err(|e| {
        Error::Model(format!(
            "{}: the result's columns cannot be stored in Iceberg: {e}",
            model.file()
        ))
        .caused_by(e)
    })
}

/// The event-time column: the header's, else `ts_utc` when the result has
/// a timestamp column of that name.
///
/// # Errors
/// A declared event time missing from the result or not a timestamp.
pub fn event_time(model: &Model, output: &ArrowSchema) -> Result<Option<String>> {
    let is_ts = |name: &str| {
        output
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    };
    match model.event_time.as_deref() {
        Some("") => Ok(None),
        Some(name) if is_ts(name) => Ok(Some(name.to_string())),
        Some(name) => Err(Error::Model(format!(
            "{}: event_time {name:?} is not a timestamp column of the result",
            model.file()
        ))),
        None => Ok(is_ts("ts_utc").then(|| "ts_utc".to_string())),
    }
}
