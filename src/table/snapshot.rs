//! The overwrite snapshot producer: one commit that removes every live data
//! file of a set of day partitions and adds the new files, so re-running a
//! window replaces it instead of duplicating it.
//!
//! The `iceberg` crate has no overwrite action, so this module writes the
//! manifests and the manifest list itself (with the crate's public writers)
//! and sends `add-snapshot` + `set-snapshot-ref main` to the REST catalog,
//! guarded by `assert-table-uuid` and `assert-ref-snapshot-id`:
//!
//! 1. read the current snapshot's manifests; a manifest whose partition
//!    range misses the window is reused untouched, one that overlaps it is
//!    rewritten with the window's entries marked DELETED and the rest
//!    EXISTING;
//! 2. write one manifest with the new files (ADDED) and the manifest list;
//! 3. commit. On 409 (another writer moved `main`) reload and redo 1-3 from
//!    the new head: a concurrent run on other days keeps its files, a
//!    concurrent run on the same days is replaced whole, never mixed.
//!
//! The same producer makes compaction's `replace` snapshots
//! ([`Removal::Files`]): exactly the rewritten files are removed, and the
//! commit is not attempted when one of them is no longer live (a concurrent
//! overwrite removed it), so compaction never resurrects deleted rows.
//! Manifests touched by a commit are merged into one per partition spec,
//! and manifests left with no live entry are dropped, so the manifest count
//! does not grow with every rewrite.
//!
//! Each snapshot's summary records `floe.run-id`; before every retry the
//! producer looks for its run id in the table's history, so a commit whose
//! response was lost is never applied twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, FormatVersion, Literal, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, PartitionSpec, PrimitiveLiteral, Snapshot, SnapshotReference,
    SnapshotRetention, Summary, TableMetadata, Transform,
};
use iceberg::table::Table;
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::rest::{CommitOutcome, LoadedTable, RestClient};
pub use crate::table::props::{JOB_KEY, LAST_RUN_PREFIX, RUN_ID_KEY, STATE_PREFIX};
use crate::table::retry::Retry;

/// What to commit.
#[derive(Debug, Clone)]
pub struct Overwrite {
    /// New data files (all inside `days`).
    pub added: Vec<DataFile>,
    /// Days (since 1970-01-01) whose existing files are replaced; `None`
    /// appends without replacing anything.
    pub days: Option<RangeInclusive<i32>>,
    /// Days of `days` that must not lose their rows: when one holds a live
    /// data file and no added file falls on it, nothing is committed
    /// ([`Error::WouldEmpty`]).
    pub guarded_days: BTreeSet<i32>,
    /// Extra summary properties (`floe.job`, `floe.window`, ...).
    pub properties: HashMap<String, String>,
    /// This run's id, recorded as [`RUN_ID_KEY`].
    pub run_id: String,
}

/// What a committed overwrite did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReport {
    /// The new snapshot (or the one an earlier attempt of this run landed).
    pub snapshot_id: i64,
    /// Files removed from the window.
    pub deleted_files: u64,
    /// Rows removed from the window.
    pub deleted_rows: u64,
    /// Attempts it took (1 without conflicts).
    pub attempts: u32,
    /// True when the run's commit was there before this call's first
    /// attempt (an earlier process of the same run made it). A commit of
    /// this call whose answer was lost, found afterwards by its run id, is
    /// reported as committed, with the attempt that made it.
    pub already_landed: bool,
    /// Days whose rows the snapshot removed without adding any back.
    pub emptied_days: Vec<i32>,
}

/// Where the table lives in the catalog, and how to reach its files.
#[derive(Debug, Clone)]
pub struct TableHandle {
    /// Namespace levels.
    pub namespace: Vec<String>,
    /// Table name.
    pub name: String,
    /// IO for manifests and data files.
    pub io: FileIO,
}

