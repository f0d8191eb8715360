//! `/v1/namespaces/{namespace}/tables` resources, register, rename, metrics.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State as AxState;
use axum::response::Response;
use iceberg::spec::{
    FormatVersion, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::pagination::{PageParams, paginate};
use super::{ApiJson, ApiPath, ApiQuery, AppState, State, no_content, store_error};
use crate::commit::{self, CommitTableRequest};
use crate::error::{ApiError, Result, from_iceberg};
use crate::ident::{Namespace, TableIdentWire, TableName};
use crate::store::PointerSwap;

fn table_name(ns: &str, table: &str) -> Result<TableName> {
    TableName::new(Namespace::from_path(ns)?, table)
}

fn not_found_or(state_err: crate::store::StoreError, t: &TableName) -> ApiError {
    store_error(state_err, &t.namespace.to_string(), &t.to_string())
}

async fn require_namespace(state: &AppState, ns: &Namespace) -> Result<()> {
    match state.store.namespace_properties(ns).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::no_such_namespace(&ns.to_string())),
        Err(e) => Err(store_error(e, &ns.to_string(), "")),
    }
}

/// `GET /v1/namespaces/{namespace}/tables`.
pub(crate) async fn list(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Value>> {
    let ns = Namespace::from_path(&param)?;
    require_namespace(&state, &ns).await?;
    let names = state
        .store
        .list_tables(&ns)
        .await
        .map_err(|e| store_error(e, &ns.to_string(), ""))?;
    let (page, next) = paginate(names, String::clone, &page)?;
    let identifiers: Vec<Value> = page
        .into_iter()
        .map(|name| json!({ "namespace": ns.levels(), "name": name }))
        .collect();
    Ok(Json(
        json!({ "identifiers": identifiers, "next-page-token": next }),
    ))
}

/// The REST spec's `CreateTableRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct CreateTableRequest {
    name: String,
    #[serde(default)]
    location: Option<String>,
    schema: iceberg::spec::Schema,
    #[serde(default)]
    partition_spec: Option<UnboundPartitionSpec>,
    #[serde(default)]
    write_order: Option<SortOrder>,
    #[serde(default)]
    stage_create: bool,
    #[serde(default)]
    properties: HashMap<String, String>,
}

/// Refuses a schema whose field ids are below `min` or not unique (at any
/// depth): readers resolve columns by id. A created table's ids are
/// reassigned (Iceberg Java clients send them from 0), so a create takes
/// `min = 0`; a schema added to a table keeps its ids and takes 1.
pub(crate) fn check_field_ids(schema: &iceberg::spec::Schema, min: i32) -> Result<()> {
    use iceberg::spec::{NestedFieldRef, Type};
    fn walk(fields: &[NestedFieldRef], seen: &mut HashSet<i32>, min: i32) -> Result<()> {
        for f in fields {
            if f.id < min {
                return Err(ApiError::bad_request(format!(
                    "Invalid schema: field {:?} has id {}; field ids must be at least {min}",
                    f.name, f.id
                )));
            }
            if !seen.insert(f.id) {
                return Err(ApiError::bad_request(format!(
                    "Invalid schema: field id {} is used twice (again by {:?})",
                    f.id, f.name
                )));
            }
            match f.field_type.as_ref() {
                Type::Struct(s) => walk(s.fields(), seen, min)?,
                Type::List(l) => walk(std::slice::from_ref(&l.element_field), seen, min)?,
                Type::Map(m) => walk(&[m.key_field.clone(), m.value_field.clone()], seen, min)?,
                Type::Primitive(_) => {}
            }
        }
        Ok(())
    }
    walk(schema.as_struct().fields(), &mut HashSet::new(), min)
}

/// `format-version` is a creation option, not a table property (as in
/// Iceberg Java's catalogs).
fn take_format_version(props: &mut HashMap<String, String>) -> Result<FormatVersion> {
    match props.remove("format-version").as_deref() {
        None | Some("2") => Ok(FormatVersion::V2),
        Some("1") => Ok(FormatVersion::V1),
        Some("3") => Ok(FormatVersion::V3),
        Some(other) => Err(ApiError::bad_request(format!(
            "Unsupported format-version {other:?}: use 1, 2 or 3"
        ))),
    }
}

