//! What can be wrong with one ingest request body, and how each answers on the HTTP surface.
//!
//! | variant | status | code |
//! |---|---|---|
//! | [`IngestError::Malformed`] | 400 | `bad.request` |
//! | [`IngestError::DuplicateKey`] | 400 | `bad.request` |
//! | [`IngestError::KeyWithBatch`] | 400 | `bad.request` |
//! | [`IngestError::InvalidKey`] | 400 | `bad.request` |
//! | [`IngestError::EmptyBatch`] | 400 | `invalid.input` |
//! | [`IngestError::Invalid`] | 400 | `invalid.input` (one `details` entry per problem) |
//! | [`IngestError::BatchTooLarge`] | 413 | `payload.too.large` |
//!
//! Messages and details name JSON pointers and rules, never a value of the request.
//!
//! Past the body, accepting or reading events can fail in the ways of [`AcceptError`]:
//!
//! | variant | status | code |
//! |---|---|---|
//! | [`AcceptError::Unauthorized`] | 401 | `authentication.required` / `invalid.token` |
//! | [`AcceptError::Body`] | as [`IngestError`] | |
//! | [`AcceptError::Conflict`] | 409 | `idempotency.conflict` |
//! | [`AcceptError::Overloaded`] | 503 | `overloaded` + `Retry-After` |
//! | [`AcceptError::NotFound`] | 404 | `not.found` |
//! | [`AcceptError::Unavailable`] | 503 | `overloaded` + `Retry-After` (the store stopped taking writes: shutting down) |
//! | [`AcceptError::Store`] | 500 | `internal.server.error` (the cause is logged once, at the edge) |

use crate::auth::jwt::JwtRejection;
use crate::error::{ApiError, ErrorCode, ErrorDetail, ErrorLog};
use crate::store::{CommitError, StoreError};

/// Seconds a client is asked to wait when the delivery queue is over `[ingest] max_queue_depth`
/// or the gateway is shutting down.
pub const RETRY_AFTER_S: u64 = 5;

/// At most this many `details` are listed for one request; the message still counts every
/// invalid event.
pub const MAX_DETAILS: usize = 1000;

/// One ingest request body (or its `Idempotency-Key` header) that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body is not JSON (syntax, invalid UTF-8, a string that is not valid Unicode).
    #[error("the request body is not valid JSON")]
    Malformed,
    /// An object somewhere in the body has the same key twice (the gateway never picks one).
    #[error("the JSON object at `{pointer}` has a duplicate key")]
    DuplicateKey {
        /// JSON pointer of the repeated member (`/2/data/sku`).
        pointer: String,
    },
    /// A batch with more events than `[ingest] max_batch`.
    #[error("a batch of {count} events is larger than the {max} accepted")]
    BatchTooLarge {
        /// Events in the batch.
        count: usize,
        /// `[ingest] max_batch`.
        max: usize,
    },
    /// `[]`.
    #[error("the batch is empty")]
    EmptyBatch,
    /// An `Idempotency-Key` header on a batch (each event of a batch gets its own key from its
    /// `transaction_id`).
    #[error("the Idempotency-Key header is only accepted with a single event")]
    KeyWithBatch,
    /// An `Idempotency-Key` header that breaks the rules of
    /// [`IdempotencyKey::parse`](super::IdempotencyKey::parse).
    #[error("invalid Idempotency-Key header: {0}")]
    InvalidKey(&'static str),
    /// Events that fail the event schema or cannot be mapped. All-or-nothing: nothing of the
    /// request is accepted.
    #[error("{invalid} of {total} events are invalid")]
    Invalid {
        /// Events in the request (1 for a single event).
        total: usize,
        /// Events with at least one problem.
        invalid: usize,
        /// Every problem (at most [`MAX_DETAILS`]), pointers into the request body.
        details: Vec<ErrorDetail>,
    },
}

impl IngestError {
    /// A short fixed label for `gateway_ingest_rejections_total{reason}`: `malformed`,
    /// `duplicate_key`, `batch_too_large`, `empty_batch`, `idempotency_key`, `invalid_event`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::EmptyBatch => "empty_batch",
            Self::KeyWithBatch | Self::InvalidKey(_) => "idempotency_key",
            Self::Invalid { .. } => "invalid_event",
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Malformed => ApiError::bad_request("The request body is not valid JSON."),
            IngestError::DuplicateKey { pointer } => ApiError::bad_request(format!(
                "The JSON object at `{pointer}` repeats a key; every key may appear once."
            ))
            .with_details(vec![ErrorDetail::new(
                pointer,
                "duplicateKey",
                "This key appears more than once in its object.",
            )]),
            IngestError::BatchTooLarge { count, max } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("The batch holds {count} events; at most {max} are accepted per request."),
            ),
            IngestError::EmptyBatch => ApiError::invalid_input(
                "The batch is empty; send at least one event.",
                vec![ErrorDetail::new(
                    "",
                    "minItems",
                    "A batch must hold at least one event.",
                )],
            ),
            IngestError::KeyWithBatch => ApiError::bad_request(
                "The Idempotency-Key header is only accepted with a single event; the events of \
                 a batch each get their key from their transaction_id.",
            ),
            IngestError::InvalidKey(why) => {
                ApiError::bad_request(format!("Invalid Idempotency-Key header: {why}."))
            }
            IngestError::Invalid {
                total,
                invalid,
                details,
            } => {
                let message = if total == 1 {
                    "The event is invalid.".to_owned()
                } else {
                    format!("{invalid} of {total} events are invalid; none was accepted.")
                };
                ApiError::invalid_input(message, details)
            }
        }
    }
}

