//! Throttling of repeated failed authentication per client address, so that guessing a
//! credential costs a minute per few attempts instead of nothing.
//!
//! An address that failed [`FailedAuthThrottle::max_per_window`] times within a window (one
//! minute, counted from its first failure) is answered 429 `too.many.requests` with
//! `Retry-After` until the window has passed — also when it then sends the right credential,
//! so that guessing cannot continue. Every failure is logged at WARN with the address and the
//! reason (never the credential), under the flood rule (one line per second per address and
//! reason, with the count suppressed).
//!
//! The table is bounded ([`FailedAuthThrottle::MAX_ADDRESSES`]): when full, windows that are
//! over are dropped first; addresses that still find no room share one window, so minting
//! addresses cannot make guessing free again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::InboundAuth;
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::FloodGate;

/// Failed authentications per address and window (see the module docs).
#[derive(Debug)]
pub struct FailedAuthThrottle {
    max_per_window: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
    flood: FloodGate,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Where addresses that find no room in a full table are counted together.
const SHARED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

impl FailedAuthThrottle {
    /// The window failures are counted in.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses remembered at most.
    pub const MAX_ADDRESSES: usize = 65_536;

    /// At most `max_per_window` failures per address per window (at least 1).
    pub fn new(max_per_window: u32) -> Self {
        Self {
            max_per_window: max_per_window.max(1),
            windows: Mutex::new(HashMap::new()),
            flood: FloodGate::new(),
        }
    }

    /// The failures allowed per window.
    pub fn max_per_window(&self) -> u32 {
        self.max_per_window
    }

    /// `Some(seconds to wait)` while `ip` is throttled at `now`.
    pub fn throttled_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.lock();
        let window = windows.get(&ip).or_else(|| windows.get(&SHARED))?;
        let elapsed = now.saturating_duration_since(window.started);
        if elapsed >= Self::WINDOW || window.failures < self.max_per_window {
            return None;
        }
        let left = Self::WINDOW - elapsed;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Counts a failure of `ip` at `now`; returns the failures in its window so far.
    pub fn failed_at(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut windows = self.lock();
        if !windows.contains_key(&ip) && windows.len() >= Self::MAX_ADDRESSES {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < Self::WINDOW);
        }
        let key = if windows.contains_key(&ip) || windows.len() < Self::MAX_ADDRESSES {
            ip
        } else {
            SHARED
        };
        let window = windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= Self::WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        window.failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A surface's credential check with a [`FailedAuthThrottle`]; apply with
/// `route_layer(from_fn_with_state(auth, require_throttled))`. Cheap to clone; the clones
/// share the throttle (routers of one surface pass clones of one value).
#[derive(Debug, Clone)]
pub struct ThrottledAuth {
    auth: InboundAuth,
    throttle: Arc<FailedAuthThrottle>,
    surface: &'static str,
}

impl ThrottledAuth {
    /// `auth` on the surface named `surface` (in log lines), throttled by `throttle`.
    pub fn new(
        auth: InboundAuth,
        throttle: Arc<FailedAuthThrottle>,
        surface: &'static str,
    ) -> Self {
        Self {
            auth,
            throttle,
            surface,
        }
    }
}

/// Middleware: 429 while the caller's address is throttled, else the credential check, each
/// failure counted against the address and logged at WARN (flood rule).
pub async fn require_throttled(
    State(auth): State<ThrottledAuth>,
    req: Request,
    next: Next,
) -> Response {
    // Requests that did not come through the gateway's listener (tests driving the router
    // directly) count as one address.
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::LOCALHOST), |ConnectInfo(addr)| {
            addr.ip()
        });
    let now = Instant::now();
    let throttle = &auth.throttle;
    if let Some(wait) = throttle.throttled_at(ip, now) {
        if let Some(suppressed) = throttle.flood.admit(&(ip, "throttled")) {
            tracing::warn!(surface = auth.surface, client = %ip, retry_after_s = wait, suppressed,
                "authentication throttled: too many failures from this address");
        }
        return ApiError::new(
            ErrorCode::TooManyRequests,
            "Too many failed authentications from this address; retry later.",
        )
        .with_retry_after(wait)
        .into_response();
    }
    match auth.auth.check_request(req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(err) => {
            let failures = throttle.failed_at(ip, now);
            let reason = err.code().as_str();
            if let Some(suppressed) = throttle.flood.admit(&(ip, reason)) {
                tracing::warn!(surface = auth.surface, client = %ip, reason, failures,
                    max = throttle.max_per_window, suppressed, "authentication failed");
            }
            err.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_failures_until_the_window_passes() {
        let throttle = FailedAuthThrottle::new(3);
        let attacker: IpAddr = [127, 0, 0, 2].into();
        let other: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for n in 1..=3 {
            assert_eq!(throttle.throttled_at(attacker, t0), None);
            assert_eq!(throttle.failed_at(attacker, t0), n);
        }
        assert_eq!(throttle.throttled_at(attacker, t0), Some(60));
        assert_eq!(
            throttle.throttled_at(attacker, t0 + Duration::from_millis(59_500)),
            Some(1)
        );
        assert_eq!(throttle.throttled_at(other, t0), None, "others are served");
        let later = t0 + FailedAuthThrottle::WINDOW;
        assert_eq!(throttle.throttled_at(attacker, later), None);
        assert_eq!(throttle.failed_at(attacker, later), 1, "a new window");
    }

    #[test]
    fn a_full_table_shares_one_window_rather_than_forgetting() {
        let throttle = FailedAuthThrottle::new(2);
        let t0 = Instant::now();
        for i in 0..FailedAuthThrottle::MAX_ADDRESSES as u32 {
            throttle.failed_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        let fresh: IpAddr = [10, 255, 255, 255].into();
        let fresh2: IpAddr = [10, 255, 255, 254].into();
        throttle.failed_at(fresh, t0);
        throttle.failed_at(fresh2, t0);
        assert!(throttle.throttled_at(fresh, t0).is_some());
    }
}
