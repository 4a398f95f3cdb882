//! Outbound HTTP: every call the gateway makes to an upstream API goes through here.
//!
//! An [`Upstream`] is one configured API (`[upstreams.<name>]`, or the built-in `genesys`). One
//! logical call ([`Upstream::call`]) runs this stack, outermost first:
//!
//! 1. **auth injection** — a static header (API key, Basic, bearer) or an OAuth2
//!    client-credentials token from a shared, single-flight cache ([`TokenSource`]); a 401
//!    refetches the token once and replays the request once;
//! 2. **retry** within the caller's deadline — 429 (and a 503 that sends one) waits
//!    `Retry-After` (seconds or HTTP date; longer than `max_retry_after_s` → no retry), 502/503/
//!    504, connection errors and timeouts back off exponentially with full jitter
//!    (`random(0..=min(max_delay, base_delay × 2^(n-1)))`); other 4xx and 500/501 are never
//!    retried (5xx still count as breaker failures); a 401 with OAuth2 is not an attempt: the
//!    token is refetched once and the request replayed once; a POST
//!    or PATCH to a non-`idempotent` upstream is retried only when it certainly was not
//!    processed (connection failed, 429, 503); no wait ever crosses the deadline: a wait that
//!    would not end before it is not started — the call ends at once with 503
//!    `upstream.unavailable` whose `Retry-After` is that wait (the `Retry-After` asked for, or
//!    the backoff, rounded up), so the caller learns at once that the upstream is unavailable;
//!    504 `request.timeout` is only for a deadline that passed or cut an attempt in flight.
//!    A transient failure of the OAuth token endpoint (408, 429, 5xx, unreachable, timed out)
//!    is an attempt failure like any other: retried on the same budget (its `Retry-After`
//!    honoured), counted for the breaker, and ending as 503 `upstream.unavailable`; refused
//!    credentials (400/401/403) or an unusable answer end the call at once (502
//!    `upstream.error`, no retry);
//! 3. **circuit breaker** per upstream, shared across threads ([`CircuitBreaker`]); after a
//!    retryable failure it is looked at first: a call during which the breaker opened — on any
//!    attempt, the last one included — ends 503 `circuit.open` with `Retry-After` = the time
//!    it stays open. An attempt cut by the caller's deadline (rather than by `timeout_ms`) is
//!    neutral for the breaker: a tight flow deadline does not open the breaker of a healthy but
//!    slow upstream;
//! 4. **per-attempt timeout** — `min(timeout_ms, time left to the deadline)`;
//! 5. **transport** — [`HttpClient`]: hyper's HTTP/1.1 connections + rustls, idle keep-alive
//!    connections kept per server thread, `TCP_NODELAY`, size-capped bodies, no redirects.
//!
//! Hot path: the URL is joined from a pre-split base, metric children are resolved once, the
//! breaker's closed path takes no lock, and the caller's header map is copied only for an
//! attempt that another may follow — the last attempt that can be made takes it by value.
//!
//! [`HttpClient`] is also usable alone, with [`NetworkPolicy::Guarded`], for URLs that arrive
//! through the API (delivery targets, webhooks, their token endpoints): the SSRF guard refuses
//! private, loopback and link-local addresses after DNS resolution.
//!
//! This module is generic: it knows no capability. Failures map to the HTTP surface through
//! `From<UpstreamError> for ApiError`: 502 `upstream.error`, 503
//! `upstream.unavailable`, 503 `circuit.open`, 504 `request.timeout`. That conversion logs a
//! non-retryable 4xx answer at `debug` (it is the request's business) and everything else —
//! 5xx, unavailability, an open breaker, a deadline, token endpoint failures — at `warn`.
//!
//! Every attempt carries `ININ-Correlation-Id` (the current request id) and is counted in
//! `gateway_upstream_requests_total{upstream,status}`; retries in
//! `gateway_upstream_retries_total{upstream,reason}` (`reason="token"` for a token endpoint
//! failure); breaker states in `gateway_circuit_breaker_state{upstream}`; token fetches in
//! `gateway_oauth_token_fetches_total{upstream,result}`.

mod auth;
mod breaker;
mod classify;
mod error;
mod guard;
mod retry;
mod set;
mod transport;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use prometheus::{IntCounter, IntCounterVec};
use tokio::time::Instant;

