//! The catalog's one error type, [`ApiError`], and its wire form, the Iceberg
//! REST `ErrorModel` (`{"error": {"message", "type", "code"}}`).
//!
//! Every failure a handler can meet ends here, with the HTTP status and the
//! exception `type` that pyiceberg, Spark and iceberg-rust map to their own
//! exceptions (`NoSuchTableException` → `NoSuchTableError`, ...). Client
//! mistakes are 4xx with a message the user can act on; server-side failures
//! are logged with their full cause and answered with a short 500/503 that
//! reveals nothing about the backend.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Result alias used throughout the catalog.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An error answered to a REST client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// 401: no or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NotAuthorizedException", message)
    }

    /// 403: the request is understood but not allowed (e.g. a location
    /// outside the warehouse).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "ForbiddenException", message)
    }

    /// 404 for a namespace.
    pub fn no_such_namespace(namespace: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("Namespace does not exist: {namespace}"),
        )
    }

    /// 404 for a table.
    pub fn no_such_table(table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("Table does not exist: {table}"),
        )
    }

    /// 404 for a route that this server does not serve.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }

    /// 409: a namespace of that name exists.
    pub fn namespace_exists(namespace: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            format!("Namespace already exists: {namespace}"),
        )
    }

    /// 409: a table of that name exists.
    pub fn table_exists(table: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            format!("Table already exists: {table}"),
        )
    }

    /// 409: the namespace still holds tables or child namespaces.
    pub fn namespace_not_empty(namespace: &str, what: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "NamespaceNotEmptyException",
            format!("Namespace {namespace} is not empty: it still contains {what}"),
        )
    }

    /// 409: a requirement failed or another commit won the race; the client
    /// should reload the table and retry.
    pub fn commit_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CommitFailedException", message)
    }

    /// 413: the request body is larger than the server accepts.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadRequestException",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 405: the route exists but not for this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequestException",
            "Method not allowed on this resource",
        )
    }

    /// 500: a failure inside the server. The cause is logged here, with the
    /// request's span, and never sent to the client.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerErrorException",
            format!("Internal server error while trying to {context}; see the catalog's log"),
        )
    }

    /// 503: the metadata store or object store is unreachable; retrying later
    /// may succeed.
    pub fn unavailable(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("Storage unavailable while trying to {context}; retry later"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The exception type of the ErrorModel.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The message for the user.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.status.as_u16(),
            }
        });
        (self.status, Json(body)).into_response()
    }
}

/// Maps an error of the `iceberg` crate met while validating or applying a
/// client's request. Requirement failures are commit conflicts; everything
/// else the crate rejects is invalid input.
pub fn from_iceberg(err: &iceberg::Error) -> ApiError {
    use iceberg::ErrorKind;
    match err.kind() {
        ErrorKind::CatalogCommitConflicts => ApiError::commit_failed(err.to_string()),
        ErrorKind::TableNotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            err.to_string(),
        ),
        _ => ApiError::bad_request(err.to_string()),
    }
}

impl ApiError {
    /// 422: well-formed but contradictory (e.g. a property both set and removed).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntityException",
            message,
        )
    }
}
