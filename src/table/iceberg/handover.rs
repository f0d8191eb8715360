//! Compaction handed over to another engine (Trino's `optimize`): floe
//! plans which day partitions need it, exactly as for its own compaction,
//! records each day's live rows, lets the engine rewrite those days, and
//! then checks what the engine committed: only `replace` snapshots, the
//! same live rows in every day, no more files in the compacted days. When a
//! check fails and nobody else committed since, `main` goes back to where
//! it was before the engine ran.
//!
//! Live rows are counted from the manifests: a day's data rows less the rows
//! its position delete files remove (what readers see, as long as no
//! equality deletes apply; a day with equality deletes is checked only not
//! to gain rows).

use std::collections::{BTreeMap, BTreeSet};

use iceberg::spec::{
    DataContentType, Operation, PrimitiveType, SnapshotReference, SnapshotRetention, Transform,
    Type,
};
use iceberg::{TableRequirement, TableUpdate};

use super::Target;
use super::compact::planned_partitions;
use super::scan::{LiveFile, live_files};
use crate::error::{Error, Result};
use crate::rest::{CommitOutcome, RestClient};
use crate::table::maintenance::{CompactOptions, CompactReport};

/// One partition's live rows and files (`None`: an unpartitioned table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayFigures {
    /// Data rows less position-deleted rows.
    pub rows: i64,
    /// Data files.
    pub files: u64,
    /// Equality delete files apply (the row count is an upper bound).
    pub inexact: bool,
}

/// A compaction planned for another engine.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The plan (status `planned`; `nothing-to-do` when there is none).
    pub report: CompactReport,
    /// Namespace levels.
    pub namespace: Vec<String>,
    /// Table name.
    pub name: String,
    /// The day-partitioned timestamp column and whether it has a time zone
    /// (none: the table is not partitioned).
    pub day_column: Option<(String, bool)>,
    /// The days to compact (empty for an unpartitioned table: all of it).
    pub days: BTreeSet<i32>,
    /// Files under this size are rewritten.
    pub min_file_size: u64,
    /// The size of the files written.
    pub target_file_size: u64,
    /// `main` before the engine ran.
    pub base: i64,
    /// Each partition's figures before.
    pub before: BTreeMap<Option<i32>, DayFigures>,
}

