//! A scriptable upstream for data action tests: a real axum server on 127.0.0.1:0 that records
//! every request, answers scripted responses in order (then a default), and can play an OAuth2
//! token endpoint that counts its fetches.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// An answer with a raw body.
    pub fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
    token_fetches: AtomicUsize,
    /// When set, API calls need `Authorization: Bearer <one of these>`.
    tokens: Mutex<Option<HashSet<String>>>,
}

/// The running mock.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MockUpstream {
    /// Starts a mock answering `{}` by default.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        *inner.default.lock().unwrap() = Some(Reply::json(200, serde_json::json!({})));
        let app = Router::new()
            .route("/oauth/token", post(token))
            .fallback(api)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inner }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues answers, used in order before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// The answer once the script is used up.
    pub fn default_reply(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    /// Requires a bearer token from `/oauth/token` on every API call.
    pub fn require_tokens(&self) {
        *self.inner.tokens.lock().unwrap() = Some(HashSet::new());
    }

    /// Forgets every issued token (the next API call gets a 401).
    pub fn revoke_tokens(&self) {
        if let Some(t) = self.inner.tokens.lock().unwrap().as_mut() {
            t.clear();
        }
    }

    /// API requests received (token fetches excluded).
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// How many API requests were received.
    pub fn hits(&self) -> usize {
        self.inner.seen.lock().unwrap().len()
    }

    /// How many tokens were fetched.
    pub fn token_fetches(&self) -> usize {
        self.inner.token_fetches.load(Ordering::SeqCst)
    }
}

async fn token(State(inner): State<Arc<Inner>>) -> Response {
    let n = inner.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    // A slow token endpoint makes concurrent callers overlap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let token = format!("token-{n}");
    if let Some(t) = inner.tokens.lock().unwrap().as_mut() {
        t.insert(token.clone());
    }
    axum::Json(serde_json::json!({
        "access_token": token, "token_type": "Bearer", "expires_in": 3600
    }))
    .into_response()
}

async fn api(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    inner.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
    });
    let authorized = {
        let tokens = inner.tokens.lock().unwrap();
        match tokens.as_ref() {
            None => true,
            Some(valid) => parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| valid.contains(t)),
        }
    };
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    let reply = {
        let next = inner.script.lock().unwrap().pop_front();
        next.or_else(|| inner.default.lock().unwrap().clone())
            .unwrap()
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, http::HeaderValue::from_str(&value).unwrap());
    }
    response
}
