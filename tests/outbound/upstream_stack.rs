//! The outbound stack against small local axum servers: OAuth2 token cache, retries, circuit
//! breaker, deadlines, correlation id and the mapping of failures to the error body.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use genesys_gateway::config::{
    CircuitBreakerSettings, ClientAuthMethod, RetrySettings, Settings, UpstreamAuthSettings,
    UpstreamSettings,
};
use genesys_gateway::error::{ApiError, ErrorCode};
use genesys_gateway::genesys::GenesysEndpoints;
use genesys_gateway::telemetry::{Metrics, RequestId};
use genesys_gateway::upstream::{
    BreakerState, LastFailure, TokenFetchFailure, Upstream, UpstreamError, UpstreamRequest,
    Upstreams,
};
use http::{HeaderMap, Method, StatusCode};
use secrecy::SecretString;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// A scripted upstream with an OAuth token endpoint.

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: format!(r#"{{"status":{status}}}"#),
            delay: Duration::ZERO,
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone, Debug)]
struct Hit {
    method: Method,
    path: String,
    headers: HeaderMap,
    at: std::time::Instant,
}

#[derive(Default)]
struct MockInner {
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    hits: Mutex<Vec<Hit>>,
    token_fetches: AtomicUsize,
    token_expires_in: AtomicU64,
    token_delay_ms: AtomicU64,
    token_requests: Mutex<Vec<(HeaderMap, String)>>,
    /// When each token request arrived (on the test's clock, which may be paused).
    token_at: Mutex<Vec<Instant>>,
    /// The token endpoint's next answers instead of a token, in order; then `token_fallback`.
    token_script: Mutex<VecDeque<Reply>>,
    /// The token endpoint's answer once its script is done (`None`: a token).
    token_fallback: Mutex<Option<Reply>>,
    /// Tokens the API answers 401 to.
    rejected_tokens: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Mock {
    base: String,
    inner: Arc<MockInner>,
}

impl Mock {
    async fn start() -> Self {
        let inner = Arc::new(MockInner::default());
        inner.token_expires_in.store(3600, Ordering::SeqCst);
        let app = Router::new()
            .route("/oauth/token", post(token))
            .fallback(api)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{addr}"),
            inner,
        }
    }

    /// The next answers, in order; then [`Mock::always`] (default 200).
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    fn always(&self, reply: Reply) {
        *self.inner.fallback.lock().unwrap() = Some(reply);
    }

    fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().unwrap().clone()
    }

    fn token_fetches(&self) -> usize {
        self.inner.token_fetches.load(Ordering::SeqCst)
    }

    /// The token endpoint's next answers, in order (then tokens again).
    fn token_script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.token_script.lock().unwrap().extend(replies);
    }

    /// The token endpoint answers this from now on.
    fn token_always(&self, reply: Reply) {
        *self.inner.token_fallback.lock().unwrap() = Some(reply);
    }
}

