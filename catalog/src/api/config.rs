//! `GET /v1/config` and `GET /healthz`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State as AxState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiQuery, State};
use crate::error::{ApiError, Result};

/// Every endpoint this server implements, in the spec's notation, so that
/// clients that read `endpoints` know what they may call.
const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/transactions/commit",
];

#[derive(Debug, Deserialize)]
pub(crate) struct ConfigParams {
    warehouse: Option<String>,
}

/// The catalog's configuration for a client.
pub(crate) async fn get_config(
    AxState(state): State,
    ApiQuery(params): ApiQuery<ConfigParams>,
) -> Result<Json<Value>> {
    if let Some(asked) = params.warehouse.as_deref().filter(|w| !w.is_empty()) {
        let root = state.warehouse.root();
        if asked != state.config.name && asked.trim_end_matches('/') != root {
            return Err(ApiError::not_found(format!(
                "Warehouse {asked:?} is not served here; this catalog serves warehouse {:?} at {root}",
                state.config.name
            )));
        }
    }
    let mut defaults: HashMap<String, String> = HashMap::new();
    if state.warehouse.root().starts_with("s3://") {
        defaults.extend(state.config.s3.file_io_props(false));
    }
    Ok(Json(json!({
        "defaults": defaults,
        "overrides": {},
        "endpoints": ENDPOINTS,
    })))
}

/// Liveness and readiness: answers 200 once the database responds.
pub(crate) async fn health(AxState(state): State) -> Result<Json<Value>> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable("reach the catalog database", &e))?;
    Ok(Json(json!({ "status": "ok" })))
}
