//! The edge middlewares of the one stack (see [`super::Application`]): deadline, body limit,
//! load shedding, panic capture and the error shape of the router's own 404/405.

use std::any::Any;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::header;
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

use crate::error::{ApiError, ErrorCode, ErrorLog, payload_too_large};
use crate::telemetry::{DeadlineDrop, FloodGate, Metrics, RequestId, X_REQUEST_ID};

/// The edge of the one middleware stack, as one tower layer so that a request pays for one
/// service clone and one boxed future instead of one per step (measured in BENCHMARKS.md).
/// The steps, outermost first, are the functions below, in this order:
///
/// 1. [`correlate`]: the request id (current for everything inside, echoed on the response,
///    and the `request` span of every line logged inside);
/// 2. [`measure`]: `gateway_http_requests_total` / `..._duration_seconds` by route template —
///    outside the steps below so that shed, timed-out and panicked requests are counted;
/// 3. [`contain_panics`]: a handler panic becomes a 500 in the error shape;
/// 4. [`deadline`]: past `request_timeout_ms`, 504 `request.timeout`;
/// 5. [`limit_body`]: a declared oversized body is refused at once; others are capped while read;
/// 6. [`shed_load`]: beyond `max_concurrent_requests`, or once the shutdown drain has begun,
///    503 `overloaded` + `Retry-After` — except the operations endpoints (`/healthz`,
///    `/readyz`, `/metrics`), which are never shed nor counted.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    shared: Arc<EdgeShared>,
}

#[derive(Debug)]
struct EdgeShared {
    metrics: Arc<Metrics>,
    flood: FloodGate,
    in_flight: InFlight,
    deadline: Duration,
    max_body_bytes: usize,
}

impl EdgeLayer {
    /// The edge with these limits.
    pub fn new(
        metrics: Arc<Metrics>,
        in_flight: InFlight,
        deadline: Duration,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            shared: Arc::new(EdgeShared {
                metrics,
                flood: FloodGate::new(),
                in_flight,
                deadline,
                max_body_bytes,
            }),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl EdgeLayer {
    /// Serves `req` through the edge with `inner` as the handler, counted and logged under the
    /// route template `route`: for the hot routes the server dispatches without the router
    /// (see `super::dispatch`), which is what the router's match would have named them.
    pub(super) async fn serve<S>(&self, inner: S, route: &'static str, mut req: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send,
        S::Future: Send,
    {
        req.extensions_mut().insert(HotRoute(route));
        correlate(&self.shared, inner, req).await
    }
}

/// The route template of a request dispatched without the router (see [`EdgeLayer::serve`]).
#[derive(Debug, Clone, Copy)]
struct HotRoute(&'static str);

/// The route template a request matched: the router's, or the hot route's.
#[derive(Debug, Clone)]
enum Template {
    Matched(MatchedPath),
    Hot(&'static str),
}

impl Template {
    fn of(req: &Request) -> Option<Self> {
        if let Some(matched) = req.extensions().get::<MatchedPath>() {
            return Some(Self::Matched(matched.clone()));
        }
        req.extensions()
            .get::<HotRoute>()
            .map(|hot| Self::Hot(hot.0))
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Matched(matched) => matched.as_str(),
            Self::Hot(route) => route,
        }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<EdgeShared>,
}

type EdgeFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> EdgeFuture {
        // Use the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { Ok(correlate(&shared, inner, req).await) })
    }
}

/// Step 1: request id (and with it the request span of log lines); the one log line of a failed request (its [`ErrorLog`],
/// written inside the span, under the flood rule).
async fn correlate<S>(shared: &EdgeShared, inner: S, mut req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    // The id, current for everything inside, is also the request span of every line logged
    // meanwhile (the log formatters write it from the task-local): nothing is recorded for a
    // request that logs nothing.
    let id = RequestId::from_headers(req.headers()).serving(req.method());
    req.extensions_mut().insert(id.clone());
    let header = id.header_value();
    let route = Template::of(&req);
    let mut response = id
        .scope(async {
            let mut response = measure(shared, inner, req).await;
            if let Some(log) = response.extensions_mut().remove::<ErrorLog>() {
                let route = route.as_ref().map_or("unmatched", Template::as_str);
                write_error_log(&shared.flood, route, response.status(), &log);
            }
            response
        })
        .await;
    response.headers_mut().insert(X_REQUEST_ID, header);
    response
}

/// Writes `log` about a request to `route` answered `status`, at most once per second per
/// route, status and context (the flood rule), with the count of the lines suppressed.
fn write_error_log(flood: &FloodGate, route: &str, status: http::StatusCode, log: &ErrorLog) {
    let key = (
        route,
        status.as_u16(),
        log.message,
        log.action.as_deref(),
        log.upstream.as_deref(),
        log.outcome,
        log.upstream_status,
    );
    let Some(suppressed) = flood.admit(&key) else {
        return;
    };
    let suppressed = (suppressed > 0).then_some(suppressed);
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                route,
                status = status.as_u16(),
                action = log.action.as_deref(),
                upstream = log.upstream.as_deref(),
                outcome = log.outcome,
                upstream_status = log.upstream_status,
                attempts = log.attempts,
                error = log.error.as_deref(),
                suppressed,
                "{}",
                log.message
            )
        };
    }
    match log.level {
        tracing::Level::ERROR => line!(tracing::Level::ERROR),
        tracing::Level::WARN => line!(tracing::Level::WARN),
        tracing::Level::INFO => line!(tracing::Level::INFO),
        tracing::Level::DEBUG => line!(tracing::Level::DEBUG),
        _ => line!(tracing::Level::TRACE),
    }
}

/// Step 2: HTTP metrics by route template.
async fn measure<S>(shared: &EdgeShared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let mut measured = Measured {
        metrics: &shared.metrics,
        started: Instant::now(),
        route: Template::of(&req),
        method: req.method().clone(),
        status: None,
    };
    let response = contain_panics(shared, inner, req).await;
    measured.status = Some(response.status());
    response
}

/// The HTTP metrics of one request, observed when it ends: with the answer's status, or as
/// 499 when the caller went away first (its future dropped), so that every request the
/// handlers saw is counted.
struct Measured<'a> {
    metrics: &'a Metrics,
    started: Instant,
    route: Option<Template>,
    method: http::Method,
    status: Option<http::StatusCode>,
}

