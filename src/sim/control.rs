//! The control side of the simulator: the correlation id of every response, the recording of
//! requests and the faults applied to them, and the `/__sim` API that drives them (no auth,
//! JSON) — faults, the request log, the webhook receivers, reset.
//!
//! Every request outside `/__sim` — `/oauth/token`, `/api/v2/**` and the WebSocket handshakes
//! `GET /channels/{id}` — and every delivery to a receiver (`POST /__sim/receivers/{name}`, a
//! request from outside like the others) is recorded in the request log, then checked against
//! the armed faults: the first armed fault whose method and path glob match answers instead of
//! the simulator (after `delayMs`), or drops the connection without an answer (`status: 0`), or
//! only delays the request (`status` absent). The other `/__sim` calls are neither recorded nor
//! faulted.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::{HeaderValue, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use wildmatch::WildMatch;

use super::error::{CONTEXT_ID, GenesysError};
use super::extract::{GJson, QueryPairs};
use super::records::faults::{FaultSpec, Outcome};
use super::records::receivers::{Signature, WebhookSecret};
use super::records::requests::RecordedRequest;
use super::server::ConnectionKill;
use super::state::{Data, Sim};

/// The correlation header Genesys puts on every response.
const CORRELATION_HEADER: &str = "inin-correlation-id";
/// Largest request body the simulator reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Where the receivers are.
const RECEIVERS: &str = "/__sim/receivers/";

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

/// Whether a request is a control call (neither recorded nor faulted): `/__sim` but for the
/// deliveries to receivers.
fn is_control(method: &Method, path: &str) -> bool {
    (path == "/__sim" || path.starts_with("/__sim/"))
        && !(method == Method::POST && path.starts_with(RECEIVERS))
}

fn too_large() -> Response {
    GenesysError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload.too.large",
        "The request entity is larger than the server is willing or able to process.",
    )
    .into_response()
}

/// Records the request and applies the first matching fault (but for control calls).
pub(crate) async fn record_and_fault(
    State(sim): State<Arc<Sim>>,
    req: Request,
    next: Next,
) -> Response {
    if is_control(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    sim.requests
        .lock()
        .push(RecordedRequest::new(&parts, &bytes));
    let fault = sim
        .faults
        .lock()
        .take(parts.method.as_str(), parts.uri.path());
    let kill = parts.extensions.get::<ConnectionKill>().cloned();
    let req = Request::from_parts(parts, Body::from(bytes));
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    if !fault.delay().is_zero() {
        tokio::time::sleep(fault.delay()).await;
    }
    match fault.outcome() {
        Outcome::PassThrough => next.run(req).await,
        Outcome::Drop => match kill {
            Some(kill) => {
                kill.kill();
                std::future::pending().await
            }
            None => GenesysError::for_status(StatusCode::BAD_GATEWAY).into_response(),
        },
        Outcome::Answer(response) => response,
    }
}

/// `POST /__sim/faults`.
pub(crate) async fn add_fault(
    State(sim): State<Arc<Sim>>,
    GJson(spec): GJson<FaultSpec>,
) -> Result<Response, GenesysError> {
    let armed = sim.faults.lock().arm(spec)?;
    Ok((StatusCode::CREATED, Json(armed)).into_response())
}

/// `GET /__sim/faults`: the armed faults with their remaining counts.
pub(crate) async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(sim.faults.lock().to_json())
}

/// `DELETE /__sim/faults`.
pub(crate) async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.faults.lock().clear();
    StatusCode::NO_CONTENT
}

/// `GET /__sim/requests?path=<glob>&method=<M>`: oldest first, within the log's bounds (see
/// `records::requests`).
pub(crate) async fn list_requests(State(sim): State<Arc<Sim>>, query: QueryPairs) -> Json<Value> {
    let glob = query.first("path").map(WildMatch::new);
    let method = query.first("method").map(str::to_ascii_uppercase);
    let entries = sim
        .requests
        .lock()
        .iter()
        .filter(|r| r.matches(glob.as_ref(), method.as_deref()))
        .map(RecordedRequest::to_json)
        .collect();
    Json(Value::Array(entries))
}

/// `DELETE /__sim/requests`.
pub(crate) async fn clear_requests(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.requests.lock().clear();
    StatusCode::NO_CONTENT
}

/// `POST /__sim/receivers/{name}` (any body, any content type): records the delivery with the
/// outcome of its signature check; answers 200 `{}`.
pub(crate) async fn receive(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    let now = Utc::now();
    let secret = sim.receivers.lock().secret(&name);
    // Checked outside the lock: the body may be long.
    let signature = Signature::check(secret.as_deref(), &parts.headers, &bytes, now);
    sim.receivers
        .lock()
        .record(&name, &parts.headers, &bytes, signature, now);
    Json(json!({})).into_response()
}

/// The body of `PUT /__sim/receivers/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiverSpec {
    /// `whsec_<base64 key>`; `null` stops checking signatures.
    secret: Option<SecretString>,
}

/// `PUT /__sim/receivers/{name}` `{"secret": "whsec_..."}`: the secret the receiver checks
/// signatures with (`null`: none); 204.
pub(crate) async fn set_receiver(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
    GJson(spec): GJson<ReceiverSpec>,
) -> Result<StatusCode, GenesysError> {
    let secret = spec
        .secret
        .map(|s| WebhookSecret::parse(s.expose_secret()))
        .transpose()
        .map_err(|err| GenesysError::bad_request(err.to_string()))?;
    sim.receivers.lock().set_secret(&name, secret);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /__sim/receivers/{name}`: the deliveries received, oldest first (`[]` for a receiver
/// that received none).
pub(crate) async fn list_deliveries(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
) -> Json<Value> {
    Json(Value::Array(sim.receivers.lock().deliveries(&name)))
}

/// `DELETE /__sim/receivers/{name}`: forgets its deliveries (not its secret); 204.
pub(crate) async fn clear_deliveries(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
) -> StatusCode {
    sim.receivers.lock().clear(&name);
    StatusCode::NO_CONTENT
}

/// `POST /__sim/reset`: back to the fixtures — no conversations, integrations, credentials,
/// actions, faults, recorded requests, receiver deliveries, rate-limit counts or heartbeat
/// pause. Issued tokens, notification channels (with their subscriptions and open sockets) and
/// receiver secrets are kept: they are set up by whoever uses the simulator (the sandbox gateway
/// registers its example target's secret once, at start).
pub(crate) async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    *sim.data() = Data::default();
    sim.faults.lock().clear();
    sim.requests.lock().clear();
    sim.receivers.lock().clear_all();
    sim.rate.lock().clear();
    sim.hub.resume_heartbeats();
    StatusCode::NO_CONTENT
}
