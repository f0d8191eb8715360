//! A query's result written to a table of either format, write-audit-
//! publish: [`Output::open`] finds the table and what its last run
//! recorded, [`Output::write`] writes the result's files (nothing
//! committed), [`Written::stage`] makes them readable to tests and
//! downstream queries while readers of the table still see the old data,
//! and a staged result is then [`Staged::accept`]ed or
//! [`Staged::discard`]ed.
//!
//! Iceberg stages a snapshot on an audit branch; accepting it queues it
//! for [`publish`], which moves `main` of a batch of tables in one
//! multi-table commit. Delta has no branches: a staged Delta result is its
//! uncommitted files, read directly, and accepting it commits it (one
//! `WRITE` replacing the refreshed days or everything).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use iceberg::spec::{DataFile, Operation, Schema, UnboundPartitionSpec};

use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};
use crate::table::content::{ContentHash, conform};
use crate::table::delta::{self, Replace, Target};
use crate::table::iceberg::publish::{self as branch, Pending};
use crate::table::iceberg::staging::{self, StagingTable};
use crate::table::lanes::Lanes;
use crate::table::props::RUN_ID_KEY;
use crate::table::read::{Location, Source, register_as};
use crate::table::schema::{arrow_schema, day_spec_on, sort_order_by};
use crate::table::snapshot::{self, Change, ChangeOutcome, Removal, TableHandle};
use crate::table::writer::DayWriters;

/// Commits a Delta model's last run is looked for in (newest first).
const RECORD_LOOKBACK: usize = 1000;
/// A staging table older than this was left by a dead run even when floe
/// cannot tell whether the process that made it is alive (another host).
const STAGING_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The result's table and how it is written.
#[derive(Debug, Clone, Copy)]
pub struct OutputSpec<'a> {
    /// The table, `namespace.table`.
    pub ident: &'a str,
    /// Where the result comes from (a model's SQL file), for messages.
    pub file: &'a str,
    /// The result's columns (every one optional).
    pub schema: &'a Schema,
    /// The timestamp column whose UTC day partitions the table (none:
    /// unpartitioned).
    pub event_time: Option<&'a str>,
    /// Columns each file's rows are sorted by.
    pub sort: &'a [String],
    /// Table properties set when the table is created.
    pub properties: &'a BTreeMap<String, String>,
    /// The key every run's record carries: the newest commit holding it
    /// is the last run's.
    pub record_key: &'a str,
}

/// The result's table, opened.
pub enum Output<'a> {
    /// An Iceberg table of the catalog (none yet on a first run).
    Iceberg {
        /// The catalog.
        client: &'a RestClient,
        /// Namespace levels.
        namespace: Vec<String>,
        /// Table name.
        name: String,
        /// The table, when it exists.
        existing: Option<Box<LoadedTable>>,
    },
    /// A Delta table (created on its first write).
    Delta {
        /// Where it is.
        target: Target,
        /// The last run's record.
        record: HashMap<String, String>,
    },
}

/// What a run writes.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec<'a> {
    /// The run id (names files, audit branches and commits).
    pub run_id: &'a str,
    /// The days replaced (none: everything); every row must fall on one.
    pub days: Option<&'a BTreeSet<i32>>,
    /// Hash the content (a full result equal to the table's is not
    /// committed).
    pub hash: bool,
}