impl Drop for Measured<'_> {
    fn drop(&mut self) {
        let status = self.status.unwrap_or_else(|| {
            http::StatusCode::from_u16(CLIENT_CLOSED_REQUEST)
                .unwrap_or(http::StatusCode::BAD_REQUEST)
        });
        self.metrics.observe_http(
            self.route.as_ref().map(Template::as_str),
            &self.method,
            status,
            self.started.elapsed(),
        );
    }
}

/// The status counted for a request whose caller went away before the answer ("client
/// closed request"; never sent).
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Step 3: a panic becomes a 500 in the error shape.
async fn contain_panics<S>(shared: &EdgeShared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    match AssertUnwindSafe(deadline(shared, inner, req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => panic_response(panic),
    }
}

/// Step 4: the whole-request deadline: past it the request is answered 504 `request.timeout`
/// and the handler's future is dropped.
async fn deadline<S>(shared: &EdgeShared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let outcome = {
        // Declared first, dropped last: the handler is dropped while it is armed.
        let mut marker = DeadlineDrop::default();
        let mut handler = std::pin::pin!(limit_body(shared, inner, req));
        let outcome = tokio::time::timeout(shared.deadline, handler.as_mut()).await;
        if outcome.is_err() {
            // The handler is dropped at the end of this block: its deadline passed (it is not
            // a hang-up).
            marker.arm();
        }
        outcome
    };
    match outcome {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            "The request did not complete within the gateway's deadline.",
        )
        .with_log(
            ErrorLog::new(tracing::Level::WARN, "request deadline passed").error(format!(
                "no answer within server.request_timeout_ms ({} ms)",
                shared.deadline.as_millis()
            )),
        )
        .into_response(),
    }
}

/// Step 5: refuses a declared `Content-Length` over the limit at once (without reading the
/// body), and caps every other body while it is read: the JSON extractor turns the cap into 413.
async fn limit_body<S>(shared: &EdgeShared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let max = shared.max_body_bytes;
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
    shed_load(shared, inner, Request::from_parts(parts, limited)).await
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

/// The operations endpoints: never load-shed, not counted against `max_concurrent_requests`,
/// and answering during the shutdown drain (readiness must be seen turning 503).
fn is_operations_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Step 6: past `max_concurrent_requests` in flight, answers 503 `overloaded` with
/// `Retry-After: 1` instead of queueing: a flow that waits on the gateway is better served by a
/// fast refusal. During the shutdown drain, new work is refused the same way (with
/// `Connection: close`) while the requests already in flight finish.
async fn shed_load<S>(shared: &EdgeShared, inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let inner_state = &shared.in_flight.inner;
    if is_operations_path(req.uri().path()) {
        // Never shed and never counted: health and metrics answer however many requests are
        // stalled, and during the drain.
        return match inner.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if inner_state.refusing.load(Ordering::Acquire) {
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
    let previous = inner_state.current.fetch_add(1, Ordering::AcqRel);
    let guard = InFlightGuard(inner_state.clone());
    if previous >= inner_state.max {
        drop(guard);
        return ApiError::overloaded(1).into_response();
    }
    let response = match inner.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    drop(guard);
    response
}

/// Turns a handler panic into a 500 in the error shape (the panic message is logged, never sent).
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal()
        .with_log(ErrorLog::new(tracing::Level::ERROR, "handler panicked").error(message))
        .into_response()
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
