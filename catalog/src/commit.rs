//! Table commits: check requirements, apply updates, write the next metadata
//! file, then move the pointer with a compare-and-swap.
//!
//! Preparing ([`prepare`]) writes a new, unreferenced metadata file;
//! publishing ([`publish`]) makes it current. A crash in between leaves the
//! table at its previous version and an orphan file. A lost race discards the
//! written files and answers `CommitFailedException`, so the client reloads
//! and retries; no update is ever applied on top of a version it was not
//! checked against.

use std::collections::HashMap;

use iceberg::spec::{
    FormatVersion, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use iceberg::{TableRequirement, TableUpdate};
use serde::Deserialize;
use uuid::Uuid;

use crate::api::{AppState, store_error};
use crate::error::{ApiError, Result, from_iceberg};
use crate::ident::{TableIdentWire, TableName};
use crate::store::{PointerSwap, StoreError};

/// The REST spec's `CommitTableRequest`.
#[derive(Debug, Deserialize)]
pub struct CommitTableRequest {
    /// Required inside a multi-table transaction, optional otherwise.
    #[serde(default)]
    pub identifier: Option<TableIdentWire>,
    /// Conditions on the current metadata (required by the spec).
    pub requirements: Vec<TableRequirement>,
    /// Changes to apply (required by the spec).
    pub updates: Vec<TableUpdate>,
}

/// A commit whose metadata file is written but not yet current.
#[derive(Debug)]
pub struct PreparedCommit {
    /// The table.
    pub table: TableName,
    /// The pointer move; `None` when nothing changed.
    pub swap: Option<PointerSwap>,
    /// Whether this commit creates the table (stage-create → commit).
    pub creates: bool,
    /// The resulting metadata.
    pub metadata: TableMetadata,
    /// Where it is (or, when nothing changed, already was) stored.
    pub location: String,
}

/// Checks and applies one table's changes and writes its next metadata file.
pub async fn prepare(
    state: &AppState,
    table: &TableName,
    req: CommitTableRequest,
) -> Result<PreparedCommit> {
    let current = state
        .store
        .table_pointer(table)
        .await
        .map_err(|e| store_error(e, &table.namespace.to_string(), &table.to_string()))?;
    let Some(current) = current else {
        if req.requirements.contains(&TableRequirement::NotExist) {
            return prepare_create(state, table, req).await;
        }
        return Err(ApiError::no_such_table(&table.to_string()));
    };
    let metadata = state.warehouse.read_metadata(&current).await?;
    for requirement in &req.requirements {
        requirement
            .check(Some(&metadata))
            .map_err(|e| from_iceberg(&e))?;
    }
    if req.updates.is_empty() {
        return Ok(PreparedCommit {
            table: table.clone(),
            swap: None,
            creates: false,
            metadata,
            location: current,
        });
    }
    let mut builder = metadata.into_builder(Some(current.clone()));
    for update in req.updates {
        builder = update.apply(builder).map_err(|e| from_iceberg(&e))?;
    }
    let new = builder.build().map_err(|e| from_iceberg(&e))?.metadata;
    state.warehouse.confine(new.location())?;
    let location = state.warehouse.next_metadata_location(&current, &new);
    state.warehouse.write_metadata(&new, &location).await?;
    Ok(PreparedCommit {
        table: table.clone(),
        swap: Some(PointerSwap {
            table: table.clone(),
            expected: current,
            new: location.to_string(),
        }),
        creates: false,
        metadata: new,
        location: location.to_string(),
    })
}

/// The second half of a staged create: the client sends `assert-create` and
/// the updates that describe the whole table. The schema, spec, sort order,
/// location, format version, properties and uuid seed a fresh metadata; the
/// remaining updates (snapshots of a create-table-as-select, refs) apply on
/// top.
async fn prepare_create(
    state: &AppState,
    table: &TableName,
    req: CommitTableRequest,
) -> Result<PreparedCommit> {
    let mut schema = None;
    let mut spec = UnboundPartitionSpec::default();
    let mut order = SortOrder::unsorted_order();
    let mut location = None;
    let mut format = FormatVersion::V2;
    let mut props = HashMap::new();
    let mut uuid = Uuid::now_v7();
    let mut rest = Vec::new();
    for update in req.updates {
        match update {
            TableUpdate::AddSchema { schema: s, .. } if schema.is_none() => schema = Some(s),
            TableUpdate::AddSpec { spec: s } => spec = s,
            TableUpdate::AddSortOrder { sort_order } => order = sort_order,
            TableUpdate::SetLocation { location: l } => location = Some(l),
            TableUpdate::UpgradeFormatVersion { format_version } => format = format_version,
            TableUpdate::SetProperties { updates } => props.extend(updates),
            TableUpdate::AssignUuid { uuid: u } => uuid = u,
            TableUpdate::SetCurrentSchema { .. }
            | TableUpdate::SetDefaultSpec { .. }
            | TableUpdate::SetDefaultSortOrder { .. } => {}
            other => rest.push(other),
        }
    }
    let schema = schema.ok_or_else(|| {
        ApiError::bad_request("A create commit (assert-create) must carry an add-schema update")
    })?;
    let location = match location {
        Some(l) => state.warehouse.confine(&l)?,
        None => state.warehouse.default_table_location(table, uuid),
    };
    let mut builder = TableMetadataBuilder::new(schema, spec, order, location, format, props)
        .map_err(|e| from_iceberg(&e))?
        .assign_uuid(uuid);
    for update in rest {
        builder = update.apply(builder).map_err(|e| from_iceberg(&e))?;
    }
    let metadata = builder.build().map_err(|e| from_iceberg(&e))?.metadata;
    let location = state.warehouse.first_metadata_location(&metadata);
    state.warehouse.write_metadata(&metadata, &location).await?;
    Ok(PreparedCommit {
        table: table.clone(),
        swap: None,
        creates: true,
        metadata,
        location: location.to_string(),
    })
}

/// Makes prepared commits current: all pointers move in one transaction, or
/// none does and every written file is discarded.
pub async fn publish(state: &AppState, commits: &[PreparedCommit]) -> Result<()> {
    let outcome = match commits {
        [only] if only.creates => state
            .store
            .create_table(&only.table, &only.location)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists => ApiError::commit_failed(format!(
                    "Table {} was created concurrently",
                    only.table
                )),
                other => store_error(
                    other,
                    &only.table.namespace.to_string(),
                    &only.table.to_string(),
                ),
            }),
        _ => {
            let swaps: Vec<PointerSwap> = commits.iter().filter_map(|c| c.swap.clone()).collect();
            match state.store.swap_pointers(&swaps).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let names: Vec<String> = swaps.iter().map(|s| s.table.to_string()).collect();
                    Err(store_error(e, "", &names.join(", ")))
                }
            }
        }
    };
    if outcome.is_err() {
        discard(state, commits).await;
    }
    outcome
}

/// Deletes the metadata files of commits that will not be published.
pub async fn discard(state: &AppState, commits: &[PreparedCommit]) {
    for c in commits.iter().filter(|c| c.swap.is_some() || c.creates) {
        state.warehouse.discard(&c.location).await;
    }
}
