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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, btree_map};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, FormatVersion, Literal, ManifestContentType, ManifestEntry, ManifestFile,
    ManifestListWriter, ManifestWriter, ManifestWriterBuilder, Operation, PartitionSpec,
    PartitionSpecRef, PrimitiveLiteral, SchemaRef, Snapshot, SnapshotRef, SnapshotReference,
    SnapshotRetention, Struct, Summary, TableMetadata, Transform,
};
use iceberg::table::Table;
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::rest::{CommitOutcome, LoadedTable, RestClient};
use crate::table::days::describe_days;
pub use crate::table::props::{JOB_KEY, LAST_RUN_PREFIX, RUN_ID_KEY, STATE_PREFIX};
use crate::table::retry::Retry;

/// What to commit.
#[derive(Debug, Clone)]
pub struct Overwrite {
    /// New data files (all inside `days`).
    pub added: Vec<DataFile>,
    /// Days (since 1970-01-01) whose existing files are replaced; `None`
    /// appends without replacing anything.
    pub days: Option<BTreeSet<i32>>,
    /// Days of `days` that must not lose their rows: when one holds a live
    /// data file and no added file falls on it, nothing is committed
    /// ([`Error::WouldEmpty`]).
    pub guarded_days: BTreeSet<i32>,
    /// Extra summary properties (`floe.job`, `floe.window`, ...).
    pub properties: HashMap<String, String>,
    /// This run's id, recorded as [`RUN_ID_KEY`].
    pub run_id: String,
    /// State the table must still hold for the commit to land.
    pub guard: Option<StateGuard>,
}

/// A state key ([`STATE_PREFIX`]) whose value a commit depends on (a
/// Kafka job's offsets: the rows it adds are the records after them). Each
/// attempt checks the table still holds `expected`; when another writer
/// changed it, nothing is committed ([`Error::CommitConflict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateGuard {
    /// The summary key.
    pub key: String,
    /// Its value when the run read the table (`None`: not set).
    pub expected: Option<String>,
}

/// The newest value of state key `key` among the table's snapshots (by
/// sequence number: writers that do not carry floe's state, such as Spark,
/// may have committed since).
pub fn state_value(metadata: &TableMetadata, key: &str) -> Option<String> {
    metadata
        .snapshots()
        .filter_map(|s| {
            s.summary()
                .additional_properties
                .get(key)
                .map(|v| ((s.sequence_number(), s.timestamp_ms()), v))
        })
        .max_by_key(|(order, _)| *order)
        .map(|(_, v)| v.clone())
}

