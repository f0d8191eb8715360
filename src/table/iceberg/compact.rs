//! `floe compact`: rewrite a table's small files into files of the target
//! size, partition by partition, committed as `replace` snapshots.
//!
//! Planning: the live data files of the current snapshot (optionally those
//! a filter may match) are grouped by partition; files below the small-file
//! size, or with delete files to apply, are candidates; a partition with
//! fewer than `min_input_files` candidates (and no deletes) is left alone.
//! Candidates are cut into groups of at most `max_group_bytes`.
//!
//! Rewriting streams each group through the `iceberg` crate's Arrow reader
//! (which maps old schemas to the current one by field id and applies
//! position and equality deletes) into rolling Parquet writers, so memory
//! holds one batch and one row group per group in flight, whatever the
//! table size. `--sort` instead buffers a group to sort it by the table's
//! sort order (a group is at most `max_group_bytes` of compressed input).
//!
//! Committing: groups are committed in batches of about `commit_bytes` of
//! input, each a `replace` snapshot through [`crate::table::snapshot`], which
//! re-checks against the table's head that every input file is still live
//! and that no delete file arrived in its partition since planning. Groups
//! that fail the check are dropped (their new files deleted) and the rest
//! committed, so a concurrent overwrite is never undone and a concurrent
//! append never lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_select::take::take_record_batch;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::io::FileIO;
use iceberg::scan::{FileScanTask, FileScanTaskDeleteFile};
use iceberg::spec::{
    DEFAULT_SCHEMA_NAME_MAPPING, DataContentType, DataFile, FormatVersion, NameMapping, NullOrder,
    Operation, PartitionKey, SnapshotRef, SortDirection, Struct, TableMetadata, Transform,
};
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use tokio::task::JoinError;
use uuid::Uuid;

use super::scan::{LiveFile, live_files, partition_label};
use super::{Target, small_file_limit, target_file_size};
use crate::error::{Error, Result};
use crate::rest::RestClient;
pub use crate::table::maintenance::{CompactOptions, CompactReport};
use crate::table::snapshot::{Change, ChangeOutcome, Removal, commit_change};
use crate::table::writer::{file_writers, with_sort_order};

/// Rows per batch read from the input files.
const READ_BATCH_ROWS: usize = 16 * 1024;

/// One rewrite unit: small files of one partition.
#[derive(Debug, Clone)]
struct Group {
    index: usize,
    spec_id: i32,
    partition: Struct,
    label: String,
    files: Vec<LiveFile>,
    /// Delete files to apply, per data file path.
    deletes: HashMap<String, Vec<LiveFile>>,
    bytes: u64,
    rows: u64,
}

/// A rewritten group, not yet committed.
struct Rewritten {
    group: Group,
    output: Vec<DataFile>,
}

