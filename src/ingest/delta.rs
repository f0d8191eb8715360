//! `format = "delta"`: the job's rows go to a Delta Lake table at
//! `<[delta] location>/<namespace levels>/<table>`, partitioned by a `day`
//! DATE column derived from `ts_utc` (Delta has no hidden partitioning), in
//! one commit that replaces exactly the window's days (a `replaceWhere`
//! overwrite on `day`). Rows stream into delta-rs's writer as they are
//! converted; the commit happens only once the run's checks passed: when
//! they fail, the stream ends with an error and nothing is committed.
//!
//! Commits go through delta-rs's log store: on a local folder and on S3
//! stores with conditional writes (`If-None-Match`), a concurrent commit of
//! the same version fails and delta-rs retries against the new version, so
//! two runs on disjoint windows both land.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{ArrayRef, Date32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::pipeline::{DeltaSettings, EVENT_TIME_COLUMN, Job};

/// The Delta partition column: the UTC day of `ts_utc`.
pub const DAY_COLUMN: &str = "day";
/// Commit-info key naming the run that made a commit.
const RUN_KEY: &str = "floe.run-id";
/// Commits a retried run looks back through for its own.
const LANDED_LOOKBACK: usize = 1000;
/// Batches in flight to delta-rs's writer.
const DEPTH: usize = 4;

fn delta_err(what: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |e| Error::Storage(format!("{what}: {e}"))
}

/// Where a job's Delta table is, and the store options to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table's URL.
    pub url: reqwest::Url,
    /// object_store options.
    pub options: HashMap<String, String>,
}

impl Target {
    /// `<root>/<namespace levels>/<table>`; the root is `[delta] location`,
    /// else `delta/` in the embedded warehouse. Store options come from the
    /// catalog's S3 properties and the AWS environment, then `[delta]
    /// storage_options`.
    pub fn resolve(
        job: &Job,
        settings: &DeltaSettings,
        embedded_warehouse: Option<&str>,
        s3_props: &HashMap<String, String>,
    ) -> Result<Self> {
        let root = match (&settings.location, embedded_warehouse) {
            (Some(l), _) => l.clone(),
            (None, Some(w)) => format!("{}/delta", w.trim_end_matches('/')),
            (None, None) => {
                return Err(Error::Config(format!(
                    "job {}: format = \"delta\" needs [delta] location = \"s3://bucket/delta\" (or a local folder) in the pipeline file",
                    job.name
                )));
            }
        };
        let root = root.trim_end_matches('/');
        let text = if root.contains("://") {
            format!("{root}/{}/{}", job.namespace.join("/"), job.table)
        } else {
            format!("file://{root}/{}/{}", job.namespace.join("/"), job.table)
        };
        let url = reqwest::Url::parse(&text)
            .map_err(|e| Error::Config(format!("Delta table location {text:?}: {e}")))?;
        let mut options = HashMap::new();
        if url.scheme() == "s3" || url.scheme() == "s3a" {
            let get = |k: &str| s3_props.get(k).cloned();
            let pairs = [
                ("AWS_ENDPOINT_URL", get("s3.endpoint")),
                ("AWS_ACCESS_KEY_ID", get("s3.access-key-id")),
                ("AWS_SECRET_ACCESS_KEY", get("s3.secret-access-key")),
                ("AWS_SESSION_TOKEN", get("s3.session-token")),
                (
                    "AWS_REGION",
                    get("s3.region").or_else(|| get("client.region")),
                ),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    options.insert(k.to_string(), v);
                }
            }
            if let Some(e) = get("s3.endpoint")
                && e.starts_with("http://")
            {
                options.insert("AWS_ALLOW_HTTP".into(), "true".into());
            }
            if get("s3.path-style-access").as_deref() == Some("true") {
                options.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
            }
        }
        options.extend(settings.storage_options.clone());
        Ok(Self { url, options })
    }

    async fn open(&self) -> Result<DeltaTable> {
        // delta-rs wants a local table's folder to exist, even before the
        // first commit creates the table.
        if self.url.scheme() == "file"
            && let Ok(path) = self.url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                context: format!("cannot create the Delta table folder {}", path.display()),
                source,
            })?;
        }
        DeltaTable::try_from_url_with_storage_options(self.url.clone(), self.options.clone())
            .await
            .map_err(delta_err(&format!("opening the Delta table {}", self.url)))
    }

    /// The table, created (empty, with `schema` and partitioned by `day`)
    /// when it does not exist yet. Creating it apart from the first write
    /// keeps concurrent first runs from each committing a table definition:
    /// one creates it, the others find it.
    async fn ensure(&self, schema: &SchemaRef) -> Result<DeltaTable> {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        let table = self.open().await?;
        if table.version().is_some() {
            return Ok(table);
        }
        let kernel: deltalake::kernel::StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Storage(format!("the Delta schema: {e}")))?;
        let created = table
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns([DAY_COLUMN])
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(t) => Ok(t),
            Err(e) => {
                // Another run may have created it first.
                let again = self.open().await?;
                if again.version().is_some() {
                    Ok(again)
                } else {
                    Err(delta_err(&format!("creating {}", self.url))(e))
                }
            }
        }
    }

    /// The version a run already committed, if any (a retried run whose
    /// answer was lost must not commit twice).
    pub async fn landed(&self, run_id: &str) -> Result<Option<u64>> {
        let table = self.open().await?;
        let Some(latest) = table.version() else {
            return Ok(None);
        };
        // Newest first: the n-th entry is version latest - n.
        let history = table
            .history(Some(LANDED_LOOKBACK))
            .await
            .map_err(delta_err("reading the Delta log"))?;
        for (n, commit) in history.enumerate() {
            if commit.info.get(RUN_KEY).and_then(|v| v.as_str()) == Some(run_id) {
                return Ok(latest.checked_sub(n as u64));
            }
        }
        Ok(None)
    }
}

