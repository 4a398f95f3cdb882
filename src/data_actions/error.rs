//! How a data-action execution fails: the capability's error, the [`Outcome`] each failure
//! stands for, and the answer it gets.
//!
//! The outcome is decided here, from the failure itself — never by reading an HTTP error code
//! back. The answer carries, for the edge to log once, the context an operator needs: the
//! action, the upstream, the outcome, the upstream's last status and the attempts made.

use std::sync::Arc;

use super::outcome::Outcome;
use crate::error::{ApiError, ErrorCode, ErrorLog};
use crate::upstream::{CallTrace, UpstreamError};

/// Why an execution did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No action has this name (404).
    #[error("no data action has this name")]
    UnknownAction,
    /// The request is not a usable input: the body (content type, size, depth, syntax), not an
    /// object, the input schema, a required mapping, a request that cannot be formed (400, 413,
    /// 415).
    #[error("the input was refused: {}", .0.message())]
    Input(ApiError),
    /// The upstream call failed (502, 503, 504).
    #[error("upstream `{upstream}` failed: {error}")]
    Upstream {
        /// The upstream called.
        upstream: Arc<str>,
        /// How it failed.
        error: UpstreamError,
        /// Attempts made and the last status answered.
        trace: CallTrace,
    },
    /// The upstream answered 2xx with a body that is not JSON (502).
    #[error("upstream `{upstream}` answered a body that is not JSON")]
    NotJson {
        /// The upstream called.
        upstream: Arc<str>,
        /// Attempts made and the last status answered.
        trace: CallTrace,
    },
    /// The upstream's answer does not make a valid output: a required output value missing,
    /// the output schema, not an object (422).
    #[error("the output was refused: {}", .0.message())]
    Output(ApiError, CallTrace),
}

impl ActionError {
    /// The outcome this failure stands for (the metric label, the audit outcome).
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::UnknownAction => Outcome::NotFound,
            Self::Input(_) => Outcome::InvalidInput,
            Self::Output(..) => Outcome::OutputInvalid,
            Self::NotJson { .. } => Outcome::UpstreamError,
            Self::Upstream { error, .. } => match error {
                UpstreamError::Unavailable { .. } => Outcome::UpstreamUnavailable,
                UpstreamError::CircuitOpen { .. } => Outcome::CircuitOpen,
                UpstreamError::Timeout => Outcome::Timeout,
                UpstreamError::TokenFetch { failure, .. } if failure.is_transient() => {
                    Outcome::UpstreamUnavailable
                }
                UpstreamError::Status { .. }
                | UpstreamError::TokenFetch { .. }
                | UpstreamError::Refused(_)
                | UpstreamError::ResponseTooLarge { .. }
                | UpstreamError::InvalidRequest(_) => Outcome::UpstreamError,
            },
        }
    }

    /// The call's trace (attempts, last status), when the upstream was called.
    pub fn trace(&self) -> Option<CallTrace> {
        match self {
            Self::Upstream { trace, .. } | Self::NotJson { trace, .. } | Self::Output(_, trace) => {
                Some(*trace)
            }
            Self::UnknownAction | Self::Input(_) => None,
        }
    }

    /// The answer, with what the edge logs about it: a failure of the action (anything but
    /// the caller's own mistakes: unknown action, refused input) is a WARN line naming the
    /// action, the upstream, the outcome, the upstream's status and the attempts.
    pub fn into_api_error(self, action: &Arc<str>, upstream: &Arc<str>) -> ApiError {
        let outcome = self.outcome();
        let trace = self.trace();
        let cause = self.to_string();
        let api = match self {
            Self::UnknownAction => return ApiError::not_found("No data action has this name."),
            Self::Input(api) => return api,
            Self::Upstream { error, .. } => ApiError::from(error),
            Self::NotJson { .. } => ApiError::new(
                ErrorCode::UpstreamError,
                "The upstream answered a body that is not JSON.",
            ),
            Self::Output(api, _) => api,
        };
        let mut log = ErrorLog::new(tracing::Level::WARN, "data action failed").error(cause);
        log.action = Some(action.clone());
        log.upstream = Some(upstream.clone());
        log.outcome = Some(outcome.as_str());
        log.upstream_status = trace.and_then(|t| t.last_status).map(|s| s.as_u16());
        log.attempts = trace.map(|t| t.attempts);
        api.with_log(log)
    }
}