/// Compacts `target` as `opts` say: plans groups of small files per
/// partition ([`plan_groups`]), stops there on a dry run, else rewrites
/// and commits them ([`rewrite_and_commit`]).
pub async fn compact(
    client: &RestClient,
    target: &mut Target,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let started = Instant::now();
    let metadata = target.loaded.metadata.clone();
    let (target_size, mut report) = nothing_yet(target, opts);
    let Some(snapshot) = metadata.current_snapshot().cloned() else {
        report.duration_ms = started.elapsed().as_millis();
        return Ok(report);
    };
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::Config(format!(
            "{} is an Iceberg format v{} table; floe compacts format v2 tables",
            target.ident,
            metadata.format_version() as u8
        )));
    }
    let groups = plan_groups(target, &snapshot, opts, target_size, &mut report).await?;
    if groups.is_empty() {
        report.duration_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    if opts.dry_run {
        report_plan(&groups, &mut report);
        report.duration_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    let ctx = Arc::new(RewriteContext::new(
        &metadata,
        &target.handle.io,
        target_size,
        opts,
    )?);
    let done = rewrite_and_commit(client, target, ctx, groups, &snapshot, opts, &mut report).await;
    report.duration_ms = started.elapsed().as_millis();
    done?;
    if report.groups_committed > 0 {
        report.status = "compacted".into();
    }
    Ok(report)
}

/// The output file size a compaction of `target` with `opts` aims at, and
/// its report before anything is planned.
fn nothing_yet(target: &Target, opts: &CompactOptions) -> (u64, CompactReport) {
    let target_size = opts
        .target_file_size
        .unwrap_or_else(|| target_file_size(&target.loaded.metadata))
        .max(1);
    let report = CompactReport {
        table: target.ident.clone(),
        status: "nothing-to-do".into(),
        target_file_size: target_size,
        ..CompactReport::default()
    };
    (target_size, report)
}

/// What a compaction with `opts` would rewrite, without rewriting: the
/// plan's report and the partitions of its groups (spec id and value, in
/// path order, each once), for another engine to compact.
///
/// # Errors
/// As [`compact`]'s planning.
pub async fn planned_partitions(
    target: &Target,
    opts: &CompactOptions,
) -> Result<(CompactReport, Vec<(i32, Struct)>)> {
    let (target_size, mut report) = nothing_yet(target, opts);
    let Some(snapshot) = target.loaded.metadata.current_snapshot().cloned() else {
        return Ok((report, Vec::new()));
    };
    let groups = plan_groups(target, &snapshot, opts, target_size, &mut report).await?;
    if groups.is_empty() {
        return Ok((report, Vec::new()));
    }
    report_plan(&groups, &mut report);
    let mut partitions: Vec<(i32, Struct)> = Vec::new();
    for g in groups {
        if !partitions
            .iter()
            .any(|(id, p)| *id == g.spec_id && *p == g.partition)
        {
            partitions.push((g.spec_id, g.partition));
        }
    }
    Ok((report, partitions))
}

/// Lists the live files of `snapshot` and plans the rewrite groups among
/// the data files the filter may match, recording the table's files and
/// bytes and the groups planned in `report`.
async fn plan_groups(
    target: &Target,
    snapshot: &SnapshotRef,
    opts: &CompactOptions,
    target_size: u64,
    report: &mut CompactReport,
) -> Result<Vec<Group>> {
    let metadata = &target.loaded.metadata;
    let table = target.handle.table(&target.loaded)?;
    // Bounds are only needed to evaluate a filter.
    let with_bounds = !opts.filter.all.is_empty();
    let live = live_files(&table, &target.handle.io, snapshot, with_bounds).await?;
    let (deletes, data): (Vec<LiveFile>, Vec<LiveFile>) =
        live.into_iter().partition(LiveFile::is_delete);
    check_delete_formats(&target.ident, &deletes)?;
    report.files_before = data.len() as u64;
    report.bytes_before = data.iter().map(|f| f.file.file_size_in_bytes()).sum();
    let min_size = opts
        .min_file_size
        .unwrap_or_else(|| small_file_limit(target_size));
    let bound = opts.filter.bind(metadata.current_schema())?;
    let candidates = data
        .into_iter()
        .filter(|f| bound.may_match(&f.file))
        .collect();
    let groups = plan(
        metadata,
        candidates,
        &deletes,
        min_size,
        target_size,
        opts,
        report,
    );
    report.groups_planned = groups.len() as u64;
    report.files_after = report.files_before;
    report.bytes_after = report.bytes_before;
    Ok(groups)
}

/// Refuses delete files floe cannot apply (any format but Parquet).
fn check_delete_formats(ident: &str, deletes: &[LiveFile]) -> Result<()> {
    match deletes
        .iter()
        .find(|d| d.file.file_format() != iceberg::spec::DataFileFormat::Parquet)
    {
        Some(d) => Err(Error::Config(format!(
            "{ident} has a {:?} delete file ({}); floe applies Parquet delete files only",
            d.file.file_format(),
            d.file.file_path()
        ))),
        None => Ok(()),
    }
}

/// Logs the planned groups and reports them as what a run would rewrite.
fn report_plan(groups: &[Group], report: &mut CompactReport) {
    for g in groups {
        tracing::info!(
            partition = %g.label,
            files = g.files.len(),
            bytes = g.bytes,
            "would rewrite"
        );
    }
    report.status = "planned".into();
    report.input_files = groups.iter().map(|g| g.files.len() as u64).sum();
    report.input_bytes = groups.iter().map(|g| g.bytes).sum();
}

/// Rewrites `groups`, `opts.parallelism` at a time, and commits them in
/// batches of about `opts.commit_bytes` of input ([`commit_batch`]), in
/// group order. Stops at the first failure; the files of groups rewritten
/// but not committed are then deleted.
async fn rewrite_and_commit(
    client: &RestClient,
    target: &mut Target,
    ctx: Arc<RewriteContext>,
    groups: Vec<Group>,
    planned_from: &SnapshotRef,
    opts: &CompactOptions,
    report: &mut CompactReport,
) -> Result<()> {
    let total = groups.len();
    let mut results = futures::stream::iter(groups)
        .map(|g| {
            let ctx = ctx.clone();
            tokio::spawn(async move { rewrite(&ctx, g).await })
        })
        .buffered(opts.parallelism.max(1));
    let mut pending: Vec<Rewritten> = Vec::new();
    let mut pending_bytes = 0u64;
    let mut partitions: HashSet<(i32, Struct)> = HashSet::new();
    let failure = loop {
        let next = results.next().await;
        let finished = next.is_none();
        if let Some(joined) = next {
            let rewritten = match joined_rewrite(joined) {
                Ok(r) => r,
                Err(e) => break Some(e),
            };
            log_rewrite(&target.ident, &rewritten, total);
            pending_bytes += rewritten.group.bytes;
            pending.push(rewritten);
            if pending_bytes < opts.commit_bytes {
                continue;
            }
        }
        if !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            pending_bytes = 0;
            let committed =
                commit_batch(client, target, batch, planned_from, report, &mut partitions).await;
            if let Err(e) = committed {
                break Some(e);
            }
        }
        if finished {
            break None;
        }
    };
    // Files of groups never committed (a failure stopped the run).
    for r in pending {
        discard(&target.handle.io, &r.output).await;
    }
    report.partitions_compacted = partitions.len() as u64;
    failure.map_or(Ok(()), Err)
}

