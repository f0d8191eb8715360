//! The table side of an ingest run, whatever the format: open (create,
//! adopt or evolve) a job's table, find a run's commit, write a window's
//! rows through floe's writer lanes, keep the rejects, and commit ONE
//! overwrite of the window's days (guarded: a day that holds rows and gets
//! none is never emptied unless allowed), or discard what was written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use chrono::NaiveDate;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, Type};
use iceberg::{TableRequirement, TableUpdate};

use super::days::{day_name, window};
use super::lanes::Lanes;
use super::props::{JOB_KEY, RUN_ID_KEY, WINDOW_KEY};
use super::snapshot::{self, Overwrite, TableHandle};
use super::writer::DayWriters;
use super::{delta, schema};
use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, DeltaSettings, EVENT_TIME_COLUMN, Job, TableFormat, WriteMode};
use crate::rest::{CommitOutcome, LoadedTable, RestClient};

/// Where a job's tables live: the catalog (Iceberg) and the Delta root.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The catalog (none: not reachable, or a dry run).
    pub client: Option<&'a RestClient>,
    /// The pipeline's `[delta]` settings.
    pub delta: &'a DeltaSettings,
    /// The embedded warehouse folder, when the pipeline has one.
    pub embedded_warehouse: Option<&'a str>,
    /// Store settings (S3) for Delta tables.
    pub store_props: &'a HashMap<String, String>,
}

impl<'a> Place<'a> {
    /// The places of `pipeline`'s tables, reached through `client` (none:
    /// a dry run, or a catalog that is not reachable) and with `store_props`.
    pub fn of(
        pipeline: &'a crate::pipeline::Pipeline,
        client: Option<&'a RestClient>,
        store_props: &'a HashMap<String, String>,
    ) -> Self {
        Self {
            client,
            delta: &pipeline.delta,
            embedded_warehouse: pipeline.catalog.embedded_warehouse.as_deref(),
            store_props,
        }
    }
}

/// A job's table, open for one run.
#[derive(Debug)]
pub enum Destination {
    /// An Iceberg table of the catalog.
    Iceberg {
        /// The catalog.
        client: RestClient,
        /// The table as loaded (and evolved).
        loaded: Box<LoadedTable>,
        /// Whether this run created it.
        created: bool,
    },
    /// A Delta table at its location.
    Delta {
        /// Where it is.
        target: delta::Target,
    },
}

/// What a window write is given.
#[derive(Debug, Clone)]
pub struct WindowSpec<'a> {
    /// The run id (names the files).
    pub run_id: &'a str,
    /// First day of the window.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// Columns each file is sorted by.
    pub sort: &'a [String],
    /// The job's table properties.
    pub properties: &'a BTreeMap<String, String>,
    /// Files roll at this size.
    pub target_file_size: usize,
}

/// What a run's commit removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaces {
    /// The window's days (a job with an event time, `mode = "overwrite"`).
    Window,
    /// The whole table (a job without an event time).
    Table,
    /// Nothing: `mode = "append"`.
    Nothing,
}

impl Replaces {
    /// What `job`'s runs replace.
    pub fn of(job: &Job) -> Self {
        match (job.mode, job.has_event_time()) {
            (WriteMode::Append, _) => Replaces::Nothing,
            (WriteMode::Overwrite, true) => Replaces::Window,
            (WriteMode::Overwrite | WriteMode::Scd2 | WriteMode::Merge, false) => Replaces::Table,
            // A merge's days are the ones it touched (`WindowCommit::days`).
            (WriteMode::Scd2 | WriteMode::Merge, true) => Replaces::Window,
        }
    }
}

/// What one day of a write holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayFigures {
    /// Rows.
    pub rows: u64,
    /// Data files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// How a commit went.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The snapshot (a Delta table's version).
    pub snapshot_id: Option<i64>,
    /// Files the overwrite removed.
    pub replaced_files: u64,
    /// Days whose rows were removed with nothing put back.
    pub emptied_days: Vec<String>,
    /// Attempts it took.
    pub attempts: u32,
    /// An earlier attempt of this run had landed.
    pub already_landed: bool,
}

