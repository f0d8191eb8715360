//! `floe expire-snapshots`: drop old snapshots from a table's metadata,
//! then delete the manifest lists, manifests, data and delete files that
//! only they referenced.
//!
//! Never expired: the snapshot of every branch and tag, the last
//! `retain_last` snapshots of `main`'s history, anything newer than the
//! cut-off, and for every ingest job the newest snapshot that holds its
//! run record (which a retried run checks to avoid committing twice). floe
//! carries the records forward in every snapshot it commits
//! (`floe.last-run.<job>`), so after a compaction that snapshot is the
//! current one and the replaced ingest snapshot can go with its files.
//!
//! The metadata change is committed first (guarded by every ref's current
//! snapshot, retried on conflict); files are deleted only afterwards, and
//! only those no snapshot of the table as reloaded after the commit
//! references. A crash in between leaves unreferenced files for
//! `remove-orphans`, never a snapshot with missing files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use futures::StreamExt;
use iceberg::spec::{SnapshotRef, TableMetadata};
use iceberg::{TableRequirement, TableUpdate};

use super::Target;
use super::scan::{FileRef, ManifestCache, Referenced, referenced};
use crate::error::{Error, Result};
use crate::rest::{CommitOutcome, RestClient};
pub use crate::table::maintenance::{ExpireOptions, ExpireReport};
use crate::table::retry::Retry;
use crate::table::snapshot::run_records;

/// Deletes in flight.
const DELETE_CONCURRENCY: usize = 16;

/// The snapshot ids to expire from `metadata`.
pub fn select(
    metadata: &TableMetadata,
    refs: &HashMap<String, iceberg::spec::SnapshotReference>,
    opts: &ExpireOptions,
    now_ms: i64,
) -> BTreeSet<i64> {
    let cutoff = now_ms - i64::try_from(opts.older_than.as_millis()).unwrap_or(i64::MAX);
    let mut keep: HashSet<i64> = refs.values().map(|r| r.snapshot_id).collect();
    if let Some(current) = metadata.current_snapshot() {
        keep.insert(current.snapshot_id());
        // main's history, newest first (bounded by the snapshot count).
        let mut next = Some(current.snapshot_id());
        let mut kept = 0;
        while let Some(id) = next {
            if kept >= opts.retain_last.max(1) {
                break;
            }
            let Some(s) = metadata.snapshot_by_id(id) else {
                break;
            };
            keep.insert(id);
            kept += 1;
            next = s.parent_snapshot_id();
        }
    }
    // The newest snapshot holding each ingest job's run record (its own,
    // or carried forward by a later floe commit).
    let mut newest_run: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    for s in metadata.snapshots() {
        for (job, _) in run_records(&s.summary().additional_properties) {
            let key = (s.sequence_number(), s.timestamp_ms(), s.snapshot_id());
            let e = newest_run.entry(job).or_insert(key);
            if key > *e {
                *e = key;
            }
        }
    }
    keep.extend(newest_run.values().map(|(_, _, id)| *id));
    metadata
        .snapshots()
        .filter(|s| s.timestamp_ms() < cutoff && !keep.contains(&s.snapshot_id()))
        .map(|s| s.snapshot_id())
        .collect()
}