impl TableHandle {
    /// An `iceberg` table object over loaded metadata (for the crate's readers).
    pub fn table(&self, loaded: &LoadedTable) -> Result<Table> {
        let ident = TableIdent::from_strs(self.namespace.iter().chain(std::iter::once(&self.name)))
            .map_err(|e| Error::Catalog(format!("invalid table name: {e}")))?;
        let mut builder = Table::builder()
            .metadata(loaded.metadata.clone())
            .identifier(ident)
            .file_io(self.io.clone())
            .runtime(iceberg::Runtime::current());
        if let Some(loc) = &loaded.metadata_location {
            builder = builder.metadata_location(loc.clone());
        }
        builder
            .build()
            .map_err(|e| Error::Storage(format!("cannot open table: {e}")))
    }
}

/// The day-partition field of a floe table: the spec's first field must
/// be `day(<source>)` (floe refuses to overwrite tables partitioned
/// otherwise); more fields may follow it.
pub fn require_day_spec(metadata: &TableMetadata) -> Result<&PartitionSpec> {
    let spec = metadata.default_partition_spec();
    match spec.fields().first() {
        Some(field) if field.transform == Transform::Day => Ok(spec.as_ref()),
        _ => Err(Error::Config(format!(
            "table at {} is not partitioned by day(ts_utc) first; floe's window overwrite needs that spec",
            metadata.location()
        ))),
    }
}

/// The day of a data file (its first partition value).
pub fn file_day(file: &DataFile) -> Option<i32> {
    match file.partition().fields().first() {
        Some(Some(Literal::Primitive(PrimitiveLiteral::Int(d)))) => Some(*d),
        _ => None,
    }
}

fn decode_day(bound: Option<&serde_bytes::ByteBuf>) -> Option<i32> {
    let b = bound?;
    let bytes: [u8; 4] = b.as_slice().get(..4)?.try_into().ok()?;
    Some(i32::from_le_bytes(bytes))
}

/// Whether a manifest may hold files of `days` (from its partition summary).
fn may_overlap(manifest: &ManifestFile, days: &BTreeSet<i32>) -> bool {
    let Some(summary) = manifest.partitions.as_ref().and_then(|p| p.first()) else {
        return true;
    };
    match (
        decode_day(summary.lower_bound.as_ref()),
        decode_day(summary.upper_bound.as_ref()),
    ) {
        (Some(lo), Some(hi)) => lo <= hi && days.range(lo..=hi).next().is_some(),
        // Only nulls, or no bounds: a null day is never in a window.
        (None, None) => !summary.contains_null && manifest.partitions.is_none(),
        _ => true,
    }
}

/// The run records of a snapshot summary: `(job, run id)` from its own
/// `floe.job` + `floe.run-id`, and from the `floe.last-run.*` it carries.
pub fn run_records(props: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let own = props
        .get(JOB_KEY)
        .zip(props.get(RUN_ID_KEY))
        .map(|(j, r)| (j.as_str(), r.as_str()));
    let carried = props
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(LAST_RUN_PREFIX).map(|j| (j, v.as_str())));
    own.into_iter().chain(carried).collect()
}

/// Each job's latest run id among the table's snapshots, newest first
/// (not along parent links: expiry may have removed the snapshots between
/// the current one and the last floe commit).
pub fn latest_run_records(metadata: &TableMetadata) -> HashMap<String, String> {
    let mut snapshots: Vec<&iceberg::spec::SnapshotRef> = metadata.snapshots().collect();
    snapshots.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
    let mut out: HashMap<String, String> = HashMap::new();
    for snapshot in snapshots {
        for (job, run) in run_records(&snapshot.summary().additional_properties) {
            out.entry(job.to_string())
                .or_insert_with(|| run.to_string());
        }
    }
    out
}

/// Whether `run_id` already landed in this table: the snapshot it made, or
/// a later one that carries its record.
pub fn landed_snapshot(metadata: &TableMetadata, run_id: &str) -> Option<i64> {
    let own = |s: &&iceberg::spec::SnapshotRef| {
        s.summary()
            .additional_properties
            .get(RUN_ID_KEY)
            .map(String::as_str)
            == Some(run_id)
    };
    let carried = |s: &&iceberg::spec::SnapshotRef| {
        s.summary()
            .additional_properties
            .iter()
            .any(|(k, v)| k.starts_with(LAST_RUN_PREFIX) && v == run_id)
    };
    metadata
        .snapshots()
        .find(own)
        .or_else(|| metadata.snapshots().find(carried))
        .map(|s| s.snapshot_id())
}