pub use auth::{ClientCredentials, TokenSource};
pub use breaker::{BreakerState, CircuitBreaker, Permit, Rejected};
pub use classify::{
    BreakerEffect, RetryableStatuses, Verdict, classify_answer, classify_transport,
};
pub use error::{LastFailure, TokenFetchFailure, UpstreamError};
pub use guard::{NetworkPolicy, RefusedAddress, is_internal};
pub use retry::{RetryReason, backoff, retry_after, schedule};
pub use set::{Definitions, KeyPaths, UpstreamDefinition, UpstreamRegistry, Upstreams};
pub use transport::{
    DEFAULT_MAX_RESPONSE_BYTES, HttpClient, HttpClientOptions, TransportError, UpstreamResponse,
};

pub(crate) use transport::tls_config;

use auth::OutboundAuth;

use crate::config::{Problem, RetrySettings, UpstreamAuthSettings, UpstreamSettings};
use crate::telemetry::{Metrics, RequestId};

/// Header carrying the correlation id on every outbound call.
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("inin-correlation-id");

const USER_AGENT: &str = concat!("genesys-gateway/", env!("CARGO_PKG_VERSION"));

/// One request to an upstream.
#[derive(Debug, Clone, Default)]
pub struct UpstreamRequest {
    /// HTTP method.
    pub method: Method,
    /// Path (and query) appended to the upstream's base URL; starts with `/`.
    pub path_and_query: String,
    /// Headers to send (auth, correlation id and user agent are added).
    pub headers: HeaderMap,
    /// Body; empty means no body.
    pub body: Bytes,
}

impl UpstreamRequest {
    /// A request without headers or body.
    pub fn new(method: Method, path_and_query: impl Into<String>) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// With a JSON body (and `Content-Type: application/json`).
    #[must_use]
    pub fn json(mut self, body: impl Into<Bytes>) -> Self {
        self.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.body = body.into();
        self
    }
}

/// The scheme, authority and path prefix of an upstream's base URL, split once.
struct BaseUrl {
    raw: String,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash (empty for the root).
    path: String,
    /// The `Host` header of every request to it, made once.
    host: Option<HeaderValue>,
}

impl BaseUrl {
    fn parse(raw: &str) -> Result<Self, &'static str> {
        let uri: Uri = raw.parse().map_err(|_| "is not a valid URL")?;
        let scheme = uri
            .scheme()
            .filter(|s| matches!(s.as_str(), "http" | "https"))
            .cloned()
            .ok_or("must be an http:// or https:// URL")?;
        let authority = uri.authority().cloned().ok_or("must have a host")?;
        if uri.query().is_some() {
            return Err("must not have a query");
        }
        Ok(Self {
            raw: raw.trim_end_matches('/').to_owned(),
            host: transport::host_header(&scheme, &authority),
            scheme,
            authority,
            path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn join(&self, path_and_query: String) -> Result<Uri, UpstreamError> {
        let pq = if self.path.is_empty() && path_and_query.starts_with('/') {
            path_and_query
        } else {
            let mut s = String::with_capacity(self.path.len() + path_and_query.len() + 1);
            s.push_str(&self.path);
            if !path_and_query.starts_with('/') {
                s.push('/');
            }
            s.push_str(&path_and_query);
            s
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| UpstreamError::InvalidRequest("the path is not a valid URI".to_owned()))
    }
}

/// Pre-resolved metric children of one upstream (no label hashing on the hot path).
struct UpstreamMetrics {
    requests: IntCounterVec,
    name: Arc<str>,
    by_status: Box<[OnceLock<IntCounter>]>,
    error: IntCounter,
    timeout: IntCounter,
    retries: [IntCounter; RetryReason::ALL.len()],
}

impl UpstreamMetrics {
    fn new(name: &str, metrics: &Metrics) -> Self {
        Self {
            requests: metrics.upstream_requests_total.clone(),
            name: Arc::from(name),
            by_status: (100..1000).map(|_| OnceLock::new()).collect(),
            error: metrics
                .upstream_requests_total
                .with_label_values(&[name, "error"]),
            timeout: metrics
                .upstream_requests_total
                .with_label_values(&[name, "timeout"]),
            retries: RetryReason::ALL.map(|r| {
                metrics
                    .upstream_retries_total
                    .with_label_values(&[name, r.label()])
            }),
        }
    }

    fn status(&self, status: StatusCode) {
        let slot = &self.by_status[usize::from(status.as_u16()) - 100];
        slot.get_or_init(|| {
            self.requests
                .with_label_values(&[&*self.name, status.as_str()])
        })
        .inc();
    }

    fn retry(&self, reason: RetryReason) {
        let index = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[index].inc();
    }
}

/// One upstream API: base URL, auth, retry policy, breaker and transport (see the module docs).
pub struct Upstream {
    name: Arc<str>,
    base: BaseUrl,
    timeout: Duration,
    retry: RetrySettings,
    idempotent: bool,
    auth: OutboundAuth,
    breaker: CircuitBreaker,
    http: HttpClient,
    metrics: UpstreamMetrics,
    /// What it was built from (a reload keeps an upstream whose settings are equal).
    settings: UpstreamSettings,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base.raw)
            .finish_non_exhaustive()
    }
}