impl Destination {
    /// Whether the job's table is reached through the catalog (a Delta
    /// table only takes the catalog's storage settings, so a run goes on
    /// without it).
    pub fn needs_catalog(job: &Job) -> bool {
        job.format == TableFormat::Iceberg
    }

    /// Where a Delta job's table is, without opening it (dry runs print
    /// it); none for Iceberg tables, whose location the catalog chooses.
    ///
    /// # Errors
    /// A Delta job without a Delta root.
    pub fn planned_location(job: &Job, place: &Place<'_>) -> Result<Option<String>> {
        match job.format {
            TableFormat::Iceberg => Ok(None),
            TableFormat::Delta => Ok(Some(delta_target(job, place)?.url.to_string())),
        }
    }

    /// Opens the job's table. An Iceberg table is created on the first
    /// run; one that never held a snapshot (a first run that failed or
    /// died after creating it) is recreated with the job's contract when
    /// that no longer matches; with `schema_drift = "evolve"`, columns the
    /// contract gained are added as nullable columns. A Delta table is
    /// created by its first write.
    ///
    /// # Errors
    /// A contract the table cannot take, or the catalog failing.
    pub async fn open(job: &Job, place: &Place<'_>) -> Result<Self> {
        match job.format {
            TableFormat::Delta => Ok(Self::Delta {
                target: delta_target(job, place)?,
            }),
            TableFormat::Iceberg => {
                let client = place.client.ok_or_else(|| {
                    Error::Catalog(format!("job {}: no catalog to write through", job.name))
                })?;
                let (loaded, created) = open_iceberg(client, job).await?;
                Ok(Self::Iceberg {
                    client: client.clone(),
                    loaded: Box::new(loaded),
                    created,
                })
            }
        }
    }

    /// The table's location.
    pub fn location(&self) -> String {
        match self {
            Self::Iceberg { loaded, .. } => loaded.metadata.location().to_string(),
            Self::Delta { target } => target.url.to_string(),
        }
    }

    /// The IO and store settings that reach the table's storage, else
    /// `fallback` (for the raw landing zone beside it).
    pub fn storage(
        &self,
        fallback: (FileIO, HashMap<String, String>),
    ) -> (FileIO, HashMap<String, String>) {
        match self {
            Self::Iceberg { client, loaded, .. } => (
                crate::store::table_io(client, loaded),
                crate::store::table_props(client, loaded),
            ),
            Self::Delta { .. } => fallback,
        }
    }

    /// The snapshot (version) run `run_id` already committed, if any.
    ///
    /// # Errors
    /// When the table's history cannot be read.
    pub async fn landed(&self, run_id: &str) -> Result<Option<i64>> {
        match self {
            Self::Iceberg { loaded, .. } => Ok(snapshot::landed_snapshot(&loaded.metadata, run_id)),
            Self::Delta { target } => Ok(target
                .landed(run_id)
                .await?
                .and_then(|v| i64::try_from(v).ok())),
        }
    }

    /// The newest value of state key `key` recorded in the table (Iceberg;
    /// none for Delta, whose runs record no state).
    pub fn state(&self, key: &str) -> Option<String> {
        match self {
            Self::Iceberg { loaded, .. } => snapshot::state_value(&loaded.metadata, key),
            Self::Delta { .. } => None,
        }
    }

    /// The table at its current snapshot, as queries read it (none when it
    /// holds no data yet).
    ///
    /// # Errors
    /// When the table cannot be read.
    pub async fn source(&self, ident: &str) -> Result<Option<crate::table::read::Source>> {
        match self {
            Self::Iceberg { client, loaded, .. } => {
                if loaded.metadata.current_snapshot().is_none() {
                    return Ok(None);
                }
                crate::table::read::Source::iceberg(client, ident, loaded, None).map(Some)
            }
            Self::Delta { target } => crate::table::read::Source::delta(target, ident).await,
        }
    }