/// What a snapshot removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Nothing: an append.
    Nothing,
    /// Every live data file of these days (a window overwrite).
    Days(BTreeSet<i32>),
    /// Every live data file (a full replace).
    Everything,
    /// Exactly these data files (a compaction's inputs). Every one must
    /// still be live when the commit is built, and no delete file may have
    /// been added to their partitions after sequence number `since`;
    /// otherwise the commit is not attempted and the stale paths are
    /// reported ([`ChangeOutcome::Stale`]).
    Files {
        /// Paths of the data files replaced.
        paths: HashSet<String>,
        /// Sequence number of the snapshot the rewrite read.
        since: i64,
    },
}

/// A general snapshot: files added (per partition spec id), files removed,
/// the operation recorded in the summary.
#[derive(Debug, Clone)]
pub struct Change {
    /// New data files, by the partition spec they were written with.
    pub added: BTreeMap<i32, Vec<DataFile>>,
    /// What the snapshot removes.
    pub removal: Removal,
    /// `append`, `overwrite` or `replace`.
    pub operation: Operation,
    /// Extra summary properties.
    pub properties: HashMap<String, String>,
    /// This change's id, recorded as [`RUN_ID_KEY`].
    pub run_id: String,
    /// Days the removal may not empty (see [`Overwrite::guarded_days`]).
    pub guarded_days: BTreeSet<i32>,
    /// Stage the snapshot on this new branch instead of moving `main`
    /// (write-audit-publish). The snapshot's parent is still `main`'s head,
    /// so publishing is a fast-forward of `main` ([`publish_ref`]).
    pub branch: Option<String>,
}

/// How [`commit_change`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// The snapshot is on `main`.
    Committed(CommitReport),
    /// Some files of a [`Removal::Files`] are no longer live (or gained
    /// delete files): nothing was committed. The paths are listed.
    Stale(Vec<String>),
}

struct Staged {
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
    snapshot_id: i64,
    deleted_files: u64,
    deleted_rows: u64,
    emptied_days: Vec<i32>,
    written: Vec<String>,
}

enum Stage {
    Ready(Staged),
    Stale(Vec<String>),
    /// Guarded days the change would have emptied.
    WouldEmpty(BTreeSet<i32>),
}

/// Commits `overwrite` to the table, retrying conflicts (bounded).
pub async fn commit_overwrite(
    client: &RestClient,
    handle: &TableHandle,
    loaded: LoadedTable,
    overwrite: &Overwrite,
) -> Result<CommitReport> {
    let change = Change {
        added: BTreeMap::from([(
            loaded.metadata.default_partition_spec_id(),
            overwrite.added.clone(),
        )]),
        removal: match &overwrite.days {
            Some(days) => Removal::Days(days.clone().collect()),
            None => Removal::Nothing,
        },
        // Replacing days is an overwrite even when they were empty (as
        // Iceberg Java's ReplacePartitions); adding alone is an append.
        operation: if overwrite.days.is_some() {
            Operation::Overwrite
        } else {
            Operation::Append
        },
        properties: overwrite.properties.clone(),
        run_id: overwrite.run_id.clone(),
        guarded_days: overwrite.guarded_days.clone(),
        branch: None,
    };
    match commit_change(client, handle, loaded, &change).await? {
        ChangeOutcome::Committed(report) => Ok(report),
        ChangeOutcome::Stale(paths) => Err(Error::Storage(format!(
            "{} file(s) vanished during an overwrite",
            paths.len()
        ))),
    }
}

