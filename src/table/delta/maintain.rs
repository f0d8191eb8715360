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
use crate::pipeline::Pipeline;
use crate::table::delta::Target;

fn delta_err(what: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |e| Error::Maintenance(format!("{what}: {e}"))
}

/// The Delta table `ident` (`namespace.table`) of the pipeline (a job's or
/// a model's), if it is one.
pub fn target_of(pipeline: &Pipeline, ident: &str) -> Result<Option<Target>> {
    let places = crate::table::delta::Places::with_models(pipeline);
    if !places.is_delta(ident) {
        return Ok(None);
    }
    places.target(ident).map(Some)
}

/// Every Delta table of the pipeline (its jobs' and its models'), as
/// `namespace.table`.
pub fn tables(pipeline: &Pipeline) -> Vec<String> {
    crate::table::delta::Places::with_models(pipeline).tables()
}

/// A Delta table's figures as `floe maintain` reports them: live files,
/// their bytes, small ones (under the compaction limit of
/// `target_file_size`), and versions still in the log. Orphan candidates
/// are not counted for Delta tables (a full vacuum's dry run lists them).
pub async fn figures(
    target: &Target,
    target_file_size: u64,
) -> Result<crate::maintain::policy::Figures> {
    use futures::StreamExt as _;
    let table = open(target).await?;
    let mut out = crate::maintain::policy::Figures::default();
    let small = crate::maintain::small_file_limit(target_file_size);
    let state = table
        .snapshot()
        .map_err(delta_err(&format!("reading {}", target.url)))?;
    let mut views = state
        .snapshot()
        .file_views(table.log_store().as_ref(), None);
    while let Some(view) = views.next().await {
        let view = view.map_err(delta_err(&format!("listing {}", target.url)))?;
        let size = u64::try_from(view.size()).unwrap_or(0);
        out.data_files += 1;
        out.data_bytes += size;
        if size < small {
            out.small_files += 1;
        }
    }
    drop(views);
    out.snapshots = table
        .history(None)
        .await
        .map_err(delta_err("reading the Delta log"))?
        .count() as u64;
    Ok(out)
}

async fn open(target: &Target) -> Result<DeltaTable> {
    let table =
        deltalake::open_table_with_storage_options(target.url.clone(), target.options.clone())
            .await
            .map_err(delta_err(&format!("opening {}", target.url)))?;
    Ok(table)
}

/// What `floe compact` did to a Delta table.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// The table's location.
    pub table: String,
    /// `compacted` or `nothing-to-do`.
    pub status: String,
    /// Files rewritten.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Partitions rewritten.
    pub partitions: u64,
    /// The commit, when there was one.
    pub version: Option<u64>,
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
        status: if metrics.num_files_removed > 0 {
            "compacted"
        } else {
            "nothing-to-do"
        }
        .into(),
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        partitions: metrics.partitions_optimized,
        version: changed.then(|| table.version()).flatten(),
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
        .map_err(|e| Error::Config(format!("--older-than: {e}")))?;
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

/// `floe maintain` for a Delta table: compact, then expire (checkpoint,
/// log cleanup, vacuum of removed files past the policy's age, which
/// delta-rs holds to the table's deleted-file retention, 7 days by
/// default).
pub async fn maintain_table(
    target: &Target,
    ident: &str,
    settings: &crate::pipeline::MaintainSettings,
    dry_run: bool,
) -> crate::maintain::policy::TableOutcome {
    let started = std::time::Instant::now();
    let mut out = crate::maintain::policy::TableOutcome {
        table: ident.to_string(),
        status: "failed".into(),
        ..Default::default()
    };
    let older_than = match settings
        .expire_older_than
        .as_deref()
        .map(crate::duration::parse_duration)
        .transpose()
    {
        Ok(d) => d.unwrap_or(Duration::from_secs(7 * 86_400)),
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let size = settings.target_file_size.unwrap_or(128 * 1024 * 1024);
    // A model or job that never ran has no table yet: nothing to keep.
    if let Ok(table) = target.open().await
        && table.version().is_none()
    {
        out.status = "skipped".into();
        out.error = Some(format!("no Delta table at {} yet", target.url));
        out.duration_ms = started.elapsed().as_millis();
        return out;
    }
    let work = async {
        out.before = figures(target, size).await?;
        if !dry_run {
            let c = compact(target, size, None, &[]).await?;
            if c.files_removed > 0 {
                out.actions.push("compact".into());
            }
        }
        let v = vacuum(target, older_than, false, dry_run).await?;
        out.actions.push("expire-snapshots".into());
        out.files_deleted = v.files_deleted.len() as u64;
        out.after = figures(target, size).await?;
        Ok::<_, Error>(())
    };
    match work.await {
        Ok(()) => out.status = "ok".into(),
        Err(e) => {
            tracing::error!(table = ident, error = %e, "maintenance failed");
            out.error = Some(e.to_string());
        }
    }
    out.duration_ms = started.elapsed().as_millis();
    out
}