impl<'a> Output<'a> {
    /// Opens the result's table at `location`; an error when it exists with
    /// other columns than the result's.
    ///
    /// # Errors
    /// When the table cannot be read or its columns differ.
    pub async fn open(
        location: &Location,
        client: &'a RestClient,
        spec: &OutputSpec<'_>,
    ) -> Result<Output<'a>> {
        match location {
            Location::Catalog { namespace, name } => {
                let existing = client.load_table(namespace, name).await?;
                if let Some(t) = &existing {
                    branch::drop_stale_branches(client, namespace, name, t).await;
                    staging::drop_stale(client, namespace, name, STAGING_STALE_AFTER).await;
                    // Checked before anything else: a changed query must
                    // not pass as up to date.
                    if t.metadata.current_snapshot().is_some() {
                        check_same_columns(spec, t.metadata.current_schema())?;
                    }
                }
                Ok(Output::Iceberg {
                    client,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    existing: existing.map(Box::new),
                })
            }
            Location::Delta(target) => Ok(Output::Delta {
                record: delta_record(target, spec).await?,
                target: target.clone(),
            }),
        }
    }

    /// The `floe.*` entries the last run recorded (the current snapshot's
    /// summary; the newest Delta commit holding the record key).
    pub fn last_record(&self) -> HashMap<String, String> {
        match self {
            Output::Iceberg { existing, .. } => existing
                .as_ref()
                .and_then(|t| t.metadata.current_snapshot())
                .map(|s| s.summary().additional_properties.clone())
                .unwrap_or_default(),
            Output::Delta { record, .. } => record.clone(),
        }
    }

    /// Writes `rows` to new data files (creating the table on its first
    /// run); nothing is committed.
    ///
    /// # Errors
    /// When the stream fails, a row lies outside the run's days or has no
    /// event time, or storage fails; the files written are deleted.
    pub async fn write(
        self,
        spec: &OutputSpec<'_>,
        run: &RunSpec<'_>,
        rows: BoxStream<'_, Result<RecordBatch>>,
    ) -> Result<Written<'a>> {
        match self {
            Output::Iceberg {
                client,
                namespace,
                name,
                existing,
            } => {
                let (loaded, handle, created) =
                    open_target(client, namespace, name, existing, spec).await?;
                let written = write_iceberg(client, loaded, handle.clone(), spec, run, rows).await;
                if written.is_err() && created {
                    drop_unused(client, &handle).await;
                }
                written
            }
            Output::Delta { target, .. } => write_delta(target, spec, run, rows).await,
        }
    }
}

impl<'a> Output<'a> {
    /// Prepares for another engine to write the result: creates the table
    /// on its first run, and a staging table of its schema, partitioning
    /// and sort order inside its location for the engine to write into.
    ///
    /// # Errors
    /// A Delta target (the engine writes Iceberg tables of the catalog), or
    /// when the catalog fails.
    pub async fn external(self, spec: &OutputSpec<'_>, run: &RunSpec<'_>) -> Result<External<'a>> {
        match self {
            Output::Iceberg {
                client,
                namespace,
                name,
                existing,
            } => {
                let (loaded, handle, created) =
                    open_target(client, namespace, name, existing, spec).await?;
                let staging = match staging::create(
                    client,
                    &handle.namespace,
                    &handle.name,
                    &loaded,
                    run.run_id,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        if created {
                            drop_unused(client, &handle).await;
                        }
                        return Err(e);
                    }
                };
                Ok(External {
                    client,
                    loaded: Box::new(loaded),
                    handle,
                    staging,
                    created,
                })
            }
            Output::Delta { target, .. } => Err(Error::Model(format!(
                "{}: a model run on another engine writes an Iceberg table of the catalog, and {} is a Delta table ({}); \
                 set format = \"iceberg\" in its header or run it on DataFusion",
                spec.file, spec.ident, target.url
            ))),
        }
    }
}

/// A result another engine writes into a staging table.
pub struct External<'a> {
    client: &'a RestClient,
    loaded: Box<LoadedTable>,
    handle: TableHandle,
    staging: StagingTable,
    /// This run created the table (dropped again when it fails).
    created: bool,
}

impl<'a> External<'a> {
    /// The staging table the engine writes into (namespace, name).
    pub fn staging(&self) -> (&[String], &str) {
        (&self.staging.namespace, &self.staging.name)
    }

    /// A table property of the staging table (key, value) that the engine
    /// must read back: proof that its catalog is floe's.
    pub fn token(&self) -> (&'static str, &str) {
        (staging::TOKEN_KEY, &self.staging.token)
    }

    /// Drops the staging table and whatever the engine wrote into it (and
    /// the table, when this run created it).
    pub async fn abandon(self) {
        staging::purge(self.client, &self.staging).await;
        if self.created {
            drop_unused(self.client, &self.handle).await;
        }
    }

