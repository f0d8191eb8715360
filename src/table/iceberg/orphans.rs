//! `floe remove-orphans`: delete files under a table's location that no
//! metadata references and that are older than a safety window.
//!
//! Referenced: the current metadata file and those in its metadata log,
//! statistics files, and every manifest list, manifest, data and delete
//! file of every snapshot. The window (3 days by default) protects files a
//! running writer has written but not committed yet: floe's own ingest and
//! compaction, Spark jobs, anything.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::Target;
use super::expire::delete_all;
use super::scan::{FileRef, ManifestCache, referenced};
use crate::error::Result;
use crate::rest::RestClient;
use crate::store::{self, path_key};
pub use crate::table::maintenance::{OrphanOptions, OrphanReport};

/// Default safety window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3 * 86_400);

/// Finds unreferenced files older than `older_than` under the table.
pub async fn find(
    client: &RestClient,
    target: &Target,
    older_than: Duration,
) -> Result<(Vec<store::Listed>, OrphanReport)> {
    let metadata = &target.loaded.metadata;
    let table = target.handle.table(&target.loaded)?;
    let snapshots: Vec<_> = metadata.snapshots().cloned().collect();
    let refs = referenced(
        &table,
        &target.handle.io,
        &snapshots,
        &mut ManifestCache::default(),
    )
    .await?;
    let mut extra: HashSet<String> = HashSet::new();
    if let Some(loc) = &target.loaded.metadata_location {
        extra.insert(path_key(loc));
    }
    extra.extend(
        metadata
            .metadata_log()
            .iter()
            .map(|m| path_key(&m.metadata_file)),
    );
    extra.extend(
        metadata
            .statistics_iter()
            .map(|s| path_key(&s.statistics_path)),
    );
    extra.extend(
        metadata
            .partition_statistics_iter()
            .map(|s| path_key(&s.statistics_path)),
    );
    let props = store::table_props(client, &target.loaded);
    let listed = store::list(metadata.location(), &props).await?;
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let mut report = OrphanReport {
        table: target.ident.clone(),
        files_listed: listed.len() as u64,
        ..OrphanReport::default()
    };
    let mut orphans = Vec::new();
    for f in listed {
        let key = path_key(&f.uri);
        // Hadoop-style tables keep a version hint next to the metadata.
        if refs.contains(&key) || extra.contains(&key) || key.ends_with("/version-hint.text") {
            continue;
        }
        match f.modified {
            Some(t) if t < cutoff => orphans.push(f),
            _ => report.recent_unreferenced += 1,
        }
    }
    orphans.sort_by(|a, b| a.uri.cmp(&b.uri));
    report.orphans = orphans.iter().map(|f| f.uri.clone()).collect();
    report.orphan_bytes = orphans.iter().map(|f| f.size).sum();
    Ok((orphans, report))
}

/// Removes `target`'s orphan files as `opts` say.
pub async fn remove(
    client: &RestClient,
    target: &Target,
    opts: &OrphanOptions,
) -> Result<OrphanReport> {
    let started = Instant::now();
    let (orphans, mut report) = find(client, target, opts.older_than).await?;
    report.status = if orphans.is_empty() {
        "nothing-to-do"
    } else if opts.dry_run {
        "planned"
    } else {
        "removed"
    }
    .into();
    if !opts.dry_run && !orphans.is_empty() {
        let files = orphans
            .into_iter()
            .map(|f| FileRef {
                uri: f.uri,
                size: f.size,
            })
            .collect();
        report.delete_failures = delete_all(&target.handle.io, files).await;
    }
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}
