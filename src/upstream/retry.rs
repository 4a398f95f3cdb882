//! The retry policy of upstream calls: which outcomes are retried, how long to wait, and the bounded
//! reason labels of `gateway_upstream_retries_total`.

use std::time::{Duration, SystemTime};

use crate::backoff::{Backoff, Jitter};
use crate::config::RetrySettings;
use http::{HeaderMap, Method, StatusCode, header};

/// Why an attempt is retried (the `reason` label of `gateway_upstream_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// 429 Too Many Requests.
    Status429,
    /// 502 Bad Gateway.
    Status502,
    /// 503 Service Unavailable.
    Status503,
    /// 504 Gateway Timeout.
    Status504,
    /// 408 Request Timeout (retried by deliveries only).
    Status408,
    /// Another 5xx (retried by deliveries only).
    Status5xx,
    /// The connection could not be established.
    Connect,
    /// The attempt timed out.
    Timeout,
    /// The connection broke after the request was (possibly) sent.
    Network,
    /// The upstream answered 401: the token is refetched and the request replayed once.
    Unauthorized,
    /// The upstream's OAuth token endpoint failed transiently (408, 429, 5xx, unreachable,
    /// timed out); no request was sent.
    Token,
}

impl RetryReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 11] = [
        Self::Status429,
        Self::Status502,
        Self::Status503,
        Self::Status504,
        Self::Status408,
        Self::Status5xx,
        Self::Connect,
        Self::Timeout,
        Self::Network,
        Self::Unauthorized,
        Self::Token,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Status429 => "status_429",
            Self::Status502 => "status_502",
            Self::Status503 => "status_503",
            Self::Status504 => "status_504",
            Self::Status408 => "status_408",
            Self::Status5xx => "status_5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Unauthorized => "unauthorized",
            Self::Token => "token",
        }
    }

    /// The reason for a retryable status (429/502/503/504).
    pub fn for_status(status: StatusCode) -> Option<Self> {
        match status.as_u16() {
            429 => Some(Self::Status429),
            502 => Some(Self::Status502),
            503 => Some(Self::Status503),
            504 => Some(Self::Status504),
            _ => None,
        }
    }

    /// Whether a failure of this kind proves the upstream did not process the request (so even
    /// a non-idempotent POST may be retried): a failed connection, a 429 or a 503 (and a token
    /// that could not be had: nothing was sent).
    pub const fn certainly_unprocessed(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Status429 | Self::Status503 | Self::Unauthorized | Self::Token
        )
    }
}

/// Whether requests with `method` to an upstream may be retried after a failure that does not
/// prove the request was unprocessed.
pub fn retry_unsure(method: &Method, idempotent_upstream: bool) -> bool {
    idempotent_upstream || !(method == Method::POST || method == Method::PATCH)
}

/// The schedule of an upstream's retries: full jitter over an exponential ceiling,
/// `random(0 ..= min(max_delay, base_delay × 2^(retry-1)))`.
pub fn schedule(settings: &RetrySettings) -> Backoff {
    Backoff::exponential(
        Duration::from_millis(settings.base_delay_ms),
        Duration::from_millis(settings.max_delay_ms),
        Jitter::Full,
    )
}

/// The wait before retry number `retry` (1 = the first retry) of an upstream with `settings`
/// (see [`schedule`]).
pub fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    schedule(settings).delay(retry)
}

/// The `Retry-After` of a response: delay-seconds or an HTTP date (relative to now; a date in
/// the past is zero). `None` when absent or unparsable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(header::RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_is_bounded_by_the_exponential_ceiling() {
        let s = RetrySettings {
            max_attempts: 10,
            base_delay_ms: 100,
            max_delay_ms: 1000,
            max_retry_after_s: 180,
        };
        for _ in 0..200 {
            assert!(backoff(&s, 1) <= Duration::from_millis(100));
            assert!(backoff(&s, 3) <= Duration::from_millis(400));
            assert!(backoff(&s, 40) <= Duration::from_millis(1000));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(&s, 5)).collect();
        assert!(spread.len() > 1, "jitter varies the wait");
    }

    #[test]
    fn non_idempotent_posts_retry_only_when_unprocessed() {
        assert!(!retry_unsure(&Method::POST, false));
        assert!(!retry_unsure(&Method::PATCH, false));
        assert!(retry_unsure(&Method::POST, true));
        assert!(retry_unsure(&Method::GET, false));
        assert!(retry_unsure(&Method::PUT, false));
        assert!(RetryReason::Status503.certainly_unprocessed());
        assert!(!RetryReason::Status502.certainly_unprocessed());
    }
}