    /// Takes the files the engine wrote as the result's: checks they lie on
    /// the run's days, hashes the content when the run asks (reading the
    /// files back), and drops the staging table, keeping the files.
    ///
    /// # Errors
    /// When the staging table cannot be read, a file lies outside the run's
    /// days, or the staging table cannot be dropped; the staging table and
    /// its files are dropped then.
    pub async fn collect(self, spec: &OutputSpec<'_>, run: &RunSpec<'_>) -> Result<Written<'a>> {
        let taken = self.take(spec, run).await;
        let (files, content) = match taken {
            Ok(t) => t,
            Err(e) => {
                self.abandon().await;
                return Err(e);
            }
        };
        staging::release(self.client, &self.staging).await?;
        Ok(Written {
            rows: files.iter().map(DataFile::record_count).sum(),
            data_files: files.len() as u64,
            bytes: files.iter().map(DataFile::file_size_in_bytes).sum(),
            content,
            location: self.loaded.metadata.location().to_string(),
            files: WrittenFiles::Iceberg {
                client: self.client,
                loaded: self.loaded,
                handle: self.handle,
                files,
            },
        })
    }

    async fn take(
        &self,
        spec: &OutputSpec<'_>,
        run: &RunSpec<'_>,
    ) -> Result<(Vec<DataFile>, Option<String>)> {
        let files = staging::files(self.client, &self.staging).await?;
        if let (Some(days), Some(column)) = (run.days, spec.event_time) {
            for f in &files {
                match staging::file_day(f) {
                    Some(day) if days.contains(&day) => {}
                    other => {
                        return Err(Error::Model(format!(
                            "{}: the engine wrote rows of {} outside the days refreshed ({}); \
                             a day-partitioned model's rows must fall on the days of the {column} it reads",
                            spec.file,
                            other
                                .map_or_else(|| "no day".to_string(), crate::table::days::day_name),
                            crate::table::days::describe_days(days),
                        )));
                    }
                }
            }
        }
        let content = if run.hash {
            Some(self.hash_staged(spec).await?)
        } else {
            None
        };
        Ok((files, content))
    }

    /// The content hash of the staging table's rows, as [`Output::write`]
    /// computes it for rows it writes.
    async fn hash_staged(&self, spec: &OutputSpec<'_>) -> Result<String> {
        let target = arrow_schema(self.loaded.metadata.current_schema())?;
        let mut hasher = ContentHash::new(&target)?;
        let Some(loaded) = self
            .client
            .load_table(&self.staging.namespace, &self.staging.name)
            .await?
        else {
            return Ok(hasher.finish());
        };
        let name = format!("{}.{}", self.staging.namespace.join("."), self.staging.name);
        let source = Source::iceberg(self.client, &name, &loaded, None)?;
        let ctx = SessionContext::new();
        source.register(&ctx, None).await?;
        let failed = |e: datafusion::error::DataFusionError| {
            Error::Storage(format!(
                "{}: cannot read back what the engine wrote: {e}",
                spec.file
            ))
            .caused_by(e)
        };
        let mut stream = ctx
            .table(name.as_str())
            .await
            .map_err(failed)?
            .execute_stream()
            .await
            .map_err(failed)?;
        while let Some(batch) = stream.try_next().await.map_err(failed)? {
            hasher.add(&conform(&batch, &target, spec.file)?)?;
        }
        Ok(hasher.finish())
    }
}

/// The result's data files, not committed yet.
pub struct Written<'a> {
    /// Rows written.
    pub rows: u64,
    /// Data files written.
    pub data_files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Order-independent hash of every row and the schema (when asked).
    pub content: Option<String>,
    /// The table's location.
    pub location: String,
    files: WrittenFiles<'a>,
}

enum WrittenFiles<'a> {
    Iceberg {
        client: &'a RestClient,
        loaded: Box<LoadedTable>,
        handle: TableHandle,
        files: Vec<DataFile>,
    },
    Delta {
        closed: Box<delta::Closed>,
        target: Target,
        time_column: Option<String>,
    },
}

impl<'a> Written<'a> {
    /// Deletes the files (best effort: what remains is an orphan).
    pub async fn discard(self) {
        match self.files {
            WrittenFiles::Iceberg { handle, files, .. } => {
                for f in &files {
                    let _ = handle.io.delete(f.file_path()).await;
                }
            }
            WrittenFiles::Delta { closed, .. } => closed.discard().await,
        }
    }

