//! `<table>__rejects` beside an Iceberg table: the records a run could not
//! convert, with their reason, partitioned by the day of the run and
//! appended once per run. `raw` holds a record's text; `raw_bytes` its
//! exact bytes when they are not UTF-8 (null otherwise). A rejects table
//! from before `raw_bytes` gains the column on its next append.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::{
    NestedField, PrimitiveType, Schema, SortOrder, Transform, Type, UnboundPartitionSpec,
};

use super::props::JOB_KEY;
use super::schema;
use super::snapshot::{self, Overwrite, TableHandle};
use super::writer::DayWriters;
use crate::error::{Error, Result};
use crate::pipeline::Job;
use crate::rest::RestClient;

const TIME: &str = "_ingest_time";
const RAW_BYTES: &str = "raw_bytes";

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
            f(8, RAW_BYTES, PrimitiveType::Binary, false),
        ])
        .build()
        .map_err(|e| Error::Storage(format!("rejects schema: {e}")).caused_by(e))
}

/// Appends a run's rejects (a batch of [`arrow_schema`]) to the Iceberg
/// table `<table>__rejects`, created on first use and partitioned by the
/// day of the run; returns the snapshot id.
pub(super) async fn append_iceberg(
    client: &RestClient,
    job: &Job,
    run_id: &str,
    batch: RecordBatch,
) -> Result<i64> {
    let name = format!("{}__rejects", job.table);
    let table_schema = rejects_schema()?;
    let loaded = match client.load_table(&job.namespace, &name).await? {
        // A table from before `raw_bytes` gains it (a nullable column:
        // its old rows read as null).
        Some(t) => {
            let new = [(
                RAW_BYTES.to_string(),
                iceberg::spec::Type::Primitive(PrimitiveType::Binary),
            )];
            super::window::add_fields(client, &job.namespace, &name, t, &new).await?
        }
        None => {
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(1, format!("{TIME}_day"), Transform::Day)
                .map_err(|e| Error::Storage(e.to_string()).caused_by(e))?
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
    let mut writers = DayWriters::new(
        &loaded.metadata,
        TIME,
        handle.io.clone(),
        &format!("{run_id}-rejects"),
        usize::MAX,
        Vec::new(),
    )?;
    writers
        .write(conform(batch, loaded.metadata.current_schema())?)
        .await?;
    let files = writers.close().await?;
    let overwrite = Overwrite {
        added: files,
        // No day is replaced: rejects accumulate.
        days: None,
        guarded_days: Default::default(),
        properties: HashMap::from([(JOB_KEY.to_string(), job.name.clone())]),
        run_id: run_id.to_string(),
        guard: None,
    };
    Ok(
        snapshot::commit_overwrite(client, &handle, loaded, &overwrite)
            .await?
            .snapshot_id,
    )
}

/// `batch` in the table's schema, column by name: a table column the batch
/// lacks (one a user added) is null.
fn conform(batch: RecordBatch, table: &Schema) -> Result<RecordBatch> {
    let arrow = schema::arrow_schema(table)?;
    let columns = arrow
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => arrow_cast::cast(c, f.data_type()),
            None => Ok(arrow_array::new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))?;
    RecordBatch::try_new(arrow, columns)
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))
}

/// The Arrow schema of a rejects table.
pub fn arrow_schema() -> Result<arrow_schema::SchemaRef> {
    schema::arrow_schema(&rejects_schema()?)
}