    /// Whether the table holds a row.
    ///
    /// # Errors
    /// When the Delta log cannot be read.
    pub async fn holds_rows(&self) -> Result<bool> {
        match self {
            Self::Iceberg { loaded, .. } => {
                Ok(loaded.metadata.current_snapshot().is_some_and(|s| {
                    s.summary()
                        .additional_properties
                        .get("total-records")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_none_or(|n| n > 0)
                }))
            }
            Self::Delta { target } => target.holds_rows().await,
        }
    }

    /// The Arrow schema rows are written in.
    ///
    /// # Errors
    /// An invalid contract.
    pub fn arrow_schema(&self, job: &Job) -> Result<SchemaRef> {
        match self {
            Self::Iceberg { loaded, .. } => schema::arrow_schema(loaded.metadata.current_schema()),
            Self::Delta { .. } => schema::arrow_schema(&schema::table_schema(job)?),
        }
    }

    /// Adds `new` columns (nullable) to the table's schema
    /// (`schema_drift = "evolve"`).
    ///
    /// # Errors
    /// On a Delta table (the pipeline refuses `evolve` for those), or when
    /// the schema keeps changing under concurrent writers.
    pub async fn add_columns(
        &mut self,
        job: &Job,
        new: &BTreeMap<String, ColumnType>,
    ) -> Result<()> {
        match self {
            Self::Iceberg { client, loaded, .. } => {
                let table = (**loaded).clone();
                **loaded = add_columns(client, job, table, new).await?;
                Ok(())
            }
            Self::Delta { .. } => Err(Error::Config(format!(
                "job {}: schema_drift = \"evolve\" is for Iceberg tables",
                job.name
            ))),
        }
    }

    /// Starts writing the window's rows.
    ///
    /// # Errors
    /// When the writers cannot be set up (a bad property, a Delta table of
    /// another shape).
    pub async fn start(&self, job: &Job, w: &WindowSpec<'_>) -> Result<WindowWrite> {
        let arrow = self.arrow_schema(job)?;
        match self {
            Self::Iceberg { client, loaded, .. } => {
                let io = crate::store::table_io(client, loaded);
                let sort: Vec<usize> = w
                    .sort
                    .iter()
                    .filter_map(|name| arrow.index_of(name).ok())
                    .collect();
                let by_day = job.has_event_time();
                let lanes = Lanes::start(by_day.then_some(EVENT_TIME_COLUMN), |lane, lanes| {
                    let writers = DayWriters::new(
                        &loaded.metadata,
                        EVENT_TIME_COLUMN,
                        io.clone(),
                        &format!("{}-{lane}", w.run_id),
                        w.target_file_size,
                        sort.clone(),
                    )?
                    .sharing(lanes);
                    Ok(if by_day {
                        writers
                    } else {
                        writers.unpartitioned()
                    })
                })?;
                Ok(WindowWrite::Iceberg {
                    lanes,
                    io,
                    stopped: false,
                })
            }
            Self::Delta { target } => {
                let properties: HashMap<String, String> =
                    w.properties.clone().into_iter().collect();
                let write = delta::Write::start(
                    target,
                    delta::WriteSpec {
                        schema: &arrow,
                        time_column: job.has_event_time().then_some(EVENT_TIME_COLUMN),
                        properties: &properties,
                        run_id: w.run_id,
                        replace: match Replaces::of(job) {
                            Replaces::Window => delta::Replace::window(w.from, w.to),
                            Replaces::Table => delta::Replace::All,
                            Replaces::Nothing => delta::Replace::Nothing,
                        },
                        target_file_size: w.target_file_size,
                        sort: w.sort,
                    },
                )
                .await?;
                Ok(WindowWrite::Delta(Box::new(write)))
            }
        }
    }

    /// Appends a run's rejects (one batch of [`super::rejects::arrow_schema`])
    /// to `<table>__rejects` beside the table; returns its snapshot
    /// (version).
    ///
    /// # Errors
    /// When the rejects table cannot be created or written.
    pub async fn append_rejects(
        &self,
        job: &Job,
        run_id: &str,
        batch: RecordBatch,
    ) -> Result<Option<i64>> {
        match self {
            Self::Iceberg { client, .. } => {
                super::rejects::append_iceberg(client, job, run_id, batch)
                    .await
                    .map(Some)
            }
            Self::Delta { target } => {
                Ok(i64::try_from(delta::append_rejects(target, batch).await?).ok())
            }
        }
    }