    /// Stages the files: readable through [`Staged::register`], invisible
    /// to readers of the table. `record` goes into the snapshot summary or
    /// commit info.
    ///
    /// # Errors
    /// When the catalog fails or files vanished while staging (the files
    /// are then deleted by the commit path).
    pub async fn stage(
        self,
        spec: &OutputSpec<'_>,
        run: &RunSpec<'_>,
        record: BTreeMap<String, String>,
    ) -> Result<Staged<'a>> {
        match self.files {
            WrittenFiles::Iceberg {
                client,
                loaded,
                handle,
                files,
            } => stage_iceberg(client, *loaded, handle, files, spec, run, record).await,
            WrittenFiles::Delta {
                closed,
                target,
                time_column,
            } => {
                let mut record = record;
                record.insert(RUN_ID_KEY.to_string(), run.run_id.to_string());
                Ok(Staged {
                    snapshot_id: None,
                    inner: StagedInner::Delta {
                        closed,
                        target,
                        record,
                        time_column,
                        ident: spec.ident.to_string(),
                        schema: arrow_schema(spec.schema)?,
                    },
                })
            }
        }
    }
}

/// A staged result.
pub struct Staged<'a> {
    /// The staged snapshot (none when the format stages without one).
    pub snapshot_id: Option<i64>,
    inner: StagedInner<'a>,
}

enum StagedInner<'a> {
    Iceberg {
        client: &'a RestClient,
        pending: Pending,
        source: Box<Source>,
    },
    Delta {
        closed: Box<delta::Closed>,
        target: Target,
        record: BTreeMap<String, String>,
        time_column: Option<String>,
        ident: String,
        schema: arrow_schema::SchemaRef,
    },
}

/// An accepted result.
pub enum Accepted {
    /// Staged on a branch: published with its batch by [`publish`].
    Pending {
        /// What [`publish`] takes.
        pending: Pending,
        /// The result as downstream queries of this run read it.
        source: Source,
    },
    /// Committed: readers see it now.
    Published {
        /// The table as downstream queries read it.
        source: Source,
        /// The committed snapshot (Delta: version).
        snapshot_id: Option<i64>,
    },
}

impl Staged<'_> {
    /// Registers the staged result under the table's name in `ctx`: the
    /// part this run wrote (`days` of it, or everything).
    ///
    /// # Errors
    /// When the staged files or snapshot cannot be read.
    pub async fn register(&self, ctx: &SessionContext, days: Option<&BTreeSet<i32>>) -> Result<()> {
        match &self.inner {
            StagedInner::Iceberg { source, .. } => source.register(ctx, days).await,
            StagedInner::Delta {
                closed,
                ident,
                schema,
                time_column,
                ..
            } => {
                let file_schema = delta::delta_schema(schema, false);
                let provider =
                    delta::read::staged_provider(ctx, closed, &file_schema, time_column.as_deref())
                        .await?;
                register_as(ctx, ident, provider)
            }
        }
    }

    /// Drops the staged result and its files. A table whose first result
    /// this was goes too, as if it had never been written.
    pub async fn discard(self) {
        match self.inner {
            StagedInner::Iceberg {
                client, pending, ..
            } => {
                branch::discard(client, &pending).await;
                if pending.base.is_none()
                    && let Err(e) = client
                        .drop_table(&pending.namespace, &pending.table, true)
                        .await
                {
                    tracing::warn!(table = %pending.ident, error = %e, "could not drop the empty table");
                }
            }
            StagedInner::Delta { closed, .. } => closed.discard().await,
        }
    }

    /// Accepts the result: queued for [`publish`], or committed now where
    /// the format has no branches.
    ///
    /// # Errors
    /// When the commit fails (its files are then deleted).
    pub async fn accept(self) -> Result<Accepted> {
        match self.inner {
            StagedInner::Iceberg {
                pending, source, ..
            } => Ok(Accepted::Pending {
                pending,
                source: *source,
            }),
            StagedInner::Delta {
                closed,
                target,
                record,
                ident,
                ..
            } => {
                let info = record
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                let committed = closed.commit(info).await?;
                let mut table = target.open().await?;
                table
                    .load_version(committed.version)
                    .await
                    .map_err(delta::delta_err("loading the committed version"))?;
                let snapshot_id = i64::try_from(committed.version).ok();
                Ok(Accepted::Published {
                    source: Source {
                        name: ident,
                        snapshot_id,
                        table: crate::table::read::SourceTable::Delta(std::sync::Arc::new(table)),
                    },
                    snapshot_id,
                })
            }
        }
    }
}

