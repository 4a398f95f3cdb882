//! Genesys Cloud's error body, and how a Genesys call fails.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::error::{ApiError, ErrorCode, ErrorLog};
use crate::upstream::UpstreamError;

/// Genesys' `ErrorBody`: `{message, code, status, messageParams, contextId, details[], errors[]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorBody {
    /// Human-readable message (may carry request data: never echoed to the gateway's clients).
    pub message: Option<String>,
    /// Machine-readable code (`not.found`, `bad.request`, `too.many.requests`...).
    pub code: Option<String>,
    /// HTTP status.
    pub status: Option<u16>,
    /// Parameters of `message`.
    pub message_params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Genesys' correlation id of the failed request.
    pub context_id: Option<String>,
    /// Field-level details.
    pub details: Vec<ErrorDetail>,
    /// Nested errors.
    pub errors: Vec<ErrorBody>,
    /// Entity id the error is about.
    pub entity_id: Option<String>,
    /// Entity name the error is about.
    pub entity_name: Option<String>,
}

/// Genesys' `Detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorDetail {
    /// Machine-readable code (`ACTION.REMOTE_ENDPOINT`...).
    pub error_code: Option<String>,
    /// The field the detail is about.
    pub field_name: Option<String>,
    /// Entity id.
    pub entity_id: Option<String>,
    /// Entity name.
    pub entity_name: Option<String>,
}

/// Why a Genesys call failed.
#[derive(Debug, thiserror::Error)]
pub enum GenesysError {
    /// Genesys answered an error status with its error body.
    #[error("Genesys answered {status} ({})", .body.code.as_deref().unwrap_or("no code"))]
    Api {
        /// The status.
        status: StatusCode,
        /// The parsed body (empty when it was not Genesys' shape).
        body: Box<ErrorBody>,
    },
    /// The call did not get an answer that could be used: unavailable, breaker open, deadline,
    /// token failure.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// A 2xx answer that is not the expected shape.
    #[error("unexpected answer from Genesys: {0}")]
    Decode(String),
}

impl GenesysError {
    /// The status Genesys answered, for [`GenesysError::Api`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Genesys' error `code`, for [`GenesysError::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => body.code.as_deref(),
            _ => None,
        }
    }

    /// Whether Genesys answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

impl From<UpstreamError> for GenesysError {
    fn from(err: UpstreamError) -> Self {
        match err {
            UpstreamError::Status { status, body, .. } => {
                let parsed = serde_json::from_slice::<ErrorBody>(&body).unwrap_or_default();
                Self::Api {
                    status,
                    body: Box::new(parsed),
                }
            }
            other => Self::Upstream(other),
        }
    }
}

impl From<GenesysError> for ApiError {
    fn from(err: GenesysError) -> Self {
        match err {
            GenesysError::Api { status, body } => {
                // A 4xx is the request's business (debug); Genesys failing is worth a warning.
                let log = if status.is_client_error() {
                    ErrorLog::new(tracing::Level::DEBUG, "Genesys refused the call")
                } else {
                    ErrorLog::new(tracing::Level::WARN, "Genesys failed the call")
                };
                let mut log = log.error(format!(
                    "Genesys answered {} (code {}, contextId {})",
                    status.as_u16(),
                    body.code.as_deref().unwrap_or("-"),
                    body.context_id.as_deref().unwrap_or("-")
                ));
                log.upstream = Some(Arc::from(crate::genesys::UPSTREAM));
                log.upstream_status = Some(status.as_u16());
                ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("Genesys answered {}.", status.as_u16()),
                )
                .with_log(log)
            }
            GenesysError::Upstream(err) => {
                let mut api: ApiError = err.into();
                if let Some(log) = api.log_mut() {
                    log.upstream = Some(Arc::from(crate::genesys::UPSTREAM));
                }
                api
            }
            GenesysError::Decode(reason) => ApiError::new(
                ErrorCode::UpstreamError,
                "Genesys gave an unexpected answer.",
            )
            .with_log(
                ErrorLog::new(tracing::Level::WARN, "unexpected answer from Genesys").error(reason),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn status_errors_parse_the_genesys_body() {
        let body = Bytes::from_static(
            br#"{"message":"Action 1 not found","code":"not.found","status":404,
                "messageParams":{},"contextId":"c-1","details":[{"errorCode":"ACTION.REMOTE_ENDPOINT","fieldName":"x"}],"errors":[]}"#,
        );
        let err: GenesysError = UpstreamError::Status {
            status: StatusCode::NOT_FOUND,
            retry_after: None,
            body,
        }
        .into();
        assert!(err.is_not_found());
        assert_eq!(err.code(), Some("not.found"));
        let GenesysError::Api { body, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(body.context_id.as_deref(), Some("c-1"));
        assert_eq!(
            body.details[0].error_code.as_deref(),
            Some("ACTION.REMOTE_ENDPOINT")
        );
        let api: ApiError = err.into();
        assert_eq!(api.status(), StatusCode::BAD_GATEWAY);
        assert!(!api.message().contains("Action 1"));
    }

    #[test]
    fn genesys_client_errors_log_at_debug_and_failures_at_warn() {
        let mut levels = Vec::new();
        let logged = crate::telemetry::levels_logged(|| {
            for status in [StatusCode::NOT_FOUND, StatusCode::SERVICE_UNAVAILABLE] {
                let api: ApiError = GenesysError::Api {
                    status,
                    body: Box::default(),
                }
                .into();
                levels.push(api.log().map(|log| log.level));
            }
        });
        assert!(logged.is_empty(), "converting an error logs nothing");
        assert_eq!(
            levels,
            [Some(tracing::Level::DEBUG), Some(tracing::Level::WARN)]
        );
    }

    #[test]
    fn non_genesys_bodies_give_an_empty_error_body() {
        let err: GenesysError = UpstreamError::Status {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
            body: Bytes::from_static(b"<html>bad gateway</html>"),
        }
        .into();
        assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY));
        assert_eq!(err.code(), None);
    }
}