    /// After a failed run: drops a table this run created and that still
    /// holds no snapshot, so a failed first run leaves nothing behind.
    pub async fn abandon(&self, job: &Job) {
        let Self::Iceberg {
            client,
            created: true,
            ..
        } = self
        else {
            return;
        };
        match client.load_table(&job.namespace, &job.table).await {
            Ok(Some(t)) if t.metadata.snapshots().next().is_none() => {
                tracing::info!(table = %job.table_ident(), "dropping the table this failed first run created");
                if let Err(e) = client.drop_table(&job.namespace, &job.table, true).await {
                    tracing::warn!(table = %job.table_ident(), error = %e, "could not drop the empty table");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(table = %job.table_ident(), error = %e, "could not check the table after a failed first run");
            }
        }
    }
}

/// A window being written.
pub enum WindowWrite {
    /// Iceberg data files through the writer lanes.
    Iceberg {
        /// One writer per lane.
        lanes: Lanes<DayWriters>,
        /// Where the files go.
        io: FileIO,
        /// A lane stopped on an error of its own.
        stopped: bool,
    },
    /// A Delta overwrite.
    Delta(Box<delta::Write>),
}

impl WindowWrite {
    /// Takes a batch; `Ok(false)` when a writer stopped on an error of its
    /// own (reported by [`WindowWrite::close`]), so reading should stop.
    ///
    /// # Errors
    /// A row without a UTC day in the window.
    pub async fn put(&mut self, batch: RecordBatch) -> Result<bool> {
        match self {
            Self::Iceberg { lanes, stopped, .. } => {
                if !*stopped && !lanes.send(batch).await? {
                    *stopped = true;
                }
                Ok(!*stopped)
            }
            Self::Delta(w) => w.send(batch).await,
        }
    }

    /// Finishes every file; on a writer's error the files are deleted and
    /// the error returned.
    ///
    /// # Errors
    /// The first writer error.
    pub async fn close(self) -> Result<Written> {
        match self {
            Self::Iceberg { lanes, io, .. } => {
                let (files, error) = lanes.close().await;
                if let Some(e) = error {
                    delete_files(&io, &files).await;
                    return Err(e);
                }
                Ok(Written::Iceberg { files, io })
            }
            Self::Delta(w) => Ok(Written::Delta(Box::new(w.close().await?))),
        }
    }
}

/// Files written and not committed yet.
pub enum Written {
    /// Iceberg data files.
    Iceberg {
        /// The files.
        files: Vec<DataFile>,
        /// Where they are.
        io: FileIO,
    },
    /// Delta `add` actions.
    Delta(Box<delta::Closed>),
}

impl Written {
    /// Registers the written, uncommitted rows in `ctx` as `name`, as
    /// readers of the committed table will see them (a `[job.expect]` sql
    /// test reads them).
    ///
    /// # Errors
    /// When the files cannot be read as a table, or `name` has no
    /// namespace.
    pub async fn register(
        &self,
        dest: &Destination,
        job: &Job,
        ctx: &datafusion::prelude::SessionContext,
        name: &str,
    ) -> Result<()> {
        let provider: std::sync::Arc<dyn datafusion::datasource::TableProvider> = match (self, dest)
        {
            (Self::Iceberg { files, io }, Destination::Iceberg { loaded, .. }) => {
                let handle = TableHandle {
                    namespace: job.namespace.clone(),
                    name: job.table.clone(),
                    io: io.clone(),
                };
                std::sync::Arc::new(super::iceberg::provider::SnapshotTable::of_files(
                    handle.table(loaded)?,
                    files.clone(),
                )?)
            }
            (Self::Delta(closed), Destination::Delta { .. }) => {
                let file_schema = delta::delta_schema(dest.arrow_schema(job)?.as_ref(), false);
                let time = job.has_event_time().then_some(EVENT_TIME_COLUMN);
                delta::read::staged_provider(ctx, closed, &file_schema, time).await?
            }
            _ => {
                return Err(Error::Storage(
                    "the written files are not of the destination's format".into(),
                ));
            }
        };
        super::read::register_as(ctx, name, provider)
    }

