//! What the maintenance operations take and report, the same for both
//! table formats (so `--report` JSON reads alike).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use serde::Serialize;

use super::iceberg::filter::Filter;
use crate::pipeline::TableFormat;

/// What to compact and how.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Output file size; default the table's `write.target-file-size-bytes`,
    /// else 128 MiB.
    pub target_file_size: Option<u64>,
    /// Files below this size are rewritten; default 75% of the target.
    pub min_file_size: Option<u64>,
    /// A partition needs at least this many small files to be compacted.
    pub min_input_files: usize,
    /// Largest input of one rewrite group.
    pub max_group_bytes: u64,
    /// Input bytes per commit (partial progress on long runs).
    pub commit_bytes: u64,
    /// Which files may be rewritten.
    pub filter: Filter,
    /// Sort each group by the table's sort order.
    pub sort: bool,
    /// Plan only.
    pub dry_run: bool,
    /// Groups rewritten at once.
    pub parallelism: usize,
    /// Only these UTC days (inclusive).
    pub days: Option<(NaiveDate, NaiveDate)>,
    /// Delta: Z-order the rewritten files by these columns.
    pub zorder: Vec<String>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_file_size: None,
            min_file_size: None,
            min_input_files: 5,
            max_group_bytes: 8 * 1024 * 1024 * 1024,
            commit_bytes: 2 * 1024 * 1024 * 1024,
            filter: Filter::default(),
            sort: false,
            dry_run: false,
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
            days: None,
            zorder: Vec::new(),
        }
    }
}

/// What a compaction did (or would do, on a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    /// The table.
    pub table: String,
    /// Its format.
    pub format: TableFormat,
    /// `compacted`, `nothing-to-do`, `planned` (dry run).
    pub status: String,
    /// Who rewrote the files (`floe`, `trino`).
    pub engine: String,
    /// Target file size used.
    pub target_file_size: u64,
    /// Live data files and bytes before.
    pub files_before: u64,
    /// Live data bytes before.
    pub bytes_before: u64,
    /// Live data files after (this run's changes only).
    pub files_after: u64,
    /// Live data bytes after (this run's changes only).
    pub bytes_after: u64,
    /// Partitions holding selected files.
    pub partitions_considered: u64,
    /// Partitions rewritten (committed).
    pub partitions_compacted: u64,
    /// Groups planned.
    pub groups_planned: u64,
    /// Groups committed.
    pub groups_committed: u64,
    /// Groups dropped because a concurrent writer changed their inputs.
    pub groups_dropped: u64,
    /// Input files replaced.
    pub input_files: u64,
    /// Input bytes replaced.
    pub input_bytes: u64,
    /// Files written and committed.
    pub output_files: u64,
    /// Bytes written and committed.
    pub output_bytes: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Delete files applied while rewriting.
    pub delete_files_applied: u64,
    /// The snapshots committed (`replace` snapshots; a Delta table's
    /// versions).
    pub snapshots: Vec<i64>,
    /// Wall time.
    pub duration_ms: u128,
}

/// What to expire.
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    /// Snapshots older than this are expired (unless retained).
    pub older_than: Duration,
    /// Snapshots of `main`'s history always kept, newest first.
    pub retain_last: usize,
    /// Report only.
    pub dry_run: bool,
}

/// What an expiry did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpireReport {
    /// The table.
    pub table: String,
    /// Its format.
    pub format: TableFormat,
    /// `expired`, `nothing-to-do` or `planned` (dry run).
    pub status: String,
    /// Snapshots before.
    pub snapshots_before: u64,
    /// Snapshot ids expired.
    pub expired: Vec<i64>,
    /// Snapshots kept.
    pub snapshots_retained: u64,
    /// Data files deleted.
    pub data_files_deleted: u64,
    /// Delete files deleted.
    pub delete_files_deleted: u64,
    /// Manifests deleted.
    pub manifests_deleted: u64,
    /// Manifest lists deleted.
    pub manifest_lists_deleted: u64,
    /// Bytes of data and delete files deleted.
    pub bytes_deleted: u64,
    /// Files that could not be deleted (left for remove-orphans).
    pub delete_failures: u64,
    /// Delta: the version a checkpoint was written for.
    pub checkpoint: Option<i64>,
    /// Delta: log entries removed (past the table's log retention).
    pub log_entries_removed: u64,
    /// Wall time.
    pub duration_ms: u128,
}

/// What to remove.
#[derive(Debug, Clone)]
pub struct OrphanOptions {
    /// Only files older than this are removed.
    pub older_than: Duration,
    /// Report only.
    pub dry_run: bool,
}

/// What orphan removal found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrphanReport {
    /// The table.
    pub table: String,
    /// Its format.
    pub format: TableFormat,
    /// `removed`, `nothing-to-do` or `planned` (dry run).
    pub status: String,
    /// Files under the table location.
    pub files_listed: u64,
    /// Unreferenced files older than the window (deleted unless dry run).
    pub orphans: Vec<String>,
    /// Their bytes.
    pub orphan_bytes: u64,
    /// Unreferenced files inside the window (kept).
    pub recent_unreferenced: u64,
    /// Deletes that failed.
    pub delete_failures: u64,
    /// Wall time.
    pub duration_ms: u128,
}

/// A table's health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    /// `namespace.name`.
    pub table: String,
    /// Its format.
    pub format: TableFormat,
    /// Where its files are.
    pub location: String,
    /// Iceberg format version (0 for Delta).
    pub format_version: u8,
    /// Snapshots in the metadata (a Delta table's versions in the log).
    pub snapshots: u64,
    /// The current snapshot (a Delta table's version).
    pub current_snapshot_id: Option<i64>,
    /// The oldest snapshot's time (RFC 3339, UTC).
    pub oldest_snapshot: Option<String>,
    /// The newest snapshot's time.
    pub newest_snapshot: Option<String>,
    /// Size of the current metadata file.
    pub metadata_file_bytes: Option<u64>,
    /// Live data files.
    pub data_files: u64,
    /// Their bytes.
    pub data_bytes: u64,
    /// Rows in the current snapshot (before deletes).
    pub records: u64,
    /// Live delete files.
    pub delete_files: u64,
    /// The table's target file size.
    pub target_file_size: u64,
    /// Data files below 75% of the target.
    pub small_files: u64,
    /// `small_files / data_files`.
    pub small_file_ratio: f64,
    /// Partitions with live data.
    pub partitions: u64,
    /// Most files in one partition.
    pub max_files_per_partition: u64,
    /// Files per partition, by partition path.
    pub files_per_partition: BTreeMap<String, u64>,
    /// Unreferenced files older than the orphan window.
    pub orphan_candidates: u64,
    /// Their bytes.
    pub orphan_bytes: u64,
}