/// What one attempt's failure means for the call.
struct Failure {
    last: LastFailure,
    reason: RetryReason,
    retry_after: Option<Duration>,
    /// The upstream certainly did not process the request (any method may be sent again).
    unprocessed: bool,
    /// The answer, for a status failure (returned as `Status` when it is not retried).
    response: Option<UpstreamResponse>,
    /// The attempt timed out because the deadline, not the attempt timeout, cut it.
    deadline_cut: bool,
}

impl Upstream {
    /// An upstream named `name` from its settings, with `threads` connection pools.
    ///
    /// # Errors
    /// The settings that cannot be used (bad URL, header value), as problems at `paths`.
    fn new(
        name: &str,
        settings: &UpstreamSettings,
        threads: usize,
        metrics: &Metrics,
        paths: &KeyPaths,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let base = BaseUrl::parse(&settings.base_url)
            .map_err(|msg| problems.push(Problem::new(paths.path("base_url"), msg)))
            .ok();
        let http = HttpClient::new(
            NetworkPolicy::Trusted,
            &HttpClientOptions {
                threads,
                ..HttpClientOptions::default()
            },
        );
        let timeout = settings.timeout();
        let auth = match &settings.auth {
            UpstreamAuthSettings::None => Some(OutboundAuth::None),
            UpstreamAuthSettings::Basic { username, password } => {
                OutboundAuth::basic(username, password).or_else(|| {
                    problems.push(Problem::new(
                        paths.path("auth.username"),
                        "cannot be sent in a header",
                    ));
                    None
                })
            }
            UpstreamAuthSettings::Bearer { token } => OutboundAuth::bearer(token).or_else(|| {
                problems.push(Problem::new(
                    paths.path("auth.token"),
                    "cannot be sent in a header",
                ));
                None
            }),
            UpstreamAuthSettings::ApiKey { header, key } => OutboundAuth::api_key(header, key)
                .or_else(|| {
                    problems.push(Problem::new(
                        paths.path("auth.key"),
                        "is not a valid header name/value",
                    ));
                    None
                }),
            UpstreamAuthSettings::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scopes,
                client_auth,
            } => {
                let credentials = ClientCredentials {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scopes: scopes.clone(),
                    client_auth: *client_auth,
                };
                TokenSource::new(name, &credentials, http.clone(), timeout, metrics)
                    .map(|source| OutboundAuth::OAuth(Box::new(source)))
                    .map_err(|msg| problems.push(Problem::new(paths.path("auth.token_url"), msg)))
                    .ok()
            }
        };
        let (Some(base), Some(auth)) = (base, auth) else {
            return Err(problems);
        };
        let gauge = metrics.circuit_breaker_state.with_label_values(&[name]);
        Ok(Self {
            name: Arc::from(name),
            base,
            timeout,
            retry: settings.retry,
            idempotent: settings.idempotent,
            auth,
            breaker: CircuitBreaker::new(&settings.circuit_breaker, Some(gauge)),
            http,
            metrics: UpstreamMetrics::new(name, metrics),
            settings: settings.clone(),
        })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The upstream's name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The base URL every path is appended to (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base.raw
    }

    /// The breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The per-attempt timeout.
    pub fn attempt_timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether requests carry OAuth2 client-credentials tokens.
    pub fn uses_oauth(&self) -> bool {
        matches!(self.auth, OutboundAuth::OAuth(_))
    }

    /// Whether the gateway can authenticate to this upstream now: for OAuth2, a token can be
    /// had (cached or fetched); other kinds always can.
    ///
    /// # Errors
    /// The token fetch failure.
    pub async fn check_credentials(&self, deadline: Instant) -> Result<(), UpstreamError> {
        match &self.auth {
            OutboundAuth::OAuth(source) => source.authorization(deadline).await.map(|_| ()),
            OutboundAuth::None | OutboundAuth::Static(..) => Ok(()),
        }
    }

    /// One logical call: auth injection → retry (within `deadline`) → breaker → per-attempt
    /// timeout → transport. `Ok` for any 2xx.
    ///
    /// # Errors
    /// - [`UpstreamError::Status`]: a non-2xx answer that is not retried;
    /// - [`UpstreamError::CircuitOpen`]: the breaker is open, also when it opened during this
    ///   call (on any of its attempts, the last one included);
    /// - [`UpstreamError::Unavailable`]: retryable failures (of the upstream or of its token
    ///   endpoint) until attempts ran out, a `Retry-After` above `max_retry_after_s`, or a next
    ///   wait that would not end before `deadline` (answered at once, with that wait);
    /// - [`UpstreamError::Timeout`]: the deadline passed, or cut the attempt in flight;
    /// - [`UpstreamError::TokenFetch`]: the token endpoint refused the credentials or gave no
    ///   usable token (not retried).
    pub async fn call(
        &self,
        req: UpstreamRequest,
        deadline: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call_traced(req, deadline, &mut CallTrace::default())
            .await
    }

    /// [`Self::call`], recording in `trace` how many attempts it made and the last status the
    /// upstream answered (for logs, audit records and the action test).
    ///
    /// # Errors
    /// As [`Self::call`].
    pub async fn call_traced(
        &self,
        req: UpstreamRequest,
        deadline: Instant,
        trace: &mut CallTrace,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let UpstreamRequest {
            method,
            path_and_query,
            mut headers,
            body,
        } = req;
        let uri = self.base.join(path_and_query)?;
        if let Some(id) = RequestId::current() {
            headers.insert(CORRELATION_HEADER, id.header_value());
        }
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        }
        if !headers.contains_key(header::HOST)
            && let Some(host) = &self.base.host
        {
            headers.insert(header::HOST, host.clone());
        }
        if let OutboundAuth::Static(name, value) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        let retry_unsure = retry::retry_unsure(&method, self.idempotent);
        let mut outgoing = Outgoing {
            method,
            uri,
            headers,
            body,
            spent: false,
        };
        let oauth = matches!(self.auth, OutboundAuth::OAuth(_));
        let mut attempt: u32 = 0;
        let mut replayed_unauthorized = false;
        loop {
            attempt += 1;
            let now = Instant::now();
            if now >= deadline {
                return Err(UpstreamError::Timeout);
            }
            let permit = self
                .breaker
                .try_acquire(now)
                .map_err(|r| UpstreamError::CircuitOpen {
                    retry_after: r.remaining,
                })?;
            trace.attempts = attempt;
            let sequel = if attempt < self.retry.max_attempts || (oauth && !replayed_unauthorized) {
                Sequel::Possible
            } else {
                Sequel::Impossible
            };
            let failure = match self
                .attempt(
                    permit,
                    &mut outgoing,
                    sequel,
                    replayed_unauthorized,
                    deadline,
                )
                .await
            {
                Step::Done(result) => {
                    match &result {
                        Ok(response) => trace.last_status = Some(response.status),
                        Err(UpstreamError::Status { status, .. }) => {
                            trace.last_status = Some(*status);
                        }
                        Err(_) => {}
                    }
                    return result;
                }
                Step::Replay => {
                    // Not an attempt: the same attempt again with a fresh token.
                    replayed_unauthorized = true;
                    attempt -= 1;
                    continue;
                }
                Step::Retry(failure) => failure,
            };
            if let LastFailure::Status(status) = failure.last {
                trace.last_status = Some(status);
            }
            let now = Instant::now();
            let wait = self.next_wait(&failure, attempt, retry_unsure, now, deadline)?;
            self.metrics.retry(failure.reason);
            tracing::debug!(
                upstream = %self.name,
                attempt,
                reason = failure.reason.label(),
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep_until(now + wait).await;
        }
    }

    /// One attempt under `permit`: a token (OAuth), then the exchange. Reports the outcome to
    /// the breaker: a failure for a connection error, an attempt timeout, a 429/5xx or a
    /// transient token endpoint failure; neutral when the caller's deadline cut it or the
    /// token endpoint refused the credentials; a success otherwise.
    async fn attempt(
        &self,
        permit: Permit<'_>,
        outgoing: &mut Outgoing,
        sequel: Sequel,
        replayed_unauthorized: bool,
        deadline: Instant,
    ) -> Step {
        let token = match &self.auth {
            OutboundAuth::OAuth(source) => match source.authorization(deadline).await {
                Ok(token) => Some(token),
                Err(UpstreamError::TokenFetch {
                    failure,
                    retry_after,
                    ..
                }) if failure.is_transient() => {
                    permit.failure(Instant::now());
                    return Step::Retry(Failure {
                        last: LastFailure::Token(failure),
                        reason: RetryReason::Token,
                        unprocessed: true,
                        retry_after,
                        response: None,
                        deadline_cut: false,
                    });
                }
                Err(err) => {
                    drop(permit);
                    return Step::Done(Err(err));
                }
            },
            OutboundAuth::None | OutboundAuth::Static(..) => None,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            drop(permit);
            return Step::Done(Err(UpstreamError::Timeout));
        }
        let deadline_cut = remaining < self.timeout;
        let budget = remaining.min(self.timeout);
        let request = outgoing.request(token.clone(), sequel);
        let outcome = self.http.send(request, budget).await;
        let now = Instant::now();
        let failure = match outcome {
            Ok(response) => {
                let status = response.status;
                self.metrics.status(status);
                if status.is_success() {
                    permit.success();
                    return Step::Done(Ok(response));
                }
                if status == StatusCode::UNAUTHORIZED
                    && !replayed_unauthorized
                    && let (OutboundAuth::OAuth(source), Some(token)) = (&self.auth, &token)
                {
                    permit.success();
                    source.invalidate(token);
                    self.metrics.retry(RetryReason::Unauthorized);
                    tracing::debug!(upstream = %self.name, "401: refreshing the token and replaying");
                    return Step::Replay;
                }
                let verdict =
                    classify_answer(status, &response.headers, RetryableStatuses::Transient);
                permit.report(verdict.breaker, now);
                let Some(reason) = verdict.retry else {
                    return Step::Done(Err(UpstreamError::Status {
                        status,
                        retry_after: retry::retry_after(&response.headers),
                        body: response.body,
                    }));
                };
                Failure {
                    last: LastFailure::Status(status),
                    reason,
                    retry_after: verdict.retry_after,
                    unprocessed: verdict.unprocessed,
                    response: Some(response),
                    deadline_cut: false,
                }
            }
            Err(err) => {
                let verdict = classify_transport(&err);
                let timeout = matches!(err, TransportError::Timeout);
                if timeout && deadline_cut {
                    // The caller's deadline, not the upstream, ended it: neutral.
                    drop(permit);
                } else {
                    permit.report(verdict.breaker, now);
                }
                if timeout {
                    self.metrics.timeout.inc();
                } else {
                    self.metrics.error.inc();
                }
                if matches!(err, TransportError::Connect(_) | TransportError::Network(_)) {
                    tracing::debug!(upstream = %self.name, error = %err, "attempt failed");
                }
                let last = match err {
                    TransportError::Refused(addr) => {
                        return Step::Done(Err(UpstreamError::Refused(addr)));
                    }
                    TransportError::ResponseTooLarge { limit } => {
                        return Step::Done(Err(UpstreamError::ResponseTooLarge { limit }));
                    }
                    TransportError::Timeout => LastFailure::Timeout,
                    TransportError::Connect(_) => LastFailure::Connect,
                    TransportError::Network(_) => LastFailure::Network,
                };
                let Some(reason) = verdict.retry else {
                    // Every transport failure that got here is retryable (see `classify`).
                    return Step::Done(Err(UpstreamError::Unavailable {
                        retry_after: None,
                        last,
                    }));
                };
                Failure {
                    last,
                    reason,
                    retry_after: None,
                    unprocessed: verdict.unprocessed,
                    response: None,
                    deadline_cut: timeout && deadline_cut,
                }
            }
        };
        Step::Retry(failure)
    }

    /// After a failed attempt: how long to wait before the next one, or how the call ends.
    /// In this order: the deadline passed or cut the attempt → `Timeout`; an answer that may
    /// have been processed is handed back as it is; an open breaker (opened by this attempt or
    /// another call) → `CircuitOpen`; then `Unavailable` when the request may have been
    /// processed, the upstream asks for too long a wait, attempts ran out, or the wait does not
    /// end before the deadline (with that wait as `retry_after`: the caller learns at once).
    fn next_wait(
        &self,
        failure: &Failure,
        attempt: u32,
        retry_unsure: bool,
        now: Instant,
        deadline: Instant,
    ) -> Result<Duration, UpstreamError> {
        if failure.deadline_cut || now >= deadline {
            return Err(UpstreamError::Timeout);
        }
        let maybe_processed = !(retry_unsure || failure.unprocessed);
        if maybe_processed && let Some(response) = &failure.response {
            // The request may have been processed: hand back what happened.
            return Err(UpstreamError::Status {
                status: response.status,
                retry_after: failure.retry_after,
                body: response.body.clone(),
            });
        }
        if let Some(remaining) = self.breaker.open_remaining(now) {
            return Err(UpstreamError::CircuitOpen {
                retry_after: remaining,
            });
        }
        let unavailable = |retry_after| UpstreamError::Unavailable {
            retry_after,
            last: failure.last,
        };
        if maybe_processed {
            return Err(unavailable(failure.retry_after));
        }
        if let Some(asked) = failure.retry_after
            && asked > Duration::from_secs(self.retry.max_retry_after_s)
        {
            return Err(unavailable(Some(asked)));
        }
        if attempt >= self.retry.max_attempts {
            return Err(unavailable(failure.retry_after));
        }
        let wait = failure
            .retry_after
            .unwrap_or_else(|| retry::backoff(&self.retry, attempt));
        if now + wait >= deadline {
            return Err(unavailable(Some(wait)));
        }
        Ok(wait)
    }
}