/// The result of a rewrite task, its panic or cancellation as an error.
fn joined_rewrite(joined: std::result::Result<Result<Rewritten>, JoinError>) -> Result<Rewritten> {
    joined
        .unwrap_or_else(|e| Err(Error::Storage(format!("a rewrite task failed: {e}")).caused_by(e)))
}

/// Logs a rewritten group.
fn log_rewrite(table: &str, rewritten: &Rewritten, total: usize) {
    tracing::info!(
        table = %table,
        partition = %rewritten.group.label,
        group = format!("{}/{total}", rewritten.group.index + 1),
        files_in = rewritten.group.files.len(),
        files_out = rewritten.output.len(),
        "rewrote"
    );
}

/// Groups the candidate files of each partition.
fn plan(
    metadata: &TableMetadata,
    data: Vec<LiveFile>,
    deletes: &[LiveFile],
    min_size: u64,
    target_size: u64,
    opts: &CompactOptions,
    report: &mut CompactReport,
) -> Vec<Group> {
    // Keyed by spec and partition path, so groups come out in path order.
    let mut by_partition: BTreeMap<(i32, String), (Struct, Vec<LiveFile>)> = BTreeMap::new();
    for f in data {
        let label = partition_label(metadata, f.spec_id, f.file.partition());
        by_partition
            .entry((f.spec_id, label))
            .or_insert_with(|| (f.file.partition().clone(), Vec::new()))
            .1
            .push(f);
    }
    report.partitions_considered = by_partition.len() as u64;
    let mut groups = Vec::new();
    for ((spec_id, label), (partition, files)) in by_partition {
        let mut applicable: HashMap<String, Vec<LiveFile>> = HashMap::new();
        for f in &files {
            let ds: Vec<LiveFile> = deletes
                .iter()
                .filter(|d| applies(d, f, metadata))
                .cloned()
                .collect();
            if !ds.is_empty() {
                applicable.insert(f.file.file_path().to_string(), ds);
            }
        }
        let mut candidates: Vec<LiveFile> = files
            .into_iter()
            .filter(|f| {
                f.file.file_size_in_bytes() < min_size
                    || applicable.contains_key(f.file.file_path())
            })
            .collect();
        let bytes: u64 = candidates.iter().map(|f| f.file.file_size_in_bytes()).sum();
        // Rewriting must make fewer files (or apply deletes); otherwise it
        // would only churn, run after run.
        let enough = candidates.len() >= opts.min_input_files.max(2)
            && (candidates.len() as u64) > bytes.div_ceil(target_size);
        if !enough && applicable.is_empty() {
            continue;
        }
        candidates.sort_by(|a, b| a.file.file_path().cmp(b.file.file_path()));
        let mut current: Vec<LiveFile> = Vec::new();
        let mut bytes = 0u64;
        let flush = |current: &mut Vec<LiveFile>, bytes: &mut u64, groups: &mut Vec<Group>| {
            if current.is_empty() {
                return;
            }
            let files = std::mem::take(current);
            let deletes = files
                .iter()
                .filter_map(|f| {
                    applicable
                        .get(f.file.file_path())
                        .map(|d| (f.file.file_path().to_string(), d.clone()))
                })
                .collect();
            groups.push(Group {
                index: groups.len(),
                spec_id,
                partition: partition.clone(),
                label: label.clone(),
                rows: files.iter().map(|f| f.file.record_count()).sum(),
                files,
                deletes,
                bytes: std::mem::take(bytes),
            });
        };
        for f in candidates {
            let size = f.file.file_size_in_bytes();
            if !current.is_empty() && bytes + size > opts.max_group_bytes {
                flush(&mut current, &mut bytes, &mut groups);
            }
            bytes += size;
            current.push(f);
        }
        flush(&mut current, &mut bytes, &mut groups);
    }
    groups
}

