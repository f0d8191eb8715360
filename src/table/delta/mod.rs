//! `format = "delta"`: the job's rows go to a Delta Lake table at
//! `<[delta] location>/<namespace levels>/<table>`, partitioned by a `day`
//! DATE column derived from `ts_utc` (Delta has no hidden partitioning), in
//! one commit that replaces exactly the window's days (a `WRITE` overwrite
//! with the predicate on `day`: every file of those days removed, the run's
//! files added). floe's writer lanes encode the files as rows arrive, one
//! open file per day streaming to the store ([`files`]), with Delta
//! statistics from each file's footer ([`stats`]); the commit happens only
//! once the run's checks passed, otherwise the files are deleted and
//! nothing is committed.
//!
//! Commits go through delta-rs's log store: on a local folder and on S3
//! stores with conditional writes (`If-None-Match`), a concurrent commit of
//! the same version fails and delta-rs retries against the new version, so
//! two runs on disjoint windows both land.

mod files;
pub mod maintain;
pub mod read;
mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::object_store::ObjectStoreExt as _;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::pipeline::{DeltaSettings, Job};
use crate::table::days::day_name;
use crate::table::days::{self, day_of};
use crate::table::lanes::Lanes;

/// The Delta partition column: the UTC day of `ts_utc`.
pub const DAY_COLUMN: &str = "day";
/// Commit-info key naming the run that made a commit.
const RUN_KEY: &str = "floe.run-id";
/// Commits a retried run looks back through for its own.
const LANDED_LOOKBACK: usize = 1000;

pub(crate) fn delta_err(what: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |e| Error::Storage(format!("{what}: {e}")).caused_by(e)
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
        Self::at(
            settings,
            embedded_warehouse,
            s3_props,
            &job.namespace,
            &job.table,
        )
    }

    /// The Delta table `namespace.table` under the pipeline's Delta root.
    pub fn at(
        settings: &DeltaSettings,
        embedded_warehouse: Option<&str>,
        s3_props: &HashMap<String, String>,
        namespace: &[String],
        table: &str,
    ) -> Result<Self> {
        let root = match (&settings.location, embedded_warehouse) {
            (Some(l), _) => l.clone(),
            (None, Some(w)) => format!("{}/delta", w.trim_end_matches('/')),
            (None, None) => {
                return Err(Error::Config(format!(
                    "{}.{table}: format = \"delta\" needs [delta] location = \"s3://bucket/delta\" (or a local folder) in the pipeline file",
                    namespace.join(".")
                )));
            }
        };
        let root = root.trim_end_matches('/');
        let text = if root.contains("://") {
            format!("{root}/{}/{table}", namespace.join("/"))
        } else {
            format!("file://{root}/{}/{table}", namespace.join("/"))
        };
        let url = reqwest::Url::parse(&text).map_err(|e| {
            Error::Config(format!("Delta table location {text:?}: {e}")).caused_by(e)
        })?;
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
            // The storage retry budget, as for every store floe opens.
            for (k, v) in crate::store::current_retry().delta_options() {
                options.insert(k.to_string(), v);
            }
        }
        options.extend(settings.storage_options.clone());
        Ok(Self { url, options })
    }

    /// The table at its newest version (none yet: a table without one).
    pub async fn open(&self) -> Result<DeltaTable> {
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

    /// The table, created (empty, with `schema`, partitioned by `day` when
    /// `by_day`, with the `delta.*` entries of `properties` as its
    /// configuration) when it does not exist yet. Creating it apart from the first write
    /// keeps concurrent first runs from each committing a table definition:
    /// one creates it, the others find it.
    async fn ensure(
        &self,
        schema: &SchemaRef,
        by_day: bool,
        properties: &HashMap<String, String>,
    ) -> Result<DeltaTable> {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        let table = self.open().await?;
        if table.version().is_some() {
            return Ok(table);
        }
        let kernel: deltalake::kernel::StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Storage(format!("the Delta schema: {e}")).caused_by(e))?;
        let created = table
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(if by_day { vec![DAY_COLUMN] } else { vec![] })
            .with_configuration(
                properties
                    .iter()
                    .filter(|(k, _)| k.starts_with("delta."))
                    .map(|(k, v)| (k.clone(), Some(v.clone()))),
            )
            .with_save_mode(SaveMode::Ignore)
            // A lost race for version 0 must not be retried as version 1,
            // which would define the table a second time: the other run's
            // definition is found below instead.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
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

    /// Whether the table holds a row (none when it does not exist).
    ///
    /// # Errors
    /// When its log cannot be read.
    pub async fn holds_rows(&self) -> Result<bool> {
        let table = self.open().await?;
        if table.snapshot().is_err() {
            return Ok(false);
        }
        // A file without statistics may hold rows.
        Ok(maintain::live_files(&table, self)
            .await?
            .iter()
            .any(|f| f.rows.is_none_or(|n| n > 0)))
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
/// binary (Delta has no fixed-size binary), and, when `by_day`, the `day`
/// partition column last (a `day` column of the table's own, which must
/// then hold the UTC day of the time column, becomes that column).
pub fn delta_schema(table: &Schema, by_day: bool) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .fields()
        .iter()
        .filter(|f| f.name() != DAY_COLUMN)
        .map(|f| delta_field(f))
        .collect();
    if by_day {
        fields.push(Field::new(DAY_COLUMN, DataType::Date32, false));
    }
    Arc::new(Schema::new(fields))
}

/// A field as Delta takes it: no field id, timestamps with offsets as
/// `timestamp` (UTC), fixed-size binary as `binary`, at any depth.
fn delta_field(f: &Field) -> Field {
    let nested = |f: &arrow_schema::FieldRef| Arc::new(delta_field(f));
    let t = match f.data_type() {
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, Some("UTC".into())),
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::List(element) => DataType::List(nested(element)),
        DataType::Map(entries, sorted) => DataType::Map(nested(entries), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(nested).collect()),
        other => other.clone(),
    };
    Field::new(f.name(), t, f.is_nullable())
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
    /// Days (`YYYY-MM-DD`) whose rows the commit removed without adding any.
    pub emptied_days: Vec<String>,
}