/// `POST /v1/namespaces/{namespace}/tables`: create, or stage a create
/// (metadata returned, nothing written) for a later `assert-create` commit.
pub(crate) async fn create(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
    ApiJson(mut req): ApiJson<CreateTableRequest>,
) -> Result<Json<Value>> {
    let table = table_name(&param, &req.name)?;
    require_namespace(&state, &table.namespace).await?;
    let exists = state
        .store
        .table_pointer(&table)
        .await
        .map_err(|e| not_found_or(e, &table))?;
    if exists.is_some() {
        return Err(ApiError::table_exists(&table.to_string()));
    }
    let uuid = Uuid::now_v7();
    let location = match req.location.as_deref() {
        Some(l) => state.warehouse.confine(l)?,
        None => state.warehouse.default_table_location(&table, uuid),
    };
    let format = take_format_version(&mut req.properties)?;
    check_field_ids(&req.schema, 0)?;
    let properties = state
        .warehouse
        .confine_properties(std::mem::take(&mut req.properties))?;
    req.properties = properties;
    let metadata = TableMetadataBuilder::new(
        req.schema,
        req.partition_spec.unwrap_or_default(),
        req.write_order.unwrap_or_else(SortOrder::unsorted_order),
        location,
        format,
        req.properties,
    )
    .map_err(|e| from_iceberg(&e))?
    .assign_uuid(uuid)
    .build()
    .map_err(|e| from_iceberg(&e))?
    .metadata;
    if req.stage_create {
        return load_result(&state, None, &metadata, SnapshotFilter::All);
    }
    let location = state.warehouse.first_metadata_location(&metadata);
    state.warehouse.write_metadata(&metadata, &location).await?;
    let location = location.to_string();
    if let Err(e) = state.store.create_table(&table, &location).await {
        state.warehouse.discard(&location).await;
        return Err(not_found_or(e, &table));
    }
    tracing::info!(table = %table, %location, "created table");
    load_result(&state, Some(&location), &metadata, SnapshotFilter::All)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFilter {
    All,
    Refs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoadParams {
    snapshots: Option<String>,
}

/// The `LoadTableResult`: metadata (optionally with only the snapshots that
/// branches and tags reference) and the IO config clients need.
fn load_result(
    state: &AppState,
    location: Option<&str>,
    metadata: &TableMetadata,
    filter: SnapshotFilter,
) -> Result<Json<Value>> {
    let mut value = serde_json::to_value(metadata)
        .map_err(|e| ApiError::internal("serialize table metadata", &e))?;
    // The crate serializes snapshots from a hash map; clients that take the
    // last element as the newest deserve commit order.
    if let Some(Value::Array(snapshots)) = value.get_mut("snapshots") {
        snapshots.sort_by_key(|s| {
            (
                s.get("sequence-number").and_then(Value::as_i64),
                s.get("timestamp-ms").and_then(Value::as_i64),
            )
        });
    }
    if filter == SnapshotFilter::Refs {
        // The crate keeps `refs` private; the serialized form has them.
        let referenced: HashSet<i64> = value
            .get("refs")
            .and_then(Value::as_object)
            .map(|refs| {
                refs.values()
                    .filter_map(|r| r.get("snapshot-id").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(Value::Array(snapshots)) = value.get_mut("snapshots") {
            snapshots.retain(|s| {
                s.get("snapshot-id")
                    .and_then(Value::as_i64)
                    .is_some_and(|id| referenced.contains(&id))
            });
        }
    }
    let mut config = serde_json::Map::new();
    if metadata.location().starts_with("s3://") {
        for (k, v) in state.config.s3.file_io_props(state.config.vend_credentials) {
            config.insert(k, Value::String(v));
        }
    }
    let mut result = json!({ "metadata": value, "config": config });
    if let Some(location) = location {
        result["metadata-location"] = Value::String(location.to_string());
    }
    Ok(Json(result))
}

async fn current_pointer(state: &AppState, table: &TableName) -> Result<String> {
    state
        .store
        .table_pointer(table)
        .await
        .map_err(|e| not_found_or(e, table))?
        .ok_or_else(|| ApiError::no_such_table(&table.to_string()))
}

/// `GET /v1/namespaces/{namespace}/tables/{table}[?snapshots=all|refs]`.
pub(crate) async fn load(
    AxState(state): State,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<LoadParams>,
) -> Result<Json<Value>> {
    let table = table_name(&ns, &name)?;
    let filter = match params.snapshots.as_deref() {
        None | Some("all") => SnapshotFilter::All,
        Some("refs") => SnapshotFilter::Refs,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid snapshots={other:?}: use 'all' or 'refs'"
            )));
        }
    };
    let location = current_pointer(&state, &table).await?;
    let metadata = state.warehouse.read_metadata(&location).await?;
    load_result(&state, Some(&location), &metadata, filter)
}

/// `HEAD /v1/namespaces/{namespace}/tables/{table}`: 204 or 404.
pub(crate) async fn exists(
    AxState(state): State,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> Result<Response> {
    let table = table_name(&ns, &name)?;
    current_pointer(&state, &table).await?;
    Ok(no_content())
}

/// `POST /v1/namespaces/{namespace}/tables/{table}`: commit.
pub(crate) async fn commit(
    AxState(state): State,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CommitTableRequest>,
) -> Result<Json<Value>> {
    let table = table_name(&ns, &name)?;
    if let Some(ident) = &req.identifier
        && TableName::from_wire(ident)? != table
    {
        return Err(ApiError::bad_request(format!(
            "The body's identifier {}.{} does not match the path's table {table}",
            ident.namespace.join("."),
            ident.name
        )));
    }
    let prepared = commit::prepare(&state, &table, req).await?;
    commit::publish(&state, std::slice::from_ref(&prepared)).await?;
    if prepared.written.is_some() {
        tracing::info!(table = %table, location = %prepared.location, "committed");
    }
    let mut result = load_result(
        &state,
        Some(&prepared.location),
        &prepared.metadata,
        SnapshotFilter::All,
    )?;
    if let Some(obj) = result.0.as_object_mut() {
        obj.remove("config");
    }
    Ok(result)
}

#[derive(Debug, Deserialize)]
pub(crate) struct DropParams {
    #[serde(rename = "purgeRequested")]
    purge_requested: Option<String>,
}

/// `DELETE /v1/namespaces/{namespace}/tables/{table}[?purgeRequested=true]`.
pub(crate) async fn drop(
    AxState(state): State,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<DropParams>,
) -> Result<Response> {
    let table = table_name(&ns, &name)?;
    // pyiceberg sends `True`/`False`; Java parses booleans case-insensitively.
    let purge = match params
        .purge_requested
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => false,
        Some(v) if v == "false" => false,
        Some(v) if v == "true" => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid purgeRequested={other:?}: use true or false"
            )));
        }
    };
    let location = state
        .store
        .drop_table(&table)
        .await
        .map_err(|e| not_found_or(e, &table))?;
    tracing::info!(table = %table, purge, "dropped table");
    if purge {
        // The table is gone from the catalog either way; a failed purge
        // leaves files that remove-orphans or a retry can clean.
        let folder = location
            .rsplit_once("/metadata/")
            .map_or(location.as_str(), |(folder, _)| folder);
        let shared = state
            .store
            .any_pointer_under(&format!("{folder}/"))
            .await
            .map_err(|e| not_found_or(e, &table))?;
        state.warehouse.purge(&location, shared).await?;
    }
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct RegisterRequest {
    name: String,
    metadata_location: String,
    #[serde(default)]
    overwrite: bool,
}