    /// Rows, files and bytes per day (days since 1970-01-01).
    pub fn days(&self) -> BTreeMap<i32, DayFigures> {
        let mut out: BTreeMap<i32, DayFigures> = BTreeMap::new();
        match self {
            Self::Iceberg { files, .. } => {
                for f in files {
                    let d = out
                        .entry(snapshot::file_day(f).unwrap_or_default())
                        .or_default();
                    d.rows += f.record_count();
                    d.files += 1;
                    d.bytes += f.file_size_in_bytes();
                }
            }
            Self::Delta(closed) => {
                for (day, rows, bytes) in closed.figures() {
                    let d = out.entry(day).or_default();
                    d.rows += rows;
                    d.files += 1;
                    d.bytes += bytes;
                }
            }
        }
        out
    }

    /// Deletes the files (best effort: what remains is an orphan for
    /// `floe remove-orphans`).
    pub async fn discard(self) {
        match self {
            Self::Iceberg { files, io } => delete_files(&io, &files).await,
            Self::Delta(closed) => closed.discard().await,
        }
    }

    /// Commits ONE overwrite of the window's days into `dest`, recording
    /// the run (`properties` go to the snapshot summary or commit info).
    /// The files are deleted when the commit fails definitely.
    ///
    /// # Errors
    /// [`Error::WouldEmpty`] when a guarded day would be emptied; commit
    /// conflicts past the retry budget; storage failures.
    pub async fn commit(self, dest: &Destination, c: WindowCommit<'_>) -> Result<Committed> {
        let mut properties: Vec<(String, String)> = vec![
            (JOB_KEY.to_string(), c.job.to_string()),
            (WINDOW_KEY.to_string(), format!("{}/{}", c.from, c.to)),
        ];
        properties.extend(c.properties);
        match (self, dest) {
            (Self::Iceberg { files, io }, Destination::Iceberg { client, loaded, .. }) => {
                let handle = TableHandle {
                    namespace: c.namespace.to_vec(),
                    name: c.table.to_string(),
                    io: io.clone(),
                };
                let overwrite = Overwrite {
                    added: files.clone(),
                    days: match c.replaces {
                        Replaces::Window => {
                            Some(c.days.unwrap_or_else(|| window(c.from, c.to).collect()))
                        }
                        Replaces::Table | Replaces::Nothing => None,
                    },
                    guarded_days: c.guarded_days,
                    properties: properties.into_iter().collect(),
                    run_id: c.run_id.to_string(),
                    guard: c.guard,
                };
                let done = if c.replaces == Replaces::Table {
                    replace_table(client, &handle, loaded, &overwrite).await
                } else {
                    snapshot::commit_overwrite(client, &handle, (**loaded).clone(), &overwrite)
                        .await
                };
                match done {
                    Ok(done) => Ok(Committed {
                        snapshot_id: Some(done.snapshot_id),
                        replaced_files: done.deleted_files,
                        emptied_days: done.emptied_days.iter().map(|d| day_name(*d)).collect(),
                        attempts: done.attempts,
                        already_landed: done.already_landed,
                    }),
                    Err(e @ Error::WouldEmpty(_)) => {
                        delete_files(&io, &files).await;
                        Err(e)
                    }
                    Err(e) => Err(e),
                }
            }
            (Self::Delta(mut closed), Destination::Delta { .. }) => {
                closed.guard(c.guarded_days);
                let mut metadata: Vec<(String, serde_json::Value)> =
                    vec![(RUN_ID_KEY.to_string(), serde_json::json!(c.run_id))];
                metadata.extend(
                    properties
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::json!(v))),
                );
                let done = closed.commit(metadata).await?;
                Ok(Committed {
                    snapshot_id: i64::try_from(done.version).ok(),
                    replaced_files: done.removed_files,
                    emptied_days: done.emptied_days,
                    attempts: 1,
                    already_landed: false,
                })
            }
            (written, _) => {
                written.discard().await;
                Err(Error::Storage(
                    "files written for one table format cannot be committed to the other".into(),
                ))
            }
        }
    }
}

