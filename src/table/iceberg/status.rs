//! `floe status`: the health figures of a table that maintenance decides
//! from: snapshots, metadata size, data files and bytes, small files,
//! files per partition, orphan candidates.

use std::time::Duration;

use super::orphans;
use super::scan::{live_files, partition_label};
use super::{Target, small_file_limit, target_file_size};
use crate::error::Result;
use crate::rest::RestClient;
pub use crate::table::maintenance::TableStatus;

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

/// Reads `target`'s health. Orphan candidates (files older than the
/// window) cost a listing of the table location and a read of every
/// snapshot's manifests; without a window they are left at zero.
pub async fn status(
    client: &RestClient,
    target: &Target,
    orphan_window: Option<Duration>,
) -> Result<TableStatus> {
    let metadata = &target.loaded.metadata;
    let target_size = target_file_size(metadata);
    let mut s = TableStatus {
        table: target.ident.clone(),
        location: metadata.location().to_string(),
        format_version: metadata.format_version() as u8,
        snapshots: metadata.snapshots().len() as u64,
        current_snapshot_id: metadata.current_snapshot().map(|c| c.snapshot_id()),
        oldest_snapshot: metadata
            .snapshots()
            .map(|s| s.timestamp_ms())
            .min()
            .and_then(rfc3339),
        newest_snapshot: metadata
            .snapshots()
            .map(|s| s.timestamp_ms())
            .max()
            .and_then(rfc3339),
        target_file_size: target_size,
        ..TableStatus::default()
    };
    if let Some(loc) = &target.loaded.metadata_location
        && let Ok(input) = target.handle.io.new_input(loc)
    {
        s.metadata_file_bytes = input.metadata().await.ok().map(|m| m.size);
    }
    if let Some(current) = metadata.current_snapshot() {
        let table = target.handle.table(&target.loaded)?;
        let small = small_file_limit(target_size);
        for f in live_files(&table, &target.handle.io, current, false).await? {
            if f.is_delete() {
                s.delete_files += 1;
                continue;
            }
            s.data_files += 1;
            s.data_bytes += f.file.file_size_in_bytes();
            s.records += f.file.record_count();
            if f.file.file_size_in_bytes() < small {
                s.small_files += 1;
            }
            let label = partition_label(metadata, f.spec_id, f.file.partition());
            *s.files_per_partition.entry(label).or_default() += 1;
        }
    }
    s.small_file_ratio = if s.data_files == 0 {
        0.0
    } else {
        s.small_files as f64 / s.data_files as f64
    };
    s.partitions = s.files_per_partition.len() as u64;
    s.max_files_per_partition = s.files_per_partition.values().copied().max().unwrap_or(0);
    if let Some(window) = orphan_window {
        let (_, orphans) = orphans::find(client, target, window).await?;
        s.orphan_candidates = orphans.orphans.len() as u64;
        s.orphan_bytes = orphans.orphan_bytes;
    }
    Ok(s)
}