/// Plans a handed-over compaction of `target` with `opts`.
///
/// # Errors
/// A table partitioned other than by one `day(...)` field (or not at all),
/// or when its manifests cannot be read.
pub async fn plan(target: &Target, opts: &CompactOptions) -> Result<Handover> {
    let metadata = &target.loaded.metadata;
    let spec = metadata.default_partition_spec();
    let schema = metadata.current_schema();
    let day_column = match spec.fields() {
        [] => None,
        [field] if field.transform == Transform::Day => {
            let column = schema.field_by_id(field.source_id).ok_or_else(|| {
                Error::Maintenance(format!(
                    "{}: the partition field {} has no source column",
                    target.ident, field.name
                ))
            })?;
            let zoned = matches!(
                *column.field_type,
                Type::Primitive(PrimitiveType::Timestamptz | PrimitiveType::TimestamptzNs)
            );
            Some((column.name.clone(), zoned))
        }
        _ => {
            return Err(Error::Config(format!(
                "{} is partitioned by {}; compaction by another engine takes tables partitioned by one day(...) field or not at all: \
                 compact it with floe (compact_engine = \"floe\")",
                target.ident,
                spec.fields()
                    .iter()
                    .map(|f| format!("{}({})", f.transform, f.source_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let (report, partitions) = planned_partitions(target, opts).await?;
    let days: BTreeSet<i32> = partitions
        .iter()
        .filter(|(id, _)| *id == spec.spec_id())
        .filter_map(|(_, p)| day_of(p))
        .collect();
    let target_file_size = report.target_file_size;
    let before = match metadata.current_snapshot() {
        Some(_) => figures(target).await?,
        None => BTreeMap::new(),
    };
    Ok(Handover {
        report,
        namespace: target.handle.namespace.clone(),
        name: target.handle.name.clone(),
        day_column,
        days,
        min_file_size: opts
            .min_file_size
            .unwrap_or_else(|| super::small_file_limit(target_file_size)),
        target_file_size,
        base: metadata.current_snapshot_id().unwrap_or_default(),
        before,
    })
}

/// The day a partition value holds (its first field, a day number).
fn day_of(partition: &iceberg::spec::Struct) -> Option<i32> {
    match partition.iter().next()? {
        Some(iceberg::spec::Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(d))) => {
            Some(*d)
        }
        _ => None,
    }
}

/// Each partition's figures at the table's current snapshot.
async fn figures(target: &Target) -> Result<BTreeMap<Option<i32>, DayFigures>> {
    let Some(snapshot) = target.loaded.metadata.current_snapshot() else {
        return Ok(BTreeMap::new());
    };
    let table = target.handle.table(&target.loaded)?;
    let live = live_files(&table, &target.handle.io, snapshot, false).await?;
    Ok(tally(&live))
}

/// Live rows and files per partition.
fn tally(live: &[LiveFile]) -> BTreeMap<Option<i32>, DayFigures> {
    let mut out: BTreeMap<Option<i32>, DayFigures> = BTreeMap::new();
    for f in live {
        let entry = out.entry(day_of(f.file.partition())).or_default();
        let rows = i64::try_from(f.file.record_count()).unwrap_or(i64::MAX);
        match f.file.content_type() {
            DataContentType::Data => {
                entry.rows += rows;
                entry.files += 1;
            }
            DataContentType::PositionDeletes => entry.rows -= rows,
            DataContentType::EqualityDeletes => entry.inexact = true,
        }
    }
    out
}

/// What differs between the figures before and after (empty: the same
/// live rows everywhere and no more files in a compacted day).
pub fn differences(
    before: &BTreeMap<Option<i32>, DayFigures>,
    after: &BTreeMap<Option<i32>, DayFigures>,
    days: &BTreeSet<i32>,
) -> Vec<String> {
    let name =
        |d: &Option<i32>| d.map_or_else(|| "the table".to_string(), crate::table::days::day_name);
    let keys: BTreeSet<&Option<i32>> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let b = before.get(key).copied().unwrap_or_default();
        let a = after.get(key).copied().unwrap_or_default();
        let rows_ok = if b.inexact {
            a.rows <= b.rows
        } else {
            a.rows == b.rows
        };
        if !rows_ok {
            out.push(format!(
                "{}: {} live rows before, {} after",
                name(key),
                b.rows,
                a.rows
            ));
        }
        let compacted = key.is_none_or(|d| days.contains(&d));
        if compacted && a.files > b.files {
            out.push(format!(
                "{}: {} files before, {} after",
                name(key),
                b.files,
                a.files
            ));
        }
    }
    out
}

/// Checks what the engine committed since `handover.base` and reports it
/// as a compaction; puts `main` back when a check fails and nobody else
/// committed.
///
/// # Errors
/// [`Error::Maintenance`] when a check fails (saying whether `main` was put
/// back), or when the catalog or manifests cannot be read.
pub async fn check(
    client: &RestClient,
    target: &mut Target,
    handover: &Handover,
) -> Result<CompactReport> {
    let loaded = client
        .load_table(&target.handle.namespace, &target.handle.name)
        .await?
        .ok_or_else(|| Error::Maintenance(format!("{} was dropped", target.ident)))?;
    target.loaded = loaded;
    let metadata = &target.loaded.metadata;
    let current = metadata.current_snapshot_id().unwrap_or_default();
    let mut report = handover.report.clone();
    // main's snapshots since the base, newest first.
    let mut added = Vec::new();
    let mut at = metadata.current_snapshot();
    while let Some(s) = at {
        if s.snapshot_id() == handover.base {
            break;
        }
        added.push(s.clone());
        at = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    if at.is_none() && current != handover.base {
        return Err(Error::Maintenance(format!(
            "{}: main no longer descends from snapshot {} the compaction started from",
            target.ident, handover.base
        )));
    }
    let ours: Vec<_> = added
        .iter()
        .filter(|s| s.summary().operation == Operation::Replace)
        .collect();
    let others = added.len() - ours.len();
    let number = |s: &iceberg::spec::SnapshotRef, key: &str| -> u64 {
        s.summary()
            .additional_properties
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    report.snapshots = ours.iter().rev().map(|s| s.snapshot_id()).collect();
    report.input_files = ours.iter().map(|s| number(s, "deleted-data-files")).sum();
    report.output_files = ours.iter().map(|s| number(s, "added-data-files")).sum();
    report.output_bytes = ours.iter().map(|s| number(s, "added-files-size")).sum();
    report.input_bytes = ours.iter().map(|s| number(s, "removed-files-size")).sum();
    report.rows = ours.iter().map(|s| number(s, "added-records")).sum();
    report.groups_committed = ours.len() as u64;
    report.partitions_compacted = handover.days.len().max(1) as u64;
    let after = figures(target).await?;
    report.files_after = after.values().map(|f| f.files).sum();
    report.status = if ours.is_empty() {
        "nothing-to-do".into()
    } else {
        "compacted".into()
    };
    if others > 0 {
        // Other writers committed meanwhile: the day figures moved for
        // their own reasons; each replace snapshot must at least not have
        // added rows.
        if let Some(s) = ours
            .iter()
            .find(|s| number(s, "added-records") > number(s, "deleted-records"))
        {
            return Err(Error::Maintenance(format!(
                "{}: the engine's replace snapshot {} added {} rows and removed {}: it changed data; \
                 other writers committed since, so main was not put back",
                target.ident,
                s.snapshot_id(),
                number(s, "added-records"),
                number(s, "deleted-records")
            )));
        }
        tracing::info!(table = %target.ident, others, "checked the engine's snapshots by their summaries (other writers committed meanwhile)");
        return Ok(report);
    }
    let wrong = differences(&handover.before, &after, &handover.days);
    if wrong.is_empty() {
        return Ok(report);
    }
    let restored = restore(client, target, current, handover.base).await;
    Err(Error::Maintenance(format!(
        "{}: the engine's compaction changed what readers see ({}); {}",
        target.ident,
        wrong.join("; "),
        match restored {
            Ok(()) => format!("main was put back to snapshot {}", handover.base),
            Err(e) => format!(
                "main could not be put back to snapshot {}: {e}",
                handover.base
            ),
        }
    )))
}

/// Moves `main` back from `current` to `base` (only if it is still at
/// `current`).
async fn restore(client: &RestClient, target: &Target, current: i64, base: i64) -> Result<()> {
    let requirements = vec![TableRequirement::RefSnapshotIdMatch {
        r#ref: "main".to_string(),
        snapshot_id: Some(current),
    }];
    let updates = vec![TableUpdate::SetSnapshotRef {
        ref_name: "main".to_string(),
        reference: SnapshotReference::new(base, SnapshotRetention::branch(None, None, None)),
    }];
    match client
        .commit(
            &target.handle.namespace,
            &target.handle.name,
            &requirements,
            &updates,
        )
        .await?
    {
        CommitOutcome::Committed(_) => Ok(()),
        CommitOutcome::Conflict(r) | CommitOutcome::Unknown(r) => Err(Error::Maintenance(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(rows: i64, files: u64) -> DayFigures {
        DayFigures {
            rows,
            files,
            inexact: false,
        }
    }

    #[test]
    fn the_same_rows_in_fewer_files_pass() {
        let before = BTreeMap::from([(Some(1), day(100, 6)), (Some(2), day(50, 3))]);
        let after = BTreeMap::from([(Some(1), day(100, 1)), (Some(2), day(50, 3))]);
        assert!(differences(&before, &after, &BTreeSet::from([1])).is_empty());
    }

    #[test]
    fn lost_or_gained_rows_and_more_files_fail() {
        let before = BTreeMap::from([(Some(1), day(100, 6)), (Some(2), day(50, 3))]);
        let lost = BTreeMap::from([(Some(1), day(99, 1)), (Some(2), day(50, 3))]);
        assert_eq!(differences(&before, &lost, &BTreeSet::from([1])).len(), 1);
        let gone = BTreeMap::from([(Some(1), day(100, 1))]);
        assert_eq!(
            differences(&before, &gone, &BTreeSet::from([1])),
            vec!["1970-01-03: 50 live rows before, 0 after".to_string()]
        );
        let more = BTreeMap::from([(Some(1), day(100, 7)), (Some(2), day(50, 3))]);
        assert_eq!(differences(&before, &more, &BTreeSet::from([1])).len(), 1);
        // A day the compaction did not touch may keep its files.
        assert!(differences(&before, &before, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn with_equality_deletes_rows_may_only_shrink() {
        let before = BTreeMap::from([(
            Some(1),
            DayFigures {
                rows: 100,
                files: 4,
                inexact: true,
            },
        )]);
        let applied = BTreeMap::from([(Some(1), day(90, 1))]);
        assert!(differences(&before, &applied, &BTreeSet::from([1])).is_empty());
        let grown = BTreeMap::from([(Some(1), day(101, 1))]);
        assert_eq!(differences(&before, &grown, &BTreeSet::from([1])).len(), 1);
    }
}