/// Commits `overwrite`'s files in place of every file of the table (a job
/// without an event time), as one `overwrite` snapshot.
async fn replace_table(
    client: &RestClient,
    handle: &TableHandle,
    loaded: &LoadedTable,
    overwrite: &Overwrite,
) -> Result<snapshot::CommitReport> {
    let change = snapshot::Change {
        added: BTreeMap::from([(
            loaded.metadata.default_partition_spec_id(),
            overwrite.added.clone(),
        )]),
        removal: snapshot::Removal::Everything,
        operation: iceberg::spec::Operation::Overwrite,
        properties: overwrite.properties.clone(),
        run_id: overwrite.run_id.clone(),
        guarded_days: BTreeSet::new(),
        branch: None,
        guard: None,
    };
    match snapshot::commit_change(client, handle, loaded.clone(), &change).await? {
        snapshot::ChangeOutcome::Committed(report) => Ok(report),
        snapshot::ChangeOutcome::Stale(paths) => Err(Error::Storage(format!(
            "{} file(s) vanished while replacing the table",
            paths.len()
        ))),
    }
}

/// What a window commit records and guards.
#[derive(Debug, Clone)]
pub struct WindowCommit<'a> {
    /// The job.
    pub job: &'a str,
    /// Its table's namespace.
    pub namespace: &'a [String],
    /// Its table.
    pub table: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The window replaced.
    pub from: NaiveDate,
    /// Its last day.
    pub to: NaiveDate,
    /// Days that may not be emptied.
    pub guarded_days: BTreeSet<i32>,
    /// More to record (`floe.rows-rejected`, ...).
    pub properties: Vec<(String, String)>,
    /// What the commit removes.
    pub replaces: Replaces,
    /// The days replaced instead of the window's (a merge's: the days
    /// holding its new rows and the rows they replace).
    pub days: Option<BTreeSet<i32>>,
    /// State the table must still hold (Iceberg; a Kafka job's offsets).
    pub guard: Option<snapshot::StateGuard>,
}

fn delta_target(job: &Job, place: &Place<'_>) -> Result<delta::Target> {
    delta::Target::resolve(
        job,
        place.delta,
        place.embedded_warehouse,
        place.store_props,
    )
}

async fn delete_files(io: &FileIO, files: &[DataFile]) {
    for f in files {
        if let Err(e) = io.delete(f.file_path()).await {
            tracing::warn!(path = f.file_path(), error = %e, "could not delete an uncommitted data file");
        }
    }
}

/// Whether the table is partitioned as the job writes: by `day(...)` first
/// with an event time, not at all without.
fn check_spec(job: &Job, metadata: &iceberg::spec::TableMetadata) -> Result<()> {
    if job.has_event_time() {
        return snapshot::require_day_spec(metadata).map(|_| ());
    }
    if metadata.default_partition_spec().fields().is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "table at {} is partitioned; job {} has no event_time and replaces an unpartitioned table whole",
        metadata.location(),
        job.name
    )))
}

