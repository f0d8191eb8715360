//! The Iceberg schema of a bronze table: `ts_utc`, the job's columns, and
//! floe's metadata columns `_ingest_time`, `_source` and `_hash`.

use std::sync::Arc;

use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, NullOrder, PrimitiveType, Schema,
    SortDirection, SortField, SortOrder, StructType, Transform, Type, UnboundPartitionSpec,
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

/// The Iceberg type of a contract column type. Nested fields are optional
/// and numbered 0 here; [`number_nested`] gives them their ids.
pub(crate) fn iceberg_type(kind: &ColumnType) -> Type {
    let optional = |id: i32, name: &str, kind: &ColumnType| {
        Arc::new(NestedField::optional(id, name, iceberg_type(kind)))
    };
    match kind {
        ColumnType::String => Type::Primitive(PrimitiveType::String),
        ColumnType::Int => Type::Primitive(PrimitiveType::Int),
        ColumnType::Long => Type::Primitive(PrimitiveType::Long),
        ColumnType::Float => Type::Primitive(PrimitiveType::Float),
        ColumnType::Double => Type::Primitive(PrimitiveType::Double),
        ColumnType::Boolean => Type::Primitive(PrimitiveType::Boolean),
        ColumnType::Date => Type::Primitive(PrimitiveType::Date),
        ColumnType::Timestamptz => Type::Primitive(PrimitiveType::Timestamptz),
        ColumnType::Decimal { precision, scale } => Type::Primitive(PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        }),
        ColumnType::List(element) => Type::List(ListType {
            element_field: optional(0, "element", element),
        }),
        ColumnType::Map(value) => Type::Map(MapType {
            key_field: Arc::new(NestedField::map_key_element(
                0,
                Type::Primitive(PrimitiveType::String),
            )),
            value_field: optional(0, "value", value),
        }),
        ColumnType::Struct(fields) => Type::Struct(StructType::new(
            fields
                .iter()
                .map(|f| optional(0, &f.name, &f.kind))
                .collect(),
        )),
    }
}

/// Gives the fields nested in `ty` ids from `next` upward, as Iceberg
/// numbers a new schema: a struct's own fields first, then what each of
/// them holds (a list's element, then a map's key and its value).
pub(crate) fn number_nested(ty: Type, next: &mut i32) -> Type {
    let renumber = |field: &NestedFieldRef, next: &mut i32| {
        let mut field = field.as_ref().clone();
        field.id = *next;
        *next += 1;
        *field.field_type = number_nested(*field.field_type, next);
        Arc::new(field)
    };
    match ty {
        Type::Primitive(p) => Type::Primitive(p),
        Type::List(list) => Type::List(ListType {
            element_field: renumber(&list.element_field, next),
        }),
        Type::Map(map) => {
            let key_field = renumber(&map.key_field, next);
            let value_field = renumber(&map.value_field, next);
            Type::Map(MapType {
                key_field,
                value_field,
            })
        }
        Type::Struct(s) => {
            let mut fields: Vec<NestedField> = Vec::with_capacity(s.fields().len());
            for f in s.fields() {
                let mut f = f.as_ref().clone();
                f.id = *next;
                *next += 1;
                fields.push(f);
            }
            Type::Struct(StructType::new(
                fields
                    .into_iter()
                    .map(|mut f| {
                        *f.field_type = number_nested(*f.field_type, next);
                        Arc::new(f)
                    })
                    .collect(),
            ))
        }
    }
}

/// `fields` (ids already given) with the fields nested in them numbered
/// from `next` upward.
pub(crate) fn number_all_nested(
    fields: Vec<NestedFieldRef>,
    next: &mut i32,
) -> Vec<NestedFieldRef> {
    fields
        .into_iter()
        .map(|f| {
            if f.field_type.is_primitive() {
                return f;
            }
            let mut f = f.as_ref().clone();
            *f.field_type = number_nested(*f.field_type, next);
            Arc::new(f)
        })
        .collect()
}

/// Whether two types are the same apart from the ids of nested fields
/// (a table's ids come from its catalog, a job's from its column order).
pub(crate) fn same_type(a: &Type, b: &Type) -> bool {
    let same_field = |x: &NestedFieldRef, y: &NestedFieldRef| {
        x.name == y.name && x.required == y.required && same_type(&x.field_type, &y.field_type)
    };
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::List(x), Type::List(y)) => same_field(&x.element_field, &y.element_field),
        (Type::Map(x), Type::Map(y)) => {
            same_field(&x.key_field, &y.key_field) && same_field(&x.value_field, &y.value_field)
        }
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(f, g)| same_field(f, g))
        }
        _ => false,
    }
}

fn field(id: i32, name: &str, kind: Type, required: bool) -> Arc<NestedField> {
    let f = if required {
        NestedField::required(id, name, kind)
    } else {
        NestedField::optional(id, name, kind)
    };
    Arc::new(f)
}

fn primitive(id: i32, name: &str, kind: PrimitiveType, required: bool) -> Arc<NestedField> {
    field(id, name, Type::Primitive(kind), required)
}

/// The table schema a job declares, with field ids 1..n in column order:
/// `ts_utc` first (when the job has an event time), the job's columns,
/// then floe's metadata columns.
pub fn table_schema(job: &Job) -> Result<Schema> {
    let mut fields = Vec::with_capacity(job.columns.len() + 4);
    if job.has_event_time() {
        fields.push(primitive(
            1,
            EVENT_TIME_COLUMN,
            PrimitiveType::Timestamptz,
            true,
        ));
    }
    let mut id = fields.len() as i32 + 1;
    for c in &job.columns {
        fields.push(field(id, &c.name, iceberg_type(&c.kind), c.required));
        id += 1;
    }
    if job.mode == crate::pipeline::WriteMode::Scd2 {
        fields.push(primitive(id, VALID_FROM, PrimitiveType::Timestamptz, true));
        fields.push(primitive(
            id + 1,
            VALID_TO,
            PrimitiveType::Timestamptz,
            false,
        ));
        id += 2;
    }
    fields.push(primitive(id, INGEST_TIME, PrimitiveType::Timestamptz, true));
    fields.push(primitive(id + 1, SOURCE, PrimitiveType::String, true));
    fields.push(primitive(id + 2, HASH, PrimitiveType::Fixed(16), true));
    // Top-level columns keep ids 1..n; what they hold is numbered after.
    let mut next = id + 3;
    let fields = number_all_nested(fields, &mut next);
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
            Some(t) if same_type(&t.field_type, &f.field_type) => {}
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
            None if [INGEST_TIME, SOURCE, HASH, VALID_FROM, VALID_TO]
                .contains(&f.name.as_str()) =>
            {
                return Err(Error::Config(format!(
                    "job {}: table {} has no column {}, one of floe's metadata columns (another engine \
                     created the table?); set schema_drift = \"evolve\" to let floe add its columns",
                    job.name,
                    job.table_ident(),
                    f.name
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