/// Publishes a batch of accepted results atomically (one multi-table
/// commit where the catalog has it).
///
/// # Errors
/// [`Error::CommitConflict`] when another writer moved one of the tables
/// since staging (nothing is published; the staged results are dropped).
pub async fn publish(client: &RestClient, batch: &[Pending]) -> Result<()> {
    branch::publish(client, batch).await
}

/// Drops accepted results that will not be published.
pub async fn abandon(client: &RestClient, batch: &[Pending]) {
    for p in batch {
        branch::discard(client, p).await;
    }
}

/// The result's table, created on the first run, with its handle and
/// whether this run created it.
async fn open_target(
    client: &RestClient,
    namespace: Vec<String>,
    name: String,
    existing: Option<Box<LoadedTable>>,
    spec: &OutputSpec<'_>,
) -> Result<(LoadedTable, TableHandle, bool)> {
    let created = existing.is_none();
    let loaded = open_or_create(client, &namespace, &name, existing.map(|t| *t), spec).await?;
    let handle = TableHandle {
        namespace,
        name,
        io: crate::store::table_io(client, &loaded),
    };
    Ok((loaded, handle, created))
}

/// Drops a table this run created when its first result failed: it never
/// held data, so it goes as if never made. A table that got a snapshot in
/// the meantime (another writer) is kept. Failures are logged.
async fn drop_unused(client: &RestClient, handle: &TableHandle) {
    match client.load_table(&handle.namespace, &handle.name).await {
        Ok(Some(t)) if t.metadata.snapshots().next().is_none() => {
            if let Err(e) = client
                .drop_table(&handle.namespace, &handle.name, true)
                .await
            {
                tracing::warn!(table = %handle.name, error = %e, "could not drop the empty table");
            }
        }
        _ => {}
    }
}

/// Whether the table still has the result's columns (an error naming the
/// differences otherwise).
fn check_same_columns(spec: &OutputSpec<'_>, table: &Schema) -> Result<()> {
    let describe = |s: &Schema| -> Vec<String> {
        s.as_struct()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name, f.field_type))
            .collect()
    };
    let (have, want) = (describe(table), describe(spec.schema));
    if have == want {
        return Ok(());
    }
    let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
    let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
    Err(Error::Model(format!(
        "{}: the query's columns no longer match table {} (new or changed: {:?}; in the table only: {:?}). \
         floe does not rewrite a model table's schema; drop the table (e.g. with pyiceberg or Spark) \
         and run the model again to rebuild it",
        spec.file, spec.ident, missing, extra
    )))
}

/// The Iceberg table, created on the first run; a table that never held
/// data and has other columns is recreated.
async fn open_or_create(
    client: &RestClient,
    namespace: &[String],
    name: &str,
    existing: Option<LoadedTable>,
    spec: &OutputSpec<'_>,
) -> Result<LoadedTable> {
    if let Some(t) = existing {
        match check_same_columns(spec, t.metadata.current_schema()) {
            Ok(()) => return Ok(t),
            // A table that never got a snapshot (its first results failed
            // their tests) holds nothing: it is recreated with the new columns.
            Err(_) if t.metadata.snapshots().next().is_none() => {
                tracing::info!(table = %spec.ident, "recreating a table that never held data, for the new columns");
                client.drop_table(namespace, name, true).await?;
            }
            Err(e) => return Err(e),
        }
    }
    client.ensure_namespace(namespace).await?;
    let schema = spec.schema;
    let partitioning = match spec.event_time {
        Some(column) => {
            let id = schema.field_by_name(column).map(|f| f.id).unwrap_or(1);
            day_spec_on(id, column)
        }
        None => UnboundPartitionSpec::builder().build(),
    };
    let order = sort_order_by(spec.sort, schema, spec.file)?;
    let mut props: HashMap<String, String> = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
        ("floe.model".to_string(), spec.file.to_string()),
    ]);
    props.extend(spec.properties.clone());
    tracing::info!(table = %spec.ident, "creating table");
    client
        .create_table(namespace, name, schema, &partitioning, &order, &props)
        .await
}

