//! Schema drift, `schema_drift = "evolve"`: before writing, the sources are
//! scanned for fields the contract does not name; each becomes a new
//! nullable column (type inferred: JSON numbers → long or double, booleans →
//! boolean, everything else and CSV cells → string; Parquet columns keep
//! their type), added to the table in one schema commit guarded by the
//! current schema id and last column id, and then written like the rest.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use iceberg::spec::{NestedField, Schema, Type};
use iceberg::{TableRequirement, TableUpdate};
use serde_json::Value;

use super::convert::Record;
use super::files::Fetcher;
use super::records::{RecordSink, Unreadable};
use crate::error::{Error, Result};
use crate::pipeline::{Column, ColumnType, EVENT_TIME_COLUMN, Job};
use crate::rest::{CommitOutcome, LoadedTable, RestClient};

/// How often a concurrent schema change is retried.
const ATTEMPTS: u32 = 5;

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

impl Scan<'_> {
    fn see(&mut self, name: &str, kind: ColumnType) {
        if !self.known.contains(name) {
            let widened = widen(self.found.get(name).copied(), kind);
            self.found.insert(name.to_string(), widened);
        }
    }
}

impl RecordSink for Scan<'_> {
    fn record(&mut self, record: Record) -> Result<()> {
        for (k, v) in &record.fields {
            let kind = match v {
                Value::Null => continue,
                Value::Bool(_) => ColumnType::Boolean,
                Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Long,
                Value::Number(_) => ColumnType::Double,
                _ => ColumnType::String,
            };
            self.see(k, kind);
        }
        Ok(())
    }

    fn batch(&mut self, batch: RecordBatch, _first: u64) -> Result<()> {
        for f in batch.schema().fields() {
            let kind = match f.data_type() {
                DataType::Int8 | DataType::Int16 | DataType::Int32 => ColumnType::Int,
                DataType::Int64 => ColumnType::Long,
                DataType::Float32 => ColumnType::Float,
                DataType::Float64 => ColumnType::Double,
                DataType::Boolean => ColumnType::Boolean,
                DataType::Date32 => ColumnType::Date,
                DataType::Timestamp(_, Some(_)) => ColumnType::Timestamptz,
                _ => ColumnType::String,
            };
            self.see(f.name(), kind);
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
        super::read_unit(job, unit, &path, &mut scan)?;
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

/// Adds the new columns to the table (those it does not have yet) and to
/// the job; returns the reloaded table.
pub async fn evolve(
    client: &RestClient,
    job: &mut Job,
    table: LoadedTable,
    new: &BTreeMap<String, ColumnType>,
) -> Result<LoadedTable> {
    for (name, kind) in new {
        job.columns.push(Column {
            name: name.clone(),
            kind: *kind,
            required: false,
            from: None,
        });
    }
    add_columns(client, job, table, new).await
}

/// Adds the columns of `new` the table lacks as nullable columns, in one
/// schema commit guarded by the current schema id and last column id
/// (retried when another writer changed the schema meanwhile); returns the
/// reloaded table.
pub async fn add_columns(
    client: &RestClient,
    job: &Job,
    mut table: LoadedTable,
    new: &BTreeMap<String, ColumnType>,
) -> Result<LoadedTable> {
    for _ in 0..ATTEMPTS {
        let current = table.metadata.current_schema().clone();
        let missing: Vec<(&String, &ColumnType)> = new
            .iter()
            .filter(|(n, _)| current.field_by_name(n).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(table);
        }
        let mut fields: Vec<Arc<NestedField>> = current.as_struct().fields().to_vec();
        let mut id = table.metadata.last_column_id();
        for (name, kind) in &missing {
            id += 1;
            fields.push(Arc::new(NestedField::optional(
                id,
                name.as_str(),
                Type::Primitive(super::schema::iceberg_type(**kind)),
            )));
        }
        let schema = Schema::builder()
            .with_schema_id(current.schema_id() + 1)
            .with_identifier_field_ids(current.identifier_field_ids())
            .with_fields(fields)
            .build()
            .map_err(|e| Error::Config(format!("cannot evolve the schema: {e}")))?;
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(table = %job.table_ident(), columns = ?names, "adding columns for new source fields");
        let requirements = [
            TableRequirement::CurrentSchemaIdMatch {
                current_schema_id: current.schema_id(),
            },
            TableRequirement::LastAssignedFieldIdMatch {
                last_assigned_field_id: table.metadata.last_column_id(),
            },
        ];
        let updates = [
            TableUpdate::AddSchema { schema },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
        ];
        match client
            .commit(&job.namespace, &job.table, &requirements, &updates)
            .await?
        {
            CommitOutcome::Committed(t) => return Ok(*t),
            CommitOutcome::Conflict(_) | CommitOutcome::Unknown(_) => {
                table = client
                    .load_table(&job.namespace, &job.table)
                    .await?
                    .ok_or_else(|| {
                        Error::Catalog(format!("table {} disappeared", job.table_ident()))
                    })?;
            }
        }
    }
    Err(Error::CommitConflict(format!(
        "could not add columns to {}: its schema kept changing",
        job.table_ident()
    )))
}