/// Whether delete file `d` applies to data file `f` (Iceberg v2 rules:
/// position deletes of the same partition with a sequence number at least
/// the file's; equality deletes with a greater one, in the same partition
/// or from an unpartitioned spec).
fn applies(d: &LiveFile, f: &LiveFile, metadata: &TableMetadata) -> bool {
    let same_partition = d.spec_id == f.spec_id && d.file.partition() == f.file.partition();
    match d.file.content_type() {
        DataContentType::PositionDeletes => {
            same_partition
                && d.data_seq >= f.data_seq
                && d.file
                    .referenced_data_file()
                    .is_none_or(|p| p == f.file.file_path())
        }
        DataContentType::EqualityDeletes => {
            let global = metadata
                .partition_spec_by_id(d.spec_id)
                .is_some_and(|s| s.is_unpartitioned());
            (same_partition || global) && d.data_seq > f.data_seq
        }
        DataContentType::Data => false,
    }
}

fn name_mapping(metadata: &TableMetadata) -> Result<Option<Arc<NameMapping>>> {
    metadata
        .properties()
        .get(DEFAULT_SCHEMA_NAME_MAPPING)
        .map(|text| {
            serde_json::from_str::<NameMapping>(text)
                .map(Arc::new)
                .map_err(|e| {
                    Error::Config(format!(
                        "table property {DEFAULT_SCHEMA_NAME_MAPPING} is not a name mapping: {e}"
                    ))
                    .caused_by(e)
                })
        })
        .transpose()
}

/// Sort keys of the table's sort order (identity transforms of top-level
/// columns only).
fn sort_columns(metadata: &TableMetadata) -> Result<(i64, Vec<(usize, SortOptions)>)> {
    let order = metadata.default_sort_order();
    if order.fields.is_empty() {
        return Err(Error::Config(
            "--sort: the table has no sort order (set one, or compact without --sort)".into(),
        ));
    }
    let schema = metadata.current_schema();
    let top: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    let mut keys = Vec::new();
    for field in &order.fields {
        if field.transform != Transform::Identity {
            return Err(Error::Config(format!(
                "--sort: the sort order uses {} on column id {}; floe sorts by plain columns only",
                field.transform, field.source_id
            )));
        }
        let index = top
            .iter()
            .position(|id| *id == field.source_id)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--sort: sort column id {} is not a top-level column",
                    field.source_id
                ))
            })?;
        keys.push((
            index,
            SortOptions {
                descending: field.direction == SortDirection::Descending,
                nulls_first: field.null_order == NullOrder::First,
            },
        ));
    }
    Ok((order.order_id, keys))
}

