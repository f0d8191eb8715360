//! Rejected records: kept with their reason in `<table>__rejects` (raw
//! record, reason, source, line, job, run id), partitioned by the day of
//! the run, appended once per run.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;
use iceberg::spec::{
    NestedField, PrimitiveType, Schema, SortOrder, Transform, Type, UnboundPartitionSpec,
};
use serde::Serialize;

use super::convert::Record;
use super::records::Unreadable;
use super::writer::DayWriters;
use super::{IngestRequest, schema};
use crate::error::{Error, Result};
use crate::pipeline::Job;
use crate::rest::RestClient;
use crate::table::snapshot::{self, Overwrite, TableHandle};

/// One rejected record.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    /// The record as read.
    pub raw: String,
    /// Why it was rejected.
    pub reason: String,
    /// The file it came from.
    pub source: String,
    /// Its line (or record number).
    pub line: u64,
}

impl Reject {
    /// A record that failed conversion.
    pub(super) fn new(record: &Record, reason: String, source: &str) -> Self {
        Self {
            raw: record.raw.clone(),
            reason,
            source: source.to_string(),
            line: record.line,
        }
    }

    /// Text that was not a record at all.
    pub(super) fn unreadable(u: Unreadable, source: &str) -> Self {
        Self {
            raw: u.raw,
            reason: u.reason,
            source: source.to_string(),
            line: u.line,
        }
    }
}

const TIME: &str = "_ingest_time";

fn rejects_schema() -> Result<Schema> {
    let f = |id, name: &str, t, req| {
        Arc::new(if req {
            NestedField::required(id, name, Type::Primitive(t))
        } else {
            NestedField::optional(id, name, Type::Primitive(t))
        })
    };
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            f(1, TIME, PrimitiveType::Timestamptz, true),
            f(2, "job", PrimitiveType::String, true),
            f(3, "run_id", PrimitiveType::String, true),
            f(4, "source", PrimitiveType::String, true),
            f(5, "line", PrimitiveType::Long, true),
            f(6, "reason", PrimitiveType::String, true),
            f(7, "raw", PrimitiveType::String, false),
        ])
        .build()
        .map_err(|e| Error::Storage(format!("rejects schema: {e}")))
}

/// Appends a run's rejects to `<table>__rejects`; returns the snapshot id.
pub(super) async fn commit(
    client: &RestClient,
    job: &Job,
    req: &IngestRequest,
    rejects: &[Reject],
) -> Result<i64> {
    let name = format!("{}__rejects", job.table);
    let table_schema = rejects_schema()?;
    let loaded = match client.load_table(&job.namespace, &name).await? {
        Some(t) => t,
        None => {
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(1, format!("{TIME}_day"), Transform::Day)
                .map_err(|e| Error::Storage(e.to_string()))?
                .build();
            client
                .create_table(
                    &job.namespace,
                    &name,
                    &table_schema,
                    &spec,
                    &SortOrder::unsorted_order(),
                    &HashMap::new(),
                )
                .await?
        }
    };
    let handle = TableHandle {
        namespace: job.namespace.clone(),
        name: name.clone(),
        io: crate::store::table_io(client, &loaded),
    };
    let arrow = schema::arrow_schema(loaded.metadata.current_schema())?;
    let batch = batch(arrow, job, req, rejects)?;
    let mut writers = DayWriters::new(
        &loaded.metadata,
        TIME,
        handle.io.clone(),
        &format!("{}-rejects", req.run_id),
        usize::MAX,
        Vec::new(),
    )?;
    writers.write(batch).await?;
    let files = writers.close().await?;
    let overwrite = Overwrite {
        added: files,
        // No day is replaced: rejects accumulate.
        days: None,
        guarded_days: Default::default(),
        properties: HashMap::from([("floe.job".to_string(), job.name.clone())]),
        run_id: req.run_id.clone(),
    };
    Ok(
        snapshot::commit_overwrite(client, &handle, loaded, &overwrite)
            .await?
            .snapshot_id,
    )
}

/// The Arrow schema of a rejects table.
pub(super) fn arrow_schema() -> Result<arrow_schema::SchemaRef> {
    schema::arrow_schema(&rejects_schema()?)
}

/// A run's rejects as one batch of the rejects table's schema `arrow`.
pub(super) fn batch(
    arrow: arrow_schema::SchemaRef,
    job: &Job,
    req: &IngestRequest,
    rejects: &[Reject],
) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let n = rejects.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("+00:00")),
        Arc::new(StringArray::from(vec![job.name.as_str(); n])),
        Arc::new(StringArray::from(vec![req.run_id.as_str(); n])),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rejects.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.raw.as_str()),
        )),
    ];
    RecordBatch::try_new(arrow, columns).map_err(|e| Error::Storage(format!("rejects batch: {e}")))
}