/// Loads the job's Iceberg table, creating it (and its namespace) on the
/// first run; `true` with a table this call created.
async fn open_iceberg(client: &RestClient, job: &Job) -> Result<(LoadedTable, bool)> {
    if let Some(t) = client.load_table(&job.namespace, &job.table).await? {
        let fits = schema::check_compatible(job, t.metadata.current_schema())
            .and_then(|()| check_spec(job, &t.metadata));
        match fits {
            Ok(()) => return Ok((t, false)),
            Err(_) if t.metadata.snapshots().next().is_none() => {
                tracing::info!(table = %job.table_ident(), "recreating a table that never held data, for the job's contract");
                client.drop_table(&job.namespace, &job.table, true).await?;
            }
            Err(e) if job.schema_drift == crate::pipeline::SchemaDrift::Evolve => {
                // The job's new columns, and floe's own metadata columns when
                // another engine created the table.
                let table = t.metadata.current_schema();
                let added: Vec<(String, Type)> = schema::table_schema(job)?
                    .as_struct()
                    .fields()
                    .iter()
                    .filter(|f| table.field_by_name(&f.name).is_none())
                    .map(|f| (f.name.clone(), (*f.field_type).clone()))
                    .collect();
                if added.is_empty() {
                    return Err(e);
                }
                let t = add_fields(client, &job.namespace, &job.table, t, &added).await?;
                schema::check_compatible(job, t.metadata.current_schema())?;
                check_spec(job, &t.metadata)?;
                return Ok((t, false));
            }
            Err(e) => return Err(e),
        }
    }
    client.ensure_namespace(&job.namespace).await?;
    let table_schema = schema::table_schema(job)?;
    let order = schema::sort_order(job, &table_schema)?;
    let mut props: HashMap<String, String> = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
    ]);
    props.extend(job.properties.clone());
    tracing::info!(table = %job.table_ident(), "creating table");
    let loaded = client
        .create_table(
            &job.namespace,
            &job.table,
            &table_schema,
            &schema::job_spec(job, &table_schema)?,
            &order,
            &props,
        )
        .await?;
    Ok((loaded, true))
}

/// Adds the columns of `new` the job's table lacks as nullable columns
/// (see [`add_fields`]); returns the reloaded table.
async fn add_columns(
    client: &RestClient,
    job: &Job,
    table: LoadedTable,
    new: &BTreeMap<String, ColumnType>,
) -> Result<LoadedTable> {
    let fields: Vec<(String, Type)> = new
        .iter()
        .map(|(name, kind)| (name.clone(), schema::iceberg_type(kind)))
        .collect();
    add_fields(client, &job.namespace, &job.table, table, &fields).await
}

/// Adds the fields of `new` the table `namespace.name` lacks as nullable
/// columns, in one schema commit guarded by the current schema id and last
/// column id (retried when another writer changed the schema meanwhile);
/// returns the reloaded table.
pub(super) async fn add_fields(
    client: &RestClient,
    namespace: &[String],
    name: &str,
    mut table: LoadedTable,
    new: &[(String, Type)],
) -> Result<LoadedTable> {
    use std::sync::Arc;

    use iceberg::spec::{NestedField, Schema};
    let ident = format!("{}.{name}", namespace.join("."));
    let retry = super::retry::Retry::commits()?;
    for attempt in 1..=retry.attempts {
        let current = table.metadata.current_schema().clone();
        let missing: Vec<&(String, Type)> = new
            .iter()
            .filter(|(n, _)| current.field_by_name(n).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(table);
        }
        let mut fields: Vec<Arc<NestedField>> = current.as_struct().fields().to_vec();
        let mut id = table.metadata.last_column_id();
        let mut added = Vec::with_capacity(missing.len());
        for (field, kind) in &missing {
            id += 1;
            added.push(Arc::new(NestedField::optional(
                id,
                field.as_str(),
                kind.clone(),
            )));
        }
        // What the new columns hold is numbered after them.
        id += 1;
        fields.extend(schema::number_all_nested(added, &mut id));
        let schema = Schema::builder()
            .with_schema_id(current.schema_id() + 1)
            .with_identifier_field_ids(current.identifier_field_ids())
            .with_fields(fields)
            .build()
            .map_err(|e| Error::Config(format!("cannot evolve the schema: {e}")).caused_by(e))?;
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(table = %ident, columns = ?names, "adding columns");
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
            .commit(namespace, name, &requirements, &updates)
            .await?
        {
            CommitOutcome::Committed(t) => return Ok(*t),
            // Another writer changed the schema, or the answer was lost:
            // the reload tells (the columns are then there).
            CommitOutcome::Conflict(_) | CommitOutcome::Unknown(_) => {
                tokio::time::sleep(retry.backoff(attempt)).await;
                table = retry
                    .until_answered("reloading the table after a schema change", || {
                        client.load_table(namespace, name)
                    })
                    .await?
                    .ok_or_else(|| Error::Catalog(format!("table {ident} disappeared")))?;
            }
        }
    }
    Err(Error::CommitConflict(format!(
        "could not add columns to {ident}: its schema kept changing"
    )))
}