/// Why an ingest request (past its body's shape) or an event read was not answered with success.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The bearer token was refused.
    #[error("the token was refused: {0}")]
    Unauthorized(#[from] JwtRejection),
    /// The body (or the `Idempotency-Key` header) cannot be accepted.
    #[error(transparent)]
    Body(#[from] IngestError),
    /// The event at `index` reuses an idempotency key with other content; nothing of the
    /// request was accepted.
    #[error("event {index} reuses an idempotency key with different content")]
    Conflict {
        /// Position of the conflicting event in the request (0 for a single event).
        index: usize,
        /// Whether the request was a batch (the answer names the index then).
        batch: bool,
    },
    /// More deliveries are pending than `[ingest] max_queue_depth`.
    #[error("the delivery queue is over its limit")]
    Overloaded,
    /// No such event from this issuer.
    #[error("no such event")]
    NotFound,
    /// The store stopped taking writes (the gateway is shutting down).
    #[error("the store is not taking writes")]
    Unavailable,
    /// The store failed.
    #[error("store failure: {0}")]
    Store(String),
}

impl AcceptError {
    /// A short fixed label for `gateway_ingest_rejections_total{reason}`, `None` for an
    /// answer that is not a rejection of the request (a read that found nothing, a failure of
    /// the gateway's own).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized(rejection) => Some(rejection.label()),
            Self::Body(err) => Some(err.reason()),
            Self::Conflict { .. } => Some("idempotency_conflict"),
            Self::Overloaded => Some("overloaded"),
            Self::NotFound | Self::Unavailable | Self::Store(_) => None,
        }
    }
}

impl From<StoreError> for AcceptError {
    fn from(err: StoreError) -> Self {
        Self::Store(err.to_string())
    }
}

impl From<CommitError> for AcceptError {
    fn from(err: CommitError) -> Self {
        match err {
            CommitError::Stopped | CommitError::Full => Self::Unavailable,
            other => Self::Store(other.to_string()),
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(err: AcceptError) -> Self {
        match err {
            AcceptError::Unauthorized(rejection) => rejection.into(),
            AcceptError::Body(err) => err.into(),
            AcceptError::Conflict { index, batch } => {
                let (message, pointer) = if batch {
                    (
                        format!(
                            "Event {index} reuses an idempotency key with different content; \
                             none of the batch was accepted."
                        ),
                        format!("/{index}"),
                    )
                } else {
                    (
                        "The idempotency key was already used for an event with different \
                         content."
                            .to_owned(),
                        String::new(),
                    )
                };
                ApiError::new(ErrorCode::IdempotencyConflict, message).with_details(vec![
                    ErrorDetail::new(
                        pointer,
                        "idempotencyConflict",
                        "An event with this idempotency key and different content was accepted \
                         before.",
                    ),
                ])
            }
            AcceptError::Overloaded => ApiError::overloaded(RETRY_AFTER_S),
            AcceptError::Unavailable => ApiError::overloaded(RETRY_AFTER_S),
            AcceptError::NotFound => ApiError::not_found("No such event."),
            AcceptError::Store(cause) => ApiError::internal()
                .with_log(ErrorLog::new(tracing::Level::ERROR, "event store failed").error(cause)),
        }
    }
}

impl axum::response::IntoResponse for AcceptError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn each_error_has_its_status_and_code() {
        let cases = [
            (
                IngestError::Malformed,
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                IngestError::DuplicateKey {
                    pointer: "/0/a".into(),
                },
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                IngestError::BatchTooLarge { count: 3, max: 2 },
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload.too.large",
            ),
            (
                IngestError::EmptyBatch,
                StatusCode::BAD_REQUEST,
                "invalid.input",
            ),
            (
                IngestError::KeyWithBatch,
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                IngestError::InvalidKey("too long"),
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                IngestError::Invalid {
                    total: 2,
                    invalid: 1,
                    details: vec![ErrorDetail::new("/1/timestamp", "format", "bad")],
                },
                StatusCode::BAD_REQUEST,
                "invalid.input",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status(), status);
            assert_eq!(api.code().as_str(), code);
        }
    }

    #[test]
    fn details_and_pointers_reach_the_body() {
        let api = ApiError::from(IngestError::DuplicateKey {
            pointer: "/2/data/sku".into(),
        });
        assert_eq!(api.details()[0].field_name, "/2/data/sku");
        assert!(api.message().contains("/2/data/sku"));
        let api = ApiError::from(IngestError::Invalid {
            total: 3,
            invalid: 2,
            details: vec![ErrorDetail::new("/2/timestamp", "format", "bad")],
        });
        assert_eq!(
            api.message(),
            "2 of 3 events are invalid; none was accepted."
        );
        assert_eq!(api.details()[0].field_name, "/2/timestamp");
    }
}
