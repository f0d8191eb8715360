//! `/v1/namespaces` resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::State as AxState;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pagination::{PageParams, paginate};
use super::{ApiJson, ApiPath, ApiQuery, State, no_content, store_error};
use crate::error::{ApiError, Result};
use crate::ident::{Namespace, PATH_SEPARATOR};

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    parent: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

/// `GET /v1/namespaces[?parent=]`: the direct children of `parent` (or the
/// top level), including levels that exist only as parents of others.
pub(crate) async fn list(
    AxState(state): State,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>> {
    let parent = match params.parent.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let ns = Namespace::from_path(p)?;
            ensure_exists(&state, &ns).await?;
            Some(ns)
        }
        None => None,
    };
    let all = state
        .store
        .list_namespaces()
        .await
        .map_err(|e| store_error(e, "", ""))?;
    let depth = parent.as_ref().map_or(1, |p| p.levels().len() + 1);
    let children: BTreeSet<Vec<String>> = all
        .iter()
        .filter(|ns| match &parent {
            Some(p) => ns.is_descendant_of(p),
            None => true,
        })
        .map(|ns| ns.levels()[..depth].to_vec())
        .collect();
    let key = |levels: &Vec<String>| levels.join(&PATH_SEPARATOR.to_string());
    let (page, next) = paginate(children.into_iter().collect(), key, &params.page)?;
    Ok(Json(json!({ "namespaces": page, "next-page-token": next })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateNamespaceRequest {
    namespace: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
}

/// `POST /v1/namespaces`. The parent of a nested namespace must exist.
pub(crate) async fn create(
    AxState(state): State,
    ApiJson(req): ApiJson<CreateNamespaceRequest>,
) -> Result<Json<Value>> {
    let ns = Namespace::new(req.namespace)?;
    if let Some(parent) = ns.parent() {
        let exists = state
            .store
            .namespace_properties(&parent)
            .await
            .map_err(|e| store_error(e, &parent.to_string(), ""))?;
        if exists.is_none() {
            return Err(ApiError::no_such_namespace(&format!(
                "{parent} (create the parent namespace first)"
            )));
        }
    }
    check_properties(req.properties.iter())?;
    state
        .store
        .create_namespace(&ns, &req.properties)
        .await
        .map_err(|e| store_error(e, &ns.to_string(), ""))?;
    tracing::info!(namespace = %ns, "created namespace");
    Ok(Json(
        json!({ "namespace": ns.levels(), "properties": req.properties }),
    ))
}

/// Property values are stored in VARCHAR(1000) columns (JDBC layout).
fn check_properties<'a>(props: impl Iterator<Item = (&'a String, &'a String)>) -> Result<()> {
    for (k, v) in props {
        check_key(k)?;
        if v.len() > 1000 || v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "Invalid value of property {k:?}: at most 1000 bytes, no NUL characters"
            )));
        }
    }
    Ok(())
}

/// Keys are 1-255 bytes without NUL; `exists` marks a namespace in the
/// database (JDBC catalog layout) and is reserved, as in Iceberg's JdbcCatalog.
fn check_key(k: &str) -> Result<()> {
    if k == "exists" {
        return Err(ApiError::bad_request(
            "The property key \"exists\" is reserved by the catalog",
        ));
    }
    if k.is_empty() || k.len() > 255 || k.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "Invalid property key {:?}: keys must be 1-255 bytes without NUL characters",
            k.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

async fn ensure_exists(state: &super::AppState, ns: &Namespace) -> Result<HashMap<String, String>> {
    state
        .store
        .namespace_properties(ns)
        .await
        .map_err(|e| store_error(e, &ns.to_string(), ""))?
        .ok_or_else(|| ApiError::no_such_namespace(&ns.to_string()))
}

/// `GET /v1/namespaces/{namespace}`.
pub(crate) async fn load(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
) -> Result<Json<Value>> {
    let ns = Namespace::from_path(&param)?;
    let mut props = ensure_exists(&state, &ns).await?;
    // Engines place new tables under the namespace's location (Trino
    // refuses to create a table without one in a folder that is not
    // empty): a namespace without its own reports its warehouse folder.
    props
        .entry("location".to_string())
        .or_insert_with(|| state.warehouse.namespace_location(&ns));
    Ok(Json(
        json!({ "namespace": ns.levels(), "properties": props }),
    ))
}

/// `HEAD /v1/namespaces/{namespace}`: 204 or 404.
pub(crate) async fn exists(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
) -> Result<Response> {
    let ns = Namespace::from_path(&param)?;
    ensure_exists(&state, &ns).await?;
    Ok(no_content())
}

/// `DELETE /v1/namespaces/{namespace}`: only when empty.
pub(crate) async fn drop(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
) -> Result<Response> {
    let ns = Namespace::from_path(&param)?;
    state
        .store
        .drop_namespace(&ns)
        .await
        .map_err(|e| store_error(e, &ns.to_string(), ""))?;
    tracing::info!(namespace = %ns, "dropped namespace");
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
pub(crate) struct UpdatePropertiesRequest {
    #[serde(default)]
    removals: Vec<String>,
    #[serde(default)]
    updates: BTreeMap<String, String>,
}

/// `POST /v1/namespaces/{namespace}/properties`.
pub(crate) async fn update_properties(
    AxState(state): State,
    ApiPath(param): ApiPath<String>,
    ApiJson(req): ApiJson<UpdatePropertiesRequest>,
) -> Result<Json<Value>> {
    let ns = Namespace::from_path(&param)?;
    let removals: BTreeSet<String> = req.removals.into_iter().collect();
    if let Some(both) = removals.iter().find(|k| req.updates.contains_key(*k)) {
        return Err(ApiError::unprocessable(format!(
            "Property {both:?} is both updated and removed; send it in one list only"
        )));
    }
    check_properties(req.updates.iter())?;
    for key in &removals {
        check_key(key)?;
    }
    let current = ensure_exists(&state, &ns).await?;
    let (removed, missing): (Vec<String>, Vec<String>) = removals
        .iter()
        .cloned()
        .partition(|k| current.contains_key(k));
    state
        .store
        .update_namespace_properties(&ns, &req.updates, &removals)
        .await
        .map_err(|e| store_error(e, &ns.to_string(), ""))?;
    let updated: Vec<&String> = req.updates.keys().collect();
    Ok(Json(
        json!({ "updated": updated, "removed": removed, "missing": missing }),
    ))
}