/// What every group's rewrite shares.
struct RewriteContext {
    /// The table as planned.
    metadata: TableMetadata,
    /// IO for data files.
    io: FileIO,
    /// This compaction's id, in the names of the files it writes.
    run: String,
    /// Input bytes per output file.
    target_size: usize,
    /// Sort order id and keys, with `--sort`.
    sort: Option<(i64, Vec<(usize, SortOptions)>)>,
    /// How to read files written without field ids.
    name_mapping: Option<Arc<NameMapping>>,
}

impl RewriteContext {
    /// The context of rewrites of `metadata`'s files into files of
    /// `target_size` input bytes.
    fn new(
        metadata: &TableMetadata,
        io: &FileIO,
        target_size: u64,
        opts: &CompactOptions,
    ) -> Result<Self> {
        let sort = if opts.sort {
            Some(sort_columns(metadata)?)
        } else {
            None
        };
        Ok(Self {
            metadata: metadata.clone(),
            io: io.clone(),
            run: Uuid::new_v4().simple().to_string(),
            target_size: usize::try_from(target_size).unwrap_or(usize::MAX),
            sort,
            name_mapping: name_mapping(metadata)?,
        })
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage(e.to_string()).caused_by(e)
}

/// The scan task reading data file `f` in the current schema, with the
/// delete files that apply to it.
fn scan_task(
    f: &LiveFile,
    deletes: Option<&Vec<LiveFile>>,
    schema: &iceberg::spec::SchemaRef,
    spec: &iceberg::spec::PartitionSpecRef,
    name_mapping: Option<Arc<NameMapping>>,
) -> FileScanTask {
    let deletes = deletes
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    FileScanTaskDeleteFile::builder()
                        .with_file_path(d.file.file_path().to_string())
                        .with_file_size_in_bytes(d.file.file_size_in_bytes())
                        .with_file_type(d.file.content_type())
                        .with_partition_spec_id(d.spec_id)
                        .with_equality_ids(d.file.equality_ids())
                        .build()
                })
                .collect()
        })
        .unwrap_or_default();
    FileScanTask::builder()
        .with_file_size_in_bytes(f.file.file_size_in_bytes())
        .with_start(0)
        .with_length(f.file.file_size_in_bytes())
        .with_record_count(Some(f.file.record_count()))
        .with_data_file_path(f.file.file_path().to_string())
        .with_data_file_format(f.file.file_format())
        .with_schema(schema.clone())
        .with_project_field_ids(schema.as_struct().fields().iter().map(|c| c.id).collect())
        .with_deletes(deletes)
        .with_partition(Some(f.file.partition().clone()))
        .with_partition_spec(Some(spec.clone()))
        .with_name_mapping(name_mapping)
        .with_case_sensitive(true)
        .build()
}

/// The reader hands identity-partition columns over as run-end encoded
/// constants; the Parquet writer takes plain arrays.
fn plain(batch: RecordBatch) -> Result<RecordBatch> {
    let encoded = |t: &arrow_schema::DataType| {
        matches!(
            t,
            arrow_schema::DataType::RunEndEncoded(..) | arrow_schema::DataType::Dictionary(..)
        )
    };
    if !batch.columns().iter().any(|c| encoded(c.data_type())) {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let values = match column.data_type() {
            arrow_schema::DataType::RunEndEncoded(_, v) => v.data_type().clone(),
            arrow_schema::DataType::Dictionary(_, v) => v.as_ref().clone(),
            other => other.clone(),
        };
        let column = if column.data_type() == &values {
            column.clone()
        } else {
            arrow_cast::cast(column, &values).map_err(storage)?
        };
        fields.push(field.as_ref().clone().with_data_type(values));
        columns.push(column);
    }
    let schema = Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns).map_err(storage)
}

