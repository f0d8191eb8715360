//! Which days of an upstream table changed between two of its snapshots,
//! read from snapshot lineage: the data and delete files each snapshot on
//! the path added or removed, by their `day(...)` partition. Compactions
//! (`replace` snapshots) change no data and are skipped.

use std::collections::BTreeSet;

use iceberg::spec::{ManifestStatus, Operation, PrimitiveType, TableMetadata, Transform, Type};
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::table::read::Changed;
use crate::table::snapshot::file_day;

/// The timestamp column a table is day-partitioned on (`day(col)` as the
/// spec's first field), if it is.
pub fn day_column(metadata: &TableMetadata) -> Option<String> {
    let spec = metadata.default_partition_spec();
    let field = spec.fields().first()?;
    if field.transform != Transform::Day {
        return None;
    }
    let source = metadata.current_schema().field_by_id(field.source_id)?;
    matches!(
        *source.field_type,
        Type::Primitive(PrimitiveType::Timestamptz | PrimitiveType::Timestamp)
    )
    .then(|| source.name.clone())
}

/// The days of `table` changed after snapshot `from` up to snapshot `to`.
///
/// # Errors
/// When a manifest cannot be read.
pub async fn between(table: &Table, from: Option<i64>, to: Option<i64>) -> Result<Changed> {
    if from == to {
        return Ok(Changed::Nothing);
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(Changed::Everything);
    };
    walk(table, Some(from), to).await
}

/// The days of `table` changed after snapshot `from` (none: since the
/// table was created) up to snapshot `to`.
///
/// # Errors
/// When a manifest cannot be read.
pub async fn since(table: &Table, from: Option<i64>, to: Option<i64>) -> Result<Changed> {
    match to {
        _ if from == to => Ok(Changed::Nothing),
        None => Ok(Changed::Everything),
        Some(to) => walk(table, from, to).await,
    }
}

async fn walk(table: &Table, from: Option<i64>, to: i64) -> Result<Changed> {
    let metadata = table.metadata();
    if day_column(metadata).is_none() {
        return Ok(Changed::Everything);
    }
    // The snapshots after `from`, newest first; `from` must be an ancestor.
    let mut path = Vec::new();
    let mut current = Some(to);
    loop {
        match current {
            Some(id) if Some(id) == from => break,
            Some(id) => match metadata.snapshot_by_id(id) {
                Some(s) if path.len() <= metadata.snapshots().len() => {
                    current = s.parent_snapshot_id();
                    path.push(s.clone());
                }
                _ => return Ok(Changed::Everything),
            },
            // The first snapshot's parent: the whole history was asked for.
            None if from.is_none() => break,
            // `from` is not an ancestor (expired, or the table was rewritten).
            None => return Ok(Changed::Everything),
        }
    }
    let storage = |e: iceberg::Error| Error::Storage(e.to_string()).caused_by(e);
    let mut days = BTreeSet::new();
    for snapshot in path {
        if snapshot.summary().operation == Operation::Replace {
            continue;
        }
        let id = snapshot.snapshot_id();
        let list = table
            .manifest_list_reader(&snapshot)
            .load()
            .await
            .map_err(storage)?;
        for manifest in list.entries().iter().filter(|m| m.added_snapshot_id == id) {
            let spec = metadata.partition_spec_by_id(manifest.partition_spec_id);
            let by_day = spec.is_some_and(|s| {
                s.fields()
                    .first()
                    .is_some_and(|f| f.transform == Transform::Day)
            });
            if !by_day {
                return Ok(Changed::Everything);
            }
            let entries = manifest
                .load_manifest(table.file_io())
                .await
                .map_err(storage)?;
            for entry in entries.entries() {
                if entry.status() == ManifestStatus::Existing || entry.snapshot_id() != Some(id) {
                    continue;
                }
                match file_day(entry.data_file()) {
                    Some(day) => {
                        days.insert(day);
                    }
                    None => return Ok(Changed::Everything),
                }
            }
        }
    }
    Ok(if days.is_empty() {
        Changed::Nothing
    } else {
        Changed::Days(days)
    })
}
