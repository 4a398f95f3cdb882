//! Genesys-shaped errors of the simulator: the `ErrorBody` of the Platform API
//! (`{message, code, status, messageParams, contextId, details, errors}`) and the OAuth error of
//! the login service (`{error, description, error_description}`).
//!
//! The simulator stands alone: it does not use the gateway's `crate::error`, because it plays
//! Genesys Cloud, whose codes (`bad.credentials`, `credentials.expired`, ...) are not the
//! gateway's.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

tokio::task_local! {
    /// The correlation id of the request being served (`inin-correlation-id`), used as the
    /// `contextId` of error bodies.
    pub(crate) static CONTEXT_ID: String;
}

/// The correlation id of the current request, or a fresh one outside a request.
pub(crate) fn context_id() -> String {
    CONTEXT_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// A Platform API error, rendered as Genesys' `ErrorBody` (boxed: errors travel in `Result`s
/// of every handler).
#[derive(Debug, Clone)]
pub(crate) struct GenesysError(Box<ErrorFields>);

/// The fields of a [`GenesysError`].
#[derive(Debug, Clone)]
pub(crate) struct ErrorFields {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub message_params: Map<String, Value>,
    pub details: Vec<Value>,
    pub errors: Vec<Value>,
    pub retry_after: Option<u64>,
}

impl GenesysError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorFields {
            status,
            code: code.to_owned(),
            message: message.into(),
            message_params: Map::new(),
            details: Vec::new(),
            errors: Vec::new(),
            retry_after: None,
        }))
    }

    /// 400 `bad.request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad.request", message)
    }

    /// 400 `bad.request` for a body that is not the JSON expected.
    pub fn malformed(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(format!(
            "The request could not be understood by the server due to malformed syntax. {detail}"
        ))
    }

    /// 404 `not.found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not.found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// Adds one `details` entry with this `errorCode`.
    pub fn with_detail_code(mut self, error_code: &str) -> Self {
        self.details.push(json!({ "errorCode": error_code }));
        self
    }

    /// The default error a fault injects for a status without a body of its own.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status.as_u16() {
            400 => (
                "bad.request",
                "The request could not be understood by the server due to malformed syntax.",
            ),
            401 => (
                "authentication.required",
                "No authentication bearer token specified in authorization header.",
            ),
            403 => (
                "missing.permissions",
                "You are not authorized to perform the requested action.",
            ),
            404 => ("not.found", "The requested resource was not found."),
            408 => (
                "request.timeout",
                "The client did not produce a request within the server timeout limit.",
            ),
            409 => (
                "conflict",
                "The request conflicts with the current state of the target resource.",
            ),
            429 => (
                "too.many.requests",
                "Rate limit exceeded the maximum. Retry the request later.",
            ),
            500 => (
                "internal.server.error",
                "The server encountered an unexpected condition which prevented it from fulfilling the request.",
            ),
            502 => (
                "bad.gateway",
                "The server, while acting as a gateway or proxy, received an invalid response from an upstream server.",
            ),
            503 => (
                "service.unavailable",
                "Service Unavailable - The server is currently unavailable (because it is overloaded or down for maintenance).",
            ),
            504 => (
                "gateway.timeout",
                "The server, while acting as a gateway or proxy, did not receive a timely response from an upstream server.",
            ),
            _ => ("error", "The request failed."),
        };
        Self::new(status, code, message)
    }

    /// The `ErrorBody` JSON.
    pub fn body(&self) -> Value {
        json!({
            "message": self.message,
            "code": self.code,
            "status": self.status.as_u16(),
            "messageParams": self.message_params,
            "contextId": context_id(),
            "details": self.details,
            "errors": self.errors,
        })
    }
}

impl std::ops::Deref for GenesysError {
    type Target = ErrorFields;

    fn deref(&self) -> &ErrorFields {
        &self.0
    }
}

impl std::ops::DerefMut for GenesysError {
    fn deref_mut(&mut self) -> &mut ErrorFields {
        &mut self.0
    }
}

impl IntoResponse for GenesysError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An OAuth error of the login service (`POST /oauth/token`).
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "description": self.description,
            "error_description": self.description,
        });
        (self.status, axum::Json(body)).into_response()
    }
}
