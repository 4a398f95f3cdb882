//! How an upstream call fails, and how that failure is answered on every surface
//! (the same mapping everywhere: 502 `upstream.error`, 503 `upstream.unavailable` or
//! `circuit.open`, 504 `request.timeout`).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::guard::RefusedAddress;
use crate::error::{ApiError, ErrorCode, ErrorLog};

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
    /// The upstream (or its token endpoint) stayed unreachable or kept answering
    /// 429/502/503/504 until attempts ran out, asked to wait longer than `max_retry_after_s`, or
    /// the next wait would not end before the caller's deadline.
    #[error("upstream unavailable ({last})")]
    Unavailable {
        /// The wait the upstream asked for (or, when the next wait did not fit before the
        /// deadline, that wait), when known.
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
    /// The caller's deadline passed (or cut the attempt in flight).
    #[error("deadline exceeded")]
    Timeout,
    /// The upstream's OAuth token endpoint failed. [`Upstream::call`](super::Upstream::call)
    /// returns this only for failures that are not transient (refused credentials, an unusable
    /// answer); transient ones are retried and end as [`UpstreamError::Unavailable`].
    #[error("token endpoint of upstream `{upstream}` failed: {failure}")]
    TokenFetch {
        /// The upstream whose token could not be had.
        upstream: String,
        /// What went wrong (never the secret).
        failure: TokenFetchFailure,
        /// The token endpoint's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
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
    /// The upstream's OAuth token endpoint failed transiently (no request was sent).
    Token(TokenFetchFailure),
}

impl std::fmt::Display for LastFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "last answer {s}"),
            Self::Connect => f.write_str("cannot connect"),
            Self::Timeout => f.write_str("attempt timed out"),
            Self::Network => f.write_str("connection failed"),
            Self::Token(failure) => write!(f, "token endpoint: {failure}"),
        }
    }
}

/// What went wrong while fetching an OAuth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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

impl TokenFetchFailure {
    /// Whether the token endpoint may well answer soon: it answered 408, 429 or a 5xx, could
    /// not be reached, or did not answer in time. Refused credentials (400/401/403), other 4xx,
    /// an unusable answer and a refused address are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status(s) => {
                s.is_server_error()
                    || *s == StatusCode::TOO_MANY_REQUESTS
                    || *s == StatusCode::REQUEST_TIMEOUT
            }
            Self::Unreachable | Self::Timeout => true,
            Self::InvalidResponse | Self::Refused => false,
        }
    }
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

impl UpstreamError {
    /// Whether this failure is the upstream's (or its token endpoint's) fault or unavailability,
    /// worth a `warn!`; a non-retryable 4xx answer is the request's business (`debug!`).
    fn is_upstream_trouble(&self) -> bool {
        match self {
            Self::Status { status, .. } => !status.is_client_error(),
            _ => true,
        }
    }
}

/// `503 upstream.unavailable`, with `Retry-After` when known.
fn unavailable(message: &'static str, retry_after: Option<Duration>) -> ApiError {
    let e = ApiError::new(ErrorCode::UpstreamUnavailable, message);
    match retry_after {
        Some(d) => e.with_retry_after(retry_after_secs(d)),
        None => e,
    }
}

impl From<UpstreamError> for ApiError {
    /// The answer of the upstream failure mapping every surface shares; the cause rides along as an
    /// [`ErrorLog`] (WARN for the upstream's trouble, DEBUG for a 4xx answer, which is the
    /// request's business) for the edge to write once.
    fn from(err: UpstreamError) -> Self {
        let log = if err.is_upstream_trouble() {
            ErrorLog::new(tracing::Level::WARN, "upstream call failed")
        } else {
            ErrorLog::new(tracing::Level::DEBUG, "upstream refused the call")
        }
        .error(&err);
        let upstream_status = err.status().map(|s| s.as_u16());
        let mut api = api_error(err).with_log(log);
        if let Some(log) = api.log_mut() {
            log.upstream_status = upstream_status;
        }
        api
    }
}

/// The answer for an upstream failure (without its log).
fn api_error(err: UpstreamError) -> ApiError {
    match err {
        UpstreamError::Status { status, .. } => ApiError::new(
            ErrorCode::UpstreamError,
            format!("The upstream answered {}.", status.as_u16()),
        ),
        UpstreamError::Unavailable { retry_after, .. } => {
            unavailable("The upstream is unavailable; retry later.", retry_after)
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
        UpstreamError::TokenFetch {
            failure,
            retry_after,
            ..
        } if failure.is_transient() => unavailable(
            "The upstream's token endpoint is unavailable; retry later.",
            retry_after,
        ),
        UpstreamError::TokenFetch {
            failure: TokenFetchFailure::Status(s),
            ..
        } if matches!(s.as_u16(), 400 | 401 | 403) => ApiError::new(
            ErrorCode::UpstreamError,
            "The upstream's token endpoint refused the gateway's credentials.",
        ),
        UpstreamError::TokenFetch {
            failure: TokenFetchFailure::Status(s),
            ..
        } => ApiError::new(
            ErrorCode::UpstreamError,
            format!("The upstream's token endpoint answered {}.", s.as_u16()),
        ),
        UpstreamError::TokenFetch {
            failure: TokenFetchFailure::Refused,
            ..
        } => ApiError::new(
            ErrorCode::UpstreamError,
            "The token endpoint's address is not allowed.",
        ),
        UpstreamError::TokenFetch { .. } => ApiError::new(
            ErrorCode::UpstreamError,
            "The upstream's token endpoint gave no usable token.",
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_log_at_debug_and_unavailability_at_warn() {
        let status = |code: u16| UpstreamError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
            body: Bytes::new(),
        };
        let level = |err: UpstreamError| {
            let api: ApiError = err.into();
            api.log().map(|log| log.level)
        };
        let mut levels = Vec::new();
        let logged = crate::telemetry::levels_logged(|| {
            levels.push(level(status(404)));
            levels.push(level(status(409)));
        });
        assert!(logged.is_empty(), "converting an error logs nothing");
        assert_eq!(levels, [Some(tracing::Level::DEBUG); 2]);
        let mut levels = Vec::new();
        let logged = crate::telemetry::levels_logged(|| {
            levels.push(level(status(500)));
            levels.push(level(UpstreamError::Unavailable {
                retry_after: None,
                last: LastFailure::Connect,
            }));
            levels.push(level(UpstreamError::CircuitOpen {
                retry_after: Duration::from_secs(1),
            }));
        });
        assert!(logged.is_empty(), "converting an error logs nothing");
        assert_eq!(levels, [Some(tracing::Level::WARN); 3]);
        let api: ApiError = status(502).into();
        assert_eq!(api.log().unwrap().upstream_status, Some(502));
    }

    #[test]
    fn transient_token_failures() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                TokenFetchFailure::Status(StatusCode::from_u16(code).unwrap()).is_transient(),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404] {
            assert!(
                !TokenFetchFailure::Status(StatusCode::from_u16(code).unwrap()).is_transient(),
                "{code}"
            );
        }
        assert!(TokenFetchFailure::Unreachable.is_transient());
        assert!(TokenFetchFailure::Timeout.is_transient());
        assert!(!TokenFetchFailure::InvalidResponse.is_transient());
        assert!(!TokenFetchFailure::Refused.is_transient());
    }

    #[test]
    fn rounds_retry_after_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