/// Commits `change` to the table, retrying conflicts (bounded).
pub async fn commit_change(
    client: &RestClient,
    handle: &TableHandle,
    mut loaded: LoadedTable,
    change: &Change,
) -> Result<ChangeOutcome> {
    let retry = Retry::commits()?;
    for attempt in 1..=retry.attempts {
        if let Some(id) = landed_snapshot(&loaded.metadata, &change.run_id) {
            return Ok(ChangeOutcome::Committed(CommitReport {
                snapshot_id: id,
                deleted_files: 0,
                deleted_rows: 0,
                attempts: attempt.saturating_sub(1).max(1),
                already_landed: attempt == 1,
                emptied_days: Vec::new(),
            }));
        }
        let staged = match stage(handle, &loaded, change).await? {
            Stage::Ready(staged) => staged,
            Stage::Stale(paths) => return Ok(ChangeOutcome::Stale(paths)),
            Stage::WouldEmpty(days) => {
                return Err(Error::WouldEmpty(crate::table::days::describe_days(&days)));
            }
        };
        let outcome = client
            .commit(
                &handle.namespace,
                &handle.name,
                &staged.requirements,
                &staged.updates,
            )
            .await?;
        match outcome {
            CommitOutcome::Committed(_) => {
                return Ok(ChangeOutcome::Committed(CommitReport {
                    snapshot_id: staged.snapshot_id,
                    deleted_files: staged.deleted_files,
                    deleted_rows: staged.deleted_rows,
                    attempts: attempt,
                    already_landed: false,
                    emptied_days: staged.emptied_days,
                }));
            }
            CommitOutcome::Conflict(reason) => {
                tracing::info!(attempt, %reason, "commit conflict; reloading and rebuilding");
                discard(&handle.io, &staged.written).await;
            }
            // The commit may have landed: the reload below tells (the run id
            // check at the top of the loop), waiting for the catalog to
            // answer again. Its files are kept until then.
            CommitOutcome::Unknown(reason) => {
                tracing::warn!(attempt, %reason, "commit outcome unknown; checking the table");
            }
        }
        tokio::time::sleep(retry.backoff(attempt)).await;
        loaded = retry
            .until_answered("reloading the table after a commit", || {
                reload(client, handle)
            })
            .await?;
    }
    Err(Error::CommitConflict(format!(
        "gave up after {} attempts: other writers kept changing {}.{}",
        retry.attempts,
        handle.namespace.join("."),
        handle.name
    )))
}