/// The Delta form of a floe table schema: field ids dropped, `_hash` as
/// binary (Delta has no fixed-size binary), and the `day` partition column.
pub fn delta_schema(table: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| delta_field(f)).collect();
    fields.push(Field::new(DAY_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// A field as Delta takes it: no field id, timestamps with offsets as
/// `timestamp` (UTC), fixed-size binary as `binary`.
fn delta_field(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, Some("UTC".into())),
        DataType::FixedSizeBinary(_) => DataType::Binary,
        other => other.clone(),
    };
    Field::new(f.name(), t, f.is_nullable())
}

/// A floe batch in the Delta schema, with `day` from `ts_utc`.
fn to_delta(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let storage = |e: arrow_schema::ArrowError| Error::Storage(format!("Delta batch: {e}"));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 1);
    for (c, f) in batch.columns().iter().zip(schema.fields()) {
        columns.push(if c.data_type() == f.data_type() {
            c.clone()
        } else {
            arrow_cast::cast(c, f.data_type()).map_err(storage)?
        });
    }
    let ts = batch
        .column_by_name(EVENT_TIME_COLUMN)
        .ok_or_else(|| Error::Storage("a batch without ts_utc".into()))?
        .as_primitive::<TimestampMicrosecondType>();
    let days: Date32Array = ts.unary(super::writer::day_of);
    columns.push(Arc::new(days));
    RecordBatch::try_new(schema.clone(), columns).map_err(storage)
}

/// Feeds delta-rs's writer from a channel.
#[derive(Debug)]
struct Channel {
    schema: SchemaRef,
    rx: std::sync::Mutex<Option<mpsc::Receiver<datafusion::error::Result<RecordBatch>>>>,
}

impl PartitionStream for Channel {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<datafusion::execution::TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().ok().and_then(|mut r| r.take());
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let item = rx.recv().await?;
            Some((item, Some(rx)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// What a committed Delta write did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Per day (`YYYY-MM-DD`): files and bytes added.
    pub days: BTreeMap<String, (u64, u64)>,
    /// The table version of the commit.
    pub version: u64,
    /// Files added.
    pub added_files: u64,
    /// Files the overwrite removed from the window.
    pub removed_files: u64,
}

/// An open window overwrite: rows go in with [`Write::send`]; the commit
/// happens in [`Write::finish`] only when asked to.
pub struct Write {
    schema: SchemaRef,
    tx: mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    task: tokio::task::JoinHandle<std::result::Result<DeltaTable, deltalake::DeltaTableError>>,
    /// Rows sent per day (days since 1970-01-01).
    pub rows_per_day: BTreeMap<i32, u64>,
}

impl Write {
    /// Starts the overwrite of `from..=to` (creating the table, partitioned
    /// by `day`, on the first run).
    pub async fn start(
        target: &Target,
        table_schema: &Schema,
        from: NaiveDate,
        to: NaiveDate,
        metadata: Vec<(String, serde_json::Value)>,
        target_file_size: u64,
    ) -> Result<Self> {
        let schema = delta_schema(table_schema);
        let table = target.ensure(&schema).await?;
        if let Some(snapshot) = table.snapshot().ok()
            && snapshot.metadata().partition_columns() != [DAY_COLUMN.to_string()]
        {
            return Err(Error::Storage(format!(
                "the Delta table {} is partitioned by {:?}, not by {DAY_COLUMN}; floe replaces windows of days",
                target.url,
                snapshot.metadata().partition_columns()
            )));
        }
        let (tx, rx) = mpsc::channel(DEPTH);
        let provider = StreamingTable::try_new(
            schema.clone(),
            vec![Arc::new(Channel {
                schema: schema.clone(),
                rx: std::sync::Mutex::new(Some(rx)),
            })],
        )
        .map_err(|e| Error::Storage(format!("Delta input: {e}")))?;
        let plan =
            LogicalPlanBuilder::scan("floe_input", provider_as_source(Arc::new(provider)), None)
                .and_then(LogicalPlanBuilder::build)
                .map_err(|e| Error::Storage(format!("Delta input: {e}")))?;
        let predicate = format!("{DAY_COLUMN} >= '{from}' AND {DAY_COLUMN} <= '{to}'");
        let writer_props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(1).map_err(|e| Error::Storage(e.to_string()))?,
            ))
            .build();
        let write = table
            .write(Vec::new())
            .with_input_plan(plan)
            .with_save_mode(SaveMode::Overwrite)
            .with_partition_columns([DAY_COLUMN])
            .with_replace_where(predicate)
            .with_writer_properties(writer_props)
            .with_target_file_size(std::num::NonZeroU64::new(target_file_size))
            .with_commit_properties(CommitProperties::default().with_metadata(metadata));
        let task = tokio::spawn(async move { write.await });
        Ok(Self {
            schema,
            tx,
            task,
            rows_per_day: BTreeMap::new(),
        })
    }