/// A scripted answer as a response.
async fn reply(reply: Reply) -> Response {
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

async fn token(State(inner): State<Arc<MockInner>>, request: Request) -> Response {
    let n = inner.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    inner.token_at.lock().unwrap().push(Instant::now());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    inner
        .token_requests
        .lock()
        .unwrap()
        .push((parts.headers, String::from_utf8_lossy(&body).into_owned()));
    let scripted = inner
        .token_script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.token_fallback.lock().unwrap().clone());
    if let Some(scripted) = scripted {
        return reply(scripted).await;
    }
    let delay = inner.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    axum::Json(serde_json::json!({
        "access_token": format!("tok-{n}"),
        "token_type": "bearer",
        "expires_in": inner.token_expires_in.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn api(State(inner): State<Arc<MockInner>>, request: Request) -> Response {
    inner.hits.lock().unwrap().push(Hit {
        method: request.method().clone(),
        path: request.uri().to_string(),
        headers: request.headers().clone(),
        at: std::time::Instant::now(),
    });
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if inner
        .rejected_tokens
        .lock()
        .unwrap()
        .iter()
        .any(|t| auth == format!("Bearer {t}"))
    {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let next = inner.script.lock().unwrap().pop_front().unwrap_or_else(|| {
        inner
            .fallback
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Reply::status(200))
    });
    reply(next).await
}

// ---------------------------------------------------------------------------------------------
// Building upstreams.

fn settings_for(base: &str) -> UpstreamSettings {
    UpstreamSettings {
        base_url: format!("{base}/api"),
        timeout_ms: 2000,
        auth: UpstreamAuthSettings::None,
        retry: RetrySettings {
            max_attempts: 3,
            base_delay_ms: 5,
            max_delay_ms: 20,
            max_retry_after_s: 180,
        },
        circuit_breaker: CircuitBreakerSettings {
            failure_threshold: 100,
            open_ms: 30_000,
        },
        idempotent: false,
    }
}

fn oauth(base: &str) -> UpstreamAuthSettings {
    UpstreamAuthSettings::Oauth2ClientCredentials {
        token_url: format!("{base}/oauth/token"),
        client_id: "gw".to_owned(),
        client_secret: SecretString::from("s3cret-value"),
        scopes: vec!["orders:read".to_owned(), "orders:write".to_owned()],
        client_auth: ClientAuthMethod::Basic,
    }
}

struct Built {
    upstreams: Upstreams,
    metrics: Arc<Metrics>,
}

impl Built {
    fn crm(&self) -> &Arc<Upstream> {
        self.upstreams.get("crm").expect("crm upstream")
    }
    fn requests(&self, status: &str) -> u64 {
        self.metrics
            .upstream_requests_total
            .with_label_values(&["crm", status])
            .get()
    }
    fn retries(&self, reason: &str) -> u64 {
        self.metrics
            .upstream_retries_total
            .with_label_values(&["crm", reason])
            .get()
    }
}

fn build(upstream: UpstreamSettings) -> Built {
    let mut settings = Settings::default();
    settings.server.io_threads = 1;
    settings.upstreams.insert("crm".to_owned(), upstream);
    let metrics = Arc::new(Metrics::new());
    let endpoints = GenesysEndpoints {
        api_url: "http://127.0.0.1:9".to_owned(),
        login_url: "http://127.0.0.1:9".to_owned(),
    };
    let upstreams =
        genesys_gateway::genesys::build_upstreams(&settings, &endpoints, metrics.clone())
            .expect("builds");
    Built { upstreams, metrics }
}

fn get(path: &str) -> UpstreamRequest {
    UpstreamRequest::new(Method::GET, path)
}

fn post_json(path: &str) -> UpstreamRequest {
    UpstreamRequest::new(Method::POST, path).json(r#"{"a":1}"#)
}

fn in_secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// OAuth2 client credentials.

#[tokio::test]
async fn hundred_concurrent_first_calls_fetch_one_token() {
    let mock = Mock::start().await;
    mock.inner.token_delay_ms.store(100, Ordering::SeqCst);
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let crm = built.crm().clone();

    let calls = (0..100).map(|i| {
        let crm = crm.clone();
        tokio::spawn(async move { crm.call(get(&format!("/orders/{i}")), in_secs(10)).await })
    });
    for result in futures_util::future::join_all(calls).await {
        let response = result.unwrap().expect("call succeeds");
        assert_eq!(response.status, StatusCode::OK);
    }

    assert_eq!(mock.token_fetches(), 1, "exactly one token request");
    let hits = mock.hits();
    assert_eq!(hits.len(), 100);
    assert!(
        hits.iter()
            .all(|h| h.headers.get("authorization").unwrap() == "Bearer tok-1")
    );
    let (headers, body) = mock.inner.token_requests.lock().unwrap()[0].clone();
    // Basic gw:s3cret-value
    assert_eq!(
        headers.get("authorization").unwrap(),
        "Basic Z3c6czNjcmV0LXZhbHVl"
    );
    assert!(body.contains("grant_type=client_credentials"), "{body}");
    assert!(
        body.contains("scope=orders%3Aread+orders%3Awrite"),
        "{body}"
    );
    assert!(!body.contains("s3cret"), "secret only in the Basic header");
    assert_eq!(
        built
            .metrics
            .oauth_token_fetches_total
            .with_label_values(&["crm", "success"])
            .get(),
        1
    );
}

#[tokio::test]
async fn client_auth_body_sends_credentials_in_the_form() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = UpstreamAuthSettings::Oauth2ClientCredentials {
        token_url: format!("{}/oauth/token", mock.base),
        client_id: "gw".to_owned(),
        client_secret: SecretString::from("s3cret"),
        scopes: Vec::new(),
        client_auth: ClientAuthMethod::Body,
    };
    let built = build(s);
    built.crm().call(get("/x"), in_secs(5)).await.unwrap();
    let (headers, body) = mock.inner.token_requests.lock().unwrap()[0].clone();
    assert!(headers.get("authorization").is_none());
    assert!(body.contains("client_id=gw") && body.contains("client_secret=s3cret"));
    assert!(
        !body.contains("scope="),
        "no scopes, no scope field: {body}"
    );
}

#[tokio::test]
async fn an_expired_token_is_fetched_again_once() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let crm = built.crm();

    crm.call(get("/a"), in_secs(5)).await.unwrap();
    crm.call(get("/a"), in_secs(5)).await.unwrap();
    assert_eq!(mock.token_fetches(), 1, "cached");

    // 3600 s token: refreshed 60 s before it expires.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3541)).await;
    tokio::time::resume();

    let calls = (0..10).map(|_| crm.call(get("/a"), in_secs(5)));
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(mock.token_fetches(), 2, "one refetch for all callers");
    let last = mock.hits().last().unwrap().headers.clone();
    assert_eq!(last.get("authorization").unwrap(), "Bearer tok-2");
}

#[tokio::test]
async fn a_401_refetches_once_and_replays_once() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let crm = built.crm();

    crm.call(get("/a"), in_secs(5)).await.unwrap();
    // The upstream revokes tok-1.
    mock.inner
        .rejected_tokens
        .lock()
        .unwrap()
        .push("tok-1".to_owned());
    let response = crm.call(get("/b"), in_secs(5)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(mock.token_fetches(), 2);
    let hits = mock.hits();
    assert_eq!(hits.len(), 3, "first call, 401, replay");
    assert_eq!(
        hits[2].headers.get("authorization").unwrap(),
        "Bearer tok-2"
    );
    assert_eq!(built.retries("unauthorized"), 1);

    // A token that is refused again right after the refetch: one refetch, one replay, then 401.
    mock.inner
        .rejected_tokens
        .lock()
        .unwrap()
        .extend(["tok-2".to_owned(), "tok-3".to_owned()]);
    let err = crm.call(get("/c"), in_secs(5)).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Status { status, .. } if status == StatusCode::UNAUTHORIZED),
        "{err:?}"
    );
    assert_eq!(mock.token_fetches(), 3);
    assert_eq!(mock.hits().len(), 5);
}

#[tokio::test]
async fn token_endpoint_failures_name_the_upstream_not_the_secret() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = UpstreamAuthSettings::Oauth2ClientCredentials {
        token_url: format!("{}/no-such-token-endpoint", mock.base),
        client_id: "gw".to_owned(),
        client_secret: SecretString::from("s3cret-value"),
        scopes: Vec::new(),
        client_auth: ClientAuthMethod::Body,
    };
    // The token URL hits the fallback handler, which answers 401: bad credentials.
    mock.always(Reply::status(401));
    let built = build(s);
    let err = built.crm().call(get("/a"), in_secs(5)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, UpstreamError::TokenFetch { ref upstream, .. } if upstream == "crm"),
        "{err:?}"
    );
    assert!(text.contains("crm") && !text.contains("s3cret"), "{text}");
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::UpstreamError);
    assert_eq!(
        built
            .metrics
            .oauth_token_fetches_total
            .with_label_values(&["crm", "error"])
            .get(),
        1
    );
}

