//! What one outbound attempt's result means, for whoever made it.
//!
//! An attempt ends with an answer (a status and headers) or a [`TransportError`]. Three
//! questions are asked of it by every caller, and answered here once:
//!
//! - **retry?** — is another attempt worth making ([`Verdict::retry`], with the [`RetryReason`]
//!   that labels `gateway_upstream_retries_total`);
//! - **breaker?** — does it count against the destination's circuit breaker
//!   ([`BreakerEffect`]): connection errors, timeouts, 429 and 5xx are failures; other answers
//!   are successes (a 404 proves the destination is up);
//! - **certainly unprocessed?** — can even a non-idempotent request be sent again: a failed
//!   connection, a 429 or a 503 prove the destination did not act on it;
//!
//! plus the **`Retry-After`** the destination asked for (seconds or an HTTP date; on 429 and
//! 503 only).
//!
//! Which statuses are worth retrying differs by caller, and is a [`RetryableStatuses`] value: a
//! data action retries only the statuses that say "try again" (429, 502, 503, 504 — a 500 is an
//! answer), while a durable delivery retries every 5xx and 408 too, since it has minutes to
//! wait and the event must arrive.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::retry::{RetryReason, retry_after};
use super::transport::TransportError;

/// Which answered statuses are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryableStatuses {
    /// 429, 502, 503, 504 (calls made while a caller waits).
    Transient,
    /// 408, 429 and every 5xx (durable deliveries).
    TransientAndServerErrors,
}

impl RetryableStatuses {
    fn reason(self, status: StatusCode) -> Option<RetryReason> {
        if let Some(reason) = RetryReason::for_status(status) {
            return Some(reason);
        }
        match self {
            Self::Transient => None,
            Self::TransientAndServerErrors => match status.as_u16() {
                408 => Some(RetryReason::Status408),
                500..=599 => Some(RetryReason::Status5xx),
                _ => None,
            },
        }
    }
}

/// What an attempt means for the destination's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEffect {
    /// The destination works (it answered, even a 4xx).
    Success,
    /// The destination failed (connection error, timeout, 429, 5xx).
    Failure,
    /// Says nothing about the destination (the address was refused before connecting).
    Neutral,
}

/// The meaning of one attempt's result (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// `Some` when another attempt may succeed, with why.
    pub retry: Option<RetryReason>,
    /// What it means for the breaker.
    pub breaker: BreakerEffect,
    /// The destination certainly did not process the request.
    pub unprocessed: bool,
    /// The wait the destination asked for (429 and 503 only).
    pub retry_after: Option<Duration>,
}

/// The verdict on an answer with `status` and `headers`.
pub fn classify_answer(
    status: StatusCode,
    headers: &HeaderMap,
    retryable: RetryableStatuses,
) -> Verdict {
    let failing = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let asks_to_wait = matches!(status.as_u16(), 429 | 503);
    let retry = if status.is_success() {
        None
    } else {
        retryable.reason(status)
    };
    Verdict {
        retry,
        breaker: if failing {
            BreakerEffect::Failure
        } else {
            BreakerEffect::Success
        },
        unprocessed: retry.is_some_and(RetryReason::certainly_unprocessed),
        retry_after: if asks_to_wait {
            retry_after(headers)
        } else {
            None
        },
    }
}

/// The verdict on an attempt that got no answer.
pub fn classify_transport(err: &TransportError) -> Verdict {
    let (retry, breaker) = match err {
        TransportError::Refused(_) => (None, BreakerEffect::Neutral),
        TransportError::Connect(_) => (Some(RetryReason::Connect), BreakerEffect::Failure),
        TransportError::Timeout => (Some(RetryReason::Timeout), BreakerEffect::Failure),
        TransportError::Network(_) => (Some(RetryReason::Network), BreakerEffect::Failure),
        // It answered, too much: the destination works; asking again gets the same answer.
        TransportError::ResponseTooLarge { .. } => (None, BreakerEffect::Success),
    };
    Verdict {
        retry,
        breaker,
        unprocessed: err.certainly_not_sent(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};

    use super::*;

    fn answer(code: u16, retryable: RetryableStatuses) -> Verdict {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        classify_answer(StatusCode::from_u16(code).unwrap(), &headers, retryable)
    }

    #[test]
    fn transient_statuses_for_calls_a_caller_waits_on() {
        use RetryableStatuses::Transient;
        for code in [429, 502, 503, 504] {
            assert!(answer(code, Transient).retry.is_some(), "{code}");
            assert_eq!(answer(code, Transient).breaker, BreakerEffect::Failure);
        }
        for code in [200, 400, 401, 404, 408, 409, 500, 501] {
            assert_eq!(answer(code, Transient).retry, None, "{code}");
        }
        assert_eq!(answer(500, Transient).breaker, BreakerEffect::Failure);
        assert_eq!(answer(404, Transient).breaker, BreakerEffect::Success);
    }

    #[test]
    fn deliveries_retry_every_server_error_and_408() {
        use RetryableStatuses::TransientAndServerErrors as D;
        for code in [408, 429, 500, 501, 502, 503, 504, 599] {
            assert!(answer(code, D).retry.is_some(), "{code}");
        }
        for code in [200, 204, 400, 401, 404, 409, 410, 422] {
            assert_eq!(answer(code, D).retry, None, "{code}");
        }
    }

    #[test]
    fn only_429_and_503_prove_the_request_unprocessed_and_carry_retry_after() {
        use RetryableStatuses::Transient;
        for code in [429, 503] {
            let v = answer(code, Transient);
            assert!(v.unprocessed, "{code}");
            assert_eq!(v.retry_after, Some(Duration::from_secs(7)));
        }
        for code in [500, 502, 504] {
            let v = answer(code, Transient);
            assert!(!v.unprocessed, "{code}");
            assert_eq!(v.retry_after, None, "{code}");
        }
    }

    #[test]
    fn transport_errors() {
        let connect = classify_transport(&TransportError::Connect("refused".into()));
        assert_eq!(connect.retry, Some(RetryReason::Connect));
        assert!(connect.unprocessed);
        let network = classify_transport(&TransportError::Network("reset".into()));
        assert_eq!(network.retry, Some(RetryReason::Network));
        assert!(!network.unprocessed, "the request may have been sent");
        let timeout = classify_transport(&TransportError::Timeout);
        assert_eq!(timeout.breaker, BreakerEffect::Failure);
        let refused = classify_transport(&TransportError::Refused(super::super::RefusedAddress(
            [127, 0, 0, 1].into(),
        )));
        assert_eq!(
            (refused.retry, refused.breaker),
            (None, BreakerEffect::Neutral)
        );
    }
}