/// Expires `target`'s snapshots as `opts` say: commits their removal from
/// the metadata ([`commit_expiry`]), then deletes the files only they
/// referenced ([`Unreferenced`]). A dry run commits and deletes nothing.
pub async fn expire(
    client: &RestClient,
    target: &mut Target,
    opts: &ExpireOptions,
) -> Result<ExpireReport> {
    let started = Instant::now();
    let mut report = ExpireReport {
        table: target.ident.clone(),
        status: "nothing-to-do".into(),
        ..ExpireReport::default()
    };
    let (before, expired_ids) = commit_expiry(client, target, opts, &mut report).await?;
    report.expired = expired_ids.iter().copied().collect();
    if expired_ids.is_empty() {
        report.snapshots_retained = report.snapshots_before;
        report.duration_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    let expired_snaps: Vec<SnapshotRef> = expired_ids
        .iter()
        .filter_map(|id| before.snapshot_by_id(*id).cloned())
        .collect();
    let retained_snaps = retained(client, target, &before, &expired_ids, opts.dry_run).await?;
    report.snapshots_retained = retained_snaps.len() as u64;
    let (unreferenced, kept) = Unreferenced::find(
        target,
        &before,
        &expired_ids,
        &expired_snaps,
        &retained_snaps,
    )
    .await?;
    unreferenced.record(&mut report);
    if opts.dry_run {
        report.status = "planned".into();
        report.duration_ms = started.elapsed().as_millis();
        return Ok(report);
    }
    let all = unreferenced.into_deletions(&kept);
    report.delete_failures = delete_all(&target.handle.io, all).await;
    report.status = "expired".into();
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

/// Selects the snapshots to expire and commits their removal, guarded by
/// the table's uuid and every ref's snapshot; on a conflict or an unknown
/// outcome reloads and selects again (bounded). Returns the metadata the
/// selection was made on and the ids expired (none when, after a reload,
/// nothing is left to expire: an unknown outcome may have landed). A dry
/// run selects without committing. Records the snapshot count in `report`.
async fn commit_expiry(
    client: &RestClient,
    target: &mut Target,
    opts: &ExpireOptions,
    report: &mut ExpireReport,
) -> Result<(TableMetadata, BTreeSet<i64>)> {
    let retry = Retry::commits()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let metadata = target.loaded.metadata.clone();
        let expired = select_now(&metadata, &target.loaded.refs, opts);
        report.snapshots_before = metadata.snapshots().len() as u64;
        if expired.is_empty() || opts.dry_run {
            return Ok((metadata, expired));
        }
        let (requirements, updates) = expiry_commit(&metadata, &target.loaded.refs, &expired);
        let (namespace, name) = (&target.handle.namespace, &target.handle.name);
        match client
            .commit(namespace, name, &requirements, &updates)
            .await?
        {
            CommitOutcome::Committed(_) => return Ok((metadata, expired)),
            CommitOutcome::Conflict(reason) if attempt < retry.attempts => {
                tracing::info!(attempt, %reason, "expire conflicted with another commit; re-planning");
            }
            CommitOutcome::Unknown(reason) if attempt < retry.attempts => {
                tracing::warn!(attempt, %reason, "expire outcome unknown; reloading");
            }
            CommitOutcome::Conflict(reason) | CommitOutcome::Unknown(reason) => {
                return Err(Error::CommitConflict(format!(
                    "expiring snapshots of {} failed after {attempt} attempts: {reason}",
                    target.ident
                )));
            }
        }
        tokio::time::sleep(retry.backoff(attempt)).await;
        let reloaded = retry
            .until_answered("reloading the table after an expiry", || {
                crate::table::snapshot::reload(client, &target.handle)
            })
            .await?;
        target.loaded = reloaded;
        // An unknown outcome may have landed: nothing left to expire then.
        if select_now(&target.loaded.metadata, &target.loaded.refs, opts).is_empty() {
            return Ok((target.loaded.metadata.clone(), BTreeSet::new()));
        }
    }
}

/// [`select`] as of now.
fn select_now(
    metadata: &TableMetadata,
    refs: &HashMap<String, iceberg::spec::SnapshotReference>,
    opts: &ExpireOptions,
) -> BTreeSet<i64> {
    select(metadata, refs, opts, chrono::Utc::now().timestamp_millis())
}

/// The requirements and updates removing the `expired` snapshots (and
/// their statistics files) from `metadata`: the table must be the same,
/// and every ref where it was (a ref moved meanwhile may now need an
/// expired snapshot: then the expiry is planned again).
fn expiry_commit(
    metadata: &TableMetadata,
    refs: &HashMap<String, iceberg::spec::SnapshotReference>,
    expired: &BTreeSet<i64>,
) -> (Vec<TableRequirement>, Vec<TableUpdate>) {
    let mut requirements = vec![TableRequirement::UuidMatch {
        uuid: metadata.uuid(),
    }];
    requirements.extend(
        refs.iter()
            .map(|(name, r)| TableRequirement::RefSnapshotIdMatch {
                r#ref: name.clone(),
                snapshot_id: Some(r.snapshot_id),
            }),
    );
    let mut updates = vec![TableUpdate::RemoveSnapshots {
        snapshot_ids: expired.iter().copied().collect(),
    }];
    for id in expired {
        if metadata.statistics_for_snapshot(*id).is_some() {
            updates.push(TableUpdate::RemoveStatistics { snapshot_id: *id });
        }
        if metadata.partition_statistics_for_snapshot(*id).is_some() {
            updates.push(TableUpdate::RemovePartitionStatistics { snapshot_id: *id });
        }
    }
    (requirements, updates)
}

/// The snapshots that stay: on a dry run, those of `before` not selected;
/// otherwise whatever the table holds after the commit (including
/// snapshots concurrent writers added meanwhile), reloading `target`.
async fn retained(
    client: &RestClient,
    target: &mut Target,
    before: &TableMetadata,
    expired_ids: &BTreeSet<i64>,
    dry_run: bool,
) -> Result<Vec<SnapshotRef>> {
    if dry_run {
        return Ok(before
            .snapshots()
            .filter(|s| !expired_ids.contains(&s.snapshot_id()))
            .cloned()
            .collect());
    }
    target.reload(client).await?;
    Ok(target.loaded.metadata.snapshots().cloned().collect())
}

/// The files only expired snapshots reference: what expiry deletes.
struct Unreferenced {
    data: Vec<FileRef>,
    deletes: Vec<FileRef>,
    manifests: Vec<FileRef>,
    lists: Vec<FileRef>,
    /// Statistics files of the expired snapshots; deleted only when no
    /// retained snapshot references them.
    stats: Vec<FileRef>,
}

impl Unreferenced {
    /// The files `expired_snaps` reference and `retained_snaps` do not,
    /// with what the retained ones reference.
    async fn find(
        target: &Target,
        before: &TableMetadata,
        expired_ids: &BTreeSet<i64>,
        expired_snaps: &[SnapshotRef],
        retained_snaps: &[SnapshotRef],
    ) -> Result<(Self, Referenced)> {
        let table = target.handle.table(&target.loaded)?;
        let mut cache = ManifestCache::default();
        let gone = referenced(&table, &target.handle.io, expired_snaps, &mut cache).await?;
        let kept = referenced(&table, &target.handle.io, retained_snaps, &mut cache).await?;
        let unreferenced = Self {
            data: only_in(&gone.data_files, &kept.data_files),
            deletes: only_in(&gone.delete_files, &kept.delete_files),
            manifests: only_in(&gone.manifests, &kept.manifests),
            lists: only_in(&gone.manifest_lists, &kept.manifest_lists),
            stats: statistics_files(before, expired_ids),
        };
        Ok((unreferenced, kept))
    }

    /// Records the counts and bytes to delete in `report`.
    fn record(&self, report: &mut ExpireReport) {
        report.data_files_deleted = self.data.len() as u64;
        report.delete_files_deleted = self.deletes.len() as u64;
        report.manifests_deleted = self.manifests.len() as u64;
        report.manifest_lists_deleted = self.lists.len() as u64;
        report.bytes_deleted = self.data.iter().chain(&self.deletes).map(|f| f.size).sum();
    }

    /// Every file to delete, leaving statistics files `kept` references.
    fn into_deletions(self, kept: &Referenced) -> Vec<FileRef> {
        self.data
            .into_iter()
            .chain(self.deletes)
            .chain(self.manifests)
            .chain(self.lists)
            .chain(self.stats.into_iter().filter(|s| !still_used(kept, s)))
            .collect()
    }
}

/// The files of `all` that `keep` does not hold.
fn only_in(all: &HashMap<String, FileRef>, keep: &HashMap<String, FileRef>) -> Vec<FileRef> {
    all.iter()
        .filter(|(k, _)| !keep.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The statistics and partition statistics files of snapshots `ids`.
fn statistics_files(metadata: &TableMetadata, ids: &BTreeSet<i64>) -> Vec<FileRef> {
    let mut stats = Vec::new();
    for id in ids {
        if let Some(s) = metadata.statistics_for_snapshot(*id) {
            stats.push(FileRef {
                uri: s.statistics_path.clone(),
                size: 0,
            });
        }
        if let Some(s) = metadata.partition_statistics_for_snapshot(*id) {
            stats.push(FileRef {
                uri: s.statistics_path.clone(),
                size: 0,
            });
        }
    }
    stats
}

/// Whether a statistics file is still referenced.
fn still_used(kept: &Referenced, f: &FileRef) -> bool {
    kept.contains(&crate::store::path_key(&f.uri))
}

/// Deletes `files` concurrently; returns how many failed (logged).
pub async fn delete_all(io: &iceberg::io::FileIO, files: Vec<FileRef>) -> u64 {
    let failures = futures::stream::iter(files)
        .map(|f| async move {
            match io.delete(&f.uri).await {
                Ok(()) => 0u64,
                Err(e) => {
                    tracing::warn!(path = %f.uri, error = %e, "could not delete");
                    1
                }
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect::<Vec<u64>>()
        .await;
    failures.iter().sum()
}
