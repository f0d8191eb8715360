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
    /// The pointer move. A change without updates still carries one, from
    /// the current location to itself, so that inside a transaction its
    /// requirements hold at swap time too.
    pub swap: Option<PointerSwap>,
    /// Whether this commit creates the table (stage-create → commit).
    pub creates: bool,
    /// The resulting metadata.
    pub metadata: TableMetadata,
    /// Where it is (or, when nothing changed, already was) stored.
    pub location: String,
    /// The metadata file this commit wrote, to delete if it is not published.
    pub written: Option<String>,
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
    let unchanged = |metadata| PreparedCommit {
        table: table.clone(),
        swap: Some(PointerSwap {
            table: table.clone(),
            expected: current.clone(),
            new: current.clone(),
        }),
        creates: false,
        metadata,
        location: current.clone(),
        written: None,
    };
    if req.updates.is_empty() {
        return Ok(unchanged(metadata));
    }
    let uuid = metadata.uuid();
    let mut builder = metadata.into_builder(Some(current.clone()));
    for update in req.updates {
        let update = confine_update(state, update, uuid)?;
        builder = update.apply(builder).map_err(|e| from_iceberg(&e))?;
    }
    let new = builder.build().map_err(|e| from_iceberg(&e))?.metadata;
    state.warehouse.confine(new.location())?;
    let next = state.warehouse.next_metadata_location(&current, &new);
    state.warehouse.write_metadata(&new, &next).await?;
    let location = next.to_string();
    Ok(PreparedCommit {
        table: table.clone(),
        swap: Some(PointerSwap {
            table: table.clone(),
            expected: current,
            new: location.clone(),
        }),
        creates: false,
        metadata: new,
        location: location.clone(),
        written: Some(location),
    })
}

/// Keeps updates inside the catalog's rules: a table's uuid never changes
/// (Iceberg Java refuses it too; a reassigned uuid would let one table pose
/// as another's folder owner), and a new location is stored normalised.
fn confine_update(state: &AppState, update: TableUpdate, current: Uuid) -> Result<TableUpdate> {
    match update {
        TableUpdate::AssignUuid { uuid } if uuid != current => Err(ApiError::bad_request(format!(
            "Cannot reassign the table uuid from {current} to {uuid}"
        ))),
        TableUpdate::SetLocation { location } => Ok(TableUpdate::SetLocation {
            location: state.warehouse.confine(&location)?,
        }),
        TableUpdate::SetProperties { updates } => Ok(TableUpdate::SetProperties {
            updates: state.warehouse.confine_properties(updates)?,
        }),
        TableUpdate::AddSchema { schema } => {
            crate::api::tables::check_field_ids(&schema, 1)?;
            Ok(TableUpdate::AddSchema { schema })
        }
        other => Ok(other),
    }
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
    crate::api::tables::check_field_ids(&schema, 0)?;
    let props = state.warehouse.confine_properties(props)?;
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
        written: Some(location.to_string()),
    })
}

/// Makes prepared commits current: all pointers move in one transaction, or
/// none does. Written files are deleted only when the failure is certain (a
/// lost race); after a database error the swap may have landed, and the
/// file it would point at must stay.
pub async fn publish(state: &AppState, commits: &[PreparedCommit]) -> Result<()> {
    let outcome = match commits {
        [only] if only.creates => state.store.create_table(&only.table, &only.location).await,
        _ => {
            let swaps: Vec<PointerSwap> = commits.iter().filter_map(|c| c.swap.clone()).collect();
            state.store.swap_pointers(&swaps).await
        }
    };
    let Err(err) = outcome else {
        return Ok(());
    };
    let certain = !matches!(err, StoreError::Database(_));
    if certain {
        discard(state, commits).await;
    }
    let names: Vec<String> = commits.iter().map(|c| c.table.to_string()).collect();
    let names = names.join(", ");
    Err(match err {
        StoreError::AlreadyExists => {
            ApiError::commit_failed(format!("Table {names} was created concurrently"))
        }
        StoreError::Database(e) => ApiError::unavailable(
            "record the commit (its outcome is unknown; reload the table before retrying)",
            &e,
        ),
        other => store_error(other, "", &names),
    })
}

/// Deletes the metadata files of commits that will not be published.
pub async fn discard(state: &AppState, commits: &[PreparedCommit]) {
    for written in commits.iter().filter_map(|c| c.written.as_deref()) {
        state.warehouse.discard(written).await;
    }
}