/// `POST /v1/namespaces/{namespace}/register`: adopt an existing metadata
/// file (inside the warehouse) as a table.
pub(crate) async fn register(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<Value>> {
    let table = table_name(&param, &req.name)?;
    require_namespace(&state, &table.namespace).await?;
    let location = state.warehouse.confine(&req.metadata_location)?;
    let metadata = iceberg::spec::TableMetadata::read_from(state.warehouse.io(), &location)
        .await
        .map_err(|e| ApiError::bad_request(format!("Cannot read metadata file {location}: {e}")))?;
    state.warehouse.confine(metadata.location())?;
    let existing = state
        .store
        .table_pointer(&table)
        .await
        .map_err(|e| not_found_or(e, &table))?;
    let outcome = match existing {
        Some(expected) if req.overwrite => {
            let swap = PointerSwap {
                table: table.clone(),
                expected,
                new: location.clone(),
            };
            state.store.swap_pointers(&[swap]).await
        }
        Some(_) => return Err(ApiError::table_exists(&table.to_string())),
        None => state.store.create_table(&table, &location).await,
    };
    outcome.map_err(|e| not_found_or(e, &table))?;
    tracing::info!(table = %table, %location, "registered table");
    load_result(&state, Some(&location), &metadata, SnapshotFilter::All)
}

#[derive(Debug, Deserialize)]
pub(crate) struct RenameRequest {
    source: TableIdentWire,
    destination: TableIdentWire,
}

/// `POST /v1/tables/rename`.
pub(crate) async fn rename(
    AxState(state): State,
    ApiJson(req): ApiJson<RenameRequest>,
) -> Result<Response> {
    let from = TableName::from_wire(&req.source)?;
    let to = TableName::from_wire(&req.destination)?;
    state
        .store
        .rename_table(&from, &to)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NamespaceNotFound => {
                ApiError::no_such_namespace(&to.namespace.to_string())
            }
            crate::store::StoreError::AlreadyExists => ApiError::table_exists(&to.to_string()),
            other => not_found_or(other, &from),
        })?;
    tracing::info!(from = %from, to = %to, "renamed table");
    Ok(no_content())
}

/// `POST .../tables/{table}/metrics`: scan and commit reports from clients.
/// They are accepted (and logged at debug level) so clients don't warn.
pub(crate) async fn report_metrics(
    AxState(state): State,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiJson(report): ApiJson<Value>,
) -> Result<Response> {
    let table = table_name(&ns, &name)?;
    current_pointer(&state, &table).await?;
    if !report.is_object() {
        return Err(ApiError::bad_request(
            "A metrics report must be a JSON object",
        ));
    }
    tracing::debug!(table = %table, kind = ?report.get("report-type"), "metrics report");
    Ok(no_content())
}
