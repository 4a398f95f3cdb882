//! What can go wrong with a reservation, and how each answer looks at the edge.

use axum::response::{IntoResponse, Response};

use super::reservation::InvalidReservationId;
use super::status::TransitionRefused;
use crate::error::{ApiError, ErrorCode, ErrorDetail, ErrorLog};
use crate::genesys::GenesysError;
use crate::store::StoreError;

/// An error of the callbacks capability. Every variant is a 4xx whose message says what was
/// wrong; none carries a secret or the customer's number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbacksError {
    /// The body is not JSON (400 `bad.request`).
    #[error("the request body is not valid JSON")]
    MalformedJson,
    /// The body repeats a key in one object (400 `bad.request`); the text says which.
    #[error("the request body is not accepted: {0}")]
    DuplicateKey(String),
    /// The request breaks rules (400 `invalid.input`); one detail per problem.
    #[error("the reservation request is invalid ({} problems)", .0.len())]
    Invalid(Vec<ErrorDetail>),
    /// No reservation has this id, or the id cannot be one (404 `not.found`).
    #[error("no reservation with this id")]
    NotFound,
    /// The reservation cannot make this change, e.g. canceling one that is already
    /// `completed` (409 `conflict`).
    #[error(transparent)]
    Refused(#[from] TransitionRefused),
    /// No slot of the request has a free place (409 `capacity.exceeded`).
    #[error("none of the requested slots has a free place")]
    CapacityExceeded,
}

impl CallbacksError {
    /// [`CallbacksError::Invalid`] with these details.
    pub fn invalid(details: Vec<ErrorDetail>) -> Self {
        Self::Invalid(details)
    }
}

impl From<InvalidReservationId> for CallbacksError {
    fn from(_: InvalidReservationId) -> Self {
        Self::NotFound
    }
}

impl From<CallbacksError> for ApiError {
    fn from(err: CallbacksError) -> Self {
        match err {
            CallbacksError::MalformedJson | CallbacksError::DuplicateKey(_) => {
                ApiError::bad_request(capitalised(&err))
            }
            CallbacksError::Invalid(details) => {
                ApiError::invalid_input("The reservation request is invalid.", details)
            }
            CallbacksError::NotFound => ApiError::not_found("No reservation with this id."),
            CallbacksError::Refused(refused) => ApiError::conflict(format!(
                "The reservation is {}; it cannot become {}.",
                refused.from, refused.to
            )),
            CallbacksError::CapacityExceeded => ApiError::new(
                ErrorCode::CapacityExceeded,
                "None of the requested slots has a free place.",
            ),
        }
    }
}

impl IntoResponse for CallbacksError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// How an operation on reservations (reserve, cancel, read, apply a Genesys event) can fail:
/// the request's fault (4xx), Genesys (502/503/504 as every upstream failure), or the gateway
/// (500, cause logged once at the edge).
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// The request cannot be served as asked (4xx).
    #[error(transparent)]
    Request(#[from] CallbacksError),
    /// Genesys refused the call or stayed unavailable.
    #[error(transparent)]
    Genesys(#[from] GenesysError),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// A stored reservation cannot be read back (its JSON was altered).
    #[error("a stored reservation is unreadable: {0}")]
    Corrupt(String),
    /// The built-in `genesys` upstream is missing (a broken configuration).
    #[error("the genesys upstream is not configured")]
    NoGenesys,
    /// An answer decided before the capability was asked (a bad query parameter, a body the
    /// gateway's JSON rules refuse).
    #[error("{0}")]
    Answer(Box<ApiError>),
}

impl From<ApiError> for ReservationError {
    fn from(err: ApiError) -> Self {
        Self::Answer(Box::new(err))
    }
}

impl From<ReservationError> for ApiError {
    fn from(err: ReservationError) -> Self {
        match err {
            ReservationError::Request(err) => err.into(),
            ReservationError::Genesys(err) => err.into(),
            ReservationError::Answer(err) => *err,
            ReservationError::Store(StoreError::InvalidCursor) => {
                ApiError::bad_request("The cursor is not valid.")
            }
            other => ApiError::internal().with_log(
                ErrorLog::new(tracing::Level::ERROR, "callback reservation failed").error(&other),
            ),
        }
    }
}

impl IntoResponse for ReservationError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The error's text as a sentence.
fn capitalised(err: &CallbacksError) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .collect();
    out.push_str(chars.as_str());
    out.push('.');
    out
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::callbacks::ReservationStatus;

    #[test]
    fn each_error_has_its_answer() {
        let cases = [
            (
                CallbacksError::MalformedJson,
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                CallbacksError::DuplicateKey("the key `a` appears twice in one object".into()),
                StatusCode::BAD_REQUEST,
                "bad.request",
            ),
            (
                CallbacksError::invalid(vec![ErrorDetail::new("/queueId", "required", "x")]),
                StatusCode::BAD_REQUEST,
                "invalid.input",
            ),
            (CallbacksError::NotFound, StatusCode::NOT_FOUND, "not.found"),
            (
                CallbacksError::from(TransitionRefused {
                    from: ReservationStatus::Completed,
                    to: ReservationStatus::Canceled,
                }),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                CallbacksError::CapacityExceeded,
                StatusCode::CONFLICT,
                "capacity.exceeded",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err.clone());
            assert_eq!(api.status(), status, "{err:?}");
            assert_eq!(api.code().as_str(), code, "{err:?}");
        }
    }

    #[test]
    fn messages() {
        let api = ApiError::from(CallbacksError::DuplicateKey(
            "the key `a` appears twice in one object".into(),
        ));
        assert_eq!(
            api.message(),
            "The request body is not accepted: the key `a` appears twice in one object."
        );
        let api = ApiError::from(CallbacksError::from(TransitionRefused {
            from: ReservationStatus::Completed,
            to: ReservationStatus::Canceled,
        }));
        assert_eq!(
            api.message(),
            "The reservation is completed; it cannot become canceled."
        );
        let api = ApiError::from(CallbacksError::invalid(vec![ErrorDetail::new(
            "/data/k",
            "type",
            "must be a string",
        )]));
        assert_eq!(api.details()[0].field_name, "/data/k");
        assert_eq!(
            ApiError::from(CallbacksError::from(InvalidReservationId)).code(),
            ErrorCode::NotFound
        );
    }
}