/// Refuses a commit whose guarded state another writer changed.
fn check_guard(loaded: &LoadedTable, handle: &TableHandle, guard: &StateGuard) -> Result<()> {
    let now = state_value(&loaded.metadata, &guard.key);
    if now == guard.expected {
        return Ok(());
    }
    Err(Error::CommitConflict(format!(
        "another run moved {} of {}.{} while this run was reading (from {} to {}); committing would \
         deliver the same records twice, so nothing was committed: run again to continue from the \
         table's offsets",
        guard.key,
        handle.namespace.join("."),
        handle.name,
        guard.expected.as_deref().unwrap_or("none"),
        now.as_deref().unwrap_or("none"),
    )))
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
            .map_err(|e| Error::Catalog(format!("invalid table name: {e}")).caused_by(e))?;
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
            .map_err(|e| Error::Storage(format!("cannot open table: {e}")).caused_by(e))
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
    /// State the table must still hold (checked on every attempt).
    pub guard: Option<StateGuard>,
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

/// A commit ready to send, and what it did.
struct Staged {
    /// What the catalog must check.
    requirements: Vec<TableRequirement>,
    /// What the catalog applies.
    updates: Vec<TableUpdate>,
    /// The new snapshot.
    snapshot_id: i64,
    /// Data files it removes.
    deleted_files: u64,
    /// Rows they held.
    deleted_rows: u64,
    /// Days it leaves without rows.
    emptied_days: Vec<i32>,
    /// Metadata files written for it (deleted when it loses a conflict).
    written: Vec<String>,
}

impl Staged {
    /// The report of this commit, landed at `attempt`.
    fn report(self, attempt: u32) -> CommitReport {
        CommitReport {
            snapshot_id: self.snapshot_id,
            deleted_files: self.deleted_files,
            deleted_rows: self.deleted_rows,
            attempts: attempt,
            already_landed: false,
            emptied_days: self.emptied_days,
        }
    }
}

impl CommitReport {
    /// The report of a run whose snapshot `snapshot_id` was found in the
    /// table before `attempt`: made by an earlier process of the run when
    /// found before the first attempt, else by the previous attempt (whose
    /// answer was lost).
    fn landed(snapshot_id: i64, attempt: u32) -> Self {
        Self {
            snapshot_id,
            deleted_files: 0,
            deleted_rows: 0,
            attempts: attempt.saturating_sub(1).max(1),
            already_landed: attempt == 1,
            emptied_days: Vec::new(),
        }
    }
}

/// What [`stage`] built: the commit, or nothing because inputs of a
/// [`Removal::Files`] are no longer live (their paths).
enum Stage {
    Ready(Staged),
    Stale(Vec<String>),
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
            Some(days) => Removal::Days(days.clone()),
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
        guard: overwrite.guard.clone(),
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
    // What the run read and wrote against: a retry must not remove rows
    // another writer added to the replaced days since.
    let base = loaded.metadata.current_snapshot_id();
    for attempt in 1..=retry.attempts {
        if let Some(id) = landed_snapshot(&loaded.metadata, &change.run_id) {
            return Ok(ChangeOutcome::Committed(CommitReport::landed(id, attempt)));
        }
        if let Some(guard) = &change.guard {
            check_guard(&loaded, handle, guard)?;
        }
        if attempt > 1 {
            overlap_check(handle, &loaded, base, change).await?;
        }
        let staged = match stage(handle, &loaded, change).await? {
            Stage::Ready(staged) => staged,
            Stage::Stale(paths) => return Ok(ChangeOutcome::Stale(paths)),
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
                return Ok(ChangeOutcome::Committed(staged.report(attempt)));
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

/// Refuses a retried overwrite when another writer changed the rows it
/// replaces after `base` (an append, a row-level delete or an overwrite in
/// one of its days; a compaction changes no row and does not count):
/// replacing them would silently drop a write that was acknowledged, as
/// Iceberg's serializable overwrite (`validateNoConflictingData`) refuses.
async fn overlap_check(
    handle: &TableHandle,
    loaded: &LoadedTable,
    base: Option<i64>,
    change: &Change,
) -> Result<()> {
    let replaced: Option<&BTreeSet<i32>> = match &change.removal {
        Removal::Nothing | Removal::Files { .. } => return Ok(()),
        Removal::Days(days) => Some(days),
        Removal::Everything => None,
    };
    if change.branch.is_some() {
        return Ok(());
    }
    let current = loaded.metadata.current_snapshot_id();
    let table = handle.table(loaded)?;
    // From the table's creation when it held no snapshot yet (two first
    // runs of disjoint days both land).
    let changed = crate::table::iceberg::changes::since(&table, base, current).await?;
    let ident = format!("{}.{}", handle.namespace.join("."), handle.name);
    let overlap = match (changed, replaced) {
        (crate::table::read::Changed::Nothing, _) => return Ok(()),
        (crate::table::read::Changed::Days(days), Some(replaced)) => {
            let both: BTreeSet<i32> = days.intersection(replaced).copied().collect();
            if both.is_empty() {
                return Ok(());
            }
            describe_days(&both)
        }
        (crate::table::read::Changed::Days(days), None) => describe_days(&days),
        (crate::table::read::Changed::Everything, _) => "the table".to_string(),
    };
    Err(Error::CommitConflict(format!(
        "another writer changed {overlap} of {ident} while this run was writing (after snapshot {}); \
         replacing those rows would drop that write, so nothing was committed: run again to \
         replace them with this run's rows",
        base.map_or_else(|| "none".to_string(), |b| b.to_string())
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
#[derive(Default)]
struct Rewritten {
    /// Open writers by spec, with the entries each holds.
    writers: BTreeMap<i32, (ManifestWriter, usize)>,
    /// Every manifest path opened.
    paths: Vec<String>,
    /// Manifests already written (a writer rolls at [`MAX_REWRITTEN_ENTRIES`]).
    done: Vec<ManifestFile>,
}

/// Entries per rewritten manifest: the writer holds them in memory until
/// it writes, so a cap keeps a commit's memory flat on large tables.
const MAX_REWRITTEN_ENTRIES: usize = 1000;

impl Rewritten {
    /// The open writer for `manifest`'s partition spec, with the entries it
    /// holds: a new one when none is open, or when the open one reached
    /// [`MAX_REWRITTEN_ENTRIES`] (that one is written first).
    async fn writer_for(
        &mut self,
        draft: &Draft<'_>,
        manifest: &ManifestFile,
    ) -> Result<&mut (ManifestWriter, usize)> {
        let spec_id = manifest.partition_spec_id;
        if self
            .writers
            .get(&spec_id)
            .is_some_and(|(_, n)| *n >= MAX_REWRITTEN_ENTRIES)
            && let Some((full, _)) = self.writers.remove(&spec_id)
        {
            self.done
                .push(full.write_manifest_file().await.map_err(storage)?);
        }
        match self.writers.entry(spec_id) {
            btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            btree_map::Entry::Vacant(slot) => {
                let n = self.paths.len();
                let path = format!(
                    "{}/{}-r{spec_id}-{n}.avro",
                    draft.meta_dir, draft.commit_uuid
                );
                let writer = draft.manifest_writer(&path, spec_id, &manifest.manifest_path)?;
                self.paths.push(path);
                Ok(slot.insert((writer, 0)))
            }
        }
    }

    /// Writes the manifests still open. Returns every rewritten manifest
    /// (the rolled ones first, then one per spec in spec order) and every
    /// path opened.
    async fn finish(mut self) -> Result<(Vec<ManifestFile>, Vec<String>)> {
        let mut manifests = std::mem::take(&mut self.done);
        for (_, (writer, _)) in self.writers {
            manifests.push(writer.write_manifest_file().await.map_err(storage)?);
        }
        Ok((manifests, self.paths))
    }
}

/// The fixed facts of one staging attempt: the table as loaded, and the
/// ids and paths of the snapshot it builds.
struct Draft<'a> {
    /// IO for manifests.
    io: &'a FileIO,
    /// The metadata the commit replaces.
    metadata: &'a TableMetadata,
    /// The `iceberg` table over `metadata` (for its manifest list reader).
    table: Table,
    /// The schema new manifests are written with.
    schema: SchemaRef,
    /// `main`'s head: the new snapshot's parent.
    parent: Option<&'a SnapshotRef>,
    /// The new snapshot's id.
    snapshot_id: i64,
    /// The new snapshot's sequence number.
    seq: i64,
    /// Names this attempt's metadata files apart from any other attempt's.
    commit_uuid: Uuid,
    /// Where the new metadata files go.
    meta_dir: String,
}

impl<'a> Draft<'a> {
    /// A draft over the table as `loaded`, with a fresh snapshot id.
    fn new(handle: &'a TableHandle, loaded: &'a LoadedTable) -> Result<Self> {
        let metadata = &loaded.metadata;
        Ok(Self {
            io: &handle.io,
            metadata,
            table: handle.table(loaded)?,
            schema: metadata.current_schema().clone(),
            parent: metadata.current_snapshot(),
            snapshot_id: new_snapshot_id(metadata),
            seq: metadata.next_sequence_number(),
            commit_uuid: Uuid::new_v4(),
            meta_dir: format!("{}/metadata", metadata.location()),
        })
    }

    /// The parent snapshot's id (`None` on an empty table).
    fn parent_id(&self) -> Option<i64> {
        self.parent.map(|p| p.snapshot_id())
    }

    /// Partition spec `id`; `what` names its user in the error.
    fn spec(&self, id: i32, what: &str) -> Result<&'a PartitionSpecRef> {
        self.metadata
            .partition_spec_by_id(id)
            .ok_or_else(|| Error::Storage(format!("{what} uses an unknown partition spec {id}")))
    }

    /// A writer of a v2 data manifest at `path` for partition spec
    /// `spec_id`, whose entries belong to the new snapshot.
    fn manifest_writer(&self, path: &str, spec_id: i32, what: &str) -> Result<ManifestWriter> {
        let output = self.io.new_output(path).map_err(storage)?;
        let spec = self.spec(spec_id, what)?;
        Ok(ManifestWriterBuilder::new(
            output,
            Some(self.snapshot_id),
            self.schema.clone(),
            spec.as_ref().clone(),
        )
        .build_v2_data())
    }
}

/// The data files a change removes, as found in the parent's manifests.
#[derive(Default)]
struct Removed {
    /// Files removed.
    files: u64,
    /// Rows they held.
    rows: u64,
    /// Bytes they took.
    bytes: u64,
    /// Spec id and partition of each removed file, by path.
    partitions: HashMap<String, (i32, Struct)>,
    /// Days that lose a data file holding rows.
    days: BTreeSet<i32>,
}

impl Removed {
    /// Counts `file` (of partition spec `spec_id`) as removed.
    fn record(&mut self, spec_id: i32, file: &DataFile) {
        self.files += 1;
        self.rows += file.record_count();
        self.bytes += file.file_size_in_bytes();
        if file.record_count() > 0
            && let Some(day) = file_day(file)
        {
            self.days.insert(day);
        }
        self.partitions.insert(
            file.file_path().to_string(),
            (spec_id, file.partition().clone()),
        );
    }
}

/// Delete files added after the snapshot a [`Removal::Files`] rewrite
/// read: they may delete rows of its inputs that its outputs still hold.
#[derive(Default)]
struct LateDeletes {
    /// Partitions (spec id, partition) that gained delete files.
    partitions: HashSet<(i32, Struct)>,
    /// Whether one came with an unpartitioned spec: it applies to every
    /// partition.
    everywhere: bool,
}

/// The parent's manifests, sorted for the new snapshot.
#[derive(Default)]
struct Walk {
    /// Manifests the new snapshot lists as they are.
    kept: Vec<ManifestFile>,
    /// Manifests rewritten because they held removed files.
    rewritten: Rewritten,
    /// What the rewriting removed.
    removed: Removed,
    /// Delete files that make a [`Removal::Files`] stale.
    late_deletes: LateDeletes,
}

impl Walk {
    /// Keeps a data manifest as it is when it holds no live file the change
    /// removes; otherwise copies its live entries into the rewritten
    /// manifest of its spec.
    async fn visit_data_manifest(
        &mut self,
        draft: &Draft<'_>,
        manifest: &ManifestFile,
        removal: &Removal,
    ) -> Result<()> {
        if !may_hold_removed(manifest, removal) {
            self.kept.push(manifest.clone());
            return Ok(());
        }
        let entries = manifest.load_manifest(draft.io).await.map_err(storage)?;
        let hit = entries
            .entries()
            .iter()
            .any(|e| e.is_alive() && is_removed(removal, e.data_file()));
        if !hit {
            self.kept.push(manifest.clone());
            return Ok(());
        }
        let (writer, count) = self.rewritten.writer_for(draft, manifest).await?;
        for entry in entries.entries().iter().filter(|e| e.is_alive()) {
            *count += 1;
            rewrite_entry(writer, entry, manifest, removal, &mut self.removed)?;
        }
        Ok(())
    }
}

/// Copies one live entry of `manifest` into a rewritten manifest: DELETED
/// (and counted in `removed`) when the change removes its file, EXISTING
/// otherwise. Sequence numbers and the snapshot that added it are kept.
fn rewrite_entry(
    writer: &mut ManifestWriter,
    entry: &ManifestEntry,
    manifest: &ManifestFile,
    removal: &Removal,
    removed: &mut Removed,
) -> Result<()> {
    let file = entry.data_file().clone();
    let data_seq = entry.sequence_number().unwrap_or(0);
    let file_seq = entry.file_sequence_number.or(Some(data_seq));
    if is_removed(removal, &file) {
        removed.record(manifest.partition_spec_id, &file);
        writer
            .add_delete_file(file, data_seq, file_seq)
            .map_err(storage)
    } else {
        let origin = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
        writer
            .add_existing_file(file, origin, data_seq, file_seq)
            .map_err(storage)
    }
}

/// Builds the commit of `change` on the table as `loaded`, in steps:
///
/// 1. check the table is one floe can write ([`check_writable`]);
/// 2. walk `main`'s manifests ([`walk_manifests`]): keep those the change
///    does not touch, rewrite those holding removed files;
/// 3. audit the walk ([`refusal`]): a removal whose inputs went stale
///    ends as [`Stage::Stale`], one that would empty a guarded day as
///    [`Error::WouldEmpty`]; both judged on this very metadata, the one
///    the commit replaces;
/// 4. write the rewritten and added manifests and the manifest list;
/// 5. describe the commit ([`staged`]): the snapshot and the ref it moves.
///
/// A refused change leaves no manifest behind.
async fn stage(handle: &TableHandle, loaded: &LoadedTable, change: &Change) -> Result<Stage> {
    check_writable(&loaded.metadata, &change.removal)?;
    let draft = Draft::new(handle, loaded)?;
    let walk = walk_manifests(&draft, &change.removal).await?;
    let emptied_days = emptied_days(&walk.removed.days, &change.added);
    if let Some(refused) = refusal(change, &walk, &emptied_days) {
        discard(draft.io, &walk.rewritten.paths).await;
        return refused;
    }
    let mut manifests = walk.kept;
    let (rewritten, mut written) = walk.rewritten.finish().await?;
    manifests.extend(rewritten);
    write_added_manifests(&draft, &change.added, &mut manifests, &mut written).await?;
    let list_path = write_manifest_list(&draft, manifests).await?;
    written.push(list_path.clone());
    Ok(Stage::Ready(staged(
        &draft,
        change,
        &walk.removed,
        emptied_days,
        list_path,
        written,
    )))
}

/// Refuses tables floe does not write: any format but v2, and for a day
/// removal any partitioning but `day(...)` first.
fn check_writable(metadata: &TableMetadata, removal: &Removal) -> Result<()> {
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::Config(format!(
            "table at {} is format v{}; floe writes format v2 tables",
            metadata.location(),
            metadata.format_version() as u8
        )));
    }
    if matches!(removal, Removal::Days(_)) {
        require_day_spec(metadata)?;
    }
    Ok(())
}

/// Sorts the manifests of the draft's parent snapshot: manifests without
/// live entries are left out; delete manifests are kept (noting, for a
/// [`Removal::Files`], those added after the rewrite read the table); data
/// manifests holding removed files are rewritten, the rest kept.
async fn walk_manifests(draft: &Draft<'_>, removal: &Removal) -> Result<Walk> {
    let mut walk = Walk::default();
    let Some(parent) = draft.parent else {
        return Ok(walk);
    };
    let list = draft
        .table
        .manifest_list_reader(parent)
        .load()
        .await
        .map_err(storage)?;
    for manifest in list.entries() {
        if has_no_live_entries(manifest) {
            continue;
        }
        if manifest.content != ManifestContentType::Deletes {
            walk.visit_data_manifest(draft, manifest, removal).await?;
            continue;
        }
        if let Removal::Files { since, .. } = removal
            && manifest.sequence_number > *since
        {
            note_late_deletes(draft, manifest, &mut walk.late_deletes).await?;
        }
        walk.kept.push(manifest.clone());
    }
    Ok(walk)
}

/// Records the partitions of the live delete files of `manifest` in `late`.
async fn note_late_deletes(
    draft: &Draft<'_>,
    manifest: &ManifestFile,
    late: &mut LateDeletes,
) -> Result<()> {
    let entries = manifest.load_manifest(draft.io).await.map_err(storage)?;
    let global = draft
        .spec(manifest.partition_spec_id, &manifest.manifest_path)?
        .is_unpartitioned();
    for e in entries.entries().iter().filter(|e| e.is_alive()) {
        // Deletes of an unpartitioned spec apply to every partition.
        late.everywhere |= global;
        late.partitions.insert((
            manifest.partition_spec_id,
            e.data_file().partition().clone(),
        ));
    }
    Ok(())
}

/// Days that lose rows and get none back from the added files.
fn emptied_days(
    removed_days: &BTreeSet<i32>,
    added: &BTreeMap<i32, Vec<DataFile>>,
) -> BTreeSet<i32> {
    let added_days: BTreeSet<i32> = added.values().flatten().filter_map(file_day).collect();
    removed_days.difference(&added_days).copied().collect()
}

/// How staging `change` ends without a commit, if it must: inputs of a
/// [`Removal::Files`] gone stale end it as [`Stage::Stale`]; else guarded
/// days among `emptied_days` end it with [`Error::WouldEmpty`] naming them.
fn refusal(change: &Change, walk: &Walk, emptied_days: &BTreeSet<i32>) -> Option<Result<Stage>> {
    if let Removal::Files { paths, .. } = &change.removal {
        let stale = stale_inputs(paths, &walk.removed, &walk.late_deletes);
        if !stale.is_empty() {
            return Some(Ok(Stage::Stale(stale)));
        }
    }
    let refused: BTreeSet<i32> = emptied_days
        .intersection(&change.guarded_days)
        .copied()
        .collect();
    (!refused.is_empty()).then(|| Err(Error::WouldEmpty(describe_days(&refused))))
}

/// The inputs of a [`Removal::Files`] that may no longer be replaced,
/// sorted: those not found live, and those whose partition gained delete
/// files since the rewrite read the table.
fn stale_inputs(paths: &HashSet<String>, removed: &Removed, late: &LateDeletes) -> Vec<String> {
    let mut stale: Vec<String> = paths
        .iter()
        .filter(|p| {
            !removed.partitions.contains_key(*p)
                || late.everywhere
                || removed
                    .partitions
                    .get(*p)
                    .is_some_and(|key| late.partitions.contains(key))
        })
        .cloned()
        .collect();
    stale.sort();
    stale
}

/// Writes one manifest per partition spec of the added files (ADDED
/// entries), appending each to `manifests` and its path to `written`.
async fn write_added_manifests(
    draft: &Draft<'_>,
    added: &BTreeMap<i32, Vec<DataFile>>,
    manifests: &mut Vec<ManifestFile>,
    written: &mut Vec<String>,
) -> Result<()> {
    for (spec_id, files) in added.iter().filter(|(_, f)| !f.is_empty()) {
        let path = format!("{}/{}-m{spec_id}.avro", draft.meta_dir, draft.commit_uuid);
        let mut writer = draft.manifest_writer(&path, *spec_id, "a new data file")?;
        for file in files {
            writer.add_file(file.clone(), draft.seq).map_err(storage)?;
        }
        manifests.push(writer.write_manifest_file().await.map_err(storage)?);
        written.push(path);
    }
    Ok(())
}

/// Writes the new snapshot's manifest list; returns its path.
async fn write_manifest_list(draft: &Draft<'_>, manifests: Vec<ManifestFile>) -> Result<String> {
    let (id, uuid) = (draft.snapshot_id, draft.commit_uuid);
    let list_path = format!("{}/snap-{id}-1-{uuid}.avro", draft.meta_dir);
    let out = draft
        .io
        .new_output(&list_path)
        .map_err(storage)?
        .writer()
        .await
        .map_err(storage)?;
    let mut list = ManifestListWriter::v2(out, id, draft.parent_id(), draft.seq);
    list.add_manifests(manifests.into_iter()).map_err(storage)?;
    list.close().await.map_err(storage)?;
    Ok(list_path)
}

/// The commit of the new snapshot over manifest list `list_path`: added,
/// and a ref moved to it. A staged snapshot goes to a branch that must not
/// exist yet; a published one moves main, which must still be where it
/// was read.
fn staged(
    draft: &Draft<'_>,
    change: &Change,
    removed: &Removed,
    emptied_days: BTreeSet<i32>,
    list_path: String,
    written: Vec<String>,
) -> Staged {
    let metadata = draft.metadata;
    let summary = summarize(
        metadata,
        change,
        [removed.files, removed.rows, removed.bytes],
    );
    let snapshot = Snapshot::builder()
        .with_snapshot_id(draft.snapshot_id)
        .with_parent_snapshot_id(draft.parent_id())
        .with_sequence_number(draft.seq)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(metadata.current_schema_id())
        .build();
    let (ref_name, expected) = match &change.branch {
        Some(branch) => (branch.clone(), None),
        None => ("main".to_string(), draft.parent_id()),
    };
    Staged {
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
                    draft.snapshot_id,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ],
        snapshot_id: draft.snapshot_id,
        deleted_files: removed.files,
        deleted_rows: removed.rows,
        emptied_days: emptied_days.into_iter().collect(),
        written,
    }
}

/// An `iceberg` error as a storage error.
fn storage(e: iceberg::Error) -> Error {
    Error::Storage(e.to_string()).caused_by(e)
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

#[cfg(test)]
mod tests;
