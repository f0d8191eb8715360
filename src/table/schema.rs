//! The Iceberg schema of a bronze table: `ts_utc`, the job's columns, and
//! floe's metadata columns `_ingest_time`, `_source` and `_hash`.

use std::sync::Arc;

use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::spec::{
    NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder, Transform,
    Type, UnboundPartitionSpec,
};

use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, EVENT_TIME_COLUMN, Job};

/// When the run read the row (the same for every row of a run).
pub const INGEST_TIME: &str = "_ingest_time";
/// The URI of the file the row came from.
pub const SOURCE: &str = "_source";
/// A hash of the record as read: XXH3-128, 16 bytes (`fixed[16]`).
pub const HASH: &str = "_hash";
/// `mode = "scd2"`: when a version of a row became current (the run's time).
pub const VALID_FROM: &str = "_valid_from";
/// `mode = "scd2"`: when it stopped being current (null: it is).
pub const VALID_TO: &str = "_valid_to";

/// The Iceberg type of a contract column type.
pub(crate) fn iceberg_type(kind: ColumnType) -> PrimitiveType {
    match kind {
        ColumnType::String => PrimitiveType::String,
        ColumnType::Int => PrimitiveType::Int,
        ColumnType::Long => PrimitiveType::Long,
        ColumnType::Float => PrimitiveType::Float,
        ColumnType::Double => PrimitiveType::Double,
        ColumnType::Boolean => PrimitiveType::Boolean,
        ColumnType::Date => PrimitiveType::Date,
        ColumnType::Timestamptz => PrimitiveType::Timestamptz,
    }
}

fn field(id: i32, name: &str, kind: PrimitiveType, required: bool) -> Arc<NestedField> {
    let f = if required {
        NestedField::required(id, name, Type::Primitive(kind))
    } else {
        NestedField::optional(id, name, Type::Primitive(kind))
    };
    Arc::new(f)
}

/// The table schema a job declares, with field ids 1..n in column order:
/// `ts_utc` first (when the job has an event time), the job's columns,
/// then floe's metadata columns.
pub fn table_schema(job: &Job) -> Result<Schema> {
    let mut fields = Vec::with_capacity(job.columns.len() + 4);
    if job.has_event_time() {
        fields.push(field(
            1,
            EVENT_TIME_COLUMN,
            PrimitiveType::Timestamptz,
            true,
        ));
    }
    let mut id = fields.len() as i32 + 1;
    for c in &job.columns {
        fields.push(field(id, &c.name, iceberg_type(c.kind), c.required));
        id += 1;
    }
    if job.mode == crate::pipeline::WriteMode::Scd2 {
        fields.push(field(id, VALID_FROM, PrimitiveType::Timestamptz, true));
        fields.push(field(id + 1, VALID_TO, PrimitiveType::Timestamptz, false));
        id += 2;
    }
    fields.push(field(id, INGEST_TIME, PrimitiveType::Timestamptz, true));
    fields.push(field(id + 1, SOURCE, PrimitiveType::String, true));
    fields.push(field(id + 2, HASH, PrimitiveType::Fixed(16), true));
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields)
        .build()
        .map_err(|e| Error::Config(format!("job {}: invalid schema: {e}", job.name)).caused_by(e))
}

/// The job's spec: `day(ts_utc)`, then its `partition` fields; none for a
/// job without an event time (its table is replaced whole).
///
/// # Errors
/// A partition column missing from the schema.
pub fn job_spec(job: &Job, schema: &Schema) -> Result<UnboundPartitionSpec> {
    if !job.has_event_time() {
        return Ok(UnboundPartitionSpec::builder().build());
    }
    let mut builder = UnboundPartitionSpec::builder()
        .add_partition_field(1, format!("{EVENT_TIME_COLUMN}_day"), Transform::Day)
        .map_err(|e| Error::Config(format!("job {}: {e}", job.name)).caused_by(e))?;
    for p in &job.partition {
        let field = schema.field_by_name(&p.column).ok_or_else(|| {
            Error::Config(format!(
                "job {}: partition column {} is not in the table",
                job.name, p.column
            ))
        })?;
        let suffix = match p.transform {
            Transform::Bucket(_) => "_bucket",
            Transform::Truncate(_) => "_trunc",
            _ => "",
        };
        builder = builder
            .add_partition_field(field.id, format!("{}{suffix}", p.column), p.transform)
            .map_err(|e| {
                Error::Config(format!("job {}: partition {}: {e}", job.name, p.column)).caused_by(e)
            })?;
    }
    Ok(builder.build())
}

/// `day(column)`, `source_id` being the column's field id.
pub fn day_spec_on(source_id: i32, column: &str) -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .add_partition_field(source_id, format!("{column}_day"), Transform::Day)
        .map(|b| b.build())
        .unwrap_or_default()
}

/// The job's sort order over `schema` (unsorted when it declares none).
pub fn sort_order(job: &Job, schema: &Schema) -> Result<SortOrder> {
    sort_order_by(&job.sort, schema, &format!("job {}", job.name))
}

/// Ascending order on `columns` of `schema` (unsorted when empty);
/// `owner` names the job or model in messages.
pub fn sort_order_by(columns: &[String], schema: &Schema, owner: &str) -> Result<SortOrder> {
    if columns.is_empty() {
        return Ok(SortOrder::unsorted_order());
    }
    let mut builder = SortOrder::builder();
    builder.with_order_id(1);
    for name in columns {
        let f = schema.field_by_name(name).ok_or_else(|| {
            Error::Config(format!("{owner}: sort column {name} is not in the schema"))
        })?;
        builder.with_sort_field(
            SortField::builder()
                .source_id(f.id)
                .transform(Transform::Identity)
                .direction(SortDirection::Ascending)
                .null_order(NullOrder::First)
                .build(),
        );
    }
    builder
        .build(schema)
        .map_err(|e| Error::Config(format!("{owner}: invalid sort order: {e}")).caused_by(e))
}

/// The Arrow schema matching an Iceberg schema (field ids in the metadata,
/// as the Parquet writer needs them).
pub fn arrow_schema(schema: &Schema) -> Result<ArrowSchemaRef> {
    iceberg::arrow::schema_to_arrow_schema(schema)
        .map(Arc::new)
        .map_err(|e| {
            Error::Config(format!("cannot map the table schema to Arrow: {e}")).caused_by(e)
        })
}

/// Checks that an existing table can take the job's rows: every job column
/// must exist with the same type. Extra nullable table columns are fine.
pub fn check_compatible(job: &Job, table: &Schema) -> Result<()> {
    let wanted = table_schema(job)?;
    for f in wanted.as_struct().fields() {
        match table.field_by_name(&f.name) {
            Some(t) if t.field_type == f.field_type => {}
            Some(t) => {
                return Err(Error::Config(format!(
                    "job {}: table {} has column {} as {}, the job declares {}",
                    job.name,
                    job.table_ident(),
                    f.name,
                    t.field_type,
                    f.field_type
                )));
            }
            None => {
                return Err(Error::Config(format!(
                    "job {}: table {} has no column {}; the job's contract changed (evolve the table or write to a new one)",
                    job.name,
                    job.table_ident(),
                    f.name
                )));
            }
        }
    }
    for f in table.as_struct().fields() {
        if f.required && wanted.field_by_name(&f.name).is_none() {
            return Err(Error::Config(format!(
                "job {}: table {} requires column {}, which the job does not produce",
                job.name,
                job.table_ident(),
                f.name
            )));
        }
    }
    Ok(())
}
