//! Maintenance of the pipeline's Delta tables (the jobs with `format =
//! "delta"`): `floe compact` bin-packs small files per `day` partition
//! (delta-rs optimize, committed with `dataChange = false`: readers see the
//! same rows), `floe expire-snapshots` writes a checkpoint, drops log
//! entries past the table's log retention and vacuums files the log removed
//! longer ago than `--older-than` (with Delta's retention safety check),
//! and `floe remove-orphans` vacuums every unreferenced file as old.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::schema::partitions::PartitionFilter;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::TableFormat;
use crate::table::delta::Target;
use crate::table::maintenance::{CompactReport, TableStatus};

fn delta_err(what: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |e| Error::Maintenance(format!("{what}: {e}")).caused_by(e)
}

/// A Delta table's health, as `floe status` and `floe maintain` report
/// it: live files and their bytes and rows, small ones (under the
/// compaction limit of `target_file_size`), files per `day` partition, and
/// versions still in the log. Orphan candidates are not counted for Delta
/// tables (a full vacuum's dry run lists them).
pub async fn status(target: &Target, ident: &str, target_file_size: u64) -> Result<TableStatus> {
    let table = open(target).await?;
    let mut out = TableStatus {
        table: ident.to_string(),
        format: TableFormat::Delta,
        location: target.url.to_string(),
        target_file_size,
        current_snapshot_id: table.version().and_then(|v| i64::try_from(v).ok()),
        ..TableStatus::default()
    };
    let small = crate::table::iceberg::small_file_limit(target_file_size);
    for f in live_files(&table, target).await? {
        out.data_files += 1;
        out.data_bytes += f.size;
        out.records += f.rows.unwrap_or(0);
        if f.size < small {
            out.small_files += 1;
        }
        let day = f
            .day
            .map_or_else(|| "(unpartitioned)".to_string(), |d| format!("day={d}"));
        *out.files_per_partition.entry(day).or_default() += 1;
    }
    out.partitions = out.files_per_partition.len() as u64;
    out.max_files_per_partition = out.files_per_partition.values().copied().max().unwrap_or(0);
    if out.data_files > 0 {
        out.small_file_ratio = out.small_files as f64 / out.data_files as f64;
    }
    let history: Vec<_> = table
        .history(None)
        .await
        .map_err(delta_err("reading the Delta log"))?
        .collect();
    out.snapshots = history.len() as u64;
    let times: Vec<i64> = history.iter().filter_map(|c| c.timestamp).collect();
    let rfc = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
    out.oldest_snapshot = times.iter().min().copied().and_then(rfc);
    out.newest_snapshot = times.iter().max().copied().and_then(rfc);
    Ok(out)
}

/// One live data file of a Delta table.
pub(super) struct LiveFile {
    /// Its `day` partition value (none: unpartitioned).
    day: Option<String>,
    /// Bytes.
    size: u64,
    /// Rows (from its statistics; none without).
    pub(super) rows: Option<u64>,
}

/// The live data files of `table` at its loaded version.
pub(super) async fn live_files(table: &DeltaTable, target: &Target) -> Result<Vec<LiveFile>> {
    use futures::StreamExt as _;
    let state = table
        .snapshot()
        .map_err(delta_err(&format!("reading {}", target.url)))?;
    let mut views = state
        .snapshot()
        .file_views(table.log_store().as_ref(), None);
    let mut out = Vec::new();
    while let Some(view) = views.next().await {
        let view = view.map_err(delta_err(&format!("listing {}", target.url)))?;
        out.push(LiveFile {
            day: view
                .remove_action(false)
                .partition_values
                .and_then(|p| p.get(super::DAY_COLUMN).cloned().flatten()),
            size: u64::try_from(view.size()).unwrap_or(0),
            rows: view.num_records().map(|n| n as u64),
        });
    }
    Ok(out)
}

async fn open(target: &Target) -> Result<DeltaTable> {
    let table =
        deltalake::open_table_with_storage_options(target.url.clone(), target.options.clone())
            .await
            .map_err(delta_err(&format!("opening {}", target.url)))?;
    Ok(table)
}

/// What [`compact`] would rewrite (without `zorder`): the small files
/// (under 75% of `target_file_size`) of the `day` partitions (of `days`)
/// holding two or more of them, as a `planned` report.
pub async fn plan_compact(
    target: &Target,
    target_file_size: u64,
    days: Option<(NaiveDate, NaiveDate)>,
) -> Result<CompactReport> {
    let started = std::time::Instant::now();
    let status = status(target, "", target_file_size).await?;
    let table = open(target).await?;
    let small = crate::table::iceberg::small_file_limit(target_file_size);
    let in_days = |day: Option<&str>| match (days, day) {
        (None, _) => true,
        (Some((from, to)), Some(d)) => {
            NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|d| d >= from && d <= to)
        }
        (Some(_), None) => false,
    };
    let mut per_day: std::collections::BTreeMap<Option<String>, (u64, u64)> = Default::default();
    for f in live_files(&table, target).await? {
        if f.size < small && in_days(f.day.as_deref()) {
            let e = per_day.entry(f.day).or_default();
            e.0 += 1;
            e.1 += f.size;
        }
    }
    let groups: Vec<&(u64, u64)> = per_day.values().filter(|(n, _)| *n >= 2).collect();
    Ok(CompactReport {
        table: target.url.to_string(),
        format: TableFormat::Delta,
        status: "planned".into(),
        target_file_size,
        files_before: status.data_files,
        bytes_before: status.data_bytes,
        partitions_considered: per_day.len() as u64,
        groups_planned: groups.len() as u64,
        input_files: groups.iter().map(|g| g.0).sum(),
        input_bytes: groups.iter().map(|g| g.1).sum(),
        duration_ms: started.elapsed().as_millis(),
        ..CompactReport::default()
    })
}

