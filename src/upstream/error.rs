//! How an upstream call fails, and how that failure is answered on every surface (SPEC §3).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::guard::RefusedAddress;
use crate::error::{ApiError, ErrorCode};

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered a status that is not retried (another 4xx, 500, 501, a 401 after
    /// the token was refreshed, or a 502/504 to a non-idempotent POST).
    #[error("upstream answered {status}")]
    Status {
        /// The status it answered.
        status: StatusCode,
        /// Its `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// Its body, for callers that read the upstream's own error shape (never shown to
        /// clients of the gateway).
        body: Bytes,
    },
    /// The upstream stayed unreachable or kept answering 429/502/503/504 until attempts ran out,
    /// or asked to wait longer than `max_retry_after_s`.
    #[error("upstream unavailable ({last})")]
    Unavailable {
        /// The wait the upstream asked for, when known.
        retry_after: Option<Duration>,
        /// The last failure seen.
        last: LastFailure,
    },
    /// The upstream's circuit breaker is open.
    #[error("circuit breaker open (retry in {retry_after:?})")]
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The caller's deadline passed.
    #[error("deadline exceeded")]
    Timeout,
    /// The upstream's OAuth token endpoint failed.
    #[error("token endpoint of upstream `{upstream}` failed: {failure}")]
    TokenFetch {
        /// The upstream whose token could not be had.
        upstream: String,
        /// What went wrong (never the secret).
        failure: TokenFetchFailure,
    },
    /// The destination address is refused by the network policy (SSRF guard).
    #[error(transparent)]
    Refused(RefusedAddress),
    /// The upstream's answer is larger than the gateway reads.
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The request could not be built (a path that is not a valid URI, a bad header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The last failure of a call that ran out of attempts (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastFailure {
    /// The upstream answered this status.
    Status(StatusCode),
    /// No connection could be made.
    Connect,
    /// An attempt timed out.
    Timeout,
    /// The connection broke.
    Network,
}

impl std::fmt::Display for LastFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "last answer {s}"),
            Self::Connect => f.write_str("cannot connect"),
            Self::Timeout => f.write_str("attempt timed out"),
            Self::Network => f.write_str("connection failed"),
        }
    }
}

/// What went wrong while fetching an OAuth token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFetchFailure {
    /// The token endpoint answered this status.
    #[error("it answered {0}")]
    Status(StatusCode),
    /// It could not be reached.
    #[error("it is unreachable")]
    Unreachable,
    /// It did not answer in time.
    #[error("it timed out")]
    Timeout,
    /// Its answer is not a usable token.
    #[error("its answer is not a bearer token")]
    InvalidResponse,
    /// Its address is refused by the network policy.
    #[error("its address is refused by the network policy")]
    Refused,
}

impl UpstreamError {
    /// The upstream's status, for [`UpstreamError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        tracing::warn!(error = %err, "upstream call failed");
        match err {
            UpstreamError::Status { status, .. } => ApiError::new(
                ErrorCode::UpstreamError,
                format!("The upstream answered {}.", status.as_u16()),
            ),
            UpstreamError::Unavailable { retry_after, .. } => {
                let e = ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "The upstream is unavailable; retry later.",
                );
                match retry_after {
                    Some(d) => e.with_retry_after(retry_after_secs(d)),
                    None => e,
                }
            }
            UpstreamError::CircuitOpen { retry_after } => ApiError::new(
                ErrorCode::CircuitOpen,
                "The upstream's circuit breaker is open; retry later.",
            )
            .with_retry_after(retry_after_secs(retry_after)),
            UpstreamError::Timeout => ApiError::new(
                ErrorCode::RequestTimeout,
                "The upstream did not answer within the deadline.",
            ),
            UpstreamError::TokenFetch { failure, .. } => match failure {
                TokenFetchFailure::Status(s) if s.is_client_error() => ApiError::new(
                    ErrorCode::UpstreamError,
                    "The upstream's token endpoint refused the gateway's credentials.",
                ),
                TokenFetchFailure::InvalidResponse => ApiError::new(
                    ErrorCode::UpstreamError,
                    "The upstream's token endpoint gave no usable token.",
                ),
                _ => ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "The upstream's token endpoint is unavailable; retry later.",
                ),
            },
            UpstreamError::Refused(_) => ApiError::new(
                ErrorCode::UpstreamError,
                "The destination address is not allowed.",
            ),
            UpstreamError::ResponseTooLarge { .. } => ApiError::new(
                ErrorCode::UpstreamError,
                "The upstream's answer is too large.",
            ),
            UpstreamError::InvalidRequest(_) => ApiError::internal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_retry_after_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