/// The requirements and updates that publish a snapshot staged on
/// `branch` (whose parent was `main` at `base`): `main` moves to it only
/// if it is still at `base`, and the branch is removed.
pub fn publish_ref(
    uuid: Uuid,
    branch: &str,
    base: Option<i64>,
    staged: i64,
) -> (Vec<TableRequirement>, Vec<TableUpdate>) {
    (
        vec![
            TableRequirement::UuidMatch { uuid },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".to_string(),
                snapshot_id: base,
            },
        ],
        vec![
            TableUpdate::SetSnapshotRef {
                ref_name: "main".to_string(),
                reference: SnapshotReference::new(
                    staged,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
            TableUpdate::RemoveSnapshotRef {
                ref_name: branch.to_string(),
            },
        ],
    )
}

/// Loads the table again; an error when it was dropped meanwhile.
pub async fn reload(client: &RestClient, handle: &TableHandle) -> Result<LoadedTable> {
    client
        .load_table(&handle.namespace, &handle.name)
        .await?
        .ok_or_else(|| {
            Error::Catalog(format!(
                "table {}.{} disappeared during the commit",
                handle.namespace.join("."),
                handle.name
            ))
        })
}

async fn discard(io: &FileIO, paths: &[String]) {
    for p in paths {
        if let Err(e) = io.delete(p).await {
            tracing::debug!(path = %p, error = %e, "could not delete unused manifest");
        }
    }
}

fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (Uuid::new_v4().as_u128() as i64) & i64::MAX;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Whether a manifest holds no live (added or existing) entry: such a
/// manifest only records earlier deletions and is left out of new snapshots.
fn has_no_live_entries(manifest: &ManifestFile) -> bool {
    manifest.added_files_count == Some(0) && manifest.existing_files_count == Some(0)
}

/// Whether `entry`'s file is one the change removes.
fn is_removed(removal: &Removal, file: &DataFile) -> bool {
    match removal {
        Removal::Nothing => false,
        Removal::Days(days) => file_day(file).is_some_and(|d| days.contains(&d)),
        Removal::Everything => true,
        Removal::Files { paths, .. } => paths.contains(file.file_path()),
    }
}

/// Whether a data manifest may hold files the change removes.
fn may_hold_removed(manifest: &ManifestFile, removal: &Removal) -> bool {
    match removal {
        Removal::Nothing => false,
        Removal::Days(days) => may_overlap(manifest, days),
        Removal::Files { .. } | Removal::Everything => true,
    }
}

/// The manifests rewritten by a commit, one per partition spec, each
/// holding the DELETED entries of removed files and the EXISTING entries
/// of the files kept from the manifests that were opened.
struct Rewritten {
    /// Open writers by spec, with the entries each holds.
    writers: BTreeMap<i32, (iceberg::spec::ManifestWriter, usize)>,
    /// Every manifest path opened.
    paths: Vec<String>,
    /// Manifests already written (a writer rolls at [`MAX_REWRITTEN_ENTRIES`]).
    done: Vec<ManifestFile>,
}

/// Entries per rewritten manifest: the writer holds them in memory until
/// it writes, so a cap keeps a commit's memory flat on large tables.
const MAX_REWRITTEN_ENTRIES: usize = 1000;

async fn stage(handle: &TableHandle, loaded: &LoadedTable, change: &Change) -> Result<Stage> {
    let metadata = &loaded.metadata;
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::Config(format!(
            "table at {} is format v{}; floe writes format v2 tables",
            metadata.location(),
            metadata.format_version() as u8
        )));
    }
    if matches!(change.removal, Removal::Days(_)) {
        require_day_spec(metadata)?;
    }
    let schema = metadata.current_schema().clone();
    let table = handle.table(loaded)?;
    let snapshot_id = new_snapshot_id(metadata);
    let seq = metadata.next_sequence_number();
    let parent = metadata.current_snapshot();
    let commit_uuid = Uuid::new_v4();
    let meta_dir = format!("{}/metadata", metadata.location());
    let storage = |e: iceberg::Error| Error::Storage(e.to_string());
    let spec_of = |id: i32, what: &str| {
        metadata
            .partition_spec_by_id(id)
            .ok_or_else(|| Error::Storage(format!("{what} uses an unknown partition spec {id}")))
    };

    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut written = Vec::new();
    let mut rewritten = Rewritten {
        writers: BTreeMap::new(),
        paths: Vec::new(),
        done: Vec::new(),
    };
    let (mut deleted_files, mut deleted_rows, mut deleted_bytes) = (0u64, 0u64, 0u64);
    let mut found: HashSet<String> = HashSet::new();
    // Partitions that gained delete files after the rewrite's start.
    let mut new_delete_partitions: HashSet<(i32, iceberg::spec::Struct)> = HashSet::new();
    let mut new_deletes_everywhere = false;
    let mut removed_partitions: HashMap<String, (i32, iceberg::spec::Struct)> = HashMap::new();
    // Days that lose a data file holding rows.
    let mut removed_days: BTreeSet<i32> = BTreeSet::new();
    if let Some(parent) = parent {
        let list = table
            .manifest_list_reader(parent)
            .load()
            .await
            .map_err(storage)?;
        for manifest in list.entries() {
            if has_no_live_entries(manifest) {
                continue;
            }
            if manifest.content == ManifestContentType::Deletes {
                if let Removal::Files { since, .. } = &change.removal
                    && manifest.sequence_number > *since
                {
                    let entries = manifest.load_manifest(&handle.io).await.map_err(storage)?;
                    let global = spec_of(manifest.partition_spec_id, &manifest.manifest_path)?
                        .is_unpartitioned();
                    for e in entries.entries().iter().filter(|e| e.is_alive()) {
                        // Deletes of an unpartitioned spec apply to every partition.
                        new_deletes_everywhere |= global;
                        new_delete_partitions.insert((
                            manifest.partition_spec_id,
                            e.data_file().partition().clone(),
                        ));
                    }
                }
                manifests.push(manifest.clone());
                continue;
            }
            if !may_hold_removed(manifest, &change.removal) {
                manifests.push(manifest.clone());
                continue;
            }
            let entries = manifest.load_manifest(&handle.io).await.map_err(storage)?;
            let hits = entries
                .entries()
                .iter()
                .filter(|e| e.is_alive() && is_removed(&change.removal, e.data_file()))
                .count();
            if hits == 0 {
                manifests.push(manifest.clone());
                continue;
            }
            let spec_id = manifest.partition_spec_id;
            if rewritten
                .writers
                .get(&spec_id)
                .is_some_and(|(_, n)| *n >= MAX_REWRITTEN_ENTRIES)
                && let Some((full, _)) = rewritten.writers.remove(&spec_id)
            {
                rewritten
                    .done
                    .push(full.write_manifest_file().await.map_err(storage)?);
            }
            let (writer, count) = match rewritten.writers.entry(spec_id) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let n = rewritten.paths.len();
                    let path = format!("{meta_dir}/{commit_uuid}-r{spec_id}-{n}.avro");
                    let output = handle.io.new_output(&path).map_err(storage)?;
                    let spec = spec_of(spec_id, &manifest.manifest_path)?;
                    rewritten.paths.push(path);
                    slot.insert((
                        ManifestWriterBuilder::new(
                            output,
                            Some(snapshot_id),
                            schema.clone(),
                            spec.as_ref().clone(),
                        )
                        .build_v2_data(),
                        0,
                    ))
                }
            };
            for entry in entries.entries() {
                if !entry.is_alive() {
                    continue;
                }
                let file = entry.data_file().clone();
                let data_seq = entry.sequence_number().unwrap_or(0);
                let file_seq = entry.file_sequence_number.or(Some(data_seq));
                *count += 1;
                if is_removed(&change.removal, &file) {
                    deleted_files += 1;
                    deleted_rows += file.record_count();
                    deleted_bytes += file.file_size_in_bytes();
                    if file.record_count() > 0
                        && let Some(day) = file_day(&file)
                    {
                        removed_days.insert(day);
                    }
                    found.insert(file.file_path().to_string());
                    removed_partitions.insert(
                        file.file_path().to_string(),
                        (spec_id, file.partition().clone()),
                    );
                    writer
                        .add_delete_file(file, data_seq, file_seq)
                        .map_err(storage)?;
                } else {
                    let origin = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                    writer
                        .add_existing_file(file, origin, data_seq, file_seq)
                        .map_err(storage)?;
                }
            }
        }
    }
    if let Removal::Files { paths, .. } = &change.removal {
        let mut stale: Vec<String> = paths
            .iter()
            .filter(|p| {
                !found.contains(*p)
                    || new_deletes_everywhere
                    || removed_partitions
                        .get(*p)
                        .is_some_and(|key| new_delete_partitions.contains(key))
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            stale.sort();
            discard(&handle.io, &rewritten.paths).await;
            return Ok(Stage::Stale(stale));
        }
    }
    let added_days: BTreeSet<i32> = change
        .added
        .values()
        .flatten()
        .filter_map(file_day)
        .collect();
    let emptied_days: BTreeSet<i32> = removed_days.difference(&added_days).copied().collect();
    let refused: BTreeSet<i32> = emptied_days
        .intersection(&change.guarded_days)
        .copied()
        .collect();
    if !refused.is_empty() {
        discard(&handle.io, &rewritten.paths).await;
        return Ok(Stage::WouldEmpty(refused));
    }
    manifests.append(&mut rewritten.done);
    for (_, (writer, _)) in std::mem::take(&mut rewritten.writers) {
        manifests.push(writer.write_manifest_file().await.map_err(storage)?);
    }
    written.extend(rewritten.paths);
    for (spec_id, files) in change.added.iter().filter(|(_, f)| !f.is_empty()) {
        let path = format!("{meta_dir}/{commit_uuid}-m{spec_id}.avro");
        let output = handle.io.new_output(&path).map_err(storage)?;
        let spec = spec_of(*spec_id, "a new data file")?;
        let mut writer = ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            schema.clone(),
            spec.as_ref().clone(),
        )
        .build_v2_data();
        for file in files {
            writer.add_file(file.clone(), seq).map_err(storage)?;
        }
        manifests.push(writer.write_manifest_file().await.map_err(storage)?);
        written.push(path);
    }
    let list_path = format!("{meta_dir}/snap-{snapshot_id}-1-{commit_uuid}.avro");
    let out = handle
        .io
        .new_output(&list_path)
        .map_err(storage)?
        .writer()
        .await
        .map_err(storage)?;
    let mut list = ManifestListWriter::v2(out, snapshot_id, parent.map(|p| p.snapshot_id()), seq);
    list.add_manifests(manifests.into_iter()).map_err(storage)?;
    list.close().await.map_err(storage)?;
    written.push(list_path.clone());

    let summary = summarize(
        metadata,
        change,
        [deleted_files, deleted_rows, deleted_bytes],
    );
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(seq)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(metadata.current_schema_id())
        .build();
    // A staged snapshot goes to a branch that must not exist yet; a
    // published one moves main, which must still be where it was read.
    let (ref_name, expected) = match &change.branch {
        Some(branch) => (branch.clone(), None),
        None => ("main".to_string(), parent.map(|p| p.snapshot_id())),
    };
    Ok(Stage::Ready(Staged {
        requirements: vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: ref_name.clone(),
                snapshot_id: expected,
            },
        ],
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name,
                reference: SnapshotReference::new(
                    snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ],
        snapshot_id,
        deleted_files,
        deleted_rows,
        emptied_days: emptied_days.into_iter().collect(),
        written,
    }))
}

