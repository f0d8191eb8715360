//! What a table's snapshots reference: manifest lists, manifests, and the
//! live data and delete files, read once per manifest and shared between
//! snapshots (consecutive snapshots reuse most manifests).

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, ManifestFile, SnapshotRef};
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::store::path_key;

/// Manifests read at once.
const CONCURRENCY: usize = 16;

/// A live file of a snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// The manifest entry's file.
    pub file: DataFile,
    /// The partition spec of its manifest.
    pub spec_id: i32,
    /// Its data sequence number.
    pub data_seq: i64,
    /// Its file sequence number.
    pub file_seq: Option<i64>,
    /// The snapshot that added it.
    pub added_by: i64,
}

impl LiveFile {
    /// Whether this is a delete file (position or equality).
    pub fn is_delete(&self) -> bool {
        self.file.content_type() != DataContentType::Data
    }
}

/// Reads manifests and remembers their live entries by path.
#[derive(Debug, Default)]
pub struct ManifestCache {
    live: HashMap<String, Arc<Vec<LiveFile>>>,
    /// Keep the column statistics of each file (bounds, counts); without
    /// them a file costs a few hundred bytes instead of kilobytes, which
    /// keeps maintenance's memory flat on tables with many files.
    stats: bool,
}

/// A copy of `file` without its column statistics.
fn without_stats(file: &DataFile) -> DataFile {
    let mut b = crate::table::writer::builder_from(file);
    b.equality_ids(file.equality_ids())
        .referenced_data_file(file.referenced_data_file());
    if let Some(id) = file.sort_order_id() {
        b.sort_order_id(id);
    }
    // Every field the builder requires is set above.
    b.build().unwrap_or_else(|_| file.clone())
}

impl ManifestCache {
    /// A cache that keeps column statistics (for filters on bounds).
    pub fn with_stats() -> Self {
        Self {
            stats: true,
            ..Self::default()
        }
    }

    /// The manifests of `snapshot`'s manifest list.
    pub async fn manifests(table: &Table, snapshot: &SnapshotRef) -> Result<Vec<ManifestFile>> {
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(|e| {
                Error::Storage(format!(
                    "cannot read the manifest list of snapshot {}: {e}",
                    snapshot.snapshot_id()
                ))
                .caused_by(e)
            })?;
        Ok(list.entries().to_vec())
    }