/// Output files of one group, cut by the input bytes they replace: each
/// file takes rows until it stands for `target` bytes of input (each input
/// row weighs its file's bytes per row), so a group of B input bytes gives
/// ceil(B / target) files whatever the writer's own size estimate says
/// (which counts buffered pages uncompressed and would cut early).
struct Outputs {
    builder: crate::table::writer::Builder,
    key: Option<PartitionKey>,
    target: f64,
    writer: Option<crate::table::writer::Writer>,
    filled: f64,
    files: Vec<DataFile>,
}

impl Outputs {
    /// The outputs of `group`, each file cut at the context's target size
    /// of input bytes (here, never by the writer).
    fn new(
        ctx: &RewriteContext,
        group: &Group,
        schema: &iceberg::spec::SchemaRef,
        spec: &iceberg::spec::PartitionSpecRef,
    ) -> Result<Self> {
        Ok(Self {
            builder: file_writers(
                &ctx.metadata,
                ctx.io.clone(),
                &format!("compact-{}-{}", ctx.run, group.index),
                usize::MAX,
            )?,
            key: (!spec.is_unpartitioned()).then(|| {
                PartitionKey::new(
                    spec.as_ref().clone(),
                    schema.clone(),
                    group.partition.clone(),
                )
            }),
            target: ctx.target_size as f64,
            writer: None,
            filled: 0.0,
            files: Vec::new(),
        })
    }

    /// Writes `batch`, whose rows each stand for `bytes_per_row` input
    /// bytes, closing a file whenever it reaches the target.
    async fn write(&mut self, batch: &RecordBatch, bytes_per_row: f64) -> Result<()> {
        let n = batch.num_rows();
        let mut offset = 0;
        while offset < n {
            let room = (self.target - self.filled).max(0.0);
            let fit = ((room / bytes_per_row.max(f64::MIN_POSITIVE)).ceil() as usize).max(1);
            let len = fit.min(n - offset);
            let writer = match &mut self.writer {
                Some(w) => w,
                empty => empty.insert(
                    self.builder
                        .build(self.key.clone())
                        .await
                        .map_err(storage)?,
                ),
            };
            writer
                .write(batch.slice(offset, len))
                .await
                .map_err(storage)?;
            self.filled += len as f64 * bytes_per_row;
            offset += len;
            if self.filled >= self.target {
                self.finish_file().await?;
            }
        }
        Ok(())
    }

    /// Closes the open file, if any.
    async fn finish_file(&mut self) -> Result<()> {
        self.filled = 0.0;
        if let Some(mut w) = self.writer.take() {
            self.files.extend(w.close().await.map_err(storage)?);
        }
        Ok(())
    }

    /// Closes the open file; returns every file written.
    async fn close(mut self) -> Result<Vec<DataFile>> {
        self.finish_file().await?;
        Ok(self.files)
    }

    /// Closes what is open and deletes every file written.
    async fn abandon(mut self, io: &FileIO) {
        if let Some(mut w) = self.writer.take()
            && let Ok(files) = w.close().await
        {
            self.files.extend(files);
        }
        discard(io, &self.files).await;
    }
}

/// Rewrites one group into new files (not committed): copies its rows
/// ([`copy_rows`]), tags the files with the sort order under `--sort`, and
/// checks no row went missing ([`check_row_counts`]). On failure the
/// group's new files are deleted.
async fn rewrite(ctx: &RewriteContext, group: Group) -> Result<Rewritten> {
    let schema = ctx.metadata.current_schema().clone();
    let spec = ctx
        .metadata
        .partition_spec_by_id(group.spec_id)
        .ok_or_else(|| Error::Storage(format!("unknown partition spec {}", group.spec_id)))?
        .clone();
    let mut outputs = Outputs::new(ctx, &group, &schema, &spec)?;
    let rows = match copy_rows(ctx, &group, &schema, &spec, &mut outputs).await {
        Ok(rows) => rows,
        Err(e) => {
            outputs.abandon(&ctx.io).await;
            return Err(e);
        }
    };
    let mut output = outputs.close().await?;
    if let Some((order_id, _)) = &ctx.sort {
        output = output
            .into_iter()
            .map(|f| with_sort_order(f, *order_id as i32, group.spec_id))
            .collect::<Result<_>>()?;
    }
    check_row_counts(ctx, &group, rows, &output).await?;
    Ok(Rewritten { group, output })
}

