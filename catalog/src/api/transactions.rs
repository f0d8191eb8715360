//! `POST /v1/transactions/commit`: several tables' commits, all or nothing.

use std::collections::HashSet;

use axum::extract::State as AxState;
use axum::response::Response;
use serde::Deserialize;

use super::{ApiJson, State, no_content};
use crate::commit::{self, CommitTableRequest, PreparedCommit};
use crate::error::{ApiError, Result};
use crate::ident::TableName;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct CommitTransactionRequest {
    table_changes: Vec<CommitTableRequest>,
}

/// Prepares every table's commit, then swaps all pointers in one database
/// transaction. If any requirement fails or any pointer moved meanwhile,
/// nothing is published and the written files are discarded.
pub(crate) async fn commit(
    AxState(state): State,
    ApiJson(req): ApiJson<CommitTransactionRequest>,
) -> Result<Response> {
    if req.table_changes.is_empty() {
        return Err(ApiError::bad_request("table-changes must not be empty"));
    }
    let mut seen = HashSet::new();
    let mut prepared: Vec<PreparedCommit> = Vec::with_capacity(req.table_changes.len());
    for change in req.table_changes {
        let outcome = prepare_one(&state, &mut seen, change).await;
        match outcome {
            Ok(p) => prepared.push(p),
            Err(e) => {
                commit::discard(&state, &prepared).await;
                return Err(e);
            }
        }
    }
    commit::publish(&state, &prepared).await?;
    let names: Vec<String> = prepared.iter().map(|p| p.table.to_string()).collect();
    tracing::info!(tables = ?names, "committed transaction");
    Ok(no_content())
}

async fn prepare_one(
    state: &super::AppState,
    seen: &mut HashSet<TableName>,
    change: CommitTableRequest,
) -> Result<PreparedCommit> {
    let ident = change.identifier.as_ref().ok_or_else(|| {
        ApiError::bad_request("Every table change of a transaction needs an identifier")
    })?;
    let table = TableName::from_wire(ident)?;
    if !seen.insert(table.clone()) {
        return Err(ApiError::bad_request(format!(
            "Table {table} appears twice in one transaction; merge its changes"
        )));
    }
    let prepared = commit::prepare(state, &table, change).await?;
    if prepared.creates {
        commit::discard(state, std::slice::from_ref(&prepared)).await;
        return Err(ApiError::bad_request(format!(
            "Table {table} does not exist: creating tables inside a multi-table transaction is not supported"
        )));
    }
    Ok(prepared)
}