/// What a write replaces.
#[derive(Debug, Clone)]
pub enum Replace {
    /// These days (since 1970-01-01): their files go, and every row must
    /// fall on one of them.
    Days(BTreeSet<i32>),
    /// The whole table.
    All,
    /// Nothing: the write appends.
    Nothing,
}

impl Replace {
    /// The days `from..=to`.
    pub fn window(from: NaiveDate, to: NaiveDate) -> Self {
        Self::Days(days::window(from, to).collect())
    }

    /// The commit's predicate on `day` (contiguous days as one range).
    fn predicate(&self) -> Option<String> {
        let Self::Days(days) = self else {
            return None;
        };
        let terms: Vec<String> = days::day_ranges(days)
            .iter()
            .map(|(lo, hi)| {
                format!(
                    "({DAY_COLUMN} >= '{}' AND {DAY_COLUMN} <= '{}')",
                    day_name(*lo),
                    day_name(*hi)
                )
            })
            .collect();
        Some(if terms.is_empty() {
            "false".to_string()
        } else {
            terms.join(" OR ")
        })
    }

    /// Whether a file with `day` (none: unpartitioned) is replaced.
    fn covers(&self, day: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Days(days) => day
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .is_some_and(|d| days.contains(&days::day_number(d))),
        }
    }
}

/// An open overwrite: rows go in with [`Write::send`] and are written by
/// floe's lanes as they come; [`Write::close`] finishes the files, which
/// are then committed (with the removal of the replaced ones) or
/// discarded.
pub struct Write {
    target: Target,
    store: Arc<dyn deltalake::ObjectStore>,
    root_store: Arc<dyn deltalake::ObjectStore>,
    lanes: Lanes<files::DayFiles>,
    replace: Replace,
    by_day: bool,
    /// Rows sent per day (days since 1970-01-01; unpartitioned: day 0).
    pub rows_per_day: BTreeMap<i32, u64>,
    time_column: Option<String>,
}

