//! The control side of the simulator: the correlation id of every response, the request log,
//! fault injection, and the `/__sim` API that drives them (no auth, JSON).
//!
//! Every request outside `/__sim` — `/oauth/token`, `/api/v2/**` and the WebSocket handshakes
//! `GET /channels/{id}` — is recorded (headers with `authorization` redacted to its scheme), then
//! checked against the armed faults: the first armed fault whose method and path glob match
//! answers instead of the simulator (after `delayMs`), or drops the connection without an answer
//! (`status: 0`), or only delays the request (`status` absent). Each fault serves `count`
//! requests (default 1).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wildmatch::WildMatch;

use super::error::{CONTEXT_ID, GenesysError};
use super::extract::{GJson, QueryPairs};
use super::server::ConnectionKill;
use super::state::{Sim, lock};

/// The correlation header Genesys puts on every response.
pub(crate) const CORRELATION_HEADER: &str = "inin-correlation-id";

/// Largest request body the simulator reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Requests the log keeps; older ones are dropped (a sandbox may run for days).
pub(crate) const MAX_RECORDED: usize = 10_000;

/// One armed fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    id: u64,
    method: Option<String>,
    path: String,
    glob: WildMatch,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: u64,
    remaining: u32,
    body: Option<Value>,
}

impl Fault {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "retryAfter": self.retry_after,
            "delayMs": self.delay_ms,
            "count": self.remaining,
            "body": self.body,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m == "*" || m == method)
            && self.glob.matches(path)
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct RecordedRequest {
    method: String,
    path: String,
    query: String,
    headers: Map<String, Value>,
    body: Value,
    at: String,
}

impl RecordedRequest {
    fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "at": self.at,
        })
    }
}

/// Outermost middleware: echoes the inbound `inin-correlation-id` (or a new UUID) on the
/// response and makes it the `contextId` of error bodies.
pub(crate) async fn correlation(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let mut response = CONTEXT_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Records the request and applies the first matching fault (outside `/__sim`).
pub(crate) async fn record_and_fault(
    State(sim): State<Arc<Sim>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/__sim" || path.starts_with("/__sim/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return GenesysError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload.too.large",
                "The request entity is larger than the server is willing or able to process.",
            )
            .into_response();
        }
    };
    let method = parts.method.as_str().to_owned();
    let entry = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: recorded_headers(&parts.headers),
        body: recorded_body(&bytes),
        at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    {
        let mut log = lock(&sim.requests);
        if log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(entry);
    }
    let fault = {
        let mut faults = lock(&sim.faults);
        let found = faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matches(&method, &path));
        let fault = found.map(|f| {
            f.remaining -= 1;
            f.clone()
        });
        faults.retain(|f| f.remaining > 0);
        fault
    };
    let kill = parts.extensions.get::<ConnectionKill>().cloned();
    let req = Request::from_parts(parts, Body::from(bytes));
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    match fault.status {
        None => next.run(req).await,
        Some(0) => match kill {
            Some(kill) => {
                kill.kill();
                std::future::pending().await
            }
            None => GenesysError::for_status(StatusCode::BAD_GATEWAY).into_response(),
        },
        Some(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = match fault.body {
                Some(body) => (status, Json(body)).into_response(),
                None => (status, Json(GenesysError::for_status(status).body())).into_response(),
            };
            if let Some(seconds) = fault.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

fn recorded_headers(headers: &http::HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                if name == header::AUTHORIZATION {
                    match text.split_once(' ') {
                        Some((scheme, _)) => format!("{scheme} [REDACTED]"),
                        None => "[REDACTED]".to_owned(),
                    }
                } else {
                    text
                }
            })
            .collect();
        out.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    out
}

/// Whether a body field holds a secret (`client_secret`, `password`, ...).
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("secret") || key.contains("password")
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if secret_key(key) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

const REDACTED: &str = "[REDACTED]";

/// The body as JSON when it is JSON, else as text; secret-looking fields (JSON keys or form
/// fields containing `secret` or `password`) are redacted.
fn recorded_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if let Ok(mut value) = serde_json::from_slice::<Value>(bytes) {
        redact(&mut value);
        return value;
    }
    let text = String::from_utf8_lossy(bytes);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| secret_key(k)) {
        let redacted = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| {
                (
                    k.as_str(),
                    if secret_key(k) { REDACTED } else { v.as_str() },
                )
            }))
            .finish();
        return Value::String(redacted);
    }
    Value::String(text.into_owned())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultSpec {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    count: Option<u32>,
    body: Option<Value>,
}

/// `POST /__sim/faults`.
pub(crate) async fn add_fault(
    State(sim): State<Arc<Sim>>,
    GJson(spec): GJson<FaultSpec>,
) -> Result<Response, GenesysError> {
    if let Some(status) = spec.status
        && status != 0
        && !(100..=599).contains(&status)
    {
        return Err(GenesysError::bad_request(
            "status must be 0 or an HTTP status (100-599)",
        ));
    }
    let count = spec.count.unwrap_or(1);
    if count == 0 {
        return Err(GenesysError::bad_request("count must be at least 1"));
    }
    let path = spec.path.unwrap_or_else(|| "*".to_owned());
    let mut faults = lock(&sim.faults);
    let id = faults.iter().map(|f| f.id).max().unwrap_or(0) + 1;
    let fault = Fault {
        id,
        method: spec.method.map(|m| m.to_ascii_uppercase()),
        glob: WildMatch::new(&path),
        path,
        status: spec.status,
        retry_after: spec.retry_after,
        delay_ms: spec.delay_ms.unwrap_or(0),
        remaining: count,
        body: spec.body,
    };
    let body = fault.to_json();
    faults.push(fault);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /__sim/faults`: the armed faults with their remaining counts.
pub(crate) async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(Value::Array(
        lock(&sim.faults).iter().map(Fault::to_json).collect(),
    ))
}

/// `DELETE /__sim/faults`.
pub(crate) async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    lock(&sim.faults).clear();
    StatusCode::NO_CONTENT
}

/// `GET /__sim/requests?path=<glob>&method=<M>`: oldest first.
pub(crate) async fn list_requests(State(sim): State<Arc<Sim>>, query: QueryPairs) -> Json<Value> {
    let glob = query.first("path").map(WildMatch::new);
    let method = query.first("method").map(str::to_ascii_uppercase);
    let entries = lock(&sim.requests)
        .iter()
        .filter(|r| glob.as_ref().is_none_or(|g| g.matches(&r.path)))
        .filter(|r| method.as_ref().is_none_or(|m| *m == r.method))
        .map(RecordedRequest::to_json)
        .collect();
    Json(Value::Array(entries))
}

/// `DELETE /__sim/requests`.
pub(crate) async fn clear_requests(State(sim): State<Arc<Sim>>) -> StatusCode {
    lock(&sim.requests).clear();
    StatusCode::NO_CONTENT
}

/// `POST /__sim/reset`: back to the fixtures — no conversations, integrations, credentials,
/// actions, faults, recorded requests, rate-limit counts or heartbeat pause. Issued tokens and
/// notification channels (with their subscriptions and open sockets) are kept.
pub(crate) async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    *sim.data() = super::state::Data::default();
    lock(&sim.faults).clear();
    lock(&sim.requests).clear();
    lock(&sim.rate).clear();
    sim.hub.resume_heartbeats();
    StatusCode::NO_CONTENT
}