/// The name a run's files carry.
fn file_prefix(spec: &OutputSpec<'_>, run: &RunSpec<'_>) -> String {
    format!("{}-{}", run.run_id, spec.ident)
}

/// Writes every batch to Iceberg data files through the writer lanes.
async fn write_iceberg<'a>(
    client: &'a RestClient,
    loaded: LoadedTable,
    handle: TableHandle,
    spec: &OutputSpec<'_>,
    run: &RunSpec<'_>,
    mut rows: BoxStream<'_, Result<RecordBatch>>,
) -> Result<Written<'a>> {
    let metadata = &loaded.metadata;
    let target = arrow_schema(metadata.current_schema())?;
    let sort: Vec<usize> = spec
        .sort
        .iter()
        .filter_map(|c| target.index_of(c).ok())
        .collect();
    let size = crate::table::props::target_file_size(metadata.properties());
    let prefix = file_prefix(spec, run);
    let make = |lane: usize, lanes: usize| {
        let mut w = DayWriters::new(
            metadata,
            spec.event_time.unwrap_or_default(),
            handle.io.clone(),
            &format!("{prefix}-{lane}"),
            size,
            sort.clone(),
        )?
        .sharing(lanes);
        if spec.event_time.is_none() {
            w = w.unpartitioned();
        }
        if let Some(days) = run.days {
            w = w.only_days(days.clone());
        }
        Ok(w)
    };
    let mut lanes = Lanes::start(spec.event_time, make)?;
    let mut hasher = run.hash.then(|| ContentHash::new(&target)).transpose()?;
    let mut count = 0u64;
    let file = spec.file;
    let fed: Result<()> = async {
        while let Some(batch) = rows.try_next().await? {
            let batch = conform(&batch, &target, file)?;
            if let Some(h) = hasher.as_mut() {
                h.add(&batch)?;
            }
            count += batch.num_rows() as u64;
            let sent = lanes.send(batch).await.map_err(|e| {
                Error::Model(format!(
                    "{file}: {e} (a day-partitioned model needs its event time on every row)"
                ))
                .caused_by(e)
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
            let _ = handle.io.delete(f.file_path()).await;
        }
        return Err(match e.kind() {
            Error::Model(_) => e,
            _ => Error::Model(format!("{file}: {e}")).caused_by(e),
        });
    }
    Ok(Written {
        rows: count,
        data_files: files.len() as u64,
        bytes: files.iter().map(DataFile::file_size_in_bytes).sum(),
        content: hasher.map(ContentHash::finish),
        location: loaded.metadata.location().to_string(),
        files: WrittenFiles::Iceberg {
            client,
            loaded: Box::new(loaded),
            handle,
            files,
        },
    })
}

/// Commits the files as a snapshot on the run's audit branch.
async fn stage_iceberg<'a>(
    client: &'a RestClient,
    loaded: LoadedTable,
    handle: TableHandle,
    files: Vec<DataFile>,
    spec: &OutputSpec<'_>,
    run: &RunSpec<'_>,
    record: BTreeMap<String, String>,
) -> Result<Staged<'a>> {
    let branch_name = branch::branch_name(run.run_id, spec.ident);
    let file_paths: Vec<String> = files.iter().map(|f| f.file_path().to_string()).collect();
    let change = Change {
        added: BTreeMap::from([(loaded.metadata.default_partition_spec_id(), files)]),
        removal: match run.days {
            Some(d) => Removal::Days(d.clone()),
            None => Removal::Everything,
        },
        operation: Operation::Overwrite,
        properties: record.into_iter().collect(),
        run_id: file_prefix(spec, run),
        guarded_days: BTreeSet::new(),
        branch: Some(branch_name.clone()),
        guard: None,
    };
    let base = loaded.metadata.current_snapshot_id();
    let uuid = loaded.metadata.uuid();
    let snapshot_id = match snapshot::commit_change(client, &handle, loaded, &change).await? {
        ChangeOutcome::Committed(c) => c.snapshot_id,
        ChangeOutcome::Stale(paths) => {
            return Err(Error::Storage(format!(
                "{} file(s) vanished while staging",
                paths.len()
            )));
        }
    };
    let staged_table = snapshot::reload(client, &handle).await?;
    let pending = Pending {
        ident: spec.ident.to_string(),
        namespace: handle.namespace.clone(),
        table: handle.name.clone(),
        uuid,
        branch: branch_name,
        base,
        snapshot_id,
        files: file_paths,
    };
    let source = Source::iceberg(client, spec.ident, &staged_table, Some(snapshot_id))?;
    Ok(Staged {
        snapshot_id: Some(snapshot_id),
        inner: StagedInner::Iceberg {
            client,
            pending,
            source: Box::new(source),
        },
    })
}