/// Reads the group's files (in the current schema, their delete files
/// applied) into `outputs`, batch by batch; under `--sort` the batches are
/// buffered and written sorted at the end. Returns the rows read.
async fn copy_rows(
    ctx: &RewriteContext,
    group: &Group,
    schema: &iceberg::spec::SchemaRef,
    spec: &iceberg::spec::PartitionSpecRef,
    outputs: &mut Outputs,
) -> Result<u64> {
    let reader = ArrowReaderBuilder::new(ctx.io.clone(), iceberg::Runtime::current())
        .with_batch_size(READ_BATCH_ROWS)
        .with_data_file_concurrency_limit(1)
        .build();
    let mut rows = 0u64;
    let mut buffered: Vec<RecordBatch> = Vec::new();
    for f in &group.files {
        let task = scan_task(
            f,
            group.deletes.get(f.file.file_path()),
            schema,
            spec,
            ctx.name_mapping.clone(),
        );
        let bytes_per_row =
            f.file.file_size_in_bytes() as f64 / f.file.record_count().max(1) as f64;
        let mut batches = reader
            .clone()
            .read(Box::pin(futures::stream::iter([Ok(task)])))
            .map_err(storage)?
            .stream();
        while let Some(batch) = batches.try_next().await.map_err(|e| {
            Error::Storage(format!("reading {}: {e}", f.file.file_path())).caused_by(e)
        })? {
            let batch = plain(batch)?;
            rows += batch.num_rows() as u64;
            if ctx.sort.is_some() {
                buffered.push(batch);
            } else {
                outputs.write(&batch, bytes_per_row).await?;
            }
        }
    }
    if let Some((_, keys)) = &ctx.sort {
        write_sorted(keys, buffered, group, outputs).await?;
    }
    Ok(rows)
}

/// Writes a group's buffered batches sorted by `keys` (each row weighing
/// the group's input bytes per row).
async fn write_sorted(
    keys: &[(usize, SortOptions)],
    buffered: Vec<RecordBatch>,
    group: &Group,
    outputs: &mut Outputs,
) -> Result<()> {
    let Some(first) = buffered.first() else {
        return Ok(());
    };
    let all = arrow_select::concat::concat_batches(&first.schema(), &buffered).map_err(storage)?;
    drop(buffered);
    let columns: Vec<SortColumn> = keys
        .iter()
        .map(|(i, o)| SortColumn {
            values: all.column(*i).clone(),
            options: Some(*o),
        })
        .collect();
    let order = lexsort_to_indices(&columns, None).map_err(storage)?;
    let sorted = take_record_batch(&all, &order).map_err(storage)?;
    drop(all);
    let bytes_per_row = group.bytes as f64 / group.rows.max(1) as f64;
    outputs.write(&sorted, bytes_per_row).await
}

/// Checks a rewrite wrote every row it read and, without deletes to
/// apply, read every row the group holds; otherwise deletes its files.
async fn check_row_counts(
    ctx: &RewriteContext,
    group: &Group,
    rows: u64,
    output: &[DataFile],
) -> Result<()> {
    let written: u64 = output.iter().map(DataFile::record_count).sum();
    if (group.deletes.is_empty() && (rows != group.rows || written != group.rows))
        || written != rows
    {
        discard(&ctx.io, output).await;
        return Err(Error::Storage(format!(
            "partition {}: the input files hold {} rows but {rows} were read and {written} written; nothing was committed",
            group.label, group.rows
        )));
    }
    Ok(())
}