/// The snapshot summary: the standard `added-*`, `deleted-*` and `total-*`
/// counters Spark, Trino and pyiceberg show, plus floe's run record.
fn summarize(
    metadata: &TableMetadata,
    change: &Change,
    [deleted_files, deleted_rows, deleted_bytes]: [u64; 3],
) -> Summary {
    let added = || change.added.values().flatten();
    let added_files = added().count() as u64;
    let added_rows: u64 = added().map(DataFile::record_count).sum();
    let added_size: u64 = added().map(DataFile::file_size_in_bytes).sum();
    let previous = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    let prev = |k: &str| {
        previous
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut props: HashMap<String, String> = latest_run_records(metadata)
        .into_iter()
        .map(|(job, run)| (format!("{LAST_RUN_PREFIX}{job}"), run))
        .collect();
    // State a writer keeps with its table (a transform's upstream
    // snapshots) travels with main like the run records.
    if let Some(head) = metadata.current_snapshot() {
        props.extend(
            head.summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| k.starts_with(STATE_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if let Some(job) = change.properties.get(JOB_KEY) {
        props.insert(format!("{LAST_RUN_PREFIX}{job}"), change.run_id.clone());
    }
    props.extend(change.properties.clone());
    props.insert(RUN_ID_KEY.to_string(), change.run_id.clone());
    props.insert("added-data-files".into(), added_files.to_string());
    props.insert("added-records".into(), added_rows.to_string());
    props.insert("added-files-size".into(), added_size.to_string());
    props.insert("deleted-data-files".into(), deleted_files.to_string());
    props.insert("deleted-records".into(), deleted_rows.to_string());
    props.insert("removed-files-size".into(), deleted_bytes.to_string());
    props.insert(
        "total-files-size".into(),
        (prev("total-files-size") + added_size)
            .saturating_sub(deleted_bytes)
            .to_string(),
    );
    props.insert(
        "total-data-files".into(),
        (prev("total-data-files") + added_files)
            .saturating_sub(deleted_files)
            .to_string(),
    );
    props.insert(
        "total-records".into(),
        (prev("total-records") + added_rows)
            .saturating_sub(deleted_rows)
            .to_string(),
    );
    for k in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        props.insert(k.into(), prev(k).to_string());
    }
    Summary {
        operation: change.operation.clone(),
        additional_properties: props,
    }
}
