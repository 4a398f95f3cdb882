//! The edge middlewares of the one stack (see [`super::Application`]): deadline, body limit,
//! load shedding, panic capture and the error shape of the router's own 404/405.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use tokio::sync::Notify;

use crate::error::{ApiError, ErrorCode, payload_too_large};

/// The whole-request deadline: past it the request is answered 504 `request.timeout` and the
/// handler's future is dropped.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = limit.as_millis() as u64,
                "request deadline passed"
            );
            ApiError::new(
                ErrorCode::RequestTimeout,
                "The request did not complete within the gateway's deadline.",
            )
            .into_response()
        }
    }
}

/// Refuses a declared `Content-Length` over the limit at once (without reading the body), and
/// caps every other body while it is read: the JSON extractor turns the cap into 413.
pub async fn body_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        let mut response = payload_too_large().into_response();
        // The unread body makes the connection unusable for another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return response;
    }
    let (parts, body) = req.into_parts();
    let limited = Body::new(http_body_util::Limited::new(body, max));
    next.run(Request::from_parts(parts, limited)).await
}

/// Counts requests in flight across every server thread, sheds load beyond the limit, and
/// refuses new work once the shutdown drain has begun.
#[derive(Debug, Clone)]
pub struct InFlight {
    inner: Arc<InFlightInner>,
}

#[derive(Debug)]
struct InFlightInner {
    current: AtomicUsize,
    max: usize,
    refusing: AtomicBool,
    idle: Notify,
}

impl InFlight {
    /// A limit of `max` concurrent requests.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(InFlightInner {
                current: AtomicUsize::new(0),
                max,
                refusing: AtomicBool::new(false),
                idle: Notify::new(),
            }),
        }
    }

    /// Requests being served right now.
    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::Acquire)
    }

    /// From now on, new requests other than the operations endpoints are answered 503
    /// `overloaded` with `Connection: close` (the shutdown drain).
    pub fn refuse_new_work(&self) {
        self.inner.refusing.store(true, Ordering::Release);
    }

    /// Waits until no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.current() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct InFlightGuard(Arc<InFlightInner>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.current.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Routes that keep answering during the shutdown drain (readiness must be seen turning 503).
fn is_operations_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Past `max_concurrent_requests` in flight, answers 503 `overloaded` with `Retry-After: 1`
/// instead of queueing: a flow that waits on the gateway is better served by a fast refusal.
/// During the shutdown drain, new work is refused the same way (with `Connection: close`) while
/// the requests already in flight finish.
pub async fn load_shed(State(in_flight): State<InFlight>, req: Request, next: Next) -> Response {
    let inner = &in_flight.inner;
    if inner.refusing.load(Ordering::Acquire) && !is_operations_path(req.uri().path()) {
        let mut response = ApiError::new(
            ErrorCode::Overloaded,
            "The gateway is shutting down; retry on another instance.",
        )
        .with_retry_after(1)
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return response;
    }
    let previous = inner.current.fetch_add(1, Ordering::AcqRel);
    let guard = InFlightGuard(inner.clone());
    if previous >= inner.max {
        drop(guard);
        return ApiError::overloaded(1).into_response();
    }
    let response = next.run(req).await;
    drop(guard);
    response
}

/// Turns a handler panic into a 500 in the error shape (the panic message is logged, never sent).
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    ApiError::internal().into_response()
}

/// Fallback for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("No resource at this path.")
}

/// Fallback for a known path with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed on this path.",
    )
}