    /// Reads every manifest of `manifests` not yet cached (concurrently).
    pub async fn load(&mut self, io: &FileIO, manifests: &[ManifestFile]) -> Result<()> {
        let missing: Vec<ManifestFile> = manifests
            .iter()
            .filter(|m| !self.live.contains_key(&m.manifest_path))
            .cloned()
            .collect();
        let stats = self.stats;
        let loaded: Vec<(String, Vec<LiveFile>)> = futures::stream::iter(missing)
            .map(|m| async move {
                let manifest = m.load_manifest(io).await.map_err(|e| {
                    Error::Storage(format!("cannot read manifest {}: {e}", m.manifest_path))
                        .caused_by(e)
                })?;
                let live = manifest
                    .entries()
                    .iter()
                    .filter(|e| e.is_alive())
                    .map(|e| LiveFile {
                        file: if stats {
                            e.data_file().clone()
                        } else {
                            without_stats(e.data_file())
                        },
                        spec_id: m.partition_spec_id,
                        data_seq: e.sequence_number().unwrap_or(0),
                        file_seq: e.file_sequence_number,
                        added_by: e.snapshot_id().unwrap_or(m.added_snapshot_id),
                    })
                    .collect();
                Ok::<_, Error>((m.manifest_path.clone(), live))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (path, live) in loaded {
            self.live.insert(path, Arc::new(live));
        }
        Ok(())
    }

    /// The live files of a (loaded) manifest.
    pub fn live(&self, manifest: &ManifestFile) -> Arc<Vec<LiveFile>> {
        self.live
            .get(&manifest.manifest_path)
            .cloned()
            .unwrap_or_default()
    }
}

/// The live data and delete files of `snapshot`, with their column
/// statistics when `stats`.
pub async fn live_files(
    table: &Table,
    io: &FileIO,
    snapshot: &SnapshotRef,
    stats: bool,
) -> Result<Vec<LiveFile>> {
    let manifests = ManifestCache::manifests(table, snapshot).await?;
    let mut cache = if stats {
        ManifestCache::with_stats()
    } else {
        ManifestCache::default()
    };
    cache.load(io, &manifests).await?;
    let mut out = Vec::new();
    for m in &manifests {
        // A manifest listed twice is read once; only its first listing counts.
        if let Some(live) = cache.live.remove(&m.manifest_path) {
            out.extend(Arc::try_unwrap(live).unwrap_or_else(|shared| shared.as_ref().clone()));
        }
    }
    Ok(out)
}

/// A file some snapshot references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The URI as the metadata spells it.
    pub uri: String,
    /// Size in bytes, when the metadata records it.
    pub size: u64,
}

/// Every file a set of snapshots references, by [`path_key`].
#[derive(Debug, Default, Clone)]
pub struct Referenced {
    /// Manifest lists.
    pub manifest_lists: HashMap<String, FileRef>,
    /// Manifests (data and delete).
    pub manifests: HashMap<String, FileRef>,
    /// Live data files.
    pub data_files: HashMap<String, FileRef>,
    /// Live delete files.
    pub delete_files: HashMap<String, FileRef>,
}

impl Referenced {
    /// Whether `key` is any of the referenced files.
    pub fn contains(&self, key: &str) -> bool {
        self.manifest_lists.contains_key(key)
            || self.manifests.contains_key(key)
            || self.data_files.contains_key(key)
            || self.delete_files.contains_key(key)
    }
}

/// Collects what `snapshots` reference.
pub async fn referenced(
    table: &Table,
    io: &FileIO,
    snapshots: &[SnapshotRef],
    cache: &mut ManifestCache,
) -> Result<Referenced> {
    let lists: Vec<(SnapshotRef, Vec<ManifestFile>)> = futures::stream::iter(snapshots.to_vec())
        .map(|s| async move {
            let m = ManifestCache::manifests(table, &s).await?;
            Ok::<_, Error>((s, m))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = Referenced::default();
    let mut all: HashMap<String, ManifestFile> = HashMap::new();
    for (snapshot, manifests) in &lists {
        out.manifest_lists.insert(
            path_key(snapshot.manifest_list()),
            FileRef {
                uri: snapshot.manifest_list().to_string(),
                size: 0,
            },
        );
        for m in manifests {
            all.entry(m.manifest_path.clone())
                .or_insert_with(|| m.clone());
        }
    }
    let unique: Vec<ManifestFile> = all.into_values().collect();
    cache.load(io, &unique).await?;
    for m in &unique {
        out.manifests.insert(
            path_key(&m.manifest_path),
            FileRef {
                uri: m.manifest_path.clone(),
                size: m.manifest_length.max(0) as u64,
            },
        );
        for f in cache.live(m).iter() {
            let target = if f.is_delete() {
                &mut out.delete_files
            } else {
                &mut out.data_files
            };
            target.insert(
                path_key(f.file.file_path()),
                FileRef {
                    uri: f.file.file_path().to_string(),
                    size: f.file.file_size_in_bytes(),
                },
            );
        }
    }
    Ok(out)
}

/// A partition's path (`ts_utc_day=2024-03-01`), or `(unpartitioned)`.
pub fn partition_label(
    metadata: &iceberg::spec::TableMetadata,
    spec_id: i32,
    partition: &iceberg::spec::Struct,
) -> String {
    match metadata.partition_spec_by_id(spec_id) {
        Some(spec) if !spec.is_unpartitioned() => iceberg::spec::PartitionKey::new(
            spec.as_ref().clone(),
            metadata.current_schema().clone(),
            partition.clone(),
        )
        .to_path(),
        _ => "(unpartitioned)".to_string(),
    }
}