/// Writes every batch to Delta data files through the writer lanes.
async fn write_delta<'a>(
    target: Target,
    spec: &OutputSpec<'_>,
    run: &RunSpec<'_>,
    mut rows: BoxStream<'_, Result<RecordBatch>>,
) -> Result<Written<'a>> {
    let table_schema = arrow_schema(spec.schema)?;
    let properties: HashMap<String, String> = spec.properties.clone().into_iter().collect();
    let prefix = file_prefix(spec, run);
    let mut out = delta::Write::start(
        &target,
        delta::WriteSpec {
            schema: &table_schema,
            time_column: spec.event_time,
            properties: &properties,
            run_id: &prefix,
            replace: match run.days {
                Some(d) => Replace::Days(d.clone()),
                None => Replace::All,
            },
            target_file_size: crate::table::props::target_file_size(&properties),
            sort: spec.sort,
        },
    )
    .await?;
    let mut hasher = run
        .hash
        .then(|| ContentHash::new(&table_schema))
        .transpose()?;
    let fed: Result<()> = async {
        while let Some(batch) = rows.try_next().await? {
            let batch = conform(&batch, &table_schema, spec.file)?;
            if let Some(h) = hasher.as_mut() {
                h.add(&batch)?;
            }
            if !out.send(batch).await? {
                break;
            }
        }
        Ok(())
    }
    .await;
    let count: u64 = out.rows_per_day.values().sum();
    if let Err(e) = fed {
        out.finish(Some(e.to_string()), Vec::new()).await?;
        return Err(e);
    }
    let closed = out
        .close()
        .await
        .map_err(|e| Error::Model(format!("{}: {e}", spec.file)).caused_by(e))?;
    Ok(Written {
        rows: count,
        data_files: closed.adds.len() as u64,
        bytes: closed
            .adds
            .iter()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum(),
        content: hasher.map(ContentHash::finish),
        location: target.url.to_string(),
        files: WrittenFiles::Delta {
            closed: Box::new(closed),
            target,
            time_column: spec.event_time.map(str::to_string),
        },
    })
}

/// The last run's record of a Delta table: the `floe.*` entries of the
/// newest commit holding the record key; an error when the table exists
/// with other columns than the result's.
async fn delta_record(target: &Target, spec: &OutputSpec<'_>) -> Result<HashMap<String, String>> {
    let table = target.open().await?;
    let mut record = HashMap::new();
    let Ok(state) = table.snapshot() else {
        return Ok(record);
    };
    let want = delta::delta_schema(
        arrow_schema(spec.schema)?.as_ref(),
        spec.event_time.is_some(),
    );
    let have: Vec<String> = state
        .schema()
        .fields()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    let want = delta::read::kernel_columns(&want)?;
    if have != want {
        let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
        let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
        return Err(Error::Model(format!(
            "{}: the query's columns no longer match the Delta table {} (new or changed: {missing:?}; in the table only: {extra:?}). \
             floe does not rewrite a model table's schema; delete the table's folder and run the model again to rebuild it",
            spec.file, target.url
        )));
    }
    let history = table
        .history(Some(RECORD_LOOKBACK))
        .await
        .map_err(delta::delta_err("reading the Delta log"))?;
    if let Some(commit) = history
        .into_iter()
        .find(|c| c.info.contains_key(spec.record_key))
    {
        for (k, v) in commit.info {
            if let Some(text) = v.as_str() {
                record.insert(k, text.to_string());
            }
        }
    }
    Ok(record)
}
