//! How the targets and dead-letter surface fails, and what each failure answers.

use crate::error::{ApiError, ErrorCode, ErrorDetail, ErrorLog};
use crate::store::StoreError;

/// Failures of target and delivery operations.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The body breaks rules; one detail per violated field (400 `invalid.input`).
    #[error("the target is not valid")]
    Invalid(Vec<ErrorDetail>),
    /// Another target has the name (409 `conflict`).
    #[error("a target named `{0}` exists")]
    NameTaken(String),
    /// No such target or delivery (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The target is declared in the configuration file (409 `conflict`).
    #[error("the target is declared in the configuration file")]
    Declarative,
    /// The operation does not apply in the current state (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A request parameter is wrong (400 `bad.request`).
    #[error("{0}")]
    BadRequest(String),
    /// The store failed (500, logged once at the edge).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TargetError> for ApiError {
    fn from(err: TargetError) -> Self {
        match err {
            TargetError::Invalid(details) => ApiError::invalid_input(
                "The target is not valid; see details for every violated field.",
                details,
            ),
            TargetError::NameTaken(name) => {
                ApiError::conflict(format!("A target named `{name}` exists already."))
            }
            TargetError::NotFound(what) => ApiError::not_found(format!("No such {what}.")),
            TargetError::Declarative => ApiError::conflict(
                "This target is declared in the configuration file ([[targets]]): change it there \
                 and reload.",
            ),
            TargetError::Conflict(message) => ApiError::conflict(message),
            TargetError::BadRequest(message) => ApiError::bad_request(message),
            TargetError::Store(StoreError::InvalidCursor) => {
                ApiError::bad_request("`cursor` is not valid.")
            }
            TargetError::Store(err) => ApiError::new(
                ErrorCode::InternalServerError,
                "The request could not be completed.",
            )
            .with_log(ErrorLog::new(tracing::Level::ERROR, "delivery store failure").error(&err)),
        }
    }
}