/// What one call did besides its result (see [`Upstream::call_traced`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallTrace {
    /// Attempts made (a token endpoint failure counts as one; the replay after a 401 does not).
    pub attempts: u32,
    /// The last status the upstream answered, if it answered at all.
    pub last_status: Option<StatusCode>,
}

/// Whether another attempt may follow the one about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequel {
    /// Attempts remain, or a 401 may still be replayed: the request is copied for this attempt.
    Possible,
    /// This is the last attempt that can be made: the request is moved into it.
    Impossible,
}

/// How one attempt ended.
enum Step {
    /// The call ends with this.
    Done(Result<UpstreamResponse, UpstreamError>),
    /// The upstream answered 401 to an OAuth token: replay once with a fresh token.
    Replay,
    /// A retryable failure.
    Retry(Failure),
}

/// The request of one call, sent attempt after attempt. The caller's header map (with the
/// correlation id, user agent and static auth already in it) is copied only for an attempt that
/// another may follow, and moved into the last attempt that can be made: a call whose first
/// attempt is its last (`max_attempts = 1`, no OAuth replay pending) copies nothing. hyper takes
/// the request by value, so an attempt that may be retried cannot avoid its copy.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Moved into an attempt already (nothing may be sent again).
    spent: bool,
}

impl Outgoing {
    /// The request of one attempt, with `authorization` (an OAuth token) set.
    fn request(
        &mut self,
        authorization: Option<HeaderValue>,
        sequel: Sequel,
    ) -> http::Request<Bytes> {
        debug_assert!(!self.spent, "no attempt after the last one");
        if let Some(token) = authorization {
            // Into the kept map: the copy then has room for it already.
            self.headers.insert(header::AUTHORIZATION, token);
        }
        match sequel {
            Sequel::Possible => {
                let mut request = http::Request::new(self.body.clone());
                *request.method_mut() = self.method.clone();
                *request.uri_mut() = self.uri.clone();
                *request.headers_mut() = self.headers.clone();
                request
            }
            Sequel::Impossible => {
                self.spent = true;
                let mut request = http::Request::new(std::mem::take(&mut self.body));
                *request.method_mut() = std::mem::take(&mut self.method);
                *request.uri_mut() = std::mem::take(&mut self.uri);
                *request.headers_mut() = std::mem::take(&mut self.headers);
                request
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_join_paths() {
        let b = BaseUrl::parse("https://crm.example.com/api/").unwrap();
        assert_eq!(
            b.join("/orders/1?x=y".to_owned()).unwrap(),
            "https://crm.example.com/api/orders/1?x=y"
        );
        let b = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            b.join("/a".to_owned()).unwrap().to_string(),
            "http://127.0.0.1:8080/a"
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("https://x/a?b=c").is_err());
        assert!(b.join("/a b".to_owned()).is_err());
    }

    #[test]
    fn base_urls_make_their_host_header_once_without_the_default_port() {
        let host = |raw: &str| BaseUrl::parse(raw).unwrap().host.unwrap();
        assert_eq!(host("http://127.0.0.1:8080/api"), "127.0.0.1:8080");
        assert_eq!(host("https://crm.example.com:443/"), "crm.example.com");
        assert_eq!(host("http://crm.example.com:80"), "crm.example.com");
        assert_eq!(host("https://crm.example.com:8443"), "crm.example.com:8443");
        assert_eq!(host("https://crm.example.com"), "crm.example.com");
    }
}
