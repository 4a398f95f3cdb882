//! The HTTP surface of event ingest (bearer JWT of `[ingest] auth`'s issuers).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events` (alias `POST /ingest`) | 202 `{"results": [{"eventId", "idempotencyKey", "status"}]}` in input order, once committed; 400, 401, 409 `idempotency.conflict`, 413, 415, 503 `overloaded` |
//! | `GET /v1/events/{eventId}` | 200 the event with its deliveries; 404 (also for another issuer's event) |
//!
//! The token is checked first, by a `route_layer` of this router: one `Authorization: Bearer`
//! header and no token anywhere else (see [`crate::auth::jwt`]); a refusal is 401 with its
//! `WWW-Authenticate` challenge and is counted in `gateway_ingest_rejections_total{reason}`.
//! Then an unknown query parameter is 400 `bad.request` naming it, a content type other than
//! JSON is 415, and the body goes to [`Ingest::accept`].

use axum::extract::{Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::AcceptError;
use super::service::{EventResult, EventView, Ingest};
use crate::auth::jwt::VerifiedToken;
use crate::error::{JsonBytes, Query};

/// The ingest routes, behind the JWT check.
pub fn router(ingest: Ingest) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(post_events))
        .routes(routes!(post_ingest))
        .routes(routes!(get_event))
        .with_state(ingest.clone())
        .route_layer(from_fn_with_state(ingest, authenticate))
}

/// Verifies the request's one bearer token and hands the [`VerifiedToken`] to the handler.
async fn authenticate(State(ingest): State<Ingest>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match ingest.authenticate(&parts.uri, &parts.headers).await {
        Ok(token) => {
            parts.extensions.insert(token);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(err) => err.into_response(),
    }
}

/// No query parameter is accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

/// The 202 answer.
#[derive(Debug, Serialize)]
struct Results {
    results: Vec<EventResult>,
}

async fn accept(
    ingest: &Ingest,
    token: &VerifiedToken,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, AcceptError> {
    let results = ingest.accept(token, headers, body).await?;
    Ok((StatusCode::ACCEPTED, Json(Results { results })).into_response())
}

/// Accepts one event or a batch of them.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = Object, description = "One event (`transaction_id`, `event_type`, `timestamp`, ...) or an array of at most `max_batch` events", content_type = "application/json"),
    responses((status = 202, description = "`{results: [{eventId, idempotencyKey, status: queued|duplicate}]}` in input order, durably stored", body = Object),
              (status = 400, description = "`invalid.input` (details name `/<i>/<field>`) or `bad.request`"),
              (status = 401, description = "`authentication.required` or `invalid.token` (`WWW-Authenticate` names the reason)"),
              (status = 409, description = "`idempotency.conflict`: a key reused with different content (nothing accepted)"),
              (status = 413, description = "`payload.too.large`: more than `max_batch` events, or a body over the limit"),
              (status = 415, description = "`unsupported.media.type`: not JSON"),
              (status = 503, description = "`overloaded` with `Retry-After`: the delivery queue is over its limit")))]
async fn post_events(
    State(ingest): State<Ingest>,
    Extension(token): Extension<VerifiedToken>,
    Query(_none): Query<NoQuery>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AcceptError> {
    accept(&ingest, &token, &headers, &body).await
}

/// `POST /v1/events` under its older name.
#[utoipa::path(post, path = "/ingest", tag = "events",
    request_body(content = Object, description = "As `POST /v1/events`", content_type = "application/json"),
    responses((status = 202, description = "As `POST /v1/events`", body = Object)))]
async fn post_ingest(
    State(ingest): State<Ingest>,
    Extension(token): Extension<VerifiedToken>,
    Query(_none): Query<NoQuery>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AcceptError> {
    accept(&ingest, &token, &headers, &body).await
}

/// One accepted event of the caller's issuer, with its deliveries.
#[utoipa::path(get, path = "/v1/events/{eventId}", tag = "events",
    params(("eventId" = String, Path, description = "The event id")),
    responses((status = 200, description = "`{eventId, eventType, eventTime, idempotencyKey, acceptedAt, deliveries: [{id, targetId, targetName, status, attempts, lastError, deliveredAt}]}`", body = Object),
              (status = 401, description = "Missing or wrong token"),
              (status = 404, description = "No such event from this issuer")))]
async fn get_event(
    State(ingest): State<Ingest>,
    Extension(token): Extension<VerifiedToken>,
    Path(event_id): Path<String>,
    Query(_none): Query<NoQuery>,
) -> Result<Json<EventView>, AcceptError> {
    Ok(Json(ingest.event(&token, &event_id).await?))
}
