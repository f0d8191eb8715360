//! Writing a model's result: the table is created from the query's output
//! schema on the first run (partitioned by `day(event_time)` when the model
//! has one), and batches go through ingest's writer ([`DayWriters`]):
//! rolling zstd Parquet files at the target size, sorted when the model
//! declares a sort order, with column statistics in the manifests.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::TryStreamExt;
use iceberg::spec::{DataFile, Schema, UnboundPartitionSpec};

use super::model::Model;
use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};
use crate::table::lanes::Lanes;
use crate::table::schema::{arrow_schema, day_spec_on, sort_order_by};
use crate::table::snapshot::TableHandle;
use crate::table::writer::DayWriters;

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

/// Loads the model's table, creating it on the first run.
///
/// # Errors
/// When the existing table's columns differ from the result's (naming
/// them), or the catalog fails.
pub async fn open_or_create(
    client: &RestClient,
    model: &Model,
    schema: &Schema,
    event_time: Option<&str>,
) -> Result<LoadedTable> {
    let (namespace, name) = model.target();
    if let Some(t) = client.load_table(&namespace, &name).await? {
        match check_same_columns(model, t.metadata.current_schema(), schema) {
            Ok(()) => return Ok(t),
            // A table that never got a snapshot (its first results failed
            // their tests) holds nothing: it is recreated with the new columns.
            Err(_) if t.metadata.snapshots().next().is_none() => {
                tracing::info!(table = %model.name, "recreating a table that never held data, for the new columns");
                client.drop_table(&namespace, &name, true).await?;
            }
            Err(e) => return Err(e),
        }
    }
    client.ensure_namespace(&namespace).await?;
    let spec = match event_time {
        Some(column) => {
            let id = schema.field_by_name(column).map(|f| f.id).unwrap_or(1);
            day_spec_on(id, column)
        }
        None => UnboundPartitionSpec::builder().build(),
    };
    let order = sort_order_by(&model.sort, schema, &model.file())?;
    let mut props: HashMap<String, String> = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
        ("floe.model".to_string(), model.file()),
    ]);
    props.extend(model.properties.clone());
    tracing::info!(table = %model.name, "creating table");
    client
        .create_table(&namespace, &name, schema, &spec, &order, &props)
        .await
}

/// Whether the table still has the query's columns (an error naming the
/// differences otherwise).
///
/// # Errors
/// [`Error::Model`] listing new, changed and dropped columns.
pub fn check_same_columns(model: &Model, table: &Schema, result: &Schema) -> Result<()> {
    let describe = |s: &Schema| -> Vec<String> {
        s.as_struct()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name, f.field_type))
            .collect()
    };
    let (have, want) = (describe(table), describe(result));
    if have == want {
        return Ok(());
    }
    let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
    let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
    Err(Error::Model(format!(
        "{}: the query's columns no longer match table {} (new or changed: {:?}; in the table only: {:?}). \
         floe does not rewrite a model table's schema; drop the table (e.g. with pyiceberg or Spark) \
         and run the model again to rebuild it",
        model.file(),
        model.name,
        missing,
        extra
    )))
}

/// What writing a result produced.
#[derive(Debug, Default)]
pub struct Written {
    /// Data files (not yet committed).
    pub files: Vec<DataFile>,
    /// Rows written.
    pub rows: u64,
    /// Order-independent hash of every row and the schema (when asked).
    pub content: Option<String>,
}

/// How to write a result.
pub struct WriteSpec<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its table.
    pub loaded: &'a LoadedTable,
    /// Where the files go.
    pub handle: &'a TableHandle,
    /// The event-time column (none: unpartitioned).
    pub event_time: Option<&'a str>,
    /// Days the result may cover (none: any).
    pub days: Option<&'a BTreeSet<i32>>,
    /// File name prefix (the run id).
    pub run_id: &'a str,
    /// Hash the content (full refreshes: an unchanged result is not committed).
    pub hash: bool,
}