/// How a write is set up.
#[derive(Debug, Clone)]
pub struct WriteSpec<'a> {
    /// The table's columns (floe's schema; `day` is added when partitioned).
    pub schema: &'a Schema,
    /// The timestamp column whose UTC day partitions the table (none:
    /// unpartitioned).
    pub time_column: Option<&'a str>,
    /// Table properties (the Parquet codec, as for Iceberg tables).
    pub properties: &'a HashMap<String, String>,
    /// Names the files.
    pub run_id: &'a str,
    /// What the commit replaces.
    pub replace: Replace,
    /// Files roll at this size.
    pub target_file_size: usize,
    /// Columns each file's rows are sorted by (none: arrival order).
    pub sort: &'a [String],
}

impl Write {
    /// Starts an overwrite (creating the table on its first write).
    pub async fn start(target: &Target, spec: WriteSpec<'_>) -> Result<Self> {
        let by_day = spec.time_column.is_some();
        if let Ok(own) = spec.schema.field_with_name(DAY_COLUMN)
            && (!by_day || own.data_type() != &DataType::Date32)
        {
            return Err(Error::Config(format!(
                "{}: the column {DAY_COLUMN} ({}) clashes with the Delta partition column floe derives from the event time; a {DAY_COLUMN} column must be a DATE holding that UTC day, in a table with an event time; rename it",
                target.url,
                own.data_type()
            )));
        }
        let schema = delta_schema(spec.schema, by_day);
        let table = target.ensure(&schema, by_day, spec.properties).await?;
        check_partitioning(&table, target, by_day)?;
        let store = table.object_store();
        let root_store = table.log_store().root_object_store(None);
        let file_schema = delta_schema(spec.schema, false);
        let props = crate::table::writer::parquet_properties(spec.properties)?;
        let safe_run: String = spec
            .run_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let sort = spec
            .sort
            .iter()
            .map(|c| {
                file_schema.index_of(c).map_err(|_| {
                    Error::Config(format!(
                        "{}: sort column {c} is not a column of the table",
                        target.url
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let only = match &spec.replace {
            Replace::Days(d) => Some(d.clone()),
            Replace::All | Replace::Nothing => None,
        };
        let lanes = Lanes::start(spec.time_column, |lane, lanes| {
            Ok(files::DayFiles::new(files::Layout {
                store: store.clone(),
                schema: file_schema.clone(),
                props: props.clone(),
                prefix: format!("part-{safe_run}-{lane}"),
                target_size: spec.target_file_size,
                share: lanes,
                time_column: spec.time_column.map(str::to_string),
                only_days: only.clone(),
                sort: sort.clone(),
            }))
        })?;
        Ok(Self {
            target: target.clone(),
            store,
            root_store,
            lanes,
            replace: spec.replace,
            by_day,
            rows_per_day: BTreeMap::new(),
            time_column: spec.time_column.map(str::to_string),
        })
    }

    /// One batch of the table's schema; `false` when a lane stopped on an
    /// error of its own (from [`Write::close`]).
    ///
    /// # Errors
    /// A batch without its time column.
    pub async fn send(&mut self, batch: arrow_array::RecordBatch) -> Result<bool> {
        match &self.time_column {
            Some(column) => {
                let ts = batch
                    .column_by_name(column)
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                    .ok_or_else(|| {
                        Error::Storage(format!("a batch without the timestamp column {column}"))
                    })?;
                for t in ts.iter().flatten() {
                    *self.rows_per_day.entry(day_of(t)).or_default() += 1;
                }
            }
            None => *self.rows_per_day.entry(0).or_default() += batch.num_rows() as u64,
        }
        self.lanes.send(batch).await
    }

    /// Finishes every file. On a lane's error, the files are deleted and
    /// the error returned.
    pub async fn close(self) -> Result<Closed> {
        let (adds, error) = self.lanes.close().await;
        let closed = Closed {
            target: self.target,
            store: self.store,
            root_store: self.root_store,
            adds,
            replace: self.replace,
            guarded: BTreeSet::new(),
            by_day: self.by_day,
        };
        match error {
            Some(e) => {
                closed.discard().await;
                Err(e)
            }
            None => Ok(closed),
        }
    }

    /// Commits (`abort: None`), or, with `abort`, deletes the files written
    /// and commits nothing.
    pub async fn finish(
        self,
        abort: Option<String>,
        metadata: Vec<(String, serde_json::Value)>,
    ) -> Result<Option<Committed>> {
        let closed = self.close().await?;
        if abort.is_some() {
            closed.discard().await;
            return Ok(None);
        }
        closed.commit(metadata).await.map(Some)
    }
}

/// Files written and not committed yet.
pub struct Closed {
    target: Target,
    store: Arc<dyn deltalake::ObjectStore>,
    root_store: Arc<dyn deltalake::ObjectStore>,
    /// The files, as `add` actions.
    pub adds: Vec<Add>,
    replace: Replace,
    guarded: BTreeSet<i32>,
    by_day: bool,
}

impl Closed {
    /// The table's store (rooted at the table), where [`Closed::adds`]'s
    /// paths lead.
    pub fn store(&self) -> Arc<dyn deltalake::ObjectStore> {
        self.store.clone()
    }

    /// The table's URL.
    pub fn table_url(&self) -> reqwest::Url {
        self.target.url.clone()
    }

    /// The store at the root of the table's bucket (or file system), where
    /// the files' full URLs lead.
    pub fn root_store(&self) -> Arc<dyn deltalake::ObjectStore> {
        self.root_store.clone()
    }

    /// Days of the replaced ones that the commit must not empty: when one
    /// holds rows and this write adds none to it, nothing is committed
    /// ([`Error::WouldEmpty`]).
    pub fn guard(&mut self, days: BTreeSet<i32>) {
        self.guarded = days;
    }

    /// Per file written: its day (days since 1970-01-01; 0 unpartitioned),
    /// rows and bytes.
    pub fn figures(&self) -> Vec<(i32, u64, u64)> {
        self.adds
            .iter()
            .map(|add| {
                let day = add
                    .partition_values
                    .get(DAY_COLUMN)
                    .cloned()
                    .flatten()
                    .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
                    .map_or(0, days::day_number);
                (
                    day,
                    records(add).unwrap_or(0),
                    u64::try_from(add.size).unwrap_or(0),
                )
            })
            .collect()
    }

    /// Deletes the files (best effort: what remains is an orphan for
    /// `floe remove-orphans`).
    pub async fn discard(self) {
        for add in &self.adds {
            if let Err(e) = self
                .store
                .delete(&deltalake::Path::from(add.path.as_str()))
                .await
            {
                tracing::warn!(file = %add.path, error = %e, "could not delete an uncommitted file");
            }
        }
    }

    /// One `WRITE` commit: the files added, the replaced ones removed, on
    /// the newest version, with `metadata` in the commit info (delta-rs
    /// retries a lost race and fails on a conflicting one: files added
    /// meanwhile to what this write replaces). The files are deleted when
    /// it fails.
    pub async fn commit(self, metadata: Vec<(String, serde_json::Value)>) -> Result<Committed> {
        match commit(&self, metadata).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }
}

/// A table floe writes is partitioned by `day` alone (or, without an
/// event time, not at all).
fn check_partitioning(table: &DeltaTable, target: &Target, by_day: bool) -> Result<()> {
    let want: Vec<String> = if by_day {
        vec![DAY_COLUMN.to_string()]
    } else {
        Vec::new()
    };
    if let Ok(snapshot) = table.snapshot()
        && *snapshot.metadata().partition_columns() != want
    {
        return Err(Error::Storage(format!(
            "the Delta table {} is partitioned by {:?}, where floe expects {want:?}",
            target.url,
            snapshot.metadata().partition_columns()
        )));
    }
    Ok(())
}

async fn commit(closed: &Closed, metadata: Vec<(String, serde_json::Value)>) -> Result<Committed> {
    let target = &closed.target;
    let adds = &closed.adds;
    let table = target.open().await?;
    check_partitioning(&table, target, closed.by_day)?;
    let snapshot = table
        .snapshot()
        .map_err(delta_err(&format!("reading {}", target.url)))?;
    let mut actions: Vec<Action> = Vec::with_capacity(adds.len());
    let mut removed = 0u64;
    // Days losing a file that holds rows.
    let mut removed_days: BTreeSet<String> = BTreeSet::new();
    let mut views = snapshot
        .snapshot()
        .file_views(table.log_store().as_ref(), None);
    while let Some(view) = views.next().await {
        let view = view.map_err(delta_err(&format!("listing {}", target.url)))?;
        let remove = view.remove_action(true);
        let day = remove
            .partition_values
            .as_ref()
            .and_then(|p| p.get(DAY_COLUMN).cloned().flatten());
        if closed.replace.covers(day.as_deref()) {
            if let Some(d) = &day
                && view.num_records().is_none_or(|n| n > 0)
            {
                removed_days.insert(d.clone());
            }
            actions.push(Action::Remove(remove));
            removed += 1;
        }
    }
    drop(views);
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for add in adds {
        let day = add
            .partition_values
            .get(DAY_COLUMN)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let d = days.entry(day).or_default();
        d.0 += 1;
        d.1 += u64::try_from(add.size).unwrap_or(0);
        actions.push(Action::Add(add.clone()));
    }
    let emptied_days: Vec<String> = removed_days
        .into_iter()
        .filter(|d| !days.contains_key(d))
        .collect();
    let refused: BTreeSet<i32> = emptied_days
        .iter()
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(days::day_number)
        .filter(|d| closed.guarded.contains(d))
        .collect();
    if !refused.is_empty() {
        return Err(Error::WouldEmpty(days::describe_days(&refused)));
    }
    let rows: u64 = adds.iter().filter_map(records).sum();
    let mut info: HashMap<String, serde_json::Value> = metadata.into_iter().collect();
    // The names delta-rs's own writes use, so a table's history reads alike.
    info.insert(
        "operationMetrics".into(),
        serde_json::json!({
            "num_added_files": adds.len(),
            "num_added_rows": rows,
            "num_removed_files": removed,
        }),
    );
    let operation = DeltaOperation::Write {
        mode: if matches!(closed.replace, Replace::Nothing) {
            SaveMode::Append
        } else {
            SaveMode::Overwrite
        },
        partition_by: closed.by_day.then(|| vec![DAY_COLUMN.to_string()]),
        predicate: closed.replace.predicate(),
    };
    // Through CommitProperties, so delta-rs's post-commit hook writes a
    // checkpoint every `delta.checkpointInterval` versions (100 by default)
    // and cleans up logs past their retention as its own writes do.
    let done = CommitBuilder::from(CommitProperties::default().with_metadata(info))
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(delta_err(&format!("committing to {}", target.url)))?;
    Ok(Committed {
        days,
        version: done.version(),
        added_files: adds.len() as u64,
        removed_files: removed,
        emptied_days,
    })
}

/// The row count an `add` action's statistics give.
fn records(add: &Add) -> Option<u64> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64()
}

/// Appends a run's rejects to the Delta table `<table>__rejects` beside the
/// target (unpartitioned: rejects are few); returns its version. Columns
/// the table lacks (`raw_bytes`, on a table from before it) are added by
/// the append (schema merge).
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
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))?;
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))?;
    let table = rejects
        .open()
        .await?
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_schema_mode(SchemaMode::Merge)
        .await
        .map_err(delta_err(&format!("appending to {}", rejects.url)))?;
    table
        .version()
        .ok_or_else(|| Error::Storage("the rejects write left no version".into()))
}
