//! The HTTP surface: the router, shared state, extractors that turn every
//! malformed request into an `ErrorModel`, and the middleware stack
//! (request ids, tracing, auth, panic guard).
//!
//! Handlers live one module per REST resource and only extract, call the
//! store or the commit logic, and shape JSON.

mod auth;
mod config;
mod namespaces;
mod pagination;
pub(crate) mod tables;
mod transactions;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::CatalogConfig;
use crate::error::ApiError;
use crate::store::{Store, StoreError};
use crate::warehouse::Warehouse;

pub(crate) use auth::TokenIssuer;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) warehouse: Warehouse,
    pub(crate) config: CatalogConfig,
    pub(crate) tokens: TokenIssuer,
}

pub(crate) type State = axum::extract::State<Arc<AppState>>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the full router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/config", get(config::get_config))
        .route("/v1/oauth/tokens", post(auth::issue_token))
        .route(
            "/v1/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            "/v1/namespaces/{namespace}",
            get(namespaces::load)
                .head(namespaces::exists)
                .delete(namespaces::drop),
        )
        .route(
            "/v1/namespaces/{namespace}/properties",
            post(namespaces::update_properties),
        )
        .route(
            "/v1/namespaces/{namespace}/tables",
            get(tables::list).post(tables::create),
        )
        .route(
            "/v1/namespaces/{namespace}/register",
            post(tables::register),
        )
        .route(
            "/v1/namespaces/{namespace}/tables/{table}",
            get(tables::load)
                .head(tables::exists)
                .post(tables::commit)
                .delete(tables::drop),
        )
        .route(
            "/v1/namespaces/{namespace}/tables/{table}/metrics",
            post(tables::report_metrics),
        )
        .route("/v1/tables/rename", post(tables::rename))
        .route("/v1/transactions/commit", post(transactions::commit))
        .route("/healthz", get(config::health))
        .fallback(|| async { ApiError::not_found("No such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn(close_after_rejected_body))
        .with_state(state);

    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The path only: query strings and headers (which may
                    // carry credentials) are never logged.
                    tracing::info_span!(
                        "request",
                        request_id = %id,
                        method = %req.method(),
                        path = %req.uri().path(),
                    )
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::internal("handle the request", &"handler panicked").into_response()
            })),
    )
}

/// Asks the client to reconnect after an error answered to a request that
/// carried a body. The handler may have rejected the request (auth, path,
/// size) before reading the body; hyper then drops the connection, and a
/// client that pooled it would fail on its next request. `Connection: close`
/// says so up front.
async fn close_after_rejected_body(req: Request, next: axum::middleware::Next) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "0");
    let mut response = next.run(req).await;
    let failed = response.status().is_client_error() || response.status().is_server_error();
    if has_body && failed {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A JSON body, size-limited, whose every failure is an `ErrorModel`.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T>
where
    Arc<AppState>: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let app: Arc<AppState> = axum::extract::FromRef::from_ref(state);
        let limit = app.config.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::payload_too_large(limit))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "Request body is empty; expected JSON",
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
        // serde would read a JSON array into a struct field by field; every
        // request of the REST spec is an object.
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "Invalid request body: expected a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
    }
}

/// Query parameters whose parse failures are `ErrorModel`s.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| {
                ApiError::bad_request(format!("Invalid query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters whose parse failures are `ErrorModel`s.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request(format!("Invalid path: {}", e.body_text())))
    }
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Maps store failures for the resource named `what`.
pub(crate) fn store_error(err: StoreError, namespace: &str, table: &str) -> ApiError {
    match err {
        StoreError::NamespaceNotFound => ApiError::no_such_namespace(namespace),
        StoreError::TableNotFound => ApiError::no_such_table(table),
        StoreError::AlreadyExists if table.is_empty() => ApiError::namespace_exists(namespace),
        StoreError::AlreadyExists => ApiError::table_exists(table),
        StoreError::NotEmpty(what) => ApiError::namespace_not_empty(namespace, what),
        StoreError::Conflict => ApiError::commit_failed(format!(
            "Table {table} was changed by a concurrent commit; reload it and retry"
        )),
        StoreError::Database(e) => ApiError::unavailable("access the catalog database", &e),
    }
}