/// Bin-packs the small files of each `day` partition (of `days`, when
/// given) into files of `target_file_size`; with `zorder` columns, rewrites
/// every file of those partitions Z-ordered by them instead.
pub async fn compact(
    target: &Target,
    target_file_size: u64,
    days: Option<(NaiveDate, NaiveDate)>,
    zorder: &[String],
) -> Result<CompactReport> {
    let started = std::time::Instant::now();
    let table = open(target).await?;
    let before = table.version();
    let filters: Vec<PartitionFilter> = match days {
        Some((from, to)) => vec![
            PartitionFilter::try_from(("day", ">=", from.to_string().as_str()))
                .map_err(delta_err("a day filter"))?,
            PartitionFilter::try_from(("day", "<=", to.to_string().as_str()))
                .map_err(delta_err("a day filter"))?,
        ],
        None => Vec::new(),
    };
    let mut builder = table.optimize().with_filters(&filters);
    if !zorder.is_empty() {
        builder = builder.with_type(OptimizeType::ZOrder(zorder.to_vec()));
    }
    if let Some(size) = std::num::NonZeroU64::new(target_file_size) {
        builder = builder.with_target_size(size);
    }
    let (table, metrics) = builder
        .await
        .map_err(delta_err(&format!("compacting {}", target.url)))?;
    let changed = table.version() != before;
    Ok(CompactReport {
        table: target.url.to_string(),
        format: TableFormat::Delta,
        status: if metrics.num_files_removed > 0 {
            "compacted"
        } else {
            "nothing-to-do"
        }
        .into(),
        target_file_size,
        input_files: metrics.num_files_removed,
        output_files: metrics.num_files_added,
        partitions_compacted: metrics.partitions_optimized,
        groups_planned: metrics.partitions_optimized,
        groups_committed: u64::from(changed) * metrics.partitions_optimized,
        snapshots: changed
            .then(|| table.version())
            .flatten()
            .and_then(|v| i64::try_from(v).ok())
            .into_iter()
            .collect(),
        duration_ms: started.elapsed().as_millis(),
        ..CompactReport::default()
    })
}

/// What `floe expire-snapshots` / `remove-orphans` did to a Delta table.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    /// The table's location.
    pub table: String,
    /// `vacuumed`, `nothing-to-do` or `planned` (dry run).
    pub status: String,
    /// Files deleted (or, on a dry run, that would be).
    pub files_deleted: Vec<String>,
    /// Log entries removed (past the table's log retention).
    pub log_entries_removed: usize,
    /// The version a checkpoint was written for.
    pub checkpoint: Option<u64>,
}

/// Checkpoints the log, drops log entries past the table's
/// `delta.logRetentionDuration`, and vacuums files older than `older_than`:
/// those the log removed (`full = false`) or every unreferenced one
/// (`full = true`, orphan removal). delta-rs refuses a retention shorter
/// than the table's `delta.deletedFileRetentionDuration` (7 days by
/// default), which protects readers still on older versions.
pub async fn vacuum(
    target: &Target,
    older_than: Duration,
    full: bool,
    dry_run: bool,
) -> Result<VacuumReport> {
    let table = open(target).await?;
    let mut checkpoint = None;
    let mut log_entries_removed = 0;
    if !dry_run && let Some(version) = table.version() {
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(delta_err(&format!("checkpointing {}", target.url)))?;
        checkpoint = Some(version);
        let retention = table
            .snapshot()
            .map(|s| s.table_config().log_retention_duration())
            .map_err(delta_err("reading the table's configuration"))?;
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        log_entries_removed = deltalake::checkpoints::cleanup_expired_logs_for(
            version,
            table.log_store().as_ref(),
            cutoff.timestamp_millis(),
            None,
        )
        .await
        .map_err(delta_err(&format!("cleaning the log of {}", target.url)))?;
    }
    let retention = chrono::Duration::from_std(older_than)
        .map_err(|e| Error::Config(format!("--older-than: {e}")).caused_by(e))?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(true)
        .with_mode(if full {
            VacuumMode::Full
        } else {
            VacuumMode::Lite
        })
        .with_dry_run(dry_run)
        .await
        .map_err(delta_err(&format!("vacuuming {}", target.url)))?;
    let status = match (dry_run, metrics.files_deleted.is_empty()) {
        (true, _) => "planned",
        (false, true) => "nothing-to-do",
        (false, false) => "vacuumed",
    };
    Ok(VacuumReport {
        table: target.url.to_string(),
        status: status.into(),
        files_deleted: metrics.files_deleted,
        log_entries_removed,
        checkpoint,
    })
}