/// Writes every batch of `stream` to data files.
///
/// # Errors
/// When the query fails, a row lies outside `days` or has no event time,
/// or storage fails; the files written so far are deleted.
pub async fn write(spec: &WriteSpec<'_>, mut stream: SendableRecordBatchStream) -> Result<Written> {
    let metadata = &spec.loaded.metadata;
    let target = arrow_schema(metadata.current_schema())?;
    let sort: Vec<usize> = spec
        .model
        .sort
        .iter()
        .filter_map(|c| target.index_of(c).ok())
        .collect();
    let size = crate::table::props::target_file_size(metadata.properties());
    let make = |lane: usize, lanes: usize| {
        let mut w = DayWriters::new(
            metadata,
            spec.event_time.unwrap_or_default(),
            spec.handle.io.clone(),
            &format!("{}-{lane}", spec.run_id),
            size,
            sort.clone(),
        )?
        .sharing(lanes);
        if spec.event_time.is_none() {
            w = w.unpartitioned();
        }
        if let Some(days) = spec.days {
            w = w.only_days(days.clone());
        }
        Ok(w)
    };
    let mut lanes = Lanes::start(spec.event_time, make)?;
    let mut hasher = spec.hash.then(|| ContentHash::new(&target)).transpose()?;
    let mut rows = 0u64;
    let model = spec.model.file();
    let fed: Result<()> = async {
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| super::sql_error(spec.model, &e))?
        {
            let batch = conform(&batch, &target, &model)?;
            if let Some(h) = hasher.as_mut() {
                h.add(&batch)?;
            }
            rows += batch.num_rows() as u64;
            let sent = lanes.send(batch).await.map_err(|e| {
                Error::Model(format!(
                    "{model}: {e} (a day-partitioned model needs its event time on every row)"
                ))
            })?;
            if !sent {
                break;
            }
        }
        Ok(())
    }
    .await;
    let (files, lane_error) = lanes.close().await;
    if let Some(e) = fed.err().or(lane_error) {
        for f in &files {
            let _ = spec.handle.io.delete(f.file_path()).await;
        }
        return Err(match e {
            Error::Model(_) => e,
            other => Error::Model(format!("{model}: {other}")),
        });
    }
    Ok(Written {
        files,
        rows,
        content: hasher.map(|h| h.finish()),
    })
}

/// A batch in the table's Arrow schema (columns by name, cast).
pub(super) fn conform(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    target: &Arc<ArrowSchema>,
    model: &str,
) -> Result<datafusion::arrow::record_batch::RecordBatch> {
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::Model(format!("{model}: the result lost column {}", f.name()))
            })?;
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    Error::Model(format!(
                        "{model}: column {} cannot be stored: {e}",
                        f.name()
                    ))
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    datafusion::arrow::record_batch::RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| Error::Model(format!("{model}: {e}")))
}

/// Sum of per-row XXH3-128 hashes of the row encoding: the same rows in
/// any order give the same value.
pub(super) struct ContentHash {
    converter: RowConverter,
    sum: u128,
    rows: u64,
    schema: String,
}

impl ContentHash {
    pub(super) fn new(schema: &ArrowSchema) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            converter: RowConverter::new(fields).map_err(|e| Error::Storage(e.to_string()))?,
            sum: 0,
            rows: 0,
            schema: schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    pub(super) fn add(
        &mut self,
        batch: &datafusion::arrow::record_batch::RecordBatch,
    ) -> Result<()> {
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(|e| Error::Storage(e.to_string()))?;
        for row in rows.iter() {
            self.sum = self
                .sum
                .wrapping_add(twox_hash::XxHash3_128::oneshot(row.as_ref()));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub(super) fn finish(self) -> String {
        let schema = twox_hash::XxHash3_128::oneshot(self.schema.as_bytes());
        format!("{:032x}-{}-{:032x}", self.sum, self.rows, schema)
    }
}