#[tokio::test]
async fn bad_credentials_at_the_token_endpoint_are_not_retried() {
    for status in [400, 401, 403] {
        let mock = Mock::start().await;
        mock.token_always(Reply::status(status).body(r#"{"error":"invalid_client"}"#));
        let mut s = settings_for(&mock.base);
        s.auth = oauth(&mock.base);
        let built = build(s);
        let err = built.crm().call(get("/a"), in_secs(5)).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::TokenFetch { ref upstream, .. } if upstream == "crm"),
            "{status}: {err:?}"
        );
        assert_eq!(mock.token_fetches(), 1, "{status}: not retried");
        assert!(mock.hits().is_empty());
        let api: ApiError = err.into();
        assert_eq!(api.status(), StatusCode::BAD_GATEWAY, "{status}");
        assert_eq!(api.code(), ErrorCode::UpstreamError);
        assert!(!api.message().contains("s3cret"));
        assert_eq!(built.crm().breaker_state(), BreakerState::Closed);
    }
}

/// Paused clock: the waits pass at once; the mock's timestamps are on the same clock.
#[tokio::test(start_paused = true)]
async fn a_token_endpoint_429_is_retried_after_its_retry_after() {
    let mock = Mock::start().await;
    mock.token_script([Reply::status(429).header("retry-after", "30")]);
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let response = built.crm().call(get("/a"), in_secs(60)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(mock.token_fetches(), 2);
    let at = mock.inner.token_at.lock().unwrap().clone();
    assert!(
        at[1] - at[0] >= Duration::from_secs(30),
        "the token endpoint's Retry-After is honoured: {:?}",
        at[1] - at[0]
    );
    assert_eq!(built.retries("token"), 1);
    assert_eq!(mock.hits().len(), 1);
    assert_eq!(
        mock.hits()[0].headers.get("authorization").unwrap(),
        "Bearer tok-2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_endpoint_that_stays_unavailable_ends_in_503_with_its_retry_after() {
    let mock = Mock::start().await;
    mock.token_always(Reply::status(503).header("retry-after", "2"));
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let err = built.crm().call(get("/a"), in_secs(60)).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert_eq!(mock.token_fetches(), 3, "max_attempts token fetches");
    assert_eq!(built.retries("token"), 2);
    assert!(mock.hits().is_empty(), "no request without a token");
    let api: ApiError = err.into();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
    assert_eq!(api.retry_after_s(), Some(2));
    assert!(!api.message().contains("s3cret"));
}

#[tokio::test(start_paused = true)]
async fn no_caller_fetches_a_token_before_the_token_endpoints_retry_after() {
    let mock = Mock::start().await;
    mock.token_script([Reply::status(429).header("retry-after", "30")]);
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    s.retry.max_attempts = 1;
    let built = build(s);
    let crm = built.crm();
    for _ in 0..3 {
        let err = crm.call(get("/a"), in_secs(60)).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Unavailable { retry_after: Some(d), .. } if d <= Duration::from_secs(30) && d > Duration::from_secs(29)),
            "{err:?}"
        );
    }
    assert_eq!(
        mock.token_fetches(),
        1,
        "the Retry-After holds for every caller"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    crm.call(get("/a"), in_secs(60)).await.unwrap();
    assert_eq!(mock.token_fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_token_endpoint_is_retried_then_unavailable() {
    let mock = Mock::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&format!("http://{closed}"));
    let built = build(s);
    let err = built.crm().call(get("/a"), in_secs(60)).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Unavailable {
                retry_after: None,
                last: LastFailure::Token(TokenFetchFailure::Unreachable)
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        built
            .metrics
            .oauth_token_fetches_total
            .with_label_values(&["crm", "error"])
            .get(),
        3
    );
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
    assert_eq!(api.retry_after_s(), None);
}

#[tokio::test(start_paused = true)]
async fn token_endpoint_failures_count_for_the_breaker() {
    let mock = Mock::start().await;
    mock.token_always(Reply::status(429).header("retry-after", "0"));
    let mut s = breaker_settings(&mock.base, 2, 60_000, 1);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let crm = built.crm();
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err:?}");
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(crm.breaker_state(), BreakerState::Open);
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(mock.token_fetches(), 2, "rejected without fetching");
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn retry_after_is_honoured() {
    let mock = Mock::start().await;
    mock.script([Reply::status(429).header("retry-after", "2")]);
    let built = build(settings_for(&mock.base));
    let response = built.crm().call(get("/a"), in_secs(10)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let hits = mock.hits();
    assert_eq!(hits.len(), 2);
    let waited = hits[1].at - hits[0].at;
    assert!(waited >= Duration::from_millis(1950), "waited {waited:?}");
    assert_eq!(built.retries("status_429"), 1);
    assert_eq!(built.requests("429"), 1);
    assert_eq!(built.requests("200"), 1);
}

#[tokio::test]
async fn retry_after_longer_than_allowed_is_not_waited_for() {
    let mock = Mock::start().await;
    mock.always(Reply::status(429).header("retry-after", "600"));
    let built = build(settings_for(&mock.base));
    let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(600)),
        "{err:?}"
    );
    assert_eq!(mock.hits().len(), 1);
    let api: ApiError = err.into();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
    assert_eq!(api.retry_after_s(), Some(600));
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let mock = Mock::start().await;
    mock.script([Reply::status(503), Reply::status(503)]);
    let built = build(settings_for(&mock.base));
    let response = built.crm().call(get("/a"), in_secs(10)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(mock.hits().len(), 3);
    assert_eq!(built.retries("status_503"), 2);
    assert_eq!(built.requests("503"), 2);
}

#[tokio::test]
async fn attempts_run_out_into_unavailable() {
    let mock = Mock::start().await;
    mock.always(Reply::status(502));
    let built = build(settings_for(&mock.base));
    let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err:?}");
    assert_eq!(mock.hits().len(), 3, "max_attempts counts the first");
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mock = Mock::start().await;
    mock.always(Reply::status(400).body(r#"{"secret":"upstream detail"}"#));
    let built = build(settings_for(&mock.base));
    let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    match &err {
        UpstreamError::Status { status, body, .. } => {
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert_eq!(&body[..], br#"{"secret":"upstream detail"}"#);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.hits().len(), 1);
    let api: ApiError = err.into();
    assert_eq!(api.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(api.code(), ErrorCode::UpstreamError);
    assert!(api.message().contains("400"), "{}", api.message());
    assert!(!api.message().contains("upstream detail"));
}

#[tokio::test]
async fn server_errors_500_and_501_are_not_retried() {
    let mock = Mock::start().await;
    mock.script([Reply::status(500), Reply::status(501)]);
    let built = build(settings_for(&mock.base));
    for expected in [500, 501] {
        let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(expected));
    }
    assert_eq!(mock.hits().len(), 2);
}

#[tokio::test]
async fn non_idempotent_post_is_retried_only_when_certainly_unprocessed() {
    let mock = Mock::start().await;
    let built = build(settings_for(&mock.base));

    mock.script([Reply::status(502)]);
    let err = built
        .crm()
        .call(post_json("/orders"), in_secs(10))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY), "{err:?}");
    assert_eq!(mock.hits().len(), 1, "502 to a POST is not retried");

    mock.script([
        Reply::status(503),
        Reply::status(429).header("retry-after", "0"),
    ]);
    let response = built
        .crm()
        .call(post_json("/orders"), in_secs(10))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(mock.hits().len(), 4, "503 and 429 are retried");
    assert!(mock.hits().iter().all(|h| h.method == Method::POST));

    // Connection refused: certainly not sent, retried even for a POST.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = build(settings_for(&format!("http://{closed}")));
    let err = dead
        .crm()
        .call(post_json("/orders"), in_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err:?}");
    assert_eq!(dead.retries("connect"), 2);
    assert_eq!(dead.requests("error"), 3);
}

#[tokio::test]
async fn idempotent_upstream_retries_posts_on_502() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.idempotent = true;
    let built = build(s);
    mock.script([Reply::status(502)]);
    let response = built
        .crm()
        .call(post_json("/orders"), in_secs(10))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(mock.hits().len(), 2);
}

#[tokio::test]
async fn attempt_timeouts_are_retried_for_gets() {
    let mock = Mock::start().await;
    mock.script([Reply::status(200).delay(Duration::from_millis(500))]);
    let mut s = settings_for(&mock.base);
    s.timeout_ms = 100;
    let built = build(s);
    let response = built.crm().call(get("/a"), in_secs(10)).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(built.requests("timeout"), 1);
    assert_eq!(built.retries("timeout"), 1);
}

// ---------------------------------------------------------------------------------------------
// Deadlines.

#[tokio::test]
async fn a_wait_that_does_not_fit_before_the_deadline_ends_the_call_unavailable_at_once() {
    let mock = Mock::start().await;
    mock.always(Reply::status(429).header("retry-after", "5"));
    let built = build(settings_for(&mock.base));
    let deadline = Instant::now() + Duration::from_secs(2);
    let err = built.crm().call(get("/a"), deadline).await.unwrap_err();
    assert!(
        Instant::now() < deadline,
        "answered at once, without waiting for the deadline"
    );
    assert!(
        matches!(err, UpstreamError::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(5)),
        "{err:?}"
    );
    assert_eq!(mock.hits().len(), 1);
    let api: ApiError = err.into();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
    assert_eq!(api.retry_after_s(), Some(5), "the wait that was asked for");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_slow_attempt_without_counting_a_breaker_failure() {
    let mock = Mock::start().await;
    mock.always(Reply::status(200).delay(Duration::from_secs(5)));
    let mut s = breaker_settings(&mock.base, 1, 60_000, 3);
    s.timeout_ms = 2000;
    let built = build(s);
    let err = built
        .crm()
        .call(get("/a"), Instant::now() + Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout), "{err:?}");
    assert_eq!(mock.hits().len(), 1);
    assert_eq!(
        built.crm().breaker_state(),
        BreakerState::Closed,
        "a tight caller deadline is not the upstream's failure"
    );

    // The upstream's own attempt timeout is a failure.
    let mut s = breaker_settings(&mock.base, 1, 60_000, 3);
    s.timeout_ms = 100;
    let slow = build(s);
    let err = slow.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(slow.crm().breaker_state(), BreakerState::Open);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker.

fn breaker_settings(base: &str, threshold: u32, open_ms: u64, attempts: u32) -> UpstreamSettings {
    let mut s = settings_for(base);
    s.circuit_breaker = CircuitBreakerSettings {
        failure_threshold: threshold,
        open_ms,
    };
    s.retry.max_attempts = attempts;
    s
}

#[tokio::test]
async fn breaker_opens_at_threshold_and_rejects_without_calling() {
    let mock = Mock::start().await;
    mock.always(Reply::status(500));
    let built = build(breaker_settings(&mock.base, 3, 60_000, 1));
    let crm = built.crm();
    for _ in 0..3 {
        let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
    assert_eq!(crm.breaker_state(), BreakerState::Open);
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    let UpstreamError::CircuitOpen { retry_after } = err else {
        panic!("{err:?}")
    };
    assert!(retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(55));
    assert_eq!(mock.hits().len(), 3, "rejected without calling");
    assert_eq!(
        built
            .metrics
            .circuit_breaker_state
            .with_label_values(&["crm"])
            .get(),
        2
    );
    let api: ApiError = UpstreamError::CircuitOpen { retry_after }.into();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code(), ErrorCode::CircuitOpen);
    assert_eq!(api.retry_after_s(), Some(60));
}

#[tokio::test]
async fn client_errors_do_not_count_as_breaker_failures() {
    let mock = Mock::start().await;
    mock.always(Reply::status(404));
    let built = build(breaker_settings(&mock.base, 2, 60_000, 1));
    for _ in 0..5 {
        let err = built.crm().call(get("/a"), in_secs(5)).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    }
    assert_eq!(built.crm().breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn half_open_lets_one_probe_through_under_concurrency_then_closes() {
    let mock = Mock::start().await;
    mock.script([Reply::status(503)]);
    let built = build(breaker_settings(&mock.base, 1, 1000, 1));
    let crm = built.crm();
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::CircuitOpen { .. }),
        "the breaker opened during the call: {err:?}"
    );
    assert_eq!(crm.breaker_state(), BreakerState::Open);

    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1000)).await;
    tokio::time::resume();

    mock.always(Reply::status(200).delay(Duration::from_millis(200)));
    let calls = (0..10).map(|_| crm.call(get("/probe"), in_secs(5)));
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let rejected = results
        .iter()
        .filter(|r| matches!(r, Err(UpstreamError::CircuitOpen { .. })))
        .count();
    assert_eq!((ok, rejected), (1, 9), "{results:?}");
    assert_eq!(mock.hits().len(), 2, "one probe reached the upstream");
    assert_eq!(crm.breaker_state(), BreakerState::Closed);
    assert_eq!(
        built
            .metrics
            .circuit_breaker_state
            .with_label_values(&["crm"])
            .get(),
        0
    );
    crm.call(get("/after"), in_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let mock = Mock::start().await;
    mock.always(Reply::status(503));
    let built = build(breaker_settings(&mock.base, 1, 1000, 1));
    let crm = built.crm();
    crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1000)).await;
    tokio::time::resume();
    crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert_eq!(crm.breaker_state(), BreakerState::Open);
    let err = crm.call(get("/a"), in_secs(5)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(mock.hits().len(), 2);
}

#[tokio::test]
async fn a_breaker_opening_on_the_last_attempt_ends_the_call_with_circuit_open() {
    let mock = Mock::start().await;
    mock.always(Reply::status(503));
    let built = build(breaker_settings(&mock.base, 3, 60_000, 3));
    let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    let UpstreamError::CircuitOpen { retry_after } = err else {
        panic!("{err:?}")
    };
    assert!(retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(55));
    assert_eq!(mock.hits().len(), 3);
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::CircuitOpen);
    assert_eq!(api.retry_after_s(), Some(60));
}

#[tokio::test]
async fn a_breaker_opening_during_retries_ends_the_call_with_circuit_open() {
    let mock = Mock::start().await;
    mock.always(Reply::status(503));
    let built = build(breaker_settings(&mock.base, 2, 60_000, 5));
    let err = built.crm().call(get("/a"), in_secs(10)).await.unwrap_err();
    assert!(matches!(err, UpstreamError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(mock.hits().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Headers, redirects, auth kinds, reload.

#[tokio::test]
async fn the_correlation_id_is_sent_on_calls_and_token_fetches() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let id = RequestId::from_headers(&{
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "corr-42".parse().unwrap());
        h
    });
    id.scope(built.crm().call(get("/orders/1?x=y"), in_secs(5)))
        .await
        .unwrap();
    let hit = &mock.hits()[0];
    assert_eq!(hit.path, "/api/orders/1?x=y");
    assert_eq!(hit.headers.get("inin-correlation-id").unwrap(), "corr-42");
    assert!(
        hit.headers
            .get("user-agent")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("genesys-gateway/")
    );
    let (token_headers, _) = mock.inner.token_requests.lock().unwrap()[0].clone();
    assert_eq!(token_headers.get("inin-correlation-id").unwrap(), "corr-42");
}

#[tokio::test]
async fn caller_headers_go_on_every_attempt_and_on_the_401_replay() {
    let mock = Mock::start().await;
    let mut s = settings_for(&mock.base);
    s.auth = oauth(&mock.base);
    let built = build(s);
    let with_header = |path: &str| {
        let mut r = get(path);
        r.headers.insert("x-flow", "f-1".parse().unwrap());
        r
    };
    mock.script([Reply::status(503), Reply::status(502)]);
    built
        .crm()
        .call(with_header("/a"), in_secs(10))
        .await
        .unwrap();
    // The last attempt may still be replayed after a 401 (the token is refreshed).
    mock.script([Reply::status(503), Reply::status(503), Reply::status(401)]);
    built
        .crm()
        .call(with_header("/b"), in_secs(10))
        .await
        .unwrap();
    let hits = mock.hits();
    assert_eq!(hits.len(), 7, "3 attempts, then 3 attempts and a replay");
    for hit in &hits {
        assert_eq!(hit.headers.get("x-flow").unwrap(), "f-1", "{}", hit.path);
        assert!(hit.headers.get("user-agent").is_some());
    }
    assert_eq!(
        hits[6].headers.get("authorization").unwrap(),
        "Bearer tok-2"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let mock = Mock::start().await;
    mock.always(Reply::status(302).header("location", "http://169.254.169.254/"));
    let built = build(settings_for(&mock.base));
    let err = built.crm().call(get("/a"), in_secs(5)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FOUND));
    assert_eq!(mock.hits().len(), 1);
}

#[tokio::test]
async fn static_auth_kinds_add_their_header() {
    let mock = Mock::start().await;
    let cases = [
        (
            UpstreamAuthSettings::ApiKey {
                header: "X-Api-Key".to_owned(),
                key: SecretString::from("k-1"),
            },
            "x-api-key",
            "k-1",
        ),
        (
            UpstreamAuthSettings::Basic {
                username: "u".to_owned(),
                password: SecretString::from("p"),
            },
            "authorization",
            "Basic dTpw",
        ),
        (
            UpstreamAuthSettings::Bearer {
                token: SecretString::from("t-1"),
            },
            "authorization",
            "Bearer t-1",
        ),
    ];
    for (i, (auth, header, value)) in cases.into_iter().enumerate() {
        let mut s = settings_for(&mock.base);
        s.auth = auth;
        let built = build(s);
        built.crm().call(get("/a"), in_secs(5)).await.unwrap();
        assert_eq!(mock.hits()[i].headers.get(header).unwrap(), value);
    }
    let built = build(settings_for(&mock.base));
    built.crm().call(get("/a"), in_secs(5)).await.unwrap();
    assert!(mock.hits()[3].headers.get("authorization").is_none());
}

#[tokio::test]
async fn rebuild_keeps_unchanged_upstreams_and_replaces_changed_ones() {
    let mock = Mock::start().await;
    let mut settings = Settings::default();
    settings.server.io_threads = 1;
    settings
        .upstreams
        .insert("crm".to_owned(), settings_for(&mock.base));
    settings
        .upstreams
        .insert("erp".to_owned(), settings_for(&mock.base));
    let endpoints = GenesysEndpoints {
        api_url: mock.base.clone(),
        login_url: mock.base.clone(),
    };
    let first =
        genesys_gateway::genesys::build_upstreams(&settings, &endpoints, Arc::new(Metrics::new()))
            .unwrap();
    assert_eq!(first.len(), 3, "crm, erp and the built-in genesys");
    assert_eq!(first.names(), ["crm", "erp", "genesys"]);

    settings.upstreams.get_mut("erp").unwrap().timeout_ms = 1234;
    let second =
        genesys_gateway::genesys::rebuild_upstreams(&first, &settings, &endpoints).unwrap();
    assert!(Arc::ptr_eq(
        first.get("crm").unwrap(),
        second.get("crm").unwrap()
    ));
    assert!(Arc::ptr_eq(
        first.get("genesys").unwrap(),
        second.get("genesys").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        first.get("erp").unwrap(),
        second.get("erp").unwrap()
    ));
    assert_eq!(
        second.get("erp").unwrap().attempt_timeout(),
        Duration::from_millis(1234)
    );

    settings.upstreams.get_mut("crm").unwrap().base_url = "ftp://nope".to_owned();
    let problems =
        genesys_gateway::genesys::rebuild_upstreams(&first, &settings, &endpoints).unwrap_err();
    assert_eq!(problems[0].path, "upstreams.crm.base_url");
}

#[tokio::test]
async fn the_genesys_upstream_uses_the_genesys_credentials() {
    let mock = Mock::start().await;
    let mut settings = Settings::default();
    settings.server.io_threads = 1;
    settings.genesys.client_id = Some("sim-client".to_owned());
    settings.genesys.client_secret = Some(SecretString::from("sim-secret"));
    let endpoints = GenesysEndpoints {
        api_url: mock.base.clone(),
        login_url: mock.base.clone(),
    };
    let upstreams =
        genesys_gateway::genesys::build_upstreams(&settings, &endpoints, Arc::new(Metrics::new()))
            .unwrap();
    let genesys = upstreams.get("genesys").unwrap();
    assert_eq!(genesys.name(), "genesys");
    genesys
        .call(get("/api/v2/users/u-1"), in_secs(5))
        .await
        .unwrap();
    let (headers, body) = mock.inner.token_requests.lock().unwrap()[0].clone();
    // Basic sim-client:sim-secret
    assert_eq!(
        headers.get("authorization").unwrap(),
        "Basic c2ltLWNsaWVudDpzaW0tc2VjcmV0"
    );
    assert_eq!(body, "grant_type=client_credentials");
    assert_eq!(mock.hits()[0].path, "/api/v2/users/u-1");
    assert_eq!(
        mock.hits()[0].headers.get("authorization").unwrap(),
        "Bearer tok-1"
    );
}

#[test]
fn every_failure_maps_to_the_spec_error() {
    let cases: Vec<(UpstreamError, u16, &str, Option<u64>)> = vec![
        (
            UpstreamError::Status {
                status: StatusCode::NOT_FOUND,
                retry_after: None,
                body: Bytes::from_static(b"secret body"),
            },
            502,
            "upstream.error",
            None,
        ),
        (
            UpstreamError::Unavailable {
                retry_after: Some(Duration::from_millis(1500)),
                last: genesys_gateway::upstream::LastFailure::Connect,
            },
            503,
            "upstream.unavailable",
            Some(2),
        ),
        (
            UpstreamError::Unavailable {
                retry_after: None,
                last: genesys_gateway::upstream::LastFailure::Timeout,
            },
            503,
            "upstream.unavailable",
            None,
        ),
        (
            UpstreamError::CircuitOpen {
                retry_after: Duration::from_millis(10_200),
            },
            503,
            "circuit.open",
            Some(11),
        ),
        (UpstreamError::Timeout, 504, "request.timeout", None),
        (
            UpstreamError::TokenFetch {
                upstream: "crm".to_owned(),
                failure: TokenFetchFailure::Status(StatusCode::TOO_MANY_REQUESTS),
                retry_after: Some(Duration::from_secs(3)),
            },
            503,
            "upstream.unavailable",
            Some(3),
        ),
        (
            UpstreamError::TokenFetch {
                upstream: "crm".to_owned(),
                failure: TokenFetchFailure::Timeout,
                retry_after: None,
            },
            503,
            "upstream.unavailable",
            None,
        ),
        (
            UpstreamError::TokenFetch {
                upstream: "crm".to_owned(),
                failure: TokenFetchFailure::Status(StatusCode::UNAUTHORIZED),
                retry_after: None,
            },
            502,
            "upstream.error",
            None,
        ),
    ];
    for (err, status, code, retry_after) in cases {
        let api: ApiError = err.into();
        assert_eq!(api.status().as_u16(), status);
        assert_eq!(api.code().as_str(), code);
        assert_eq!(api.retry_after_s(), retry_after, "{code}");
        assert!(!api.message().contains("secret body"));
    }
}