    /// One converted batch (the table's schema) for the window; `false`
    /// when the writer stopped on an error of its own (from [`Write::finish`]).
    pub async fn send(&mut self, batch: &RecordBatch) -> Result<bool> {
        let delta = to_delta(batch, &self.schema)?;
        if let Some(days) = delta.column_by_name(DAY_COLUMN) {
            for d in days
                .as_primitive::<arrow_array::types::Date32Type>()
                .values()
            {
                *self.rows_per_day.entry(*d).or_default() += 1;
            }
        }
        Ok(self.tx.send(Ok(delta)).await.is_ok())
    }

    /// Commits (`abort: None`), or ends the stream with `abort`'s reason so
    /// that delta-rs commits nothing (files it wrote stay unreferenced until
    /// a vacuum). A writer that had stopped on its own returns its error.
    pub async fn finish(self, abort: Option<String>) -> Result<Option<Committed>> {
        let Self { tx, task, .. } = self;
        let mut aborted = false;
        if let Some(why) = &abort {
            aborted = tx
                .send(Err(datafusion::error::DataFusionError::Execution(
                    why.clone(),
                )))
                .await
                .is_ok();
        }
        drop(tx);
        let outcome = task
            .await
            .map_err(|e| Error::Storage(format!("the Delta writer failed: {e}")))?;
        if aborted {
            return Ok(None);
        }
        let table = outcome.map_err(delta_err("writing the Delta table"))?;
        if abort.is_some() {
            return Ok(None);
        }
        let version = table
            .version()
            .ok_or_else(|| Error::Storage("the Delta write left no version".into()))?;
        let history: Vec<_> = table
            .history(Some(1))
            .await
            .map_err(delta_err("reading the Delta log"))?
            .collect();
        let metric = |key: &str| {
            history
                .first()
                .and_then(|c| c.info.get("operationMetrics"))
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        };
        let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let entry = table
            .log_store()
            .read_commit_entry(version)
            .await
            .map_err(delta_err("reading the commit"))?
            .unwrap_or_default();
        for line in entry.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(add) = action.get("add") {
                let day = add
                    .pointer(&format!("/partitionValues/{DAY_COLUMN}"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let d = days.entry(day).or_default();
                d.0 += 1;
                d.1 += add.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            }
        }
        Ok(Some(Committed {
            days,
            version,
            added_files: metric("num_added_files"),
            removed_files: metric("num_removed_files"),
        }))
    }
}

/// Appends a run's rejects to the Delta table `<table>__rejects` beside the
/// target (unpartitioned: rejects are few); returns its version.
pub async fn append_rejects(target: &Target, batch: RecordBatch) -> Result<u64> {
    let mut url = target.url.clone();
    let name = format!(
        "{}__rejects",
        url.path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("table")
    );
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop().push(&name);
    }
    let rejects = Target {
        url,
        options: target.options.clone(),
    };
    let schema: SchemaRef = Arc::new(Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| delta_field(f))
            .collect::<Vec<_>>(),
    ));
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")))?;
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")))?;
    let table = rejects
        .open()
        .await?
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .await
        .map_err(delta_err(&format!("appending to {}", rejects.url)))?;
    table
        .version()
        .ok_or_else(|| Error::Storage("the rejects write left no version".into()))
}