/// Commits a batch of rewritten groups, dropping those whose inputs a
/// concurrent writer changed.
async fn commit_batch(
    client: &RestClient,
    target: &mut Target,
    mut batch: Vec<Rewritten>,
    planned_from: &SnapshotRef,
    report: &mut CompactReport,
    partitions: &mut HashSet<(i32, Struct)>,
) -> Result<()> {
    // Each round either commits or drops at least one group.
    while !batch.is_empty() {
        target.reload(client).await?;
        let change = replace_change(&batch, planned_from.sequence_number());
        match commit_change(client, &target.handle, target.loaded.clone(), &change).await? {
            ChangeOutcome::Committed(c) => {
                report.snapshots.push(c.snapshot_id);
                for r in &batch {
                    record_committed(r, report, partitions);
                }
                return Ok(());
            }
            ChangeOutcome::Stale(stale) => {
                batch = drop_stale(target, batch, stale, report).await;
            }
        }
    }
    Ok(())
}

/// The `replace` snapshot of a batch: its groups' outputs in, their inputs
/// out, provided no delete file reached them after sequence number `since`.
fn replace_change(batch: &[Rewritten], since: i64) -> Change {
    let mut added: BTreeMap<i32, Vec<DataFile>> = BTreeMap::new();
    let mut paths = HashSet::new();
    for r in batch {
        added
            .entry(r.group.spec_id)
            .or_default()
            .extend(r.output.iter().cloned());
        paths.extend(r.group.files.iter().map(|f| f.file.file_path().to_string()));
    }
    Change {
        added,
        removal: Removal::Files { paths, since },
        operation: Operation::Replace,
        properties: HashMap::from([
            ("floe.maintenance".to_string(), "compact".to_string()),
            ("floe.compact.groups".to_string(), batch.len().to_string()),
        ]),
        run_id: format!("compact-{}", Uuid::new_v4().simple()),
        guarded_days: Default::default(),
        branch: None,
        guard: None,
    }
}

/// Adds a committed group to the report and its partition to `partitions`.
fn record_committed(
    r: &Rewritten,
    report: &mut CompactReport,
    partitions: &mut HashSet<(i32, Struct)>,
) {
    let in_bytes = r.group.bytes;
    let out_bytes: u64 = r.output.iter().map(DataFile::file_size_in_bytes).sum();
    report.groups_committed += 1;
    report.input_files += r.group.files.len() as u64;
    report.input_bytes += in_bytes;
    report.output_files += r.output.len() as u64;
    report.output_bytes += out_bytes;
    report.rows += r.group.rows;
    report.delete_files_applied += r
        .group
        .deletes
        .values()
        .flatten()
        .map(|d| d.file.file_path())
        .collect::<HashSet<_>>()
        .len() as u64;
    report.files_after =
        (report.files_after + r.output.len() as u64).saturating_sub(r.group.files.len() as u64);
    report.bytes_after = (report.bytes_after + out_bytes).saturating_sub(in_bytes);
    partitions.insert((r.group.spec_id, r.group.partition.clone()));
}

/// Drops (and deletes the outputs of) the groups of `batch` with an input
/// among `stale`; returns the others.
async fn drop_stale(
    target: &Target,
    batch: Vec<Rewritten>,
    stale: Vec<String>,
    report: &mut CompactReport,
) -> Vec<Rewritten> {
    let stale: HashSet<String> = stale.into_iter().collect();
    let (dropped, kept): (Vec<Rewritten>, Vec<Rewritten>) = batch.into_iter().partition(|r| {
        r.group
            .files
            .iter()
            .any(|f| stale.contains(f.file.file_path()))
    });
    for r in dropped {
        tracing::warn!(
            table = %target.ident,
            partition = %r.group.label,
            "a concurrent commit changed this partition's input files; its rewrite is dropped"
        );
        report.groups_dropped += 1;
        discard(&target.handle.io, &r.output).await;
    }
    kept
}

async fn discard(io: &FileIO, files: &[DataFile]) {
    for f in files {
        if let Err(e) = io.delete(f.file_path()).await {
            tracing::warn!(path = f.file_path(), error = %e, "could not delete an uncommitted file");
        }
    }
}
